"""Calibration samples that are near copies of one another.

The certificate (certify.py) counts its testing samples as independent draws, and exact
repeats are left out (``distinct``). A sample saved twice with a little noise, a photo
re-encoded, or consecutive video frames are not independent either, but differ in every
byte (a trial's images saved twice with different noise counted twice). They are found
here by distance, relative to how far the samples lie from the data's mean ``m``:
``||a - b|| <= NEAR * max(||a - m||, ||b - m||)`` over the float inputs (so that photos
in 0..255, whose size is mostly their brightness, are measured by what sets them apart).
Distinct samples sit further apart: 14% and more in the bundled digits and Fashion-MNIST data.

Comparing every pair of big samples directly costs N^2 * D; instead each sample is read
once and sketched (at most ``_COORDS`` seeded coordinates of each input, then a seeded
random projection to ``_DIMS`` numbers, which keeps distances to a few percent at
this size), and the sketches are compared, a block of samples against the later ones.
"""

from __future__ import annotations

import numpy as np

from ..io.data import Dataset

NEAR = 0.05  # relative distance at or under which two samples count as copies
_COORDS = 16384  # coordinates of each input read at most (seeded): a copy is near in all of them
_DIMS = 256  # the sketch's size
_ROWS = 256  # samples read, and compared, at once


def _coords(data: Dataset, seed: int) -> dict[str, np.ndarray]:
    """The float inputs, and the flat coordinates of one sample of each that are read."""
    rng = np.random.default_rng(seed)
    picked = {}
    for name in sorted(data.inputs):
        x = data.inputs[name]
        if x.dtype.kind != "f":
            continue
        size = int(np.prod(x.shape[1:], dtype=np.int64))
        picked[name] = np.sort(rng.choice(size, _COORDS, replace=False)) if size > _COORDS else np.arange(size)
    return picked


def _read(data: Dataset, rows: np.ndarray, coords: dict[str, np.ndarray]) -> np.ndarray:
    """The taken coordinates of ``rows``, every float input side by side, as float64 (an inf
    or NaN, which data may hold, as 0: it measures nothing here)."""
    parts = []
    for name, c in coords.items():
        x = np.asarray(data.inputs[name][rows]).reshape(len(rows), -1)
        parts.append(x[:, c].astype(np.float64))
    x = np.concatenate(parts, axis=1)
    x[~np.isfinite(x)] = 0.0
    return x


def near_copies(data: Dataset, samples: np.ndarray, seed: int = 0) -> int:
    """How many of ``samples`` (indices into ``data``, exact repeats already left out) are
    near copies of an earlier one; 0 where the data has no float input."""
    coords = _coords(data, seed)
    if not coords or len(samples) < 2:
        return 0
    width = sum(len(c) for c in coords.values())
    # Samples as small as a sketch are compared as they are.
    project = np.random.default_rng(seed + 1).standard_normal((width, _DIMS)).astype(np.float32) / np.sqrt(_DIMS) \
        if width > _DIMS else np.eye(width, dtype=np.float32)
    spread = samples[np.linspace(0, len(samples) - 1, min(len(samples), _ROWS)).astype(np.int64)]
    mean = _read(data, np.unique(spread), coords).mean(0)  # of samples across the data: near enough
    sketch, norms = np.empty((len(samples), project.shape[1]), np.float32), np.empty(len(samples), np.float32)
    for start in range(0, len(samples), _ROWS):
        x = _read(data, samples[start:start + _ROWS], coords) - mean
        sketch[start:start + len(x)] = x.astype(np.float32) @ project
        norms[start:start + len(x)] = np.linalg.norm(x, axis=1)
    return int(_copies(sketch, norms).sum())


def _copies(sketch: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Whether each sample is within NEAR of an earlier one, by the sketches' distances. A
    sample at the mean itself is nobody's copy."""
    sq = (sketch * sketch).sum(1)
    copy = np.zeros(len(sketch), bool)
    for start in range(0, len(sketch), _ROWS):
        end = min(start + _ROWS, len(sketch))
        d2 = sq[start:end, None] + sq[None, start:] - 2 * sketch[start:end] @ sketch[start:].T
        bound = (NEAR * np.maximum(norms[start:end, None], norms[None, start:])) ** 2
        later = np.arange(end - start)[:, None] < np.arange(len(sketch) - start)[None, :]
        copy[start:] |= ((d2 <= bound) & later & (norms[start:end, None] > 0)).any(0)
    return copy


def near_copies_note(data: Dataset, samples: np.ndarray) -> list[str]:
    """A warning where some calibration samples are near copies of others."""
    count = near_copies(data, samples)
    if not count:
        return []
    return [f"{count} of the {len(samples)} calibration samples are near copies of others (apart by under "
            f"{100 * NEAR:g}% of their distance from the data's mean): the held-out check and the certificate count "
            "each as a new draw, so if they are copies of one input (augmented, re-encoded, or frames of one video), "
            "what they promise is overstated; give independent samples (docs/calibration.md, \"What the promise "
            "needs\")"]
