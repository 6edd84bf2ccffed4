"""The StatsTest and Certified decision rules of the conv op (ExPruneConvRelu), op level, as
test_custom_op_rules.py checks the dense op's: exact masks against rule_references.py at
every shared geometry, the boundary, clipping and threads, and every kernel set agreeing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rule_references import (
    GEOMETRY_IDS,
    RULE_GEOMETRIES,
    act,
    boundary_inputs,
    check_certified,
    check_result,
    conv_case,
    conv_certified_mask,
    conv_field_stats,
    conv_stats_mask,
    f64,
    full_conv,
    prune_share,
    run,
    z_quantile,
)

from exprune_onnx import ops


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
