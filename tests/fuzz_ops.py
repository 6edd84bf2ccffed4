"""Random inputs for the early-exit ops and their contract (docs/custom_ops.md) in numpy.

``op_case(seed)`` draws a valid single-node case (dense or conv, any rule, empty
tensors, NaN/Inf, zero weights, clip caps, per-output thresholds) and its expected
output; ``corrupt`` then makes it invalid in one way the contract names as an error.
"""

from __future__ import annotations

import math

import numpy as np
from op_cases import shuffled_units

from exprune_onnx.config import DECISION_RULES


def _special(a: np.ndarray, rng, share: float = 0.05) -> None:
    """Put a few NaN/+-Inf into ``a`` in place."""
    if a.size and rng.random() < 0.5:
        flat = a.reshape(-1)
        idx = rng.choice(a.size, size=max(1, int(share * a.size)), replace=True)
        flat[idx] = rng.choice([np.nan, np.inf, -np.inf], size=len(idx))


def _dense_layer(rng):
    big = rng.random() < 0.1  # past the kernels' block sizes and SIMD widths
    lead = tuple(int(rng.choice([0, 1, 2, 3, 5, 9 if big else 1])) for _ in range(int(rng.integers(1, 4))))
    n = int(rng.integers(2, 300 if big else 70))
    k = int(rng.integers(1, n))
    outs = int(rng.integers(1, 100 if big else 40)) if rng.random() < 0.95 else 0
    x = rng.standard_normal((*lead, n)).astype(np.float32)
    w = (rng.standard_normal((n, outs)) / np.sqrt(n)).astype(np.float32)
    return x, w, k, {}


def _conv_layer(rng):
    from graph_builder import conv_geometry

    big = rng.random() < 0.1
    r = int(rng.integers(1, 3))
    sizes = [int(rng.integers(1, 17 if big else 10)) for _ in range(r)]
    batch = int(rng.choice([0, 1, 2, 3]))
    channels = int(rng.integers(2, 64 if big else 24))
    k = int(rng.integers(1, channels))
    outs = int(rng.integers(1, 24 if big else 12)) if rng.random() < 0.95 else 0
    attrs, _ = conv_geometry(rng, sizes)
    kernel = attrs.pop("_kernel")
    x = rng.standard_normal((batch, channels, *sizes)).astype(np.float32)
    w = (rng.standard_normal((outs, channels, *kernel)) / np.sqrt(channels * np.prod(kernel))).astype(np.float32)
    return x, w, k, attrs


def _conv_windows(x: np.ndarray, kernel, attrs) -> np.ndarray:
    """[N, C, taps, *out]: every input each output position reads, padding as 0."""
    from op_cases import onnx_pads

    r = x.ndim - 2
    strides = list(attrs.get("strides", [1] * r))
    dilations = list(attrs.get("dilations", [1] * r))
    begins, ends, outs = onnx_pads(x.shape[2:], kernel, strides, dilations, list(attrs.get("pads", [0] * 2 * r)),
                                   attrs.get("auto_pad", "NOTSET"))
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(begins, ends)))
    taps = []
    for tap in np.ndindex(*kernel):
        window = tuple(slice(tap[d] * dilations[d], tap[d] * dilations[d] + strides[d] * (outs[d] - 1) + 1, strides[d])
                       for d in range(r))
        taps.append(xp[(slice(None), slice(None)) + window])
    return np.stack(taps, axis=2)


def _products(x: np.ndarray, w: np.ndarray, k: int, attrs: dict, kind: str):
    """float64 head sum, head sum of squares and tail sum of the layer x * w split at k."""
    if kind == "dense":
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        with np.errstate(all="ignore"):
            return x64[..., :k] @ w64[:k], (x64[..., :k] ** 2) @ (w64[:k] ** 2), x64[..., k:] @ w64[k:]
    windows = _conv_windows(x, w.shape[2:], attrs)  # [N, C, T, *out]
    wt = w.reshape(w.shape[0], w.shape[1], int(np.prod(w.shape[2:]))).astype(np.float64)  # [O, C, T]

    def conv(win, weights):
        with np.errstate(all="ignore"):
            return np.einsum("nct...,oct->no...", win, weights)

    return conv(windows[:, :k], wt[:, :k]), conv(windows[:, :k] ** 2, wt[:, :k] ** 2), conv(windows[:, k:], wt[:, k:])


def op_case(seed: int):
    """A valid random case: (op, arrays, attrs, expected y or None, pruned mask, ambiguous mask)."""
    from exprune_onnx import ops

    rng = np.random.default_rng(seed)
    kind = "dense" if rng.random() < 0.5 else "conv"
    x, w, k, attrs = (_dense_layer if kind == "dense" else _conv_layer)(rng)
    if rng.random() < 0.3:
        x = np.abs(x)  # a ReLU's output: the certified rule can prune
    if rng.random() < 0.1 and w.size:
        w.reshape(-1)[rng.choice(w.size, size=max(1, w.size // 4))] = 0.0
    outs = w.shape[1] if kind == "dense" else w.shape[0]
    _special(x, rng)
    head, head_sq, tail = _products(x, w, k, attrs, kind)
    partial, partial_sq = head.astype(np.float32), head_sq.astype(np.float32)
    bias = (0.3 * rng.standard_normal(outs)).astype(np.float32)
    residual = (0.5 * rng.standard_normal(partial.shape)).astype(np.float32) if rng.random() < 0.4 else None
    for a in (partial, bias) + ((residual,) if residual is not None else ()):
        if rng.random() < 0.15:
            _special(a, rng)
    w_tail = np.ascontiguousarray(w[k:].T if kind == "dense" else w[:, k:])
    positive = np.maximum(w_tail, 0).reshape(outs, int(np.prod(w_tail.shape[1:]))).astype(np.float64)
    w_pos_sum, w_pos_norm = positive.sum(1).astype(np.float32), np.sqrt((positive ** 2).sum(1)).astype(np.float32)
    rule = str(rng.choice(DECISION_RULES))
    attrs = {**attrs, "k": k, "threshold": float(rng.choice([-np.inf, 0.0, -0.5, 0.5, np.inf]))}
    if rng.random() < 0.5:
        attrs["clip_max"] = float(rng.choice([0.0, 0.5, 6.0, np.inf]))
    if rule != "threshold" or rng.random() < 0.3:
        attrs["rule"] = rule
    if rule == "threshold" and outs and rng.random() < 0.3:  # an empty list would have no attribute type
        attrs["thresholds"] = [float(t) for t in rng.choice([-np.inf, -0.5, 0.0, 0.3], size=outs)]
    if rule == "statstest":
        attrs["z_crit"] = float(rng.choice([-np.inf, -2.33, 0.0, 1.0]))
    arrays = {"partial": partial, "x": x, "w_tail": w_tail, "bias": bias, "residual": residual,
              "partial_sq": partial_sq if rule == "statstest" or rng.random() < 0.2 else None,
              "w_pos_sum": w_pos_sum if rule == "certified" or rng.random() < 0.2 else None,
              "w_pos_norm": w_pos_norm if rule == "certified" else None}
    if rule == "certified" and arrays["w_pos_norm"] is None:
        arrays["w_pos_norm"] = w_pos_norm
    op = ops.DENSE_RELU if kind == "dense" else ops.CONV_RELU
    expected, pruned, ambiguous = _reference(kind, arrays, attrs, tail, x, w.shape[2:], k)
    if kind == "dense" and rng.random() < 0.3:
        # The same case with x's units shuffled and the tail named by tail_units.
        arrays["x"], attrs["tail_units"] = shuffled_units(x, k, rng)
    return op, arrays, attrs, expected, pruned, ambiguous, rng


def _reference(kind, arrays, attrs, tail, x, kernel, k):
    """The contract of docs/custom_ops.md in numpy: y, which elements are pruned, which may go either way."""
    partial = arrays["partial"]
    per_output = (1, -1) + (1,) * (partial.ndim - 2) if kind == "conv" else (-1,)
    bias = arrays["bias"].reshape(per_output)
    base = bias if arrays["residual"] is None else bias + arrays["residual"]  # float32, as the op sums it
    base64 = np.broadcast_to(base, partial.shape).astype(np.float64)
    p64 = partial.astype(np.float64)
    n = x.shape[-1] if kind == "dense" else x.shape[1]
    taps = int(np.prod(kernel)) if kind == "conv" else 1
    rule = attrs.get("rule", "threshold")
    ambiguous = np.zeros(partial.shape, bool)
    with np.errstate(all="ignore"):
        if rule == "threshold":
            if "thresholds" in attrs:
                t = np.array(attrs["thresholds"], np.float32).astype(np.float64).reshape(per_output)
            else:
                t = np.float64(np.float32(attrs["threshold"]))
            pruned = base64 + (n / k) * p64 < t
        elif rule == "statstest":
            t_k, t_n = k * taps, n * taps
            mean = p64 / t_k
            m = mean + base64 / t_n
            v = arrays["partial_sq"].astype(np.float64) / t_k - mean * mean
            z = np.where(v > 0, m / np.sqrt(np.where(v > 0, v, 1.0) / t_k),
                         np.where(m < 0, -np.inf, np.where(m > 0, np.inf, 0.0)))
            z = np.where(np.isnan(m) | np.isnan(v), np.nan, z)
            pruned = z < np.float64(np.float32(attrs["z_crit"]))
        else:
            if kind == "dense":
                tail_x = x[..., k:].astype(np.float64)[..., None, :]  # [*, 1, n-k], shared by all outputs
                axes = (-1,)
            else:
                tail_x = _conv_windows(x, kernel, attrs)[:, k:][:, None]  # [N, 1, C-k, T, *out]
                axes = (2, 3)
            bad = np.any((tail_x < 0) | np.isnan(tail_x), axis=axes)
            xmax = np.max(tail_x, axis=axes) if tail_x.size else np.zeros(bad.shape)
            xnorm = np.sqrt(np.sum(tail_x * tail_x, axis=axes))
            wps = arrays["w_pos_sum"].astype(np.float64).reshape(per_output)
            wpn = arrays["w_pos_norm"].astype(np.float64).reshape(per_output)
            bound = np.minimum(xmax * wps, xnorm * wpn)
            lhs = (base64 + p64) + bound
            pruned = (lhs < 0) & ~bad
            # xnorm's float64 sum has no fixed order: a tie at 0 may go either way.
            ambiguous = ~bad & (np.abs(lhs) <= 1e-9 * (np.abs(base64 + p64) + np.abs(bound)))
        full = p64 + tail + base64
        y = np.minimum(np.maximum(full, 0.0), attrs.get("clip_max", np.inf))
    return y, pruned, ambiguous


def corrupt(op, arrays, attrs, rng) -> str:
    """Make the case invalid per the contract, in place; returns what was done."""
    from exprune_onnx import ops

    rule = attrs.get("rule", "threshold")
    conv = op == ops.CONV_RELU
    read = ["partial", "x", "w_tail", "bias"] + (["residual"] if arrays["residual"] is not None else [])
    read += {"statstest": ["partial_sq"], "certified": ["w_pos_sum", "w_pos_norm"], "threshold": []}[rule]
    choices = ["k", "shape", "dtype", "attr", "missing_attr"]
    if rule != "threshold":
        choices.append("missing_input")
    if conv:
        choices += ["conv_attr"] + (["conv_rank"] if arrays["x"].ndim == 4 else [])
    else:
        choices.append("rank")
    pick = str(rng.choice(choices))
    n = arrays["x"].shape[1] if conv else arrays["x"].shape[-1]
    if pick == "k":
        attrs["k"] = int(rng.choice([0, -1, n, n + 3]))
        return f"k = {attrs['k']} with n = {n}"
    if pick == "shape":
        name = str(rng.choice(read))
        a = arrays[name]
        axis = int(rng.integers(a.ndim))
        if conv and name == "x" and axis >= 2:
            axis = 0  # a bigger spatial x may still give the same output size
        if name == "x" and not conv and axis == a.ndim - 1:
            axis = 0  # a longer x row changes n, which is legal with a matching w_tail
        if name == "w_tail" and conv and axis >= 2:
            axis = 0  # a bigger kernel may still give the same output size
        shape = list(a.shape)
        shape[axis] += 1
        arrays[name] = np.zeros(shape, a.dtype)
        return f"{name} reshaped to {shape}"
    if pick == "dtype":
        name = str(rng.choice(read))
        arrays[name] = arrays[name].astype(np.float64)
        return f"{name} as float64"
    if pick == "attr":
        bad = [("threshold", math.nan), ("clip_max", -1.0), ("clip_max", math.nan), ("rule", "bogus")]
        if rule == "statstest":
            bad.append(("z_crit", math.nan))
        outs = arrays["bias"].shape[0]
        if rule == "threshold":
            bad.append(("thresholds", [0.0] * (outs + 1)))
        if outs:  # an empty list would have no attribute type
            bad.append(("thresholds", [math.nan] * outs) if rule == "threshold" else ("thresholds", [0.0] * outs))
        if "tail_units" in attrs:
            bad.append(("tail_units", [*attrs["tail_units"][:-1], n]))  # a unit past x's last
        key, value = bad[int(rng.integers(len(bad)))]
        attrs[key] = value
        return f"{key} = {value}"
    if pick == "missing_attr":
        key = str(rng.choice(["k", "threshold"]))
        del attrs[key]
        return f"no {key}"
    if pick == "missing_input":
        if rule == "statstest":
            name = "partial_sq"
        else:  # certified; an empty w_pos_sum has no entry to make negative
            name = str(rng.choice(["w_pos_sum", "w_pos_norm"] + (["negative"] if arrays["w_pos_sum"].size else [])))
        if name == "negative":
            arrays["w_pos_sum"] = arrays["w_pos_sum"].copy()
            arrays["w_pos_sum"][0] = -1.0
            return "a negative w_pos_sum"
        arrays[name] = None
        return f"no {name}"
    if pick == "rank":
        for name in ("partial", "x") + (("residual",) if arrays["residual"] is not None else ()):
            arrays[name] = np.ascontiguousarray(arrays[name].reshape(-1)[: arrays[name].shape[-1]])
        return "1-D partial and x"
    r = arrays["x"].ndim - 2
    if pick == "conv_attr":
        bad = [("strides", [0] * r), ("dilations", [-1] * r), ("pads", [0] * (2 * r + 1)), ("pads", [-1] * (2 * r)),
               ("auto_pad", "SAME"), ("group", 2), ("kernel_shape", [s + 1 for s in arrays["w_tail"].shape[2:]])]
        key, value = bad[int(rng.integers(len(bad)))]
        attrs[key] = value
        if key == "pads" and attrs.get("auto_pad", "NOTSET") != "NOTSET":
            attrs["auto_pad"] = "NOTSET"  # else the pads error hides behind the auto_pad one
        return f"{key} = {value}"
    # Spatial rank 3: every spatial tensor gets a trailing unit axis.
    for name in ("partial", "x", "w_tail", "residual"):
        if arrays[name] is not None:
            arrays[name] = arrays[name][..., None]
    for key in ("strides", "dilations", "kernel_shape"):
        if key in attrs:
            attrs[key] = [*attrs[key], 1]
    if "pads" in attrs:
        attrs["pads"] = attrs["pads"][:r] + [0] + attrs["pads"][r:] + [0]
    return "3-D spatial"
