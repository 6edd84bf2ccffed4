"""Dominance prediction for prediction heads whose only use is an arg-max.

    Gemm(h, W, b) | MatMul(h, W) -> [Add(b)] -> [Softmax | LogSoftmax] -> ArgMax | TopK(k=1).indices
      =>  MatMul(Slice(h, 0..k), W[:k]) -> ExPruneArgmaxHead(partial, h, W[k:]^T, b) -> index

and, for a graph output named by ``--argmax-only OUTPUT`` (Options.argmax_only),

    Gemm | MatMul -> [Add(b)] -> [Softmax | LogSoftmax] -> OUTPUT (scores)
      =>  ... -> ExPruneArgmaxHead(...) -> OUTPUT (int64 class index, class axis dropped)

Softmax and LogSoftmax are increasing, so the arg-max of the logits is theirs. PyTorch
exports a classifier followed by ``argmax`` as Gemm -> ArgMax (keepdims 0) and
``topk(1)`` as TopK; Keras/tf2onnx models usually end in Softmax -> ArgMax when the
serving signature returns the class. The class axis must be the last one, the arg-max
must return the first maximal index (select_last_index = 0), and for TopK the values
output must be unused.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.graphutil import const_value, describe, is_graph_output
from ..measure.output_kinds import named_as_values
from . import chain, common
from .base import Candidate, Context, NoMatch, Rule

NAME = "argmax_head"
OP_TYPES = ("Gemm", "MatMul")

_MONOTONE = ("Softmax", "LogSoftmax")


def match(node, ctx: Context) -> Candidate | NoMatch | None:
    """None unless the node's result ends in an arg-max (or a declared --argmax-only output)."""
    if node.op not in OP_TYPES or not chain.is_default_domain(node):
        return None
    end = _follow(node.outputs[0], ctx)
    if end is None:
        return None
    layer = common.layer_name(node, ctx)
    nodes, output, keepdims, problem = end
    if problem is not None:  # (a float16 head is told so, not where --argmax-only would lead)
        precision = common.precision_problem(const_value(node.inputs[1], ctx.opset), node.inputs[0])
        return NoMatch(NAME, layer, node.op, precision or problem)
    weight, bias = _weight_and_bias(node, nodes, ctx)
    if isinstance(weight, str):
        return NoMatch(NAME, layer, node.op, weight)
    return Candidate(
        rule=NAME, kind="dense", layer=layer, reduction=node, x=node.inputs[0], weight=weight, bias=bias,
        residual=None, chain=nodes, output=output, clip_max=math.inf, head_keepdims=keepdims,
        head_logits_shape=None if node.outputs[0].shape is None else list(node.outputs[0].shape),
    )


def check(c: Candidate, ctx: Context) -> str | None:
    setting = ctx.options.setting(c.layer)
    if setting.rule == "certified":
        return "the certified rule bounds a ReLU's input; it has no meaning for an arg-max head"
    if setting.thresholds is not None:
        return "per-output thresholds are for ReLU layers; a head takes one margin"
    if c.reduction.op == "Gemm" and c.reduction.attrs.get("transA", 0):
        return "Gemm with transA = 1 feeding an arg-max is not supported"
    return common.check(c, ctx)


def rewrite(c: Candidate, ctx: Context):
    declared = not c.chain or c.chain[-1].op not in ("ArgMax", "TopK")
    if declared:  # an --argmax-only output: the scores become the index, without the class axis
        shape = c.output.shape
        c.output.shape = None if shape is None else list(shape[:-1])
    return common.emit(c, ctx, ops.ARGMAX_HEAD, {"keepdims": int(bool(c.head_keepdims))})


def _follow(t: gs.Tensor, ctx: Context):
    """Walk to the arg-max: (nodes, index tensor, keepdims, problem) or None if this is no head."""
    nodes: list[gs.Node] = []
    rank = len(t.shape) if t.shape is not None else None
    if rank is None and t.inputs and t.inputs[0].op == "Gemm":
        rank = 2  # a Gemm's result is a matrix even where inference gave no shape
    while True:
        users = list(t.outputs)
        if is_graph_output(t, ctx.graph):
            if ctx.graph is not ctx.model_graph:  # --argmax-only names the model's outputs, not a branch's
                return nodes, t, None, f"its result '{t.name}' is an output of the {ctx.graph.name} subgraph"
            if t.name not in ctx.options.argmax_only:
                if named_as_values(t.name):  # a reconstruction, boxes: no arg-max to suggest
                    return nodes, t, None, f"its result '{t.name}' is a graph output, of values by its name"
                return nodes, t, None, (f"its result '{t.name}' is a graph output; if only its arg-max matters, "
                                        f"--argmax-only {t.name} rewrites it as a head")
            if users:
                return nodes, t, False, f"--argmax-only output '{t.name}' is also used inside the graph"
            return nodes, t, False, None
        if len(users) != 1:
            if any(u.op in ("ArgMax", "TopK") + _MONOTONE for u in users):
                return nodes, t, None, f"'{t.name}' feeds an arg-max and also {len(users) - 1} other node(s)"
            return None
        user = users[0]
        if not chain.is_default_domain(user):
            return None
        if user.op == "Add" and not nodes:
            nodes.append(user)
        elif user.op in _MONOTONE:
            problem = _last_axis(user, rank, ctx, default=1 if ctx.opset < 13 else -1)
            if problem is not None:
                return nodes, t, None, problem
            nodes.append(user)
        elif user.op == "ArgMax":
            problem = _last_axis(user, rank, ctx, default=0)
            if problem is None and user.attrs.get("select_last_index", 0):
                problem = f"{describe(user)} returns the last maximal index (select_last_index = 1)"
            return nodes + [user], user.outputs[0], bool(user.attrs.get("keepdims", 1)), problem
        elif user.op == "TopK":
            return _topk(user, t, nodes, rank, ctx)
        else:
            return None
        t = user.outputs[0]


def _topk(user: gs.Node, t: gs.Tensor, nodes: list, rank, ctx: Context):
    problem = _last_axis(user, rank, ctx, default=-1)
    k = user.attrs.get("k") if ctx.opset < 10 else const_value(user.inputs[1], ctx.opset)
    if problem is None and (k is None or np.asarray(k).size != 1 or int(np.asarray(k).reshape(-1)[0]) != 1):
        problem = f"{describe(user)} is not a TopK with a constant k = 1"
    if problem is None and not user.attrs.get("largest", 1):
        problem = f"{describe(user)} selects the smallest value"
    values = user.outputs[0]
    if problem is None and (values.outputs or is_graph_output(values, ctx.graph)):
        problem = f"the values output of {describe(user)} is used; only its indices can be predicted early"
    return nodes + [user], user.outputs[1], True, problem


def _last_axis(node: gs.Node, rank, ctx: Context, default: int) -> str | None:
    axis = int(node.attrs.get("axis", default))
    if rank is None:
        return None if axis == -1 else f"{describe(node)} works on axis {axis} of a tensor of unknown rank"
    if axis not in (-1, rank - 1):
        return f"{describe(node)} works on axis {axis}, not the class axis (the last of {rank})"
    return None


def _weight_and_bias(node: gs.Node, nodes: list[gs.Node], ctx: Context):
    """The head's [n, C] weight and [C] bias in float64-folded form, or a reason."""
    w = const_value(node.inputs[1], ctx.opset)
    problem = common.matrix_problem(node.inputs[1], w)
    if problem:
        return problem, None
    if node.op == "Gemm":
        w = w.T if node.attrs.get("transB", 0) else w
        w = (w * np.float32(node.attrs.get("alpha", 1.0))).astype(w.dtype)
    classes = int(w.shape[1])
    bias = np.zeros(classes)
    terms = []
    if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2].name:
        terms.append((node.inputs[2], float(node.attrs.get("beta", 1.0))))
    if nodes and nodes[0].op == "Add":
        add = nodes[0]
        terms.append((add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0], 1.0))
    for tensor, factor in terms:
        value = const_value(tensor, ctx.opset)
        if value is None or value.size not in (1, classes) or (value.ndim == 2 and value.shape[0] != 1) \
                or value.ndim > 2:
            return f"the bias '{tensor.name}' is not a constant per-class vector", None
        bias = bias + factor * np.broadcast_to(value.reshape(-1).astype(np.float64), (classes,))
    return w, bias


RULE = Rule(NAME, match, check, rewrite)
