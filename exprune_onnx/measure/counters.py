"""FLOPs an optimised model actually executed, from the early-exit ops' own counters.

Per early-exit op: every output element costs the partial product and its rule's
decision (accounting.decision_flops); a kept element also costs its tail. So
relative to the dense layer the op saves

    pruned * 2 * tail_units * taps  -  total * decision_flops(rule, ...)

where ``tail_units * taps`` is the size of one output's tail weights (``w_tail`` row).

An ExPruneSparseConv counts [inputs read, inputs] instead (the non-zero ones where it lists
them, all of an image its tile path ran: docs/custom_ops.md); each input it skips
saves the multiply-adds it would feed, ``2 * (M / group) * KH * KW / (stride_h * stride_w)``
FLOPs (``2 * (M / group) * KW / stride`` for a 1-D conv). That is exact for an interior
input of a convolution whose output covers its input (stride 1, "same" padding) and
approximate elsewhere: an input on the border feeds
fewer outputs, and with "valid" padding or a stride the count per input is an average.
An ExPruneSparseMatMul counts the same, and each input it skips saves ``2 * m`` FLOPs (a
row of w [n, m]), exactly. Only the outer graph's ops report counts.
"""

from __future__ import annotations

import numpy as np
import onnx

from .. import ops
from .flops import decision_flops


def per_element(model: onnx.ModelProto) -> dict[str, tuple[int, float]]:
    """Early-exit node name -> (MACs in one output's tail, decision FLOPs per output)."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.domain != ops.DOMAIN or node.op_type not in ops.PRUNE_OPS or node.input[2] not in shapes:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        rule = attrs.get("rule", b"threshold")
        rule = rule.decode() if isinstance(rule, bytes) else rule
        w_tail = shapes[node.input[2]]
        taps = int(np.prod(w_tail[2:])) if len(w_tail) > 2 else 1
        k = int(attrs["k"])
        n = k + int(w_tail[1])
        found[node.name] = (int(np.prod(w_tail[1:])), decision_flops(rule, k, n, taps, int(w_tail[0])))
    return found


def per_input(model: onnx.ModelProto) -> dict[str, float]:
    """Sparse conv or matmul node name -> FLOPs one input element feeds (module docstring)."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        sparse = node.op_type in (ops.SPARSE_MATMUL, ops.SPARSE_CONV)
        if node.domain != ops.DOMAIN or not sparse or node.input[1] not in shapes:
            continue
        if node.op_type == ops.SPARSE_MATMUL:  # w [n, m]
            found[node.name] = 2.0 * shapes[node.input[1]][1]
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        _c, *kernel, mg = shapes[node.input[1]]  # [C, *K, M/group]
        stride = int(np.prod(attrs.get("strides", [1])))
        found[node.name] = 2.0 * mg * int(np.prod(kernel)) / stride
    return found


def flops_saved(model: onnx.ModelProto, counts: dict[str, tuple[int, int]]) -> float:
    """Total FLOPs saved over a run, given node -> (pruned, total) counters of early-exit
    ops and (inputs read, inputs) of sparse convs."""
    costs = per_element(model)
    inputs = per_input(model)
    saved = 0.0
    for name, (first, total) in counts.items():
        if name in inputs:
            saved += (total - first) * inputs[name]
            continue
        tail, decision = costs[name]
        saved += first * 2 * tail - total * decision
    return saved


def skipping_saved(model: onnx.ModelProto, counts: dict[str, tuple[int, int]]) -> float:
    """The part of ``flops_saved`` that the sparse convs and matmuls saved, skipping zero
    inputs (exact), as against the early-exit ops' pruning."""
    inputs = per_input(model)
    return flops_saved(model, {name: c for name, c in counts.items() if name in inputs})


def original_saved(original: onnx.ModelProto, check) -> float:
    """FLOPs per sample the original's own ops saved on a check (compare.CheckResult), where
    it was rewritten before; else 0."""
    if not check.pruned_original:
        return 0.0
    return flops_saved(original, check.pruned_original) / (check.rows or check.samples)


SHAPES_UNKNOWN = "some Conv/Gemm/MatMul shapes are unknown"


def executed_flops(original: onnx.ModelProto, optimized: onnx.ModelProto, shapes: dict, counts: dict,
                   rows: int, feed: dict | None = None) -> tuple[int | None, float | None, str]:
    """``evaluate``'s FLOPs: the original's dense count per sample (None when unknown), the
    FLOPs the optimised model's ops saved per sample on ``rows`` samples by ``counts`` (None
    when they cannot be set against it), and why not; ``feed``, one batch of the data, sizes
    what shape inference cannot (shape_probe.py). A model this compiler wrote counts the
    same dense FLOPs as its original (flops.py); a pair that does not is no such pair, and
    its ops' savings would be set against another model's count."""
    import onnx_graphsurgeon as gs

    from ..compiler import functions
    from ..compiler.pipeline import infer_shapes
    from ..io.feeds import with_input_shapes
    from ..io.modelio import all_nodes
    from .flops import model_flops, uncovered_names
    from .shape_probe import runtime_flops

    def dense(model):  # a layer inside a local function counts too
        seen = runtime_flops(model, feed) if feed else None
        return model_flops(gs.import_onnx(infer_shapes(with_input_shapes(functions.inline(model), shapes))), seen)

    total, unknown = dense(original)
    others = uncovered_names(all_nodes(original.graph))
    if others:
        return None, None, f"the original's {others} are integer or onnxruntime-internal products this count " \
            "does not cover"
    if unknown:
        return None, None, SHAPES_UNKNOWN
    other, other_unknown = dense(optimized)
    if not other_unknown and abs(other - total) > 1e-6 * max(total, 1):
        return total, None, (f"the optimised model counts {other / 1e6:.2f} dense MFLOPs against the original's "
                             f"{total / 1e6:.2f}, so it was not compiled from it (`exprune-onnx verify` checks a pair)")
    inside = body_ops(optimized)
    if inside:  # what they skipped is not counted: no share could be given
        return total, None, f"{inside} ExPrune op(s) inside If/Loop/Scan bodies have no counters"
    return total, flops_saved(optimized, counts) / rows if counts else 0.0, ""


def body_ops(model: onnx.ModelProto, kinds: tuple[str, ...] = ops.ALL_OPS) -> int:
    """Our ops (of ``kinds``) inside If/Loop/Scan bodies: a body cannot hand their counters out."""
    from ..io.modelio import all_graphs

    return sum(node.domain == ops.DOMAIN and node.op_type in kinds
               for g in list(all_graphs(model.graph))[1:] for node in g.node)
