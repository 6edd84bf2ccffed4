"""ENP for MatMul layers, 2-D or batched over leading axes.

    MatMul(x, W) -> [Add(bias) | Mul(scale) | BN]* -> [Add | Sum(residual)] -> Relu | Clip(0, c)
      =>  MatMul(Slice(x, last axis 0..k), W[:k]) -> ExPruneDenseRelu(partial, x, W[k:]^T, b[, residual])

in the stored unit order; in weight order Gather(x, head units) takes the Slice's place
and the op's attribute tail_units names the other units (rules/common.py).

Produced by the PyTorch exporter for nn.Linear on 3-D inputs ([B, T, C] x [C, O], a
transformer's feed-forward layer), by skl2onnx for MLPClassifier (MatMul -> Add ->
Relu) and by tf2onnx for Dense layers. The weight must be the constant right operand.
"""

from __future__ import annotations

import numpy as np

from ..compiler.graphutil import const_value
from . import chain, common
from .base import Candidate, Context, NoMatch, Rule

NAME = "matmul_relu"
OP_TYPES = ("MatMul",)


def match(node, ctx: Context) -> Candidate | NoMatch | None:
    if node.op != "MatMul" or not chain.is_default_domain(node):
        return None
    layer = common.layer_name(node, ctx)
    w = const_value(node.inputs[1], ctx.opset)
    problem = common.matrix_problem(node.inputs[1], w, "right operand")
    if problem:
        return NoMatch(NAME, layer, node.op, problem)
    x = node.inputs[0]
    rank = len(x.shape) if x.shape is not None else None
    if rank is None:
        return NoMatch(NAME, layer, node.op, f"the rank of the input '{x.name}' is unknown")
    if rank < 2:
        return NoMatch(NAME, layer, node.op, "the input is a vector; MatMul then drops the unit axis")
    found = chain.follow(node.outputs[0], ctx, int(w.shape[1]), -1, rank)
    if isinstance(found, str):
        return NoMatch(NAME, layer, node.op, found)
    if not np.all(found.scale == 1):
        w = (w * found.scale[None, :]).astype(w.dtype)
    return Candidate(
        rule=NAME, kind="dense", layer=layer, reduction=node, x=x, weight=w, bias=found.bias,
        residual=found.residual, chain=found.nodes, output=found.output, clip_max=found.clip_max,
        problems=found.problems,
    )


def check(c: Candidate, ctx: Context) -> str | None:
    return common.check(c, ctx)


def rewrite(c: Candidate, ctx: Context):
    return common.emit(c, ctx)


RULE = Rule(NAME, match, check, rewrite)
