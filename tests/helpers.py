"""The one helper module of the tests: tiny models, references and checks that more than
one test file uses (test files never import each other)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import exprune_onnx
from exprune_onnx.config import Options
from exprune_onnx.io.data import Dataset, random_dataset
from exprune_onnx.tuning import objective

NEG_INF = float("-inf")
NODE = "exprune_node_under_test"  # the node name single-op models give their op


def init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def make_model(nodes, inputs, outputs, initializers=(), opset=17, ir_version=8, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = ir_version
    _fill_output_shapes(model)
    onnx.checker.check_model(model)
    return model


def _fill_output_shapes(model: onnx.ModelProto) -> None:
    """Outputs declared without a shape get the inferred one (the checker wants a shape)."""
    if all(o.type.tensor_type.HasField("shape") for o in model.graph.output):
        return
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in known:
            out.type.CopyFrom(known[out.name].type)


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def node_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def run_plain(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_exprune(model: onnx.ModelProto, feeds: dict, threads: int | None = None) -> list[np.ndarray]:
    return exprune_onnx.inference_session(model, optimize=False, threads=threads).run(None, feeds)


def assert_close(ref: np.ndarray, got: np.ndarray, rel: float = 1e-4) -> None:
    """Max error relative to the output's range, as the issue states the tolerance."""
    assert ref.shape == got.shape
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(ref.astype(np.float64) - got).max())
    assert err <= rel * scale, f"max abs error {err} exceeds {rel} x range {scale}"


def assert_equivalent(original, optimized, make_feeds, draws: int = 3) -> None:
    for seed in range(draws):
        feeds = make_feeds(np.random.default_rng(100 + seed))
        for ref, got in zip(run_plain(original, feeds), run_exprune(optimized, feeds)):
            assert_close(ref, got)


def normal_feeds(model: onnx.ModelProto):
    """A feeds maker for assert_equivalent: standard normal inputs, symbolic dims as 3."""
    def make(rng):
        feeds = {}
        for v in model.graph.input:
            dims = [d.dim_value or 3 for d in v.type.tensor_type.shape.dim]
            feeds[v.name] = rng.normal(size=dims).astype(np.float32)
        return feeds

    return make


def expose(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy with extra float intermediates as graph outputs (to read the partial sums)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name in names:
        out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return out


def conv_reference(x, w, strides, pads, dilations):
    """Plain numpy Conv (group 1, 1-D or 2-D), for full-computation references."""
    spatial = w.ndim - 2
    pad_width = [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)]
    xp = np.pad(x.astype(np.float64), pad_width)
    out_dims = [
        (xp.shape[2 + i] - dilations[i] * (w.shape[2 + i] - 1) - 1) // strides[i] + 1 for i in range(spatial)
    ]
    y = np.zeros((x.shape[0], w.shape[0], *out_dims))
    for taps in np.ndindex(*w.shape[2:]):
        index = [slice(None), slice(None)]
        for i, t in enumerate(taps):
            start = t * dilations[i]
            index.append(slice(start, start + strides[i] * (out_dims[i] - 1) + 1, strides[i]))
        patch = xp[tuple(index)]
        y += np.einsum("nc...,oc->no...", patch, w[(slice(None), slice(None), *taps)])
    return y


def threshold_of(optimized: onnx.ModelProto) -> dict:
    """Attributes of the (single) early-exit node."""
    node = next(n for n in optimized.graph.node if n.domain == exprune_onnx.DOMAIN)
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


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


# ------------------------------------------------------------------ models shared by several test files


def calibration_mlp(seed=0, hidden=64, classes=10):
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(48, hidden)) / np.sqrt(48)).astype(np.float32)
    w2 = (rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    w3 = (rng.normal(size=(hidden, classes)) / np.sqrt(hidden)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["a1"]),
             helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="fc2"),
             helper.make_node("Add", ["h2", "b2"], ["z2"]), helper.make_node("Relu", ["z2"], ["a2"]),
             helper.make_node("MatMul", ["a2", "w3"], ["logits"])]
    inits = [init("w1", w1), init("w2", w2), init("w3", w3), init("b2", rng.normal(size=hidden).astype(np.float32) * 0.1)]
    return make_model(nodes, [vi("x", ["N", 48])], [vi("logits", ["N", classes])], inits)


def calibration_dataset(model, count=400, seed=1, labels=True):
    x = np.random.default_rng(seed).normal(size=(count, 48)).astype(np.float32)
    y = run_plain(model, {"x": x})[0].argmax(1) if labels else None
    return Dataset({"x": x}, y, "synthetic")


CONV_CHANNELS, CONV_OUTS = 32, 24


def conv_model(*, spatial=2, strides=None, pads=None, dilations=None, auto_pad=None, bn=True, residual=False,
               act="relu", opset=17, group=1, channels=CONV_CHANNELS, extra_consumer=False, weight_input=False,
               first_layer=False, dtype=np.float32, seed=0, affine=False, residual_op="Add"):
    """inp -> Relu -> x -> Conv -> [BN] -> [Mul, Add (Caffe2's affine)] -> [Add|Sum(x)] -> act -> y"""
    rng = np.random.default_rng(seed)
    size = [9, 8][:spatial] if spatial == 2 else [17]
    kernel = [3] * spatial
    w = (rng.normal(size=(CONV_OUTS if not residual else channels, channels // group, *kernel)) * 0.15).astype(dtype)
    out_ch = w.shape[0]
    tdtype = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    attrs = {}
    for key, value in (("strides", strides), ("pads", pads), ("dilations", dilations), ("auto_pad", auto_pad)):
        if value is not None:
            attrs[key] = value
    if group != 1:
        attrs["group"] = group
    nodes = [] if first_layer else [helper.make_node("Relu", ["inp"], ["x"])]
    x = "inp" if first_layer else "x"
    inits = [init("B", rng.normal(size=out_ch).astype(dtype))]
    inputs = [vi("inp", ["N", channels, *size], tdtype)]
    if weight_input:
        inputs.append(vi("W", list(w.shape), tdtype))
    else:
        inits.append(init("W", w))
    nodes.append(helper.make_node("Conv", [x, "W", "B"], ["c"], name="conv", **attrs))
    t = "c"
    if bn:
        inits += [init("s", rng.uniform(0.5, 1.5, out_ch).astype(dtype)), init("b", rng.normal(size=out_ch).astype(dtype)),
                  init("m", rng.normal(size=out_ch).astype(dtype)), init("v", rng.uniform(0.5, 1.5, out_ch).astype(dtype))]
        nodes.append(helper.make_node("BatchNormalization", [t, "s", "b", "m", "v"], ["bn"], name="bn"))
        t = "bn"
    if affine:
        shape = [1, out_ch] + [1] * spatial
        inits += [init("scale", rng.uniform(-1.5, 1.5, shape).astype(dtype)),
                  init("shift", rng.normal(size=shape).astype(dtype))]
        nodes += [helper.make_node("Mul", [t, "scale"], ["scaled"]), helper.make_node("Add", ["shift", "scaled"], ["shifted"])]
        t = "shifted"
    if residual:
        nodes.append(helper.make_node(residual_op, [t, x], ["sum"], name="add"))
        t = "sum"
    if act == "relu":
        nodes.append(helper.make_node("Relu", [t], ["y"], name="act"))
    elif act == "clip_inputs":
        inits += [init("lo", np.array(0, dtype)), init("hi", np.array(6, dtype))]
        nodes.append(helper.make_node("Clip", [t, "lo", "hi"], ["y"], name="act"))
    elif act == "clip_attrs":
        nodes.append(helper.make_node("Clip", [t], ["y"], name="act", min=0.0, max=6.0))
    elif act == "clip_neg":
        inits += [init("lo", np.array(-1, dtype))]
        nodes.append(helper.make_node("Clip", [t, "lo"], ["y"], name="act"))
    outputs = [vi("y", None, tdtype)]
    if extra_consumer:
        nodes.append(helper.make_node("Sigmoid", ["c"], ["side"]))
        outputs.append(vi("side", None, tdtype))
    return make_model(nodes, inputs, outputs, inits, opset=opset)


def feeds_for(model):
    dims = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return lambda rng: {"inp": rng.normal(size=dims).astype(np.float32)}


WEIGHT_RNG = np.random.default_rng(7)


def scaled_normal(*shape) -> np.ndarray:
    return (WEIGHT_RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def input_mlp(first_dims, name: str = "x") -> onnx.ModelProto:
    """x [.., 32] -> MatMul -> Relu -> MatMul (rewritable, n = 64) -> Relu -> MatMul -> y."""
    nodes = [helper.make_node("MatMul", [name, "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="h2"), helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("MatMul", ["r2", "w3"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info(name, TensorProto.FLOAT, [*first_dims, 32])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                      [init("w1", scaled_normal(32, 64)), init("w2", scaled_normal(64, 64)), init("w3", scaled_normal(64, 10))])


def conv_hw() -> onnx.ModelProto:
    """x [N, 3, H, W] -> Conv -> Relu -> Conv (rewritable, n = 32) -> Relu -> pool -> y [N, 32]."""
    nodes = [helper.make_node("Conv", ["x", "c1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "c2"], ["c"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c"], ["d"]), helper.make_node("GlobalAveragePool", ["d"], ["e"]),
             helper.make_node("Flatten", ["e"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
                      [init("c1", scaled_normal(32, 3, 3, 3)), init("c2", scaled_normal(32, 32, 3, 3) / 3)])


def save_model(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return path


# ------------------------------------------------------------------ the latency objective under a scripted clock


def three_layer_mlp(widths=(64, 96, 128, 160)) -> onnx.ModelProto:
    """x -> Gemm -> Relu -> Gemm -> Relu -> Gemm -> Relu -> Gemm -> y: layers 'h1', 'h2'
    (rewritable, growing in size) after a first layer that reads the raw input."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        w = (rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32)
        inits += [init(f"w{i}", w), init(f"b{i}", np.zeros(b, np.float32))]
        nodes += [helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"], name=f"h{i}", transB=1),
                  helper.make_node("Relu", [f"g{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    w = rng.standard_normal((10, widths[-1])).astype(np.float32)
    inits += [init("wo", w), init("bo", np.zeros(10, np.float32))]
    nodes.append(helper.make_node("Gemm", [prev, "wo", "bo"], ["y"], name="out", transB=1))
    return make_model(nodes, [vi("x", ["N", widths[0]])], [vi("y", ["N", 10])], inits)


def latency_choice(model, options=None, **kw):
    # Plain-ReLU consumers are left out unless a test is about them (see the zero-input tests).
    options = options or Options(threshold=0.0, sparse_relu="off")
    result = exprune_onnx.optimize_model(model, options)
    return objective.choose(model, options, result, random_dataset(model, 16, 0), **kw)


def if_mlp(rng) -> onnx.ModelProto:
    """x [N, 16], cond -> If: each branch MatMul 16 -> 64 -> Relu -> 64 -> Relu -> 8, the
    branches' first weights equal under their own names (t_w1, e_w1), the rest their own."""
    w1 = (rng.standard_normal((16, 64)) * 0.3).astype(np.float32)

    def branch(side):
        weights = [init(f"{side}_w1", w1.copy()),
                   init(f"{side}_w2", (rng.standard_normal((64, 64)) * 0.2).astype(np.float32)),
                   init(f"{side}_w3", (rng.standard_normal((64, 8)) * 0.2).astype(np.float32))]
        nodes = [helper.make_node("MatMul", ["x", f"{side}_w1"], [f"{side}_a"], name=f"{side}_f1"),
                 helper.make_node("Relu", [f"{side}_a"], [f"{side}_b"]),
                 helper.make_node("MatMul", [f"{side}_b", f"{side}_w2"], [f"{side}_c"], name=f"{side}_f2"),
                 helper.make_node("Relu", [f"{side}_c"], [f"{side}_d"]),
                 helper.make_node("MatMul", [f"{side}_d", f"{side}_w3"], [f"{side}_y"], name=f"{side}_f3")]
        return helper.make_graph(nodes, side, [], [vi(f"{side}_y", ["N", 8])], weights)

    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch("t"), else_branch=branch("e"))]
    return make_model(nodes, [vi("x", ["N", 16]), vi("cond", [], TensorProto.BOOL)], [vi("y", ["N", 8])])
