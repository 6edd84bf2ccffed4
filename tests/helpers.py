"""Helpers that test files of many topics use: tiny models, feeds, runs and checks. Those of
one topic have modules of their own beside it (op_cases.py for single-op models, cli_calls.py
for command-line runs, zoo_models.py, sparse_conv_models.py, quirk_models.py, ...)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
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


def sequence_first_model(frames=7):
    """x [N, T, 16] -> MatMul -> Relu -> MatMul -> Transpose: y [T, N, 10], PyTorch's CTC layout."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["z"]), helper.make_node("Transpose", ["z"], ["y"], perm=[1, 0, 2])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", frames, 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [frames, "N", 10])],
                      [init("w1", scaled_normal(16, 32)), init("w2", scaled_normal(32, 10))])


def two_heads_model():
    """x [N, T, 16] -> token logits [N, T, 9] (first) and, pooled, sequence logits [N, 3]."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "wt"], ["tokens"]),
             helper.make_node("ReduceMean", ["r"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["pooled", "ws"], ["sequence"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 16])],
                      [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", 6, 9]),
                       helper.make_tensor_value_info("sequence", TensorProto.FLOAT, ["N", 3])],
                      [init("w1", scaled_normal(16, 32)), init("wt", scaled_normal(32, 9)),
                       init("ws", scaled_normal(32, 3))], opset=17)


def weight_model(ir_version: int) -> onnx.ModelProto:
    """x @ W, with W an initializer that is also listed as a graph input."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    inputs = [vi("x", ["N", 4]), vi("W", [4, 3])]
    return make_model(nodes, inputs, [vi("y", ["N", 3])], [init("W", np.ones((4, 3), np.float32))],
                      opset=13 if ir_version >= 4 else 8, ir_version=ir_version)


def folded(batch, seq_first: bool = False):
    """x [batch, 6, 8] -> Reshape [-1, 8] (the batch folded into the rows, as before a 2-D
    Linear) -> Gemm -> Relu (rewritable, n = 8) -> Gemm -> y [batch * 6, 4]; with
    ``seq_first``, a Transpose to [6, batch, 8] and MatMuls on it instead."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 6, 8])
    inits = [init("w1", scaled_normal(8, 16)), init("w2", scaled_normal(16, 4))]
    if seq_first:
        nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
                 helper.make_node("MatMul", ["t", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("MatMul", ["r", "w2"], ["y"])]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, batch, 4])
    else:
        inits.append(init("shape", np.array([-1, 8], np.int64)))
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["rows"]),
                 helper.make_node("Gemm", ["rows", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("Gemm", ["r", "w2"], ["y"])]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return make_model(nodes, [x], [y], inits)


# Per sample: 6 rows through an 8 -> 16 and a 16 -> 4 product.
FOLDED_PER_SAMPLE = 2 * 6 * (8 * 16 + 16 * 4)



def calibration_args(tmp_path) -> list[str]:
    """Command-line options that calibrate the bundled example on 64 seeded images, quickly
    (a budget it always meets, the FLOPs objective: nothing is timed)."""
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, input=rng.random((64, 1, 28, 28), dtype=np.float32), labels=rng.integers(0, 10, 64))
    return ["--calibration", str(data), "--max-drop", "0.5", "--confidence", "0", "--objective", "flops"]
