"""Quantized layers: never rewritten, but reported, so ``--explain`` and ``inspect`` say why.

Two forms reach us: integer ops (``QLinearConv``, ``QLinearMatMul``, ``ConvInteger``,
``MatMulInteger``, onnxruntime's ``QGemm``, from its quantizer and int8 converters), which no ReLU
rule would even look at, and the QDQ form, a float Conv/Gemm/MatMul whose weight is
the output of ``DequantizeLinear``, which onnxruntime fuses back into an integer op.
Rewriting the latter in float would throw the quantization away, so it is left alone
with a reason that names the cause rather than "the weight is not a constant".
"""

from __future__ import annotations

from . import chain, common
from .base import Context, NoMatch, reporting_rule

NAME = "quantized"
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
# onnxruntime's own (com.microsoft) integer products, as its QOperator quantizer writes a
# Gemm: they went unlisted, so --explain gave no reason for the layer.
RUNTIME_INTEGER_OPS = ("QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits")
FLOAT_OPS = ("Conv", "Gemm", "MatMul")
# Between DequantizeLinear and the weight input an exporter may put layout ops.
_PASS_THROUGH = {"Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


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
    return None


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


RULE = reporting_rule(NAME, match, "quantized layers are not rewritten")
