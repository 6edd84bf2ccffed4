"""tuning/near_copies.py: calibration samples that are copies of others with a little noise
are counted and warned of (the certificate counts each as a new draw); real distinct
samples are not."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers import calibration_dataset, calibration_mlp

from exprune_onnx.config import Options
from exprune_onnx.io.data import Dataset
from exprune_onnx.tuning.certify import distinct
from exprune_onnx.tuning.near_copies import NEAR, near_copies, near_copies_note
from exprune_onnx.tuning.search import search

DATA = Path(__file__).resolve().parent.parent / "models" / "data"


def _count(inputs: dict) -> int:
    data = Dataset(inputs, None, "test")
    return near_copies(data, distinct(data))


def _with_copies(x: np.ndarray, copies: int, noise: float, seed: int = 0) -> np.ndarray:
    """``x`` and then noisy copies of its first ``copies`` samples, the noise a share of the data's spread."""
    rng = np.random.default_rng(seed)
    noisy = x[:copies] + rng.normal(0, noise * x.std(), x[:copies].shape).astype(x.dtype)
    return np.concatenate([x, noisy])


@pytest.mark.parametrize("name,key", [("fashion_calib.npz", "input"), ("digits_mlp_calib.npz", "X")])
def test_real_distinct_samples_are_no_copies(name, key):
    with np.load(DATA / name) as f:
        x = f[key][:1000].astype(np.float32)
    assert _count({key: x}) == 0
    # A copy with a little noise, or in 0..255, is one (a share of the data's spread: 1%).
    assert _count({key: _with_copies(x, 50, 0.01)}) == 50
    assert _count({key: 255 * _with_copies(x, 50, 0.01)}) == 50
    # Noise as large as samples differ by: no longer a copy.
    assert _count({key: _with_copies(x, 50, 0.5)}) == 0


def test_the_bound_is_relative_to_the_spread_about_the_mean():
    """Two samples NEAR apart, measured from the mean of the data, on either side of the bound."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 40)) + 100.0  # a large offset: the size of a sample is not its spread
    spread = np.linalg.norm(x[0] - x.mean(0))
    step = rng.normal(size=40)
    step /= np.linalg.norm(step)
    inside = np.concatenate([x, x[:1] + 0.8 * NEAR * spread * step]).astype(np.float64)
    outside = np.concatenate([x, x[:1] + 3 * NEAR * spread * step]).astype(np.float64)
    assert _count({"x": inside}) == 1 and _count({"x": outside}) == 0


def test_integer_inputs_and_odd_values():
    ids = np.tile(np.arange(20, dtype=np.int64)[:, None], (2, 8))
    assert _count({"ids": ids}) == 0  # token ids: no distance to measure (exact repeats are distinct's)
    x = np.random.default_rng(1).normal(size=(100, 30)).astype(np.float32)
    x[5, 3] = np.inf
    assert _count({"x": np.concatenate([x, x[:10] * np.float32(1.0001)])}) == 10
    assert _count({"x": np.zeros((1, 30), np.float32)}) == 0
    zeros = np.zeros((50, 30), np.float32)
    zeros[1:] = np.random.default_rng(2).normal(size=(49, 30))
    assert _count({"x": np.concatenate([zeros, zeros[:1]])}) == 0  # a repeat of the mean-like sample, left to distinct


def test_search_warns_of_near_copies():
    model = calibration_mlp()
    data = calibration_dataset(model, count=300)
    copied = dataclasses.replace(data, inputs={"x": _with_copies(data.inputs["x"], 100, 0.001)},
                                 labels=np.concatenate([data.labels, data.labels[:100]]))
    for confidence in (0.9, 0.0):  # over both parts where the search sees only its own (certified)
        notes = search(model, Options(confidence=confidence), copied, max_drop=0.01, seed=0).notes
        said = [n for n in notes if "near copies" in n]
        assert said and said[0].startswith("100 of the 400 calibration samples are near copies of others"), notes
    notes = search(model, Options(confidence=0.0), copied, max_drop=0.01, seed=0, holdout=0.0).notes
    assert not [n for n in notes if "near copies" in n]  # no held-out part: no promise to overstate
    assert not [n for n in search(model, Options(confidence=0.9), data, max_drop=0.01, seed=0).notes
                if "near copies" in n]
    assert near_copies_note(data, distinct(data)) == []
