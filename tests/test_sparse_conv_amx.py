"""ExPruneSparseConv's tile path (custom_ops/src/sparse_conv_amx.cc): on a CPU with
AMX-BF16 tiles, an image whose non-zero share is at least 0.25 (more past 128 channels)
runs as a dense convolution of three-way bfloat16 splits. These tests run where the CPU
has the tiles and skip elsewhere; test_sparse_conv_op.py reruns all its cases with the
path forced ($EXPRUNE_CONV_KERNELS=amx)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sparse_conv_case import case, check, cpu_has_tiles, op_model, reference_model, run, run_plain, sparse_input

from exprune_onnx import ops

FORCED = os.environ.get("EXPRUNE_CONV_KERNELS")
pytestmark = [
    pytest.mark.skipif(not cpu_has_tiles(), reason="this CPU has no AMX-BF16 tiles"),
    pytest.mark.skipif(bool(FORCED) and FORCED != "amx", reason=f"kernels forced to {FORCED}"),
]


def _stats(x, weight, b=None, attrs=None):
    model = op_model(x.shape, ops.sparse_conv_weights(weight), b, None, attrs or {}, stats=True)
    return run(model, {"x": x})


def test_a_dense_image_runs_on_the_tiles_and_a_sparse_one_is_listed():
    """The inputs-read count tells the paths apart: every input on the tiles, the non-zero
    ones in the lists. One batch holds both kinds, and both match Conv."""
    rng = np.random.default_rng(1)
    x, weight, b, attrs = case(rng, batch=3, channels=48, outs=40, size=(12, 20), zeros=0.5,
                               attrs={"pads": [1, 1, 1, 1]})
    x[1] = sparse_input(rng, x.shape[1:], 0.95)
    y, stats = check(x, weight, b, attrs, stats=True)
    tiled = x[0].size + x[2].size if FORCED != "amx" else x.size
    listed = 0 if FORCED == "amx" else np.count_nonzero(x[1])
    assert stats.tolist() == [tiled + listed, x.size]


@pytest.mark.skipif(FORCED == "amx", reason="the tiles are forced")
@pytest.mark.parametrize("channels,least", [(64, 21), (128, 25), (256, 29), (512, 33)])
def test_the_share_that_goes_to_the_tiles_rises_with_the_channels(channels, least):
    """Every plane 10 x 10 with exactly k non-zeros: k = least + 1 runs on the tiles, least - 1
    is listed (0.21 of the inputs up to 64 channels, 0.04 more per doubling)."""
    rng = np.random.default_rng(channels)
    weight = (rng.standard_normal((16, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
    for k, tiled in ((least + 1, True), (least - 1, False)):
        x = np.zeros((1, channels, 100), np.float32)
        for plane in x[0]:
            plane[rng.permutation(100)[:k]] = rng.standard_normal(k)
        x = x.reshape(1, channels, 10, 10)
        stats = check(x, weight, None, {"pads": [1, 1, 1, 1]}, stats=True)[1]
        assert stats[0] == (x.size if tiled else np.count_nonzero(x)), (k, stats)


def test_an_image_holding_inf_or_nan_is_listed():
    """The bfloat16 split cannot carry Inf or NaN: that image goes to the lists (its inputs
    read are its non-zeros), the others stay on the tiles, and NaN and Inf spread as in Conv."""
    rng = np.random.default_rng(2)
    x, weight, b, attrs = case(rng, batch=2, channels=40, outs=24, size=(9, 18), zeros=0.3,
                               attrs={"pads": [1, 1, 1, 1]})
    x[0, 3, 4, 5], x[0, 30, 0, 17] = np.inf, np.nan
    y, stats = check(x, weight, b, attrs, stats=True)
    assert np.isnan(y[0]).any() and np.isinf(y[0]).any() and np.isfinite(y[1]).all()
    assert stats.tolist() == [np.count_nonzero(x[0]) + x[1].size, x.size]
    # Also where the conv never reads it: the last row and column at stride 2.
    for where in ((0, 5, 9, 3), (0, 7, 2, 33)):  # 4 x 16 outputs read rows 0-8, columns 0-32
        x = sparse_input(rng, (1, 40, 10, 34), 0.3)
        x[where] = np.inf
        stats = check(x, weight, b, {"strides": [2, 2]}, stats=True)[1]
        assert stats.tolist() == [np.count_nonzero(x), x.size]


def test_values_the_tile_unit_would_flush_go_to_the_lists():
    """The tile unit reads subnormal bfloat16 as 0 and flushes subnormal products: an image
    with a non-zero under 2^-40 is listed, and weights with one never run on the tiles."""
    rng = np.random.default_rng(5)
    x, weight, b, attrs = case(rng, batch=2, channels=32, outs=32, size=(8, 16), zeros=0.3, bias=False,
                               attrs={"pads": [1, 1, 1, 1]})
    x[0] *= np.float32(1e-38)  # every product under 2^-110
    y, stats = check(x, weight, None, attrs, stats=True)
    assert stats.tolist() == [np.count_nonzero(x[0]) + x[1].size, x.size]
    want = run_plain(reference_model(x.shape, weight, None, None, attrs), {"x": x})[0]
    assert np.abs(y[0] - want[0]).max() <= 1e-5 * np.abs(want[0]).max()
    tiny = weight.copy()
    tiny[3, 4, 1, 1] = np.float32(1e-13)
    stats = check(x, tiny, None, attrs, stats=True)[1]
    assert stats.tolist() == [np.count_nonzero(x), x.size]


GEOMETRIES = {
    "3x3_pad1_wide": dict(channels=70, outs=50, size=(5, 37), attrs={"pads": [1, 1, 1, 1]}),
    "3x3_stride2_asym": dict(channels=33, outs=17, size=(11, 19), attrs={"strides": [2, 2], "pads": [1, 2, 0, 1]}),
    "3x3_dilation2": dict(channels=32, outs=64, size=(10, 10), attrs={"dilations": [2, 2], "pads": [2, 1, 2, 1]}),
    "1x1": dict(channels=96, outs=130, size=(7, 7), kernel=(1, 1)),
    "1x1_stride2": dict(channels=64, outs=32, size=(14, 14), kernel=(1, 1), attrs={"strides": [2, 2]}),
    "5x5_same_upper": dict(channels=3, outs=7, size=(16, 16), kernel=(5, 5), attrs={"auto_pad": "SAME_UPPER"}),
    "one_column": dict(channels=36, outs=36, size=(9, 1), kernel=(3, 1), attrs={"pads": [1, 0, 1, 0]}),
    "stride_2x1": dict(channels=40, outs=33, size=(8, 17), attrs={"strides": [2, 1], "pads": [0, 1, 1, 0]}),
    # 16 outputs a row read no column past 32: the packed rows end before the input's do
    "stride2_last_column_unread": dict(channels=40, outs=20, size=(6, 34), attrs={"strides": [2, 2]}),
    "1x1_stride3_last_columns_unread": dict(channels=32, outs=32, size=(3, 50), kernel=(1, 1),
                                            attrs={"strides": [1, 3]}),
}


@pytest.mark.parametrize("name", GEOMETRIES)
def test_the_tiles_match_conv(name):
    """Channel and output counts that fill no whole tile, odd position counts (a pair's
    second tile repeats the first), strides, dilations, a residual and ReLU6."""
    spec = GEOMETRIES[name]
    rng = np.random.default_rng(len(name))
    x, weight, b, attrs = case(rng, zeros=0.4, **spec)
    stats = check(x, weight, b, attrs, stats=True)[1]
    assert stats.tolist() == [x.size, x.size]  # on the tiles
    shape = run_plain(reference_model(x.shape, weight, b, None, attrs), {"x": x})[0].shape
    residual = rng.standard_normal(shape).astype(np.float32)
    check(x, weight, b, {**attrs, "activation": "relu", "clip_max": 6.0}, residual=residual, threads=2)


def test_the_error_is_float32_rounding():
    """Against float64, the tiles' error per output is within a few float32 roundings of
    the sum of |x * w| (the six part products leave out at most 2^-23 of each), and no
    larger than onnxruntime's own Conv's by more than that."""
    rng = np.random.default_rng(3)
    x, weight, b, attrs = case(rng, channels=256, outs=64, size=(14, 14), zeros=0.3, bias=False,
                               attrs={"pads": [1, 1, 1, 1]})
    x = np.abs(x) * np.float32(1e3)  # large values: the split's parts all matter
    y = check(x, weight, None, attrs)[0].astype(np.float64)
    conv = run_plain(reference_model(x.shape, weight, None, None, attrs), {"x": x})[0].astype(np.float64)
    xd, wd = x.astype(np.float64), weight.astype(np.float64)
    cols = np.lib.stride_tricks.sliding_window_view(np.pad(xd, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), (2, 3))
    exact = np.einsum("nchwij,mcij->nmhw", cols, wd)
    magnitude = np.einsum("nchwij,mcij->nmhw", np.abs(cols), np.abs(wd))
    bound = 2.0**-23 * magnitude
    assert np.all(np.abs(y - exact) <= 8 * bound)
    assert np.abs(y - exact).max() <= np.abs(conv - exact).max() + bound.max()


def test_forcing_the_tiles_takes_every_image():
    """$EXPRUNE_CONV_KERNELS=amx runs even a 95%-zero image on the tiles (for tests), and
    any other set keeps them off."""
    script = ("import numpy as np, test_sparse_conv_amx as t, sparse_conv_case as c;"
              "rng = np.random.default_rng(4);"
              "x, w, b, a = c.case(rng, channels=40, outs=24, size=(9, 9), zeros=0.95, attrs={'pads': [1, 1, 1, 1]});"
              "d = c.sparse_input(rng, x.shape, 0.2);"
              "print(int(t._stats(x, w, b, a)[1][0]), int(t._stats(d, w, b, a)[1][0]), x.size,"
              " np.count_nonzero(x), np.count_nonzero(d))")
    seen = {}
    for kernels in ("amx", "avx512"):
        done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "EXPRUNE_CONV_KERNELS": kernels},
                              capture_output=True, text=True, cwd=str(Path(__file__).parent))
        assert done.returncode == 0, done.stderr[-2000:]
        seen[kernels] = [int(v) for v in done.stdout.split()]
    sparse, dense, size, nz_sparse, nz_dense = seen["amx"]
    assert (sparse, dense) == (size, size)
    assert seen["avx512"][:2] == [nz_sparse, nz_dense]
