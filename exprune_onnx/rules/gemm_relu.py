"""ENP for Gemm (fully connected) layers.

    Gemm(x, B, C; alpha, beta, transB) -> [Add(bias) | Mul(scale) | BN]* -> [Add | Sum(residual)] -> Relu | Clip(0, c)
      =>  MatMul(Slice(x, features 0..k), W[:k]) -> ExPruneDenseRelu(partial, x, W[k:]^T, b[, residual])

in the stored unit order; in weight order Gather(x, head units) takes the Slice's place
and the op's attribute tail_units names the other units (rules/common.py).

Here W = alpha * (B^T if transB else B) and b = beta * C; with transA = 1 a Transpose
of x comes first. PyTorch's nn.Linear exports as Gemm with transB = 1 on 2-D inputs;
Caffe2 and Keras converters emit Gemm with transB = 0.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..compiler.graphutil import const_value, unique_name
from . import chain, common
from .base import Candidate, Context, NoMatch, Rule

NAME = "gemm_relu"
OP_TYPES = ("Gemm",)


def match(node, ctx: Context) -> Candidate | NoMatch | None:
    if node.op != "Gemm" or not chain.is_default_domain(node):
        return None
    layer = common.layer_name(node, ctx)
    b = const_value(node.inputs[1], ctx.opset)
    problem = common.matrix_problem(node.inputs[1], b)
    if problem:
        return NoMatch(NAME, layer, node.op, problem)
    w = b.T if node.attrs.get("transB", 0) else b
    w = (w * np.float32(node.attrs.get("alpha", 1.0))).astype(b.dtype)
    out_channels = int(w.shape[1])
    found = chain.follow(node.outputs[0], ctx, out_channels, -1, 2)
    if isinstance(found, str):
        return NoMatch(NAME, layer, node.op, found)
    problems = list(found.problems)
    bias = found.bias
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = const_value(node.inputs[2], ctx.opset)
        if c is None:
            bias = None
        elif c.size in (1, out_channels) and c.ndim <= 2 and (c.ndim < 2 or c.shape[0] == 1):
            c = np.broadcast_to(c.reshape(-1).astype(np.float64), (out_channels,))
            bias = bias + found.scale * float(node.attrs.get("beta", 1.0)) * c
        else:
            problems.append(f"C has shape {list(c.shape)}, not a per-output bias")
    if not np.all(found.scale == 1):
        w = (w * found.scale[None, :]).astype(w.dtype)
    return Candidate(
        rule=NAME, kind="dense", layer=layer, reduction=node, x=node.inputs[0], weight=w, bias=bias,
        residual=found.residual, chain=found.nodes, output=found.output, clip_max=found.clip_max,
        problems=problems,
    )


def check(c: Candidate, ctx: Context) -> str | None:
    return common.check(c, ctx)


def rewrite(c: Candidate, ctx: Context):
    if c.reduction.attrs.get("transA", 0):
        # The partial product and the early-exit op both want x as [rows, n].
        shape = None if c.x.shape is None else list(reversed(c.x.shape))
        x_t = gs.Variable(unique_name(c.x.name + "_t", ctx.names), dtype=c.x.dtype, shape=shape)
        ctx.graph.nodes.append(gs.Node("Transpose", name=unique_name(c.layer + "_transA", ctx.names),
                                       attrs={"perm": [1, 0]}, inputs=[c.x], outputs=[x_t]))
        c.x = x_t
    return common.emit(c, ctx)


RULE = Rule(NAME, match, check, rewrite)
