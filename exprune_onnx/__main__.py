"""`python -m exprune_onnx`: the `exprune-onnx` command, through the same entry point (launch.py)."""

from .launch import main

main()
