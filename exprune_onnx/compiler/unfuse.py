"""onnxruntime's FusedConv and FusedGemm, split back into the standard ops they fuse.

A model saved after onnxruntime's basic or extended graph optimisations
(``optimized_model_filepath``) holds ``FusedConv`` (Conv, the Add of an optional input Z,
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
import onnx_graphsurgeon as gs

from .graphutil import all_graphs, cleanup, model_names, opset_of, unique_name

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
    """Whether ``unfuse`` splits ``node`` (for the warning, which reads the model as given)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return activation(node.op_type, node.domain, attrs) is not None


def unfuse(graph: gs.Graph) -> int:
    """Splits every FusedConv and FusedGemm it can, in place; returns how many."""
    names = model_names(graph)
    count = 0
    for g in all_graphs(graph):
        opset = opset_of(g, graph)
        nodes = []
        for node in g.nodes:
            nodes.append(node)
            act = activation(node.op, node.domain or "", node.attrs)
            if act is None or not node.outputs or len(node.inputs) < 2:
                continue
            nodes += _split(node, act, opset, names)
            count += 1
        g.nodes = nodes
    if count:
        cleanup(graph)
    return count


def _split(node: gs.Node, act: tuple[str, dict], opset: int, names: set[str]) -> list[gs.Node]:
    """``node`` becomes the Conv/Gemm itself (its name is the layer's); returns the Add of Z
    and the activation that follow it, the last writing its output under its name."""
    conv = node.op == "FusedConv"
    kind, params = act
    out = node.outputs[0]
    base = node.name or node.op
    z = node.inputs[3] if conv and len(node.inputs) > 3 and node.inputs[3].name else None
    inputs = [t for t in node.inputs[:3] if t.name]  # an absent bias or C has an empty name
    steps = ([("Add", [z], {})] if z is not None else []) + ([(kind, [], params)] if kind else [])
    value = out if not steps else gs.Variable(unique_name(f"{base}_{'conv' if conv else 'gemm'}", names),
                                              out.dtype, out.shape)
    keep = _CONV_ATTRS if conv else _GEMM_ATTRS
    node.op, node.domain = ("Conv" if conv else "Gemm"), None
    node.attrs = {k: v for k, v in node.attrs.items() if k in keep}
    node.inputs.clear()
    node.outputs.clear()
    node.inputs.extend(inputs)
    node.outputs.append(value)
    after = []
    for i, (op, rest, attrs) in enumerate(steps):
        last = i == len(steps) - 1
        result = out if last else gs.Variable(unique_name(f"{base}_{op.lower()}", names), out.dtype, out.shape)
        if op == "Clip" and opset >= 11:  # its bounds are inputs from opset 11, attributes before
            rest = [_bound(f"{value.name}_{k}", attrs[k], out, names) for k in ("min", "max")]
            attrs = {}
        after.append(gs.Node(op, name=unique_name(f"{base}/{op}", names), attrs=attrs, inputs=[value, *rest],
                             outputs=[result]))
        value = result
    return after


def _bound(name: str, value: float, like: gs.Variable, names: set[str]) -> gs.Constant:
    try:
        dtype = np.dtype(like.dtype)
    except TypeError:
        dtype = np.dtype(np.float32)
    return gs.Constant(unique_name(name, names), np.asarray(value, dtype=dtype))
