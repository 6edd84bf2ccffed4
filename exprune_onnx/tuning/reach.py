"""Early exits that cannot pay on the clock within the budget, left alone before the
search refines them (the latency objective under calibration).

After the common share is climbed, the search raises each layer at most a few rungs
(ladder.reach). Pruning more makes an early exit no slower: it finishes fewer outputs,
and a consumer reading its zeros skips more inputs. So a layer at its highest reachable
share is about as fast as the search could make it. Each is timed there against the
lossless model (no early exit, every ReLU's zeros read exactly), as the objective would
time it at its final share, and one that is not faster even there is left alone: the
search's remaining trials on it would only prepare what the objective then drops (a
VGG16 at 240x240 ran 39 trials, about 13 minutes, to write the lossless model).

Where timing each layer in the whole model would take over objective.SCREEN_ABOVE
seconds, the layers are timed in two groups, conv and dense (Gemm/MatMul): a conv's tail
loses to onnxruntime's dense kernels on CPUs where a memory-bound Gemm's may pay, and one
kind's verdict should not sink the other. A group is left alone only where it is clearly
slower (pairs.GIVE_UP), as in the objective's own group screen (screen.slower_together):
a layer that pays alone could hide in a group a little slower than without it.
"""

from __future__ import annotations

import dataclasses
import gc

import onnx

from ..compiler.pipeline import optimize
from ..io.data import Dataset
from . import objective
from .pairs import FEEDS, GIVE_UP, clearly_slower, passes_for, timing_feeds

KINDS = ("conv", "dense")


def lossless_reads(options):
    """``options`` with every plain ReLU's zeros read exactly where zero inputs are read at all."""
    if not objective.times_zero_inputs(options):
        return options
    return dataclasses.replace(options, sparse_relu="on", sparse_relu_layers=None)


def _model(original: onnx.ModelProto, options) -> onnx.ModelProto:
    model = optimize(original, lossless_reads(options)).model
    gc.collect()  # a compiled Result's graph holds the weights again, in cycles (objective.Built)
    return model


def unpaying(original: onnx.ModelProto, planner, shares: dict, data: Dataset, indices, latency: tuple[int, int],
             seed: int, log) -> set[str]:
    """The layers of ``shares`` (each at its reachable share, ladder.reach) that make the
    model no faster than the lossless one there (module docstring), timed at ``latency`` =
    (batch, threads) on ``data[indices]``; ``planner`` (search.Planner) compiles the shares,
    and its skip reasons say why for each layer."""
    from ..io.batch_memory import check_batch_memory

    if not shares:
        return set()
    batch, threads = latency
    check_batch_memory([("original", original)] * 2, data, batch, "--latency-batch", feeds=FEEDS)
    feeds = timing_feeds(data, batch, seed, indices)
    alone = dict.fromkeys(planner.stats)
    base = _model(original, planner.options(alone))
    probe = objective.seconds_per_run(base, feeds, threads, data.source)
    passes = passes_for(probe)
    grouped = 2 * len(shares) * passes * FEEDS * probe > objective.SCREEN_ABOVE
    if grouped:
        groups = [[layer for layer in shares if planner.candidates[layer].kind == kind] for kind in KINDS]
    else:
        groups = [[layer] for layer in shares]
    line = 1.0 + GIVE_UP if grouped else 1.0  # left alone at or over this ratio to the lossless model
    gone: set[str] = set()
    for group in filter(None, groups):
        what = f"the {planner.candidates[group[0]].kind} early-exit layers" if grouped else group[0]
        log(f"timing {what} at the most the budget's search could reach")
        candidate = _model(original, planner.options({**alone, **{layer: shares[layer] for layer in group}}))
        with_ms, without_ms = objective.time_pair(candidate, base, feeds, threads, passes, give_up=clearly_slower,
                                                  settle_at=(line,))
        if with_ms < without_ms * line:
            continue
        subject = f"all {len(group)} {what.removeprefix('the ')}" if grouped else "this layer"
        reason = (f"objective latency: with {subject} at the most the search could raise "
                  f"{'them' if grouped else 'it'} to, the model took "
                  f"{with_ms:.3f} ms against {without_ms:.3f} ms without (zero inputs read exactly), so "
                  f"{'none was' if grouped else 'it was not'} calibrated further")
        for layer in group:
            planner.skip_reasons[layer] = reason
        gone.update(group)
    return gone
