"""The `exprune-onnx` command's entry point. Importing the CLI loads onnx, onnxruntime and
numpy, which takes about a second: a Ctrl-C in that second would otherwise end in
Python's traceback instead of the CLI's one line and exit code 130."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        import onnxruntime  # noqa: F401 - the group's callback imports it; here a Ctrl-C is caught

        from .cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: stopped by Ctrl-C; no file is left half-written\n")
        sys.exit(130)
    cli()
