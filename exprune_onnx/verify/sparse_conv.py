"""Verification of ExPruneSparseConv nodes (passes/sparse_conv.py), for verify.py.

Each sparse conv must read exact zeros (a Relu, a Clip, an early-exit op, or a MaxPool of
one or another op that keeps its zeros, passes/zeros.py) and write the output of a Conv
of the canonical original that reads the same tensor, or the end of the group after that
Conv (constant Adds and Muls, one residual Add, Relu/Clip(0, c); rules/chain.py). Its weight must be that Conv's weight times the group's
per-output scale, repacked as ``[C, KH, KW, M/group]`` (``[C, KW, M/group]`` for a 1-D conv); its bias the group's folded bias;
its residual the group's; its attributes the Conv's (strides, pads, dilations, auto_pad,
group, kernel_shape) and the group's activation and cap. The weights themselves are
compared by verify_sparse.weight_problems.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from ..compiler.graphutil import all_graphs, const_value, describe, opset_of
from ..config import Options
from ..passes.sparse_conv import per_output, repack
from ..passes.zeros import zero_writers
from ..rules import chain
from ..rules.base import Context
from .sparse_matmul import SparseLayer, writes_zeros


def _group_of(conv: gs.Node, graph: gs.Graph, y_name: str, m: int, rank: int, opset: int):
    """The chain after ``conv`` in the canonical original that ends in ``y_name``, or a reason."""
    if conv.outputs[0].name == y_name:
        return None
    ctx = Context(graph, graph, opset, Options(), set())
    found = chain.follow(conv.outputs[0], ctx, m, 1, rank)
    if isinstance(found, str):
        return f"the original Conv's group cannot be fused ({found})"
    if found.output.name != y_name or found.problems:
        return f"it writes '{y_name}', which is not the end of the original Conv's group"
    return found


def _conv_reading(canonical: gs.Graph, x_name: str, y_name: str):
    """(Conv, its graph, the group) of the canonical original that the op stands for."""
    best = None
    for g in all_graphs(canonical):
        for node in g.nodes:
            if node.op != "Conv" or (node.domain or "") not in ("", "ai.onnx") or node.inputs[0].name != x_name:
                continue
            w = const_value(node.inputs[1], opset_of(g, canonical))
            if w is None or w.ndim not in (3, 4):
                continue
            group = _group_of(node, g, y_name, int(w.shape[0]), w.ndim, opset_of(g, canonical))
            if not isinstance(group, str):
                return node, g, group
            best = best or group
    return best


def trace_conv(op: gs.Node, canonical: gs.Graph) -> SparseLayer:
    """The original Conv (and group) ``op`` stands for, and what its weight and bias must be."""
    layer = SparseLayer(op)
    bad = layer.problems.append
    if not 2 <= len(op.inputs) <= 4 or not 1 <= len(op.outputs) <= 2:
        bad(f"{describe(op)} has {len(op.inputs)} inputs and {len(op.outputs)} outputs: it takes x, w, an optional "
            "bias and residual, and gives y and optional stats")
        return layer
    x = op.inputs[0]
    if not all(writes_zeros(w) for w in zero_writers(x)):
        bad(f"its input '{x.name}' does not come from a Relu, Clip or early-exit op, or from one through ops "
            "that keep its zeros (pools, reshapes, Split, Concat, ...)")
    found = _conv_reading(canonical, x.name, op.outputs[0].name)
    if found is None or isinstance(found, str):
        bad(found or f"it writes '{op.outputs[0].name}', which the original does not compute with a Conv "
                     f"reading '{x.name}'")
        return layer
    conv, graph, group = found
    opset = opset_of(graph, canonical)
    layer.stands_for([conv] + (group.nodes if group is not None else []))
    w = const_value(conv.inputs[1], opset).astype(np.float64)
    bias = None
    if len(conv.inputs) > 2 and conv.inputs[2].name:
        bias = const_value(conv.inputs[2], opset).astype(np.float64).reshape(-1)
    if group is not None:
        w = w * per_output(group.scale, w.ndim)
        bias = group.bias + group.scale * (bias if bias is not None else 0.0)
    n_groups = int(conv.attrs.get("group", 1))
    layer.weight, layer.bias = repack(w, n_groups).astype(np.float64), bias
    layer.problems += _attribute_problems(op, conv, w.shape, group)
    residual = op.inputs[3] if len(op.inputs) > 3 else None
    want = group.residual if group is not None else None
    if (residual.name if residual is not None else None) != (want.name if want is not None else None):
        bad(f"its residual is {residual.name if residual is not None else 'none'}, the original group's "
            f"{want.name if want is not None else 'none'}")
    has_bias = len(op.inputs) > 2 and bool(op.inputs[2].name)
    if has_bias != (bias is not None):
        bad(f"it {'adds' if has_bias else 'has no'} bias, the original layer {'has none' if has_bias else 'adds one'}")
    return layer


def _attribute_problems(op: gs.Node, conv: gs.Node, w_shape, group) -> list[str]:
    spatial = len(w_shape) - 2
    defaults = {"strides": [1] * spatial, "dilations": [1] * spatial, "pads": [0] * (2 * spatial),
                "auto_pad": "NOTSET", "group": 1}
    problems = []
    for name, default in defaults.items():
        got, want = _plain(op.attrs.get(name, default)), _plain(conv.attrs.get(name, default))
        if got != want:
            problems.append(f"attribute {name} is {got}, the original Conv's {want}")
    if _plain(op.attrs.get("kernel_shape", list(w_shape[2:]))) != [int(d) for d in w_shape[2:]]:
        problems.append(f"attribute kernel_shape is {op.attrs.get('kernel_shape')}, the weight's {list(w_shape[2:])}")
    activation = _plain(op.attrs.get("activation", "none"))
    want_act = "relu" if group is not None else "none"
    if activation != want_act:
        problems.append(f"activation is {activation}, the original group's {want_act}")
    cap = float(op.attrs.get("clip_max", math.inf))
    want_cap = group.clip_max if group is not None else math.inf
    if cap != want_cap:
        problems.append(f"clip_max is {cap}, the original group's {want_cap}")
    return problems


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return [int(i) for i in v]
    return v
