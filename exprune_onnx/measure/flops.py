"""FLOPs, counted the paper's way: one multiply-accumulate is 2 FLOPs.

Only Conv, Gemm and MatMul are counted (element-wise ops are a rounding error
next to them), ExPruneSparseMatMul and ExPruneSparseConv as the MatMul and Conv they
replace, and an early-exit op as the dense product of its tail (its partial product is
a Conv or MatMul of its own): the dense count of a model this compiler wrote is the
original's. The zeros a sparse conv skips are counted as
skipped only from its own ``stats`` output (counters.py), like an early-exit op's.
Counts are per sample: the batch axis is left out, every other axis must be known from
shape inference or the count is None.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.graphutil import all_graphs
from ..rules.base import Candidate

# Threshold rule: one multiply-add and one compare per output element.
DECISION_FLOPS = 1


def decision_flops(rule: str, k: int, n: int, taps: int, outputs: int) -> float:
    """FLOPs per output element that a rule adds on top of the partial product.

    StatsTest pays for the second partial product (squares, one more MAC per term) and
    about six operations for the test; Certified pays three per element plus the max
    and the norm of the tail inputs (two per input value), which all outputs of a row
    or receptive field share.
    """
    if rule == "statstest":
        return 2 * k * taps + 6
    if rule == "certified":
        return 3 + 2 * (n - k) * taps / max(outputs, 1)
    return DECISION_FLOPS


def _known(dims) -> bool:
    return all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims)


def positions(c: Candidate) -> int | None:
    """Output elements per sample and output channel."""
    shape = c.output.shape if c.head_logits_shape is None else c.head_logits_shape
    if shape is None:
        return None
    dims = shape[2:] if c.kind == "conv" else shape[1:-1]
    return int(np.prod(dims)) if _known(dims) else None


def dense_flops(c: Candidate) -> int | None:
    p = positions(c)
    return None if p is None else 2 * c.n * c.taps * c.outputs * p


def exprune_flops(c: Candidate, k: int, kept_fraction: float, rule: str = "threshold") -> float | None:
    """Expected FLOPs per sample when ``kept_fraction`` of outputs survive the decision."""
    p = positions(c)
    if p is None:
        return None
    elements = c.outputs * p
    head = 2 * k * c.taps + decision_flops(rule, k, c.n, c.taps, c.outputs)
    tail = 2 * (c.n - k) * c.taps * kept_fraction
    return elements * (head + tail)


def counted(node: gs.Node) -> bool:
    """Whether ``node`` is a reduction this module counts (see the module docstring)."""
    if node.op in (ops.SPARSE_MATMUL, ops.SPARSE_CONV, *ops.PRUNE_OPS):
        return node.domain == ops.DOMAIN
    return node.op in ("Conv", "Gemm", "MatMul") and (node.domain or "") == ""


def node_flops(node: gs.Node) -> int | None:
    """Dense FLOPs per sample of one node ``counted`` counts, None if unknown."""
    out = node.outputs[0] if node.outputs else None
    if node.op in ops.PRUNE_OPS:  # partial [N, O, ...] or [*, O]; w_tail [O, tail units, *kernel]
        out, w = node.inputs[0], node.inputs[2] if len(node.inputs) > 2 else None
        if out.shape is None or w is None or w.shape is None or not _known(w.shape) or not _known(out.shape[1:]):
            return None
        return 2 * int(np.prod(w.shape[1:])) * int(np.prod(out.shape[1:]))
    if out is None or out.shape is None:
        return None
    if node.op == "Conv":
        w = node.inputs[1]
        wshape = w.shape
        if wshape is None or not _known(wshape) or not _known(out.shape[1:]):
            return None
        return 2 * int(np.prod(wshape[1:])) * int(np.prod(out.shape[1:]))
    if node.op == ops.SPARSE_CONV:  # w is [C, KH, KW, M/group]: C/group * KH * KW MACs per output
        wshape = node.inputs[1].shape
        if wshape is None or not _known(wshape) or not _known(out.shape[1:]):
            return None
        per_output = int(np.prod(wshape[:3])) // int(node.attrs.get("group", 1))
        return 2 * per_output * int(np.prod(out.shape[1:]))
    if node.op in ("Gemm", "MatMul", ops.SPARSE_MATMUL):
        a = node.inputs[0]
        if not a.shape or not _known(out.shape[1:]):  # unknown, or a scalar where a matrix belongs
            return None
        if node.op == "Gemm":
            inner = a.shape[0] if node.attrs.get("transA", 0) else a.shape[-1]
        else:
            inner = a.shape[-1]
        if not isinstance(inner, (int, np.integer)):
            return None
        # For a vector right operand MatMul drops the last axis; out[1:] is still per sample.
        per_sample = int(np.prod(out.shape[1:])) if len(out.shape) > 1 else 1
        return 2 * int(inner) * per_sample
    return None


def model_flops(graph: gs.Graph) -> tuple[int, int]:
    """(FLOPs per sample of the countable reductions, number left uncounted)."""
    total, unknown = 0, 0
    for g in all_graphs(graph):
        for node in g.nodes:
            if counted(node):
                f = node_flops(node)
                if f is None:
                    unknown += 1
                else:
                    total += f
    return total, unknown
