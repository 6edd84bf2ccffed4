"""Which outputs hold class scores on their last axis, read from the graph.

An array's shape alone cannot tell class scores from other values: a detector's box
regression [N, anchors, 4], a YOLO output [N, 8400, 85] and an encoder's hidden states
[N, T, 768] look like the per-position logits of a language model [N, T, V], and a
sorted TopK [N, k] like a classifier's [N, C] (its arg-max is always 0, so top-1
agreement would be 100% whatever changed). Top-1 agreement means something only for
scores, so ``output_kinds`` asks the graph what made the output:

* ``head``: a MatMul/Gemm/Einsum (through a constant bias, scale and shape-only ops), or
  a Softmax/LogSoftmax over the last axis: class scores;
* ``topk``: TopK's values: never class scores;
* ``other``: anything else (a Sigmoid, a Concat, a LayerNorm, a graph input).

[N, C] outputs stay class scores unless TopK made them (a classifier's head is often
behind ops this does not follow); [N, T, C] outputs need a head
(metrics.is_scores).
"""

from __future__ import annotations

import onnx
import onnx.numpy_helper

from .. import ops

# Ops that keep what the last axis of their first input means.
_PASS = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Dropout"}
_HEADS = {"MatMul", "Gemm", "Einsum"}
_SOFTMAX = {"Softmax", "LogSoftmax"}
_SCALE = {"Add", "Sub", "Mul", "Div"}  # with a constant operand: a bias, a temperature


def output_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Each graph output's kind: ``head``, ``topk`` or ``other`` (see the module doc)."""
    return _kinds(model.graph, _opset(model))


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _kinds(graph: onnx.GraphProto, opset: int) -> dict[str, str]:
    producer = {name: node for node in graph.node for name in node.output}
    constants = {t.name: t for t in graph.initializer}
    constants.update((n.output[0], n.attribute[0].t) for n in graph.node
                     if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value")
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.output]
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    return {o.name: _kind(o.name, producer, constants, ranks, opset) for o in graph.output}


def _kind(name: str, producer: dict, constants: set, ranks: dict, opset: int) -> str:
    seen = 0
    while name in producer and seen < 64:  # a bounded walk: a malformed graph may loop
        seen += 1
        node = producer[name]
        if node.op_type in _HEADS or node.domain == ops.DOMAIN:
            return "head"
        if node.op_type == "TopK":
            return "topk" if name == node.output[0] else "other"
        if node.op_type in _SOFTMAX:
            return "head" if _on_last_axis(node, ranks.get(node.output[0]), opset) else "other"
        if node.op_type == "If":
            branch = next(a.g for a in node.attribute if a.name == "then_branch")
            index = list(node.output).index(name)
            return _kinds(branch, opset).get(branch.output[index].name, "other")
        if node.op_type in _SCALE:
            live = [i for i in node.input if i not in constants]
            if len(live) != 1 or (node.op_type in ("Sub", "Div") and live[0] != node.input[0]):
                return "other"
            name = live[0]
        elif node.op_type in _PASS or (node.op_type == "Slice" and _keeps_last_axis(node, constants, ranks)):
            name = node.input[0]
        else:
            return "other"
    return "other"


def _keeps_last_axis(node: onnx.NodeProto, constants: dict, ranks: dict) -> bool:
    """Whether a Slice leaves the last axis whole (logits[:, -1:] keeps the classes)."""
    if len(node.input) > 3:
        axes = constants.get(node.input[3])
        axes = None if axes is None else onnx.numpy_helper.to_array(axes).reshape(-1).tolist()
    else:
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    rank = ranks.get(node.output[0])
    if axes is None or rank is None:  # no axes: every axis is sliced
        return False
    return all(a != -1 and a != rank - 1 for a in axes)


def _on_last_axis(node: onnx.NodeProto, rank: int | None, opset: int) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    # Before opset 13 Softmax flattens from ``axis`` on, so only the last axis is one axis.
    return axis == -1 or (rank is not None and axis == rank - 1)
