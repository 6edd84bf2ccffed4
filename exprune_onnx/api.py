"""The compiler's Python entry points: the compiler alone, nothing timed, and nothing run
but the one random input ``inspect_model`` counts FLOPs on, as the ``inspect`` command does.

And the whole ``exprune-onnx optimize`` workflow from Python, ``optimize`` (its steps are
workflow.py's ``run``), which words its errors and warnings in its own keywords.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import fields

import onnx

from .compiler import quiet_graphsurgeon
from .compiler.pipeline import Result
from .compiler.pipeline import inspect as _inspect
from .compiler.pipeline import optimize as _optimize
from .config import Options, check_options, configured, parse_k, unknown_option, whole_number
from .errors import ConfigError, DataError, ExPruneError, in_keywords, keyword_text
from .io.feeds import model_inputs
from .io.modelio import checked_in_memory, load_model
from .progress import hook, hook_errors, quiet
from .rules import RULES, RuleSet
from .tuning.metrics import EXACT_TOLERANCE
from .workflow import Optimized, Settings, run, validate


def _load(model) -> onnx.ModelProto:
    """A model given as a path, loaded, or as a ModelProto, checked as a file is."""
    return load_model(model) if isinstance(model, (str, os.PathLike)) else checked_in_memory(model)


def _threshold_or_config(options: Options, config, calibration=None) -> None:
    """As the command line's --threshold with --config or --calibration: a config prunes at
    the thresholds it names and nowhere else, so a threshold beside it was either overridden
    by its default without a word or pruned the layers it leaves out; a calibration chooses
    every threshold, so one beside it was ignored. (Per-layer settings given in the options,
    ``layers=``, beside a threshold are the caller's own mix, and kept.)"""
    if calibration is not None and options.threshold is not None:
        raise ConfigError("calibration chooses the thresholds: give threshold or calibration, not both")
    if config is not None and options.threshold is not None:
        raise ConfigError("give threshold or config, not both: a config prunes at the thresholds it names (its "
                          "default's, or a layer's own), and nowhere else")


def _prepare(model, options: Options | None, config, overrides: dict) -> tuple[onnx.ModelProto, Options]:
    if options is not None and not isinstance(options, Options):
        raise ConfigError(f"options must be of type Options, got {type(options).__name__}")
    model = _load(model)
    options = dataclasses.replace(options) if options else Options()  # the caller's stays as given
    for key, value in overrides.items():
        if not hasattr(options, key):
            raise unknown_option(key, options)
        setattr(options, key, parse_k(value) if key == "k" else value)
    _threshold_or_config(options, config)
    check_options(options)
    names = [vi.name for vi in model_inputs(model)]
    for name in options.input_shapes:
        if name not in names:  # as optimize's input_shapes: not taken for another input's without a word
            raise DataError(f"input_shapes names '{name}', which is not a model input (its inputs: "
                            f"{', '.join(names) or 'none'})")
    try:
        return model, configured(options, config, [key for key in ("k", "unit_order") if key in overrides])
    except ConfigError as exc:  # worded for --config: the keywords here
        worded = in_keywords(exc, {f.name for f in dataclasses.fields(Options)}, {})
        if worded is exc:
            raise
        raise worded from exc


@quiet_graphsurgeon
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
    return _reasons_in_keywords(without_idle(model, options, result, rules) if options.threshold is None else result)


@quiet_graphsurgeon
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
    return _reasons_in_keywords(_inspect(model, options, rules))


# Command-line options whose Python keyword (of optimize) is spelt otherwise.
API_NAMES = {"input-shape": "input_shapes", "input-value": "input_values", "no-check": "check=False",
             "no-sparse-input": "sparse_input=False"}


@quiet_graphsurgeon
@hook_errors
def optimize(model: onnx.ModelProto | str | os.PathLike, *, options: Options | None = None,
             settings: Settings | None = None, input_shapes: dict | None = None,
             config: str | os.PathLike | dict | None = None, log=quiet, **overrides) -> Optimized:
    """Run the whole ``exprune-onnx optimize`` workflow on ``model`` and return the result.

    Keyword ``overrides`` set fields of :class:`Options` (``threshold``, ``k``, ``rule``,
    ...) or of :class:`Settings` (``calibration``, ``labels``, ``max_drop``,
    ``objective``, ``check``, ...). ``input_shapes`` maps input names to dims
    (``{"x": (1, 3, 224, 224)}``), as ``--input-shape`` does; ``config`` is a per-layer
    config, as ``--config`` reads: its path, or its content (a dict, or JSON text); ``log`` is a
    progress hook (progress.py) or a ``logging.Logger``. Nothing is written: save
    ``result.model`` yourself.
    """
    for name, value, kind in (("options", options, Options), ("settings", settings, Settings),
                              ("input_shapes", input_shapes, dict)):
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"{name} must be of type {kind.__name__}, got {type(value).__name__}")
    if not callable(log) and not isinstance(log, logging.Logger):
        raise ConfigError(f"log must be a progress hook (a function) or a logging.Logger, got {type(log).__name__}")
    log = hook(log)
    path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    given = model if isinstance(model, onnx.ModelProto) else None
    model = _load(model)
    options = dataclasses.replace(options) if options else Options()
    settings = dataclasses.replace(settings) if settings else Settings()
    for key, value in overrides.items():
        # rule is the workflow's (auto needs calibration); run() hands it to the compiler.
        target = settings if hasattr(settings, key) else options if hasattr(options, key) else None
        if target is None:
            raise unknown_option(key, settings, options)
        setattr(target, key, parse_k(value) if key == "k" else value)
    if input_shapes is not None:
        options.input_shapes = {name: dims if isinstance(dims, str) else tuple(dims) for name, dims in input_shapes.items()}
    try:
        _threshold_or_config(options, config, settings.calibration)
        options = configured(options, config, [key for key in ("k", "unit_order") if key in overrides])
        validate(options, settings)  # a budget out of range is an error before it is a warning
        _warn_budget(settings)
        done = run(model, options, settings, log)
    except ExPruneError as exc:
        worded = in_keywords(exc, _api_keywords(), API_NAMES)
        if worded is exc:
            raise
        raise worded from exc
    # The warnings are the command line's words too: a Python caller sets max_drop, not --max-drop.
    done.warnings = [keyword_text(text, _api_keywords(), API_NAMES) for text in done.warnings]
    _reasons_in_keywords(done.result)
    for row in done.report["rejected"]:  # (the report's copies of those reasons)
        row["reason"] = keyword_text(row["reason"], _api_keywords(), API_NAMES)
    done.report["warnings"] = list(done.warnings)
    done.report.update(model=path, output=None)  # as --report names them; nothing is written here
    if given is not None and done.model is given:  # unchanged: a copy, so that editing it leaves the caller's alone
        done.model = onnx.ModelProto()
        done.model.CopyFrom(given)
    return done


def _warn_budget(settings: Settings) -> None:
    """The command line's warning for a budget that reads as points, before any work (the
    result's ``warnings`` repeat it)."""
    from .report.advice import budget_warning

    text = budget_warning(settings.max_drop) if settings.calibration is not None else None
    if text:
        warnings.warn(keyword_text(text, _api_keywords(), API_NAMES), UserWarning, stacklevel=3)


def _api_keywords() -> set[str]:
    return {f.name for f in (*fields(Options), *fields(Settings))} | {"config"}


def _reasons_in_keywords(result: Result) -> Result:
    """``result`` with the reasons it gives for the layers left alone in the keywords a
    Python caller sets ("include_first_layer overrides", not "--include-first-layer")."""
    for rejected in (*result.rejected, *result.sparse_rejected):
        rejected.reason = keyword_text(rejected.reason, _api_keywords(), API_NAMES)
    return result


def _spec(model: onnx.ModelProto, input_shapes: dict | None, input_values: dict | None):
    """``input_shapes`` and ``input_values`` as an InputSpec, checked against ``model``."""
    from .io.feeds import InputSpec, check_spec
    from .workflow import value_bounds

    if input_shapes is not None and not isinstance(input_shapes, dict):
        raise ConfigError(f"input_shapes must be a dict of input name -> dims, got {type(input_shapes).__name__}")
    spec = InputSpec({k: tuple(v) if not isinstance(v, str) else v for k, v in (input_shapes or {}).items()},
                     value_bounds(input_values or {}))
    check_spec(model, spec)
    return spec


@quiet_graphsurgeon
@hook_errors
def verify_model(original: onnx.ModelProto | str | os.PathLike, optimized: onnx.ModelProto | str | os.PathLike, *,
                 data=None, labels=None, samples: int = 32, seed: int = 0, min_agreement: float | None = None,
                 tolerance: float = EXACT_TOLERANCE, input_shapes: dict | None = None, input_values: dict | None = None,
                 log=quiet):
    """What ``exprune-onnx verify ORIGINAL OPTIMIZED`` checks (structure, weights, exactness at
    -inf, agreement), from Python. ``data`` as ``optimize``'s ``check_data`` takes it (a
    path, a dict of arrays, a Dataset; None: ``samples`` seeded random inputs);
    ``min_agreement`` None holds a calibrated model to its own budget, else 0.99, as the
    command does without ``--min-agreement``. Returns a ``verify.run.Verification``
    (``rows``, ``passed``, ``failed``): a failed check is ``passed == False``, not an
    exception; bad input raises the library's errors, as the command's exit codes say."""
    from .verify.run import swapped, verify_pair
    from .workflow import _dataset

    ref, opt = _load(original), _load(optimized)
    why = swapped("original", "optimized", ref, opt, "verify_model(original, optimized)")
    if why:
        raise ConfigError(why)
    if labels is not None and data is None:
        raise ConfigError("labels go with data (the random inputs have none)")
    whole_number("samples", samples, 1)
    whole_number("seed", seed, 0)
    _data_source(data, none_ok=True)
    for name, value in (("min_agreement", min_agreement), ("tolerance", tolerance)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= (1 if name == "min_agreement" else float("inf"))):
            raise ConfigError(f"{name} must be a number in range, got {value!r}")
    spec = _spec(ref, input_shapes, input_values)
    dataset = None if data is None else _dataset(data, ref, spec, seed, labels)
    return verify_pair(ref, opt, dataset, spec, samples=samples, seed=seed, tolerance=tolerance, log=hook(log),
                       min_agreement=0.99 if min_agreement is None else min_agreement,
                       bar_asked=min_agreement is not None)


def _data_source(data, none_ok: bool) -> None:
    """ConfigError for data that is none of what the commands read: a path, a dict of arrays
    keyed by input name, a Dataset (or None where random inputs stand in)."""
    from .io.data import Dataset

    if data is None and none_ok or isinstance(data, (str, os.PathLike, dict, Dataset)):
        return
    what = "inputs to evaluate on: " if data is None else ""
    raise ConfigError(f"data must be {what}a path to an .npz, a dict of arrays keyed by input name, or a Dataset, "
                      f"got {type(data).__name__}")


@quiet_graphsurgeon
@hook_errors
def evaluate_model(original: onnx.ModelProto | str | os.PathLike, optimized: onnx.ModelProto | str | os.PathLike,
                   data, *, labels=None, batch: int | None = None, threads: int = 1, runs: int = 30,
                   input_shapes: dict | None = None, input_values: dict | None = None, log=quiet):
    """What ``exprune-onnx evaluate ORIGINAL OPTIMIZED --data D`` measures, from Python:
    outputs and accuracy side by side, the FLOPs the ops skipped, latency in alternating
    runs (``runs`` of each, and more until 1 s of timing) at ``batch`` (default: the batch
    the inputs fix, else 1) and ``threads``, size and peak memory. ``data`` as
    ``optimize``'s ``check_data`` takes it (a path, a dict of arrays, a Dataset). Returns a
    ``measure.evaluation.Evaluation``; bad input raises the library's errors, as the
    command's exit codes say."""
    from .io.feeds import check_batch
    from .measure.evaluation import evaluate_pair, unpaired
    from .runtime import MAX_THREADS
    from .verify.run import swapped
    from .workflow import _dataset

    ref, opt = _load(original), _load(optimized)
    why = swapped("original", "optimized", ref, opt, "evaluate_model(original, optimized, data)") or unpaired(ref, opt)
    if why:
        raise ConfigError(why)
    if batch is not None:  # (the inputs' batch, else 1)
        whole_number("batch", batch, 1)
    whole_number("threads", threads, 1, MAX_THREADS)
    whole_number("runs", runs, 1)
    _data_source(data, none_ok=False)
    spec = _spec(ref, input_shapes, input_values)
    dataset = _dataset(data, ref, spec, 0, labels)
    return evaluate_pair(ref, opt, dataset, check_batch(ref, batch, "batch", spec, dataset.batch), threads=threads,
                         runs=runs, input_shapes=spec.shapes, log=hook(log))
