"""The custom-op domain, its version and the op names: the one place they are defined.

The C++ library reads the same values from ``custom_ops/src/domain.h``; a test checks
that the two agree.
"""

DOMAIN = "ai.exprune"
VERSION = 1

DENSE_RELU = "ExPruneDenseRelu"
CONV_RELU = "ExPruneConvRelu"
ARGMAX_HEAD = "ExPruneArgmaxHead"
# Not an early-exit op: the layer after one, skipping its zero inputs (rules/sparse_input.py).
SPARSE_MATMUL = "ExPruneSparseMatMul"
SPARSE_CONV = "ExPruneSparseConv"

# The early-exit ops: partial product in, pruned output and [pruned, total] stats out.
PRUNE_OPS = (DENSE_RELU, CONV_RELU, ARGMAX_HEAD)
ALL_OPS = (*PRUNE_OPS, SPARSE_MATMUL)
