"""The part every ReLU rule shares: what may stand between the reduction and the activation.

    reduction -> [Add | Sub | Mul | Div (constant)]* -> [Add(residual)] -> [Add | Sub (constant)]* -> Relu | Clip(min = 0)

Constant Adds and Subs fold into the per-output bias and constant Muls and Divs into a
per-output scale of the weights (Caffe2 exports BatchNorm's affine part as Mul then Add;
torch's ``relu(conv(x) - c)`` and ``conv(x) / t`` export as Sub and Div); one Add of a
non-constant tensor is the residual (ResNet's skip connection; Caffe2 writes it as a
two-input Sum), which the early-exit op treats as a known per-element offset.
BatchNormalization is folded earlier by canonicalisation; one still here could not be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.graphutil import const_value, describe, is_graph_output, same_shape
from .base import Context

# Identity passes values on unchanged (exporters and graph editors leave them between a
# layer and its activation).
_CHAIN_OPS = {"Add", "Sum", "Sub", "Mul", "Div", "BatchNormalization", "Relu", "Clip", "Identity"}


@dataclass
class Chain:
    """pre-activation = scale * reduction + bias (+ residual), per output channel."""

    nodes: list[gs.Node]
    scale: np.ndarray  # [O], float64
    bias: np.ndarray  # [O], float64
    residual: gs.Tensor | None
    output: gs.Tensor
    clip_max: float
    problems: list[str] = field(default_factory=list)


def is_default_domain(node: gs.Node) -> bool:
    return (node.domain or "") in ("", "ai.onnx")


def follow(start: gs.Tensor, ctx: Context, out_channels: int, channel_axis: int, rank: int | None) -> Chain | str:
    """Walk from the reduction's output to the activation; a string is the reason it failed.

    ``channel_axis`` is where the outputs sit in the result (1 for Conv, -1 for dense);
    ``rank`` is the result's rank when known.
    """
    nodes: list[gs.Node] = []
    problems: list[str] = []
    scale = np.ones(out_channels)
    bias = np.zeros(out_channels)
    residual = None
    t = start
    while True:
        nxt = _continuation(t, ctx, problems)
        if isinstance(nxt, str):
            if t is not start and not reaches_activation(start):  # say it of the layer, not of a later tensor
                return (f"'{start.name}' does not feed a ReLU-family activation (a linear layer): "
                        f"{describe(nodes[-1])} after it ends the chain ({nxt})")
            return nxt
        nodes.append(nxt)
        if nxt.op in ("Relu", "Clip"):
            clip_max = _activation_cap(nxt, ctx)
            if isinstance(clip_max, str):
                return clip_max
            return Chain(nodes, scale, bias, residual, nxt.outputs[0], clip_max, problems)
        if nxt.op == "Identity":
            t = nxt.outputs[0]
            continue
        if nxt.op == "BatchNormalization":
            # Canonicalisation folds every BN it can; an extra consumer is the usual blocker.
            return problems[0] if problems else (
                f"{describe(nxt)} could not be folded (non-constant parameters or training mode)")
        # An Add, a two-input Sum or a Mul.
        if len(nxt.inputs) != 2:
            return _stop(start, t, nxt, f"{describe(nxt)} has {len(nxt.inputs)} inputs")
        if nxt.inputs[0] is nxt.inputs[1]:
            return _stop(start, t, nxt, f"{describe(nxt)} combines the intermediate with itself")
        other = nxt.inputs[1] if nxt.inputs[0] is t else nxt.inputs[0]
        value = const_value(other, ctx.opset)
        if nxt.op in ("Sub", "Div") and nxt.inputs[0] is not t:
            return _stop(start, t, nxt, f"{describe(nxt)} takes the intermediate as its second operand")
        if nxt.op in ("Mul", "Div"):
            vector = None if value is None else per_output(value, out_channels, channel_axis, rank)
            if vector is None or (nxt.op == "Div" and not np.all(vector != 0)):
                what = "multiplication" if nxt.op == "Mul" else "division"
                return _stop(start, t, nxt, f"{describe(nxt)} is not a {what} by a per-output constant"
                             + (" other than 0" if nxt.op == "Div" else ""))
            if residual is not None:
                return _stop(start, t, nxt, f"{describe(nxt)} scales the residual")
            vector = 1.0 / vector if nxt.op == "Div" else vector
            scale, bias = scale * vector, bias * vector
        elif value is not None:
            vector = per_output(value, out_channels, channel_axis, rank)
            if vector is None:
                return _stop(start, t, nxt, f"{describe(nxt)} adds a constant of shape {list(value.shape)} that is "
                             "not a per-output bias")
            bias = bias - vector if nxt.op == "Sub" else bias + vector
        elif nxt.op == "Sub":
            return _stop(start, t, nxt, f"{describe(nxt)} subtracts a non-constant tensor")
        elif residual is not None:
            if not reaches_activation(nxt.outputs[0]):  # a transformer's residual stream, say
                return (f"'{start.name}' does not feed a ReLU-family activation: after its residual Add, "
                        f"{describe(nxt)} adds another tensor and no Relu or Clip follows")
            return f"{describe(nxt)} is a second non-constant Add before the activation"
        else:
            residual = other
            proof = ctx.proof_shapes
            if not same_shape(other, nxt.outputs[0], proof) or not same_shape(t, nxt.outputs[0], proof):
                problems.append(
                    f"residual '{other.name}' of {describe(nxt)} does not provably have the output's shape"
                )
        t = nxt.outputs[0]


def _stop(start: gs.Tensor, t: gs.Tensor, nxt: gs.Node, reason: str) -> str:
    """``reason`` for a chain op that cannot be folded, unless no activation follows it at all:
    that is then the reason (a Siamese head's Gemm -> Sub(a, b) -> Abs has nothing to rewrite)."""
    if reaches_activation(t):
        return reason
    return f"'{start.name}' does not feed a ReLU-family activation: no Relu or Clip follows {describe(nxt)}"


def reaches_activation(t: gs.Tensor, limit: int = 16) -> bool:
    """Whether a Relu or Clip follows ``t`` through chain ops, each the one chain consumer."""
    for _ in range(limit):
        users = [u for u in t.outputs if u.op in _CHAIN_OPS and is_default_domain(u)]
        if len(users) != 1 or not users[0].outputs:
            return False
        if users[0].op in ("Relu", "Clip"):
            return True
        t = users[0].outputs[0]
    return False


def _continuation(t: gs.Tensor, ctx: Context, problems: list[str]) -> gs.Node | str:
    users = list(t.outputs)
    # A rewrite empties the nodes it replaces, which stay consumers of their inputs until
    # cleanup: a group reaching one was taken by that rewrite (as its residual, say).
    taken = [u for u in users if not u.outputs]
    if taken:
        # (An emptied node may have no name or output to describe it by.)
        return f"'{t.name}' feeds a node ({taken[0].op}) that another rewrite has taken"
    chain_users = [u for u in users if u.op in _CHAIN_OPS and is_default_domain(u)]
    if len(chain_users) != 1:
        if not users:
            where = "a graph output" if is_graph_output(t, ctx.graph) else "used by no node"
            return f"'{t.name}' is {where}, with no ReLU-family activation after it"
        found = ", ".join(sorted({u.op for u in users}))
        ours = next((u.op for u in users if u.domain == ops.DOMAIN), None)
        if ours is not None:  # a model this compiler wrote, given again
            return f"already rewritten: '{t.name}' is the partial product an {ours} op finishes"
        if chain_users:  # one partial sum cannot end two chains
            return f"'{t.name}' feeds {len(users)} nodes ({', '.join(describe(u) for u in users)}): " \
                   "each would need the whole result"
        return f"'{t.name}' does not feed a ReLU-family activation (consumers: {found})"
    if len(users) > 1:
        others = [describe(u) for u in users if u is not chain_users[0]]
        problems.append(f"intermediate '{t.name}' also feeds {', '.join(others)}")
    if is_graph_output(t, ctx.graph):
        problems.append(f"intermediate '{t.name}' is a graph output")
    return chain_users[0]


def per_output(value: np.ndarray, out_channels: int, axis: int, rank: int | None) -> np.ndarray | None:
    """``value`` as an [O] float64 vector if adding it to a result of rank ``rank`` (None:
    unknown) with outputs on ``axis`` only shifts each output channel, else None."""
    if value.size == 1:
        if rank is not None and value.ndim > rank:
            return None
        return np.full(out_channels, float(value.reshape(-1)[0]))
    full_rank = rank if rank is not None else max(value.ndim, axis + 1 if axis >= 0 else 1)
    if value.ndim > full_rank:
        return None
    shape = (1,) * (full_rank - value.ndim) + tuple(value.shape)
    ax = axis % full_rank
    if shape[ax] != out_channels or any(d != 1 for i, d in enumerate(shape) if i != ax):
        return None
    return value.reshape(-1).astype(np.float64)


def _activation_cap(node: gs.Node, ctx: Context) -> float | str:
    """The activation's upper bound, or the reason it is not ReLU-like."""
    if node.op == "Relu":
        return math.inf
    if ctx.opset < 11:
        lo = node.attrs.get("min", -3.4028234663852886e38)
        hi = node.attrs.get("max", math.inf)
    else:
        lo = _clip_bound(node, 1, ctx)
        hi = _clip_bound(node, 2, ctx)
        if lo is None or hi is None:
            return f"{describe(node)} has non-constant bounds"
        lo = -math.inf if lo == "absent" else lo
        hi = math.inf if hi == "absent" else hi
    if lo != 0.0:
        return f"{describe(node)} has min {lo}, so it is not zero for every negative input"
    if not hi > 0.0:
        return f"{describe(node)} has max {hi}, which leaves nothing to compute"
    return float(hi)


def _clip_bound(node: gs.Node, index: int, ctx: Context):
    if len(node.inputs) <= index or node.inputs[index].name == "":
        return "absent"
    value = const_value(node.inputs[index], ctx.opset)
    return None if value is None or value.size != 1 else float(value.reshape(-1)[0])
