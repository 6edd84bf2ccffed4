"""The registry of rewrite rules. The pipeline tries them in this order."""

from . import argmax_head, conv_relu, gemm_relu, matmul_relu, quantized

# argmax_head first: it claims only Gemm/MatMul nodes that end in an arg-max (or a
# declared --argmax-only output) and lets every other node through to the ReLU rules.
# quantized leads: it never rewrites, it only reports integer and QDQ layers so no other rule takes them.
RULES = (quantized, conv_relu, argmax_head, gemm_relu, matmul_relu)

__all__ = ["RULES"]
