"""The whole ``optimize`` workflow, for the command line and for Python alike.

:func:`run` runs what ``exprune-onnx optimize`` runs: compile, calibrate (with
calibration data), the objective, the check, and the report. The command line only
parses options into :class:`~exprune_onnx.config.Options` (the compiler's) and
:class:`Settings` (the rest), calls :func:`run`, prints and writes; Python's
``exprune_onnx.optimize`` (api.py) checks its keywords and calls the same. A new option
is one field of either dataclass, passed through here.

(``exprune_onnx.optimize_model`` and ``exprune_onnx.compiler.pipeline.optimize`` are the
compiler alone: one model in, rewritten model out, nothing run.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .config import DEFAULT_CONFIDENCE, Options, check_options, parse_confidence, true_or_false, whole_number
from .errors import ConfigError, DataError, LabelError, OriginalRunFailed, error_message
from .io.data import (
    CALIBRATED_ON,
    HELD_OUT,
    Dataset,
    chosen_labels,
    dataset_of,
    labels_apart,
    load_dataset,
    naming,
    quoted_source,
    random_dataset,
)
from .io.feeds import InputSpec, check_batch, check_spec, fixed_batch, may_broadcast, model_inputs
from .io.open_dims import assumed_note, assumed_shapes, assumed_text
from .io.open_values import assumed_values, taken_text, values_note
from .ops import pruning_layers
from .progress import quiet
from .runtime import MAX_THREADS, uses_library
from .tuning.metrics import thin_holdout


class UsageProblem(ConfigError):
    """Options that do not go together; the command line reports it as a usage error."""


@dataclass
class Settings:
    """Everything ``optimize`` does beyond compiling (the compiler's own knobs are Options)."""

    check: bool = True
    check_data: str | Path | Dataset | dict | None = None  # dict: arrays keyed by input name (+ 'labels')
    check_samples: int = 32
    seed: int = 0
    calibration: str | Path | Dataset | dict | None = None
    labels: str | Path | np.ndarray | None = None  # an array: one label per sample
    max_drop: float = 0.001
    metric: str = "auto"
    score_output: str = ""  # the output the metric scores; "": the model's first
    holdout: float = 0.5
    # threshold, statstest, certified, or auto (per layer, needs calibration); None: Options.rule
    rule: str | None = None
    granularity: str = "output"  # the calibrated threshold rule: per output channel or per layer
    objective: str = "latency"  # or flops
    latency_batch: int | None = None  # None: the model's fixed batch, else 1
    latency_threads: int = 1
    input_values: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Optimized:
    """What :func:`optimize` returns."""

    model: onnx.ModelProto  # the optimised model (a copy of the input one when nothing paid)
    rows: list[dict]  # one per rewritten layer (report.layer_rows)
    report: dict  # what --report writes, plus the check and the objective
    timings: dict[str, float]  # seconds per step: compile, calibrate, objective, check
    result: object = None  # pipeline.Result
    checked: object = None  # check.CheckResult, when the check ran
    calibrated: object = None  # search.Outcome, with calibration
    timed: object = None  # objective.LatencyChoice, under the latency objective
    warnings: list[str] = field(default_factory=list)  # what `optimize` prints under its tables, as plain text
    assumed: dict = field(default_factory=dict)  # sizes taken for open input dims, with no data (io/open_dims.py)
    objective: str = "latency"  # what chose the rewrites kept
    notes: list[str] = field(default_factory=list)  # what the run did not do as asked, for the warnings

    @property
    def changed(self) -> bool:
        return self.result.changed if self.result is not None else self.__dict__.get("_changed", False)

    def __getstate__(self) -> dict:
        # The compiler's objects hold graphsurgeon graphs and protobuf repeated fields, which
        # do not pickle (a spawn pool's parent then waits forever for a worker's result): a
        # copy sent to another process keeps the model, the report and the rest, not them.
        state = dict(self.__dict__, result=None, checked=None, calibrated=None, timed=None)
        state["_changed"] = self.changed
        return state


# Settings only calibration reads: set without calibration data, they would be ignored (the
# command line's options of the same names too, with confidence, an Options field).
CALIBRATION_ONLY = ("labels", "max_drop", "metric", "holdout", "granularity")


def validate(options: Options, settings: Settings) -> None:
    """Combinations the workflow refuses (the command line shows them as usage errors)."""
    check_options(options)  # before the inputs' spec is built from them
    if settings.calibration is None and settings.rule == "auto":
        raise UsageProblem("--rule auto chooses per layer on data: give --calibration")
    if options.sparse_relu == "on" and not options.sparse_input:
        raise UsageProblem("--sparse-relu on reads plain ReLUs sparsely, which --no-sparse-input turns off")
    if settings.objective not in ("latency", "flops"):
        raise UsageProblem(f"objective must be latency or flops, got {settings.objective!r}")
    _check_settings(settings)
    default = Settings()
    timing = [n for n in ("latency_batch", "latency_threads") if getattr(settings, n) != getattr(default, n)]
    if settings.objective == "flops" and timing:  # the command line refuses them typed
        raise UsageProblem(f"{timing[0]} does nothing with objective flops: it times nothing (it sets how the "
                           "latency objective times)")
    if options.confidence is None:  # the command line's default, whether options were given or not
        options.confidence = DEFAULT_CONFIDENCE
    try:
        options.confidence = parse_confidence(options.confidence)
    except ConfigError as exc:
        raise UsageProblem(f"--{exc}") from None
    if settings.calibration is not None and options.confidence > 0 and settings.holdout <= 0:
        raise UsageProblem("--confidence tests the ladder on a part the search never sees: --holdout must be > 0 "
                           "(or --confidence 0)")
    if settings.calibration is not None and options.confidence > 0 and settings.max_drop == 0:
        raise UsageProblem("--max-drop 0 cannot be certified from samples: give a budget > 0, or --confidence 0 "
                           "for no loss on the calibration data")
    if settings.calibration is None:
        given = [name for name in CALIBRATION_ONLY if (settings.labels is not None if name == "labels"
                                                      else getattr(settings, name) != getattr(default, name))]
        given += ["confidence"] if options.confidence not in (None, DEFAULT_CONFIDENCE) else []
        if given:
            raise UsageProblem(f"no --calibration data is given, and only calibration reads {', '.join(given)}")


def _check_settings(settings: Settings) -> None:
    """Values the command line's types check, checked here for the Python API."""
    from .tuning.metrics import METRICS

    sources = {"calibration": ((Dataset, dict), "a dict of arrays"), "check_data": ((Dataset, dict), "a dict of arrays"),
               "labels": ((np.ndarray, list), "an array of labels")}
    for name, (kinds, what) in sources.items():
        value = getattr(settings, name)
        if value is not None and not isinstance(value, (str, os.PathLike, *kinds)):
            raise ConfigError(f"{name} must be a path or {what}, got {type(value).__name__}")

    choices = {"metric": METRICS, "granularity": ("output", "layer"),
               "rule": ("threshold", "statstest", "certified", "auto", None)}
    for name, allowed in choices.items():
        if getattr(settings, name) not in allowed:
            shown = ", ".join(str(a) for a in allowed if a is not None)
            raise ConfigError(f"{name} must be one of {shown}, got {getattr(settings, name)!r}")
    for name, low, high in (("max_drop", 0.0, 1.0), ("holdout", 0.0, 1.0)):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
            from .report.advice import budget_fraction_hint

            hint = budget_fraction_hint(value) if name == "max_drop" and isinstance(value, numbers.Real) else ""
            raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}{hint}")
    if settings.holdout == 1:
        raise ConfigError("holdout must be under 1: the search needs a calibration part")
    for name, low in (("check_samples", 1), ("latency_threads", 1), ("latency_batch", 1), ("seed", 0)):
        value = getattr(settings, name)
        if name == "latency_batch" and value is None:  # the model's fixed batch, else 1
            continue
        whole_number(name, value, low)
    if settings.latency_threads > MAX_THREADS:
        raise ConfigError(f"latency_threads must be at most {MAX_THREADS}, got {settings.latency_threads!r}")
    true_or_false("check", settings.check)


def value_bounds(values) -> dict[str, tuple[float, float]]:
    """``input_values`` as name -> (low, high): the API also takes a number for a constant."""
    def number(v) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(values, dict):
        raise ConfigError(f"input_values must be a dict of input name -> value or (low, high), got {values!r}")
    bounds = {}
    for name, v in values.items():
        pair = (v, v) if number(v) else tuple(v) if isinstance(v, (tuple, list)) else None
        if not isinstance(name, str) or pair is None or len(pair) != 2 or not all(map(number, pair)) \
                or pair[0] > pair[1]:
            raise ConfigError(f"input_values[{name!r}] must be a number or (low, high) with low <= high, got {v!r}")
        bounds[name] = (float(pair[0]), float(pair[1]))
    return bounds


def _dataset(source, model, spec: InputSpec, seed: int, labels=None, samples: int = 32) -> Dataset:
    if isinstance(source, Dataset):
        return source
    if isinstance(source, dict):  # arrays keyed by input name, and optionally 'labels'
        arrays = dict(source)
        found = labels_apart(arrays, [vi.name for vi in model_inputs(model)])
        return dataset_of(arrays, model, chosen_labels(labels, found, "labels", "the arrays"), spec, seed)
    if source is None:
        return random_dataset(model, samples, seed, spec)
    return load_dataset(source, model, labels, spec, seed)


def run(model: onnx.ModelProto, options: Options, settings: Settings, log=quiet) -> Optimized:
    """The workflow on a loaded model (module docstring)."""
    assumed: dict = {}
    values: dict = {}
    try:
        return _run(model, options, settings, log, assumed, values)
    except OriginalRunFailed as exc:
        if not assumed and not values:
            raise
        # A model may not run at the sizes taken for it (a mask one longer than the sequence).
        taken = taken_text(assumed_text(model, assumed) if assumed else "", values, "--check-data")
        raise OriginalRunFailed(f"{error_message(exc)} (with no data, {taken})") from exc


def _run(model: onnx.ModelProto, options: Options, settings: Settings, log, assumed: dict, values: dict) -> Optimized:
    """run(), filling ``assumed`` with the sizes it takes for open input dims and ``values``
    with those it takes for length inputs (io/open_values.py)."""
    from .compiler.pipeline import optimize as compile_model
    from .io.batch_memory import feedable
    from .measure.shape_probe import count_at_run_time
    from .report.advice import config_notes, plain_warnings, uncalibrated_note
    from .report.run_report import assumed_json, run_report, run_rows
    from .report.tables import fused_warning
    from .tuning.prescreen import without_idle

    validate(options, settings)
    rule = settings.rule or options.rule
    if rule != "auto":
        options.rule = rule
    spec = InputSpec(dict(options.input_shapes), value_bounds(settings.input_values))
    check_spec(model, spec)
    notes: list[str] = []
    if settings.calibration is None and settings.check_data is None:  # no data to take sizes from
        assumed.update(assumed_shapes(model, spec))
        if assumed:
            notes.append(assumed_note(model, assumed, bool(spec.shapes), "data") + "; the FLOPs, the check and any "
                         "timing are for that size, and the written model keeps its open dims: --input-shape or "
                         "--check-data sets the size you run at")
        spec.shapes.update(assumed)
        options.input_shapes = {**options.input_shapes, **assumed}
        values.update(assumed_values(model, spec))
        if values:
            notes.append(values_note(values))
        spec.values.update(values)
    latency = None
    if settings.objective == "latency":
        data_given = settings.calibration is not None or settings.check_data is not None
        # (where data may free the batch an input fixed at 1 fixes, the timing checks it on the data's layout)
        batch = settings.latency_batch if settings.latency_batch is not None and data_given \
            and may_broadcast(model, spec) else check_batch(model, settings.latency_batch, "--latency-batch", spec)
        latency = (batch, settings.latency_threads)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    calibrated = timed = checked = None
    configured = dict(options.layers)  # the user's, before the calibration's settings
    default_threshold = options.threshold is not None  # a config's default's (--threshold is refused beside it)
    checks: list[Dataset] = []  # the check data (or seeded random inputs), loaded once when needed

    def check_data() -> Dataset:
        if not checks:
            checks.append(feedable(model, _dataset(settings.check_data, model, spec, settings.seed,
                                                samples=settings.check_samples)))
        return checks[0]

    data = None
    if settings.calibration is not None:
        data = feedable(model, _dataset(settings.calibration, model, spec, settings.seed, settings.labels))
        options.input_shapes = data.input_shapes(model, options.input_shapes)
        count_at_run_time(model, options, data)
        with naming(data, "--calibration", only=LabelError):  # labels that fit no output: which file held them
            if options.confidence:
                _enough_to_certify(model, options, data, settings)
            calibrated = _calibrated(model, options, data, settings, rule, latency, log)
    if calibrated is not None:
        result, timed = calibrated.result, calibrated.latency
        timings["calibrate"] = time.perf_counter() - start
        if pruning_layers(result.model):  # verify then checks this budget; an exact model, its agreement bar
            from .verify.agreement import stamp_budget

            stamp_budget(result.model, calibrated)
        thin = "" if getattr(calibrated, "certificate", None) else \
            thin_holdout(calibrated.metric, settings.max_drop, calibrated.split[1], settings.holdout,
                         sum(calibrated.split))
        calibrated.notes += [thin] if thin else []
        if uses_library(model):  # the budgets of two runs add up
            calibrated.notes.append("the input holds ExPrune ops (it was optimised before): the budget is measured "
                                    "against it, not against the model it was made from; calibrate that model to "
                                    "bound the whole change")
    else:
        if settings.check_data is not None:  # its shapes are the ones FLOPs are counted at
            options.input_shapes = check_data().input_shapes(model, options.input_shapes)
            count_at_run_time(model, options, check_data())
            if settings.check and check_data().labels is not None:
                _data_fits(model, check_data(), settings.score_output)
        elif settings.check:
            # One seeded random input where the model's dims allow it without data; where
            # not, the check says so if it runs (an unchanged model needs none).
            with contextlib.suppress(DataError):
                count_at_run_time(model, options, feedable(model, _dataset(None, model, spec, settings.seed, samples=1)))
        result = compile_model(model, options)
        if data is not None:  # calibration data, and nothing the search could calibrate
            notes.append(uncalibrated_note(result))
        if settings.objective == "flops" and options.threshold is None:  # nothing asked for the early exits
            result = without_idle(model, options, result)
        timings["compile"] = time.perf_counter() - start
        from .tuning.objective import choose, times_zero_inputs

        if latency is not None and (result.changed or times_zero_inputs(options)):
            start = time.perf_counter()
            inputs = check_data() if settings.check_data is not None or data is None else data
            source = (quoted_source(inputs.source) if inputs is data or settings.check_data is not None
                      else "seeded random inputs: prune rates on real data differ, give --check-data")
            timed = choose(model, options, result, inputs, batch=latency[0], threads=latency[1], source=source,
                           seed=settings.seed, log=log)
            result = timed.result
            timings["objective"] = time.perf_counter() - start
    if timed is not None and result.changed and not timed.reverted_all and settings.latency_batch is None \
            and fixed_batch(model, spec) is None:  # chosen at batch 1; served at others too
        from .tuning.other_batch import time_other_batch

        start = time.perf_counter()
        time_other_batch(model, result.model, timed,
                         check_data() if settings.check_data is not None or data is None else data, settings.seed)
        timings["objective"] = timings.get("objective", 0.0) + time.perf_counter() - start
    if settings.check:
        start = time.perf_counter()
        checked = _check(model, result, settings, calibrated, check_data, data, log)
        if checked is not None:
            timings["check"] = time.perf_counter() - start
    notes += config_notes(configured, result, calibrated is not None, default_threshold)
    notes += [text for text in [fused_warning(model)] if text]
    done = Optimized(result.model, run_rows(result, checked, calibrated),
                     run_report(result, checked, calibrated, timed, timings, model), timings, result, checked, calibrated, timed,
                     assumed=assumed, objective=settings.objective, notes=notes)
    done.warnings = plain_warnings(done, options.argmax_only, settings.max_drop)
    done.report["warnings"] = list(done.warnings)
    done.report["assumed_input_shapes"] = assumed_json(assumed)
    done.report["objective"] = settings.objective  # (calibration's part had it alone: json.md lists it always)
    return done


def _check(model: onnx.ModelProto, result, settings: Settings, calibrated, check_data, data, log):
    """The check: the original and the result side by side on the check data (``check_data()``
    gives it: the data given, else seeded random inputs), else on the calibration data's part
    the search did not choose on; None where nothing was rewritten. Check data given is run
    through the original even then, so that data it cannot run on is refused whatever was
    rewritten."""
    from .measure.compare import compare

    given = settings.check_data is not None
    if not result.changed:
        if given and not (calibrated is None and check_data().labels is not None):
            _data_fits(model, check_data(), settings.score_output)  # (else it ran before the timing)
        return None
    on = check_data() if given or data is None else _checked_part(data, settings, calibrated)
    # Beside a relerr budget the scored output holds values (an embedding): labels are
    # another output's, and were scored against the embedding's arg-max.
    values = (calibrated.metric if calibrated is not None else settings.metric) == "relerr"
    scored = calibrated.output if calibrated is not None else settings.score_output
    return compare(model, result.model, on, labelled="" if values else settings.score_output,
                   unlabelled=scored if values else "", log=log)


def _data_fits(model: onnx.ModelProto, data: Dataset, labelled: str) -> None:
    """Check data the original cannot run on, and labels the check cannot score (wrong
    shape, not classes of the output), are refused on the first samples, the original
    against itself: before the timing, which took minutes before the check said so, and
    where nothing is rewritten and no check runs."""
    from .measure.compare import compare

    with naming(data, "--check-data"):
        compare(model, model, data, indices=np.arange(min(len(data), 16)), labelled=labelled)


def _enough_to_certify(model: onnx.ModelProto, options: Options, data: Dataset, settings: Settings) -> None:
    """Data too small to certify the budget is refused before the search (certify.py),
    where there is a layer to calibrate, and after what the search itself names first (a
    model onnxruntime cannot run, an output no metric scores)."""
    from .compiler.pipeline import optimize as compile_model
    from .tuning.certify import check_enough
    from .tuning.search import preflight

    try:
        check_enough(data, settings.max_drop, settings.holdout, settings.seed, options.confidence)
    except DataError:
        preflight(model, data, settings.metric, settings.score_output)  # what the search would name first
        if compile_model(model, options).rewritten:  # else the search finds nothing to calibrate, and says so
            raise


def _calibrated(model: onnx.ModelProto, options: Options, data: Dataset, settings: Settings, rule: str, latency,
                log):
    """The search's outcome, or None when the model has no layer to calibrate: the workflow
    then goes on as without calibration data (the zero-input rewrites are exact), timing
    and checking on it."""
    from .tuning.search import NothingToCalibrate, search

    try:
        return search(model, options, data, metric=settings.metric, output=settings.score_output,
                      max_drop=settings.max_drop, holdout=settings.holdout, seed=settings.seed, rule=rule,
                      per_output=settings.granularity == "output", latency=latency, log=log)
    except NothingToCalibrate:
        log("no layer has an early exit to calibrate (`exprune-onnx inspect` says why): the calibration data is "
            "used for timing and the check only")
        return None


def _checked_part(data: Dataset, settings: Settings, calibrated) -> Dataset:
    """What the check runs on with calibration data and no check data: the held-out part
    (the certificate's testing part, whose figures the calibration table gives for the
    same samples), or all of the data with --holdout 0 or when nothing was calibrated;
    with the labels only if the metric reads them (soft labels beside --metric agreement
    fit no output)."""
    from .tuning.certify import subset
    from .tuning.search import split_indices

    metric = calibrated.metric if calibrated is not None else settings.metric
    labels = data.labels if metric in ("accuracy", "lost", "auto") else None
    if calibrated is None:
        return dataclasses.replace(data, labels=labels)
    calib, held = split_indices(len(data), settings.holdout, settings.seed)
    if calibrated.tested is not None:  # the certificate's testing part (labelled samples only)
        held = calibrated.tested
    part, name = (held, HELD_OUT) if len(held) else (calib, CALIBRATED_ON)
    checked = subset(dataclasses.replace(data, labels=labels), part)
    return dataclasses.replace(checked, source=f"{data.source}, {name}")
