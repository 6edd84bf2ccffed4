"""End-to-end quality metrics: how much worse the optimised model is than the original.

Every metric reports a *drop* (>= 0 is worse) that ``--max-drop`` bounds:

* ``accuracy`` (needs labels): top-1 accuracy of the original minus the optimised, the
  paper's measure; for [N, T, C] scores (a language model) the labels are [N, T] and
  every position counts but those labelled -100 (Hugging Face's ignore index); a
  segmentation map's [N, H, W] labels and multi-hot labels are read into that form
  (label_layout.py);
* ``lost`` (needs labels): the share of samples the original got right and the
  optimised gets wrong, not offset by samples it newly gets right: an upper bound on
  the accuracy drop, stricter and steadier across data splits;
* ``agreement`` (classifiers without labels): the share of samples whose top-1 class
  changed (of yes/no answers changed, for a Sigmoid's: label_layout.py);
* ``relerr`` (any output): mean |optimised - original| / mean |original| over the
  first output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError, LabelError

METRICS = ("auto", "accuracy", "lost", "agreement", "relerr")
LABELLED = ("accuracy", "lost")  # the metrics that need labels
# Hugging Face's ignore_index: a position that has no label (padding, a prompt token).
# Accuracy and losses are over the labelled positions only.
IGNORE = -100


@dataclass
class Score:
    metric: str
    original: float  # the metric's own value for the original (1.0 for agreement, 0.0 for relerr)
    optimized: float
    drop: float
    answer_kind: str = "top-1"  # what agreement counts (label_layout.Layout.answer_kind)
    over: float | None = None  # relerr: drop is the share of samples whose relative error is over this


def is_class_index(a: np.ndarray) -> bool:
    """Integer class indices: one per sample, [N] or [N, 1] (an arg-max head's output), or
    one per position of a map, [N, H, W] or with the kept class axis [N, 1, H, W] (a
    segmentation's arg-max mask, keepdim or not); [N, T, 1] is one per position too. An
    [N, k] and integer maps of more channels are left to be values: k ids (TopK's),
    integer coordinates, an 8-bit image."""
    if a.dtype.kind not in "iu":
        return False
    return a.ndim in (1, 3) or (a.ndim == 2 and a.shape[1] == 1) or (a.ndim in (4, 5) and a.shape[1] == 1)


def _index_shape(a: np.ndarray) -> tuple:
    """The shape of class indices ``a`` as predictions, the kept size-1 class axis dropped."""
    if a.ndim in (2, 3) and a.shape[-1] == 1:
        return a.shape[:-1]
    return a.shape[:1] + a.shape[2:] if a.ndim in (4, 5) else a.shape


def is_scores(a: np.ndarray, kind: str | None = None) -> bool:
    """Class scores on the last axis: [N, C], or [N, T, C] for a prediction per position.
    Four axes or more are maps (an NCHW segmentation's classes are axis 1): compared by
    their values only. ``kind`` is what the graph says made the output
    (measure/output_kinds.py; None: not asked): TopK's sorted values and ``values``
    (boxes, features) are no scores whatever their shape."""
    return a.ndim in (2, 3) and a.shape[-1] > 1 and a.dtype.kind == "f" and kind not in ("topk", "values")


def agrees(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per prediction: whether ``got`` answers as ``ref`` does. The same class, or, for
    scores, a class ``ref`` ranks first too: where its top scores tie exactly (a blank
    input, a dead row) any of them is its answer, so float rounding in ``got`` is no
    changed answer."""
    want, answer = answers(ref, got)
    same = want == answer
    if is_scores(ref) and got.shape == ref.shape:
        pick = got.argmax(-1)[..., None]
        same |= (np.take_along_axis(ref, pick, -1)[..., 0] == ref.max(-1)) & (answer >= 0)
    return same


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """The share of predictions on which ``got`` agrees with ``ref`` (``agrees``)."""
    return float(np.mean(agrees(ref, got))) if ref.size else 1.0


def is_classifier_output(a: np.ndarray, kind: str | None = None) -> bool:
    return is_scores(a, kind) or is_class_index(a)


def predictions(a: np.ndarray) -> np.ndarray:
    """The predicted class per sample (or per sample and position): the arg-max of
    scores, or the index itself."""
    return a.reshape(_index_shape(a)).astype(np.int64) if is_class_index(a) else a.argmax(-1)


def answers(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The predictions of ``ref`` and of ``got`` in the same shape. ``got`` may hold the
    class indices of ``ref``'s scores (--argmax-only): [B, T] or [B, T, 1] for [B, T, V]
    scores, [B] or [B, 1] for [B, V]. Scores of ``got`` holding a NaN where ``ref``'s hold
    none answer -1, no class: arg-max takes the first NaN, and a row of NaN answered
    class 0, agreeing with an original that answered 0."""
    want = predictions(ref)
    if got.dtype.kind in "iu" and ref.dtype.kind == "f" and got.size == want.size:
        return want, got.reshape(want.shape).astype(np.int64)
    answer = predictions(got)
    if got.dtype.kind == "f" and ref.dtype.kind == "f" and got.shape == ref.shape:
        answer = np.where(np.isnan(got).any(-1) & ~np.isnan(ref).any(-1), -1, answer)
    return want, answer


def prediction_shape(output: np.ndarray) -> tuple:
    """``predictions(output).shape``, without computing them."""
    return _index_shape(output) if is_class_index(output) else output.shape[:-1]


def check_labels(labels: np.ndarray, output: np.ndarray) -> None:
    """Raise LabelError unless ``labels`` hold one class of ``output`` (a classifier's output)
    for each of its predictions: any other label would count as wrong before and after,
    so no answer could ever be lost."""
    want = prediction_shape(output)
    if labels.shape != want:
        # N for a sample count that agrees: the labels checked may be one part of those given (the search's).
        n = "N" if labels.shape[:1] == want[:1] and labels.ndim and len(want) else None
        shapes = [list(labels.shape), list(want)] if n is None else [[n, *labels.shape[1:]], [n, *want[1:]]]
        shapes = [f"[{', '.join(str(d) for d in shape)}]" for shape in shapes]
        raise LabelError(f"the labels have shape {shapes[0]}, the model's predictions {shapes[1]}"
                        f"{' (N samples)' if n else ''}: give one class index per prediction (for one-hot labels, "
                        "their arg-max)")
    kind = labels.dtype.kind
    # ~isfinite: inf is no whole number either (np.mod of it warned 'invalid value' before the error)
    odd = None if kind in "iu" else (~np.isfinite(labels) | (np.mod(np.nan_to_num(labels), 1) != 0)) \
        if kind == "f" else np.ones(labels.shape, bool)
    if odd is not None and odd.any():  # NaN is odd too
        raise LabelError(f"the labels must be whole class indices; found {labels[odd][0].item()!r} ({labels.dtype})")
    classes = output.shape[-1] if is_scores(output) else None
    labelled = labels[labels != IGNORE]
    if labels.size and not labelled.size:
        raise LabelError(f"every label is {IGNORE} (Hugging Face's ignore index): there is nothing to score")
    low, high = labelled.min(initial=0), labelled.max(initial=0)
    if low < 0 or (classes is not None and high >= classes):
        unlabelled = f"; mark a position with no label {IGNORE}" if labels.ndim > 1 else ""
        raise LabelError(f"label {low if low < 0 else high:g} is not a class of the model's output "
                        f"({'its classes are 0 to ' + str(classes - 1) if classes else 'classes are >= 0'}"
                        f"{unlabelled})")


def labelled_mean(hits: np.ndarray, labels: np.ndarray) -> float:
    """The share of ``hits`` among the labelled predictions (``IGNORE`` left out)."""
    labelled = labels != IGNORE
    return float(np.mean(hits[labelled])) if labelled.any() else 0.0


def choose(metric: str, first_output: np.ndarray, labels: np.ndarray | None, kind: str | None = None) -> str:
    """Resolve ``auto``: accuracy with labels, agreement for classifiers, else relative
    error. ``kind`` is what the graph says made the output (``is_scores``): it decides
    ``auto`` without labels; TopK's outputs are refused (its sorted values keep their
    arg-max at 0 whatever changes), a metric asked for by name is taken as asked."""
    if kind == "topk" and not (first_output.ndim == 1 or first_output.shape[-1] == 1):  # k = 1: the answer
        raise DataError(f"the scored output of shape {list(first_output.shape)} is made by TopK (sorted values or "
                        "their indices), which no metric reads: name another output with --score-output")
    # Labels say the output holds classes, whatever the graph seemed to show.
    classifier = is_classifier_output(first_output, kind if labels is None or kind == "topk" else None)
    if metric == "auto":
        metric = "accuracy" if labels is not None and classifier else "agreement" if classifier else "relerr"
    if metric in ("accuracy", "lost") and labels is None:
        raise DataError(f"the {metric} metric needs labels (--labels, or 'labels' in the .npz)")
    if metric in ("accuracy", "lost", "agreement") and not is_classifier_output(first_output):  # by name: as asked
        raise DataError(f"the {metric} metric needs a [samples, (positions,) classes] or class-index output; "
                        f"the scored output has shape {list(first_output.shape)}{_map_hint(first_output, metric)}")
    if metric == "relerr" and is_class_index(first_output):  # an index off by one is no small error
        raise DataError(f"the relerr metric measures values, and the scored output holds class indices (shape "
                        f"{list(first_output.shape)}, {first_output.dtype}): use agreement or accuracy, or name the "
                        "scores with --score-output")
    if metric in ("accuracy", "lost"):
        check_labels(labels, first_output)
    return metric


def _map_hint(output: np.ndarray, metric: str) -> str:
    """How a map of class scores gets its answers read per position: labels say which axis
    holds the classes (label_layout.map_class_axis)."""
    if output.dtype.kind != "f" or output.ndim != 4:
        return ""
    hint = (": labels of one class per position ([N, H, W]) make a map of class scores answer per position, its "
            "classes on the axis they leave out (1 of [N, C, H, W], the last of [N, H, W, C])")
    return hint + (", and for agreement any such labels do: the original's own arg-max over the classes, say"
                   if metric == "agreement" else "")


def score(metric: str, ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None,
          answer_kind: str = "top-1", over: float | None = None) -> Score:
    """``over`` (relerr only): score the share of samples whose relative error is over it,
    as a certified budget bounds it (certify.py), instead of the mean error."""
    if metric in ("accuracy", "lost"):
        want, answer = answers(ref, got)
        right_before, right_after = want == labels, answer == labels
        before, after = labelled_mean(right_before, labels), labelled_mean(right_after, labels)
        drop = before - after if metric == "accuracy" else labelled_mean(right_before & ~right_after, labels)
        return Score(metric, before, after, drop)
    if metric == "agreement":
        agree = top1_agreement(ref, got)
        return Score(metric, 1.0, agree, 1.0 - agree, answer_kind)
    if over is not None:
        share = float(np.mean(sample_relative_errors(ref, got) > over))
        return Score(metric, 0.0, share, share, over=over)
    err = relative_error(ref, got)
    return Score(metric, 0.0, err, err)


# What float rounding may move an output of a model that prunes nothing, as a share of its
# largest |value| (verify's default --tolerance; 16-bit outputs get more: rounding_tolerance).
EXACT_TOLERANCE = 1e-4
# The step of a 16-bit float relative to its value, at most: float16's 10 and bfloat16's 7
# mantissa bits (onnx.TensorProto's FLOAT16 and BFLOAT16).
_STEP_16 = {10: 2.0**-10, 16: 2.0**-7}


def rounding_tolerance(elem_type: int, tolerance: float) -> float:
    """``tolerance`` (a share of an output's largest |value|) for an output of onnx type
    ``elem_type``, or two of its steps if larger: a float32 sum in another order can turn a
    16-bit output's rounding by a step (a trial's float16 logits, 2.9e-4 of their range)."""
    step = _STEP_16.get(elem_type)
    return max(tolerance, 2 * step) if step else tolerance


def abs_diff(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """|ref - got| in float64, 0 where the two are equal: the same infinity in both (a masked
    logit's -inf, or what an input of -inf makes) is no difference, where inf - inf is NaN;
    so is a NaN in both. A NaN in one only is an infinite difference: as NaN it compared as
    no error at all (NaN > tolerance is False), and a certified relerr counted it no loss."""
    with np.errstate(invalid="ignore"):  # (inf - inf, which the where discards)
        diff = np.where(ref == got, 0.0, np.abs(ref.astype(np.float64) - got))
        if diff.dtype.kind == "f" and np.isnan(diff).any():
            both = np.isnan(ref) & np.isnan(got)
            diff = np.where(both, 0.0, np.where(np.isnan(diff), np.inf, diff))
        return diff


def finite_abs(a: np.ndarray) -> np.ndarray:
    """|a| in float64 with the infinities as 0: an output's scale, which one inf would make
    infinite and every error relative to it 0."""
    a = np.abs(a.astype(np.float64))
    return np.where(np.isfinite(a), a, 0.0)


def relative_error(ref: np.ndarray, got: np.ndarray) -> float:
    """relerr's measure: mean |difference| over mean |original| (the difference alone where
    the original is all zeros)."""
    scale = float(np.mean(finite_abs(ref)))
    return float(np.mean(abs_diff(ref, got))) / (scale if scale > 0 else 1.0)


def sample_relative_errors(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """``relative_error`` of each sample (first axis)."""
    rows = ref.shape[0]
    diff = abs_diff(ref, got).reshape(rows, -1).mean(1)
    scale = finite_abs(ref).reshape(rows, -1).mean(1)
    return diff / np.where(scale > 0, scale, 1.0)


def budget_words(metric: str, max_drop: float, certified: bool) -> str:
    """A budget as the calibration holds it: a certified relative error bounds the share of
    samples over it, by the same number (docs/calibration.md, the loss of each metric)."""
    if metric == "relerr":
        return (f"relative error over {max_drop:g} on at most {100 * max_drop:g}% of samples" if certified
                else f"mean relative error <= {max_drop:g}")
    if metric == "accuracy":  # a difference of accuracies, in points as the tables give them
        return f"accuracy drop <= {points(max_drop)}"
    what = {"lost": "right answers lost", "agreement": "answers changed"}.get(metric)
    return f"{what} <= {100 * max_drop:g}%" if what else f"{metric} drop <= {max_drop:g}"


def points(share: float) -> str:
    """A share of samples (0.01) in percentage points ('1 point')."""
    value = 100 * share
    return f"{value:g} point{'' if value == 1 else 's'}"


# Labelled samples an original must get all right to look fitted to them: a model right on
# 99.5% of new inputs gets 100 in a row right about 61% of the time, 500 about 8%.
PERFECT_FIT_SAMPLES = 100


def label_warnings(ref: np.ndarray, labels: np.ndarray) -> list[str]:
    """Signs that the labels do not measure what the calibration promises: the original's
    accuracy on them no better than its answers would score on labels in no relation to
    the samples (sum over classes of its answer share times the label share: the
    accuracy shuffled labels give), by three standard errors. Labels out of order with
    the samples, or meant for another output, look like that. For one class label a
    sample only (a map's positions are not independent draws), and with two classes or
    more among the labels (with one, shuffling changes nothing).

    And the opposite sign: the original right on every one of many labelled samples, as a
    model is on data it was trained on, where the promise then holds and on new inputs
    may not (docs/calibration.md, "What the promise needs")."""
    want, _ = answers(ref, ref)
    labelled = labels != IGNORE
    if labels.ndim != 1 or want.shape != labels.shape or not labelled.any():
        return []
    want, labels = want[labelled], labels[labelled]
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        return []
    accuracy = float(np.mean(want == labels))
    if accuracy == 1.0 and len(labels) >= PERFECT_FIT_SAMPLES:
        return [f"the original is right on all {len(labels)} labelled calibration samples, as a model is on data "
                "it was trained on: if these are its training data, the budget holds for them and may not for new "
                "inputs; calibrate on held-out samples"]
    chance = float(sum(np.mean(want == c) * n / len(labels) for c, n in zip(classes, counts)))
    if accuracy > chance + 3 * np.sqrt(chance * (1 - chance) / len(labels)):
        return []
    return [f"the original is right on {100 * accuracy:.1f}% of {len(labels)} labelled calibration samples, no "
            f"better than its answers would score on labels unrelated to the samples ({100 * chance:.1f}%): are the "
            "labels in the samples' order, and for the scored output? A budget measured against them says little"]


def class_mix_warnings(ref: np.ndarray, labels: np.ndarray | None) -> list[str]:
    """A classifier's calibration samples unlike the inputs it meets in use: one class most
    of them, or many samples of under half the classes (by their labels, else by the
    original's answers). The promise is for inputs drawn as these were: a model calibrated
    on one class of Fashion-MNIST held its certificate there and lost 35 points on the
    balanced test set (a trial), with no word. Plain [N, classes] scores only: a map's or
    a sequence's positions say little of how the samples were drawn."""
    if ref.ndim != 2 or ref.dtype.kind != "f" or ref.shape[1] < 3:
        return []
    labelled = labels is not None and labels.ndim == 1 and labels.shape[0] >= ref.shape[0]
    seen = labels[labels != IGNORE] if labelled else predictions(ref)
    if seen.size == 0:
        return []
    by = "by their labels" if labelled else "by the original's answers"
    values, counts = np.unique(seen, return_counts=True)
    share = counts.max() / seen.size
    if share > 0.5:
        what = f"class {values[counts.argmax()]} is {100 * share:.0f}% of the {seen.size} calibration samples ({by})"
    elif seen.size >= 5 * ref.shape[1] and len(values) < ref.shape[1] / 2:
        what = f"the {seen.size} calibration samples hold {len(values)} of the model's {ref.shape[1]} classes ({by})"
    else:
        return []
    return [f"{what}: the budget is promised for inputs drawn as these were; where the classes come in another mix "
            "the drop can be far larger (docs/calibration.md, \"What the promise needs\")"]


def thin_holdout(metric: str, max_drop: float, held: int, holdout: float = 0.0, samples: int = 0) -> str:
    """A note for an uncertified budget whose held-out part is too small for "met" to mean
    anything: under one answer's worth of the budget, a single changed answer is already
    over it (a 10-sample calibration "met" 1 point on 5 held-out samples and lost 4.8 points
    on the test set); "" where it can tell. ``holdout`` is the share asked for, of
    ``samples``: a share of one sample rounds to none."""
    if metric == "relerr":  # a mean of errors, not a count of answers
        return ""
    if held == 0:
        why, fix = (("--holdout 0", "hold some out") if holdout <= 0 else
                    (f"--holdout {holdout:g} of {samples} sample(s) holds none out", "give more data"))
        return (f"no held-out part ({why}): the budget was met on the samples the search chose on, which says "
                f"little of new inputs; {fix}, or certify it (--confidence)")
    if held * max_drop >= 1:
        return ""
    return (f"the held-out part has {held} sample(s), so one answer is {100 / held:.3g} points against a budget of "
            f"{100 * max_drop:g}: 'met' says little; give more data, or certify it (--confidence)")
