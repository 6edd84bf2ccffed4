"""The custom-op domain, its version and the op names: the one place they are defined.

The C++ library reads the same values from ``custom_ops/src/domain.h``; a test checks
that the two agree.
"""

DOMAIN = "ai.exprune"
VERSION = 1

DENSE_RELU = "ExPruneDenseRelu"
CONV_RELU = "ExPruneConvRelu"
ARGMAX_HEAD = "ExPruneArgmaxHead"

ALL_OPS = (DENSE_RELU, CONV_RELU, ARGMAX_HEAD)
