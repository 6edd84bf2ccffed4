"""The unit_order and per-output thresholds options (config.py): op, rewrite, calibration, config, CLI."""

import json
import math

import numpy as np
import onnx
import pytest
from helpers import (
    NEG_INF,
    NODE,
    assert_equivalent,
    calibration_dataset,
    calibration_mlp,
    conv_model,
    feeds_for,
    init,
    make_model,
    node_types,
    vi,
)
from onnx import helper
from op_cases import assert_ort_error, check_result, conv_case, dense_case, estimate, run_single_op

from exprune_onnx import ops, optimize_model
from exprune_onnx.config import Options, load_config
from exprune_onnx.errors import ConfigError
from exprune_onnx.tuning.calibrate import LayerStats
from exprune_onnx.tuning.search import search


def run(op, arrays, attrs, stats=True):
    return run_single_op(op, arrays, attrs, name=NODE, stats=stats)


def per_output_thresholds(est, out_axis, rng):
    """A different threshold per output: quantiles of that output's own estimates."""
    moved = np.moveaxis(est, out_axis, 0).reshape(est.shape[out_axis], -1)
    shares = rng.uniform(0.1, 0.9, moved.shape[0])
    t = np.array([np.quantile(row, q) for row, q in zip(moved, shares)], dtype=np.float32)
    t[0] = -np.inf  # one output never pruned
    return t


def per_output_mask(est, thresholds, out_axis):
    view = [1] * est.ndim
    view[out_axis] = -1
    return est < thresholds.astype(np.float64).reshape(view)


# ------------------------------------------------------------------ op


@pytest.mark.parametrize("residual", [False, True])
def test_dense_per_output_thresholds_prune_exactly(residual):
    rng = np.random.default_rng(30)
    n, outs, k = 70, 25, 20
    arrays, full = dense_case(rng, (37,), n, outs, k, residual)
    est = estimate(arrays["partial"], arrays["bias"], arrays["residual"], n, k)
    t = per_output_thresholds(est, -1, rng)
    y, stats = run(ops.DENSE_RELU, arrays, {"k": k, "threshold": 1e9, "thresholds": t.tolist()})
    mask = per_output_mask(est, t, -1)
    assert 0 < mask.sum() < mask.size and not mask[:, 0].any()
    check_result(y, arrays["partial"], full, mask, np.inf)
    assert stats.tolist() == [int(mask.sum()), mask.size]


@pytest.mark.parametrize("residual", [False, True])
def test_conv_per_output_thresholds_prune_exactly(residual):
    rng = np.random.default_rng(31)
    channels, outs, k = 12, 6, 4
    arrays, full, attrs, bias_b = conv_case(rng, 2, channels, outs, (9, 9), (3, 3), k, pads=(1, 1, 1, 1),
                                            residual=residual)
    est = estimate(arrays["partial"], bias_b, arrays["residual"], channels, k)
    t = per_output_thresholds(est, 1, rng)
    y, stats = run(ops.CONV_RELU, arrays, {**attrs, "threshold": 1e9, "thresholds": t.tolist()})
    mask = per_output_mask(est, t, 1)
    assert 0 < mask.sum() < mask.size and not mask[:, 0].any()
    check_result(y, arrays["partial"], full, mask, np.inf)
    assert stats.tolist() == [int(mask.sum()), mask.size]


def test_all_minus_inf_thresholds_prune_nothing():
    rng = np.random.default_rng(32)
    arrays, full, attrs, _ = conv_case(rng, 1, 8, 5, (6, 6), (3, 3), 3)
    y, stats = run(ops.CONV_RELU, arrays, {**attrs, "threshold": 1e9, "thresholds": [NEG_INF] * 5})
    np.testing.assert_allclose(y, np.maximum(full, 0), rtol=1e-4, atol=1e-5)
    assert stats.tolist()[0] == 0


@pytest.mark.parametrize("bad,words", [
    ({"thresholds": [0.0] * 7}, ("thresholds", "7 values", "8 outputs")),
    ({"thresholds": [0.0] * 7 + [float("nan")]}, ("thresholds", "NaN")),
    ({"thresholds": [0.0] * 8, "rule": "certified"}, ("thresholds", "rule threshold")),
])
def test_bad_per_output_thresholds_are_errors(bad, words):
    rng = np.random.default_rng(33)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    assert_ort_error(lambda: run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0, **bad}, stats=False), *words)


# ------------------------------------------------------------------ rewrite


def reorder_node(model):
    return next(n for n in model.graph.node if n.op_type == "Gather")


@pytest.mark.parametrize("bn", [False, True])
def test_weight_order_gathers_the_strongest_units_first(bn):
    model = conv_model(bn=bn)
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["Relu", "Gather", "Slice", "Conv", "ExPruneConvRelu"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in res.model.graph.initializer}
    perm = inits[reorder_node(res.model).input[1]]
    op = next(n for n in res.model.graph.node if n.domain)
    head = next(n for n in res.model.graph.node if n.op_type == "Conv")
    # The weights as the rewrite stores them (BatchNorm folded in): head units, then tail.
    w = np.concatenate([inits[head.input[1]], inits[op.input[2]]], axis=1).astype(np.float64)
    assert sorted(perm.tolist()) == list(range(w.shape[1])) and perm.tolist() != list(range(w.shape[1]))
    assert np.all(np.diff((w * w).sum(axis=(0, 2, 3))) <= 0)
    if not bn:
        original = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}["W"]
        np.testing.assert_array_equal(w.astype(np.float32), original[:, perm])
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, feeds_for(model))


def test_stored_order_has_no_gather():
    model = conv_model()
    res = optimize_model(model, threshold=NEG_INF, unit_order="stored")
    assert node_types(res.model) == ["Relu", "Slice", "Conv", "ExPruneConvRelu"]


def test_already_sorted_weights_need_no_gather():
    rng = np.random.default_rng(3)
    n, outs = 40, 12
    w = rng.normal(size=(n, outs)).astype(np.float32)
    w = w[np.argsort(-(w.astype(np.float64) ** 2).sum(1), kind="stable")]
    nodes = [helper.make_node("Relu", ["inp"], ["x"]), helper.make_node("MatMul", ["x", "W"], ["m"], name="fc"),
             helper.make_node("Relu", ["m"], ["y"])]
    model = make_model(nodes, [vi("inp", ["N", n])], [vi("y", None)], [init("W", w)])
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["Relu", "Slice", "MatMul", "ExPruneDenseRelu"]


def test_per_output_thresholds_from_config_reach_the_op(tmp_path):
    model = conv_model()
    thresholds = [NEG_INF] + [float(v) for v in np.linspace(-1, 1, 23)]
    (tmp_path / "c.json").write_text(json.dumps({"layers": {"conv": {"thresholds": thresholds}}}))
    options = load_config(tmp_path / "c.json", Options())
    res = optimize_model(model, **vars(options))
    op = next(n for n in res.model.graph.node if n.domain)
    got = next(helper.get_attribute_value(a) for a in op.attribute if a.name == "thresholds")
    assert got == pytest.approx(thresholds)
    assert res.rewritten[0].thresholds == tuple(thresholds)


def test_per_output_threshold_count_must_match(tmp_path):
    """The user's own numbers, so a bad config (exit 4), not a layer quietly left alone."""
    from exprune_onnx.compiler.pipeline import inspect
    from exprune_onnx.errors import ConfigError

    model = conv_model()
    (tmp_path / "c.json").write_text(json.dumps({"layers": {"conv": {"thresholds": [0.0, 1.0]}}}))
    options = load_config(tmp_path / "c.json", Options())
    for run in (optimize_model, lambda m, **kw: inspect(m, Options(**kw))):
        with pytest.raises(ConfigError, match="layer 'conv': the config gives 2 thresholds for its 24 output"):
            run(model, **vars(options))


@pytest.mark.parametrize("entry,words", [
    ({"thresholds": []}, "non-empty list"),
    ({"thresholds": "low"}, "non-empty list"),
    ({"thresholds": [0.0, "x"]}, "threshold must be a number"),
    ({"thresholds": [0.0], "rule": "statstest"}, "go with rule threshold"),
])
def test_bad_thresholds_in_config(tmp_path, entry, words):
    (tmp_path / "c.json").write_text(json.dumps({"layers": {"conv": entry}}))
    with pytest.raises(ConfigError, match=words):
        load_config(tmp_path / "c.json", Options())


# ------------------------------------------------------------------ calibration


def channel_stats(est, y, channel, outputs):
    order = np.argsort(est, kind="stable")
    lost = np.cumsum(y[order])
    return LayerStats("l", "n", est[order], lost, float(lost[-1]), float(np.mean(y == 0)), channel[order], outputs)


def test_per_output_thresholds_respect_the_share_and_prune_dead_channels():
    """Channel 0 is never positive, channel 1 always is: all the pruning goes to channel 0."""
    rng = np.random.default_rng(4)
    m = 3000
    channel = np.repeat(np.arange(3), m)
    est = np.concatenate([rng.normal(1.0, 1.0, m), rng.normal(-1.0, 1.0, m), rng.normal(0.0, 1.0, m)])
    y = np.concatenate([np.zeros(m), rng.uniform(1, 2, m), np.maximum(est[2 * m:] + rng.normal(0, 0.3, m), 0)])
    s = channel_stats(est, y, channel, 3)
    scalar = s.threshold_for(0.0)
    t = s.thresholds_for(0.0)
    assert s.prune_rate(t) >= 1 / 3 - 1e-9, "a channel that is always 0 is pruned whole at no loss"
    assert s.loss(t) == 0.0 and s.prune_rate(scalar) < 0.05
    for share in (1e-3, 1e-2, 5e-2):
        t = s.thresholds_for(share)
        pruned = est < t[channel]
        assert y[pruned].sum() <= share * y.sum() + 1e-9
        assert s.loss(t) == pytest.approx(y[pruned].sum() / y.sum())
        assert s.prune_rate(t) == pytest.approx(pruned.mean())
        assert s.prune_rate(t) >= s.prune_rate(s.threshold_for(share))
    assert np.isneginf(s.thresholds_for(0.0)[1])


def test_search_per_output_and_per_layer():
    model = calibration_mlp()
    data = calibration_dataset(model)
    per_output = search(model, Options(), data, max_drop=0.02, seed=3)
    per_layer = search(model, Options(), data, max_drop=0.02, seed=3, per_output=False)
    assert per_output.calibration.drop <= 0.02 + 1e-9 and per_layer.calibration.drop <= 0.02 + 1e-9
    (rw,) = per_output.result.rewritten
    assert rw.thresholds is not None and len(rw.thresholds) == rw.candidate.outputs
    assert per_layer.result.rewritten[0].thresholds is None
    assert not math.isnan(per_output.saved_calibration)
