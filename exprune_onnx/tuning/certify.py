"""``--confidence``: a budget that holds on unseen data, by Learn-then-Test (docs/calibration.md).

1. Split the data (seeded) into a ladder part and a testing part (``--holdout`` share).
2. On the ladder part only, the budget search (search.py) fixes the per-layer allocation.
   The ladder is that allocation stepped down rung by rung (every layer one rung gentler
   each time) until nothing is left to prune, ordered from conservative to aggressive.
3. On the testing part, each rung's per-sample losses give an exact binomial p-value for
   H0 "risk > budget" (risk.py); walk the ladder while p <= 1 - confidence and keep the
   last rung that passed. A rung is abandoned mid-pass once its losses are past what
   could still pass. If none passes, the original model is written unchanged.

Losses per sample: with labels, 1[original right and optimised wrong] (its mean bounds the
accuracy drop from above); without, 1[top-1 changed]; for ``relerr``, 1[the sample's
relative error > the budget]. For outputs with several positions per sample (a language
model) a sample's loss is its share of such positions, tested by Hoeffding-Bentkus; with
labels, the positions are pooled over samples as accuracy pools them (risk.pooled_loss).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..compiler.pipeline import optimize
from ..errors import DataError
from ..io.data import Dataset
from ..measure.compare import counted_nodes, with_stats
from ..measure.counters import flops_saved
from ..measure.output_kinds import output_kinds
from ..measure.runs import as_array
from ..progress import quiet
from .label_layout import laid_out
from .metrics import (
    IGNORE,
    Score,
    agrees,
    answers,
    check_labels,
    predictions,
    sample_relative_errors,
    score,
)
from .risk import (
    Abandoned,
    RiskTest,
    Step,
    fixed_sequence,
    pooled_bound,
    pooled_loss,
    pooled_samples_needed,
    samples_needed,
)

# Rungs above the search's choice: the ladder part's point estimate is noisy, and a rung
# that fails on the testing part ends the walk after a partial pass at most.
ABOVE = 2
# Which loss each metric is certified with.
LOSS_NAMES = {"accuracy": "right answers lost", "lost": "right answers lost", "agreement": "top-1 changed",
              "relerr": "a sample's relative error over the budget"}


@dataclass
class Certificate:
    confidence: float
    budget: float
    loss: str  # what a loss is (LOSS_NAMES)
    test: str  # "exact binomial (Clopper-Pearson)" or "Hoeffding-Bentkus"
    samples: int  # testing samples
    needed: int  # the fewest testing samples that could certify the budget at all (0 losses)
    rungs: int  # candidates on the ladder, conservative first
    steps: list[Step] = field(default_factory=list)
    chosen: int = -1  # index of the rung written (-1: the original)
    losses: float = 0.0  # of the written model on the testing part
    bound: float = 0.0  # upper bound on its risk at this confidence
    share: float = 0.5  # the testing samples' share of the data (--holdout, less those with no label)
    repeats: int = 0  # samples that repeat earlier ones (distinct), each counted as a draw
    # Labelled positions pooled (several a sample): (lost, labelled) of the written model
    # on the testing part, and then `losses` is the total of the pooled test's statistic.
    positions: tuple[int, int] | None = None
    # The rung passed, but the exact model (zero-input reads only) timed faster and was
    # written instead (rung_or_exact.py): it loses nothing, within the rung's bound.
    exact_written: bool = False

    @property
    def enough(self) -> bool:
        return self.samples >= self.needed


def lost_positions(ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, its right answers lost and its labelled positions (an unlabelled
    position is never lost); one position a sample where the labels are one a sample."""
    want, answer = answers(ref, got)
    loss = (want == labels) & (answer != labels)
    rows = loss.shape[0]
    return loss.reshape(rows, -1).sum(1), (labels != IGNORE).reshape(rows, -1).sum(1)


def sample_losses(metric: str, ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None,
                  tolerance: float) -> np.ndarray:
    """One loss in [0, 1] per sample (module docstring), positions not pooled."""
    if metric in ("accuracy", "lost"):
        lost, labelled = lost_positions(ref, got, labels)
        return lost / np.maximum(labelled, 1)
    if metric == "agreement":
        loss = ~agrees(ref, got)
    else:
        loss = sample_relative_errors(ref, got) > tolerance
    loss = loss.astype(np.float64)
    return loss.reshape(loss.shape[0], -1).mean(1) if loss.ndim > 1 else loss


class Tester:
    """Runs compiled rungs on the testing part against the original, abandoning a rung
    as soon as its losses pass a limit."""

    def __init__(self, original: onnx.ModelProto, data: Dataset, indices: np.ndarray, batch: int, metric: str,
                 tolerance: float, progress=None, output: str = ""):
        from ..io.ir_version import runnable
        from ..runtime import inference_session
        from .runner import reference_output

        self.data, self.indices, self.batch, self.metric, self.tolerance = data, indices, batch, metric, tolerance
        self.output = output or original.graph.output[0].name
        self.progress = progress or (lambda rows: None)
        self.rows = 0  # samples run, the original's pass and abandoned rungs included
        session = inference_session(runnable(original))
        reference, self.batch_axis = reference_output(session, self.output, data, self._batches(), len(indices),
                                                      original)
        # A segmentation map's or yes/no labels, or a Sigmoid's yes/no answers (label_layout.py).
        kind = output_kinds(original).get(self.output)
        self.layout, self.reference, self.labels = laid_out(reference, data.labels, data.labels_of(indices), kind)
        self.last: tuple | None = None  # (got, counts) of the last rung run to the end
        # Labelled positions a sample can hold, where several are pooled (else 0), and the
        # last full rung's (lost, labelled) positions.
        self.scale = 0
        if metric in ("accuracy", "lost") and self.labels is not None and self.labels.ndim > 1:
            self.scale = int(np.prod(self.labels.shape[1:]))
        if self.scale == 1:  # a decode step's [N, 1]: one answer a sample, the binomial's
            self.scale = 0
        self.positions = (0, 0)

    def _batches(self):
        for feeds in self.data.batches(self.batch, self.indices):
            yield feeds
            rows = next(iter(feeds.values())).shape[0]
            self.rows += rows
            self.progress(rows)

    def binary(self) -> bool:
        """Whether each testing sample's loss is 0 or 1: one prediction a sample ([N], or a
        decode step's [N, 1]), or relerr's pass/fail."""
        if self.metric == "relerr":
            return True
        return predictions(self.reference).reshape(len(self.reference), -1).shape[1] == 1

    def losses(self, compiled: onnx.ModelProto, limit: float) -> float | Abandoned:
        """The rung's loss total, or Abandoned once it exceeds ``limit``."""
        from ..runtime import inference_session

        model, stats_names = with_stats(compiled)
        session = inference_session(model)
        names = [self.output] + list(stats_names.values())
        got, counts, total, start = [], {node: [0, 0] for node in stats_names}, 0.0, 0
        lost_all = labelled_all = 0
        for feeds in self._batches():
            outs = session.run(names, feeds)
            outs[0] = np.moveaxis(as_array(outs[0]), self.batch_axis, 0)  # as the reference's (runner.reference_output)
            # A fixed batch pads the last run (Dataset.batches): its pad rows are no samples.
            stop = min(start + outs[0].shape[0], len(self.reference))
            outs[0] = self.layout.scores(outs[0][:stop - start])
            labels = None if self.labels is None else self.labels[start:stop]
            ref, got_now = (self.layout.values(x, self.metric) for x in (self.reference[start:stop], outs[0]))
            if self.scale:
                lost, labelled = lost_positions(ref, got_now, labels)
                total += float(pooled_loss(lost, labelled, self.tolerance, self.scale).sum())
                lost_all, labelled_all = lost_all + int(lost.sum()), labelled_all + int(labelled.sum())
            else:
                total += float(sample_losses(self.metric, ref, got_now, labels, self.tolerance).sum())
            got.append(outs[0])
            for node, s in zip(stats_names, outs[1:]):
                counts[node][0] += int(s[0])
                counts[node][1] += int(s[1])
            start = stop
            if total > limit + 1e-9:
                return Abandoned(total)
        self.last = (np.concatenate(got), {k: tuple(v) for k, v in counts.items()})
        self.positions = (lost_all, labelled_all)
        return total

    def score(self) -> Score:
        ref, got = (self.layout.values(x, self.metric) for x in (self.reference, self.last[0]))
        return score(self.metric, ref, got, self.labels, self.layout.answer_kind,
                     self.tolerance if self.metric == "relerr" else None)


def ladder(shares: dict, step_down, above: int = ABOVE) -> list[dict]:
    """The chosen allocation, every step down from it and ``above`` steps up, conservative
    first; the rung that prunes nothing (every layer left alone) is the original, not a
    candidate. The rungs up cost a pass each only if every rung below passed."""
    rungs = [dict(shares)]
    while any(isinstance(v, float) for v in rungs[-1].values()):
        rungs.append(step_down(rungs[-1]))
    if all(v is None for v in rungs[-1].values()):
        rungs.pop()
    rungs = rungs[::-1]
    for _ in range(above if rungs else 0):
        up = step_up(rungs[-1])
        if up == rungs[-1]:
            break
        rungs.append(up)
    return rungs


def step_up(shares: dict) -> dict:
    """Every tuned layer one rung more aggressive (the top rung stays); others as they are."""
    from .ladder import LADDER

    return {layer: LADDER[min(LADDER.index(v) + 1, len(LADDER) - 1)] if isinstance(v, float) else v
            for layer, v in shares.items()}


def subset(data: Dataset, indices: np.ndarray) -> Dataset:
    """The samples at ``indices``; the scalar inputs and the model's fixed batch come along."""
    shared = {**data.shared, **{k: np.take(data.shared[k], indices, axis=axis) for k, axis in data.shared_axes.items()}}
    return dataclasses.replace(data, inputs={k: v[indices] for k, v in data.inputs.items()}, shared=shared,
                               labels=data.labels_of(indices))


def distinct(data: Dataset) -> np.ndarray:
    """The first of each set of identical samples (every batched input equal, labels aside):
    to count the repeats (``repeats_note``) and to look for near copies among the others."""
    seen, keep = set(), []
    names = sorted(data.inputs)
    states = sorted(data.shared_axes.items())  # a recurrent state is the sample's too (silent chunks differ by it)
    for i in range(len(data)):
        digest = hashlib.blake2b(digest_size=16)
        for name in names:
            digest.update(np.ascontiguousarray(data.inputs[name][i]).tobytes())
        for name, axis in states:
            digest.update(np.ascontiguousarray(np.take(data.shared[name], i, axis=axis)).tobytes())
        key = digest.digest()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def repeats_note(data: Dataset, held: int, certified: bool = False) -> list[str]:
    """Repeated samples, which count as draws: under the promise's assumption (independent
    draws from the data in use) an input that recurs in use recurs in the data, and leaving
    its repeats out certified the other inputs alone (a review: a test image making up 40%
    of the data, counted once, certified 0.85% where 40% of right answers were lost). A
    copy made in preparing the data is no new draw, and a copy on each side of the split
    is a testing sample the search saw: that is what the warning is for."""
    repeats = len(data) - len(distinct(data)) if held else 0
    if not repeats:
        return []
    which = "the held-out check and the certificate count" if certified else "the held-out check counts"
    return [f"{repeats} of the {len(data)} calibration samples repeat earlier ones: {which} each as a new draw, as "
            "an input that recurs in use should be; where they are copies made in preparing the data (a file saved "
            "twice, one image given many times), the split puts copies of what the search saw in the held-out "
            "part, and the promise is overstated: give each input once"]


def check_enough(data: Dataset, max_drop: float, holdout: float, seed: int, confidence: float) -> None:
    """Refuse data whose testing part could not certify ``max_drop`` even with no loss at
    all: known from the counts alone, before the search's minutes (the search itself, as
    the benchmarks run it, writes the original and says so in its table)."""
    from .search import split_indices

    testing = len(split_indices(len(data), holdout, seed)[1])
    least = samples_needed(max_drop, confidence)  # the fewest: pooled over positions, as many or more
    if 0 < testing < least:
        from ..report.certificate import too_small

        raise DataError("the calibration data is " + too_small(max_drop, confidence, least, testing,
                                                                fewest_samples(least, holdout)))


def fewest_samples(testing: int, holdout: float) -> int:
    """The fewest samples whose held-out share (split_indices rounds it) is ``testing``
    samples or more, leaving one to calibrate on: 459 at a half gives 230, where 2 * 230
    said 460."""
    if testing > 2**50:  # past float's exact integers: the count is printed as "about" anyway
        return math.ceil(testing / holdout)
    count = max(1, math.floor((testing - 0.5) / holdout))
    while round(count * holdout) < testing or round(count * holdout) >= count:
        count += 1
    return count


def certified_search(original: onnx.ModelProto, base, data: Dataset, *, metric: str, max_drop: float,
                     holdout: float, seed: int, batch: int, confidence: float, log=quiet, **search_args):
    """search.search with ``confidence`` > 0 (module docstring); returns its Outcome with
    ``certificate`` set."""
    from .ladder import step_down
    from .search import search, split_indices

    if holdout <= 0:
        raise DataError("--confidence tests the ladder on a part the search never sees: --holdout must be > 0")
    if max_drop <= 0:
        raise DataError("a budget of 0 cannot be certified from samples: give a budget > 0 or confidence 0")
    start = time.perf_counter()
    ladder_idx, test_idx = split_indices(len(data), holdout, seed)
    if len(test_idx) == 0:
        raise DataError(f"{len(data)} samples leave none to test on at --holdout {holdout:g}")
    plain = copy.deepcopy(base)
    plain.confidence = 0.0
    outcome = search(original, plain, subset(data, ladder_idx), metric=metric, max_drop=max_drop, holdout=0.0,
                     seed=seed, batch=batch, log=log, certifying=True, **search_args)
    rungs = ladder(outcome.shares, step_down)
    testing = len(test_idx)
    test_idx = _labelled(outcome.metric, data, test_idx)
    tester, finals = None, {}  # finals: rung -> (outputs, counters) of the rungs run to the end

    def progress(rows):
        passes = (outcome.passes * len(ladder_idx) + tester.rows) / len(data) if tester else 0.0
        log(f"testing rung {len(finals) + 1} of {len(rungs)} on {len(test_idx)} samples the search never saw, "
            f"{passes:.1f} passes over the data")

    tester = Tester(original, data, test_idx, batch, outcome.metric, max_drop, progress, outcome.output)
    if outcome.metric in ("accuracy", "lost"):  # the search checked the ladder part's labels only
        check_labels(tester.labels, tester.reference)
    test = RiskTest(len(test_idx), max_drop, confidence, tester.binary())
    loss = LOSS_NAMES[outcome.metric]
    if outcome.metric == "agreement" and tester.layout.answer_kind == "yes/no":
        loss = "yes/no answers changed"  # a sample's loss: its share of them
    needed = samples_needed(max_drop, confidence)
    if tester.scale:
        loss += ", pooled over labelled positions"
        fill = float((tester.labels != IGNORE).sum()) / (len(test_idx) * tester.scale)
        needed = pooled_samples_needed(max_drop, confidence, fill)
    cert = Certificate(confidence, max_drop, loss,
                       "exact binomial (Clopper-Pearson)" if test.binary else "Hoeffding-Bentkus",
                       len(test_idx), needed, len(rungs), share=holdout * len(test_idx) / testing,
                       repeats=len(data) - len(distinct(data)))

    def rung_losses(i, limit):
        compiled = optimize(original, outcome.rung_options(rungs[i])).model
        found = tester.losses(compiled, limit)
        if not isinstance(found, Abandoned):
            finals[i] = tester.last, tester.positions
        return found

    cert.chosen, cert.steps = fixed_sequence(len(rungs), rung_losses, test)
    shares = rungs[cert.chosen] if cert.chosen >= 0 else dict.fromkeys(outcome.shares)
    if cert.chosen < 0:  # not the budget's doing: the testing part certified no rung
        why = ("too few testing samples to certify the budget" if not cert.enough
               else "no rung passed the test on the testing part")
        for layer in outcome.shares:
            outcome.planner.skip_reasons.setdefault(layer, f"calibration: {why} (the calibration table says more)")
    options = outcome.rung_options(shares)
    result = optimize(original, options)
    latency = search_args.get("latency")
    if latency is not None and shares != outcome.shares:
        options, result = _retime(original, outcome, shares, data, ladder_idx, latency, seed, log)
    if cert.chosen >= 0:
        (got, counts), positions = finals[cert.chosen]
        tester.last = (got, counts)
        cert.losses = float(cert.steps[cert.chosen].losses)
        cert.positions = positions if tester.scale else None
    if cert.chosen < 0 or outcome.latency is not None and outcome.latency.reverted_all:  # no pruning layer written
        tester.last, counts = (tester.reference, {}), {}
    if set(counts) != counted_nodes(result.model):
        # Not the model tested: exact rewrites without a rung, or a rung timed again (other
        # zero-input reads, or the original): measured as written, on the same testing part.
        tester.losses(result.model, math.inf)
        counts = tester.last[1]
    saved = _saved(result, counts, len(test_idx))
    cert.bound = test.bound(cert.losses)
    if cert.positions is not None:
        cert.bound = pooled_bound(*cert.positions, len(test_idx), tester.scale, confidence)
    cert.exact_written = outcome.latency is not None and outcome.latency.over_rung
    outcome.certificate = cert
    outcome.options, outcome.result, outcome.shares = options, result, shares
    outcome.holdout, outcome.saved_holdout, outcome.counts_holdout = tester.score(), saved, counts
    outcome.split, outcome.met = (len(ladder_idx), len(test_idx)), True  # the original is always within budget
    outcome.tested = test_idx
    outcome.passes = (outcome.passes * len(ladder_idx) + tester.rows) / len(data)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _saved(result, counts: dict, samples: int) -> float:
    """The share of the written model's dense FLOPs its ops skipped on ``samples`` samples."""
    return flops_saved(result.model, counts) / samples / result.dense_flops if counts and result.dense_flops else 0.0


def _labelled(metric: str, data: Dataset, indices: np.ndarray) -> np.ndarray:
    """The testing samples that can lose a right answer: a sample whose labels are all
    -100 has none, and counted as loss-free it would thin out the losses the bound is on."""
    if metric not in ("accuracy", "lost") or data.labels is None:
        return indices
    labels = data.labels_of(indices)
    kept = indices[(labels != IGNORE).reshape(len(indices), -1).any(1)]
    if not len(kept):
        raise DataError(f"every label of the {len(indices)} testing samples is {IGNORE} (no label): there is "
                        "nothing to certify the budget on")
    return kept


def _retime(original, outcome, shares: dict, data: Dataset, indices: np.ndarray, latency: tuple[int, int],
            seed: int, log):
    """The latency objective once more, on the gentler rung that is written: it timed the
    search's allocation, where a layer may have read an early-exit op's zeros that are
    now a plain ReLU's (a VGG's first classifier layer behind its last conv). The rung's
    early-exit layers stay as certified, all or none: only exact zero-input reads are
    decided again, and then the rung against the exact model (rung_or_exact.py), so the
    certificate stands. Sets ``outcome.latency``; returns the options and result."""
    from .objective import choose
    from .rung_or_exact import rung_or_exact

    options = outcome.planner.options(shares)  # without the first timing's zero-input choice
    timed = choose(original, options, optimize(original, options), data, batch=latency[0], threads=latency[1],
                   indices=indices, source=f"{len(indices)} calibration samples", seed=seed, log=log,
                   early_exit=False)
    timed = rung_or_exact(original, timed, data, indices, seed=seed, log=log)
    outcome.latency = timed
    return timed.options, timed.result
