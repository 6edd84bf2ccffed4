"""Small helpers over onnx-graphsurgeon graphs: constants, shapes, names."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

# Producers we evaluate at compile time when all their inputs are constant, so a
# weight computed from constants (Paddle's Constant nodes, Caffe2's
# ConstantOfShape, a Transpose of an initializer; the dynamo exporter's zero bias,
# Expand(CastLike(0, w), Shape(w)[:1]), with optimize=False) counts as a constant weight.
_FOLDABLE = {
    "Constant", "ConstantOfShape", "Identity", "Cast", "CastLike", "Transpose", "Reshape",
    "Squeeze", "Unsqueeze", "Flatten", "Mul", "Add", "Sub", "Div", "Neg",
    "Concat", "Expand", "Sqrt", "Reciprocal", "Shape", "Slice", "Gather",
}
_MAX_FOLD_DEPTH = 8


def const_value(tensor: gs.Tensor, opset: int, _depth: int = 0) -> np.ndarray | None:
    """The value of ``tensor`` if it is known at compile time, else None. Never mutates."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if not tensor.inputs or _depth > _MAX_FOLD_DEPTH:
        return None
    node = tensor.inputs[0]
    if node.op not in _FOLDABLE or (node.domain or "") not in ("", "ai.onnx"):
        return None
    if node.op == "CastLike" and len(node.inputs) == 2:  # its second input lends only its type
        value, like = const_value(node.inputs[0], opset, _depth + 1), node.inputs[1].dtype
        try:
            return None if value is None or like is None else np.asarray(value).astype(np.dtype(like))
        except TypeError:  # a type numpy lacks (bfloat16)
            return None
    values = []
    for inp in node.inputs:
        if inp.name == "":
            values.append(None)
            continue
        v = const_value(inp, opset, _depth + 1)
        if v is None:
            return None
        values.append(v)
    try:
        outputs = _evaluate(node, values, opset)
    except Exception:
        return None
    return outputs[node.outputs.index(tensor)]


def _evaluate(node: gs.Node, values: list, opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(values)]
    out_names = [f"out{i}" for i in range(len(node.outputs))]
    attrs = {}
    for key, val in node.attrs.items():
        if isinstance(val, gs.Constant):
            val = onnx.numpy_helper.from_array(np.asarray(val.values))
        attrs[key] = val
    proto = onnx.helper.make_node(node.op, names, out_names, **attrs)
    feeds = {n: v for n, v in zip(names, values) if v is not None}
    inputs = [
        onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in feeds.items()
    ]
    outputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in out_names]
    graph = onnx.helper.make_graph([proto], "fold", inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, feeds)


def other_than_float32(tensor: gs.Tensor) -> str | None:
    """The name of ``tensor``'s element type unless it is float32 or unknown; gs gives
    types numpy lacks (bfloat16) as ONNX's enum."""
    if tensor.dtype is None:
        return None
    try:
        dtype = np.dtype(tensor.dtype)
    except TypeError:
        return onnx.helper.tensor_dtype_to_string(int(tensor.dtype)).removeprefix("TensorProto.").lower()
    return None if dtype == np.float32 else str(dtype)


def is_graph_output(tensor: gs.Tensor, graph: gs.Graph) -> bool:
    return any(t is tensor for t in graph.outputs)


def is_graph_input(tensor: gs.Tensor, graph: gs.Graph) -> bool:
    return any(t is tensor for t in graph.inputs)


def body_input_source(tensor: gs.Tensor, body: gs.Graph, model_graph: gs.Graph) -> tuple[gs.Tensor, gs.Graph] | None:
    """The outer tensor a Loop/Scan body's formal input starts as, and the graph holding it:
    a Scan's states and scanned inputs are its own inputs in order, a Loop's carried
    values its inputs from the third on (the first two, the trip count and condition,
    start as no tensor of the outer graph). None for anything else."""
    index = next((i for i, t in enumerate(body.inputs) if t is tensor), None)
    for graph in all_graphs(model_graph):
        for node in graph.nodes:
            if index is None or not any(v is body for v in node.attrs.values()):
                continue
            if node.op not in ("Scan", "Loop") or (node.op == "Loop" and index < 2) or index >= len(node.inputs):
                return None
            outer = node.inputs[index]
            return (outer, graph) if outer.name else None
    return None


def describe(node: gs.Node) -> str:
    return f"{node.op} '{node.name}'" if node.name else f"{node.op} -> '{node.outputs[0].name}'"


def static_shape(tensor: gs.Tensor) -> tuple | None:
    """The tensor's shape as known from shape inference (dims may be str or None)."""
    if isinstance(tensor, gs.Constant):
        return tuple(tensor.shape)
    return None if tensor.shape is None else tuple(tensor.shape)


def same_shape(a: gs.Tensor, b: gs.Tensor, proof: dict | None = None) -> bool:
    """True when two tensors provably have the same shape (equal ints or equal symbols).
    ``proof`` (tensor -> dims under the model's own input dims) replaces a variable's
    shape when --input-shape or the data put numbers in: two dims equal at that size
    prove nothing at the other sizes the written model runs at."""
    sa, sb = _shape_for_proof(a, proof), _shape_for_proof(b, proof)
    if sa is None or sb is None or len(sa) != len(sb):
        return False
    for da, db in zip(sa, sb):
        if da is None or db is None or isinstance(da, str) != isinstance(db, str):
            return False
        if da != db or da == "":
            return False
    return True


def _shape_for_proof(t: gs.Tensor, proof: dict | None) -> tuple | None:
    if proof is None or isinstance(t, gs.Constant):
        return static_shape(t)
    dims = proof.get(t.name)
    return None if dims is None else tuple(dims)


def opset_of(graph: gs.Graph, model_graph: gs.Graph) -> int:
    """The default-domain opset ``graph`` (the model's graph or a body in it) is read at."""
    return int(graph.opset or model_graph.opset)


def all_graphs(graph: gs.Graph) -> list[gs.Graph]:
    """The graph and every If/Loop/Scan body inside it, outermost first."""
    return [graph] + list(graph.subgraphs(recursive=True))


def cleanup(graph: gs.Graph) -> gs.Graph:
    """``graph.cleanup`` over its bodies too, with every node told apart by name meanwhile.
    The graph surgeon takes a dead node off its inputs' consumer lists by equality, and two
    nodes of one name, op, attributes and inputs are equal: an unnamed Conv in an If body
    beside one in the main graph on the same input and weight took the other off the list,
    and the second removal failed ("list.remove(x): x not in list")."""
    names = [(node, node.name) for g in all_graphs(graph) for node in g.nodes]
    for i, (node, _) in enumerate(names):
        node.name = f"{i}"
    try:
        graph.cleanup(recurse_subgraphs=True)
    finally:
        for node, name in names:
            node.name = name
    return graph


def unique_name(base: str, taken: set[str]) -> str:
    """A tensor/node name not used anywhere in the model."""
    name, i = base, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


def model_names(graph: gs.Graph) -> set[str]:
    names: set[str] = set()
    for g in all_graphs(graph):
        names.update(g.tensors().keys())
        names.update(n.name for n in g.nodes if n.name)
    return names
