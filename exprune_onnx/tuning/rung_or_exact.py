"""A certified rung's early exits against the exact model (certify.py, under the latency objective).

The rung certify.py writes may be gentler than the allocation the objective timed during
the search, and early exits that prune less may no longer pay for what they cost: a
trial's dilated TCN, calibrated at 1 point, kept three of them and ran at 0.96-0.97 of
the original's time, where the exact model (zero-input reads only) ran at 0.90 and lost
nothing. Only two models are safe to write: the rung as tested (its risk was certified as
a whole; a model with some of its early exits left out was never tested) and the exact
model, which changes no output. So the two are timed side by side, and the rung is
written only where it is faster by the objective's margin.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from ..compiler.pipeline import optimize
from ..io.data import Dataset
from . import objective
from .objective import MARGIN, LatencyChoice, LayerTiming, choose, skipping
from .pairs import passes_for, timing_feeds


def rung_or_exact(original: onnx.ModelProto, rung: LatencyChoice, data: Dataset, indices: np.ndarray, *,
                  seed: int, log) -> LatencyChoice:
    """``rung`` (``choose(early_exit=False)`` of the certified rung), or the exact model's
    choice when that is not slower; either way its early-exit rows say what was timed."""
    layers = [rw.candidate.layer for rw in rung.result.rewritten]
    if rung.reverted_all or not layers:
        return rung
    options = skipping(rung.options, layers)
    exact = choose(original, options, optimize(original, options), data, batch=rung.batch, threads=rung.threads,
                   indices=indices, source=rung.source, seed=seed, log=log, early_exit=False)
    if exact.reverted_all or not exact.result.changed:  # the exact model is the original, which the rung beat
        _say(rung, layers, f"the certified rung's: {rung.optimized_ms:.3f} ms against the original's "
                           f"{rung.original_ms:.3f} ms")
        return rung
    log("timing the certified rung against the exact model")
    feeds = timing_feeds(data, rung.batch, seed, indices)
    # The objective's clock (a test scripts it there)
    rung_ms, exact_ms = objective.time_pair(rung.result.model, exact.result.model, feeds, rung.threads,
                                            passes_for(exact.original_ms / 1e3))
    if rung_ms <= exact_ms * (1.0 - MARGIN):
        _say(rung, layers, f"the certified rung's: {rung_ms:.3f} ms with its early exits, {exact_ms:.3f} ms "
                           "with exact reads only")
        return rung
    why = (f"objective latency: the certified rung took {rung_ms:.3f} ms with its early exits, the exact model "
           f"{exact_ms:.3f} ms, which loses nothing")
    for layer in layers:
        exact.options.layers[layer] = dataclasses.replace(exact.options.layers[layer], skip_reason=why)
    exact.layers[:0] = [LayerTiming(layer, rung_ms, exact_ms, False, group=tuple(layers)) for layer in layers]
    exact.result = optimize(original, exact.options)  # with the reasons, for --explain
    exact.over_rung = True
    return exact


def _say(choice: LatencyChoice, layers: list[str], note: str) -> None:
    for t in choice.layers:
        if t.layer in layers and not t.versus_early_exit and t.kept and t.note:
            t.note = note
