"""FLOPs, counted the paper's way: one multiply-accumulate is 2 FLOPs.

Only Conv, ConvTranspose, Gemm, MatMul and the recurrent RNN, GRU and LSTM are counted
(element-wise ops are a rounding error next to them), ExPruneSparseMatMul and ExPruneSparseConv as the MatMul and Conv they
replace, and an early-exit op as the dense product of its tail (its partial product is
a Conv or MatMul of its own): the dense count of a model this compiler wrote is the
original's. onnxruntime's FusedConv, FusedGemm and FusedMatMul count as the ops they
fuse; integer products and those in onnxruntime's own layouts (``UNCOVERED``) are
counted among the nodes left uncounted. The zeros a sparse conv skips are counted as
skipped only from its own ``stats`` output (counters.py), like an early-exit op's.
Counts are per sample: a tensor's elements over the batch size the graph's shapes stand
for (``batch_of``), so that a batch folded into another axis ([N*T, C] before a Linear,
[N*heads, T, T] in attention) counts in full; where that size is not known, every axis
past the first. Every axis counted must be known from shape inference or the count is
None.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.graphutil import all_graphs
from ..rules.base import Candidate

# Threshold rule: one multiply-add and one compare per output element.
DECISION_FLOPS = 1
# The gates a recurrent op computes each step, each a product of the input and the hidden
# state with their weights (a GRU model's 9-13 MFLOPs a sample went uncounted, so that a
# pruned head read as 31.5% of the model's FLOPs saved).
RECURRENT_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
# Counted too, and named in the summary only where a model has them (a UNet's or a
# decoder's upsampling ConvTranspose went uncounted, and unlisted as uncounted).
LESS_COMMON = ("ConvTranspose", *RECURRENT_GATES)
# onnxruntime's fused forms of the counted ops (a model saved after its graph
# optimisations), counted as the op they fuse: they were left out, and such a CNN read as
# 2.56 kFLOPs a sample.
RUNTIME_FUSED = {("com.microsoft", "FusedConv"): "Conv", ("com.microsoft", "FusedGemm"): "Gemm",
                 ("com.microsoft", "FusedMatMul"): "MatMul"}
# Products this count does not cover (integer ones, or in onnxruntime's own layouts):
# not counted, and counted as not counted, so that no total passes for the model's.
UNCOVERED = {("", "QLinearConv"), ("", "ConvInteger"), ("", "QLinearMatMul"), ("", "MatMulInteger"),
             ("com.microsoft", "QGemm"), ("com.microsoft", "DynamicQuantizeMatMul"),
             ("com.microsoft", "MatMulIntegerToFloat"), ("com.microsoft", "MatMulNBits"),
             ("com.microsoft", "NhwcConv"), ("com.microsoft", "NhwcFusedConv"), ("com.microsoft.nchwc", "Conv"),
             ("com.microsoft", "Attention"), ("com.microsoft", "QAttention"), ("com.microsoft", "MultiHeadAttention")}


def uncovered_names(nodes) -> str:
    """How many of each UNCOVERED op ``nodes`` (ONNX nodes) hold: "2 QGemm, 5 QLinearConv";
    an op of a layout domain by its domain too (nchwc's Conv is no Conv)."""
    names = Counter(n.op_type if (n.domain or "") in ("", "ai.onnx", "com.microsoft") else f"{n.domain}.{n.op_type}"
                    for n in nodes if uncovered(n))
    return ", ".join(f"{count} {op}" for op, count in sorted(names.items()))


def uncovered(node) -> bool:
    """A product ``counted`` does not count (UNCOVERED); ``node`` a graphsurgeon or ONNX node."""
    op = getattr(node, "op", None) or getattr(node, "op_type", "")
    domain = node.domain or ""
    return ("" if domain == "ai.onnx" else domain, op) in UNCOVERED


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


def batch_of(graph: gs.Graph) -> int | str | None:
    """The batch the graph's shapes stand for: the first dim every graph input of rank >= 1
    shares, a number (a fixed batch, often 1) or a symbol ('N'); None when they differ or
    one is unknown."""
    firsts = {t.shape[0] if t.shape else None for t in graph.inputs
              if isinstance(t, gs.Variable) and (t.shape is None or len(t.shape) > 0)}
    if len(firsts) != 1:
        return None
    first = next(iter(firsts))
    if isinstance(first, (int, np.integer)) and first > 0:
        return int(first)
    return first if isinstance(first, str) and first and not first.startswith("unk__") else None


def per_sample(shape, batch: int | str | None) -> int | None:
    """Elements per sample of a tensor of ``shape``: all of them over ``batch`` (batch_of)
    when it is a number, or a symbol found on exactly one axis; else every axis past the
    first, taken to be the batch's. None when an axis counted is unknown."""
    if isinstance(batch, int) and _known(shape):
        total = int(np.prod(shape))
        if total % batch == 0:
            return total // batch
    elif isinstance(batch, str) and sum(d == batch for d in shape) == 1:
        rest = [d for d in shape if d != batch]
        if _known(rest):
            return int(np.prod(rest))
    return int(np.prod(shape[1:])) if _known(shape[1:]) else None


def positions(c: Candidate) -> int | None:
    """Output elements per sample and output channel: from the count at the data's shapes
    where there is one (it sizes a folded batch whose symbol inference lost)."""
    if c.seen_flops and c.seen_flops % (2 * c.n * c.taps * c.outputs) == 0:
        return c.seen_flops // (2 * c.n * c.taps * c.outputs)
    shape = c.output.shape if c.head_logits_shape is None else c.head_logits_shape
    if shape is None or len(shape) < (3 if c.kind == "conv" else 1):
        return None
    elements = per_sample(shape, c.batch)
    if elements is not None and elements % c.outputs:  # rows that are no multiple of the batch: one sample's
        elements = per_sample(shape, None)
    return None if elements is None or elements % c.outputs else elements // c.outputs


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
    if (node.domain, node.op) in RUNTIME_FUSED:
        return True
    return node.op in ("Conv", "Gemm", "MatMul", *LESS_COMMON) and (node.domain or "") == ""


def node_flops(node: gs.Node, batch: int | str | None = None) -> int | None:
    """Dense FLOPs per sample of one node ``counted`` counts, None if unknown; ``batch``
    as ``batch_of`` gives it for the node's graph."""
    out = node.outputs[0] if node.outputs else None
    op = RUNTIME_FUSED.get((node.domain, node.op), node.op)
    if op in ops.PRUNE_OPS:  # partial [N, O, ...] or [*, O]; w_tail [O, tail units, *kernel]
        out, w = node.inputs[0], node.inputs[2] if len(node.inputs) > 2 else None
        if w is None or w.shape is None or not _known(w.shape):
            return None
        per_output = int(np.prod(w.shape[1:]))
    elif out is None:
        return None
    elif op in RECURRENT_GATES:
        return _recurrent_flops(node)
    elif op == "ConvTranspose":
        return _transposed_conv_flops(node, batch)
    elif op == "Conv":
        wshape = node.inputs[1].shape
        if wshape is None or not _known(wshape):
            return None
        per_output = int(np.prod(wshape[1:]))
    elif op == ops.SPARSE_CONV:  # w is [C, *K, M/group]: C/group * prod(K) MACs per output
        wshape = node.inputs[1].shape
        if wshape is None or not _known(wshape):
            return None
        per_output = int(np.prod(wshape[:-1])) // int(node.attrs.get("group", 1))
    elif op in ("Gemm", "MatMul", ops.SPARSE_MATMUL):
        a = node.inputs[0]
        if not a.shape:  # unknown, or a scalar where a matrix belongs
            return None
        if node.attrs.get("transBatchA", 0):  # FusedMatMul's: its axes permuted first, left uncounted
            return None
        inner = a.shape[-1]
        if node.attrs.get("transA", 0):  # (FusedMatMul's transposes the last two axes)
            inner = a.shape[0] if op == "Gemm" else a.shape[-2] if len(a.shape) > 1 else None
        if not isinstance(inner, (int, np.integer)):
            return None
        per_output = int(inner)
    else:
        return None
    if out.shape is None:
        return None
    # For a vector right operand MatMul drops the last axis; a rank-1 result is one per sample.
    elements = per_sample(out.shape, batch) if len(out.shape) > 1 else 1
    return None if elements is None else 2 * per_output * elements


def _transposed_conv_flops(node: gs.Node, batch: int | str | None) -> int | None:
    """A ConvTranspose's FLOPs per sample: each input element is multiplied into its
    channel's kernels (W: [C, M / group, *kernel]), whatever the stride and padding crop."""
    x, w = node.inputs[0].shape, node.inputs[1].shape if len(node.inputs) > 1 else None
    if x is None or w is None or len(x) < 2 or not _known(w):
        return None
    elements = per_sample(x, batch)
    return None if elements is None else 2 * int(np.prod(w[1:])) * elements


def _recurrent_flops(node: gs.Node) -> int | None:
    """An RNN, GRU or LSTM's FLOPs per sample: each of its steps (the sequence axis of X, by
    ``layout``) and directions multiplies the input (W: [directions, gates * H, I]) and the
    hidden state (R: [directions, gates * H, H]) into its gates."""
    if len(node.inputs) < 3 or node.inputs[0].shape is None or len(node.inputs[0].shape) != 3:
        return None
    w, r = node.inputs[1].shape, node.inputs[2].shape
    steps = node.inputs[0].shape[1 if node.attrs.get("layout", 0) else 0]
    if w is None or r is None or len(w) != 3 or len(r) != 3 or not _known([*w, *r, steps]):
        return None
    return 2 * int(steps) * int(w[0]) * int(w[1]) * (int(w[2]) + int(r[2]))


def model_flops(graph: gs.Graph, seen: dict[str, int] | None = None) -> tuple[int, int]:
    """(FLOPs per sample of the countable reductions, number left uncounted). ``seen``:
    counts of main-graph nodes by first output, at the shapes of real inputs
    (shape_probe.py), taken before the graph's own; for an If, its taken branch's."""
    total, unknown = 0, 0
    batch = batch_of(graph)
    seen = seen or {}
    untaken = set()  # the bodies of an If whose taken branch ``seen`` counts
    for node in graph.nodes:
        if node.op == "If" and node.outputs and node.outputs[0].name in seen:
            total += seen[node.outputs[0].name]
            untaken |= {id(g) for key in ("then_branch", "else_branch") for g in all_graphs(node.attrs[key])}
    for g in all_graphs(graph):
        if id(g) in untaken:
            continue
        for node in g.nodes:
            if uncovered(node):
                unknown += 1
            elif counted(node):
                # (An LSTM may leave its first output unnamed: no count is keyed by that.)
                f = seen.get(node.outputs[0].name) if g is graph and node.outputs and node.outputs[0].name else None
                f = node_flops(node, batch) if f is None else f
                if f is None:
                    unknown += 1
                else:
                    total += f
    return total, unknown
