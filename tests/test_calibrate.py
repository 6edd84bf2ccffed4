"""Calibration: statistics, thresholds from them, and the search under a budget."""

import math

import numpy as np
import onnx
import pytest
from helpers import calibration_dataset, calibration_mlp

from exprune_onnx.config import Options
from exprune_onnx.tuning.calibrate import LayerStats, collect
from exprune_onnx.tuning.search import search, split_indices


def stats_from(est, y):
    order = np.argsort(est, kind="stable")
    lost = np.cumsum(y[order])
    return LayerStats("l", "n", est[order], lost, float(lost[-1]), float(np.mean(y == 0)))


def test_threshold_for_respects_the_loss_share():
    rng = np.random.default_rng(0)
    est = rng.normal(size=5000)
    y = np.maximum(est + rng.normal(scale=0.5, size=5000), 0)
    s = stats_from(est, y)
    for share in (0.0, 1e-4, 1e-2, 0.1):
        t = s.threshold_for(share)
        pruned = est < t
        assert y[pruned].sum() <= share * y.sum() + 1e-12
        # One more element would break the share: the threshold is as large as allowed.
        nxt = np.sort(est[~pruned])[0]
        assert y[est <= nxt].sum() > share * y.sum()
        assert s.prune_rate(t) == pytest.approx(pruned.mean())
        assert s.loss(t) == pytest.approx(y[pruned].sum() / y.sum())
    assert s.threshold_for(1.0) > est.max()


@pytest.mark.parametrize("order", ["stored", "weight"])
def test_collect_matches_a_direct_computation(order):
    model = calibration_mlp()
    data = calibration_dataset(model, 50)
    stats, _ = collect(model, Options(unit_order=order), data, np.arange(50))
    s = stats["fc2"]["threshold"]
    x = data.inputs["x"]
    w = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    a1 = np.maximum(x @ w["w1"], 0)
    k = 16
    first = np.arange(k) if order == "stored" else np.argsort(-(w["w2"].astype(np.float64) ** 2).sum(1))[:k]
    assert order == "stored" or not np.array_equal(np.sort(first), np.arange(k)), "the weight order must matter here"
    partial = a1[:, first] @ w["w2"][first]
    est = w["b2"].astype(np.float64) + (64 / k) * partial.astype(np.float64)
    y = np.maximum(a1 @ w["w2"] + w["b2"], 0)
    np.testing.assert_allclose(s.est, np.sort(est.reshape(-1)), rtol=1e-5, atol=1e-5)
    assert s.total_y == pytest.approx(float(y.sum()), rel=1e-4)
    assert s.zeros == pytest.approx(float(np.mean(y == 0)), abs=1e-3)


def test_search_meets_the_budget_and_is_deterministic():
    model = calibration_mlp()
    data = calibration_dataset(model)
    first = search(model, Options(), data, max_drop=0.02, seed=3)
    second = search(model, Options(), data, max_drop=0.02, seed=3)
    assert first.metric == "accuracy"
    assert first.calibration.drop <= 0.02 + 1e-9  # accuracies differ by float noise
    assert first.saved_calibration > 0.005, "a 2-point budget must buy some pruning on this model"
    assert first.shares == second.shares
    assert [r.threshold for r in first.result.rewritten] == [r.threshold for r in second.result.rewritten]
    assert first.split == (200, 200) and first.holdout is not None


def test_unmeetable_budget_rewrites_nothing_and_says_so():
    """relerr at budget 0 cannot be met by any pruning (summation order alone moves outputs)."""
    model = calibration_mlp()
    out = search(model, Options(), calibration_dataset(model, labels=False), metric="relerr", max_drop=0.0)
    assert all(share is None for share in out.shares.values())
    assert not out.result.changed
    assert out.calibration.drop == 0.0 and out.saved_calibration == 0.0


def test_split_is_seeded_and_disjoint():
    a, b = split_indices(100, 0.3, seed=5)
    assert len(a) == 70 and len(b) == 30 and not set(a) & set(b)
    assert np.array_equal(split_indices(100, 0.3, seed=5)[0], a)
    assert not math.isnan(float(a.mean()))


def test_metrics_net_accuracy_and_lost_answers():
    from exprune_onnx.tuning.metrics import choose, score

    labels = np.array([0, 1, 1, 0])
    ref = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)  # right, right, wrong, wrong
    got = np.array([[0, 1], [0, 1], [0, 1], [0, 1]], np.float32)  # wrong, right, right, wrong
    assert score("accuracy", ref, got, labels).drop == 0.0  # one lost, one gained
    assert score("lost", ref, got, labels).drop == 0.25
    assert score("agreement", ref, got, labels).drop == 0.5
    assert score("relerr", ref, ref, labels).drop == 0.0
    assert choose("auto", ref, labels) == "accuracy" and choose("auto", ref, None) == "agreement"
    assert choose("auto", np.zeros((4,)), None) == "relerr"


def test_metrics_per_position_scores_and_class_indices():
    """A language model's [N, T, C] scores count every position; an arg-max head's index counts as its class."""
    from exprune_onnx.tuning.metrics import choose, score

    labels = np.array([[0, 1], [1, 1]])
    ref = np.eye(2, dtype=np.float32)[[[0, 1], [1, 0]]]  # right, right, right, wrong
    got = np.eye(2, dtype=np.float32)[[[0, 0], [1, 1]]]  # right, wrong, right, right
    assert choose("auto", ref, labels) == "accuracy"
    assert score("accuracy", ref, got, labels).drop == 0.0
    assert score("lost", ref, got, labels).drop == 0.25
    assert score("agreement", ref, got, None).drop == 0.5
    index = np.array([0, 1, 1, 0], np.int64)
    scores = np.eye(2, dtype=np.float32)[[0, 1, 0, 0]]
    assert score("agreement", scores, index, None).drop == 0.25
    assert score("accuracy", scores, index[:, None], np.array([0, 1, 1, 1])).drop == -0.25


def test_step_down_makes_every_tuned_layer_gentler():
    from exprune_onnx.tuning.ladder import CERTIFIED, LADDER, step_down

    shares = {"a": LADDER[3], "b": LADDER[0], "c": None, "d": CERTIFIED}
    assert step_down(shares) == {"a": LADDER[2], "b": None, "c": None, "d": CERTIFIED}
    for _ in range(4):  # rung 3 -> 2 -> 1 -> 0 -> left alone
        shares = step_down(shares)
    assert shares == {"a": None, "b": None, "c": None, "d": CERTIFIED}


def test_a_model_optimised_before_is_calibrated_on_its_new_layers_only():
    """Calibrating an optimised model again (now with its first layer) stopped with
    KeyError: the statistics pass probed the ops of the first run too. Only the new layer is
    calibrated, and the result says whose budget it is."""
    import exprune_onnx

    model = calibration_mlp()
    data = calibration_dataset(model)
    arrays = {**data.inputs, "labels": data.labels}
    once = exprune_onnx.optimize(model, calibration=arrays, max_drop=0.02, objective="flops", confidence=0.0)
    assert [r.candidate.layer for r in once.result.rewritten] == ["fc2"]
    twice = exprune_onnx.optimize(once.model, calibration=arrays, max_drop=0.02, objective="flops", confidence=0.0,
                                  include_first_layer=True)
    assert [r.candidate.layer for r in twice.result.rewritten] == ["MatMul:h1"]  # the unnamed first layer
    assert [n.op_type for n in twice.model.graph.node].count("ExPruneDenseRelu") == 2
    assert any("the input holds ExPrune ops (it was optimised before): the budget is measured against it" in w
               for w in twice.warnings), twice.warnings
    assert not any("optimised before" in w for w in once.warnings)


def test_the_part_is_scored_whole_again_after_the_latency_objective(monkeypatch):
    """Screened on a subset, the finalist is confirmed on the whole calibration part; after
    the latency objective dropped layers the part was scored again on the subset alone, so
    its row (labelled with the whole part's size) disagreed with the row above it."""
    from types import SimpleNamespace

    from exprune_onnx.tuning import search as search_module

    model = calibration_mlp()
    data = calibration_dataset(model)
    wrong = np.random.default_rng(5).random(len(data)) < 0.3  # so that the subset's accuracy is not the part's
    data.labels = np.where(wrong, (data.labels + 1) % 10, data.labels)
    monkeypatch.setattr(search_module, "SCREEN", 50)

    def none_faster(original, planner, shares, data, indices, latency, seed, log):
        return SimpleNamespace(kept=lambda name, kind=None: False, options=planner.options(shares))

    monkeypatch.setattr(search_module, "_keep_faster", none_faster)
    monkeypatch.setattr(search_module, "unpaying", lambda *args: set())  # (the clock's verdict, before the search's)
    out = search(model, Options(), data, max_drop=0.05, seed=3, latency=(1, 1))
    assert out.before_latency is not None and not out.result.changed
    # Nothing rewritten: the part's score is the original's on the whole part, both ways.
    assert out.calibration.original == out.before_latency[0].original == out.calibration.optimized
    assert out.split[0] > 50
