"""The latency objective: keep a rewrite only if it makes the model faster in onnxruntime.

FLOPs saved are not time saved: an early-exit op adds a Gather and a Slice, breaks
onnxruntime's blocked-layout chains around convolutions, and finishes the survivors
with kernels that are less tuned than MLAS. So under ``--objective latency`` each
rewritten layer is timed where it lives, in the whole model:

1. Start from every layer the compiler (or the calibration) chose.
2. For each layer, smallest first: compile the model with and without it (the others
   as kept so far) and time both side by side on real inputs, at the batch size and
   thread count the user deploys with. The layer stays only if the model with it is
   at least ``MARGIN`` faster; otherwise it reverts to its dense form (a pair stops once
   which side of that line it falls on is settled: pairs.settled). When timing
   every layer this way would take over ``SCREEN_ABOVE`` seconds, each is first timed
   alone (screen.py), and one not faster alone, or saving under ``MARGIN`` of the
   model's time alone (small_gains.py), reverts without a whole-model timing; the
   rest, if several, are first timed together, and all revert if that is clearly
   slower (screen.slower_together). A layer kept whose input is a plain ReLU's output
   is then timed against the same layer dense reading that input's zeros, and replaced
   by that exact read unless the early exit is ``MARGIN`` faster (exact_read.py).
3. Then each MatMul/Gemm that reads a plain ReLU's output (including the ReLUs of
   layers step 2 reverted) is timed the same way reading it sparsely
   (``ExPruneSparseMatMul``, passes/sparse_input.py), unless ``sparse_relu`` is "off"
   or ``sparse_input`` is off.
   This one is exact; whether it pays depends on how many zeros the ReLU gives on
   these inputs and on the batch. Convolutions reading a ReLU's zeros
   (``ExPruneSparseConv``, passes/sparse_conv.py) are among them; each is first timed
   alone on its real input, and only one faster alone by at least ``MARGIN`` of the
   model's time is timed in the whole model on its own (screen.py, small_gains.py).
   Early-exit layers that prune nothing (T = -inf) are dropped untimed.
   A consumer that made the model faster, but by less than ``MARGIN``, before a later
   one was kept is then timed again, one by one, in the model as now kept: each kept
   rewrite changes its neighbours' cost (onnxruntime converts layouts around an op that
   does not share its blocked one), so a conv between two that now run as
   ``ExPruneSparseConv`` may clear the margin it missed between two dense ones. The
   consumers still short of it are then timed together, and those too small alone
   together on top of what is kept; a group is kept whole if it clears the margin.
4. Time what is left (kept layers, any consumer now reading their output sparsely,
   kept ReLU consumers) against the original model. If it is not at least ``MARGIN``
   faster, nothing is rewritten at all: the latency objective never returns a slower
   model, up to the noise of the measurement.

Timing the whole model rather than the layer in isolation charges each rewrite for
the layout conversions and lost fusions it causes, which is where most of the cost
hides. The inputs are real samples (calibration data when given), so every layer
prunes at its calibrated rate while being timed.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..compiler.pipeline import Result, optimize
from ..config import Options
from ..errors import RuntimeCheckError, original_unloadable
from ..io.data import Dataset
from ..measure.flops import dense_flops
from ..measure.timing import SESSIONS, constant_weights, session_pairs
from ..measure.timing import session as timing_session
from ..progress import quiet
from .exact_read import exact_instead, readable_if_dense
from .exact_read import reason as exact_reason
from .pairs import FEEDS, clearly_slower, passes_for, run, time_pair, timing_feeds
from .screen import (
    ALONE_MARGIN,
    SparseConsumer,
    prunes_nothing,
    screen_early_exit,
    screen_sparse_convs,
    slower_together,
)
from .small_gains import model_ms, time_again, time_together, too_small

# A layer must make the whole model this much faster to stay: below it, the
# difference is within what a shared machine's noise can fake.
MARGIN = 0.01
# Screen every layer alone first (screen.py) when timing each in the whole model would
# take longer than this many seconds; below, whole-model timing is cheap and exact.
SCREEN_ABOVE = 20.0


EARLY_EXIT = "early exit"
RUNG = "the certified rung's, not timed again"  # an early exit choose(early_exit=False) keeps as it is
ZERO_INPUTS = "zero inputs"  # a MatMul/Gemm after a plain ReLU, read sparsely


@dataclass
class LayerTiming:
    layer: str
    with_ms: float  # the whole model with this layer rewritten (others as kept so far)
    without_ms: float  # the same model with this layer dense
    kept: bool
    kind: str = EARLY_EXIT
    note: str = ""  # decided without a whole-model timing: why (screen.py); the times are then the layer's alone
    small: bool = False  # faster alone, by too little to be timed in the model alone (small_gains.py)
    group: tuple = ()  # this row timed these layers together (``small_gains.time_together``)
    again: bool = False  # timed a second time, after later layers were kept (``small_gains.time_again``)
    # An exact read timed against the same layer as a kept early exit, not against it dense (exact_read.py)
    versus_early_exit: bool = False

    @property
    def alone(self) -> bool:
        """Decided without a whole-model timing (screen.py): the times, if any, are the layer's alone."""
        return bool(self.note)

    @property
    def gain(self) -> float:
        """Fraction of the model's time this layer saves (negative: it costs time)."""
        return 1.0 - self.with_ms / self.without_ms if self.without_ms > 0 else 0.0


@dataclass
class LatencyChoice:
    options: Options  # the input options with the dropped layers skipped
    result: Result
    batch: int
    threads: int
    source: str  # where the timing inputs came from
    layers: list[LayerTiming] = field(default_factory=list)
    original_ms: float = 0.0
    optimized_ms: float = 0.0
    seconds: float = 0.0
    reverted_all: bool = False  # what was left was not faster than the original
    attempt_ms: float = 0.0  # then: the time of what was left
    over_rung: bool = False  # the exact model, written where a certified rung was not faster (rung_or_exact.py)
    # (batch, original ms, optimised ms): the written model timed again at a batch its open
    # batch also takes, where this choice was made at batch 1 (other_batch.py)
    other_batch: tuple[int, float, float] | None = None

    @property
    def ratio(self) -> float:
        return self.optimized_ms / self.original_ms if self.original_ms > 0 else 1.0

    def in_group(self, timing: LayerTiming) -> bool:
        """Whether a group row decided ``timing``'s layer (``small_gains.time_together``)."""
        return timing.kind == ZERO_INPUTS and any(timing.layer in t.group for t in self.layers)

    def read_exactly(self, layer: str) -> LayerTiming | None:
        """The row of an exact read that replaced ``layer``'s early exit (exact_read.py), if one did."""
        return next((t for t in self.layers if t.layer == layer and t.versus_early_exit and t.kept), None)

    def kept(self, layer: str, kind: str = EARLY_EXIT) -> bool | None:
        for t in self.layers:
            if t.layer == layer and t.kind == kind:
                return t.kept and not self.reverted_all
        return None


@dataclass(frozen=True)
class Built:
    """A candidate model and what the objective reads of its compilation. Not the
    compiler's Result: its graph holds every weight once more, in cycles that only a
    collection frees (2 GB or more for VGG19, per candidate)."""
    model: onnx.ModelProto
    changed: bool
    sparse: tuple[SparseConsumer, ...]


def _compile(original: onnx.ModelProto, options: Options) -> Built:
    result = optimize(original, options)
    built = Built(result.model, result.changed, tuple(SparseConsumer.of(s) for s in result.sparse))
    del result
    gc.collect()
    return built


def times_zero_inputs(options: Options) -> bool:
    """Whether step 3 may find plain-ReLU consumers to time, so that ``choose`` has work
    even where no early-exit layer was rewritten."""
    return options.sparse_input and options.sparse_relu != "off"


def with_sparse_choice(options: Options, chosen: Options) -> Options:
    """``options`` with the sparse-consumer settings of the latency choice ``chosen``."""
    return dataclasses.replace(options, sparse_input=chosen.sparse_input, sparse_relu=chosen.sparse_relu,
                               sparse_relu_layers=chosen.sparse_relu_layers)


def skipping(options: Options, layers, chosen=()) -> Options:
    """``options`` with ``layers`` left dense and nothing rewritten beyond ``chosen``."""
    out = dataclasses.replace(options, layers=dict(options.layers), emit_stats=False, chosen=frozenset(chosen))
    for layer in chosen:
        out.layers[layer] = options.setting(layer)
    for layer in layers:
        out.layers[layer] = dataclasses.replace(options.setting(layer), skip=True, skip_reason="")
    return out


def choose(original: onnx.ModelProto, options: Options, result: Result, data: Dataset, *, batch: int = 1,
           threads: int = 1, indices: np.ndarray | None = None, source: str = "", seed: int = 0,
           log=quiet, early_exit: bool = True) -> LatencyChoice:
    """Drop the rewrites of ``result`` (compiled from ``original`` with ``options``)
    that do not make the model faster, timing on ``data`` (module docstring).
    ``early_exit=False`` keeps its early-exit layers as they are (a certified rung) and
    decides only the zero-input reads, and step 4."""
    from ..io.batch_memory import check_batch_memory
    from ..io.bigmodel import serializable

    if not serializable(original):
        raise RuntimeCheckError("the model is over 2 GB, which the latency objective cannot hand to onnxruntime "
                                "from memory yet; --objective flops keeps the rewrites without timing them")
    start = time.perf_counter()
    layers = [rw.candidate.layer for rw in result.rewritten]
    choice = LatencyChoice(options, result, batch, threads, source or data.source)
    try_relu = times_zero_inputs(options)
    order = sorted(result.rewritten, key=lambda rw: (dense_flops(rw.candidate) or 0, rw.candidate.layer)) \
        if early_exit else []
    if not early_exit:  # a certified rung's early exits stay, untimed: their rows say so
        choice.layers += [LayerTiming(rw.candidate.layer, 0.0, 0.0, True, note=RUNG) for rw in result.rewritten]
    dropped: list[str] = []
    reads: list[str] = []  # plain-ReLU consumers read sparsely: from step 2 those that replaced an early exit
    readable: set[str] | None = None  # the layers that, dense, could read a plain ReLU's zeros (exact_read.py)
    compiled: dict[tuple, Built] = {}

    def build(names, relu=None) -> Built:
        """The model with ``names`` left dense; ``relu``: the plain-ReLU consumers read
        sparsely (a tuple), or every one that qualifies ("all")."""
        key = (tuple(sorted(names)), relu if relu == "all" else tuple(sorted(relu or ())))
        if key not in compiled:
            opts = skipping(options, key[0], layers)
            opts.sparse_relu, opts.sparse_relu_layers = ("off", None) if not relu else \
                ("on", None if relu == "all" else frozenset(key[1]))
            compiled[key] = _compile(original, opts)
        return compiled[key]

    def forget_all_but(*keep) -> None:
        # Only the model as now kept is compared again: a large model is not held twice over.
        wanted = {(tuple(sorted(names)), tuple(sorted(relu))) for names, relu in keep}
        for key in [key for key in compiled if key not in wanted]:
            del compiled[key]

    if not result.changed and not (try_relu and any(s.after_relu for s in build((), "all").sparse)):
        return choice
    # Two sessions are timed at a time, each a rewrite of the original.
    check_batch_memory([("original", original)] * 2, data, batch, "--latency-batch", feeds=FEEDS)
    feeds = timing_feeds(data, batch, seed, indices)
    # Size the number of passes on the original once.
    probe_seconds = seconds_per_run(original, feeds, threads, data.source)
    passes = passes_for(probe_seconds)
    screened = {}
    to_time = {rw.candidate.layer for rw in order if not prunes_nothing(options, rw.candidate.layer)}
    together, group = "", []
    if 2 * len(to_time) * passes * FEEDS * probe_seconds > SCREEN_ABOVE:
        screened = screen_early_exit(original, result, feeds, threads, log, to_time)
        group = [rw.candidate.layer for rw in order if rw.candidate.layer in to_time and _alone_row(
            choice, rw.candidate.layer, screened.get(rw.candidate.layer), EARLY_EXIT, probe_seconds * 1e3) is None]
        together = slower_together(group, [rw.candidate.layer for rw in order if rw.candidate.layer not in group],
                                   build, feeds, threads, passes, time_pair, clearly_slower, log)
    for i, rw in enumerate(order):
        layer = rw.candidate.layer
        if layer not in to_time or (together and layer in group):
            note = together if layer in to_time else "prunes nothing at threshold -inf"
            choice.layers.append(LayerTiming(layer, 0.0, 0.0, False, note=note))
            dropped.append(layer)
            continue
        row = _alone_row(choice, layer, screened.get(layer), EARLY_EXIT, probe_seconds * 1e3)
        if row is not None:
            choice.layers.append(row)
            dropped.append(layer)
            continue
        log(f"timing early-exit layers: {layer}", i, len(order))
        # With the exact reads kept so far (exact_read.py), as the others are kept.
        with_ms, without_ms = time_pair(build(dropped, reads).model, build(dropped + [layer], reads).model, feeds,
                                        threads, passes, give_up=clearly_slower, settle_at=(1.0 - MARGIN, 1.0))
        kept = with_ms <= without_ms * (1.0 - MARGIN)
        row = LayerTiming(layer, with_ms, without_ms, kept)
        choice.layers.append(row)
        if kept and try_relu:
            readable = readable_if_dense(build, layers) if readable is None else readable
            forget_all_but((dropped, reads))  # the dense side and the all-dense model: two candidates at most
            exact = exact_instead(choice, build, dropped, reads, layer, feeds, threads, passes, log) \
                if layer in readable else None
            if exact is not None:
                row.kept, reads = False, exact
        if not row.kept:
            dropped.append(layer)
        forget_all_but((dropped, reads))
    # The ReLUs of the layers just reverted are plain again: their consumers qualify now.
    relu_candidates = [s for s in build(dropped, "all").sparse if s.after_relu and s.layer not in reads] \
        if try_relu else []
    relu_candidates.sort(key=lambda s: (s.weight_size, s.layer))
    relu_kept = list(reads)
    if relu_candidates:
        log("timing the sparse convolutions alone")
        alone_convs = screen_sparse_convs(build(dropped, "all").model, relu_candidates, feeds, threads, passes, time_pair)
    for i, s in enumerate(relu_candidates):
        row = _alone_row(choice, s.layer, alone_convs.get(s.layer), ZERO_INPUTS, probe_seconds * 1e3)
        if row is not None:  # one too small alone may still pay in a group (small_gains.py)
            choice.layers.append(row)
            continue
        log(f"timing zero-input skipping: {s.layer}", i, len(relu_candidates))
        with_ms, without_ms = time_pair(build(dropped, relu_kept + [s.layer]).model, build(dropped, relu_kept).model,
                                        feeds, threads, passes, give_up=clearly_slower, settle_at=(1.0 - MARGIN, 1.0))
        kept = with_ms <= without_ms * (1.0 - MARGIN)
        choice.layers.append(LayerTiming(s.layer, with_ms, without_ms, kept, ZERO_INPUTS))
        if kept:
            relu_kept.append(s.layer)
        forget_all_but((dropped, relu_kept))
    relu_kept += time_again(choice, lambda relu: build(dropped, relu).model, relu_kept, feeds, threads, passes, log,
                            forget=lambda relu: forget_all_but((dropped, relu)))
    relu_kept += time_together(choice, lambda relu: build(dropped, relu).model, relu_kept, feeds, threads, passes,
                               log)
    forget_all_but((dropped, relu_kept))
    if _against_original(choice, original, build(dropped, relu_kept), feeds, threads, passes, probe_seconds, log):
        dropped, relu_kept = list(layers), []
    _write(choice, original, options, dropped, relu_kept if relu_candidates or reads else None)
    choice.seconds = time.perf_counter() - start
    return choice


def _write(choice: LatencyChoice, original: onnx.ModelProto, options: Options, dropped: list[str],
           relu_kept: list[str] | None) -> None:
    """Set the choice's options and compile its result: the early-exit layers ``dropped``
    left dense, and the plain-ReLU consumers ``relu_kept`` read sparsely (None: none was
    timed, and ``options`` decide)."""
    choice.options = skipping(options, dropped, [rw.candidate.layer for rw in choice.result.rewritten])
    choice.options.emit_stats = options.emit_stats
    if relu_kept is not None:  # the dropped ones then say why (passes/sparse_input.py)
        choice.options.sparse_relu, choice.options.sparse_relu_layers = "on", frozenset(relu_kept)
    if choice.reverted_all:
        choice.options.sparse_input = False  # the original exactly, even around early-exit ops it already has
    _say_why_dropped(choice, dropped)
    choice.result = optimize(original, choice.options)


def _against_original(choice: LatencyChoice, original: onnx.ModelProto, final: Built, feeds: list[dict],
                      threads: int, passes: int, probe_seconds: float, log) -> bool:
    """Step 4: whatever is still rewritten (the kept layers, and any consumer reading
    their output sparsely) must beat the original; True when it did not, and nothing is
    to be written. Sets the choice's two times either way."""
    if not final.changed:
        # The last whole-model comparison's dense side was the original model.
        whole = [t for t in choice.layers if not t.note]
        choice.original_ms = choice.optimized_ms = whole[-1].without_ms if whole else probe_seconds * 1e3
        return False
    log("timing the result against the original")
    choice.original_ms, choice.optimized_ms = time_pair(original, final.model, feeds, threads, passes,
                                                        sessions=session_pairs(original, final.model, SESSIONS))
    if choice.optimized_ms <= choice.original_ms * (1.0 - MARGIN):
        return False
    choice.reverted_all, choice.attempt_ms = True, choice.optimized_ms
    choice.optimized_ms = choice.original_ms
    return True


def _alone_row(choice: LatencyChoice, layer: str, alone: tuple[float, float] | None, kind: str,
               original_ms: float) -> LayerTiming | None:
    """The row of a rewrite decided on its time alone (ms rewritten, ms dense), without a
    whole-model timing of its own: not faster alone, or faster by too little
    (small_gains.py); None when it is to be timed in the model, or was not timed alone."""
    if alone is None:
        return None
    if alone[0] > alone[1] * (1.0 - (MARGIN if kind == EARLY_EXIT else ALONE_MARGIN)):
        return LayerTiming(layer, *alone, False, kind, "not faster alone")
    small = too_small(*alone, model_ms(choice, original_ms))
    return LayerTiming(layer, *alone, False, kind, small, small=True) if small else None


def seconds_per_run(model: onnx.ModelProto, feeds: list[dict], threads: int, source: str) -> float:
    """The original ``model``'s time per run, to size the passes and to set the bar for a
    rewrite too small to time (small_gains.py): the median of at least 3 runs (more, up to
    0.3 s) after one run on each feed, which allocates, pages in, and finds data the model
    cannot run on. A mean of two first runs was off by up to 10x on a 0.4 ms model."""
    try:
        session = timing_session(constant_weights(model), threads)
    except Exception as exc:
        raise original_unloadable(exc) from exc
    for feed in feeds:
        run(session, None, feed, source)
    times: list[float] = []
    while len(times) < 3 or (sum(times) < 0.3 and len(times) < 3 * len(feeds)):
        t0 = time.perf_counter()
        run(session, None, feeds[len(times) % len(feeds)], source)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _say_why_dropped(choice: LatencyChoice, dropped: list[str]) -> None:
    """Give each early-exit layer the objective reverted its reason, for --explain and the report."""
    for layer in dropped:
        t = next(t for t in choice.layers if t.layer == layer and t.kind == EARLY_EXIT)
        what = "the layer alone" if t.note else "the model"
        exact = choice.read_exactly(layer)
        why = ("the model was not faster than the original with the layers left"
               if choice.reverted_all and (t.kept or exact)
               else exact_reason(exact) if exact
               else t.note if t.note and (t.small or not t.without_ms)
               else f"{what} took {t.with_ms:.3f} ms with it rewritten and {t.without_ms:.3f} ms without")
        choice.options.layers[layer] = dataclasses.replace(choice.options.layers[layer],
                                                           skip_reason=f"objective latency: {why}")
