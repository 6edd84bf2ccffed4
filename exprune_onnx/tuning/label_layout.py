"""How labels that are not one class index per sample line up with an output's scores.

metrics.py reads [N, C] scores with [N] labels and [N, T, C] with [N, T]. Two more
shapes of labels are common, and only the labels tell them apart from values:

* one class per position of a map: [N, H, W] labels for [N, C, H, W] scores (a
  segmentation map; [N, L] for a Conv1d tagger's [N, C, L]) or for TensorFlow's
  [N, H, W, C]. The map is read as [N, positions, C].
* yes/no labels: 0 and 1 for a binary classifier's one score per sample ([N] or
  [N, 1]), or multi-hot labels [N, C] for a multi-label classifier's [N, C] scores (a
  sigmoid per class). Each score is a yes or a no, read as two classes, yes when the
  score is over the threshold (0.5 for an output the data keeps in [0, 1],
  probabilities, or for one that answers its labels better so, a regression onto 0 and
  1; else 0, logits). Accuracy is then the share of right answers, and a
  multi-label sample's loss its share of those lost. One-hot labels (a single 1 per
  sample) are not multi-hot: they are refused with the advice to take their arg-max.

A Sigmoid's scores on one or two axes (output_kinds.py's ``yesno``) are read as yes/no
answers without labels too: agreement is then the share of answers kept.

Either way the labels become [N, positions] ([N] for one answer a sample) and every
metric, the -100 ignore label and the certificate's per-sample shares work as for a
language model's positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import IGNORE

NEAR_SHARE = 0.9  # of a regression's values onto 0 and 1 that lie within [-0.5, 1.5]


def map_class_axis(a: np.ndarray, labels: np.ndarray | None) -> int | None:
    """The axis of a map's classes, as ``labels`` of one class per position say: 1 for
    [N, C, H, W] with [N, H, W] labels or [N, C, L] with [N, L], and for [N, C, 1, 1] with
    [N] or no labels; -1 for [N, H, W, C] with [N, H, W]. None for anything else, [N, T, C]
    included (read as scores without help); where both readings fit, classes last."""
    if a.dtype.kind != "f" or a.ndim < 3:
        return None
    if (labels is None or labels.ndim == 1) and a.shape[1] > 1 and all(d == 1 for d in a.shape[2:]):
        return 1  # [N, C, 1, 1]: a classifier that ends in a conv and a global pool (SqueezeNet)
    if labels is None:
        return None
    if a.ndim >= 4 and labels.shape[1:] == a.shape[1:-1] and a.shape[-1] > 1:
        return -1
    if labels.shape[1:] == a.shape[2:] and labels.shape[1:] != a.shape[1:-1] and a.shape[1] > 1:
        return 1
    return None


def is_yes_no(a: np.ndarray, labels: np.ndarray | None) -> bool:
    """Whether ``labels`` give each of ``a``'s scores a 0 or 1 (-100: no label): one score
    per sample ([N] or [N, 1], a binary classifier's) with [N] or [N, 1] labels, or
    multi-hot labels [N, C] for [N, C] scores, more than one class per sample somewhere
    (a single 1 everywhere is one-hot, for an arg-max)."""
    if labels is None or a.dtype.kind != "f" or labels.dtype.kind not in "iuf":
        return False
    one_score = a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)
    if one_score:
        fits = labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)
    else:
        fits = a.ndim == 2 and labels.shape[1:] == a.shape[1:]
    if not fits or not np.isin(labels, (0, 1, IGNORE)).all():
        return False
    return one_score or bool(((labels == 1).sum(1) != 1).any())


@dataclass(frozen=True)
class Layout:
    """How an output's predictions line up with its labels (``layout_of``): a map's
    classes on ``axis``, or yes/no labels, each score a yes above ``threshold``.
    Neither: the output and labels as they are."""
    axis: int | None = None
    threshold: float | None = None

    @property
    def plain(self) -> bool:
        return self.axis is None and self.threshold is None

    @property
    def answer_kind(self) -> str:
        """What agreement counts: the same top-1 class, or the same yes/no answers."""
        return "top-1" if self.threshold is None else "yes/no"

    def scores(self, a: np.ndarray) -> np.ndarray:
        """``a`` as [N, positions, classes]: a map's classes last, or each class as
        (no, yes) scores whose arg-max is its answer."""
        if self.threshold is not None:
            yes_no = np.stack([self.threshold - a, a - self.threshold], -1).reshape(a.shape[0], -1, 2)
            return yes_no[:, 0] if yes_no.shape[1] == 1 else yes_no  # one answer a sample: [N, 2]
        if self.axis is not None:
            return np.moveaxis(a, self.axis, -1).reshape(a.shape[0], -1, a.shape[self.axis])
        return a

    def values(self, scored: np.ndarray, metric: str) -> np.ndarray:
        """What ``metric`` reads of ``scored`` (``scores``' output): the answers' scores, or
        for relerr the output's own values, so that yes/no scores, measured from the
        threshold, do not change the relative error (a map's order does not)."""
        if metric != "relerr" or self.threshold is None:
            return scored
        return scored[..., 1] + np.float32(self.threshold)

    def labels(self, labels: np.ndarray | None) -> np.ndarray | None:
        """``labels`` as [N, positions] ([N] for one yes/no a sample), to go with ``scores``."""
        if self.plain or labels is None:
            return labels
        flat = labels.reshape(labels.shape[0], -1)
        return flat[:, 0] if self.threshold is not None and flat.shape[1] == 1 else flat


def layout_of(a: np.ndarray, labels: np.ndarray | None, kind: str | None = None,
              answers: np.ndarray | None = None) -> Layout:
    """The layout ``labels`` give the original's output ``a`` (module docstring); without
    labels, ``kind`` (output_kinds.py) may make it yes/no. ``answers``: ``a``'s own labels,
    row for row, where ``labels`` are a whole data set's and ``a`` one part's outputs."""
    axis = map_class_axis(a, labels) if labels is not None or kind not in ("values", "topk", "yesno") else None
    if axis is not None:
        return Layout(axis=axis)
    probabilities = a.dtype.kind == "f" and a.size and a.min() >= 0 and a.max() <= 1
    sigmoid = labels is None and kind == "yesno" and probabilities and a.ndim in (1, 2)
    if sigmoid or is_yes_no(a, labels):
        return Layout(threshold=0.5 if probabilities else _cut(a, labels if answers is None else answers))
    return Layout()


def _cut(a: np.ndarray, labels: np.ndarray | None) -> float:
    """0 (logits) unless the labels say 0.5: a regression onto 0 and 1 (a regressor trained
    on yes/no targets strays a little outside [0, 1]) answers its labels better cut at the
    middle of the two than at 0, where a classifier's logits answer best. Only values that
    stay near [0, 1] are taken for such a regression: logits spread far past it."""
    scores = a.reshape(len(a), -1)
    truth = None if labels is None else labels.reshape(len(labels), -1)
    if truth is None or truth.shape != scores.shape or np.mean(np.abs(scores - 0.5) <= 1) < NEAR_SHARE:
        return 0.0
    known = truth != IGNORE
    right = {cut: ((scores > cut) == (truth == 1))[known].sum() for cut in (0.0, 0.5)}
    return 0.5 if right[0.5] > right[0.0] else 0.0


def laid_out(reference: np.ndarray, all_labels: np.ndarray | None, labels: np.ndarray | None,
             kind: str | None = None):
    """The layout ``all_labels`` (the whole data's; ``kind``: output_kinds.py's) give the
    original's ``reference`` output, and ``reference`` and ``labels`` (its part's) in it:
    what a calibration part is scored with."""
    layout = layout_of(reference, all_labels, kind, answers=labels)
    return layout, layout.scores(reference), layout.labels(labels)
