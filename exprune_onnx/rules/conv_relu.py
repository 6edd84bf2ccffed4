"""ENP for convolutions.

    Conv(x, W[, b]) -> [Add(bias) | Mul(scale) | BatchNormalization]* -> [Add | Sum(residual)] -> Relu | Clip(0, c)
      =>  Conv(Slice(x, channels 0..k), W[:, :k]) -> ExPruneConvRelu(partial, x, W[:, k:], b[, residual])

Produced by PyTorch (Conv2d/Conv1d + BatchNorm + ReLU/ReLU6, and ResNet basic blocks
whose skip Add sits before the last ReLU), Caffe2 (BatchNorm's affine part as Mul and
Add, residual joins as Sum), Paddle2ONNX (weights in Constant nodes, made
initializers by canonicalisation) and tf2onnx (NHWC models
keep Transposes around the Conv; the Conv itself is NCHW). BatchNormalization is
folded into W and b before matching. Only group = 1 and 1-D/2-D kernels: a grouped
conv's units are exchangeable only within a group, and depthwise convs have n = 1.
"""

from __future__ import annotations

import numpy as np

from ..compiler.graphutil import const_value
from . import chain, common
from .base import Candidate, Context, NoMatch, Rule

NAME = "conv_relu"
OP_TYPES = ("Conv",)


def match(node, ctx: Context) -> Candidate | NoMatch | None:
    if node.op == "ConvTranspose" and chain.is_default_domain(node) and chain.reaches_activation(node.outputs[0]):
        # (A decoder's upsampling layer: it got no row, so --explain seemed to skip it.)
        return NoMatch(NAME, common.layer_name(node, ctx), node.op, "a transposed convolution: only Conv, Gemm and "
                                                                    "MatMul layers are rewritten")
    if node.op != "Conv" or not chain.is_default_domain(node):
        return None
    layer = common.layer_name(node, ctx)
    w = const_value(node.inputs[1], ctx.opset)
    if w is None:
        return NoMatch(NAME, layer, node.op, f"the weight '{node.inputs[1].name}' is not a constant")
    if w.ndim < 3:
        return NoMatch(NAME, layer, node.op, f"the weight '{node.inputs[1].name}' has shape {list(w.shape)}, "
                                             "not [outputs, inputs, *kernel]")
    found = chain.follow(node.outputs[0], ctx, int(w.shape[0]), 1, w.ndim)
    if isinstance(found, str):
        return NoMatch(NAME, layer, node.op, found)
    bias = found.bias
    if len(node.inputs) > 2 and node.inputs[2].name:
        b = const_value(node.inputs[2], ctx.opset)
        if b is not None and b.size != found.scale.size:
            return NoMatch(NAME, layer, node.op, f"the bias '{node.inputs[2].name}' has {b.size} values "
                                                 f"for {found.scale.size} outputs")
        bias = None if b is None else bias + found.scale * b.astype(np.float64).reshape(-1)
    if not np.all(found.scale == 1):
        w = (w * found.scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    return Candidate(
        rule=NAME, kind="conv", layer=layer, reduction=node, x=node.inputs[0], weight=w, bias=bias,
        residual=found.residual, chain=found.nodes, output=found.output, clip_max=found.clip_max,
        conv_attrs=dict(node.attrs), problems=found.problems,
    )


def check(c: Candidate, ctx: Context) -> str | None:
    group = int(c.conv_attrs.get("group", 1))
    if group != 1:
        return f"grouped convolution (group = {group}): units are exchangeable only within a group"
    if c.weight.ndim not in (3, 4):
        return f"{c.weight.ndim - 2}-D convolution: only 1-D and 2-D are supported"
    return common.same_pad_problem(c.conv_attrs, c.weight.shape[2:]) or common.check(c, ctx)


def rewrite(c: Candidate, ctx: Context):
    return common.emit(c, ctx)


RULE = Rule(NAME, match, check, rewrite)
