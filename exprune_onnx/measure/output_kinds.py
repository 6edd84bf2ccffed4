"""Which outputs are not class scores on their last axis, read from the graph.

An array's shape alone cannot tell class scores from other values: a detector's box
regression [N, anchors, 4] or an encoder's hidden states [N, T, 768] look like the
per-position logits of a language model [N, T, V], and a sorted TopK [N, k] like a
classifier's [N, C] (its arg-max is always 0, so top-1 agreement would be 100% whatever
changed). Top-1 agreement means something only for scores, so ``output_kinds`` walks back
from each output to the op that decides what its last axis holds:

* ``head``: a MatMul/Gemm/Einsum/Conv, or a Softmax/LogSoftmax over the last axis;
* ``topk``: TopK's values;
* ``values``: a LayerNorm (features), a Sigmoid on three axes or more (DETR's boxes), a
  Softmax over another axis, a Reshape that splits the last axis (a box head's
  [R, 20] -> [R, 5, 4]);
* ``unknown``: anything else (a Concat, a residual Add, a graph input, an op of another
  domain).

The walk passes ops that keep what the last axis means: casts, reshapes that keep it,
transposes, slices, gathers, a constant bias or scale, a softcap's Tanh, a mask's Where.
Only ``topk`` and ``values`` overrule the shape (metrics.is_scores): a model the graph
says nothing clear about is read as before, by its shape.
"""

from __future__ import annotations

import onnx
import onnx.inliner

_HEADS = {"MatMul", "Gemm", "Einsum", "Conv"}
_SOFTMAX = {"Softmax", "LogSoftmax"}
_FEATURES = {"LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization", "RMSNormalization"}
# One data input, in position 0, whose last axis the output keeps.
_PASS = {"Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten", "Dropout", "Slice", "Gather", "GatherND",
         "GatherElements", "Transpose", "Tanh", "Neg", "Clip", "Reshape"}
_SCALE = {"Add", "Sub", "Mul", "Div"}  # with a constant operand: a bias, a temperature


def output_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Each graph output's kind: ``head``, ``topk``, ``values`` or ``unknown``."""
    from ..compiler.pipeline import infer_shapes
    from ..io.bigmodel import serializable, skeleton

    # Every function inlined, not only those the compiler inlines: the op deciding may be in any.
    try:
        flat = onnx.inliner.inline_local_functions(model) if model.functions and serializable(model) else model
    except Exception:  # noqa: BLE001 - the kinds only refine what the shapes say
        flat = model
    shaped = infer_shapes(skeleton(flat) or flat)
    return _kinds(shaped.graph, _opset(model), {})


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _dims(v: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]


def _kinds(graph: onnx.GraphProto, opset: int, outer: dict) -> dict[str, str]:
    producer = {name: node for node in graph.node for name in node.output}
    constants = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    shapes = dict(outer)
    shapes.update((v.name, _dims(v)) for v in [*graph.input, *graph.value_info, *graph.output]
                  if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"))
    return {o.name: _kind(o.name, producer, constants, shapes, opset) for o in graph.output}


def _kind(name: str, producer: dict, constants: set, shapes: dict, opset: int) -> str:
    for _ in range(64):  # a bounded walk: a malformed graph may loop
        node = producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx") and node.op_type not in _FEATURES:
            return "unknown"
        decided = _decides(node, name, shapes, opset)
        if decided is not None:
            return decided
        if node.op_type == "If":
            branch = next(a.g for a in node.attribute if a.name == "then_branch")
            return _kinds(branch, opset, shapes).get(branch.output[list(node.output).index(name)].name, "unknown")
        if node.op_type in _SCALE:
            live = [i for i in node.input if i not in constants]
            if len(live) != 1:
                return "unknown"
            name = live[0]
        elif node.op_type == "Where" and len(node.input) == 3:  # a mask: where(cond, x, -inf)
            name = node.input[1] if node.input[2] in constants else node.input[2]
        elif node.op_type in _PASS and node.input:
            name = node.input[0]
        else:
            return "unknown"
    return "unknown"


def _decides(node: onnx.NodeProto, name: str, shapes: dict, opset: int) -> str | None:
    """The kind ``node`` (making ``name``) decides, or None to walk on."""
    op, rank = node.op_type, len(shapes.get(name, [])) if name in shapes else None
    if op in _HEADS:
        return "head"
    if op == "TopK":
        return "topk" if name == node.output[0] else "unknown"
    if op in _FEATURES:
        return "values"
    if op == "Sigmoid" and rank is not None and rank >= 3:
        return "values"
    if op in _SOFTMAX:
        return "head" if _on_last_axis(node, rank, opset) else "values"
    if op in ("Reshape", "Flatten"):
        before, after = shapes.get(node.input[0]), shapes.get(name)
        if before and after and before[-1] and after[-1] and after[-1] < before[-1]:
            return "values"  # the last axis is split: its entries are no longer classes
    return None


def _on_last_axis(node: onnx.NodeProto, rank: int | None, opset: int) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    # Before opset 13 Softmax flattens from ``axis`` on, so only the last axis is one axis.
    return axis == -1 or (rank is not None and axis == rank - 1)
