"""Calibration samples that are near copies of one another.

The certificate (certify.py) counts its testing samples as independent draws; exact
repeats are counted and warned of apart (``repeats_note``). A sample saved twice with a little noise, a photo
re-encoded, or frames of a still scene are not independent either, but differ in every
byte (a trial's images saved twice with different noise counted twice). They are found
here by distance, relative to how far the samples lie from the data's mean ``m``:
``||a - b|| <= NEAR * max(||a - m||, ||b - m||)`` over the float inputs (so that photos
in 0..255, whose size is mostly their brightness, are measured by what sets them apart;
a feature vector's columns are put in units of their spread first, ``_Reader``).
Distinct samples sit further apart: 14% and more in the bundled digits and Fashion-MNIST
calibration data. Copies that moved (a shifted crop, a flip, a moving camera) are not
near by this measure, nor can a set that is all copies of one input be told from its
mean: docs/calibration.md says what is and is not found.

Comparing every pair of big samples directly costs N^2 * D; instead each sample is read
once and sketched (at most ``_COORDS`` seeded coordinates of each input, then a seeded
random projection to ``_DIMS`` numbers, which keeps distances to a few percent at this
size), the sketches are compared a block of samples against the later ones, and the
pairs close in the sketch are compared on the coordinates taken.
"""

from __future__ import annotations

import numpy as np

from ..io.data import Dataset

NEAR = 0.05  # relative distance at or under which two samples count as copies
_COORDS = 16384  # coordinates of each input read at most (seeded): a copy is near in all of them
_DIMS = 256  # the sketch's size
_ROWS = 256  # samples read, and compared, at once
_SKETCH_SLACK = 1.5  # pairs this close in the sketch are compared exactly (its error: ~4% a distance)
_EXACT_BYTES = 1 << 29  # the rows those pairs hold, read at once, at most; past it the sketch decides
_MAX_PAIRS = 1_000_000  # those pairs, at most


class _Reader:
    """The float inputs' taken coordinates of any samples, centred on the data's mean, as
    float32; a feature vector's columns (an input of one axis a sample: age, income, ...)
    each in units of its spread, so that one column in dollars does not make every pair
    near that agrees on it. An image's or a sound's values share one unit and stay as
    they are. An inf or a NaN (data may hold one) counts as 0."""

    def __init__(self, data: Dataset, samples: np.ndarray, seed: int):
        self.data, self.coords, self.scale = data, {}, {}
        rng = np.random.default_rng(seed)
        for name in sorted(data.inputs):
            x = data.inputs[name]
            if x.dtype.kind == "f":
                size = int(np.prod(x.shape[1:], dtype=np.int64))
                self.coords[name] = np.sort(rng.choice(size, _COORDS, replace=False)) if size > _COORDS \
                    else np.arange(size)
        spread = np.unique(samples[np.linspace(0, len(samples) - 1, min(len(samples), _ROWS)).astype(np.int64)])
        first = self._raw(spread)  # samples across the data: near enough for its mean and spread
        for (name, part) in zip(self.coords, first):
            if data.inputs[name].ndim == 2:
                var = part.var(0)
                self.scale[name] = np.sqrt(var + np.median(var) + 1e-30)
        self.mean = np.concatenate([part / self.scale[name] if name in self.scale else part
                                    for name, part in zip(self.coords, first)], axis=1).mean(0)
        self.width = len(self.mean)

    def _raw(self, rows: np.ndarray) -> list[np.ndarray]:
        parts = []
        for name, c in self.coords.items():
            x = np.asarray(self.data.inputs[name][rows]).reshape(len(rows), -1)[:, c].astype(np.float64)
            x[~np.isfinite(x)] = 0.0
            parts.append(x / self.scale[name] if name in self.scale else x)
        return parts

    def read(self, rows: np.ndarray) -> np.ndarray:
        return (np.concatenate(self._raw(rows), axis=1) - self.mean).astype(np.float32)


def near_copies(data: Dataset, samples: np.ndarray, seed: int = 0) -> int:
    """How many of ``samples`` (indices into ``data``, exact repeats left out: they are counted apart) are
    near copies of an earlier one; 0 where the data has no float input."""
    if len(samples) < 2 or not any(x.dtype.kind == "f" for x in data.inputs.values()):
        return 0
    reader = _Reader(data, samples, seed)
    # Samples as small as a sketch are compared as they are.
    project = np.random.default_rng(seed + 1).standard_normal((reader.width, _DIMS)).astype(np.float32) \
        / np.sqrt(_DIMS) if reader.width > _DIMS else np.eye(reader.width, dtype=np.float32)
    sketch, norms = np.empty((len(samples), project.shape[1]), np.float32), np.empty(len(samples), np.float32)
    for start in range(0, len(samples), _ROWS):
        x = reader.read(samples[start:start + _ROWS])
        sketch[start:start + len(x)] = x @ project
        norms[start:start + len(x)] = np.linalg.norm(x, axis=1)
    exact = reader.width <= _DIMS
    estimate, close = _close(sketch, norms, 1.0 if exact else _SKETCH_SLACK)
    if exact or close is None or len(np.unique(close)) * reader.width * 4 > _EXACT_BYTES:
        return estimate
    return _checked(reader, samples, close, norms)


def _close(sketch: np.ndarray, norms: np.ndarray, slack: float) -> tuple[int, np.ndarray | None]:
    """How many samples are within NEAR of an earlier one by the sketches, and the pairs
    (i, j), i < j, within ``slack`` times NEAR (every pair of near copies, and few others;
    None past _MAX_PAIRS: data of thousands of copies). A sample at the mean is nobody's copy."""
    sq = (sketch * sketch).sum(1)
    copy = np.zeros(len(sketch), bool)
    found, count = [np.empty((0, 2), np.int64)], 0
    for start in range(0, len(sketch), _ROWS):
        end = min(start + _ROWS, len(sketch))
        d2 = sq[start:end, None] + sq[None, start:] - 2 * sketch[start:end] @ sketch[start:].T
        bound = (NEAR * np.maximum(norms[start:end, None], norms[None, start:])) ** 2
        later = (np.arange(end - start)[:, None] < np.arange(len(sketch) - start)[None, :]) \
            & (norms[start:end, None] > 0)
        copy[start:] |= ((d2 <= bound) & later).any(0)
        if count <= _MAX_PAIRS:
            rows, cols = np.nonzero((d2 <= slack * slack * bound) & later)
            found.append(np.stack([rows + start, cols + start], axis=1))
            count += len(rows)
    return int(copy.sum()), np.concatenate(found) if count <= _MAX_PAIRS else None


def _checked(reader: _Reader, samples: np.ndarray, close: np.ndarray, norms: np.ndarray) -> int:
    """How many samples are within NEAR of an earlier one by their taken coordinates, of
    the pairs ``close`` found in the sketch."""
    involved = np.unique(close)
    if not len(involved):
        return 0
    at = {int(k): i for i, k in enumerate(involved)}
    rows = np.concatenate([reader.read(samples[involved[s:s + _ROWS]]) for s in range(0, len(involved), _ROWS)])
    copies = set()
    for i, j in close:
        a, b = rows[at[int(i)]], rows[at[int(j)]]
        if np.linalg.norm(a - b) <= NEAR * max(norms[i], norms[j]):
            copies.add(int(j))
    return len(copies)


def near_copies_note(data: Dataset, samples: np.ndarray, certified: bool) -> list[str]:
    """A warning where some calibration samples are near copies of others."""
    count = near_copies(data, samples)
    if not count:
        return []
    which = "the held-out check and the certificate count" if certified else "the held-out check counts"
    are = "is a near copy of another" if count == 1 else "are near copies of others"
    return [f"{count} of the {len(samples)} calibration samples {are} (apart by under {100 * NEAR:g}% of their "
            f"distance from the data's mean): {which} each sample as a new draw, so where samples are copies of "
            "one input (augmented, re-encoded, frames of one video) the promise is overstated; give independent "
            "samples (docs/calibration.md, \"What the promise needs\")"]
