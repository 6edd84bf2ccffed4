"""The StatsTest and Certified decision rules of the ExPrune custom ops, op level.

Single-node models fed through graph inputs (as in test_custom_op.py), run by the
installed package's library, against numpy references of the rules exactly as
docs/custom_ops.md ("Decision rules") states them: float64 arithmetic from the float32
inputs the op sees, `base` the float32 sum bias + residual. The pruned mask must equal
the reference bit for bit; pruned outputs are exactly 0 and the others equal the full
layer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CONV_GEOMETRIES, NODE, assert_ort_error, onnx_pads, run_single_op

from exprune_onnx import ops

INF = float("inf")


# ------------------------------------------------------------------ models


def run(op, arrays, attrs, *, stats=True, threads=None):
    return run_single_op(op, arrays, attrs, name=NODE, stats=stats, threads=threads)


def check_certified(y, stats, mask, full):
    """Certified pruned exactly `mask`, never a positive output, and kept the rest exact."""
    assert stats.tolist() == [int(mask.sum()), mask.size]
    assert np.all(y[mask] == 0)
    assert not np.any(mask & (full > 0)), "certified pruned an output that is positive"
    scale = max(float(np.abs(act(full)).max()), 1e-6)
    assert np.all(np.abs(f64(y) - act(full)) <= 1e-4 * scale)


def act(v, clip_max=INF):
    return np.minimum(np.maximum(v, 0.0), clip_max)


# ------------------------------------------------------------------ references


def f64(a):
    return np.asarray(a).astype(np.float64)


def stats_mask(partial, partial_sq, base, t_k, t_n, z_crit):
    """StatsTest as the doc states it; `base` is float32, z_crit the float32 attribute."""
    mean = f64(partial) / t_k
    m = mean + f64(base) / t_n
    v = f64(partial_sq) / t_k - mean * mean
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(v > 0, m / np.sqrt(np.where(v > 0, v, 1.0) / t_k),
                     np.where(m < 0, -np.inf, np.where(m > 0, np.inf, m * 0.0)))
    return (z < np.float64(np.float32(z_crit))) & ~np.isnan(v), z


def certified_mask(partial, base, xmax, xnorm, w_pos_sum, w_pos_norm, out_axis):
    """Certified as the doc states it. xmax/xnorm are per row (dense) or per sample and
    position (conv), NaN where the tail inputs hold a negative value."""
    shape = [1] * partial.ndim
    shape[out_axis] = -1
    ws, wn = f64(w_pos_sum).reshape(shape), f64(w_pos_norm).reshape(shape)
    xmax, xnorm = np.expand_dims(f64(xmax), out_axis), np.expand_dims(f64(xnorm), out_axis)
    with np.errstate(invalid="ignore"):
        bound = np.minimum(xmax * ws, xnorm * wn)
        return f64(base) + f64(partial) + bound < 0


def prune_share(arrays, mask_fn, share):
    """Shift the bias so that the certified rule prunes about `share` of the outputs: the
    bound is loose, so random layers need a clearly negative pre-activation to prune."""
    lo, hi = -100.0, 100.0
    bias = arrays["bias"].copy()
    for _ in range(60):
        mid = (lo + hi) / 2
        arrays["bias"] = (bias + np.float32(mid)).astype(np.float32)
        if mask_fn(arrays).mean() > share:
            lo = mid
        else:
            hi = mid
    arrays["bias"] = (bias + np.float32(lo)).astype(np.float32)
    return arrays


def positive_weight_stats(w_tail_rows):
    """w_pos_sum and w_pos_norm of w_tail laid out [O, ...], as the compiler computes them."""
    pos = np.maximum(f64(w_tail_rows).reshape(w_tail_rows.shape[0], -1), 0)
    return pos.sum(1).astype(np.float32), np.sqrt((pos * pos).sum(1)).astype(np.float32)


def field_stats(values, axis):
    """max (from 0) and L2 norm over `axis`, NaN where a value is negative or NaN."""
    v = f64(values)
    bad = np.any(~(v >= 0), axis=axis)
    xmax = np.maximum(np.max(np.where(np.isnan(v), 0, v), axis=axis, initial=0.0), 0.0)
    xnorm = np.sqrt(np.sum(np.where(np.isnan(v), 0, v) ** 2, axis=axis))
    return np.where(bad, np.nan, xmax), np.where(bad, np.nan, xnorm)


def check_result(y, stats, full, mask, clip_max=INF):
    """Pruned exactly 0, kept equal to the full layer (1e-4 of the range), stats = mask count."""
    assert y.dtype == np.float32 and y.shape == full.shape
    assert 0 < mask.sum() < mask.size, "the case must both prune and keep"
    assert np.all(y[mask] == 0.0)
    expected = act(full, clip_max)
    scale = max(float(np.abs(expected).max()), 1e-6)
    err = float(np.abs(f64(y[~mask]) - expected[~mask]).max())
    assert err <= 1e-4 * scale, f"kept outputs off by {err} (range {scale})"
    assert stats.dtype == np.int64 and stats.tolist() == [int(mask.sum()), mask.size]


# ------------------------------------------------------------------ dense cases


def dense_case(rng, lead, n, outs, k, *, residual=False, nonneg=False, shift=0.0):
    """A Dense layer x @ W + b split at k, every input of every rule, and the full float64 result."""
    x = rng.standard_normal((*lead, n)).astype(np.float32)
    if nonneg:
        x = np.maximum(x, 0)
    w = (rng.standard_normal((n, outs)) / np.sqrt(n)).astype(np.float32)
    b = (0.3 * rng.standard_normal(outs) + shift).astype(np.float32)
    x64, w64 = f64(x), f64(w)
    w_tail = np.ascontiguousarray(w[k:].T)
    w_pos_sum, w_pos_norm = positive_weight_stats(w_tail)
    arrays = {
        "partial": (x64[..., :k] @ w64[:k]).astype(np.float32),
        "x": x,
        "w_tail": w_tail,
        "bias": b,
        "residual": (0.5 * rng.standard_normal((*lead, outs))).astype(np.float32) if residual else None,
        "partial_sq": ((x64[..., :k] ** 2) @ (w64[:k] ** 2)).astype(np.float32),
        "w_pos_sum": w_pos_sum,
        "w_pos_norm": w_pos_norm,
    }
    return arrays, full_dense(arrays, k)


def full_dense(arrays, k):
    full = f64(arrays["partial"]) + f64(arrays["x"][..., k:]) @ f64(arrays["w_tail"]).T + f64(dense_base(arrays))
    return full


def dense_base(arrays):
    """float32 bias + residual, as the op forms it."""
    b = arrays["bias"]
    return b if arrays["residual"] is None else b + arrays["residual"]


def dense_stats_mask(arrays, n, k, z_crit):
    return stats_mask(arrays["partial"], arrays["partial_sq"], dense_base(arrays), k, n, z_crit)


def dense_certified_mask(arrays, k):
    xmax, xnorm = field_stats(arrays["x"][..., k:], axis=-1)
    return certified_mask(arrays["partial"], dense_base(arrays), xmax, xnorm, arrays["w_pos_sum"],
                          arrays["w_pos_norm"], out_axis=-1)


def z_quantile(z, q):
    return float(np.float32(np.quantile(z[np.isfinite(z)], q)))


DENSE_SHAPES = [
    ((4,), 40, 24, 10),  # 2-D
    ((2, 3), 40, 16, 8),  # 3-D
    ((37,), 100, 70, 25),  # several row and column blocks
    ((1,), 257, 300, 64),  # batch 1
]


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


# ------------------------------------------------------------------ conv cases


def patches(x, kernel, strides, dilations, begins, ends, outs):
    """x zero-padded, one [N, C, *outs] view per kernel tap."""
    r = x.ndim - 2
    xp = np.pad(f64(x), [(0, 0), (0, 0)] + list(zip(begins, ends)))
    for tap in np.ndindex(*kernel):
        window = tuple(
            slice(tap[d] * dilations[d], tap[d] * dilations[d] + strides[d] * (outs[d] - 1) + 1, strides[d])
            for d in range(r)
        )
        yield tap, xp[(slice(None), slice(None)) + window]


def conv_ref(x, w, geo):
    y = np.zeros((x.shape[0], w.shape[0], *geo[-1]))
    for tap, patch in patches(x, w.shape[2:], *geo):
        y += np.einsum("nc...,oc->no...", patch, f64(w[(slice(None), slice(None)) + tap]))
    return y


def conv_case(rng, batch, channels, outs, spatial, kernel, k, strides=None, pads=None, dilations=None,
              auto_pad=None, *, residual=False, nonneg=False, shift=0.0):
    r = len(spatial)
    s, dl = list(strides or [1] * r), list(dilations or [1] * r)
    begins, ends, out_sizes = onnx_pads(spatial, kernel, s, dl, list(pads or [0] * (2 * r)), auto_pad or "NOTSET")
    geo = (s, dl, begins, ends, out_sizes)
    x = rng.standard_normal((batch, channels, *spatial)).astype(np.float32)
    if nonneg:
        x = np.maximum(x, 0)
    fan_in = channels * int(np.prod(kernel))
    w = (rng.standard_normal((outs, channels, *kernel)) / np.sqrt(fan_in)).astype(np.float32)
    b = (0.3 * rng.standard_normal(outs) + shift).astype(np.float32)
    w_tail = np.ascontiguousarray(w[:, k:])
    w_pos_sum, w_pos_norm = positive_weight_stats(w_tail)
    partial = conv_ref(x[:, :k], w[:, :k], geo).astype(np.float32)
    arrays = {
        "partial": partial,
        "x": x,
        "w_tail": w_tail,
        "bias": b,
        "residual": (0.5 * rng.standard_normal(partial.shape)).astype(np.float32) if residual else None,
        "partial_sq": conv_ref(f64(x[:, :k]) ** 2, f64(w[:, :k]) ** 2, geo).astype(np.float32),
        "w_pos_sum": w_pos_sum,
        "w_pos_norm": w_pos_norm,
    }
    attrs = {"k": k, "threshold": 0.0}
    for key, value in (("strides", strides), ("pads", pads), ("dilations", dilations), ("auto_pad", auto_pad)):
        if value is not None:
            attrs[key] = list(value) if not isinstance(value, str) else value
    return arrays, attrs, geo


def conv_base(arrays):
    r = arrays["partial"].ndim - 2
    b = arrays["bias"].reshape((1, -1) + (1,) * r)
    return b if arrays["residual"] is None else b + arrays["residual"]


def full_conv(arrays, k, geo):
    return f64(arrays["partial"]) + conv_ref(arrays["x"][:, k:], arrays["w_tail"], geo) + f64(conv_base(arrays))


def conv_stats_mask(arrays, k, z_crit):
    taps = int(np.prod(arrays["w_tail"].shape[2:]))
    channels = arrays["x"].shape[1]
    return stats_mask(arrays["partial"], arrays["partial_sq"], conv_base(arrays), k * taps, channels * taps, z_crit)


def conv_field_stats(arrays, k, geo):
    """Per sample and output position: max and L2 norm of the tail inputs of the receptive
    field, padding counting as 0; NaN where one of them is negative or NaN."""
    fields = np.stack([p for _, p in patches(arrays["x"][:, k:], arrays["w_tail"].shape[2:], *geo)], axis=1)
    flat = fields.reshape(fields.shape[0], -1, *fields.shape[3:])  # [N, taps * (C-k), *OS]
    return field_stats(flat, axis=1)


def conv_certified_mask(arrays, k, geo):
    xmax, xnorm = conv_field_stats(arrays, k, geo)
    return certified_mask(arrays["partial"], conv_base(arrays), xmax, xnorm, arrays["w_pos_sum"],
                          arrays["w_pos_norm"], out_axis=1)


# The shared geometries plus a map of several dense and sparse blocks and windows that lie
# wholly in the padding; the order keeps each geometry's test id.
RULE_GEOMETRIES = [
    *CONV_GEOMETRIES[:5],
    ((20, 20), (3, 3), (1, 2), (1, 1, 1, 1), None, None),
    *CONV_GEOMETRIES[5:],
    ((5,), (3,), None, (4, 4), None, None),
]
GEOMETRY_IDS = [f"{len(g[0])}d-{i}" for i, g in enumerate(RULE_GEOMETRIES)]


@pytest.mark.parametrize("geometry", RULE_GEOMETRIES, ids=GEOMETRY_IDS)
@pytest.mark.parametrize("residual", [False, True])
def test_conv_statstest_prunes_exactly(geometry, residual):
    rng = np.random.default_rng(7)
    channels, k = 12, 4
    arrays, attrs, geo = conv_case(rng, 2, channels, 6, *geometry[:2], k, *geometry[2:], residual=residual)
    _, z = conv_stats_mask(arrays, k, 0.0)
    z_crit = z_quantile(z, 0.4)
    mask, _ = conv_stats_mask(arrays, k, z_crit)
    y, stats = run(ops.CONV_RELU, arrays, {**attrs, "rule": "statstest", "z_crit": z_crit})
    check_result(y, stats, full_conv(arrays, k, geo), mask)


@pytest.mark.parametrize("geometry", RULE_GEOMETRIES, ids=GEOMETRY_IDS)
@pytest.mark.parametrize("residual", [False, True])
def test_conv_certified_prunes_exactly(geometry, residual):
    rng = np.random.default_rng(8)
    channels, k = 12, 8
    arrays, attrs, geo = conv_case(rng, 2, channels, 6, *geometry[:2], k, *geometry[2:], residual=residual,
                                   nonneg=True)
    arrays = prune_share(arrays, lambda a, k=k, geo=geo: conv_certified_mask(a, k, geo), 0.4)
    mask = conv_certified_mask(arrays, k, geo)
    full = full_conv(arrays, k, geo)
    y, stats = run(ops.CONV_RELU, arrays, {**attrs, "rule": "certified"})
    check_result(y, stats, full, mask)
    assert not np.any(mask & (full > 0))


def boundary_inputs(rng, size, t_k, t_n, z_crit):
    """partial, partial_sq and base (float32) whose StatsTest z lies within a few ulps of
    z_crit (a dyadic number), or whose m or v lies within a few ulps of 0: the decisions
    the conv op's fast filter must leave to the exact formula (conv_tail_impl.h)."""
    kind = rng.integers(0, 4, size)
    # exact ties: partial = t_k mu, partial_sq = t_k (t_k / z^2 + 1) mu^2 give mean = mu,
    # v = t_k mu^2 / z^2, z = mu / |mu / z| = z_crit exactly (mu of 7 bits keeps it all
    # exact); base = mu t_n r moves z off the tie by about r (relative), from 0 to 1e-6
    zt = z_crit or 2.0
    mu = np.sign(zt) * (rng.integers(1, 128, size) * 2.0 ** rng.integers(-30, 30, size))
    r = np.where(rng.random(size) < 0.1, 0.0, rng.choice([-1.0, 1.0], size) * 10.0 ** rng.uniform(-18, -6, size))
    p = t_k * mu
    sq = t_k * (t_k / zt**2 + 1) * mu**2
    base = mu * t_n * r
    # m near 0: base = -t_n p / t_k, rounded to float32, times (1 + tiny)
    p1 = rng.standard_normal(size) * 10.0 ** rng.uniform(-10, 10, size)
    base1 = -t_n * f64(np.float32(p1)) / t_k * (1 + rng.choice([-1.0, 1.0], size) * 10.0 ** rng.uniform(-17, -6, size))
    sq1 = f64(np.float32(p1)) ** 2 / t_k * rng.uniform(1.0, 3.0, size)
    # v near 0: partial_sq = partial^2 / t_k within a few ulps
    sq2 = f64(np.float32(p1)) ** 2 / t_k
    base2 = rng.standard_normal(size) * np.abs(p1) * t_n / t_k * 0.5
    p = np.where(kind == 0, p, np.where(kind == 3, rng.standard_normal(size), p1))
    sq = np.where(kind == 0, sq, np.where(kind == 1, sq1, np.where(kind == 2, sq2, rng.random(size) * 3)))
    base = np.where(kind == 0, base, np.where(kind == 1, base1, np.where(kind == 2, base2, rng.standard_normal(size))))
    p, sq, base = p.astype(np.float32), sq.astype(np.float32), base.astype(np.float32)
    ulps = rng.integers(-3, 4, size).astype(np.int32) * (kind == 2)  # nudge partial_sq by whole ulps
    sq = np.where(sq > 0, (sq.view(np.int32) + ulps).view(np.float32), sq)
    return p, sq, base


@pytest.mark.parametrize("z_crit", [-2.0, 2.0, 0.0, -0.5, 0.25, -4.0])
def test_conv_statstest_decides_exactly_at_the_boundary(z_crit):
    """Ties and near-ties of z with z_crit, m and v near 0: the mask still equals the
    exact float64 formula, element for element."""
    rng = np.random.default_rng(16)
    channels, k, outs, width = 16, 5, 3, 2000  # kernel 3: t_k = 15, t_n = 48 (not powers of 2)
    arrays, attrs, geo = conv_case(rng, 1, channels, outs, (width + 2,), (3,), k)
    t_k, t_n = 3 * k, 3 * channels
    p, sq, base = boundary_inputs(rng, arrays["partial"].size, t_k, t_n, z_crit)
    arrays["partial"] = p.reshape(arrays["partial"].shape)
    arrays["partial_sq"] = sq.reshape(arrays["partial"].shape)
    arrays["bias"] = np.zeros(outs, np.float32)
    arrays["residual"] = base.reshape(arrays["partial"].shape)  # base = 0 + residual, exactly
    mask, z = conv_stats_mask(arrays, k, z_crit)
    if z_crit != 0:
        near = np.abs(z / z_crit - 1) < 1e-12
        assert np.sum(z == np.float64(z_crit)) > 20, "exact ties"
        assert mask[near].sum() > 20 and (~mask[near]).sum() > 20, "the sweep must straddle the boundary"
    y, stats = run(ops.CONV_RELU, arrays, {**attrs, "rule": "statstest", "z_crit": z_crit})
    assert stats.tolist() == [int(mask.sum()), mask.size]
    assert np.all(y[mask] == 0)
    full = full_conv(arrays, k, geo)
    kept = ~mask & np.isfinite(full)
    scale = np.maximum(np.abs(full), 1.0)  # the partial sums span 40 orders of magnitude
    assert np.all(np.abs(f64(y[kept]) - act(full[kept])) <= 1e-4 * scale[kept])


def test_conv_rules_clip_and_threads():
    rng = np.random.default_rng(9)
    arrays, attrs, geo = conv_case(rng, 3, 24, 20, (20, 20), (3, 3), 8, strides=(1, 2), pads=(1, 1, 1, 1),
                                   residual=True, nonneg=True)
    arrays["residual"] = arrays["residual"] * np.float32(6)  # some outputs positive despite the shift
    arrays = prune_share(arrays, lambda a: conv_certified_mask(a, 8, geo), 0.25)
    # a power of 2 (exact) so that the cap of 6 is reached
    scale = np.float32(2.0 ** np.ceil(np.log2(12.0 / act(full_conv(arrays, 8, geo)).max())))
    for name in ("partial", "bias", "residual", "w_tail", "w_pos_sum", "w_pos_norm"):
        arrays[name] = arrays[name] * scale
    arrays["partial_sq"] = arrays["partial_sq"] * (scale * scale)
    full = full_conv(arrays, 8, geo)
    _, z = conv_stats_mask(arrays, 8, 0.0)
    for rule, extra, mask in (
        ("statstest", {"z_crit": z_quantile(z, 0.5)}, conv_stats_mask(arrays, 8, z_quantile(z, 0.5))[0]),
        ("certified", {}, conv_certified_mask(arrays, 8, geo)),
    ):
        a = {**attrs, "rule": rule, "clip_max": 6.0, **extra}
        y1, s1 = run(ops.CONV_RELU, arrays, a, threads=1)
        y2, s2 = run(ops.CONV_RELU, arrays, a, threads=2)
        check_result(y1, s1, full, mask, clip_max=6.0)
        assert np.any(y1 == np.float32(6.0))
        assert np.array_equal(y1, y2) and np.array_equal(s1, s2)


@pytest.mark.parametrize("spatial,kernel,pads", [((9, 9), (3, 3), (1, 1, 1, 1)), ((20,), (3,), (2, 2))])
def test_conv_certified_negative_or_nan_tail_input_keeps_its_fields(spatial, kernel, pads):
    rng = np.random.default_rng(10)
    k = 6
    arrays, attrs, geo = conv_case(rng, 2, 10, 8, spatial, kernel, k, pads=pads, nonneg=True, shift=-3.0)
    r = len(spatial)
    arrays["x"][(0, k + 1) + (4,) * r] = np.float32(-0.5)  # a tail channel of sample 0
    arrays["x"][(1, 9) + (0,) * r] = np.nan  # the last channel of sample 1, at the corner
    arrays["x"][(1, 0) + (6,) * r] = np.float32(-2.0)  # a head channel: partial only, not the bound
    xmax, _ = conv_field_stats(arrays, k, geo)
    bad = np.isnan(xmax)  # [N, *OS]: the fields holding one of the tail values above
    assert bad[0].sum() == np.prod(kernel) and bad[1].sum() > 0
    mask = conv_certified_mask(arrays, k, geo)
    y, stats = run(ops.CONV_RELU, arrays, {**attrs, "rule": "certified"})
    assert not mask.transpose(1, 0, *range(2, 2 + r))[:, bad].any()
    assert mask.sum() > 0.5 * mask.size
    assert np.all(y[mask] == 0)
    assert stats.tolist() == [int(mask.sum()), mask.size]
    full = full_conv(arrays, k, geo)
    finite = ~np.isnan(full)
    assert np.allclose(y[~mask & finite], act(full)[~mask & finite], rtol=1e-4, atol=1e-5)
    assert np.all(np.isnan(y[~mask & ~finite]))


def test_conv_certified_never_prunes_a_positive_output():
    rng = np.random.default_rng(11)
    pruned = 0
    for draw in range(30):
        spatial, kernel, strides, pads, dilations, auto_pad = RULE_GEOMETRIES[draw % len(RULE_GEOMETRIES)]
        channels = int(rng.integers(6, 24))
        k = int(rng.integers(1, channels))
        arrays, attrs, geo = conv_case(rng, 2, channels, int(rng.integers(2, 12)), spatial, kernel, k, strides,
                                       pads, dilations, auto_pad, residual=draw % 2 == 0, nonneg=True)
        arrays["x"] = (arrays["x"] * (rng.random(arrays["x"].shape) < 0.6)).astype(np.float32)
        arrays = prune_share(arrays, lambda a, k=k, geo=geo: conv_certified_mask(a, k, geo), float(rng.uniform(0.05, 0.9)))
        full = full_conv(arrays, k, geo)
        y, stats = run(ops.CONV_RELU, arrays, {**attrs, "rule": "certified"})
        mask = conv_certified_mask(arrays, k, geo)
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


# ------------------------------------------------------------------ errors


def error_cases():
    rng = np.random.default_rng(15)
    dense, _ = dense_case(rng, (4,), 20, 8, 5, nonneg=True)
    conv, cattrs, _ = conv_case(rng, 1, 6, 3, (5, 5), (3, 3), 2, pads=(1, 1, 1, 1), nonneg=True)
    return [(ops.DENSE_RELU, dense, {"k": 5, "threshold": 0.0}), (ops.CONV_RELU, conv, cattrs)]


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


# ------------------------------------------------------------------ kernel sets


def test_conv_rules_agree_across_kernel_sets():
    """The conv decisions are built once per instruction set (conv_tail_*.cc): the conv
    tests above, rerun with each set forced, must pass too."""
    env_name = "EXPRUNE_CONV_KERNELS"
    if os.environ.get(env_name):
        pytest.skip("already running under a forced kernel set")
    for kernels in ("generic", "avx2"):
        env = {**os.environ, env_name: kernels}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)), "-k",
             "conv and not kernel_sets"],
            env=env, capture_output=True, text=True, cwd=str(Path(__file__).parent),
        )
        assert done.returncode == 0, f"{kernels}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
