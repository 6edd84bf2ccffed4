"""Single-node models of the ExPrune ops fed through graph inputs, the dense and conv cases
the op tests and fuzzers run them on, and the numpy references they are checked against
(docs/custom_ops.md's contract)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import NODE
from onnx import TensorProto, helper

import exprune_onnx


def onnx_pads(in_sizes, kernel, strides, dilations, pads, auto_pad):
    """(begin, end) pads per axis and the output sizes, following the ONNX Conv spec."""
    begins, ends, outs = [], [], []
    r = len(in_sizes)
    for d, size in enumerate(in_sizes):
        span = (kernel[d] - 1) * dilations[d] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // strides[d])
            total = max(0, (out - 1) * strides[d] + span - size)
            small, big = total // 2, total - total // 2
            b, e = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        elif auto_pad == "VALID":
            b = e = 0
            out = (size - span) // strides[d] + 1
        else:
            b, e = pads[d], pads[r + d]
            out = (size + b + e - span) // strides[d] + 1
        begins.append(b)
        ends.append(e)
        outs.append(out)
    return begins, ends, outs


OP_INPUTS = ("partial", "x", "w_tail", "bias", "residual", "partial_sq", "w_pos_sum", "w_pos_norm")
_OP_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


def single_op_model(op, arrays, attrs, *, name, stats=False, min_inputs=0) -> onnx.ModelProto:
    """One early-exit node whose inputs are graph inputs carrying ``arrays``.

    An absent optional input before a present one is the empty name; ``min_inputs``
    pads with empty names to that count (an optional input skipped the ONNX way).
    """
    present = [n for n in OP_INPUTS if arrays.get(n) is not None]
    last = max(max(OP_INPUTS.index(n) for n in present) + 1, min_inputs)
    node_inputs = [n if arrays.get(n) is not None else "" for n in OP_INPUTS[:last]]
    outputs = ["y", "stats"] if stats else ["y"]
    node = helper.make_node(op, node_inputs, outputs, name=name, domain=exprune_onnx.DOMAIN, **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, _OP_TYPES[arrays[n].dtype], list(arrays[n].shape))
                    for n in present]
    rank = arrays["partial"].ndim
    if op == exprune_onnx.ops.ARGMAX_HEAD:  # the class index: the class axis dropped unless keepdims
        y = helper.make_tensor_value_info("y", TensorProto.INT64, [None] * (rank - 1 + attrs.get("keepdims", 0)))
    else:
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * rank)
    graph_outputs = [y]
    if stats:
        graph_outputs.append(helper.make_tensor_value_info("stats", TensorProto.INT64, [2]))
    graph = helper.make_graph([node], "single_op", graph_inputs, graph_outputs)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(exprune_onnx.DOMAIN, exprune_onnx.VERSION)],
        ir_version=8,
    )


def run_single_op(op, arrays, attrs, *, name, stats=False, threads=None, min_inputs=0) -> list[np.ndarray]:
    model = single_op_model(op, arrays, attrs, name=name, stats=stats, min_inputs=min_inputs)
    sess = exprune_onnx.inference_session(model, optimize=False, threads=threads)
    return sess.run(None, {n: a for n, a in arrays.items() if a is not None})


def shuffled_units(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """``x`` (last axis in the op's unit order: head 0..k-1, then the tail) with its units
    shuffled, and the ``tail_units`` attribute that names where the tail now lies."""
    perm = rng.permutation(x.shape[-1])
    shuffled = np.empty_like(x)
    shuffled[..., perm] = x
    return shuffled, [int(u) for u in perm[k:]]


# ------------------------------------------------------------------ single-op cases (custom op references)


def act(v, clip_max):
    return np.minimum(np.maximum(v, 0.0), clip_max)


def estimate(partial, bias_b, residual, n, k):
    """The op's est, in the precision docs/custom_ops.md fixes: float32 base, float64 rest."""
    base = bias_b if residual is None else bias_b + residual
    return base.astype(np.float64) + (n / k) * partial.astype(np.float64)


def check_result(y, partial, full, mask, clip_max):
    """Pruned entries exactly 0; the others equal the full layer's activation."""
    assert y.shape == partial.shape and y.dtype == np.float32
    assert np.all(y[mask] == 0.0)
    expected = act(full, clip_max)
    np.testing.assert_allclose(y[~mask], expected[~mask], rtol=1e-4, atol=1e-5)


def assert_ort_error(fn, *words, ours=True):
    """fn raises an onnxruntime error naming the node. `ours`: the message is the op's
    own ("<Op> node '<name>': ..."), not one onnxruntime produced before calling it."""
    with pytest.raises(Exception) as info:
        fn()
    assert type(info.value).__module__.startswith("onnxruntime"), repr(info.value)
    message = str(info.value)
    assert (f"node '{NODE}'" if ours else NODE) in message, message
    for word in words:
        assert word in message, message


def dense_case(rng, lead, n, outs, k, residual=False):
    """Inputs of a Dense layer x @ W + b split at k, plus its exact float64 result."""
    x = rng.standard_normal((*lead, n)).astype(np.float32)
    w = (rng.standard_normal((n, outs)) / np.sqrt(n)).astype(np.float32)
    b = (0.3 * rng.standard_normal(outs)).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    partial = (x64[..., :k] @ w64[:k]).astype(np.float32)
    arrays = {
        "partial": partial,
        "x": x,
        "w_tail": np.ascontiguousarray(w[k:].T),
        "bias": b,
        "residual": (0.5 * rng.standard_normal(partial.shape)).astype(np.float32) if residual else None,
    }
    full = partial.astype(np.float64) + x64[..., k:] @ w64[k:] + b
    if residual:
        full = full + arrays["residual"]
    return arrays, full


# Conv geometries the op tests run: (spatial, kernel, strides, pads, dilations, auto_pad)
CONV_GEOMETRIES = [
    ((9, 9), (3, 3), None, (1, 1, 1, 1), None, None),
    ((11, 10), (3, 2), (2, 1), (1, 0, 2, 1), (2, 1), "NOTSET"),
    ((9, 8), (4, 3), (2, 2), None, None, "SAME_UPPER"),
    ((9, 8), (4, 3), (2, 2), None, None, "SAME_LOWER"),
    ((10, 9), (3, 3), (2, 1), None, (2, 2), "VALID"),
    ((17,), (3,), (2,), (2, 1), (2,), None),
    ((16,), (4,), (3,), None, None, "SAME_UPPER"),
    ((16,), (4,), (3,), None, None, "SAME_LOWER"),
    ((15,), (5,), None, None, (2,), "VALID"),
]



def conv_ref(x, w, strides, dilations, begins, ends, outs):
    """Plain float64 convolution (group 1), one kernel tap at a time."""
    r = x.ndim - 2
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(begins, ends)))
    y = np.zeros((x.shape[0], w.shape[0], *outs))
    for tap in np.ndindex(*w.shape[2:]):
        window = tuple(
            slice(tap[d] * dilations[d], tap[d] * dilations[d] + strides[d] * (outs[d] - 1) + 1, strides[d])
            for d in range(r)
        )
        patch = xp[(slice(None), slice(None)) + window]
        y += np.einsum("nc...,oc->no...", patch, w[(slice(None), slice(None)) + tap].astype(np.float64))
    return y


def conv_attrs(strides, pads, dilations, auto_pad):
    attrs = {}
    if strides is not None:
        attrs["strides"] = list(strides)
    if dilations is not None:
        attrs["dilations"] = list(dilations)
    if pads is not None:
        attrs["pads"] = list(pads)
    if auto_pad is not None:
        attrs["auto_pad"] = auto_pad
    return attrs


def conv_case(rng, batch, channels, outs, spatial, kernel, k, strides=None, pads=None, dilations=None,
              auto_pad=None, residual=False):
    r = len(spatial)
    s = list(strides or [1] * r)
    dl = list(dilations or [1] * r)
    p = list(pads or [0] * (2 * r))
    begins, ends, out_sizes = onnx_pads(spatial, kernel, s, dl, p, auto_pad or "NOTSET")
    x = rng.standard_normal((batch, channels, *spatial)).astype(np.float32)
    fan_in = channels * int(np.prod(kernel))
    w = (rng.standard_normal((outs, channels, *kernel)) / np.sqrt(fan_in)).astype(np.float32)
    b = (0.3 * rng.standard_normal(outs)).astype(np.float32)
    partial64 = conv_ref(x[:, :k], w[:, :k], s, dl, begins, ends, out_sizes)
    partial = partial64.astype(np.float32)
    arrays = {
        "partial": partial,
        "x": x,
        "w_tail": np.ascontiguousarray(w[:, k:]),
        "bias": b,
        "residual": (0.5 * rng.standard_normal(partial.shape)).astype(np.float32) if residual else None,
    }
    bias_b = b.reshape((1, outs) + (1,) * r)
    full = partial.astype(np.float64) + conv_ref(x[:, k:], w[:, k:], s, dl, begins, ends, out_sizes) + bias_b
    if residual:
        full = full + arrays["residual"]
    attrs = {"k": k, **conv_attrs(strides, pads, dilations, auto_pad)}
    return arrays, full, attrs, bias_b
