"""The rewrite rules, built into one ``RuleSet``: the pipeline tries them in this order.

To add a rule, write a module with ``match``/``check``/``rewrite`` and a ``RULE``, and
put it here (docs/architecture.md walks through one).
"""

from . import argmax_head, conv_relu, gemm_relu, matmul_relu, quantized, runtime_fused
from .base import Rule, RuleSet

# quantized and runtime_fused lead: they never rewrite, they only report integer, QDQ and
# onnxruntime-fused layers so no other rule takes them. argmax_head comes before the ReLU rules: it claims only Gemm/MatMul
# nodes that end in an arg-max (or a declared --argmax-only output) and lets every other
# node through.
RULES = RuleSet([quantized.RULE, runtime_fused.RULE, conv_relu.RULE, argmax_head.RULE, gemm_relu.RULE, matmul_relu.RULE])

__all__ = ["RULES", "Rule", "RuleSet"]
