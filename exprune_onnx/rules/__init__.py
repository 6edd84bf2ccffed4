"""The registry of rewrite rules. The pipeline tries them in this order."""

from . import conv_relu, gemm_relu, matmul_relu

RULES = (conv_relu, gemm_relu, matmul_relu)

__all__ = ["RULES"]
