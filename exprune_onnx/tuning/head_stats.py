"""Calibration statistics of an arg-max head, with the interface of calibrate.LayerStats.

For every calibration sample the head's op, compiled exact, gives the true winner; the
probe gives each class's decision statistic relative to the leader of the estimates
(``est_j - est_top`` for Threshold, the test statistic of ``j - top`` for StatsTest;
docs/custom_ops.md). With parameter T a class is out of contention when its statistic
is below T, so:

* a sample's answer changes exactly when its true winner is not the leader and the
  winner's statistic is below T (the "loss" is the share of such samples), and
* the class logits left unfinished are the excluded classes, or all of them when every
  class but the leader is excluded (the "prune rate", per class logit).

A loss share asked of a head is thus a share of answers that may change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class HeadStats:
    layer: str
    node: str
    stat: np.ndarray  # [samples, classes], each class's statistic against the leader
    top: np.ndarray  # [samples], the leader of the estimates
    winner: np.ndarray  # [samples], the arg-max of the finished logits
    zeros: float = 0.0  # LayerStats' field; a head has no ReLU zeros

    @property
    def outputs(self) -> int:
        return 0  # no per-output thresholds for a head

    def _winner_stat(self) -> np.ndarray:
        """The statistic that must stay >= T for the answer to stand (+inf when the leader wins)."""
        rows = np.arange(self.winner.size)
        return np.where(self.winner == self.top, np.inf, self.stat[rows, self.winner])

    def threshold_for(self, max_loss: float) -> float:
        """The largest T that changes at most ``max_loss`` of the answers."""
        if self.winner.size == 0:
            return -math.inf
        flips = np.sort(self._winner_stat())
        allowed = int(math.floor(max_loss * self.winner.size + 1e-9))
        if allowed >= flips.size or not np.isfinite(flips[allowed]):
            # Nothing more can flip: exclude every class whose statistic is finite.
            finite = self.stat[np.isfinite(self.stat)]
            return float(np.nextafter(np.float32(finite.max()), np.float32(np.inf))) if finite.size else -math.inf
        return float32_floor(flips[allowed])  # stat < flips[allowed] spares that sample and all above it

    def prune_rate(self, threshold: float) -> float:
        if self.winner.size == 0:
            return 0.0
        classes = self.stat.shape[1]
        out = self.stat < threshold
        out[np.arange(self.top.size), self.top] = False
        excluded = out.sum(1)
        skipped = np.where(excluded == classes - 1, classes, excluded)
        return float(skipped.sum()) / self.stat.size

    def loss(self, threshold: float) -> float:
        return float(np.mean(self._winner_stat() < threshold)) if self.winner.size else 0.0


def float32_floor(value: float) -> float:
    """The largest float32 <= value: the ops store thresholds as float32, and rounding up
    would prune (or exclude) an element the statistics said to keep."""
    f = np.float32(value)
    if float(f) > value:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def head_statistics(partial: np.ndarray, partial_sq: np.ndarray | None, bias: np.ndarray, k_terms: int,
                    n_terms: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The leader and each rule's per-class statistic, as the op computes them (float64)."""
    p = partial.reshape(-1, partial.shape[-1]).astype(np.float64)
    b = bias.astype(np.float64)
    est = b + (n_terms / k_terms) * p
    top = est.argmax(1)
    rows = np.arange(top.size)
    found = {"threshold": est - est[rows, top][:, None]}
    if partial_sq is not None:
        sq = partial_sq.reshape(p.shape).astype(np.float64)
        mean = (p - p[rows, top][:, None]) / k_terms
        m = mean + (b - b[top][:, None]) / n_terms
        v = (sq + sq[rows, top][:, None]) / k_terms - mean * mean
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(v > 0, m / np.sqrt(np.maximum(v, 1e-300) / k_terms), np.sign(m) * np.inf)
        found["statstest"] = np.where((v <= 0) & (m == 0), 0.0, z)
    return top, found
