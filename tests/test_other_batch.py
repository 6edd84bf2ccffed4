"""tuning/other_batch.py: a model whose batch is open, chosen at batch 1, timed once more at
batch 8; the run warns where it is slower there (a trial's MLP ran 1.24x slower at batch 8)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import input_mlp, three_layer_mlp

import exprune_onnx
from exprune_onnx.io.data import random_dataset
from exprune_onnx.tuning import objective, other_batch
from exprune_onnx.tuning.objective import LatencyChoice


def test_the_written_model_is_timed_at_batch_8():
    model = three_layer_mlp()
    written = exprune_onnx.optimize_model(model, threshold=0.0, sparse_relu="on").model
    choice = SimpleNamespace(threads=1, batch=1, other_batch=None)
    other_batch.time_other_batch(model, written, choice, random_dataset(model, 16, 0), seed=0)
    batch, original_ms, optimized_ms = choice.other_batch
    assert batch == other_batch.BATCH == 8 and original_ms > 0 and optimized_ms > 0


@pytest.mark.parametrize(("times", "warned"), [((8, 1.0, 1.25), True), ((8, 1.0, 1.015), False),
                                               ((8, 1.0, 0.8), False), (None, False)])
def test_only_a_slower_model_at_the_other_batch_is_warned_of(times, warned):
    text = other_batch.slower_text(SimpleNamespace(batch=1, other_batch=times))
    assert (text is not None) == warned
    if warned:
        assert "at batch 8 the optimised model took 1.250 ms against the original's 1.000 ms (ratio 1.25)" in text
        assert "--latency-batch" in text


@pytest.fixture
def chosen(monkeypatch):
    """The objective keeps every rewrite (no timing), and the second batch's timing is
    recorded with fixed times: the workflow's own decisions alone are tested."""
    calls = []

    def keep_all(original, options, result, data, **kw):
        choice = LatencyChoice(options, result, kw.get("batch", 1), kw.get("threads", 1), "x")
        choice.original_ms, choice.optimized_ms = 1.0, 0.8
        return choice

    def timed(original, written, choice, data, seed):
        calls.append(written)
        choice.other_batch = (8, 1.0, 1.3)

    monkeypatch.setattr(objective, "choose", keep_all)
    monkeypatch.setattr(other_batch, "time_other_batch", timed)
    return calls


def test_an_open_batch_chosen_at_batch_1_is_timed_at_8_and_warned_of(chosen):
    done = exprune_onnx.optimize(three_layer_mlp(), threshold=0.0, check=False)
    assert done.changed and len(chosen) == 1 and chosen[0] is done.model  # the written model
    assert any("at batch 8 the optimised model took 1.300 ms" in w for w in done.warnings)
    assert done.report["latency"]["other_batch"] == {"batch": 8, "original_ms": 1.0, "optimized_ms": 1.3}


@pytest.mark.parametrize("case", ["latency_batch typed", "fixed batch", "flops objective"])
def test_no_second_batch_where_the_batch_was_chosen_or_is_fixed(chosen, case):
    if case == "fixed batch":
        done = exprune_onnx.optimize(input_mlp([1]), threshold=0.0, check=False)
    else:
        extra = {"latency_batch": 1} if case == "latency_batch typed" else {"objective": "flops"}
        done = exprune_onnx.optimize(three_layer_mlp(), threshold=0.0, check=False, **extra)
    assert done.changed and chosen == []
    assert not any("the model takes any batch" in w for w in done.warnings)


def test_a_model_that_runs_only_at_batch_1_is_left_untimed_there():
    """Its inputs leave the batch open, a Reshape inside fixes it at 1 (exports do this): the
    second timing fails in onnxruntime, and the run goes on as chosen."""
    import numpy as np
    from helpers import init, make_model, vi
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w2"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", 32])], [vi("y", [1, 10])],
                       [init("w1", rng.normal(size=(32, 64)).astype(np.float32)),
                        init("w2", rng.normal(size=(64, 10)).astype(np.float32)),
                        init("shape", np.array([1, 64], np.int64))])
    choice = SimpleNamespace(threads=1, batch=1, other_batch=None)
    other_batch.time_other_batch(model, model, choice, random_dataset(model, 4, 0), seed=0)
    assert choice.other_batch is None
