"""Checks and graph emission shared by the ReLU rules.

Every rewrite produces the same shape of graph::

    x -> Slice(first k units) -> Conv|MatMul(W_head) -> partial
    partial, x, W_tail, bias[, residual] -> ExPrune*Relu -> y

where ``y`` is the original activation's output tensor, so consumers and graph
outputs see the same name, dtype and shape as before.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..config import choose_k
from ..graphutil import describe, is_graph_input, unique_name
from .base import Candidate, Context, Rewritten

MIN_OPSET = 9

# Ops that only move raw features around; a layer reading the graph input through
# them still sees raw, non-exchangeable features.
_LAYOUT_OPS = {"Reshape", "Flatten", "Transpose", "Identity", "Cast", "Squeeze", "Unsqueeze"}


def layer_name(node: gs.Node, ctx: Context) -> str:
    """A name stable across runs: the node's own, or op and output when that is ambiguous."""
    if node.name and node.name not in ctx.duplicate_node_names:
        return node.name
    return f"{node.op}:{node.outputs[0].name}"


def reads_raw_input(x: gs.Tensor, ctx: Context) -> bool:
    t = x
    for _ in range(16):
        if is_graph_input(t, ctx.model_graph):
            return True
        if not t.inputs or t.inputs[0].op not in _LAYOUT_OPS:
            return False
        t = t.inputs[0].inputs[0]
    return False


def check(c: Candidate, ctx: Context) -> str | None:
    """The first reason ``c`` must not be rewritten, or None."""
    opts = ctx.options
    if ctx.opset < MIN_OPSET:
        return f"opset {ctx.opset} is older than the oldest supported ({MIN_OPSET})"
    if c.problems:
        return c.problems[0]
    if c.weight is None:
        return f"the weight of {describe(c.reduction)} is not a constant"
    if c.weight.dtype != np.float32:
        return f"the weight is {c.weight.dtype}, only float32 layers are rewritten (fp16 may come later)"
    if c.x.dtype is not None and np.dtype(c.x.dtype) != np.float32:
        return f"the input '{c.x.name}' is {np.dtype(c.x.dtype)}, only float32 layers are rewritten"
    if c.bias is None:
        return f"the bias of {describe(c.reduction)} is not a constant"
    setting = opts.setting(c.layer)
    if setting.skip:
        return "skipped by the config file"
    if not opts.include_first_layer and reads_raw_input(c.x, ctx):
        return "its input is a graph input (raw features are not exchangeable; --include-first-layer overrides)"
    if c.n < opts.min_units:
        return f"n = {c.n} input units, fewer than --min-units {opts.min_units}: a partial sum says too little"
    k = choose_k(setting.k, c.n)
    if not 1 <= k < c.n:
        return f"k = {k} is not between 1 and n - 1 = {c.n - 1}"
    return None


def _slice(x: gs.Tensor, k: int, axis: int, ctx: Context, base: str) -> gs.Variable:
    shape = None
    if x.shape is not None:
        shape = list(x.shape)
        shape[axis] = k
    head = gs.Variable(unique_name(base + "_head_in", ctx.names), dtype=np.float32, shape=shape)
    name = unique_name(base + "_slice", ctx.names)
    if ctx.opset < 10:
        node = gs.Node("Slice", name=name, attrs={"starts": [0], "ends": [k], "axes": [axis]},
                       inputs=[x], outputs=[head])
    else:
        consts = [
            gs.Constant(unique_name(f"{base}_slice_{what}", ctx.names), np.array([v], dtype=np.int64))
            for what, v in (("starts", 0), ("ends", k), ("axes", axis))
        ]
        node = gs.Node("Slice", name=name, inputs=[x, *consts], outputs=[head])
    ctx.graph.nodes.append(node)
    return head


def _const(ctx: Context, base: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(unique_name(base, ctx.names), np.ascontiguousarray(value, dtype=np.float32))


def emit(c: Candidate, ctx: Context) -> Rewritten:
    """Replace the group by partial compute plus the early-exit op."""
    setting = ctx.options.setting(c.layer)
    k = choose_k(setting.k, c.n)
    base = c.layer.replace(":", "_").strip("/") or "layer"
    out = c.output
    partial = gs.Variable(unique_name(base + "_partial", ctx.names), dtype=np.float32, shape=out.shape)
    if c.kind == "conv":
        head = _slice(c.x, k, 1, ctx, base)
        w_head = _const(ctx, base + "_w_head", c.weight[:, :k])
        w_tail = _const(ctx, base + "_w_tail", c.weight[:, k:])
        attrs = {a: v for a, v in c.conv_attrs.items() if a != "group"}
        ctx.graph.nodes.append(gs.Node("Conv", name=unique_name(base + "_partial_conv", ctx.names),
                                       attrs=attrs, inputs=[head, w_head], outputs=[partial]))
        op_type = ops.CONV_RELU
        op_attrs = _conv_op_attrs(c)
    else:
        head = _slice(c.x, k, -1, ctx, base)
        w_head = _const(ctx, base + "_w_head", c.weight[:k, :])
        w_tail = _const(ctx, base + "_w_tail", c.weight[k:, :].T)
        ctx.graph.nodes.append(gs.Node("MatMul", name=unique_name(base + "_partial_matmul", ctx.names),
                                       inputs=[head, w_head], outputs=[partial]))
        op_type = ops.DENSE_RELU
        op_attrs = {}
    op_attrs.update(k=k, threshold=float(setting.threshold), clip_max=float(c.clip_max))
    inputs = [partial, c.x, w_tail, _const(ctx, base + "_bias", c.bias)]
    if c.residual is not None:
        inputs.append(c.residual)
    for node in [c.reduction, *c.chain]:
        node.outputs.clear()
    out.dtype = np.float32
    outputs = [out]
    stats = None
    # Only the outermost graph can expose the counters as graph outputs.
    if ctx.options.emit_stats and ctx.graph is ctx.model_graph:
        stats = gs.Variable(unique_name(base + "_exprune_stats", ctx.names), dtype=np.int64, shape=[2])
        outputs.append(stats)
    node = gs.Node(op_type, name=unique_name(base + "_exprune", ctx.names), domain=ops.DOMAIN,
                   attrs=op_attrs, inputs=inputs, outputs=outputs)
    ctx.graph.nodes.append(node)
    return Rewritten(c, k, float(setting.threshold), node, stats)


def _conv_op_attrs(c: Candidate) -> dict:
    spatial = c.weight.ndim - 2
    a = c.conv_attrs
    auto_pad = a.get("auto_pad", "NOTSET")
    attrs = {
        "strides": list(a.get("strides", [1] * spatial)),
        "dilations": list(a.get("dilations", [1] * spatial)),
        "auto_pad": auto_pad,
    }
    # As on ONNX Conv, explicit pads only mean something without auto_pad.
    if auto_pad == "NOTSET":
        attrs["pads"] = list(a.get("pads", [0] * (2 * spatial)))
    return attrs
