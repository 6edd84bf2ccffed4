"""ExPruneSparseConv (custom_ops/src/sparse_conv.cc): Conv (+ bias, + residual, then
none/Relu/Clip(0, c)) that visits only the non-zero inputs, against onnxruntime's own
Conv (+Add, +Relu/Clip) at optimisations off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from sparse_conv_case import NODE, case, check, cpu_has_tiles, inputs_read, op_model, run, sparse_input

from exprune_onnx import ops

ZEROS = (0.0, 0.5, 0.9, 1.0)

GEOMETRIES = {
    "3x3_pad1": dict(attrs={"pads": [1, 1, 1, 1]}),
    "3x3_valid": dict(),
    "1x1": dict(kernel=(1, 1)),
    "1x1_stride2": dict(kernel=(1, 1), attrs={"strides": [2, 2]}),
    "5x5_same_lower": dict(kernel=(5, 5), attrs={"auto_pad": "SAME_LOWER"}),
    "3x3_stride2_asym": dict(attrs={"strides": [2, 2], "pads": [1, 2, 0, 1]}),
    "3x3_same_upper_stride2": dict(attrs={"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "3x3_dilation2": dict(attrs={"dilations": [2, 2], "pads": [2, 1, 2, 1]}),
    "3x3_stride_2x1": dict(attrs={"strides": [2, 1], "pads": [0, 1, 1, 0]}),
    "1x3_valid": dict(kernel=(1, 3), attrs={"auto_pad": "VALID"}),
    "group2": dict(channels=6, outs=10, attrs={"group": 2, "pads": [1, 1, 1, 1]}),
    "depthwise": dict(channels=12, outs=12, attrs={"group": 12, "pads": [1, 1, 1, 1]}),
    "depthwise_x2": dict(channels=5, outs=10, attrs={"group": 5, "strides": [2, 2]}),
    # 1-D convs (text and audio CNNs) run as 2-D ones of unit height
    "1d_k3_pad1": dict(size=(11,), kernel=(3,), attrs={"pads": [1, 1]}),
    "1d_k5_stride2_dilation2": dict(size=(23,), kernel=(5,), attrs={"strides": [2], "dilations": [2], "pads": [2, 1]}),
    "1d_same_upper": dict(size=(10,), kernel=(4,), attrs={"auto_pad": "SAME_UPPER"}),
    "1d_group2_wide": dict(channels=6, outs=16, size=(70,), kernel=(3,), attrs={"group": 2}),
    # One output along an axis: it never steps, whatever the stride (a stride of 2^20 took 1.2 GB, 2^24 over a minute,
    # and 2^32 crashed a tampered model; they are now the same work as a stride of 1).
    "one_step_stride_2^24": dict(attrs={"strides": [2**24, 2**24], "pads": [1, 0, 1, 0]}),
    "one_step_same_upper": dict(size=(3, 9), attrs={"auto_pad": "SAME_UPPER", "strides": [4096, 3]}),
    "1d_one_step_stride": dict(size=(11,), kernel=(3,), attrs={"strides": [2**20]}),
}


@pytest.mark.parametrize("zeros", ZEROS)
@pytest.mark.parametrize("name", GEOMETRIES)
def test_matches_onnx_conv(name, zeros):
    rng = np.random.default_rng([len(name), int(zeros * 10)])
    check(*case(rng, zeros=zeros, **GEOMETRIES[name]))


@pytest.mark.parametrize("channels,outs,kernel,size", [(200, 40, (5, 5), (5, 70)), (700, 20, (1, 1), (2, 130)),
                                                      (300, 17, (3, 3), (4, 9))])
def test_many_channels_in_chunks(channels, outs, kernel, size):
    """Past a chunk of input channels (partial sums kept between chunks) and a row segment."""
    rng = np.random.default_rng([channels, outs])
    pads = [kernel[0] // 2] * 4
    for zeros in (0.5, 0.95):
        check(*case(rng, channels=channels, outs=outs, kernel=kernel, size=size, zeros=zeros,
                    attrs={"pads": pads, "activation": "relu"}))


def _exact_share(rng, shape, per_plane: int) -> np.ndarray:
    """Normal values with exactly `per_plane` non-zeros in each channel plane, at random places."""
    n, c, h, w = shape
    x = np.zeros((n * c, h * w), np.float32)
    for row in x:
        row[rng.permutation(h * w)[:per_plane]] = rng.standard_normal(per_plane).astype(np.float32)
    return x.reshape(shape)


@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1]}, {"pads": [1, 1, 1, 1], "group": 2},
                                   {"strides": [2, 2]}, {"dilations": [2, 2], "pads": [2, 2, 2, 2]}])
def test_chunkings_from_dense_to_sparse(attrs):
    """200 channels per group, cut into chunks by the non-zero share (sparse_conv_run.cc
    PickChunk, estimated on every 8th channel): from all non-zero (the most chunks) to 10%
    non-zeros (one), either side of the switch from 2 chunks to 1 (39 and 38 a plane),
    strided, dilated, grouped."""
    rng = np.random.default_rng(len(attrs))
    group = attrs.get("group", 1)
    shape = (1, 200 * group, 8, 20)
    weight = (rng.standard_normal((40, 200, 3, 3)) / np.sqrt(1800)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    for per_plane in (160, 96, 64, 39, 38, 16):
        check(_exact_share(rng, shape, per_plane), weight, b, {**attrs, "activation": "relu"})


def test_the_chunking_switches_with_the_sampled_share():
    """A switch seen through the summation order. 200 channels want 2 chunks up to 133
    channels a chunk, one from 134 (the nearest whole number of chunks), and a chunk wants
    32 / share channels: 956 non-zeros of the 4000 sampled (channels 0, 8, .., 192 of 8 x 20)
    give 133.9 -> 2 chunks, 955 give 134.0 -> 1, under every kernel set (between the fewest
    and the most channels of each). Removing one non-zero from a sampled channel (0)
    changes the rounding of every output; removing one from an unsampled channel (1)
    changes only the outputs that read it."""
    if os.environ.get("EXPRUNE_CONV_KERNELS") == "amx" and cpu_has_tiles():
        pytest.skip("the tiles take every image: nothing is listed")
    rng = np.random.default_rng(12)
    x = _exact_share(rng, (1, 200, 8, 20), 38)  # 25 x 38 = 950 sampled non-zeros
    for c in range(8, 56, 8):  # six more, in sampled channels other than 0
        plane = x[0, c].reshape(-1)
        plane[np.flatnonzero(plane == 0)[0]] = 1.0
    assert np.count_nonzero(x[0, ::8]) == 956
    weight = (rng.standard_normal((40, 200, 3, 3)) / np.sqrt(1800)).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1]}
    model = op_model(x.shape, ops.sparse_conv_weights(weight), None, None, attrs)
    y = run(model, {"x": x})[0]
    far = np.ones(y.shape, bool)
    changed = {}
    for c in (0, 1):
        iy, ix = np.argwhere(x[0, c] != 0)[0]
        z = x.copy()
        z[0, c, iy, ix] = 0.0
        far[:, :, max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2] = False
        changed[c] = z
    below, same = (run(model, {"x": changed[c]})[0] for c in (0, 1))
    assert np.array_equal(y[far], same[far])
    assert not np.array_equal(y[far], below[far])
    check(changed[0], weight, None, attrs)


def test_a_batch_of_dense_and_sparse_images():
    """Each image picks its own chunking: a mixed batch runs in runs of equal choice, and
    each image's output is summed exactly as when it runs alone."""
    rng = np.random.default_rng(11)
    shape = (1, 200, 8, 12)
    x = np.concatenate([_exact_share(rng, shape, 96 * k // 10) for k in (6, 1, 1, 6, 9)])
    weight = (rng.standard_normal((33, 200, 3, 3)) / np.sqrt(1800)).astype(np.float32)
    b = rng.standard_normal(33).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1]}
    whole = check(x, weight, b, attrs)[0]
    one = op_model((1, *x.shape[1:]), ops.sparse_conv_weights(weight), b, None, attrs)
    for n in range(x.shape[0]):
        assert np.array_equal(whole[n:n + 1], run(one, {"x": x[n:n + 1]})[0])


WAVE_GEOMETRIES = {
    "3x3_pad1": dict(attrs={"pads": [1, 1, 1, 1]}),
    "3x3_valid": dict(),
    "3x3_stride2_asym": dict(attrs={"strides": [2, 2], "pads": [1, 2, 0, 1]}),
    "3x3_dilation2": dict(attrs={"dilations": [2, 2], "pads": [2, 1, 2, 1]}),
    "5x5_stride_2x1": dict(kernel=(5, 5), attrs={"strides": [2, 1], "pads": [2, 2, 2, 2]}),
    "1x1_stride2": dict(kernel=(1, 1), attrs={"strides": [2, 2]}),
    "depthwise": dict(outs=32, attrs={"group": 32, "pads": [1, 1, 1, 1]}),
}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", WAVE_GEOMETRIES)
def test_few_weights_run_in_waves_of_rows(name, batch):
    """Layers of few weights with over 256 KB of lists run in up to four waves of output
    rows (sparse_conv_run.cc, WaveRows): 32 channels x 90 wide at 30% zeros list about
    16 KB an input row and image, so these 70 rows take four waves, each listing the
    input rows no wave before it read (the last lists the rest, some never read)."""
    rng = np.random.default_rng([len(name), batch])
    geometry = {"channels": 32, "outs": 40, "size": (70, 90), "zeros": 0.3, **WAVE_GEOMETRIES[name]}
    x, weight, b, attrs = case(rng, batch=batch, **geometry)
    got = check(x, weight, b, {**attrs, "activation": "relu"}, stats=True)
    assert got[1][0] == inputs_read(x, attrs.get("group", 1))
    # On two threads a layer runs in one wave once its tasks are seen on both: the same bits.
    assert np.array_equal(check(x, weight, b, {**attrs, "activation": "relu"}, threads=2)[0], got[0])


@pytest.mark.parametrize("channels", [1, 15, 16, 17, 33])
def test_listing_partial_blocks_of_channels_and_pixels(channels):
    """The AVX-512 listing transposes 16 channels x 16 pixels at a time: channel counts and
    widths short of, at and past a block, with NaN and Inf in the last partial block."""
    rng = np.random.default_rng(channels)
    for width in (1, 15, 16, 17, 31):
        x, weight, b, attrs = case(rng, channels=channels, outs=19, size=(3, width), zeros=0.5,
                                   attrs={"pads": [1, 1, 1, 1]})
        x[0, -1, 1, -1], x[0, -1, 0, 0] = np.nan, np.inf
        check(x, weight, b, attrs)


def clustered_input(rng, shape, zeros):
    """Zeros in runs of 4 along each row, as a real ReLU's cluster: most non-zeros have a
    non-zero right neighbour, so the op pairs columns (sparse_conv_run.cc kPairShare)."""
    x = rng.standard_normal(shape).astype(np.float32)
    runs = rng.random((*shape[:3], -(-shape[3] // 4))) < zeros
    x[np.repeat(runs, 4, axis=3)[..., : shape[3]]] = 0.0
    return x


def isolated_input(rng, shape):
    """A checkerboard in every channel: no non-zero has a non-zero right neighbour, so no
    column is paired."""
    x = rng.standard_normal(shape).astype(np.float32)
    n, c, h, w = shape
    parity = (np.arange(h)[:, None] + np.arange(w)[None, :] + np.arange(c)[:, None, None]) % 2
    x[:, parity == 1] = 0.0
    return x


@pytest.mark.parametrize("pattern", ["clustered", "isolated", "dense"])
@pytest.mark.parametrize("geometry", ["3x3_pad1", "3x3_valid", "3x3_stride2_asym", "1x1", "5x5_same_lower"])
def test_paired_and_unpaired_columns(pattern, geometry):
    """Columns 2p and 2p + 1 list their shared channels first (sparse_conv_tile.h), or
    nothing is shared: every tile reads either kind of list, at odd and even widths and
    left pads, with channel chunks and both tile widths of two vectors (12 and 14 on
    AVX-512: 12, 24 and 36 are covered better by 12, 14, 28 and 56 by 14)."""
    rng = np.random.default_rng([len(pattern), len(geometry)])
    params = GEOMETRIES[geometry]
    for width in (12, 13, 14, 24, 28, 36):
        channels = 150 if width == 36 else 24
        x, weight, b, attrs = case(rng, channels=channels, outs=40, size=(5, width), kernel=params.get("kernel", (3, 3)),
                                   attrs=params.get("attrs"))
        if pattern == "clustered":
            x = clustered_input(rng, x.shape, 0.4)
        elif pattern == "isolated":
            x = isolated_input(rng, x.shape)
        else:
            x = rng.standard_normal(x.shape).astype(np.float32)
        check(x, weight, b, attrs)


@pytest.mark.parametrize("pattern", ["clustered", "isolated", "iid"])
@pytest.mark.parametrize("geometry", ["3x3_pad1", "3x3_valid", "3x3_stride2_asym", "1x1"])
def test_sparse_rows_listed_by_their_bits(pattern, geometry):
    """Under a 0.2 non-zero share, rows of 32 columns and more are listed from bit masks of
    each channel's row, 64 columns to a word (sparse_conv_tile_avx512.cc ListFew), on CPUs
    with the tile unit and, on any CPU with AVX-512, when this file runs with the tiles
    forced (test_every_kernel_set_passes_these_tests): rows of one word, of several and
    past a whole one, even and odd left pads, paired and unpaired columns, NaN and Inf;
    narrower rows as at any share."""
    rng = np.random.default_rng([len(pattern), len(geometry), 9])
    params = GEOMETRIES[geometry]
    for width in (12, 32, 63, 64, 65, 130):
        x, weight, b, attrs = case(rng, channels=40, outs=36, size=(4, width), kernel=params.get("kernel", (3, 3)),
                                   attrs=params.get("attrs"))
        if pattern == "clustered":
            x = clustered_input(rng, x.shape, 0.9)
        elif pattern == "isolated":
            x = isolated_input(rng, x.shape) * (rng.random(x.shape) < 0.2)
        else:
            x = sparse_input(rng, x.shape, 0.9)
        x[0, 3, 1, width - 1], x[0, 38, 2, 0] = np.nan, -np.inf
        assert np.count_nonzero(x[:, ::8]) < 0.2 * x[:, ::8].size
        check(x, weight, b, attrs)


@pytest.mark.parametrize("outs", [1, 7, 17, 40, 70, 130])
@pytest.mark.parametrize("width", [1, 5, 13, 29])
def test_odd_widths_and_channel_counts(outs, width):
    """Widths past and short of every tile, output channels not a multiple of any vector."""
    rng = np.random.default_rng([outs, width])
    check(*case(rng, channels=9, outs=outs, size=(4, width), attrs={"pads": [1, 1, 1, 1]}))


@pytest.mark.parametrize("activation", [{}, {"activation": "none"}, {"activation": "relu"},
                                        {"activation": "relu", "clip_max": 6.0},
                                        {"activation": "relu", "clip_max": 0.0}])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("batch,threads", [(1, 1), (3, 1), (3, 2)])
def test_bias_residual_activation_batch_threads(activation, residual, batch, threads):
    rng = np.random.default_rng([batch, threads, residual, len(activation)])
    x, weight, b, attrs = case(rng, batch=batch, channels=20, outs=24, size=(11, 10), zeros=0.6,
                               attrs={"pads": [1, 1, 1, 1], **activation})
    x *= 4.0  # outputs past clip_max = 6 too
    r = rng.standard_normal((batch, 24, 11, 10)).astype(np.float32) if residual else None
    for bias in (b, None):
        y = check(x, weight, bias, attrs, residual=r, threads=threads)[0]
        if activation.get("activation") == "relu":
            assert y.min() == 0.0
        if "clip_max" in activation:
            assert y.max() == activation["clip_max"]


@pytest.mark.parametrize("attrs", [{"activation": "relu", "clip_max": 6.0}, {"activation": "relu"}, {}])
def test_1d_with_residual_batch_and_threads(attrs):
    rng = np.random.default_rng(21)
    x, weight, b, attrs = case(rng, batch=3, channels=24, outs=40, size=(37,), kernel=(3,),
                               attrs={"pads": [1, 1]} | attrs)
    residual = rng.standard_normal((3, 40, 37)).astype(np.float32)
    got = check(x, weight, b, attrs, residual=residual, threads=2, stats=True)
    assert got[0].shape == (3, 40, 37) and got[1].tolist() == [inputs_read(x), x.size]


def test_threads_and_batch_do_not_change_the_result():
    """Each output is summed in the same order whatever the batch and the task split."""
    rng = np.random.default_rng(3)
    x, weight, b, attrs = case(rng, batch=3, channels=16, outs=70, size=(23, 19), zeros=0.5,
                               attrs={"pads": [1, 1, 1, 1]})
    model = op_model(x.shape, ops.sparse_conv_weights(weight), b, None, attrs)
    whole = run(model, {"x": x}, threads=2)[0]
    assert np.array_equal(whole, run(model, {"x": x}, threads=1)[0])
    one = op_model((1, *x.shape[1:]), ops.sparse_conv_weights(weight), b, None, attrs)
    for n in range(3):
        assert np.array_equal(whole[n:n + 1], run(one, {"x": x[n:n + 1]})[0])


def test_nan_and_inf_propagate():
    """NaN and Inf are not zero: they are read, and spread as in Conv."""
    rng = np.random.default_rng(4)
    x, weight, b, attrs = case(rng, channels=8, outs=20, size=(9, 9), zeros=0.7, attrs={"pads": [1, 1, 1, 1]})
    x[0, 1, 2, 3], x[0, 5, 7, 7], x[0, 2, 0, 0] = np.nan, np.inf, -np.inf
    y = check(x, weight, b, attrs)[0]
    assert np.isnan(y).any() and np.isinf(y).any()
    check(x, weight, b, {**attrs, "activation": "relu", "clip_max": 6.0})


def test_stats_count_the_nonzero_inputs():
    rng = np.random.default_rng(5)
    for zeros in ZEROS:
        x, weight, b, attrs = case(rng, batch=2, channels=6, outs=5, size=(7, 8), zeros=zeros,
                                   attrs={"group": 1, "pads": [1, 1, 1, 1]})
        x[0, 0, 0, :3] = [np.nan, np.inf, -0.0]  # NaN and Inf count, -0 is a zero
        stats = check(x, weight, b, attrs, stats=True)[1]
        assert stats.dtype == np.int64 and stats.tolist() == [inputs_read(x), x.size]


@pytest.mark.parametrize("outs,kernel", [(16, (3, 3)), (40, (3, 3)), (40, (1, 1)), (7, (3, 3))])
def test_a_fed_weight_input_works_like_a_constant(outs, kernel):
    """A fed w is read in place (a constant one from its blocked copy): a last block of
    output channels that leaves a whole vector empty (40 = 32 + 8) reads only its lanes."""
    rng = np.random.default_rng(6)
    x, weight, b, attrs = case(rng, channels=8, outs=outs, kernel=kernel, zeros=0.5,
                               attrs={"pads": [kernel[0] // 2] * 4})
    w = ops.sparse_conv_weights(weight)
    fed = op_model(x.shape, w, b, None, attrs, w_input=True)
    const = op_model(x.shape, w, b, None, attrs)
    got = run(fed, {"x": x, "w": w})[0]
    np.testing.assert_allclose(got, run(const, {"x": x})[0], rtol=1e-5, atol=1e-5)
    check(x, weight, b, attrs)


def test_empty_batch_and_all_zero_input():
    rng = np.random.default_rng(7)
    x, weight, b, attrs = case(rng, batch=0, channels=4, outs=6, attrs={"pads": [1, 1, 1, 1]})
    model = op_model(x.shape, ops.sparse_conv_weights(weight), b, None, attrs, stats=True)
    y, stats = run(model, {"x": x})
    assert y.shape == (0, 6, 7, 9) and stats.tolist() == [0, 0]
    y = check(np.zeros((1, 4, 7, 9), np.float32), weight, b, attrs)[0]
    assert np.array_equal(y, np.broadcast_to(b[None, :, None, None], y.shape))


def test_model_passes_the_onnx_checker():
    rng = np.random.default_rng(8)
    x, weight, b, attrs = case(rng)
    onnx.checker.check_model(op_model(x.shape, ops.sparse_conv_weights(weight), b, (1, 8, 5, 7), attrs,
                                      stats=True))


def test_weight_layout():
    """w[c, ky, kx, j] = W[(c // (C/group)) * (M/group) + j, c % (C/group), ky, kx]."""
    weight = np.arange(6 * 2 * 3 * 1, dtype=np.float32).reshape(6, 2, 3, 1)
    w = ops.sparse_conv_weights(weight, group=2)
    assert w.shape == (4, 3, 1, 3)
    for c, ky, kx, j in np.ndindex(*w.shape):
        assert w[c, ky, kx, j] == weight[(c // 2) * 3 + j, c % 2, ky, kx]
    w1 = ops.sparse_conv_weights(weight[..., 0], group=2)  # 1-D: the same without ky
    assert w1.shape == (4, 3, 3)
    for c, kx, j in np.ndindex(*w1.shape):
        assert w1[c, kx, j] == weight[(c // 2) * 3 + j, c % 2, kx, 0]


# ------------------------------------------------------------------ errors

def assert_node_error(fn, *words):
    with pytest.raises(Exception) as info:
        fn()
    assert type(info.value).__module__.startswith("onnxruntime"), repr(info.value)
    message = str(info.value)
    assert f"{ops.SPARSE_CONV} node '{NODE}'" in message, message
    for word in words:
        assert word in message, message


def _run(x_shape, w_shape, attrs=None, bias_shape=None, residual_shape=None):
    rng = np.random.default_rng(9)
    x = sparse_input(rng, x_shape, 0.5)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(bias_shape).astype(np.float32) if bias_shape is not None else None
    model = op_model(x_shape, w, b, residual_shape, attrs or {})
    feeds = {"x": x} | ({"r": rng.standard_normal(residual_shape).astype(np.float32)} if residual_shape else {})
    return run(model, feeds)


@pytest.mark.parametrize("x_shape,w_shape,attrs,bias_shape,residual_shape,words", [
    ((1, 4, 6, 6), (3, 3, 3, 5), {}, None, None, ["w must have shape [C, *K, M/group] with C = 4", "[3, 3, 3, 5]"]),
    ((1, 4, 6, 6), (4, 3, 3), {}, None, None, ["w must have shape", "2 kernel dims"]),
    ((1, 4, 6), (4, 3, 3, 5), {}, None, None, ["w must have shape", "1 kernel dims"]),
    ((1, 4, 6, 6, 6), (4, 3, 3, 3, 5), {}, None, None, ["x must have shape [N, C, W] or [N, C, H, W]"]),
    ((1, 4), (4, 5), {}, None, None, ["x must have shape [N, C, W] or [N, C, H, W]"]),
    ((1, 4, 6), (4, 3, 5), {"strides": [1, 1]}, None, None, ["attribute strides has 2 values", "spatial rank 1"]),
    ((1, 4, 6), (4, 3, 5), {"kernel_shape": [3, 3]}, None, None, ["kernel_shape [3, 3] does not match w"]),
    ((1, 4, 2), (4, 3, 5), {}, None, None, ["smaller than the dilated kernel extent 3"]),
    ((1, 4, 6), (4, 3, 5), {}, (5,), (1, 5, 1, 4), ["residual must have the output's shape [1, 5, 4]"]),
    ((1, 4, 6, 6), (4, 3, 3, 5), {"group": 3}, None, None, ["group = 3 does not divide the 4 channels"]),
    ((1, 4, 6, 6), (4, 3, 3, 5), {"kernel_shape": [3, 1]}, None, None, ["kernel_shape [3, 1] does not match w"]),
    ((1, 4, 6, 6), (4, 3, 3, 5), {"strides": [1]}, None, None, ["attribute strides has 1 values"]),
    ((1, 4, 6, 6), (4, 3, 3, 5), {"pads": [1, 1]}, None, None, ["attribute pads has 2 values"]),
    ((1, 4, 2, 6), (4, 3, 3, 5), {}, None, None, ["smaller than the dilated kernel extent 3"]),
    ((1, 4, 6, 6), (4, 3, 3, 5), {}, (4,), None, ["bias must have shape [M] = [5], got [4]"]),
    ((1, 4, 6, 6), (4, 3, 3, 5), {}, (5,), (1, 5, 6, 6), ["residual must have the output's shape [1, 5, 4, 4]"]),
])
def test_bad_inputs_name_the_node(x_shape, w_shape, attrs, bias_shape, residual_shape, words):
    assert_node_error(lambda: _run(x_shape, w_shape, attrs, bias_shape, residual_shape), *words)


@pytest.mark.parametrize("attrs,words", [
    ({"activation": "gelu"}, ["activation = 'gelu' is not one of none, relu"]),
    ({"activation": "relu", "clip_max": -1.0}, ["clip_max = -1", "must be >= 0"]),
    ({"clip_max": 6.0}, ["clip_max is only meaningful with activation = relu"]),
    ({"auto_pad": "SAME"}, ["auto_pad = 'SAME' is not one of"]),
    ({"auto_pad": "VALID", "pads": [0, 0, 0, 0]}, ["cannot be given together"]),
    ({"strides": [0, 1]}, ["strides [0, 1] must be from 1 to 2^30"]),
    ({"dilations": [1, -1]}, ["dilations [1, -1] must be from 1 to 2^30"]),
    ({"pads": [0, -1, 0, 0]}, ["pads [0, -1, 0, 0] must be from 0 to 2^30"]),
    # Past 2^30 (no input is that long): a stride of 2^32 crashed the op, pads of 2^62 overflowed.
    ({"strides": [2**32, 1]}, ["strides [4294967296, 1] must be from 1 to 2^30"]),
    ({"dilations": [1, 2**31]}, ["dilations [1, 2147483648] must be from 1 to 2^30"]),
    ({"pads": [0, 2**62, 0, 0]}, ["pads [0, 4611686018427387904, 0, 0] must be from 0 to 2^30"]),
    ({"group": 0}, ["group = 0 must be >= 1"]),
    ({"group": 1.5}, ["'group' must be of type int"]),
    ({"activation": 1}, ["'activation' must be of type"]),
])
def test_bad_attributes_name_the_node(attrs, words):
    assert_node_error(lambda: _run((1, 4, 6, 6), (4, 3, 3, 5), attrs), *words)


# ------------------------------------------------------------------ kernel sets

def test_every_kernel_set_passes_these_tests():
    """The tile kernels are built once per instruction set (sparse_conv_tile_*.cc): this
    file, rerun with each set forced, must pass too; amx runs every image of one group on
    the AMX tiles where the CPU has them (sparse_conv_amx.cc), else it is avx512."""
    env_name = "EXPRUNE_CONV_KERNELS"
    if os.environ.get(env_name):
        pytest.skip("already running under a forced kernel set")
    for kernels in ("generic", "avx2", "avx512", "amx"):
        env = {**os.environ, env_name: kernels}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(Path(__file__)), "-k",
             "not kernel_set"],
            env=env, capture_output=True, text=True, cwd=str(Path(__file__).parent),
        )
        assert done.returncode == 0, f"{kernels}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
