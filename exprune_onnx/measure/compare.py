"""Running the original and the optimised model side by side on the same inputs.

The optimised model is run with every early-exit op's ``stats`` output exposed, so
the pruning it reports is counted by the op itself, not estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from .. import ops
from ..errors import DataError, RuntimeCheckError, error_message, original_failed, original_unloadable
from ..io.data import Dataset
from ..tuning.label_layout import Layout, layout_of
from ..tuning.metrics import (
    IGNORE,
    abs_diff,
    agrees,
    answers,
    check_labels,
    finite_abs,
    is_classifier_output,
    is_scores,
    labelled_mean,
    prediction_shape,
    relative_error,
    sample_relative_errors,
    top1_agreement,
)
from .nan_outputs import has_nan, refuse_nan
from .output_kinds import output_kinds
from .runs import PerRun, as_array, joined


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float
    top1_agreement: float | None  # for [N, classes] outputs, and class indices
    index: bool = False  # an integer output (class indices): only agreement means something
    # An output whose first axis is not the batch (NonMaxSuppression's [K, 3]) is compared
    # run by run: (runs where its shape differs from the original's, runs). The figures
    # above are then over the runs where it agrees.
    runs: tuple[int, int] | None = None
    answer_kind: str = "top-1"  # what top1_agreement counts: the top-1 class, or a Sigmoid's yes/no answers
    # Float values: mean |difference| over mean |original| (calibration's relerr), and each
    # sample's (first axis), which verify holds a certified relerr budget to; not in reports.
    mean_rel: float | None = None
    sample_rel: np.ndarray | None = field(default=None, repr=False)
    # Class scores that changed answers: how many classes the original's answers take (not in reports).
    classes: int | None = None

    def as_json(self) -> dict:
        """For reports: no per-sample array, and no answer kind where no answers were counted."""
        out = {k: v for k, v in vars(self).items() if k not in ("sample_rel", "classes")}
        return out | ({"answer_kind": None} if self.top1_agreement is None else {})


@dataclass
class CheckResult:
    samples: int
    source: str
    outputs: list[OutputDiff]
    # op node -> (pruned, total); for a sparse conv (non-zero inputs read, inputs)
    pruned: dict[str, tuple[int, int]] = field(default_factory=dict)
    accuracy: tuple[float, float] | None = None  # (original, optimised) when labels are given
    rows: int = 0  # rows the ops counted: samples plus the pad of a fixed batch's last run (data.py)
    labelled: bool = False  # labels were given (accuracy is None when no output could take them)
    lost: float | None = None  # with accuracy: the share of labelled answers right before and wrong after
    # The original's own counts, where it was rewritten before: what it skips already.
    pruned_original: dict[str, tuple[int, int]] = field(default_factory=dict)


def _counts(node: onnx.NodeProto) -> bool:
    # A sparse matmul or conv counts the inputs it read (measure/counters.py).
    return node.domain == ops.DOMAIN and node.op_type in ops.ALL_OPS


def counted_nodes(model: onnx.ModelProto) -> set[str]:
    """The outer-graph nodes whose counts ``with_stats`` exposes."""
    return {node.name for node in model.graph.node if _counts(node)}


def with_stats(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy whose outer-graph early-exit ops expose ``stats``; returns it and node -> output."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    exposed = {o.name for o in out.graph.output}
    mapping = {}
    for node in out.graph.node:
        if not _counts(node):
            continue
        if len(node.output) < 2:
            node.output.append(f"{node.name}__stats")
        mapping[node.name] = node.output[1]
        if node.output[1] not in exposed:
            out.graph.output.append(onnx.helper.make_tensor_value_info(node.output[1], onnx.TensorProto.INT64, [2]))
    return out, mapping


def compare(original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, *,
            indices: np.ndarray | None = None, batch: int = 64, threads: int | None = None, labelled: str = "",
            unlabelled: str = "", class_axes: dict[str, int] | None = None,
            log=lambda text, done=None, total=None: None) -> CheckResult:
    """Run both models on ``data`` (or the samples at ``indices``) and compare the outputs;
    the labels score ``labelled`` (--score-output) if named, else the output they fit,
    ``unlabelled`` (an output scored by a metric without labels) only if no other;
    ``class_axes``: outputs known to be maps of classes on that axis, answered per position
    where no labels say so (a calibration's stamp: verify/agreement.py); ``log`` is a
    progress hook (progress.py)."""
    from ..io.bigmodel import serializable
    from ..runtime import inference_session

    if not (serializable(original) and serializable(optimized)):
        raise RuntimeCheckError("the model is over 2 GB, which the check cannot hand to onnxruntime from memory "
                                "yet; --no-check skips the comparison")
    stats_model, stats_names = with_stats(optimized)
    # A copy only where the original holds counting ops (it was rewritten before).
    ref_model, ref_stats = with_stats(original) if counted_nodes(original) else (original, {})
    try:
        ref = inference_session(ref_model)
    except Exception as exc:
        raise original_unloadable(exc) from exc
    try:
        opt = inference_session(stats_model, threads=threads)
    except Exception as exc:
        raise RuntimeCheckError(f"onnxruntime could not load the optimised model: {error_message(exc)}") from exc
    names = tensor_outputs(original)
    samples = len(data) if indices is None else len(indices)
    try:
        got_ref, pruned_ref = run_counting(ref, names, ref_stats, data.batches(batch, indices), samples,
                                           lambda done: log("checking: the original", done, samples), per_run=True,
                                           key=next(iter(data.inputs)))
    except Exception as exc:
        raise original_failed(data.source, exc) from exc
    if names and all(has_nan(got_ref[n]) for n in names):
        refuse_nan(names[0], got_ref[names[0]], data.source, original, samples)  # nothing the check could compare
    try:
        got_opt, pruned = run_counting(opt, names, stats_names, data.batches(batch, indices), samples,
                                       lambda done: log("checking: the optimised model", done, samples), per_run=True,
                                       key=next(iter(data.inputs)))
    except Exception as exc:
        raise RuntimeCheckError(f"onnxruntime failed to run the optimised model: {error_message(exc)}") from exc
    labels = data.labels_of(indices)
    kinds = output_kinds(original)
    pairs = {n: joined(got_ref[n], got_opt[n], samples) for n in names}
    target = None if labels is None else _labelled_output(pairs, kinds, labels, prefer=labelled, avoid=unlabelled)
    if target is not None:
        refuse_nan(target, got_ref[target], data.source, original, samples)  # NaN rows would count as answers
    diffs = []
    accuracy = lost = None
    for n, (a, b) in pairs.items():
        if isinstance(a, PerRun):
            diffs.append(_diff_runs(n, a, b))
            continue
        if n != target:
            axis = (class_axes or {}).get(n)
            known = Layout(axis=axis) if axis is not None and a.ndim >= 3 and a.dtype.kind == "f" else None
            diffs.append(_diff(n, a, b, kinds.get(n), known))
            continue
        # Labels mean classes, whatever the graph seemed to show; read as a segmentation map's
        # or yes/no answers, the scores give the answers, the values the differences.
        layout = layout_of(a, labels)
        a_scored, b_scored = layout.scores(a), layout.scores(b)
        labels = layout.labels(labels)
        d = _diff(n, a, b, None)
        d = d if layout.plain else _answered(d, layout, a_scored, b_scored)
        check_labels(labels, a_scored)
        if d.top1_agreement is not None and _unlabelled_positions(labels, a_scored):
            # A padding or prompt position is no answer of the model's: agreement counts as accuracy does.
            d.top1_agreement = labelled_mean(agrees(a_scored, b_scored), labels)
        diffs.append(d)
        want, answer = answers(a_scored, b_scored)
        accuracy = (labelled_mean(want == labels, labels), labelled_mean(answer == labels, labels))
        lost = labelled_mean((want == labels) & (answer != labels), labels)
    return CheckResult(samples, data.source, diffs, pruned, accuracy, data.rows_run(samples), labels is not None, lost,
                       pruned_ref)


def _unlabelled_positions(labels: np.ndarray, scored: np.ndarray) -> bool:
    return (labels.dtype.kind in "iu" and labels.shape == prediction_shape(scored) and labels.ndim > 1
            and bool((labels == IGNORE).any()))


def _labelled_output(pairs: dict, kinds: dict, labels: np.ndarray, prefer: str = "",
                     every: np.ndarray | None = None, avoid: str = "") -> str | None:
    """The output labels are for: ``prefer`` (--score-output) if they fit it; else of the
    outputs they fit (a label per prediction within its classes, or a layout
    label_layout.py reads) and not TopK's, the first the graph reads as classes, else the
    first. When they fit none: the first output read as classes (check_labels then says
    why they do not fit it). ``every``: all the labels, when ``labels`` are the first
    rows' (their classes must fit too); ``avoid``: taken only where no other output fits."""
    batched = [n for n, (a, _b) in pairs.items() if not isinstance(a, PerRun)]
    known = (labels if every is None else every)
    known = known[known != IGNORE] if known.dtype.kind in "iuf" else known
    top = known.max(initial=0) if known.dtype.kind in "iuf" else None

    def fits(n: str) -> bool:  # in shape and in classes: [N] labels of 5 classes do not fit a [N, 4]
        a = pairs[n][0]
        if is_classifier_output(a) and prediction_shape(a) == labels.shape:
            try:
                check_labels(labels, a)
            except DataError:
                return False
            return not is_scores(a) or top is None or top < a.shape[-1]
        return not layout_of(a, labels).plain

    def read_as_classes(n: str) -> bool:
        return is_classifier_output(pairs[n][0], kinds.get(n))

    if prefer in batched and fits(prefer):
        return prefer
    fitting = [n for n in batched if kinds.get(n) != "topk" and fits(n)]
    fitting = [n for n in fitting if n != avoid] or fitting
    if fitting:
        return next((n for n in fitting if read_as_classes(n)), fitting[0])
    shaped = [n for n in batched if is_classifier_output(pairs[n][0])]
    return next((n for n in shaped if read_as_classes(n)), next((n for n in shaped if kinds.get(n) != "topk"), None))


def tensor_outputs(model: onnx.ModelProto) -> list[str]:
    """The graph outputs the comparisons read: tensors, and a sequence of maps to floats
    (skl2onnx's ZipMap of class probabilities), read as [N, classes] in the keys' order
    (``as_array``). Other sequences and maps are left out."""
    def readable(t: onnx.TypeProto) -> bool:
        if t.HasField("tensor_type"):
            return True
        elem = t.sequence_type.elem_type if t.HasField("sequence_type") else None
        return elem is not None and elem.HasField("map_type") and \
            elem.map_type.value_type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)

    return [o.name for o in model.graph.output if readable(o.type)]


def output_for_labels(model: onnx.ModelProto, data: Dataset, batch: int = 8) -> str | None:
    """The output ``data``'s labels are for (``_labelled_output``), read off one run of
    the first samples: calibration scores it when no --score-output names one."""
    from ..runtime import inference_session

    rows = data.batch or min(batch, len(data))
    feeds = next(iter(data.batches(rows, np.arange(min(rows, len(data))))))
    names = tensor_outputs(model)
    try:
        outs = [as_array(o) for o in inference_session(model).run(names, feeds)]
    except Exception as exc:
        raise original_failed(data.source, exc) from exc
    labels = data.labels[:min(rows, len(data))]
    pairs = {n: (o, o) for n, o in zip(names, outs) if o.ndim and o.shape[0] == len(labels)}
    return _labelled_output(pairs, output_kinds(model), labels, every=data.labels)


def run_counting(session, names: list[str], stats_names: dict[str, str], batches, samples: int | None = None,
                 done=None, per_run: bool = False, key: str | None = None, moved: dict | None = None):
    """``names`` concatenated over ``batches`` (cut to the first ``samples`` rows: a fixed
    batch pads the last run, data.Dataset.batches), and each early-exit op's summed
    [pruned, total]. ``done(rows)`` is called after each batch with the rows run so far.
    An output with its batch on another axis (PyTorch's sequence-first [T, N, C]) has it
    moved first (``batch_axis``; ``moved`` gets name -> that axis). With ``per_run`` every
    output is a PerRun, to pair with another model's (``joined``); without, an output
    with no batch axis is an error: it has no rows to take per sample. ``key`` names an
    input with a batch axis (Dataset.inputs), whose rows are the run's (default: the first
    feed)."""
    rows, run_rows_seen = 0, []
    got: dict[str, list] = {n: [] for n in names}
    counts = {node: [0, 0] for node in stats_names}
    batched = dict.fromkeys(names, True)
    for feeds in batches:
        outs = session.run(names + list(stats_names.values()), feeds)
        first = feeds[key] if key is not None else next(iter(feeds.values()), None)
        run_rows = first.shape[0] if first is not None and first.ndim else 0
        for n, o in zip(names, map(as_array, outs)):
            got[n].append(o)
            batched[n] &= bool(o.ndim) and o.shape[0] == run_rows
        for node, s in zip(stats_names, outs[len(names):]):
            counts[node][0] += int(s[0])
            counts[node][1] += int(s[1])
        rows += run_rows
        run_rows_seen.append(run_rows)
        if done is not None:
            done(min(rows, samples or rows))
    declared = {o.name: o.shape for o in session.get_outputs()}
    for n in [n for n in names if not batched[n]]:
        axis = batch_axis(got[n], run_rows_seen, declared.get(n))
        if axis is not None:
            got[n], batched[n] = [np.moveaxis(o, axis, 0) for o in got[n]], True
            if moved is not None:
                moved[n] = axis
    unbatched = [n for n in names if not batched[n]]
    if unbatched and not per_run:
        raise DataError(f"output '{unbatched[0]}' has no batch axis (no dim is the number of samples run in every "
                        "run, e.g. a detection count), so it cannot be scored sample by sample")
    outputs = {}
    for n, v in got.items():
        if per_run:
            outputs[n] = PerRun(v)
            outputs[n].batched = batched[n]
        else:
            outputs[n] = np.concatenate(v)[:samples]
    return outputs, {k: tuple(v) for k, v in counts.items()}


def batch_axis(runs: list, rows: list[int], declared: list | None = None) -> int | None:
    """The one axis after the first that holds each run's samples, in every run of more
    than one sample (an axis of 1 would match any), where the model declares no fixed size
    (NonMaxSuppression's [K, 3] at batch 3 is no batch), and the runs then join; or None."""
    axes = None
    for o, n in zip(runs, rows):
        if n > 1:
            here = {i for i in range(1, o.ndim) if o.shape[i] == n}
            axes = here if axes is None else axes & here
    if axes is None or len(axes) != 1:
        return None
    axis = next(iter(axes))
    if declared is not None and len(declared) > axis and isinstance(declared[axis], int):
        return None
    rest = {o.shape[:axis] + o.shape[axis + 1:] for o in runs if o.ndim > axis}
    return axis if len(rest) == 1 and all(o.ndim > axis for o in runs) else None


def _diff_runs(name: str, a: list, b: list) -> OutputDiff:
    """``a`` and ``b`` compared run by run (PerRun): the figures over the runs whose shapes agree."""
    agree = [(x, y) for x, y in zip(a, b) if x.shape == y.shape and x.dtype == y.dtype]
    runs = (len(a) - len(agree), len(a))
    if not agree:
        return OutputDiff(name, math.inf, math.inf, None, index=a[0].dtype.kind != "f", runs=runs)
    flat_a, flat_b = (np.concatenate([x.reshape(-1) for x in side]) for side in zip(*agree))
    if flat_a.dtype.kind != "f":
        same = float(np.mean(flat_a == flat_b)) if flat_a.size else 1.0
        return OutputDiff(name, float(np.max(np.abs(flat_a.astype(np.float64) - flat_b), initial=0.0)), 0.0, same,
                          index=True, runs=runs)
    d = _diff(name, flat_a, flat_b)
    return OutputDiff(name, d.max_abs, d.max_rel, None, runs=runs)


def _answered(d: OutputDiff, layout, a_scored: np.ndarray, b_scored: np.ndarray) -> OutputDiff:
    """``d`` with its agreement counted on the answers ``layout`` reads (a map's positions,
    yes/no), not on the raw values' arg-max."""
    d.top1_agreement, d.answer_kind = top1_agreement(a_scored, b_scored), layout.answer_kind
    return d


def _diff(name: str, a: np.ndarray, b: np.ndarray, kind: str | None = None, layout=None) -> OutputDiff:
    """``b`` against ``a``; top-1 agreement where ``a`` holds class scores, yes/no agreement
    where it holds a Sigmoid's (``kind``: output_kinds.py); ``layout``, where known (a map's
    class axis that a calibration stamped), instead of the one the output's shape suggests."""
    if a.dtype.kind == "f" and b.dtype.kind in "iu" and is_scores(a) and b.size * a.shape[-1] == a.size:
        a, b = answers(a, b)  # --argmax-only: the scores became the class index
    layout = layout or layout_of(a, None, kind)
    if not layout.plain and a.shape == b.shape:  # a Sigmoid's yes/no answers, a pooled [N, C, 1, 1]'s class
        return _answered(_diff(name, a, b, "values"), layout, layout.scores(a), layout.scores(b))
    if a.dtype.kind != "f":
        same = float(np.mean(a == b)) if a.size else 1.0
        return OutputDiff(name, float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0, 0.0, same,
                          index=True)
    err = abs_diff(a, b)
    max_abs = float(err.max()) if err.size else 0.0
    scale = float(finite_abs(a).max()) if a.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    top1 = top1_agreement(a, b) if is_scores(a, kind) and not np.isnan(a).any() else None  # NaN has no arg-max
    classes = int(np.unique(a.argmax(-1)).size) if top1 is not None and top1 < 1.0 else None
    return OutputDiff(name, max_abs, max_rel, top1, mean_rel=relative_error(a, b) if a.size else None,
                      sample_rel=sample_relative_errors(a, b) if a.ndim and a.size else None, classes=classes)
