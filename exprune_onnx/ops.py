"""The custom-op domain, its version and the op names: the one place they are defined.

The C++ library reads the same values from ``custom_ops/src/domain.h``; a test checks
that the two agree.
"""

DOMAIN = "ai.exprune"
VERSION = 1

DENSE_RELU = "ExPruneDenseRelu"
CONV_RELU = "ExPruneConvRelu"
ARGMAX_HEAD = "ExPruneArgmaxHead"
# Not an early-exit op: the layer after one, skipping its zero inputs (passes/sparse_input.py).
SPARSE_MATMUL = "ExPruneSparseMatMul"
# Likewise for convolutions: a Conv fed by a ReLU, skipping its zero inputs (passes/sparse_conv.py).
SPARSE_CONV = "ExPruneSparseConv"

# The early-exit ops: partial product in, pruned output and [pruned, total] stats out.
PRUNE_OPS = (DENSE_RELU, CONV_RELU, ARGMAX_HEAD)
ALL_OPS = (*PRUNE_OPS, SPARSE_MATMUL, SPARSE_CONV)

# The attributes each op reads (custom_ops/src: ReadPruneAttrs, ReadConvAttrs and the ops'
# own). onnxruntime passes a custom op any attribute without complaint, so `verify` refuses
# the others: an attribute the op never reads is not something this compiler wrote.
_PRUNE_ATTRS = frozenset({"k", "threshold", "thresholds", "rule", "z_crit"})
_CONV_ATTRS = frozenset({"auto_pad", "group", "kernel_shape", "strides", "dilations", "pads"})
ATTRIBUTES = {
    DENSE_RELU: _PRUNE_ATTRS | {"clip_max", "tail_units"},
    CONV_RELU: _PRUNE_ATTRS | _CONV_ATTRS | {"clip_max"},
    ARGMAX_HEAD: _PRUNE_ATTRS | {"keepdims"},
    SPARSE_MATMUL: frozenset(),
    SPARSE_CONV: _CONV_ATTRS | {"activation", "clip_max"},
}


def pruning_layers(model) -> int:
    """How many early-exit ops ``model`` holds, in its bodies too: none, and it is exact."""
    from .io.modelio import all_nodes

    return sum(n.domain == DOMAIN and n.op_type in PRUNE_OPS for n in all_nodes(model.graph))


def sparse_conv_weights(weight, group: int = 1):
    """A Conv weight W[M, C/group, *K] in ExPruneSparseConv's layout w[C, *K, M/group]:
    w[c, ky, kx, j] = W[(c // (C/group)) * (M/group) + j, c % (C/group), ky, kx] (and the
    same without ky for a 1-D conv), so that the output channels of one tap are contiguous
    (docs/custom_ops.md)."""
    import numpy as np

    weight = np.asarray(weight)
    m, cg, *kernel = weight.shape
    mg = m // group
    # [g, mg, cg, *K] -> [g, cg, *K, mg] -> [C, *K, mg]
    order = (0, *range(2, 3 + len(kernel)), 1)
    blocks = weight.reshape(group, mg, cg, *kernel).transpose(order)
    return np.ascontiguousarray(blocks.reshape(group * cg, *kernel, mg))
