"""The compiler's Python entry points (the compiler alone: nothing is run or timed).

The whole ``exprune-onnx optimize`` workflow is ``exprune_onnx.optimize`` (workflow.py).
"""

from __future__ import annotations

import os

import onnx

from .config import Options, parse_k
from .modelio import load_model
from .pipeline import Result
from .pipeline import inspect as _inspect
from .pipeline import optimize as _optimize


def _prepare(model, options: Options | None, overrides: dict) -> tuple[onnx.ModelProto, Options]:
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    options = options or Options()
    for key, value in overrides.items():
        if not hasattr(options, key):
            raise TypeError(f"unknown option {key!r}")
        setattr(options, key, parse_k(value) if key == "k" else value)
    return model, options


def optimize_model(model: onnx.ModelProto | str | os.PathLike, options: Options | None = None,
                   **overrides) -> Result:
    """Compile ``model``; ``Result.model`` is the optimised ModelProto (the input when nothing applied).

    Keyword overrides set fields of :class:`Options`, e.g. ``threshold=float("-inf")``, ``k=16``.
    """
    model, options = _prepare(model, options, overrides)
    return _optimize(model, options)


def inspect_model(model: onnx.ModelProto | str | os.PathLike, options: Options | None = None,
                  **overrides) -> Result:
    """What :func:`optimize_model` would rewrite and why it leaves the rest."""
    model, options = _prepare(model, options, overrides)
    return _inspect(model, options)
