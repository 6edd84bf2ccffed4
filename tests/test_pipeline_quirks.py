"""The compile pipeline on real exporter quirks (issue 7, item 1): each test builds the pattern it names, small.

Covered elsewhere and not repeated here: weights in Constant nodes, If and Loop
bodies, a Relu output that is a graph output or feeds several consumers, BN folding
next to a shared weight, IR lowering through the API (test_canonicalize.py); MatMul +
Add, Gemm with transB, Linear on 3-D input, ReLU6 as Clip with inputs or attributes
(test_dense_relu.py, test_conv_relu.py); external data round trip, unknown ops
(test_cli.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_calls import invoke
from helpers import NEG_INF, assert_equivalent, init, make_model, node_types, run_exprune, run_plain, vi
from onnx import helper, numpy_helper
from quirk_models import reasons, rewritten, runtime_refuses, sweep_feeds, sweep_model

import exprune_onnx
from exprune_onnx import optimize_model
from exprune_onnx.io.ir_version import max_runtime_ir_version

# ------------------------------------------------------------------ Scan bodies


def test_scan_body_rewritten_with_outer_scope_weight_and_residual():
    """Per step: Relu(x_t) @ W + B + r -> Relu. W is an outer Constant node, r an outer
    non-constant value (the residual); both must reach the rewritten op inside the body."""
    rng = np.random.default_rng(1)
    body = helper.make_graph(
        [helper.make_node("Relu", ["x_t"], ["xr"]),
         helper.make_node("MatMul", ["xr", "W"], ["m"], name="body_mm"),
         helper.make_node("Add", ["m", "B"], ["a"]),
         helper.make_node("Add", ["a", "r"], ["s"]),
         helper.make_node("Relu", ["s"], ["y_t"]),
         helper.make_node("Add", ["acc_in", "y_t"], ["acc_out"])],
        "body", [vi("acc_in", ["N", 40]), vi("x_t", ["N", 48])], [vi("acc_out", ["N", 40]), vi("y_t", ["N", 40])])
    w = (rng.normal(size=(48, 40)) / 7).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w)),
             helper.make_node("Relu", ["side"], ["r"]),
             helper.make_node("Scan", ["acc0", "seq"], ["acc", "ys"], body=body, num_scan_inputs=1,
                              scan_input_axes=[1], scan_output_axes=[1])]
    model = make_model(nodes, [vi("acc0", ["N", 40]), vi("seq", ["N", 5, 48]), vi("side", ["N", 40])],
                       [vi("acc", ["N", 40]), vi("ys", ["N", 5, 40])],
                       [init("B", rng.normal(size=40).astype(np.float32))])
    res = optimize_model(model, threshold=NEG_INF)
    assert rewritten(res) == ["body_mm"] and not res.rejected
    onnx.checker.check_model(res.model)
    scan = next(n for n in res.model.graph.node if n.op_type == "Scan")
    inner = helper.get_attribute_value(next(a for a in scan.attribute if a.name == "body"))
    op = next(n for n in inner.node if n.domain == exprune_onnx.DOMAIN)
    assert op.input[4] == "r", "the residual is the outer-scope value"

    def feeds(g):
        return {"acc0": g.normal(size=(2, 40)).astype(np.float32), "seq": g.normal(size=(2, 5, 48)).astype(np.float32),
                "side": g.normal(size=(2, 40)).astype(np.float32)}

    assert_equivalent(model, res.model, feeds, draws=2)


# ------------------------------------------------------------------ NHWC (tf2onnx)


def _nhwc_model(rng):
    """tf2onnx after its optimiser: Transpose(0,3,1,2) -> Conv -> Relu -> Transpose(0,2,3,1)
    per layer; the first layer reads the NHWC image."""
    nodes = []
    t = "inp"
    for i in range(2):
        nodes += [helper.make_node("Transpose", [t], [f"nchw{i}"], perm=[0, 3, 1, 2]),
                  helper.make_node("Conv", [f"nchw{i}", f"W{i}", f"B{i}"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                  helper.make_node("Transpose", [f"r{i}"], [f"nhwc{i}"], perm=[0, 2, 3, 1])]
        t = f"nhwc{i}"
    inits = []
    for i, (c_in, c_out) in enumerate([(3, 32), (32, 40)]):
        inits += [init(f"W{i}", (rng.normal(size=(c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32)),
                  init(f"B{i}", rng.normal(size=c_out).astype(np.float32) * 0.1)]
    return make_model(nodes, [vi("inp", ["N", 8, 8, 3])], [vi("nhwc1", None)], inits)


def test_nhwc_transposes_around_conv():
    model = _nhwc_model(np.random.default_rng(2))
    feeds = lambda g: {"inp": g.normal(size=(2, 8, 8, 3)).astype(np.float32)}  # noqa: E731
    res = optimize_model(model, threshold=NEG_INF)
    assert rewritten(res) == ["conv1"]
    # The first conv sees the image through a Transpose: still a graph input.
    assert "graph input" in reasons(res)["conv0"]
    assert node_types(res.model)[-5:] == ["Gather", "Slice", "Conv", "ExPruneConvRelu", "Transpose"]
    assert_equivalent(model, res.model, feeds, draws=2)
    both = optimize_model(model, threshold=NEG_INF, include_first_layer=True, min_units=3)
    assert rewritten(both) == ["conv0", "conv1"]
    assert_equivalent(model, both.model, feeds, draws=2)


def test_nhwc_bias_after_transpose_is_left_alone_with_a_reason():
    """tf2onnx without its optimiser: Conv -> Transpose -> Add(bias, NHWC) -> Relu. The
    Transpose breaks the pattern; the layer must be left alone, not half rewritten."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["h"], perm=[0, 2, 3, 1]),
             helper.make_node("Add", ["h", "B"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    model = make_model(nodes, [vi("inp", ["N", 6, 6, 32])], [vi("y", None)],
                       [init("W", (rng.normal(size=(40, 32, 3, 3)) * 0.1).astype(np.float32)),
                        init("B", rng.normal(size=40).astype(np.float32))])
    before = model.SerializeToString()
    res = optimize_model(model, threshold=0.0)
    assert not res.changed and res.model.SerializeToString() == before
    assert "Transpose" in reasons(res)["conv"]


# ------------------------------------------------------------------ shared weights


def test_conv_weight_shared_by_three_layers():
    """One initializer feeds conv a (-> Relu), conv b (-> BN -> Relu) and conv c (->
    Sigmoid). a and b are rewritten with their own copies; c still reads the original."""
    rng = np.random.default_rng(4)
    w = (rng.normal(size=(40, 32, 3, 3)) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("Conv", ["x", "W", "B"], ["ca"], name="a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["ca"], ["ya"]),
             helper.make_node("Conv", ["x", "W", "B"], ["cb"], name="b", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["cb", "s", "t", "m", "v"], ["nb"]),
             helper.make_node("Relu", ["nb"], ["yb"]),
             helper.make_node("Conv", ["x", "W", "B"], ["cc"], name="c", pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["cc"], ["yc"])]
    inits = [init("W", w), init("B", rng.normal(size=40).astype(np.float32)),
             init("s", rng.uniform(0.5, 1.5, 40).astype(np.float32)), init("t", rng.normal(size=40).astype(np.float32)),
             init("m", rng.normal(size=40).astype(np.float32)), init("v", rng.uniform(0.5, 1.5, 40).astype(np.float32))]
    model = make_model(nodes, [vi("inp", ["N", 32, 5, 5])], [vi("ya", None), vi("yb", None), vi("yc", None)], inits)
    before = model.SerializeToString()
    res = optimize_model(model, threshold=NEG_INF)
    assert rewritten(res) == ["a", "b"]
    assert model.SerializeToString() == before
    kept = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    conv_c = next(n for n in res.model.graph.node if n.name == "c")
    np.testing.assert_array_equal(kept[conv_c.input[1]], w)
    assert_equivalent(model, res.model, lambda g: {"inp": g.normal(size=(2, 32, 5, 5)).astype(np.float32)})


def test_tied_dense_weight_used_in_both_orientations():
    """A square weight read by MatMul(x, W) and by Gemm(z, W, transB=1) (tied weights):
    both layers rewritten, each with its own orientation."""
    rng = np.random.default_rng(5)
    w = (rng.normal(size=(48, 48)) / 7).astype(np.float32)
    nodes = [helper.make_node("Relu", ["p"], ["x"]), helper.make_node("Relu", ["q"], ["z"]),
             helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "B"], ["a"]),
             helper.make_node("Relu", ["a"], ["y1"]),
             helper.make_node("Gemm", ["z", "W", "B"], ["g"], name="gemm", transB=1),
             helper.make_node("Relu", ["g"], ["y2"])]
    model = make_model(nodes, [vi("p", ["N", 48]), vi("q", ["N", 48])], [vi("y1", None), vi("y2", None)],
                       [init("W", w), init("B", rng.normal(size=48).astype(np.float32))])
    before = model.SerializeToString()
    res = optimize_model(model, threshold=NEG_INF)
    assert rewritten(res) == ["gemm", "mm"]
    assert model.SerializeToString() == before
    assert_equivalent(model, res.model, lambda g: {"p": g.normal(size=(3, 48)).astype(np.float32),
                                                   "q": g.normal(size=(3, 48)).astype(np.float32)})


# ------------------------------------------------------------------ every opset


@pytest.mark.parametrize("opset", range(7, onnx.defs.onnx_opset_version() + 1))
def test_every_opset(opset, tmp_path):
    """Opsets 9 to the newest onnx knows: rewritten and exact at -inf where onnxruntime runs
    the opset; older ones left alone with the reason; newer than onnxruntime runs: a clear
    onnxruntime message from the check, and --no-check still writes a valid model."""
    model = sweep_model(opset)
    res = optimize_model(model, threshold=NEG_INF)
    if opset < 9:
        assert not res.changed
        assert all(f"opset {opset} is older" in reasons(res)[layer] for layer in ("conv", "fc1"))
        return
    assert rewritten(res) == ["conv", "fc1"], reasons(res)
    onnx.checker.check_model(res.model)
    assert [(o.domain, o.version) for o in res.model.opset_import if o.domain in ("", "ai.onnx")] == [("", opset)]
    refused = runtime_refuses(model)
    if refused is None:
        assert_equivalent(model, res.model, sweep_feeds, draws=2)
        return
    # onnxruntime does not run this opset yet: the CLI says so and names the way out.
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    r = invoke("optimize", path, "-o", tmp_path / "o.onnx", "--threshold", "-inf")
    assert r.exit_code == 3, r.output  # the model's problem, before any rewrite
    assert "onnxruntime cannot load the original model" in r.stderr and "--no-check" in r.stderr
    assert "opset" in r.stderr.lower(), "onnxruntime's own reason survives the one-line cut"
    assert not (tmp_path / "o.onnx").exists()
    r = invoke("optimize", path, "-o", tmp_path / "o.onnx", "--threshold", "-inf", "--no-check")
    assert r.exit_code == 0, r.output
    onnx.checker.check_model(onnx.load(tmp_path / "o.onnx"))


# ------------------------------------------------------------------ IR newer than onnxruntime


def test_ir_version_newer_than_onnxruntime_through_the_cli(tmp_path):
    """A model stamped with the newest IR onnx writes, which onnxruntime may not read yet:
    check, evaluate and calibration all run, and the output carries an IR that loads."""
    newest, readable = onnx.IR_VERSION, max_runtime_ir_version()
    if newest <= readable:
        pytest.skip(f"onnxruntime {ort.__version__} reads IR {newest}, the newest onnx writes")
    model = sweep_model(17, ir_version=newest)
    assert runtime_refuses(model) is not None
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, path)
    r = invoke("optimize", path, "-o", out, "--threshold", "-inf")
    assert r.exit_code == 0, r.output
    assert "top-1 agreement 100.00%" in r.output
    written = onnx.load(out)
    assert written.ir_version == readable
    model.ir_version = readable
    feeds = sweep_feeds(np.random.default_rng(0))
    np.testing.assert_allclose(run_exprune(written, feeds)[0], run_plain(model, feeds)[0], rtol=1e-4, atol=1e-4)

    data = tmp_path / "d.npz"
    np.savez(data, inp=np.random.default_rng(1).normal(size=(64, 32, 6, 6)).astype(np.float32))
    r = invoke("evaluate", path, out, "--data", data, "--runs", "2")
    assert r.exit_code == 0, r.output
    r = invoke("optimize", path, "-o", tmp_path / "c.onnx", "--calibration", data, "--metric", "agreement",
               "--max-drop", "0.05")
    assert r.exit_code == 0, r.output
    assert onnx.load(tmp_path / "c.onnx").ir_version <= readable
