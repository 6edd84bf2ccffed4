"""Choosing per-layer thresholds under an end-to-end budget, on real runs of the real model.

1. Split the data (seeded): a calibration part and a held-out part.
2. One pass over the calibration part gives every layer's estimate/output statistics
   (calibrate.collect).
3. A layer's aggressiveness is the share of its output mass it may lose; the same
   share for every layer gives one knob. Walk a geometric ladder of shares, compile the
   model with the thresholds they imply, run it (custom op and all) on the
   calibration part, and keep the most FLOPs saved within the budget.
4. Refine layer by layer, biggest layers first: raise one layer's share a rung while
   the budget still holds. When not even the gentlest common share fits, admit layers
   one at a time instead.
5. Run the final model on the held-out part and report both parts.

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

from .calibrate import LayerStats, collect
from .config import LayerSetting, Options
from .data import Dataset
from .errors import DataError
from .accounting import dense_flops
from .measure import flops_saved
from .metrics import Score, choose, score
from .pipeline import Result, optimize

LADDER = tuple(float(x) for x in np.geomspace(1e-5, 0.3, 16))


@dataclass
class Trial:
    shares: dict[str, float | None]  # None = layer left alone
    drop: float
    saved: float  # fraction of the model's dense FLOPs, measured by the ops
    feasible: bool


@dataclass
class Outcome:
    metric: str
    max_drop: float
    options: Options
    result: Result
    stats: dict[str, LayerStats]
    shares: dict[str, float | None]
    calibration: Score
    holdout: Score | None
    saved_calibration: float
    saved_holdout: float | None
    counts_holdout: dict[str, tuple[int, int]]
    split: tuple[int, int]
    met: bool
    seconds: float
    trials: list[Trial] = field(default_factory=list)


class Runner:
    """Runs the original once per part and any compiled candidate against it."""

    def __init__(self, original: onnx.ModelProto, data: Dataset, indices: np.ndarray, batch: int):
        import onnxruntime as ort

        self.data, self.indices, self.batch = data, indices, batch
        session = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
        self.output = original.graph.output[0].name
        self.reference = np.concatenate([session.run([self.output], f)[0] for f in data.batches(batch, indices)])
        self.labels = data.labels_of(indices)

    def run(self, compiled: onnx.ModelProto, metric: str, dense_flops: int):
        from .check import with_stats
        from .runtime import inference_session

        model, stats_names = with_stats(compiled)
        session = inference_session(model)
        names = [self.output] + list(stats_names.values())
        got, counts = [], {n: [0, 0] for n in stats_names}
        for feeds in self.data.batches(self.batch, self.indices):
            outs = session.run(names, feeds)
            got.append(outs[0])
            for node, s in zip(stats_names, outs[1:]):
                counts[node][0] += int(s[0])
                counts[node][1] += int(s[1])
        counts = {k: tuple(v) for k, v in counts.items()}
        saved = flops_saved(compiled, counts) / len(self.indices) / dense_flops if dense_flops else 0.0
        return score(metric, self.reference, np.concatenate(got), self.labels), saved, counts


def _options_for(base: Options, stats: dict[str, LayerStats], shares: dict[str, float | None]) -> Options:
    out = copy.deepcopy(base)
    for layer, share in shares.items():
        k = base.setting(layer).k
        if share is None:
            out.layers[layer] = LayerSetting(-math.inf, k, skip=True)
        else:
            out.layers[layer] = LayerSetting(stats[layer].threshold_for(share), k)
    return out


def split_indices(count: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= holdout < 1:
        raise DataError(f"the held-out share must be in [0, 1), got {holdout}")
    order = np.random.default_rng(seed).permutation(count)
    held = int(round(count * holdout))
    calib, hold = np.sort(order[held:]), np.sort(order[:held])
    if len(calib) == 0:
        raise DataError(f"{count} samples leave none to calibrate on")
    return calib, hold


def search(original: onnx.ModelProto, base: Options, data: Dataset, *, metric: str = "auto",
           max_drop: float = 0.001, holdout: float = 0.5, seed: int = 0, batch: int = 64,
           log=lambda msg: None) -> Outcome:
    start = time.perf_counter()
    calib_idx, hold_idx = split_indices(len(data), holdout, seed)
    log(f"collecting statistics on {len(calib_idx)} calibration samples")
    stats, _ = collect(original, base, data, calib_idx, batch, seed)
    if not stats:
        raise DataError("no layer of this model can be rewritten (`exprune-onnx inspect --explain` says why)")
    runner = Runner(original, data, calib_idx, batch)
    metric = choose(metric, runner.reference, runner.labels)
    exact = optimize(original, _options_for(base, stats, {l: 0.0 for l in stats}))
    dense = exact.dense_flops
    layer_flops = {r.candidate.layer: dense_flops(r.candidate) or 0 for r in exact.rewritten}
    trials: list[Trial] = []

    def trial(shares):
        compiled = optimize(original, _options_for(base, stats, shares))
        s, saved, _ = runner.run(compiled.model, metric, dense)
        t = Trial(dict(shares), s.drop, saved, s.drop <= max_drop)
        trials.append(t)
        log(f"  trial {len(trials):>2}: drop {s.drop:.4f}, FLOPs saved {100 * saved:.1f}%"
            f"{'' if t.feasible else ' (over budget)'}")
        return t

    layers = list(stats)
    best = Trial({l: None for l in layers}, 0.0, 0.0, True)
    misses = 0
    for share in LADDER:
        t = trial({l: share for l in layers})
        if t.feasible and t.saved > best.saved:
            best, misses = t, 0
        elif not t.feasible:
            misses += 1
            if misses == 2:
                break
    # Biggest layers first: they have the most to give.
    order = sorted(layers, key=lambda l: -layer_flops.get(l, 0))
    if all(share is None for share in best.shares.values()):
        # Not even the gentlest common share fits: admit layers one at a time.
        for layer in order:
            t = trial({**best.shares, layer: LADDER[0]})
            if t.feasible and t.saved > best.saved:
                best = t
    for layer in order:
        current = best.shares[layer]
        rung = -1 if current is None else LADDER.index(current)
        for nxt in LADDER[rung + 1:rung + 3]:
            t = trial({**best.shares, layer: nxt})
            if t.feasible and t.saved > best.saved:
                best = t
            else:
                break
    final_options = _options_for(base, stats, best.shares)
    result = optimize(original, final_options)
    calib_score, calib_saved, _ = runner.run(result.model, metric, dense) if result.changed else (
        score(metric, runner.reference, runner.reference, runner.labels), 0.0, {})
    hold_score = hold_saved = None
    hold_counts: dict = {}
    if len(hold_idx):
        log(f"checking on {len(hold_idx)} held-out samples")
        held = Runner(original, data, hold_idx, batch)
        if result.changed:
            hold_score, hold_saved, hold_counts = held.run(result.model, metric, dense)
        else:
            hold_score, hold_saved = score(metric, held.reference, held.reference, held.labels), 0.0
    return Outcome(metric, max_drop, final_options, result, stats, best.shares, calib_score, hold_score,
                   calib_saved, hold_saved, hold_counts, (len(calib_idx), len(hold_idx)),
                   hold_score is None or hold_score.drop <= max_drop, time.perf_counter() - start, trials)
