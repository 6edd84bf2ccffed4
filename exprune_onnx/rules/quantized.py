"""Quantized layers: never rewritten, but reported, so ``--explain`` and ``inspect`` say why.

Two forms reach us: integer ops (``QLinearConv``, ``QLinearMatMul``, ``ConvInteger``,
``MatMulInteger``, onnxruntime's ``QGemm``, from its quantizer and int8 converters), which no ReLU
rule would even look at, and the QDQ form, a float Conv/Gemm/MatMul whose weight is
the output of ``DequantizeLinear``, which onnxruntime fuses back into an integer op.
Rewriting the latter in float would throw the quantization away, so it is left alone
with a reason that names the cause rather than "the weight is not a constant".

A QDQ model may also leave a Conv or Gemm float (a quantizer's excluded node) between a
per-tensor DequantizeLinear and a QuantizeLinear (through Relu or Clip ops). onnxruntime
quantizes such a layer's float weight and bias itself (its WeightBiasQuantization step,
at every optimisation level above none) and runs the unit as an integer op, so the
original runs with int8 weights; rewritten in float, the layer's outputs moved by a
quantization step at the default level (a trial's partly quantized CNN, 0.00098 on logits
of 0.15), where an exact rewrite should move nothing. It is left alone too. Without the
QuantizeLinear after it onnxruntime keeps the layer float (checked on 1.32), and it is
rewritten. Before that step onnxruntime moves a per-tensor QuantizeLinear up, and a
DequantizeLinear down, across the layout ops of its QDQ propagation (Reshape, Transpose,
Squeeze, Unsqueeze, Slice, and MaxPool from opset 12): a layer whose Relu feeds a MaxPool
and then a QuantizeLinear is quantized as well (a trial's QDQ CNN with excluded convs, 0.095 on its
logits), so the walks on both sides cross those ops too.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from . import chain, common
from .base import Context, NoMatch, reporting_rule

NAME = "quantized"
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
# onnxruntime's own (com.microsoft) integer products, as its QOperator quantizer writes a
# Gemm: they went unlisted, so --explain gave no reason for the layer.
RUNTIME_INTEGER_OPS = ("QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits")
FLOAT_OPS = ("Conv", "Gemm", "MatMul")
RUNTIME_QUANTIZED_OPS = ("Conv", "Gemm")  # (and ConvTranspose, which no rule rewrites)
# Between DequantizeLinear and the weight input an exporter may put layout ops.
_PASS_THROUGH = {"Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
# Gone before onnxruntime's QDQ steps look (its level-1 eliminations).
_REMOVED = {"Identity", "Dropout"}
# What onnxruntime's QDQ propagation moves a per-tensor QuantizeLinear up and DequantizeLinear
# down across: MaxPool only from opset 12 (at 11 onnxruntime 1.32 kept such a layer float).
_PROPAGATES = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice"}
_PROPAGATES_FROM_12 = {"MaxPool"}


def _propagates(node, opset: int) -> bool:
    return node.op in _PROPAGATES or (node.op in _PROPAGATES_FROM_12 and opset >= 12)


def match(node, ctx: Context) -> NoMatch | None:
    if node.domain == "com.microsoft" and node.op in RUNTIME_INTEGER_OPS:
        return NoMatch(NAME, common.layer_name(node, ctx), node.op, "a quantized (integer) layer of onnxruntime's "
                                                                    "own: only float32 layers are rewritten")
    if not chain.is_default_domain(node):
        return None
    layer = common.layer_name(node, ctx)
    if node.op in INTEGER_OPS:
        return NoMatch(NAME, layer, node.op, "a quantized (integer) layer: only float32 layers are rewritten")
    if node.op in FLOAT_OPS and len(node.inputs) > 1 and _dequantized(node.inputs[1]):
        return NoMatch(NAME, layer, node.op, f"the weight '{node.inputs[1].name}' comes from DequantizeLinear "
                                             "(a QDQ-quantized layer): only float32 layers are rewritten")
    if node.op in RUNTIME_QUANTIZED_OPS and _quantized_by_runtime(node, ctx):
        return NoMatch(NAME, layer, node.op, "it sits between a per-tensor DequantizeLinear and a QuantizeLinear, "
                                             "so onnxruntime quantizes its float weight itself and runs it as an "
                                             "integer layer: a float rewrite would change its outputs")
    return None


def _quantized_by_runtime(node, ctx: Context) -> bool:
    """What onnxruntime's WeightBiasQuantization takes: input 0 made by a DequantizeLinear of
    one scale (or moved down to it by the propagation), the weight a float constant, the bias
    (if any) a 1-D constant; and the QuantizeLinear after it that makes the unit an integer op."""
    if not _quantized_after(node.outputs[0], ctx):
        return False
    producer = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
    while producer is not None and (producer.op in _REMOVED or _propagates(producer, ctx.opset)):
        producer = producer.inputs[0].inputs[0] if producer.inputs[0].inputs else None
    if producer is None or producer.op != "DequantizeLinear" or not _one_scale(producer):
        return False
    weight = node.inputs[1]
    if not isinstance(weight, gs.Constant) or weight.values.dtype != np.float32:
        return False
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    return bias is None or (isinstance(bias, gs.Constant) and bias.values.ndim == 1)


def _dequantized(t) -> bool:
    for _ in range(4):
        if not t.inputs:
            return False
        producer = t.inputs[0]
        if producer.op == "DequantizeLinear":
            return True
        if producer.op not in _PASS_THROUGH:
            return False
        t = producer.inputs[0]
    return False


def _one_scale(q) -> bool:
    """A QuantizeLinear or DequantizeLinear of one scale (per tensor)."""
    if len(q.inputs) < 2:
        return False
    scale = q.inputs[1]
    return scale.shape is not None and all(isinstance(d, int) for d in scale.shape) and int(np.prod(scale.shape)) == 1


def _quantized_after(t, ctx: Context) -> bool:
    """``t`` reaches one QuantizeLinear through a chain of single readers: Relu or Clip ops
    (onnxruntime walks any number of them), then ops its QDQ propagation moves a QuantizeLinear
    up across; Identity and Dropout anywhere (removed before it looks). (Its propagation also
    wants a per-tensor QuantizeLinear and no graph output on the way, but with a Transpose
    there onnxruntime quantized the layer all the same: where unsure, the layer is left alone.)"""
    propagated = False  # past the first propagation op, a Relu stops the QuantizeLinear there
    for _ in range(16):
        if len(t.outputs) != 1:
            return False
        reader = t.outputs[0]
        if reader.op == "QuantizeLinear":
            return True
        if _propagates(reader, ctx.opset):
            propagated = True
        elif reader.op not in _REMOVED and (propagated or reader.op not in ("Relu", "Clip")):
            return False
        if not reader.outputs:
            return False
        t = reader.outputs[0]
    return False


RULE = reporting_rule(NAME, match, "quantized layers are not rewritten")
