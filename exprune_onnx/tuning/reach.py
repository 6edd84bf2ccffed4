"""Early exits that cannot pay on the clock within the budget, left alone before the
search refines them (the latency objective under calibration).

After the common share is climbed, the search raises each layer at most a few rungs
(ladder.reach). Pruning more makes an early exit no slower: it finishes fewer outputs,
and a consumer reading its zeros skips more inputs. So a layer at its highest reachable
share is about as fast as the search could make it. Each is timed there, alone, against
the lossless model (no early exit, every ReLU's zeros read exactly), as the objective
would time it at its final share; one that is not faster even there is left alone: the
search's remaining trials on it would only prepare what the objective then drops (a
VGG16 at 240x240 ran 40 trials, 25 minutes, to write the lossless model).

One at a time, not in groups: a group of a kind clearly slower together (as the
objective's screen.slower_together drops them) held a layer 20% faster alone (a review's
scripted clock), and the written model lost it. A pair clearly slower ends after
pairs.MIN_PASSES passes.
"""

from __future__ import annotations

import dataclasses

import onnx

from ..io.data import Dataset
from . import objective
from .pairs import FEEDS, clearly_slower, passes_for, timing_feeds


def lossless_reads(options):
    """``options`` with every plain ReLU's zeros read exactly where zero inputs are read at all."""
    if not objective.times_zero_inputs(options):
        return options
    return dataclasses.replace(options, sparse_relu="on", sparse_relu_layers=None)


def _model(original: onnx.ModelProto, options) -> onnx.ModelProto:
    return objective._compile(original, lossless_reads(options)).model  # (its Result freed, as the objective's)


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
    # Sized on the original, whose failures the probe's messages name (the objective's own probe).
    passes = passes_for(objective.seconds_per_run(original, feeds, threads, data.source))
    gone: set[str] = set()
    for layer, share in shares.items():
        log(f"timing {layer} at the most the budget's search could raise it to")
        candidate = _model(original, planner.options({**alone, layer: share}))
        with_ms, without_ms = objective.time_pair(candidate, base, feeds, threads, passes, give_up=clearly_slower,
                                                  settle_at=(1.0,))
        if with_ms < without_ms:
            continue
        planner.skip_reasons[layer] = (
            f"objective latency: at a loss share of {share:.3g}, the most the search could raise it to, the model "
            f"took {with_ms:.3f} ms with this layer against {without_ms:.3f} ms for the lossless model (no early "
            "exit, zero inputs read exactly), so it was not calibrated further")
        gone.add(layer)
    return gone
