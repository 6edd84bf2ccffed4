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
from .config import Options, configured, parse_k, unknown_option
from .errors import ConfigError, in_keywords
from .io.modelio import checked_in_memory, load_model
from .rules import RULES, RuleSet


def _prepare(model, options: Options | None, config, overrides: dict) -> tuple[onnx.ModelProto, Options]:
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    else:
        model = checked_in_memory(model)
    options = dataclasses.replace(options) if options else Options()  # the caller's stays as given
    for key, value in overrides.items():
        if not hasattr(options, key):
            raise unknown_option(key, options)
        setattr(options, key, parse_k(value) if key == "k" else value)
    try:
        return model, configured(options, config, [key for key in ("k", "unit_order") if key in overrides])
    except ConfigError as exc:  # worded for --config: the keywords here
        worded = in_keywords(exc, {f.name for f in dataclasses.fields(Options)}, {})
        if worded is exc:
            raise
        raise worded from exc


def optimize_model(model: onnx.ModelProto | str | os.PathLike, options: Options | None = None, *,
                   rules: RuleSet = RULES, config: str | os.PathLike | dict | None = None, **overrides) -> Result:
    """Compile ``model``; ``Result.model`` is the optimised ModelProto (the input when nothing applied).

    Keyword overrides set fields of :class:`Options`, e.g. ``threshold=float("-inf")``, ``k=16``;
    ``config`` is a per-layer config, as ``--config`` reads: its path, or its content as a
    dict; ``rules`` is the rule set to try (``RULES.with_rule(...)`` adds one,
    docs/architecture.md).
    """
    from .tuning.prescreen import without_idle

    model, options = _prepare(model, options, config, overrides)
    result = _optimize(model, options, rules)
    # Nothing asked to prune: an early exit at -inf skips nothing and costs its partial
    # product, as the command leaves it out (a typed threshold=-inf keeps them).
    return without_idle(model, options, result, rules) if options.threshold is None else result


def inspect_model(model: onnx.ModelProto | str | os.PathLike, options: Options | None = None, *,
                  rules: RuleSet = RULES, config: str | os.PathLike | dict | None = None, **overrides) -> Result:
    """What :func:`optimize_model` would rewrite and why it leaves the rest; FLOPs counted
    as the ``inspect`` command counts them: on one random input, open dims that
    ``input_shapes`` leaves open taken as ``optimize`` takes them without data
    (``Result.input_shapes`` holds the sizes used)."""
    from .measure.shape_probe import count_as_inspect

    model, options = _prepare(model, options, config, overrides)
    if options.runtime_flops is None:
        count_as_inspect(model, options)
    return _inspect(model, options, rules)
