"""Random ExPruneSparseConv cases for the fuzzer (tests/fuzz_loops.py, loop "sparse_conv")
and the sanitizer harness: any geometry graphgen draws, groups, batch 0-3, zero fractions
from 0 to 1, NaN/Inf inputs, bias/residual/activation present or not; ``corrupt`` then
breaks one thing the op must refuse with an error naming the node."""

from __future__ import annotations

import numpy as np
from graph_builder import conv_geometry
from sparse_conv_case import reference_model, run_plain

from exprune_onnx import ops


def case(seed: int):
    """(x, W, bias or None, residual or None, attrs, rng) of a valid layer."""
    rng = np.random.default_rng(seed)
    big = rng.random() < 0.1  # past the tiles, the vectors and the channel chunks
    sizes = [int(rng.integers(1, 30 if big else 12)) for _ in range(2)]
    if rng.random() < 0.1:  # rows wide enough to be listed from bit masks when sparse
        sizes = [int(rng.integers(1, 5)), int(rng.integers(32, 140))]
    tall = rng.random() < 0.08  # over 256 KB of lists and few weights: waves of rows (sparse_conv_run.cc WaveRows)
    if tall:
        sizes = [int(rng.integers(24, 48)), int(rng.integers(16, 32))]
    if rng.random() < 0.15:  # a 1-D conv: one row, run as a 2-D one of unit height
        sizes = [int(rng.integers(1, 150))]
    attrs, outs = conv_geometry(rng, sizes)
    kernel = attrs.pop("_kernel")
    group = int(rng.choice([1, 1, 1, 2, 3]))
    cg, mg = int(rng.integers(1, 300 if big else 12)), int(rng.integers(1, 70 if big else 20))
    if tall:
        cg, mg = int(rng.integers(40, 96)), int(rng.integers(1, 16))
    if rng.random() < 0.15:  # depthwise
        cg, group = 1, int(rng.integers(1, 9))
    if group > 1:
        attrs["group"] = group
    batch = int(rng.choice([0, 1, 1, 2, 3]))
    x = rng.standard_normal((batch, cg * group, *sizes)).astype(np.float32)
    x[rng.random(x.shape) < float(rng.choice([0.0, 0.3, 0.5, 0.9, 1.0]))] = 0.0
    if rng.random() < 0.5:
        x = np.abs(x)
    if x.size and rng.random() < 0.2:
        x.reshape(-1)[rng.choice(x.size, size=1 + x.size // 50)] = rng.choice([np.nan, np.inf, -np.inf])
    weight = (rng.standard_normal((mg * group, cg, *kernel)) / np.sqrt(cg * np.prod(kernel))).astype(np.float32)
    bias = rng.standard_normal(mg * group).astype(np.float32) if rng.random() < 0.7 else None
    residual = None
    if rng.random() < 0.3:
        residual = rng.standard_normal((batch, mg * group, *outs)).astype(np.float32)
    if rng.random() < 0.6:
        attrs["activation"] = "relu"
        if rng.random() < 0.5:
            attrs["clip_max"] = float(rng.choice([0.0, 0.5, 6.0]))
    elif rng.random() < 0.3:
        attrs["activation"] = "none"
    if rng.random() < 0.3:
        attrs["kernel_shape"] = list(kernel)
    return x, weight, bias, residual, attrs, rng


def corrupt(x, w, bias, residual, attrs, rng):
    """Break the case in one documented way, returning the new (x, w, bias, residual) and what was done."""
    pick = str(rng.choice(["w_shape", "w_rank", "x_rank", "bias", "residual", "attr", "group"]))
    if pick == "w_shape":
        w = np.zeros((w.shape[0] + 1, *w.shape[1:]), np.float32)
    elif pick == "w_rank":
        w = w.reshape(w.shape[0], -1)
    elif pick == "x_rank":
        x = x[..., None]
    elif pick == "bias":
        bias = np.zeros(w.shape[-1] * attrs.get("group", 1) + 1, np.float32)
    elif pick == "residual":
        residual = np.zeros((max(x.shape[0], 1) + 1, w.shape[-1] * attrs.get("group", 1), *[1] * (x.ndim - 2)),
                            np.float32)
    elif pick == "attr":
        key, value = [("activation", "tanh"), ("clip_max", -1.0), ("strides", [0, 1]), ("pads", [0, 0, 0]),
                      ("dilations", [1, 0]), ("kernel_shape", [w.shape[1] + 1, *w.shape[2:-1]]),
                      ("auto_pad", "bogus")][int(rng.integers(7))]
        attrs[key] = value
        if key == "clip_max":
            attrs["activation"] = "relu"
        if key == "pads":
            attrs.pop("auto_pad", None)
    else:
        attrs["group"] = x.shape[1] + 1
    return x, w, bias, residual, pick


def expected(x, weight, bias, residual, attrs) -> np.ndarray:
    """onnxruntime's Conv (+Add, +Relu/Clip) at optimisations off."""
    model = reference_model(x.shape, weight, bias, None if residual is None else residual.shape, attrs)
    return run_plain(model, {"x": x} | ({"r": residual} if residual is not None else {}))[0]


def sparse_w(weight, attrs):
    return ops.sparse_conv_weights(weight, attrs.get("group", 1))
