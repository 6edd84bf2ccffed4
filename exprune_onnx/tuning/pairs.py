"""Two models timed side by side in onnxruntime, the latency objective's measuring
instrument: the same feeds, the same session options, turns taken run by run."""

from __future__ import annotations

import time

import numpy as np
import onnx

from ..errors import DataError, RuntimeCheckError, error_message, original_failed
from ..io.data import Dataset
from ..measure.timing import constant_weights
from ..measure.timing import session as timing_session

FEEDS = 8  # distinct input batches cycled through in every timed pass
# A rewrite this much slower than without it after MIN_PASSES passes is not timed to the
# end: the medians of 2 x FEEDS runs each do not move 5% back (tests/test_objective.py
# keeps the decisions; bench/ would say if they did).
GIVE_UP = 0.05
MIN_PASSES = 2
# A comparison whose ratio lies this many standard errors from each ratio the caller
# decides at stops after that pass (``settled``): more passes would not change the
# decision. A deep CNN's layers (VGG16 at 240x240, ~0.3 s a run) took 5 passes of 16 runs
# each, most of them clear long before.
SETTLED_Z = 3.0
SE_FLOOR = 0.002  # the least relative error assumed of a ratio: timer ticks, identical runs
# Student's t at SETTLED_Z's one-sided level (99.865%) for 1-11 degrees of freedom; past
# them SETTLED_Z + 9.5 / dof is within 2% of it.
_STUDENT_T = (235.8, 19.21, 9.22, 6.62, 5.51, 4.90, 4.53, 4.28, 4.09, 3.96, 3.85)
WARM_RUNS = 2  # runs per session before timing, at the least (``warm_ups``)


def timing_feeds(data: Dataset, batch: int, seed: int = 0,
                 indices: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """FEEDS batches of ``batch`` samples drawn (seeded) from ``data`` (or from its
    samples at ``indices``); fewer samples than a batch are repeated, so the batch size
    is the one asked for."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(data)) if indices is None else np.asarray(indices)
    if len(pool) == 0:
        raise RuntimeCheckError("the latency objective needs at least one input sample to time on")
    if data.batch is not None and batch != data.batch:
        raise DataError(f"--latency-batch {batch} is impossible: the model's inputs fix the batch at {data.batch}; "
                        f"use --latency-batch {data.batch} or leave it out")
    feeds = []
    for _ in range(FEEDS):
        pick = np.sort(rng.choice(pool, size=batch, replace=len(pool) < batch))
        feeds.append(data.take(pick))
    return feeds


def session(model: onnx.ModelProto, threads: int):
    try:
        return timing_session(constant_weights(model), threads)
    except Exception as exc:
        raise RuntimeCheckError(f"onnxruntime cannot load a model to time ({error_message(exc)})") from exc


def run(sess, names, feeds, source: str | None = None) -> None:
    """One run. With ``source`` (the data's name) the model is the original, and a failure
    is the data's (out-of-range token ids, inputs whose lengths disagree), not the rewrite's."""
    try:
        sess.run(names, feeds)
    except Exception as exc:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
        if source is not None:
            raise original_failed(source, exc) from exc
        raise RuntimeCheckError(f"onnxruntime failed while timing on inputs {shapes} ({error_message(exc)}); "
                                "--objective flops keeps the rewrites without timing them") from exc


def clearly_slower(with_ms: float, without_ms: float) -> bool:
    """Whether a rewrite timed at ``with_ms`` against ``without_ms`` after a few passes is
    so much slower that more passes cannot make it MARGIN faster: stop timing it."""
    return with_ms > without_ms * (1.0 + GIVE_UP)


def settled(ta: list[float], tb: list[float], lines: tuple[float, ...], feeds: int) -> bool:
    """Whether the a/b ratio is known to fall on one side of each of ``lines``. Run ``i``
    of each list took feed ``i % feeds``, the two in turn, so each pass gives a ratio per
    feed. A feed's ratios from pass to pass differ by the machine's noise (a feed's own
    cost, which a zero-skipping op takes from its input, stays with it); noise that lasts
    longer than a run (another job's burst of memory traffic, which slows one model more
    than the other) moves whole passes, which the spread of the passes' mean ratios shows,
    at the price of Student's t on few of them. Settled when the ratio of the medians and
    the mean log ratio lie over both margins from each line, on the same side."""
    passes = min(len(ta), len(tb)) // feeds
    if passes < 2 or min(ta) <= 0 or min(tb) <= 0:  # (a clock too coarse for the runs)
        return False
    logs = np.log(np.asarray(ta[:passes * feeds]) / np.asarray(tb[:passes * feeds])).reshape(passes, feeds)
    cells = np.sqrt(np.sum((logs - logs.mean(axis=0)) ** 2) / (feeds * (passes - 1))) / np.sqrt(logs.size)
    between = logs.mean(axis=1).std(ddof=1) / np.sqrt(passes)
    dof = passes - 1
    t = _STUDENT_T[dof - 1] if dof <= len(_STUDENT_T) else SETTLED_Z + 9.5 / dof
    margin = max(SETTLED_Z * max(SE_FLOOR, cells), t * between)
    ratio, mean = np.log(np.median(ta) / np.median(tb)), logs.mean()
    return all(np.sign(ratio - np.log(line)) == np.sign(mean - np.log(line))
               and min(abs(ratio - np.log(line)), abs(mean - np.log(line))) > margin for line in lines)


def warm_ups(feeds: list[dict]) -> list[dict]:
    """The feeds a session runs before it is timed: the first of each set of input shapes
    (a session allocates at its first run of a shape, and plans its memory from it for the
    next), and others up to WARM_RUNS. One run of each of the 8 feeds took 17% of the
    timing of a whole VGG16, for nothing the medians would show."""
    shapes, first, rest = set(), [], []
    for f in feeds:
        key = tuple((name, v.shape, v.dtype.str) for name, v in f.items())
        (rest if key in shapes else first).append(f)
        shapes.add(key)
    return first + rest[:max(0, WARM_RUNS - len(first))]


def time_pair(a: onnx.ModelProto, b: onnx.ModelProto, feeds: list[dict], threads: int, passes: int, block: int = 1,
              give_up=None, sessions: int = 1, settle_at: tuple[float, ...] = ()) -> tuple[float, float]:
    """Median milliseconds per batch of ``a`` and ``b`` over the same feeds, taking turns
    every ``block`` runs. 1 alternates every run; a larger block gives each model that
    many consecutive runs, as a loop that calls one model (a decoder) would, so that
    weights which fit in the cache stay there, where alternating every run makes two
    large models evict each other's. ``give_up(a_ms, b_ms)``, checked after every pass
    from the ``MIN_PASSES``-th on, ends the timing early when it says so, as does a ratio
    ``settled`` on one side of each of ``settle_at`` (the a/b ratios the caller reads it
    against). The turns go round ``sessions`` pairs of sessions alive at once: one
    session's time can lean one way for its whole life (measure/timing.py). Not both: a
    feed would meet the same pair in every pass, and their lean would not show in its
    ratios."""
    if settle_at and sessions > 1:
        raise ValueError("time_pair settles one pair of sessions only")
    pairs = [(session(a, threads), session(b, threads)) for _ in range(max(1, sessions))]
    outs_a = [o.name for o in a.graph.output]
    outs_b = [o.name for o in b.graph.output]
    for sa, sb in pairs:
        for f in warm_ups(feeds):  # first runs allocate and page in
            run(sa, outs_a, f)
            run(sb, outs_b, f)
    ta, tb = [], []
    runs = passes * len(feeds)
    for turn, start in enumerate(range(0, runs, block)):
        sa, sb = pairs[turn % len(pairs)]
        # Alternate who goes first so that cache and frequency effects hit both.
        first, second = ((sa, outs_a, ta), (sb, outs_b, tb)) if (turn // len(pairs)) % 2 == 0 else \
            ((sb, outs_b, tb), (sa, outs_a, ta))
        for sess, names, sink in (first, second):
            for r in range(start, min(runs, start + block)):
                f = feeds[r % len(feeds)]
                t0 = time.perf_counter()
                sess.run(names, f)
                sink.append(time.perf_counter() - t0)
        timed = min(len(ta), len(tb))
        if timed < MIN_PASSES * len(feeds) or timed % len(feeds):
            continue
        if give_up is not None and give_up(float(np.median(ta) * 1e3), float(np.median(tb) * 1e3)):
            break
        if settle_at and settled(ta, tb, settle_at, len(feeds)):
            break
    return float(np.median(ta) * 1e3), float(np.median(tb) * 1e3)


def passes_for(seconds_per_batch: float, budget: float = 0.4) -> int:
    """Enough passes through the feeds for a steady median, within about ``budget``
    seconds per model. A model of a few dozen microseconds gets hundreds: at that size
    a timer tick or a frequency step moves a short median by several percent."""
    return int(np.clip(budget / max(seconds_per_batch * FEEDS, 1e-6), 5, 1000))
