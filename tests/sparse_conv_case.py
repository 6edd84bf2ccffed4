"""ExPruneSparseConv single-node models and their onnxruntime Conv reference, shared by
the op tests, the fuzzer and the sanitizer harness."""

from __future__ import annotations

import os

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.runtime import cpu_has_tiles

NODE = "sparse_conv_under_test"
CONV_ATTRS = ("strides", "pads", "dilations", "auto_pad", "group", "kernel_shape")


def inputs_read(x: np.ndarray, group: int = 1) -> int:
    """The op's stats[0] for x: each image's non-zero inputs when listed, all of them when
    it runs on the tiles (one group; no Inf, NaN or non-zero under 2^-40; and the tiles
    forced or, in the channels the op samples (every 8th), a non-zero share of at least 0.21
    up to 64 channels, 0.04 more per doubling past that)."""
    forced = os.environ.get("EXPRUNE_CONV_KERNELS")
    tiles = group == 1 and cpu_has_tiles() and forced in (None, "", "amx")
    total = 0
    least = 0.21 + 0.04 * np.log2(max(x.shape[1], 64) / 64)
    for image in x:
        sampled = image[::8]
        share = np.count_nonzero(sampled) / max(sampled.size, 1)
        splittable = np.isfinite(image).all() and np.all((image == 0) | (np.abs(image) >= 2.0**-40))
        tiled = tiles and splittable and (forced == "amx" or share >= least)
        total += image.size if tiled else int(np.count_nonzero(image))
    return total


def sparse_input(rng, shape, zeros: float) -> np.ndarray:
    """Non-negative-and-negative normal values with an i.i.d. share `zeros` set to exactly 0."""
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < zeros] = 0.0
    return x


def _model(nodes, inputs, outputs, inits=(), custom=False):
    graph = helper.make_graph(nodes, "sparse_conv", inputs, outputs, list(inits))
    imports = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(ops.DOMAIN, ops.VERSION)] if custom else [])
    return helper.make_model(graph, opset_imports=imports, ir_version=8)


def op_model(x_shape, w, bias=None, residual_shape=None, attrs=None, stats=False, w_input=False):
    """x (and the residual) as graph inputs, w and bias as initializers (w also as an input if w_input)."""
    attrs = attrs or {}
    names = ["x", "w", "b" if bias is not None else "", "r" if residual_shape is not None else ""]
    while names[-1] == "":
        names.pop()
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    inits = [] if w_input else [numpy_helper.from_array(w, "w")]
    if w_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape)))
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
    if residual_shape is not None:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, list(residual_shape)))
    outputs = ["y", "stats"] if stats else ["y"]
    node = helper.make_node(ops.SPARSE_CONV, names, outputs, name=NODE, domain=ops.DOMAIN, **attrs)
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(x_shape))]
    if stats:
        outs.append(helper.make_tensor_value_info("stats", TensorProto.INT64, [2]))
    return _model([node], inputs, outs, inits, custom=True)


def reference_model(x_shape, weight, bias=None, residual_shape=None, attrs=None):
    """The same layer as plain ONNX: Conv [-> Add residual] [-> Relu | Clip(0, clip_max)]."""
    attrs = dict(attrs or {})
    activation = attrs.pop("activation", "none")
    clip_max = attrs.pop("clip_max", None)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    inits = [numpy_helper.from_array(weight, "W")]
    conv_in = ["x", "W"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
        conv_in.append("b")
    nodes = [helper.make_node("Conv", conv_in, ["c"], **{k: v for k, v in attrs.items() if k in CONV_ATTRS})]
    t = "c"
    if residual_shape is not None:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, list(residual_shape)))
        nodes.append(helper.make_node("Add", [t, "r"], ["s"]))
        t = "s"
    if activation == "relu" and clip_max is None:
        nodes.append(helper.make_node("Relu", [t], ["a"]))
        t = "a"
    elif activation == "relu":
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(clip_max, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", [t, "lo", "hi"], ["a"]))
        t = "a"
    nodes.append(helper.make_node("Identity", [t], ["y"]))
    return _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(x_shape))], inits)


def run(model, feeds, threads=1, optimize=False):
    return exprune_onnx.inference_session(model, optimize=optimize, threads=threads).run(None, feeds)


def run_plain(model, feeds):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def case(rng, *, batch=1, channels=8, outs=8, size=(7, 9), kernel=(3, 3), zeros=0.5, bias=True, residual=False,
         attrs=None):
    """x, the Conv weight W, bias, residual (or None) and the attributes of one layer."""
    attrs = dict(attrs or {})
    group = attrs.get("group", 1)
    x = sparse_input(rng, (batch, channels, *size), zeros)
    weight = (rng.standard_normal((outs, channels // group, *kernel)) / np.sqrt(channels * np.prod(kernel)))
    weight = weight.astype(np.float32)
    b = rng.standard_normal(outs).astype(np.float32) if bias else None
    return x, weight, b, attrs


def check(x, weight, b, attrs, *, residual=None, threads=1, stats=False):
    """Runs the op and the reference and compares them; returns the op's outputs."""
    group = attrs.get("group", 1)
    w = ops.sparse_conv_weights(weight, group)
    model = op_model(x.shape, w, b, None if residual is None else residual.shape, attrs, stats=stats)
    ref_model = reference_model(x.shape, weight, b, None if residual is None else residual.shape, attrs)
    feeds = {"x": x} | ({"r": residual} if residual is not None else {})
    got = run(model, feeds, threads=threads)
    want = run_plain(ref_model, feeds)[0]
    assert got[0].shape == want.shape, (got[0].shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[0][~finite], want[~finite])
    scale = max(float(np.abs(want[finite]).max(initial=0.0)), 1e-3)
    err = float(np.abs(got[0][finite].astype(np.float64) - want[finite]).max(initial=0.0))
    assert err <= 1e-5 * scale * max(1.0, np.sqrt(weight[0].size / 9)), f"max abs error {err}, range {scale}"
    return got
