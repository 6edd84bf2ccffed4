"""The StatsTest and Certified decision rules of the ExPrune custom ops, op level: the dense
op, what both ops do with an empty batch, disabled rules and unused rule inputs, and their
errors. The conv op's cases are in test_custom_op_rules_conv.py, the references both check
against in rule_references.py.

Single-node models fed through graph inputs (as in test_custom_op.py), run by the
installed package's library, against numpy references of the rules exactly as
docs/custom_ops.md ("Decision rules") states them: float64 arithmetic from the float32
inputs the op sees, `base` the float32 sum bias + residual. The pruned mask must equal
the reference bit for bit; pruned outputs are exactly 0 and the others equal the full
layer.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import assert_ort_error
from rule_references import (
    DENSE_SHAPES,
    INF,
    act,
    check_certified,
    check_result,
    conv_case,
    dense_case,
    dense_certified_mask,
    dense_stats_mask,
    error_cases,
    f64,
    full_conv,
    full_dense,
    prune_share,
    run,
    z_quantile,
)

from exprune_onnx import ops


@pytest.mark.parametrize("lead,n,outs,k", DENSE_SHAPES)
@pytest.mark.parametrize("residual", [False, True])
def test_dense_statstest_prunes_exactly(lead, n, outs, k, residual):
    rng = np.random.default_rng(1)
    arrays, full = dense_case(rng, lead, n, outs, k, residual=residual)
    _, z = dense_stats_mask(arrays, n, k, 0.0)
    z_crit = z_quantile(z, 0.4)
    mask, _ = dense_stats_mask(arrays, n, k, z_crit)
    y, stats = run(ops.DENSE_RELU, arrays, {"k": k, "threshold": 0.0, "rule": "statstest", "z_crit": z_crit})
    check_result(y, stats, full, mask)


@pytest.mark.parametrize("lead,n,outs,k", DENSE_SHAPES)
@pytest.mark.parametrize("residual", [False, True])
def test_dense_certified_prunes_exactly(lead, n, outs, k, residual):
    rng = np.random.default_rng(2)
    arrays, _ = dense_case(rng, lead, n, outs, k, residual=residual, nonneg=True)
    arrays = prune_share(arrays, lambda a, k=k: dense_certified_mask(a, k), 0.4)
    full = full_dense(arrays, k)
    mask = dense_certified_mask(arrays, k)
    y, stats = run(ops.DENSE_RELU, arrays, {"k": k, "threshold": 0.0, "rule": "certified"})
    check_result(y, stats, full, mask)
    assert not np.any(mask & (full > 0))


def test_dense_statstest_clip_and_threads():
    rng = np.random.default_rng(3)
    arrays, full = dense_case(rng, (37,), 100, 70, 25, residual=True)
    arrays = {n: a if a is None or n in ("x", "partial_sq") else a * np.float32(8) for n, a in arrays.items()}
    arrays["partial_sq"] = arrays["partial_sq"] * np.float32(64)
    full = full * 8
    _, z = dense_stats_mask(arrays, 100, 25, 0.0)
    attrs = {"k": 25, "threshold": 0.0, "rule": "statstest", "z_crit": z_quantile(z, 0.3), "clip_max": 6.0}
    mask, _ = dense_stats_mask(arrays, 100, 25, attrs["z_crit"])
    y1, s1 = run(ops.DENSE_RELU, arrays, attrs, threads=1)
    y2, s2 = run(ops.DENSE_RELU, arrays, attrs, threads=2)
    check_result(y1, s1, full, mask, clip_max=6.0)
    assert np.any(y1 == np.float32(6.0))
    assert np.array_equal(y1, y2) and np.array_equal(s1, s2)


def test_dense_statstest_zero_variance_and_nan():
    """v <= 0: z = -inf / +inf / 0 by the sign of m; NaN in partial or partial_sq never prunes."""
    rng = np.random.default_rng(4)
    arrays, _ = dense_case(rng, (5,), 20, 8, 5)  # t_k = 5, t_n = 20
    p, sq = arrays["partial"], arrays["partial_sq"]
    arrays["bias"][:] = np.array([-40, 0, -20, -40, 0, -20, -40, -40], np.float32)
    p[0:2], sq[0], sq[1] = 5.0, 5.0, 0.0  # mean = 1: v = 1 - 1 = 0 in row 0, -1 in row 1
    # m = 1 + bias / 20: -1 (z = -inf), 1 (z = +inf), 0 (z = 0)
    p[2, 0] = np.nan
    sq[3, 0] = np.nan  # m is very negative there: would be pruned without the NaN
    full = full_dense(arrays, 5)
    for z_crit in (0.5, -0.5):
        mask, z = dense_stats_mask(arrays, 20, 5, z_crit)
        assert np.array_equal(z[0], [-INF, INF, 0, -INF, INF, 0, -INF, -INF])
        assert np.array_equal(z[1], z[0])
        expected = np.array([1, 0, z_crit > 0, 1, 0, z_crit > 0, 1, 1], bool)
        assert np.array_equal(mask[0], expected) and np.array_equal(mask[1], expected)
        assert not mask[2, 0] and not mask[3, 0]
        y, stats = run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0, "rule": "statstest", "z_crit": z_crit})
        assert np.isnan(y[2, 0])
        full[2, 0] = 0.0
        y[2, 0] = 0.0
        mask[2, 0] = False
        check_result(y, stats, full, mask)


def test_dense_certified_negative_or_nan_tail_input_keeps_row():
    rng = np.random.default_rng(5)
    k = 16
    arrays, _ = dense_case(rng, (8,), 48, 40, k, nonneg=True, shift=-3.0)
    x = arrays["x"]
    x[2, 20] = -0.25  # tail inputs: rows 2, 5 and 6 may not be pruned
    x[5, 47] = -1e-30
    x[6, 30] = np.nan
    x[3, 3] = -1.0  # a head input: it is in the partial sum, not the bound; row 3 stays prunable
    arrays["partial"] = (f64(x[:, :k]) @ rng.standard_normal((k, 40)) / 7).astype(np.float32)
    full = full_dense(arrays, k)
    mask = dense_certified_mask(arrays, k)
    assert not mask[[2, 5, 6]].any()
    assert mask[[0, 1, 3, 4, 7]].mean() > 0.5 and mask[3].any()
    y, stats = run(ops.DENSE_RELU, arrays, {"k": k, "threshold": 0.0, "rule": "certified"})
    assert np.all(np.isnan(y[6])) and stats.tolist() == [int(mask.sum()), mask.size]
    rows = [0, 1, 2, 3, 4, 5, 7]
    check_result(y[rows], stats - [0, 40], full[rows], mask[rows])
    # without the negative value row 2 is pruned almost entirely: the rule really held back
    x[2, 20] = 0.0
    assert dense_certified_mask(arrays, k)[2].mean() > 0.5


def test_dense_certified_never_prunes_a_positive_output():
    """Lossless: over many draws, an output whose full pre-activation is > 0 is never pruned."""
    rng = np.random.default_rng(6)
    pruned = 0
    for draw in range(40):
        lead = [(5,), (2, 3), (17,)][draw % 3]
        n, outs = int(rng.integers(24, 90)), int(rng.integers(8, 40))
        k = int(rng.integers(4, n - 4))
        arrays, full = dense_case(rng, lead, n, outs, k, residual=draw % 2 == 0, nonneg=True)
        # a sparse, ReLU-like input with a few large values
        arrays["x"] = (arrays["x"] * (rng.random(arrays["x"].shape) < 0.6) *
                       rng.choice([1.0, 4.0], arrays["x"].shape, p=[0.9, 0.1])).astype(np.float32)
        x64 = f64(arrays["x"])
        w_head = rng.standard_normal((k, outs)) / np.sqrt(n)
        arrays["partial"] = (x64[..., :k] @ w_head).astype(np.float32)
        arrays = prune_share(arrays, lambda a, k=k: dense_certified_mask(a, k), float(rng.uniform(0.05, 0.9)))
        full = full_dense(arrays, k)
        y, stats = run(ops.DENSE_RELU, arrays, {"k": k, "threshold": 0.0, "rule": "certified"})
        mask = dense_certified_mask(arrays, k)
        check_certified(y, stats, mask, full)
        pruned += int(stats[0])
    assert pruned > 0


@pytest.mark.parametrize("op", [ops.DENSE_RELU, ops.CONV_RELU])
def test_empty_batch(op):
    rng = np.random.default_rng(12)
    if op == ops.DENSE_RELU:
        arrays, _ = dense_case(rng, (0,), 20, 8, 5, residual=True)
        attrs = {"k": 5, "threshold": 0.0}
    else:
        arrays, attrs, _ = conv_case(rng, 0, 6, 3, (5, 5), (3, 3), 2, pads=(1, 1, 1, 1), residual=True)
    for rule in ("statstest", "certified"):
        y, stats = run(op, arrays, {**attrs, "rule": rule, "z_crit": 0.0})
        assert y.shape == arrays["partial"].shape and stats.tolist() == [0, 0]


def test_disabled_rules_prune_nothing():
    """z_crit = -inf (the default) prunes nothing; certified with no negative outputs neither."""
    rng = np.random.default_rng(13)
    arrays, full = dense_case(rng, (6,), 30, 10, 8)
    y, stats = run(ops.DENSE_RELU, arrays, {"k": 8, "threshold": 1e30, "rule": "statstest"})
    assert stats.tolist() == [0, 60]
    np.testing.assert_allclose(y, act(full), rtol=1e-4, atol=1e-5)
    arrays, attrs, geo = conv_case(rng, 1, 8, 4, (6, 6), (3, 3), 3, pads=(1, 1, 1, 1), nonneg=True, shift=50.0)
    y, stats = run(ops.CONV_RELU, arrays, {**attrs, "rule": "certified"})
    assert stats.tolist() == [0, y.size]
    np.testing.assert_allclose(y, act(full_conv(arrays, 3, geo)), rtol=1e-4, atol=1e-5)


def test_unused_rule_inputs_are_ignored():
    rng = np.random.default_rng(14)
    arrays, _ = dense_case(rng, (4,), 30, 10, 8, nonneg=True)
    arrays = prune_share(arrays, lambda a: dense_certified_mask(a, 8), 0.3)
    full = full_dense(arrays, 8)
    mask = dense_certified_mask(arrays, 8)
    y, stats = run(ops.DENSE_RELU, {**arrays, "partial_sq": np.zeros((3, 3), np.float32)},
                   {"k": 8, "threshold": 0.0, "rule": "certified"})
    check_result(y, stats, full, mask)
    _, z = dense_stats_mask(arrays, 30, 8, 0.0)
    z_crit = z_quantile(z, 0.5)
    mask, _ = dense_stats_mask(arrays, 30, 8, z_crit)
    bad_w = {"w_pos_sum": np.full(3, -1.0, np.float32), "w_pos_norm": np.zeros((2, 2), np.float32)}
    y, stats = run(ops.DENSE_RELU, {**arrays, **bad_w}, {"k": 8, "threshold": 0.0, "rule": "statstest",
                                                          "z_crit": z_crit})
    check_result(y, stats, full, mask)
    # the threshold rule reads none of them; absent residual passed as '' before them
    y, stats = run(ops.DENSE_RELU, {**arrays, **bad_w, "partial_sq": None}, {"k": 8, "threshold": float("-inf")})
    assert stats.tolist() == [0, 40]
    np.testing.assert_allclose(y, act(full), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", [0, 1], ids=["dense", "conv"])
@pytest.mark.parametrize("bad,words", [
    ({"rule": "stats_test"}, ["rule", "stats_test"]),
    ({"rule": ""}, ["rule"]),
    ({"rule": "statstest", "z_crit": float("nan")}, ["z_crit", "NaN"]),
    ({"rule": 1}, ["rule", "string"]),
    ({"rule": "statstest", "z_crit": 1}, ["z_crit", "float"]),
])
def test_error_bad_rule_attributes(case, bad, words):
    op, arrays, attrs = error_cases()[case]
    assert_ort_error(lambda: run(op, arrays, {**attrs, **bad}), *words)


@pytest.mark.parametrize("case", [0, 1], ids=["dense", "conv"])
def test_error_missing_or_misshapen_rule_inputs(case):
    op, arrays, attrs = error_cases()[case]
    stats_attrs = {**attrs, "rule": "statstest", "z_crit": 0.0}
    cert_attrs = {**attrs, "rule": "certified"}
    outs = arrays["bias"].shape[0]
    assert_ort_error(lambda: run(op, {**arrays, "partial_sq": None, "w_pos_sum": None, "w_pos_norm": None},
                                 stats_attrs), "partial_sq", "missing")
    assert_ort_error(lambda: run(op, {**arrays, "partial_sq": None}, stats_attrs), "partial_sq", "missing")
    assert_ort_error(lambda: run(op, {**arrays, "partial_sq": arrays["partial_sq"][..., :-1].copy()},
                                 stats_attrs), "partial_sq", "shape")
    assert_ort_error(lambda: run(op, {**arrays, "w_pos_sum": None, "w_pos_norm": None}, cert_attrs),
                     "w_pos_sum", "missing")
    assert_ort_error(lambda: run(op, {**arrays, "w_pos_norm": None}, cert_attrs), "w_pos_norm", "missing")
    assert_ort_error(lambda: run(op, {**arrays, "w_pos_sum": None}, cert_attrs), "w_pos_sum", "missing")
    assert_ort_error(lambda: run(op, {**arrays, "w_pos_sum": np.ones(outs + 1, np.float32)}, cert_attrs),
                     "w_pos_sum", "shape")
    assert_ort_error(lambda: run(op, {**arrays, "w_pos_norm": np.ones((1, outs), np.float32)}, cert_attrs),
                     "w_pos_norm", "shape")
    assert_ort_error(lambda: run(op, {**arrays, "w_pos_norm": np.full(outs, -1.0, np.float32)}, cert_attrs),
                     "w_pos_norm", ">= 0")
    assert_ort_error(lambda: run(op, {**arrays, "w_pos_sum": np.full(outs, np.nan, np.float32)}, cert_attrs),
                     "w_pos_sum", ">= 0")
    # a float64 input is refused by onnxruntime against the declared type, naming the node
    assert_ort_error(lambda: run(op, {**arrays, "partial_sq": arrays["partial_sq"].astype(np.float64)},
                                 stats_attrs), "partial_sq", ours=False)
    assert_ort_error(lambda: run(op, {**arrays, "w_pos_sum": arrays["w_pos_sum"].astype(np.float64)},
                                 cert_attrs), "w_pos_sum", ours=False)
