"""Latency of the original and the optimised model, measured side by side.

Both sessions get identical options (graph optimisations at onnxruntime's default,
the same intra-op thread count) and the same inputs; runs alternate between the two
so that machine noise hits both alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

# A middle half of runs wider than this share of its median makes a timing rough.
NOISY = 0.25
# Pairs of sessions a comparison that decides or reports goes round (``measure``): a
# session's time can lean one way for its whole life, by up to 20% for a model of large
# weights in a VM. Their ratios differing by more than SESSION_SPREAD make it rough.
SESSIONS = 3
SESSION_SPREAD = 0.05
EXTRA_BYTES = 2 << 30  # the most the pairs past the first may take


@dataclass
class Latency:
    batch: int
    threads: int
    runs: int
    original_ms: tuple[float, float, float]  # 25th percentile, median, 75th percentile
    optimized_ms: tuple[float, float, float]
    pair_ratios: tuple[float, ...] = ()  # the ratio in each pair of sessions, where there were several

    @property
    def ratio(self) -> float:
        return self.optimized_ms[1] / self.original_ms[1]

    def spread_note(self) -> str:
        """A note when either model's middle half of runs spans over NOISY of its median: a
        busy machine (one trial's two evaluate runs gave ratios 2.27 and 0.32), which one
        ratio does not show; "" otherwise."""
        wide = [(name, ms) for name, ms in (("original", self.original_ms), ("optimised", self.optimized_ms))
                if ms[1] > 0 and (ms[2] - ms[0]) / ms[1] > NOISY]
        if not wide:
            return self._sessions_note()
        name, ms = max(wide, key=lambda item: (item[1][2] - item[1][0]) / item[1][1])
        return (f"the {name} model's runs spread from {ms[0]:.3f} to {ms[2]:.3f} ms (25th-75th percentile) about "
                f"a median of {ms[1]:.3f}: the machine was busy, or a run is too short to time well; the ratio is "
                "rough: rerun, with more --runs, on a quiet machine")

    def _sessions_note(self) -> str:
        """A note when the pairs' ratios differ by over SESSION_SPREAD, each pair steady: a
        model's time moved with its sessions (where their memory landed: six sessions of a
        model with a 79 MB weight took 4.2-5.2 ms, each the same in every sweep, in a VM),
        which runs within one pair of sessions do not show."""
        low, high = min(self.pair_ratios, default=1.0), max(self.pair_ratios, default=1.0)
        if low <= 0 or high / low <= 1 + SESSION_SPREAD:
            return ""
        return (f"the ratio went from {low:.3f} to {high:.3f} over {len(self.pair_ratios)} pairs of sessions (where "
                "each session's memory lands moves this model's time): the ratio, over all of them, is rough; "
                "differences of that size are noise")


def session(model: onnx.ModelProto, threads: int, profile: str | None = None):
    """A CPU session for timing: ``threads`` intra-op threads, one inter-op thread, the
    ExPrune library registered when the model uses it, onnxruntime's default graph
    optimisations; profiling to files starting with ``profile`` when given.

    Its intra-op threads do not spin: two sessions are timed in turn in one process, and
    a session's threads spinning after its run took the cores the other's run needed. A
    model timed against itself at 2 threads on 2 cores gave ratios of 0.69-1.51 over
    rounds of 400 runs with spinning, 0.995-1.011 without (fashion_vgg, batch 1)."""
    from ..runtime import inference_session

    return inference_session(model, threads=threads, inter_threads=1, profile=profile, spin=False)


def constant_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the initializers it also lists as graph inputs (IR >= 4: defaults a
    caller may override, which onnxruntime therefore cannot fold or prepack). Timed so on
    both sides, a rewrite is credited for itself, not for the weights it turns into
    constants; the written model keeps its inputs (compiler/pipeline.py).
    The latency objective times every model so (tuning/objective.py)."""
    inits = {t.name for t in model.graph.initializer}
    if model.ir_version < 4 or not any(i.name in inits for i in model.graph.input):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [i for i in out.graph.input if i.name not in inits]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    return out


def session_pairs(original: onnx.ModelProto, optimized: onnx.ModelProto, wanted: int) -> int:
    """How many pairs of sessions of the two models ``measure`` may keep alive: ``wanted``,
    or fewer where the extra ones would take over EXTRA_BYTES or half the memory left (a
    session holds its weights about twice, with onnxruntime's prepacked copies: a trial's
    VGG19 of 575 MB peaked at 7.2 GB with three pairs)."""
    from ..io.bigmodel import model_bytes
    from ..io.memory_room import available_bytes

    room = available_bytes()
    pair = 2 * (model_bytes(original) + model_bytes(optimized))
    if pair <= 0:
        return wanted
    spare = EXTRA_BYTES if room is None else min(EXTRA_BYTES, room // 2)
    return int(max(1, min(wanted, 1 + spare // pair)))


# The most runs of each model ``measure`` adds to reach its minimum time.
MAX_RUNS = 100_000


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    q = np.percentile(np.asarray(samples) * 1e3, [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def measure(original: onnx.ModelProto, optimized: onnx.ModelProto, feeds: dict[str, np.ndarray] | list[dict],
            threads: int = 1, runs: int = 30, warmup: int = 3, log=lambda text, done=None, total=None: None,
            min_seconds: float = 0.0, sessions: int = 1) -> Latency:
    """Both models' latency on ``feeds`` (one batch, or batches taken in turn: the time of an
    op that skips zeros depends on the input), alternating runs: ``runs`` of each, and more
    until ``min_seconds`` have gone by (a 0.05 ms model's 30 runs are 3 ms of timing, where
    a timer tick or a frequency step moves the median); ``log`` is a progress hook
    (progress.py). Each model runs first in every other pair: run after run, the second
    of two identical models took 0.4-0.8% less time (caches the first left warm). The runs
    go round ``sessions`` pairs of sessions, all alive at once: one session's time can lean
    one way for as long as it lives, and a session made after another is freed lands in its
    memory and leans the same way (``Latency._sessions_note``)."""
    batches = feeds if isinstance(feeds, list) else [feeds]
    sessions = max(1, min(sessions, runs))
    pairs = [(session(original, threads), session(optimized, threads)) for _ in range(sessions)]
    names = ([o.name for o in original.graph.output], [o.name for o in optimized.graph.output])
    for a, b in pairs:
        for i in range(max(warmup, len(batches))):
            a.run(names[0], batches[i % len(batches)])
            b.run(names[1], batches[i % len(batches)])
    times = [([], []) for _ in pairs]  # each pair's runs of the original, and of the optimised
    start, done = time.perf_counter(), 0
    while done < runs or (time.perf_counter() - start < min_seconds and done < MAX_RUNS):
        if done < runs:
            log("timing both models", done, runs)
        feed = batches[done % len(batches)]
        k = done % len(pairs)
        turns = ((pairs[k][0], names[0], times[k][0]), (pairs[k][1], names[1], times[k][1]))
        for sess, out, sink in turns if (done // len(pairs)) % 2 == 0 else turns[::-1]:
            t0 = time.perf_counter()
            sess.run(out, feed)
            sink.append(time.perf_counter() - t0)
        done += 1
    ratios = tuple(float(np.median(b) / np.median(a)) for a, b in times if a)
    batch = next(iter(batches[0].values())).shape[0]
    return Latency(batch, threads, done, _quartiles([t for a, _ in times for t in a]),
                   _quartiles([t for _, b in times for t in b]), ratios if len(pairs) > 1 else ())
