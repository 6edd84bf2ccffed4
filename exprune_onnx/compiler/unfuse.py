"""onnxruntime's FusedConv and FusedGemm, split back into the standard ops they fuse.

A model saved after onnxruntime's extended graph optimisations (``optimized_model_filepath``;
its basic level writes standard ops only) holds ``FusedConv`` (Conv, the Add of an optional input Z,
then an activation) and ``FusedGemm`` (Gemm, then an activation). The Conv -> Relu groups
and the Relu zeros the rewrites read are inside them, so such a model had nothing to
rewrite. Split, each is the ops it was made of, computed in the same order, so the split is
exact; and onnxruntime fuses again, when it loads the written model, every layer the
compiler leaves as it was. An op whose activation has no standard op here (FusedConv's
Silu, say) stays fused and ``rules/runtime_fused.py`` reports it.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..io.modelio import all_graphs, all_nodes
from .graphutil import unique_name

DOMAIN = "com.microsoft"
# FusedConv passes its activation's parameters as a list (activation_params), in this order.
_CONV_PARAMS = {"": (), "Relu": (), "Tanh": (), "Sigmoid": (), "LeakyRelu": ("alpha",),
                "Clip": ("min", "max"), "HardSigmoid": ("alpha", "beta")}
# FusedGemm passes them as activation_alpha/_beta/_gamma, the names the activation takes;
# onnxruntime runs none without an activation.
_GEMM_PARAMS = {"Relu": (), "Tanh": (), "Sigmoid": (), "Softplus": (), "Softsign": (),
                "LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"), "Elu": ("alpha",),
                "Selu": ("alpha", "gamma")}
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
_GEMM_ATTRS = ("alpha", "beta", "transA", "transB")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def activation(op: str, domain: str, attrs: dict) -> tuple[str, dict] | None:
    """The activation a FusedConv/FusedGemm with ``attrs`` applies, as a standard op's type
    ("" for none) and attributes; None for any other op, or an activation not split here."""
    if (domain, op) == (DOMAIN, "FusedConv"):
        kind = _text(attrs.get("activation", ""))
        names = _CONV_PARAMS.get(kind)
        params = list(attrs.get("activation_params", []))
        if names is None or len(params) != len(names):
            return None
        return kind, dict(zip(names, (float(p) for p in params)))
    if (domain, op) == (DOMAIN, "FusedGemm"):
        kind = _text(attrs.get("activation", ""))
        names = _GEMM_PARAMS.get(kind)
        if names is None:
            return None
        given = {name: float(attrs[f"activation_{name}"]) for name in names if f"activation_{name}" in attrs}
        return kind, given
    return None


def splits(node: onnx.NodeProto) -> bool:
    """Whether ``unfuse_model`` splits ``node``."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return activation(node.op_type, node.domain, attrs) is not None


def unfuse_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy with every FusedConv and FusedGemm it can split split (before
    shape inference, which then sizes the Conv's output over open dims as it sizes any
    Conv's: a FusedConv's H/W over a symbolic input stayed unknown, and the residual Adds
    after it were refused as not provably of the output's shape)."""
    if not any(splits(n) for n in all_nodes(model.graph)):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names, types = _names(out), _elem_types(out)
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 1)
    # Innermost bodies first: rebuilding a graph's node list copies the bodies its nodes hold.
    for graph in reversed(list(all_graphs(out.graph))):
        nodes = []
        for node in graph.node:
            nodes += _split(node, graph, opset, names, types) if splits(node) else [node]
        del graph.node[:]
        graph.node.extend(nodes)
    return out


def _names(model: onnx.ModelProto) -> set[str]:
    names = set()
    for graph in all_graphs(model.graph):
        names.update(t.name for t in [*graph.initializer, *graph.input, *graph.output, *graph.value_info])
        for node in graph.node:
            names.update([node.name, *node.input, *node.output])
    return names


def _split(node: onnx.NodeProto, graph: onnx.GraphProto, opset: int, names: set[str],
           types: dict[str, int]) -> list[onnx.NodeProto]:
    """The Conv/Gemm (its name the layer's), then the Add of Z and the activation, the last
    writing ``node``'s output. New names read as an exporter's: the conv's output
    '<layer>_output_0', the activation named after its output's '<name>_output_0'."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    kind, params = activation(node.op_type, node.domain, attrs)
    conv = node.op_type == "FusedConv"
    out, base = node.output[0], node.name or node.op_type
    z = node.input[3] if conv and len(node.input) > 3 and node.input[3] else None
    steps = ([("Add", [z], {})] if z is not None else []) + ([(kind, [], params)] if kind else [])
    value = out if not steps else unique_name(f"{base}_output_0", names)
    keep = _CONV_ATTRS if conv else _GEMM_ATTRS
    first = onnx.helper.make_node("Conv" if conv else "Gemm", [i for i in node.input[:3] if i], [value],
                                  name=node.name)
    first.attribute.extend(a for a in node.attribute if a.name in keep)
    made = [first]
    for i, (op, rest, op_attrs) in enumerate(steps):
        result = out if i == len(steps) - 1 else unique_name(f"{base}_{op.lower()}_output_0", names)
        if op == "Clip" and opset >= 11:  # its bounds are inputs from opset 11, attributes before
            elem = types.get(node.input[1]) or types.get(node.input[0]) or onnx.TensorProto.FLOAT
            rest = [_bound(graph, f"{value}_{k}", op_attrs[k], elem, names) for k in ("min", "max")]
            op_attrs = {}
        own = result[:-len("_output_0")] if result.endswith("_output_0") and result != value else f"{base}/{op}"
        made.append(onnx.helper.make_node(op, [value, *rest], [result], name=unique_name(own, names), **op_attrs))
        value = result
    return made


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> element type, over every scope: a body's op may read an outer weight
    (its Clip bounds took float where the weight was float16, and onnxruntime refused it)."""
    types = {}
    for graph in all_graphs(model.graph):
        for v in [*graph.input, *graph.output, *graph.value_info]:
            if v.type.tensor_type.elem_type:
                types[v.name] = v.type.tensor_type.elem_type
        types.update((t.name, t.data_type) for t in graph.initializer)
    return types


def _bound(graph: onnx.GraphProto, name: str, value: float, elem_type: int, names: set[str]) -> str:
    name = unique_name(name, names)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
    return name
