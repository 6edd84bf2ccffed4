"""Numpy references of the ExPrune ops' StatsTest and Certified rules as docs/custom_ops.md
states them, and the dense and conv cases the rule tests run them on (test_custom_op_rules.py,
test_custom_op_rules_conv.py)."""

from __future__ import annotations

import numpy as np
from helpers import NODE
from op_cases import CONV_GEOMETRIES, onnx_pads, run_single_op

from exprune_onnx import ops

INF = float("inf")


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


def error_cases():
    rng = np.random.default_rng(15)
    dense, _ = dense_case(rng, (4,), 20, 8, 5, nonneg=True)
    conv, cattrs, _ = conv_case(rng, 1, 6, 3, (5, 5), (3, 3), 2, pads=(1, 1, 1, 1), nonneg=True)
    return [(ops.DENSE_RELU, dense, {"k": 5, "threshold": 0.0}), (ops.CONV_RELU, conv, cattrs)]
