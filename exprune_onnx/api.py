"""The compiler's Python entry points: the compiler alone, nothing timed, and nothing run
but the one random input ``inspect_model`` counts FLOPs on, as the ``inspect`` command does.

The whole ``exprune-onnx optimize`` workflow is ``exprune_onnx.optimize`` (workflow.py).
"""

from __future__ import annotations

import dataclasses
import os

import onnx

from .compiler.pipeline import Result
from .compiler.pipeline import inspect as _inspect
from .compiler.pipeline import optimize as _optimize
from .config import Options, parse_k, unknown_option
from .io.modelio import checked_in_memory, load_model
from .rules import RULES, RuleSet


def _prepare(model, options: Options | None, overrides: dict) -> tuple[onnx.ModelProto, Options]:
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    else:
        model = checked_in_memory(model)
    options = dataclasses.replace(options) if options else Options()  # the caller's stays as given
    for key, value in overrides.items():
        if not hasattr(options, key):
            raise unknown_option(key, options)
        setattr(options, key, parse_k(value) if key == "k" else value)
    return model, options


def optimize_model(model: onnx.ModelProto | str | os.PathLike, options: Options | None = None, *,
                   rules: RuleSet = RULES, **overrides) -> Result:
    """Compile ``model``; ``Result.model`` is the optimised ModelProto (the input when nothing applied).

    Keyword overrides set fields of :class:`Options`, e.g. ``threshold=float("-inf")``, ``k=16``;
    ``rules`` is the rule set to try (``RULES.with_rule(...)`` adds one, docs/architecture.md).
    """
    model, options = _prepare(model, options, overrides)
    return _optimize(model, options, rules)


def inspect_model(model: onnx.ModelProto | str | os.PathLike, options: Options | None = None, *,
                  rules: RuleSet = RULES, **overrides) -> Result:
    """What :func:`optimize_model` would rewrite and why it leaves the rest; FLOPs counted
    as the ``inspect`` command counts them: on one random input, open dims that
    ``input_shapes`` leaves open taken as ``optimize`` takes them without data
    (``Result.input_shapes`` holds the sizes used)."""
    from .measure.shape_probe import count_as_inspect

    model, options = _prepare(model, options, overrides)
    if options.runtime_flops is None:
        count_as_inspect(model, options)
    return _inspect(model, options, rules)
