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

MODELS = Path(__file__).resolve().parent.parent / "models"  # files in git, not built ones


def _count(inputs: dict) -> int:
    data = Dataset(inputs, None, "test")
    return near_copies(data, distinct(data))


def _with_copies(x: np.ndarray, copies: int, noise: float, seed: int = 0) -> np.ndarray:
    """``x`` and then noisy copies of its first ``copies`` samples, the noise a share of the data's spread."""
    rng = np.random.default_rng(seed)
    noisy = x[:copies] + rng.normal(0, noise * x.std(), x[:copies].shape).astype(x.dtype)
    return np.concatenate([x, noisy])


@pytest.mark.parametrize("path,key", [(MODELS / "fashion_test_slice.npz", "input"),
                                      (MODELS / "data" / "digits_mlp_calib.npz", "X")])
def test_real_distinct_samples_are_no_copies(path, key):
    with np.load(path) as f:
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
    assert near_copies_note(data, distinct(data), True) == []


def test_a_feature_in_large_units_does_not_make_every_pair_near():
    """A trial's raw table (age, income in dollars, hours, 13 columns in 0..1): 1859 of 2000
    rows were 'near copies' of people with similar incomes. Each column counts in its own
    spread; a row copied with a little noise still is one."""
    rng = np.random.default_rng(4)
    n = 2000
    table = np.column_stack([rng.integers(18, 90, n), rng.normal(60000, 20000, n), rng.normal(40, 10, n),
                             rng.uniform(0, 1, (n, 13))]).astype(np.float32)
    assert _count({"x": table}) == 0
    noisy = table[:20] * (1 + rng.normal(0, 0.001, table[:20].shape)).astype(np.float32)
    assert _count({"x": np.concatenate([table, noisy])}) == 20


def test_the_count_is_the_exact_rule_s_not_the_sketch_s():
    """Samples past the sketch's size: the pairs close in the sketch are compared on the
    coordinates themselves (the sketch alone was off by up to a fifth near the bound)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 1, 24, 24)).astype(np.float32)  # 576 numbers a sample
    spread = np.linalg.norm((x - x.mean(0)).reshape(300, -1), axis=1).mean()
    steps = rng.normal(size=(60, 1, 24, 24)).astype(np.float32)
    steps /= np.linalg.norm(steps.reshape(60, -1), axis=1)[:, None, None, None]
    factors = np.linspace(0.8, 1.2, 60) * NEAR * spread  # half inside the bound, half outside
    data = np.concatenate([x, x[:60] + steps * factors[:, None, None, None]])
    flat = data.reshape(len(data), -1).astype(np.float64)
    centred = flat - flat[np.unique(np.linspace(0, 359, 256).astype(int))].mean(0)
    norms = np.linalg.norm(centred, axis=1)
    exact = sum(np.linalg.norm(flat[300 + i] - flat[i]) <= NEAR * max(norms[i], norms[300 + i]) for i in range(60))
    assert 20 < exact < 40 and _count({"x": data}) == exact


def test_the_warning_s_words():
    data = Dataset({"x": np.concatenate([np.eye(40, dtype=np.float32), np.eye(40, dtype=np.float32)[:1] * 1.001])},
                   None, "t")
    one = near_copies_note(data, distinct(data), False)
    assert one[0].startswith("1 of the 41 calibration samples is a near copy of another")
    assert "the held-out check counts each sample" in one[0] and "certificate" not in one[0]
    assert "the held-out check and the certificate count" in near_copies_note(data, distinct(data), True)[0]
