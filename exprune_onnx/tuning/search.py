"""Choosing per-layer decisions under an end-to-end budget, on real runs of the real model.

1. Split the data (seeded): a calibration part and a held-out part.
2. One pass over the calibration part per choice of k (the paper's k, and half the
   units, unless the user fixed k) gives every layer's statistics for the Threshold
   and StatsTest rules (calibrate.collect). Statistics and trials run on at most SCREEN
   calibration samples (a seeded draw); step 5 confirms the finalist on all of them.
3. A layer's aggressiveness is the share of its output mass it may lose; the same
   share for every layer gives one knob. For each share a layer takes the rule and k
   that execute the fewest FLOPs at that loss (StatsTest pays for its second partial
   product; a larger k predicts better but costs more up front).
   Walk a geometric ladder of shares, compile the model, run it (custom op and all)
   on the calibration part, and keep the most FLOPs saved within the budget.
4. Under the latency objective, first time each early exit, alone, at the most this step
   could give it, against the lossless model; one not faster even there is left alone
   from then on, but for the Certified rule's try (reach.py). Then refine layer
   by layer, biggest layers first: raise one layer's share a rung while the budget still
   holds. When not even the gentlest common share fits, admit layers one at a time
   instead. With the Certified rule allowed, try it per layer last: it
   loses nothing, so it stays wherever it saves more. Arg-max heads come last: their
   share is of answers changed, so they climb their own ladder on what is left.
5. Run the final model on the whole calibration part and the held-out part. If it is
   over budget on either, back off: every layer's share one rung down (the gentlest rung
   leaves the layer alone) until both parts are within budget. The report says how many
   rungs it backed off, since the held-out part then took part in the choice.

With ``Options.confidence`` > 0 the held-out part is instead a testing part that the
search never sees, and certify.py certifies the budget on it (Learn-then-Test).

Layers that end without a feasible share are left as they were, so a budget that
cannot be met gives a model that prunes less (possibly nothing), never one over budget.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..compiler.pipeline import Result, optimize
from ..config import LayerSetting, Options
from ..errors import ConfigError, DataError
from ..io.data import Dataset
from ..measure.compare import output_for_labels, tensor_outputs
from ..measure.flops import decision_flops, dense_flops
from ..progress import quiet
from ..rules.argmax_head import NAME as ARGMAX_HEAD
from .calibrate import LayerStats, collect
from .certify import distinct, repeats_note
from .ladder import CERTIFIED, explore, step_down
from .metrics import LABELLED, Score, choose, class_mix_warnings, label_warnings
from .near_copies import near_copies_note
from .objective import times_zero_inputs, with_sparse_choice
from .reach import unpaying
from .runner import Runner

CHOICES = ("threshold", "statstest", "certified", "auto")
SCREEN = 2000  # calibration samples the statistics and trials run on; the finalist is confirmed on all


class NothingToCalibrate(DataError):
    """The model has no early-exit layer: the data fits, there is just nothing to tune."""


@dataclass
class Trial:
    shares: dict[str, float | str | None]  # a loss share, CERTIFIED, or None (left alone)
    drop: float
    saved: float  # fraction of the model's dense FLOPs, measured by the ops
    feasible: bool


@dataclass
class Outcome:
    metric: str
    max_drop: float
    rule: str
    options: Options
    result: Result
    stats: dict[str, dict[str, LayerStats]]
    shares: dict[str, float | str | None]
    calibration: Score
    holdout: Score | None
    saved_calibration: float
    saved_holdout: float | None
    counts_holdout: dict[str, tuple[int, int]]
    split: tuple[int, int]
    met: bool
    seconds: float
    trials: list[Trial] = field(default_factory=list)
    backoffs: int = 0  # rungs stepped down after the final checks
    latency: object = None  # objective.LatencyChoice under the latency objective
    planner: Planner | None = None
    passes: float = 0.0  # samples run through a model (original, probe or compiled) / samples given
    certificate: object = None  # certify.Certificate under --confidence
    tested: np.ndarray | None = None  # the certificate's testing part, as rows of the data given
    output: str = ""  # the output the metric scores: the model's first
    backoff_parts: tuple[str, ...] = ()  # the parts the first choice was over budget on
    notes: list[str] = field(default_factory=list)  # warnings about the labels (metrics.label_warnings)
    labelled: bool = False  # labels were given (unused unless the metric is accuracy or lost)
    asked: bool = False  # the metric was named (--metric), not chosen from the output and labels
    class_axis: int | None = None  # the scored output's class axis, where the labels read it as a map
    # (score, FLOPs saved) of the search's choice on the calibration part, when the latency
    # objective then dropped some of its rewrites (the calibration figures are then the rest's)
    before_latency: tuple | None = None

    def rung_options(self, shares: dict[str, float | str | None]) -> Options:
        """The options of an allocation, with the latency objective's sparse-consumer choice."""
        options = self.planner.options(shares)
        return options if self.latency is None else with_sparse_choice(options, self.latency.options)


class Planner:
    """Turns a loss share per layer into a rule, a k and the rule's parameter per layer.

    ``stats[layer][(rule, k)]`` holds the statistics gathered with that k.
    """

    def __init__(self, base: Options, stats: dict, candidates: dict, rules: tuple[str, ...], per_output: bool = True):
        self.base, self.stats, self.rules, self.candidates = base, stats, rules, candidates
        self.per_output = per_output
        self.skip_reasons: dict[str, str] = {}  # why a layer left alone is, when not the budget

    def pick(self, layer: str, share: float) -> tuple[str, int, float | np.ndarray]:
        """The (rule, k, parameter) that executes the fewest FLOPs at this loss share.

        The Threshold rule's parameter is one threshold per output channel unless
        ``per_output`` is off.
        """
        c = self.candidates[layer]
        best = None
        for (rule, k), s in self.stats[layer].items():
            if rule not in self.rules:
                continue
            per_output = rule == "threshold" and self.per_output and isinstance(s, LayerStats) and s.outputs == c.outputs
            param = s.thresholds_for(share) if per_output else s.threshold_for(share)
            kept = 1.0 - s.prune_rate(param)
            cost = 2 * k * c.taps + decision_flops(rule, k, c.n, c.taps, c.outputs) + kept * 2 * (c.n - k) * c.taps
            if best is None or cost < best[0]:
                best = (cost, rule, k, param)
        return best[1:]

    def options(self, shares: dict[str, float | str | None]) -> Options:
        out = copy.deepcopy(self.base)
        out.chosen = frozenset(shares)
        for layer, share in shares.items():
            k = self.base.setting(layer).k
            if share is None:
                out.layers[layer] = LayerSetting(-math.inf, k, skip=True, skip_reason=self.skip_reasons.get(
                    layer, "calibration: no setting of this layer fits the budget"))
            elif share == CERTIFIED:
                out.layers[layer] = LayerSetting(-math.inf, k, rule="certified")
            else:
                rule, k, param = self.pick(layer, share)
                if rule == "statstest":
                    out.layers[layer] = LayerSetting(-math.inf, k, rule="statstest", z_crit=param)
                elif np.ndim(param):
                    live = param[np.isfinite(param)]
                    out.layers[layer] = LayerSetting(float(np.median(live)) if live.size else -math.inf, k,
                                                     thresholds=tuple(float(t) for t in param))
                else:
                    out.layers[layer] = LayerSetting(param, k)
        return out


def k_choices(base: Options) -> tuple:
    """The paper's k (auto) and half the units; only what the user fixed, if they did."""
    if base.k != "auto" or any(s.k != "auto" for s in base.layers.values()):
        return (base.k,)
    return ("auto", 0.5)


def gather(original: onnx.ModelProto, base: Options, data: Dataset, indices: np.ndarray, batch: int, seed: int,
           rules: tuple[str, ...], log=quiet):
    """Statistics for every k choice: layer -> (rule, k) -> stats, plus layer -> candidate, dense FLOPs."""
    stats: dict[str, dict] = {}
    candidates, dense = {}, 0
    choices = k_choices(base)
    for i, choice in enumerate(choices):
        options = copy.deepcopy(base)
        options.k = choice
        done = [0]

        def progress(rows, i=i, done=done):
            done[0] += rows
            log(f"collecting statistics (pass {i + 1} of {len(choices)})", done[0], len(indices))

        found, exact = collect(original, options, data, indices, batch, seed, rules=rules, progress=progress)
        dense = exact.dense_flops
        for rw in exact.rewritten:
            candidates[rw.candidate.layer] = rw.candidate
            for rule, s in found.get(rw.candidate.layer, {}).items():
                stats.setdefault(rw.candidate.layer, {})[(rule, rw.k)] = s
    return stats, candidates, dense


def screening(calib_idx: np.ndarray, seed: int) -> np.ndarray:
    """The calibration samples the statistics and the trials run on: all of them up to
    SCREEN, else a seeded draw of SCREEN (each trial is a full pass of the compiled
    model, and more samples than this rarely change which allocation wins)."""
    if len(calib_idx) <= SCREEN:
        return calib_idx
    return np.sort(np.random.default_rng(seed + 1).choice(calib_idx, SCREEN, replace=False))


def split_indices(count: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= holdout < 1:
        raise DataError(f"the held-out share must be in [0, 1), got {holdout}")
    order = np.random.default_rng(seed).permutation(count)
    held = int(round(count * holdout))
    calib, hold = np.sort(order[held:]), np.sort(order[:held])
    if len(calib) == 0:
        raise DataError(f"{count} samples leave none to calibrate on")
    return calib, hold


def _tunable(rule: str) -> tuple[str, ...]:
    return {"threshold": ("threshold",), "statstest": ("statstest",), "certified": (),
            "auto": ("threshold", "statstest")}[rule]


def _scored_output(original: onnx.ModelProto, data: Dataset, output: str) -> str:
    """The graph output the metric scores: ``output`` (--score-output) if it is a tensor
    output, else the one the labels are for, else the first."""
    names = tensor_outputs(original)  # a ZipMap's sequence of maps is scored by no metric
    every = [o.name for o in original.graph.output]
    if not names:
        raise ConfigError(f"the model has no tensor output for a metric to score (its outputs: {', '.join(every)} "
                          "are sequences or maps)")
    if output and output not in every:
        raise ConfigError(f"--score-output names {output!r}, which the model does not output (its outputs: "
                          f"{', '.join(every)})")
    if output and output not in names:
        raise ConfigError(f"--score-output names {output!r}, which is no tensor (a sequence or a map: no metric "
                          f"reads it); the tensor outputs: {', '.join(names)}")
    if not output and data.labels is not None and len(names) > 1:
        output = output_for_labels(original, data)  # a BERT's [N] labels are for its [N, C] head, not [N, T, C]
    return output or names[0]


def _labels_for(metric: str, data: Dataset) -> None:
    if metric in ("accuracy", "lost") and data.labels is None:  # known before any work (metrics.choose)
        raise DataError(f"the {metric} metric needs labels (--labels, or 'labels' in the .npz)")


def preflight(original: onnx.ModelProto, data: Dataset, metric: str = "auto", output: str = "",
              batch: int = 64) -> None:
    """What the search would refuse before or during its first pass, found with one pass of
    the original over ``data``: an output no metric scores, a model onnxruntime cannot load
    or run on the data, a metric the output or the labels do not fit."""
    output = _scored_output(original, data, output)
    _labels_for(metric, data)
    runner = Runner(original, data, np.arange(len(data)), batch, output)
    choose(metric, runner.reference, runner.layout.labels(data.labels), runner.kind)


def search(original: onnx.ModelProto, base: Options, data: Dataset, *, metric: str = "auto",
           max_drop: float = 0.001, holdout: float = 0.5, seed: int = 0, batch: int = 64, rule: str = "threshold",
           per_output: bool = True, latency: tuple[int, int] | None = None, output: str = "",
           log=quiet, certifying: bool = False) -> Outcome:
    """Calibrate ``original`` on ``data`` (module docstring). ``latency`` = (batch,
    threads) turns on the latency objective: after the held-out check, rewrites that do
    not make the model faster at that batch size and thread count are dropped
    (objective.py, timed on the calibration part) and both parts are scored again.
    ``output`` names the graph output the metric scores (default: the first).
    ``certifying``: the search of certify.certified_search, on its ladder part."""
    output = _scored_output(original, data, output)
    if rule not in CHOICES:
        raise DataError(f"rule must be one of {', '.join(CHOICES)}, got {rule!r}")
    if not 0 <= max_drop <= 1:
        raise DataError(f"the budget (max_drop) must be in [0, 1] (0.01 = one point), got {max_drop}")
    _labels_for(metric, data)
    if (base.confidence or 0.0) > 0:
        from .certify import certified_search

        outcome = certified_search(original, base, data, metric=metric, max_drop=max_drop, holdout=holdout,
                                   seed=seed, batch=batch, confidence=base.confidence, log=log, rule=rule,
                                   per_output=per_output, latency=latency, output=output)
        outcome.notes += repeats_note(data, len(outcome.tested), certified=True)
        outcome.notes += near_copies_note(data, distinct(data), True)  # over both parts, not the ladder's alone
        return outcome
    start = time.perf_counter()
    calib_idx, hold_idx = split_indices(len(data), holdout, seed)
    screen_idx = screening(calib_idx, seed)
    stats, candidates, dense = gather(original, base, data, screen_idx, batch, seed,
                                      _tunable(rule) or ("threshold",), log)
    if not stats:
        raise NothingToCalibrate("no layer of this model can be rewritten (`exprune-onnx inspect` says why)")
    runner = Runner(original, data, screen_idx, batch, output)
    # Labels are checked for the whole data, not only the screened part the runner holds.
    every = np.broadcast_to(runner.reference[:1], (len(data), *runner.reference.shape[1:]))
    asked = metric != "auto"
    metric = choose(metric, every, runner.layout.labels(data.labels), runner.kind)
    # Certified, a relerr budget bounds the share of samples over it (certify.py): the search aims at that, not
    # at the mean error, which a trial's denoiser held at 0.0093 under 0.01 while 1.2% of its samples were over.
    runner.over = max_drop if certifying and metric == "relerr" else None
    notes = label_warnings(runner.layout.values(runner.reference, metric), runner.labels) if metric in LABELLED else []
    notes += class_mix_warnings(runner.reference, runner.layout.labels(data.labels) if metric in LABELLED else None)
    notes += repeats_note(data, len(hold_idx))
    notes += near_copies_note(data, distinct(data), False) if len(hold_idx) else []  # (none: no promise)
    planner = Planner(base, stats, candidates, _tunable(rule), per_output)
    layer_flops = {layer: dense_flops(c) or 0 for layer, c in candidates.items()}
    trials: list[Trial] = []

    def trial(shares):
        compiled = optimize(original, planner.options(shares))
        s, saved, _ = runner.run(compiled.model, metric, dense)
        # Differences of accuracies carry float noise; 1e-9 is far below one sample.
        t = Trial(dict(shares), s.drop, saved, s.drop <= max_drop + 1e-9)
        trials.append(t)
        passes = (len(screen_idx) * len(k_choices(base)) + runner.rows) / len(data)
        log(f"trial {len(trials)}, {passes:.1f} passes over the data: drop {s.drop:.4f}, FLOPs saved "
            f"{100 * saved:.1f}%{'' if t.feasible else ' (over budget)'}")
        return t

    heads = [name for name in stats if candidates[name].rule == ARGMAX_HEAD]
    leave_out = None if latency is None else \
        (lambda reach: unpaying(original, planner, reach, data, calib_idx, latency, seed, log))
    best = explore(trial, Trial(dict.fromkeys(stats), 0.0, 0.0, True), heads, layer_flops, bool(planner.rules),
                   rule in ("certified", "auto"), leave_out)
    hold_runner = Runner(original, data, hold_idx, batch, output, runner.over) if len(hold_idx) else None
    # Screened on a subset: the finalist is confirmed on the whole calibration part too.
    full = runner if len(screen_idx) == len(calib_idx) else Runner(original, data, calib_idx, batch, output,
                                                                   runner.over)
    shares, backoffs, parts = best.shares, 0, ()
    while True:
        final_options = planner.options(shares)
        result = optimize(original, final_options)
        log(f"confirming on {len(calib_idx)} calibration samples")
        calib_score, calib_saved, _ = full.run(result.model, metric, dense)
        hold_score = hold_saved = None
        hold_counts: dict = {}
        if hold_runner is not None:
            log(f"checking on {len(hold_idx)} held-out samples")
            hold_score, hold_saved, hold_counts = hold_runner.run(result.model, metric, dense)
        within = calib_score.drop <= max_drop + 1e-9 and (hold_score is None or hold_score.drop <= max_drop + 1e-9)
        if within or all(not isinstance(v, float) for v in shares.values()):
            break
        if not backoffs:
            parts = tuple(name for name, sc in (("the whole calibration part", calib_score), ("the held-out part", hold_score))
                          if sc is not None and sc.drop > max_drop + 1e-9)
        shares, backoffs = step_down(shares), backoffs + 1
    timed = before = None
    if latency is not None and (result.changed or times_zero_inputs(final_options)):
        # Timed at the prune rates the model ships with, after any back-off; dropping a
        # layer only makes it exact again, and both parts are scored once more.
        timed = _keep_faster(original, planner, shares, data, calib_idx, latency, seed, log)
        relu_changed = with_sparse_choice(final_options, timed.options) != final_options
        if any(timed.kept(name) is False for name in shares) or relu_changed:
            if any(timed.kept(name) is False and s is not None for name, s in shares.items()):
                before = (calib_score, calib_saved)
            shares = {name: None if timed.kept(name) is False else s for name, s in shares.items()}
            # The plain-ReLU consumers it kept, or none where it kept the original.
            final_options = with_sparse_choice(planner.options(shares), timed.options)
            result = optimize(original, final_options)
            # The whole part, as the rows before it were scored (the screen is a subset).
            calib_score, calib_saved, _ = full.run(result.model, metric, dense)
            if hold_runner is not None:
                hold_score, hold_saved, hold_counts = hold_runner.run(result.model, metric, dense)
    rows = (len(screen_idx) * len(k_choices(base)) + runner.rows + (full.rows if full is not runner else 0)
            + (hold_runner.rows if hold_runner else 0))
    return Outcome(metric, max_drop, rule, final_options, result, stats, shares, calib_score, hold_score,
                   calib_saved, hold_saved, hold_counts, (len(calib_idx), len(hold_idx)),
                   hold_score is None or hold_score.drop <= max_drop + 1e-9, time.perf_counter() - start, trials,
                   backoffs, timed, planner, rows / len(data), output=output, backoff_parts=parts,
                   labelled=data.labels is not None, asked=asked, before_latency=before, notes=notes,
                   class_axis=runner.layout.axis)


def _keep_faster(original, planner: Planner, shares: dict, data: Dataset, indices: np.ndarray,
                 latency: tuple[int, int], seed: int, log):
    """The latency objective's choice over the layers ``shares`` rewrites; the layers it
    drops get its reason."""
    from .objective import choose

    options = planner.options(shares)
    result = optimize(original, options)
    batch, threads = latency
    timed = choose(original, options, result, data, batch=batch, threads=threads, indices=indices,
                   source=f"{len(indices)} calibration samples", seed=seed, log=log)
    for layer, setting in timed.options.layers.items():
        if timed.kept(layer) is False:
            planner.skip_reasons[layer] = setting.skip_reason
    return timed
