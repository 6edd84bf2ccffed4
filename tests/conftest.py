"""Fixtures shared by the test files (plain helpers live in helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from exprune_onnx.tuning import objective


@pytest.fixture
def scripted_clock(monkeypatch):
    """scripted_clock(gains, slower_than_original=False) replaces the latency objective's
    clock for this test; it returns the list of (a, b) model pairs the objective timed."""

    def script(gains: dict[str, float], slower_than_original: bool = False):
        """time_pair answers from a table: a model costs 1 ms less each layer's gain (a
        negative gain costs time); the original costs 1 ms, or 0.5 ms when it should win."""
        calls = []

        def cost(model: onnx.ModelProto) -> float:
            # An early-exit layer's gain is keyed by its name; a sparse matmul, named after the
            # layer it replaces, gains only if keyed "zero:<layer>" (one after an early-exit
            # layer is free); "zero:<a>+<b>" gains only while both read sparsely.
            zero_ops = ("ExPruneSparseMatMul", "ExPruneSparseConv")
            names = {n.name for n in model.graph.node if n.domain and n.op_type not in zero_ops}
            sparse = {n.name for n in model.graph.node if n.op_type in zero_ops}
            if not names and not sparse:
                return 0.5 if slower_than_original else 1.0
            early = sum(g for layer, g in gains.items() if any(name.startswith(layer + "_") for name in names))
            zero = sum(g for key, g in gains.items()
                       if key.startswith("zero:") and all(name + "_sparse" in sparse for name in key[5:].split("+")))
            return 1.0 - early - zero

        def fake(a, b, feeds, threads, passes, **_):
            calls.append((a, b))
            return cost(a), cost(b)

        monkeypatch.setattr(objective, "time_pair", fake)
        # The first estimate of the model's time is the script's too (seconds).
        monkeypatch.setattr(objective, "seconds_per_run", lambda model, feeds, threads, source: cost(model) / 1e3)
        return calls

    return script


# The bundled example, and data for it, in a test's own folder (test_cli*.py;
# a module's own fixture of the same name takes precedence).
EXAMPLE_MODEL = Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx"


@pytest.fixture
def example(tmp_path):
    path = tmp_path / "fashion_cnn.onnx"
    shutil.copyfile(EXAMPLE_MODEL, path)
    return path


@pytest.fixture
def good_data(tmp_path):
    path = tmp_path / "good.npz"
    np.savez(path, input=np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))
    return path


@pytest.fixture
def small_set(tmp_path):
    """160 labelled images of the bundled test slice, for the bundled example."""
    with np.load(EXAMPLE_MODEL.parent / "fashion_test_slice.npz") as data:
        path = tmp_path / "small.npz"
        np.savez(path, input=data["input"][:160], labels=data["labels"][:160])
    return path
