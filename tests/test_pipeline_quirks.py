"""The compile pipeline on real exporter quirks (issue 7, item 1): each test builds the pattern it names, small.

Covered elsewhere and not repeated here: weights in Constant nodes, If and Loop
bodies, a Relu output that is a graph output or feeds several consumers, BN folding
next to a shared weight, IR lowering through the API (test_canonicalize.py); MatMul +
Add, Gemm with transB, Linear on 3-D input, ReLU6 as Clip with inputs or attributes
(test_dense_relu.py, test_conv_relu.py); external data round trip, unknown ops
(test_cli.py).
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import NEG_INF, assert_equivalent, init, make_model, node_types, run_exprune, run_plain, vi
from onnx import TensorProto, helper, numpy_helper

import exprune_onnx
from exprune_onnx import optimize_model
from exprune_onnx.cli import main
from exprune_onnx.io.modelio import max_runtime_ir_version


def invoke(*args):
    args = [str(a) for a in args]
    if args[:1] == ["optimize"] and "--objective" not in args:
        # These tests are about the rewrites; tests/test_objective.py covers the
        # latency objective, which may keep none of them on a tiny model.
        args.append("--objective=flops")
    return CliRunner().invoke(main, args)


def rewritten(res) -> list[str]:
    return sorted(r.candidate.layer for r in res.rewritten)


def reasons(res) -> dict[str, str]:
    return {r.layer: r.reason for r in res.rejected}


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


def sweep_model(opset: int, ir_version: int | None = None) -> onnx.ModelProto:
    """inp -> Relu -> Conv -> BN -> ReLU6 -> GlobalAveragePool -> Flatten -> Gemm(transB) -> Relu -> Gemm.

    ReLU6 is Clip with attributes before opset 11 and with Constant-node bounds after
    (PyTorch's export). IR 3 (opsets 7, 8) lists initializers as graph inputs too.
    """
    r = np.random.default_rng(6)
    inits = [init("W", (r.normal(size=(40, 32, 3, 3)) * 0.1).astype(np.float32)),
             init("B", r.normal(size=40).astype(np.float32)),
             init("s", r.uniform(0.5, 1.5, 40).astype(np.float32)), init("b", r.normal(size=40).astype(np.float32)),
             init("m", r.normal(size=40).astype(np.float32)), init("v", r.uniform(0.5, 1.5, 40).astype(np.float32)),
             init("G1", (r.normal(size=(48, 40)) / 6).astype(np.float32)),
             init("C1", r.normal(size=48).astype(np.float32)),
             init("G2", (r.normal(size=(48, 10)) / 7).astype(np.float32)),
             init("C2", r.normal(size=10).astype(np.float32))]
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"])]
    if opset < 11:
        nodes.append(helper.make_node("Clip", ["n"], ["a"], min=0.0, max=6.0))
    else:
        nodes += [helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(np.array(0, np.float32))),
                  helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.array(6, np.float32))),
                  helper.make_node("Clip", ["n", "lo", "hi"], ["a"])]
    nodes += [helper.make_node("GlobalAveragePool", ["a"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "G1", "C1"], ["g1"], name="fc1", transB=1),
              helper.make_node("Relu", ["g1"], ["h"]),
              helper.make_node("Gemm", ["h", "G2", "C2"], ["y"], name="fc2")]
    inputs = [vi("inp", ["N", 32, 6, 6])]
    imports = [helper.make_opsetid("", opset)]
    ir_version = ir_version or helper.find_min_ir_version_for(imports)
    if ir_version < 4:
        inputs += [vi(t.name, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "sweep", inputs, [vi("y", ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=imports, ir_version=ir_version)
    onnx.checker.check_model(model)
    return model


def _sweep_feeds(g):
    return {"inp": g.normal(size=(2, 32, 6, 6)).astype(np.float32)}


def _runtime_refuses(model: onnx.ModelProto) -> str | None:
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return None
    except Exception as exc:  # noqa: BLE001 - any refusal is the answer
        return str(exc)


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
    refused = _runtime_refuses(model)
    if refused is None:
        assert_equivalent(model, res.model, _sweep_feeds, draws=2)
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
    assert _runtime_refuses(model) is not None
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, path)
    r = invoke("optimize", path, "-o", out, "--threshold", "-inf")
    assert r.exit_code == 0, r.output
    assert "top-1 agreement 100.00%" in r.output
    written = onnx.load(out)
    assert written.ir_version == readable
    model.ir_version = readable
    feeds = _sweep_feeds(np.random.default_rng(0))
    np.testing.assert_allclose(run_exprune(written, feeds)[0], run_plain(model, feeds)[0], rtol=1e-4, atol=1e-4)

    data = tmp_path / "d.npz"
    np.savez(data, inp=np.random.default_rng(1).normal(size=(64, 32, 6, 6)).astype(np.float32))
    r = invoke("evaluate", path, out, "--data", data, "--runs", "2")
    assert r.exit_code == 0, r.output
    r = invoke("optimize", path, "-o", tmp_path / "c.onnx", "--calibration", data, "--metric", "agreement",
               "--max-drop", "0.05")
    assert r.exit_code == 0, r.output
    assert onnx.load(tmp_path / "c.onnx").ir_version <= readable


# ------------------------------------------------------------------ dynamic shapes


def _dynamic_model(residual: bool) -> onnx.ModelProto:
    """[N, 3, H, W] -> conv0 (image) -> Relu -> conv1 (strided, SAME_UPPER) | padded conv1 + skip
    -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Relu, with N, H and W symbolic."""
    r = np.random.default_rng(7)
    inits = [init("W0", (r.normal(size=(32, 3, 3, 3)) * 0.3).astype(np.float32)),
             init("B0", r.normal(size=32).astype(np.float32)),
             init("W1", (r.normal(size=(32, 32, 3, 3)) * 0.1).astype(np.float32)),
             init("B1", r.normal(size=32).astype(np.float32)),
             init("G", (r.normal(size=(48, 32)) / 6).astype(np.float32)),
             init("C", r.normal(size=48).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["inp", "W0", "B0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["x"])]
    if residual:
        nodes += [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
                  helper.make_node("Add", ["c1", "x"], ["s"], name="skip"),
                  helper.make_node("Relu", ["s"], ["a"])]
    else:
        nodes += [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", strides=[2, 2],
                                   auto_pad="SAME_UPPER"),
                  helper.make_node("Relu", ["c1"], ["a"])]
    nodes += [helper.make_node("GlobalAveragePool", ["a"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "G", "C"], ["g"], name="fc", transB=1),
              helper.make_node("Relu", ["g"], ["y"])]
    return make_model(nodes, [vi("inp", ["N", 3, "H", "W"])], [vi("y", ["N", 48])], inits)


SHAPES = [(1, 3, 5, 7), (3, 3, 12, 9), (2, 3, 1, 1)]


@pytest.mark.parametrize("residual", [False, True], ids=["strided", "residual"])
def test_dynamic_batch_and_spatial_dims(residual):
    if residual:
        # Proving the skip's shape equal over symbolic H, W takes onnxruntime's symbolic
        # shape inference, which needs sympy (not an onnxruntime dependency).
        pytest.importorskip("sympy", reason="symbolic H, W residuals are proved with sympy")
    model = _dynamic_model(residual)
    res = optimize_model(model, threshold=NEG_INF, min_units=32)
    assert rewritten(res) == ["conv1", "fc"], reasons(res)
    for shape in SHAPES:
        assert_equivalent(model, res.model, lambda g, shape=shape: {"inp": g.normal(size=shape).astype(np.float32)}, draws=1)
    # The optimised model keeps the symbolic dims it was given.
    dims = [d.dim_param or d.dim_value for d in res.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "H", "W"]


@pytest.mark.parametrize("opset", [11, 13])
def test_a_linear_after_a_reshape_to_a_computed_shape_is_a_candidate(opset):
    """torch's conv(x).flatten(2).transpose(1, 2) -> nn.Linear at opsets 11-13: the Reshape's
    shape is Shape -> Slice -> Concat, whose result onnx gives no rank; onnxruntime's
    symbolic inference does (the MatMul read "the rank of the input is unknown")."""
    pytest.importorskip("sympy", reason="onnxruntime's symbolic shape inference needs sympy")
    rng = np.random.default_rng(3)
    const = {"start": [0], "end": [2], "rest": [-1]}
    nodes = [helper.make_node("Relu", ["inp"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
             *[helper.make_node("Constant", [], [k], value=numpy_helper.from_array(np.array(v, np.int64)))
               for k, v in const.items()],
             helper.make_node("Slice", ["s", "start", "end"], ["head"]),
             helper.make_node("Concat", ["head", "rest"], ["to"], axis=0),
             helper.make_node("Reshape", ["r", "to"], ["flat"]),
             helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["tokens", "w"], ["m"], name="fc"), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["out"])]
    model = make_model(nodes, [vi("inp", ["N", 64, 6, 6])], [vi("out", ["N", 36, 48])],
                       [init("w", (rng.normal(size=(64, 48)) / 8).astype(np.float32)),
                        init("b", rng.normal(size=48).astype(np.float32))], opset=opset)
    res = optimize_model(model, threshold=NEG_INF, min_units=32)
    assert rewritten(res) == ["fc"], reasons(res)
    assert_equivalent(model, res.model, lambda g: {"inp": g.normal(size=(2, 64, 6, 6)).astype(np.float32)}, draws=1)


def test_symbolic_inference_is_not_called_in_for_outputs_it_cannot_help():
    """A sequence output has no tensor shape, and onnxruntime's inference knows no other
    domain: neither is a Reshape it could give a rank (importing it costs seconds)."""
    from exprune_onnx.compiler.pipeline import _has_rankless_outputs

    seq = helper.make_graph([helper.make_node("SequenceConstruct", ["a"], ["s"])], "g", [vi("a", [2])],
                            [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)])
    assert not _has_rankless_outputs(seq)
    foreign = helper.make_graph([helper.make_node("Custom", ["a"], ["b"], domain="other"),
                                 helper.make_node("Reshape", ["b", "to"], ["c"])], "g", [vi("a", [2]), vi("to", [1])],
                                [vi("c", None)])
    assert not _has_rankless_outputs(foreign)
    foreign.node[0].domain = ""
    assert _has_rankless_outputs(foreign)  # the Reshape's rank is what it could give


def test_dynamic_dims_through_the_cli(tmp_path):
    path, out, data = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "d.npz"
    onnx.save(_dynamic_model(False), path)
    # Random check inputs need every non-batch dim: without data they are run at 224 x 224, said so.
    r = invoke("optimize", path, "-o", out, "--threshold", "-inf")
    assert r.exit_code == 0 and "took 'inp' [N, 3, H, W] as [N, 3, 224, 224]" in " ".join(r.output.split()), r.output
    np.savez(data, inp=np.random.default_rng(8).normal(size=(16, 3, 10, 6)).astype(np.float32))
    r = invoke("optimize", path, "-o", out, "--threshold", "-inf", "--check-data", data)
    assert r.exit_code == 0, r.output
    assert "top-1 agreement 100.00%" in r.output


# ------------------------------------------------------------------ fp16, bf16, int8


def _conv_of_type(elem_type: int) -> onnx.ModelProto:
    """inp -> Relu -> Conv -> Relu with weights, bias and activations of ``elem_type``."""
    r = np.random.default_rng(9)
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    w = (r.normal(size=(40, 32, 3, 3)) * 0.1).astype(np.float32).astype(dtype)
    b = r.normal(size=40).astype(np.float32).astype(dtype)
    nodes = [helper.make_node("Relu", ["inp"], ["x"]), helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = [helper.make_tensor("W", elem_type, w.shape, w.tobytes(), raw=True),
             helper.make_tensor("B", elem_type, b.shape, b.tobytes(), raw=True)]
    return make_model(nodes, [vi("inp", ["N", 32, 6, 6], elem_type)], [vi("y", None, elem_type)], inits)


def _qlinear_conv() -> onnx.ModelProto:
    """onnxruntime's quantizer, operator form: QuantizeLinear -> QLinearConv -> DequantizeLinear."""
    r = np.random.default_rng(10)
    inits = [init("xs", np.array(0.05, np.float32)), init("xz", np.array(0, np.uint8)),
             init("Wq", r.integers(-20, 20, size=(40, 32, 3, 3)).astype(np.int8)),
             init("ws", np.array(0.02, np.float32)), init("wz", np.array(0, np.int8)),
             init("ys", np.array(0.1, np.float32)), init("yz", np.array(0, np.uint8))]
    nodes = [helper.make_node("QuantizeLinear", ["inp", "xs", "xz"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "xs", "xz", "Wq", "ws", "wz", "ys", "yz"], ["yq"], name="qconv"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    return make_model(nodes, [vi("inp", ["N", 32, 6, 6])], [vi("y", None)], inits, opset=13)


def _qdq_conv() -> onnx.ModelProto:
    """QDQ form: a float Conv -> Relu whose input and weight come out of DequantizeLinear."""
    r = np.random.default_rng(11)
    inits = [init("xs", np.array(0.05, np.float32)), init("xz", np.array(0, np.uint8)),
             init("Wq", r.integers(-20, 20, size=(40, 32, 3, 3)).astype(np.int8)),
             init("ws", np.array(0.02, np.float32)), init("wz", np.array(0, np.int8))]
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, [vi("inp", ["N", 32, 6, 6])], [vi("y", None)], inits, opset=13)


def _matmul_integer() -> onnx.ModelProto:
    r = np.random.default_rng(12)
    inits = [init("xs", np.array(0.05, np.float32)), init("xz", np.array(0, np.uint8)),
             init("Wm", r.integers(-20, 20, size=(64, 40)).astype(np.int8)), init("wz", np.array(0, np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["inp", "xs", "xz"], ["xq"]),
             helper.make_node("MatMulInteger", ["xq", "Wm", "xz", "wz"], ["mi"], name="mmi"),
             helper.make_node("Cast", ["mi"], ["y"], to=TensorProto.FLOAT)]
    return make_model(nodes, [vi("inp", ["N", 64])], [vi("y", None)], inits, opset=13)


LOW_PRECISION = {
    "float16": (lambda: _conv_of_type(TensorProto.FLOAT16), "conv", "float16"),
    "bfloat16": (lambda: _conv_of_type(TensorProto.BFLOAT16), "conv", "bfloat16"),
    "qlinearconv": (_qlinear_conv, "qconv", "quantized (integer)"),
    "qdq": (_qdq_conv, "conv", "DequantizeLinear"),
    "matmulinteger": (_matmul_integer, "mmi", "quantized (integer)"),
}


@pytest.mark.parametrize("case", LOW_PRECISION)
def test_low_precision_left_alone_with_a_reason(case, tmp_path):
    build, layer, words = LOW_PRECISION[case]
    model = build()
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, path)
    r = invoke("inspect", path)
    assert r.exit_code == 0, r.output
    assert layer in r.output and words in r.output
    assert "[W]" not in r.output, "onnx-graphsurgeon's warnings stay off the output"
    r = invoke("optimize", path, "-o", out, "--explain", "--no-check")
    assert r.exit_code == 0, r.output
    assert words in r.output and "written unchanged" in r.output
    assert onnx.load(out) == model


# ------------------------------------------------------------------ models over 2 GB


def _big_embedding_model(folder, rows: int, width: int = 64) -> None:
    """ids -> Gather(table) -> Relu -> MatMul -> Add -> Relu, the table in ``big.onnx.data``.

    The table is written straight to the data file and referenced from the model, as an
    exporter stores a large embedding: no 2 GB protobuf or array is ever built here.
    """
    # Rows differ (within each block of 2**16), so a misplaced or lost table shows.
    block = (np.linspace(-1, 1, width, dtype=np.float32)[None, :]
             + (np.arange(1 << 16) % 251)[:, None].astype(np.float32) * np.float32(0.01))
    with open(folder / "big.onnx.data", "wb") as f:
        left = rows
        while left:
            n = min(left, block.shape[0])
            f.write(block[:n].tobytes())
            left -= n
    table = TensorProto(name="E", dims=[rows, width], data_type=TensorProto.FLOAT,
                        data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "big.onnx.data"), ("offset", "0"), ("length", str(rows * width * 4))):
        entry = table.external_data.add()
        entry.key, entry.value = key, value
    r = np.random.default_rng(13)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["e"]), helper.make_node("Relu", ["e"], ["x"]),
             helper.make_node("MatMul", ["x", "W"], ["m"], name="fc"), helper.make_node("Add", ["m", "B"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    inits = [table, init("W", (r.normal(size=(width, 48)) / 8).astype(np.float32)),
             init("B", r.normal(size=48).astype(np.float32))]
    graph = helper.make_graph(nodes, "big", [vi("ids", ["N"], TensorProto.INT64)], [vi("y", ["N", 48])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), folder / "big.onnx")


@pytest.mark.slow
def test_model_over_2gb_with_external_data(tmp_path):
    """A 2 GiB embedding table as external data, through the CLI: the small layer after it
    is rewritten and the output is written with external data, loads and runs exactly
    (--no-check: see test_check_of_a_model_over_2gb_says_so). Needs ~6 GB of free disk
    (skipped below) and ~7 GB of memory; about 30 s."""
    free = shutil.disk_usage(tmp_path).free
    if free < 6e9:
        pytest.skip(f"needs ~6 GB of free disk under {tmp_path}, has {free / 1e9:.1f} GB")
    width = 64
    rows = (1 << 31) // (width * 4) + 1024  # just over 2 GiB
    folder = tmp_path / "big"
    folder.mkdir()
    try:
        _big_embedding_model(folder, rows, width)
        ids = np.array([0, 7, rows - 1], np.int64)  # the last row sits past the 2 GiB mark
        out = folder / "out.onnx"
        r = invoke("optimize", folder / "big.onnx", "-o", out, "--threshold", "-inf", "--no-check")
        assert r.exit_code == 0, r.output
        assert "ExPruneDenseRelu 0->1" in r.output
        data = folder / "out.onnx.data"
        assert data.stat().st_size >= rows * width * 4 and out.stat().st_size < 1 << 20
        types = [n.op_type for n in onnx.load(out, load_external_data=False).graph.node]
        assert types.count("ExPruneDenseRelu") == 1 and "Gather" in types
        # onnxruntime finds each model's data file next to it; one 2 GB session at a time.
        got = exprune_onnx.inference_session(out, optimize=False).run(None, {"ids": ids})[0]
        reference = ort.InferenceSession(str(folder / "big.onnx"), providers=["CPUExecutionProvider"])
        want = reference.run(None, {"ids": ids})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_check_of_a_model_over_2gb_says_so():
    """The check hands models to onnxruntime as bytes, which protobuf cannot make over
    2 GiB: it must say so and name --no-check, not fail inside protobuf. The weight's
    dims claim 2 GiB; no data is ever allocated."""
    from exprune_onnx.errors import RuntimeCheckError
    from exprune_onnx.io.data import Dataset
    from exprune_onnx.measure.compare import compare

    table = TensorProto(name="E", dims=[1 << 23, 64], data_type=TensorProto.FLOAT)
    graph = helper.make_graph([helper.make_node("Gather", ["E", "ids"], ["y"])], "big",
                              [vi("ids", ["N"], TensorProto.INT64)], [vi("y", ["N", 64])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    data = Dataset({"ids": np.zeros(2, np.int64)}, None, "ids")
    with pytest.raises(RuntimeCheckError, match="over 2 GB.*--no-check"):
        compare(model, model, data)
    from exprune_onnx.compiler.pipeline import Result
    from exprune_onnx.config import Options
    from exprune_onnx.tuning import objective

    with pytest.raises(RuntimeCheckError, match="over 2 GB.*--objective flops"):
        objective.choose(model, Options(), Result(model), data)


def test_big_model_path_on_a_small_model(monkeypatch):
    """The over-2-GB handling (shapes on a skeleton, large constants stubbed at export) run
    on a small model by lowering its limits: same rewrite, same outputs, and the
    weights in the written model are the original's."""
    from exprune_onnx.io import bigmodel

    model = sweep_model(17)
    plain = optimize_model(model, threshold=NEG_INF)
    monkeypatch.setattr(bigmodel, "LARGE_TENSOR_BYTES", 1024)
    monkeypatch.setattr(bigmodel, "BIG_MODEL_BYTES", 4096)
    assert bigmodel.skeleton(model) is not None
    big = optimize_model(model, threshold=NEG_INF)
    assert rewritten(big) == rewritten(plain) == ["conv", "fc1"]
    # Shapes were inferred although the skeleton's large weights had no data.
    assert {v.name for v in big.model.graph.value_info} == {v.name for v in plain.model.graph.value_info}
    assert [(t.name, t.raw_data) for t in big.model.graph.initializer] == \
        [(t.name, t.raw_data) for t in plain.model.graph.initializer]
    assert_equivalent(model, big.model, _sweep_feeds, draws=1)


def test_stale_value_info_in_the_input_does_not_break_the_output():
    """A graph editor left a wrong shape hint on an intermediate: onnxruntime ignores it, so must we."""
    rng = np.random.default_rng(12)
    w1 = rng.normal(size=(8, 40)).astype(np.float32)
    w2 = (rng.normal(size=(40, 40)) / 6).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["m"], name="fc"), helper.make_node("Relu", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "stale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 40])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
                              value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 7, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    res = optimize_model(model, threshold=float("-inf"))
    assert res.changed
    onnx.checker.check_model(res.model)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(run_exprune(res.model, {"x": x})[0], run_plain(model, {"x": x})[0], rtol=1e-4,
                               atol=1e-5)


def test_layer_reading_a_slice_of_the_graph_input_is_a_first_layer():
    """SIGN-style GNNs slice per-hop raw features off one input: still raw, not exchangeable."""
    rng = np.random.default_rng(13)
    w = rng.normal(size=(40, 40)).astype(np.float32)
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a"], ["xs"]),
             helper.make_node("MatMul", ["xs", "w"], ["m"], name="hop"), helper.make_node("Relu", ["m"], ["y"])]
    inits = [init("w", w), init("s", np.array([0], np.int64)), init("e", np.array([40], np.int64)),
             init("a", np.array([1], np.int64))]
    model = make_model(nodes, [vi("x", ["N", 80])], [vi("y", ["N", 40])], inits)
    res = optimize_model(model, threshold=NEG_INF)
    assert not res.changed and "graph input" in res.rejected[0].reason
    assert optimize_model(model, threshold=NEG_INF, include_first_layer=True).changed


@pytest.mark.parametrize("before", ["scaler", "normalise"])
def test_a_layer_reading_scaled_raw_features_is_a_first_layer(before):
    """sklearn's StandardScaler (an ai.onnx.ml Scaler, which onnx's inference gives no
    shape) or (x - mean) / std before the first MatMul: still raw features. The shape is
    carried through the Scaler, so the next layer is a candidate (every MatMul read 'the
    rank of the input is unknown')."""
    rng = np.random.default_rng(14)
    if before == "scaler":
        pre = [helper.make_node("Scaler", ["x"], ["xs"], domain="ai.onnx.ml", offset=[0.5] * 40, scale=[2.0] * 40)]
    else:
        pre = [helper.make_node("Sub", ["x", "mean"], ["xc"]), helper.make_node("Div", ["xc", "std"], ["xs"])]
    nodes = [*pre, helper.make_node("Cast", ["xs"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "w0"], ["m0"], name="first"), helper.make_node("Relu", ["m0"], ["h"]),
             helper.make_node("MatMul", ["h", "w1"], ["m1"], name="second"), helper.make_node("Relu", ["m1"], ["y"])]
    inits = [init("w0", rng.normal(size=(40, 48)).astype(np.float32)),
             init("w1", rng.normal(size=(48, 32)).astype(np.float32)),
             init("mean", np.full(40, 0.5, np.float32)), init("std", np.full(40, 2.0, np.float32))]
    model = make_model(nodes, [vi("x", ["N", 40])], [vi("y", ["N", 32])], inits,
                       domains=["ai.onnx.ml"] if before == "scaler" else ())
    res = optimize_model(model, threshold=NEG_INF)
    assert rewritten(res) == ["second"], reasons(res)
    assert "graph input" in reasons(res)["first"]
    assert_equivalent(model, res.model, lambda g: {"x": g.normal(size=(3, 40)).astype(np.float32)}, draws=1)


@pytest.mark.parametrize("beside", ["embedding", "relu"])
def test_a_concat_holding_raw_features_is_a_first_layer(beside):
    """A tabular model's numbers concatenated with an embedding of its ids: the layer reads
    raw features (it was rewritten); a Concat of computed features alone is no first layer."""
    rng = np.random.default_rng(17)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]), helper.make_node("Relu", ["x"], ["xr"]),
             helper.make_node("Concat", ["x" if beside == "embedding" else "xr", "emb"], ["cat"], axis=1),
             helper.make_node("MatMul", ["cat", "w0"], ["m0"], name="first"), helper.make_node("Relu", ["m0"], ["y"])]
    inits = [init("w0", rng.normal(size=(48, 40)).astype(np.float32)),
             init("table", rng.normal(size=(10, 8)).astype(np.float32))]
    model = make_model(nodes, [vi("x", ["N", 40]), vi("ids", ["N"], TensorProto.INT64)], [vi("y", ["N", 40])], inits)
    res = optimize_model(model, threshold=NEG_INF)
    if beside == "embedding":
        assert rewritten(res) == [] and "(or holds) a graph input" in reasons(res)["first"]
        assert rewritten(optimize_model(model, threshold=NEG_INF, include_first_layer=True)) == ["first"]
    else:
        assert rewritten(res) == ["first"], reasons(res)


@pytest.mark.parametrize("op", ["reciprocal", "table"])
def test_new_features_from_the_input_make_no_first_layer(op):
    """1 / x, or a [N, 1] input times a [1, 48] table, computes features: the layer reading
    them is a candidate (only x + c, x - c, x * c, x / c that keep x's entries are raw)."""
    rng = np.random.default_rng(16)
    if op == "reciprocal":
        pre, width = [helper.make_node("Div", ["one", "x"], ["xs"])], 48
    else:
        pre, width = [helper.make_node("Mul", ["x", "table"], ["xs"])], 1
    nodes = [*pre, helper.make_node("MatMul", ["xs", "w0"], ["m0"], name="first"), helper.make_node("Relu", ["m0"], ["y"])]
    inits = [init("w0", rng.normal(size=(48, 40)).astype(np.float32)), init("one", np.ones(1, np.float32)),
             init("table", rng.normal(size=(1, 48)).astype(np.float32))]
    model = make_model(nodes, [vi("x", ["N", width])], [vi("y", ["N", 40])], inits)
    assert rewritten(optimize_model(model, threshold=NEG_INF)) == ["first"]


def test_a_zipmap_output_keeps_its_type_and_is_left_out_of_the_comparisons(tmp_path):
    """skl2onnx's default classifier: the labels, and a ZipMap's sequence of maps of the
    probabilities. graphsurgeon wrote the latter back untyped (onnxruntime refused the
    model: exit 7, or written with --no-check), and every comparison took its Python
    lists for arrays (calibration, evaluate and verify failed): they are read as
    [N, classes] now."""
    rng = np.random.default_rng(15)
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m0"]), helper.make_node("Relu", ["m0"], ["h0"]),
             helper.make_node("MatMul", ["h0", "w1"], ["m1"], name="hidden"), helper.make_node("Relu", ["m1"], ["h1"]),
             helper.make_node("MatMul", ["h1", "w2"], ["logits"]), helper.make_node("Softmax", ["logits"], ["p"]),
             helper.make_node("ArgMax", ["p"], ["label"], axis=1, keepdims=0),
             helper.make_node("ZipMap", ["p"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64,
                                                                      helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
               helper.make_value_info("probabilities", maps)]
    inits = [init("w0", rng.normal(size=(16, 48)).astype(np.float32)),
             init("w1", rng.normal(size=(48, 48)).astype(np.float32) / 7),
             init("w2", rng.normal(size=(48, 3)).astype(np.float32))]
    model = make_model(nodes, [vi("x", ["N", 16])], outputs, inits, domains=["ai.onnx.ml"])
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(300, 16)).astype(np.float32), labels=rng.integers(0, 3, 300))
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--threshold=-inf", "--objective", "flops",
                                  "--check-data", str(tmp_path / "d.npz")])
    assert r.exit_code == 0 and "check 'label'" in r.output and "check 'probabilities'" in r.output, r.output
    assert "[W]" not in r.output  # graphsurgeon's warning on the map type, between the tables
    written = onnx.load(out)
    assert written.graph.output[1].type == model.graph.output[1].type
    onnx.checker.check_model(written)
    r = CliRunner().invoke(main, ["verify", str(path), str(out), "--data", str(tmp_path / "d.npz")])
    assert r.exit_code == 0 and "not compared" not in r.output, r.output
    assert "'label' top-1 agreement" in r.output and "'label' max abs diff" not in r.output  # of class indices
    del written.graph.output[1].type.sequence_type.elem_type.map_type.value_type.tensor_type.shape.dim[:]
    written.graph.output[1].type.sequence_type.elem_type.Clear()  # the type graphsurgeon wrote back
    onnx.save(written, tmp_path / "untyped.onnx")
    r = CliRunner().invoke(main, ["verify", str(path), str(tmp_path / "untyped.onnx"), "--data", str(tmp_path / "d.npz")])
    assert r.exit_code == 8 and "graph outputs" in " ".join(r.output.split()), r.output
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "c.onnx"), "--objective", "flops",
                                  "--calibration", str(tmp_path / "d.npz"), "--max-drop", "0.05", "--confidence", "0"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "c.onnx"), "--calibration",
                                  str(tmp_path / "d.npz"), "--score-output", "probabilities", "--confidence", "0",
                                  "--objective", "flops", "--max-drop", "0.05"])
    assert r.exit_code == 0 and "drop <= 0.05 on output 'probabilities'" in " ".join(r.output.split()), r.output
    # A sequence of tensors alone: nothing a metric reads (it was an IndexError).
    model.graph.node[-1].CopyFrom(helper.make_node("SequenceConstruct", ["p", "p"], ["probabilities"]))
    del model.graph.output[0]
    model.graph.output[0].CopyFrom(helper.make_tensor_sequence_value_info("probabilities", TensorProto.FLOAT, None))
    onnx.save(model, path)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "c.onnx"), "--calibration",
                                  str(tmp_path / "d.npz"), "--confidence", "0"])
    assert r.exit_code == 4 and "no tensor output for a metric" in " ".join(r.output.split()), r.output


@pytest.mark.parametrize("source", ["x", "hidden"])
def test_a_scan_body_reading_the_graph_input_step_by_step_is_a_first_layer(source):
    """A Scan hands its body the scanned input one step at a time: a layer there reading
    the graph input reads raw features (refused, as outside the Scan); reading a hidden
    ReLU's output it is rewritten."""
    rng = np.random.default_rng(14)
    body = helper.make_graph(
        [helper.make_node("Gemm", ["xs", "w", "b"], ["g"], transB=1, name="step"),
         helper.make_node("Relu", ["g"], ["ys"]), helper.make_node("Identity", ["s_in"], ["s_out"])], "body",
        [vi("s_in", [1]), vi("xs", ["N", 40])], [vi("s_out", [1]), vi("ys", ["N", 48])],
        [init("w", rng.normal(size=(48, 40)).astype(np.float32)), init("b", rng.normal(size=48).astype(np.float32))])
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m"]), helper.make_node("Relu", ["m"], ["h"]),
             helper.make_node("Scan", ["s0", source if source == "x" else "h"], ["s", "y"], body=body,
                              num_scan_inputs=1, name="scan")]
    model = make_model(nodes, [vi("x", [4, "N", 40])], [vi("y", [4, "N", 48]), vi("h", [4, "N", 40])],
                       [init("s0", np.zeros(1, np.float32)), init("w0", rng.normal(size=(40, 40)).astype(np.float32))])
    res = optimize_model(model, threshold=NEG_INF)
    reasons = {r.layer: r.reason for r in res.rejected}
    if source == "x":
        assert "graph input" in reasons["step"] and not res.rewritten
        forced = optimize_model(model, threshold=NEG_INF, include_first_layer=True)
        assert "step" in [r.candidate.layer for r in forced.rewritten]
    else:
        assert [r.candidate.layer for r in res.rewritten] == ["step"]
        assert_equivalent(model, res.model, lambda r: {"x": r.normal(size=(4, 3, 40)).astype(np.float32)})


def test_initializers_listed_as_inputs_stay_inputs():
    """keep_initializers_as_inputs exports (IR >= 4): the written model takes the same inputs,
    except the weights a rewrite replaced; timing copies drop them (measure/timing.py)."""
    model = sweep_model(13)
    data_input = onnx.ValueInfoProto.FromString(model.graph.input[0].SerializeToString())
    del model.graph.input[:]  # weights first, as some exporters list them
    model.graph.input.extend([*(vi(t.name, list(t.dims)) for t in model.graph.initializer), data_input])
    onnx.checker.check_model(model)
    res = optimize_model(model, threshold=NEG_INF, sparse_relu="on")
    assert res.changed and res.sparse
    inits = {t.name for t in res.model.graph.initializer}
    names = [i.name for i in res.model.graph.input]
    assert set(names) - {"inp"} == inits & {t.name for t in model.graph.initializer}
    # conv and fc1 became early-exit ops on new weights; fc2's sparse op reads G2 and C2 as
    # stored. The order is the original's: a caller may feed inputs by position.
    assert names == ["G2", "C2", "inp"]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, _sweep_feeds)


def test_output_dims_keep_the_originals_names():
    """Shape inference names a concatenated dim "past_len + 1"; the written model keeps the
    original's "total_len" (a KV-cache step graph's logits)."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Concat", ["past", "x"], ["cat"], axis=1),
             helper.make_node("MatMul", ["cat", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="h2"), helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("MatMul", ["r2", "w3"], ["y"])]
    model = make_model(nodes, [vi("past", [1, "past_len", 32]), vi("x", [1, 1, 32])], [vi("y", [1, "total_len", 10])],
                       [init(n, rng.standard_normal(s).astype(np.float32))
                        for n, s in (("w1", (32, 64)), ("w2", (64, 64)), ("w3", (64, 10)))])
    # (The first layer reads a Concat of graph inputs: a first layer unless asked.)
    assert node_types(optimize_model(model, threshold=NEG_INF, min_units=32).model).count("ExPruneDenseRelu") == 1
    res = optimize_model(model, threshold=NEG_INF, min_units=32, include_first_layer=True)
    assert node_types(res.model).count("ExPruneDenseRelu") == 2
    assert res.model.graph.output[0] == model.graph.output[0]
    # An output declared without a shape is not given an empty one (which declares a scalar).
    # At the door (API and CLI) it takes the rank-3 shape inference gives it; the compiler
    # is asked directly too.
    from exprune_onnx.compiler.pipeline import optimize as compile_model
    from exprune_onnx.config import Options

    unshaped = onnx.ModelProto()
    unshaped.CopyFrom(model)
    unshaped.graph.output[0].type.tensor_type.ClearField("shape")
    assert len(optimize_model(unshaped, threshold=NEG_INF).model.graph.output[0].type.tensor_type.shape.dim) == 3
    for shapes in ({}, {"past": (1, 3, 32)}):
        options = Options(threshold=NEG_INF, min_units=32, input_shapes=shapes, include_first_layer=True)
        out = compile_model(unshaped, options).model.graph.output[0]
        assert not out.type.tensor_type.HasField("shape") or len(out.type.tensor_type.shape.dim) == 3
    assert res.model.graph.value_info  # without fixed input dims, the inferred shapes stay
    onnx.checker.check_model(res.model)
    feeds = {"past": rng.standard_normal((1, 3, 32)).astype(np.float32),
             "x": rng.standard_normal((1, 1, 32)).astype(np.float32)}
    np.testing.assert_allclose(run_exprune(res.model, feeds)[0], run_plain(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_given_shapes_still_prove_a_residual_inside_a_branch():
    """Proof shapes (pipeline.analysis_graph) come from If bodies too: with --input-shape,
    a residual block in each branch is rewritten as without it."""
    rng = np.random.default_rng(6)

    def block(side):
        p = side[0] + "_"
        ws = [init(p + w, (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)) for w in ("w1", "w2")]
        nodes = [helper.make_node("Conv", ["x1", p + "w1"], [p + "c1"], pads=[1, 1, 1, 1], name=p + "conv1"),
                 helper.make_node("Relu", [p + "c1"], [p + "r1"]),
                 helper.make_node("Conv", [p + "r1", p + "w2"], [p + "c2"], pads=[1, 1, 1, 1], name=p + "conv2"),
                 helper.make_node("Add", [p + "c2", "x1"], [p + "s"]), helper.make_node("Relu", [p + "s"], [p + "out"])]
        return helper.make_graph(nodes, side, [], [vi(p + "out", ["N", 16, 8, 8])], ws)

    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["x1"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=block("then"), else_branch=block("else"))]
    model = make_model(nodes, [vi("x", ["N", 1, 8, 8]), vi("cond", [], TensorProto.BOOL)], [vi("y", ["N", 16, 8, 8])],
                       [init("w0", (rng.standard_normal((16, 1, 3, 3)) * 0.1).astype(np.float32))])
    want = sorted(rw.candidate.layer for rw in optimize_model(model, threshold=NEG_INF, min_units=8).rewritten)
    assert want == ["e_conv1", "e_conv2", "t_conv1", "t_conv2"]
    for shapes in ({"x": (4, 1, 8, 8)}, {"x": ("N", 1, 8, 8)}):
        res = optimize_model(model, threshold=NEG_INF, min_units=8, input_shapes=shapes)
        assert sorted(rw.candidate.layer for rw in res.rewritten) == want


def test_a_sequence_output_keeps_its_type_when_shapes_are_given():
    """keep_open_dims touches tensor outputs only: clearing a sequence's "shape" turned it
    into a tensor of type 0, which onnxruntime refuses."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="h2"), helper.make_node("Relu", ["h2"], ["y"]),
             helper.make_node("SequenceConstruct", ["y", "y"], ["seq"])]
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    model = make_model(nodes, [vi("x", ["N", 64])], [vi("y", ["N", 64]), seq],
                       [init(n, rng.standard_normal((64, 64)).astype(np.float32)) for n in ("w1", "w2")])
    res = optimize_model(model, threshold=NEG_INF, min_units=32, input_shapes={"x": (4, 64)})
    assert res.changed and res.model.graph.output[1] == seq
    feeds = {"x": rng.standard_normal((2, 64)).astype(np.float32)}
    np.testing.assert_allclose(run_exprune(res.model, feeds)[0], run_plain(model, feeds)[0], rtol=1e-5, atol=1e-4)


def test_graph_and_node_notes_survive_the_rewrite():
    """torch's dynamo exporter keeps its export signature in the graph's metadata and a
    stack trace in each node's: kept on the graph and on every node left as it was."""
    rng = np.random.default_rng(15)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="first", doc_string="the first layer"),
             helper.make_node("Relu", ["h1"], ["r1"], name="act1"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc"), helper.make_node("Relu", ["h2"], ["y"])]
    helper.set_metadata_props(nodes[0], {"pkg.torch.onnx.stack_trace": "model.py:12"})
    model = make_model(nodes, [vi("x", ["N", 32])], [vi("y", ["N", 64])],
                       [init("w1", rng.standard_normal((32, 64)).astype(np.float32)),
                        init("w2", rng.standard_normal((64, 64)).astype(np.float32))], opset=18, ir_version=10)
    helper.set_metadata_props(model.graph, {"pkg.torch.export.ExportedProgram.graph_signature": "sig"})
    res = optimize_model(model, threshold=NEG_INF, min_units=32)
    assert [r.candidate.layer for r in res.rewritten] == ["fc"]
    assert {p.key: p.value for p in res.model.graph.metadata_props} == {
        "pkg.torch.export.ExportedProgram.graph_signature": "sig"}
    first = next(n for n in res.model.graph.node if n.name == "first")
    assert first.doc_string == "the first layer"
    assert {p.key: p.value for p in first.metadata_props} == {"pkg.torch.onnx.stack_trace": "model.py:12"}
    onnx.checker.check_model(res.model)


def shared_branches(rng):
    """x -> If(cond): both branches run the same two-conv block on the main graph's weights
    (as a merged decoder's cache and no-cache branches share theirs), scaled differently."""
    weights = [init(w, (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)) for w in ("w1", "w2")]

    def block(side, scale):
        p = side[0] + "_"
        nodes = [helper.make_node("Conv", ["x1", "w1"], [p + "c1"], pads=[1, 1, 1, 1], name=p + "conv1"),
                 helper.make_node("Relu", [p + "c1"], [p + "r1"]),
                 helper.make_node("Conv", [p + "r1", "w2"], [p + "c2"], pads=[1, 1, 1, 1], name=p + "conv2"),
                 helper.make_node("Relu", [p + "c2"], [p + "r2"]),
                 helper.make_node("Mul", [p + "r2", p + "scale"], [p + "out"])]
        return helper.make_graph(nodes, side, [], [vi(p + "out", ["N", 16, 8, 8])],
                                 [init(p + "scale", np.float32(scale))])

    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["x1"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=block("then", 1.0), else_branch=block("else", 2.0))]
    return make_model(nodes, [vi("x", ["N", 1, 8, 8]), vi("cond", [], TensorProto.BOOL)], [vi("y", ["N", 16, 8, 8])],
                      [init("w0", (rng.standard_normal((16, 1, 3, 3)) * 0.1).astype(np.float32)), *weights])


@pytest.mark.parametrize("threshold", [NEG_INF, -1.0])
def test_weights_both_branches_share_are_written_once(threshold):
    """graphsurgeon writes an outer weight into each body that reads it, and each branch's
    rewrite of a shared layer makes its own copy of the new weights: the model came out
    twice its size. One copy of each, in the main graph, serves both."""
    rng = np.random.default_rng(9)
    model = shared_branches(rng)
    res = optimize_model(model, threshold=threshold, min_units=8, sparse_input=False)
    assert sorted(rw.candidate.layer for rw in res.rewritten) == ["e_conv1", "e_conv2", "t_conv1", "t_conv2"]
    onnx.checker.check_model(res.model, full_check=True)
    branches = [a.g for a in next(n for n in res.model.graph.node if n.op_type == "If").attribute]
    assert all(len(t.raw_data) < 1024 for b in branches for t in b.initializer)

    def weight_bytes(m):
        return sum(len(t.raw_data) for g in [m.graph, *(a.g for n in m.graph.node for a in n.attribute if a.g.name)]
                   for t in g.initializer)

    assert weight_bytes(res.model) < 1.1 * weight_bytes(model)  # twice the weights before
    # IR 3 lists every main-graph weight as a graph input too: no new weight is moved there.
    old = onnx.ModelProto()
    old.CopyFrom(model)
    old.ir_version = 3
    for t in old.graph.initializer:
        old.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for body in (a.g for a in old.graph.node[2].attribute):  # an IR 3 body holds Constant nodes
        body.node.insert(0, helper.make_node("Constant", [], [body.initializer[0].name], value=body.initializer[0]))
        del body.initializer[:]
    written = optimize_model(old, threshold=threshold, min_units=8, sparse_input=False).model
    assert {i.name for i in written.graph.input} <= {i.name for i in old.graph.input}
    feeds = {"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32)}
    for cond in (True, False):
        feeds["cond"] = np.array(cond)
        got, want = run_exprune(res.model, feeds)[0], run_plain(model, feeds)[0]
        if threshold == NEG_INF:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert got.shape == want.shape


def test_branches_that_reuse_their_names_get_layer_names_of_their_own():
    """Sibling bodies may reuse node and tensor names (each is its own scope): their layers
    are told apart by the body's path, so a config entry or a latency decision is one's."""
    rng = np.random.default_rng(10)

    def branch(side):
        w = init("w", (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32))
        nodes = [helper.make_node("Conv", ["x1", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                 helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Identity", ["r"], [side + "_out"])]
        return helper.make_graph(nodes, side, [], [vi(side + "_out", ["N", 16, 8, 8])], [w])

    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["x1"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"),
                              name="if0")]
    model = make_model(nodes, [vi("x", ["N", 1, 8, 8]), vi("cond", [], TensorProto.BOOL)], [vi("y", ["N", 16, 8, 8])],
                       [init("w0", (rng.standard_normal((16, 1, 3, 3)) * 0.1).astype(np.float32))])
    shown = exprune_onnx.inspect_model(model, min_units=8)
    names = sorted(rw.candidate.layer for rw in shown.rewritten)
    assert names == ["if0.else_branch/Conv:c", "if0.then_branch/Conv:c"]
    # Two If nodes of one name: each body's path goes by op and output, as a layer's would.
    twice = onnx.ModelProto()
    twice.CopyFrom(model)
    second = twice.graph.node.add()
    second.CopyFrom(twice.graph.node[2])
    second.output[0] = "y2"
    twice.graph.output.add().CopyFrom(vi("y2", ["N", 16, 8, 8]))
    names = sorted(rw.candidate.layer for rw in exprune_onnx.inspect_model(twice, min_units=8).rewritten)
    assert names == ["If:y.else_branch/Conv:c", "If:y.then_branch/Conv:c", "If:y2.else_branch/Conv:c",
                     "If:y2.then_branch/Conv:c"]
    res = optimize_model(model, threshold=NEG_INF, min_units=8, sparse_input=False,
                         layers={"if0.then_branch/Conv:c": exprune_onnx.config.LayerSetting(NEG_INF, skip=True)})
    assert [rw.candidate.layer for rw in res.rewritten] == ["if0.else_branch/Conv:c"]
    feeds = {"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32), "cond": np.array(False)}
    np.testing.assert_allclose(run_exprune(res.model, feeds)[0], run_plain(model, feeds)[0], rtol=1e-5, atol=1e-5)
    # verify traces each op to its own branch's layer (both write 'c').
    from exprune_onnx.io.data import random_dataset
    from exprune_onnx.verify import verify

    both = optimize_model(model, threshold=-1.0, min_units=8, sparse_input=False).model
    rows = verify(model, both, random_dataset(model, 4, 0), min_agreement=0.0)
    assert all(r.ok for r in rows), rows
    assert "2 ExPruneConvRelu" in rows[0].detail


def test_unnamed_twins_in_the_main_graph_and_a_body_are_both_rewritten():
    """An unnamed Conv -> Relu in an If branch reads the same outer input and weight as one
    in the main graph: the graph surgeon's clean-up told the two old Convs apart by
    equality (same name '', op, attributes and inputs) and stopped with "list.remove(x): x
    not in list" (exit 1). Both are rewritten now, exact at -inf on either branch."""
    w = (np.random.default_rng(3).standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)
    body = helper.make_graph([helper.make_node("Conv", ["r", "w"], ["bc"], pads=[1, 1, 1, 1]),
                              helper.make_node("Relu", ["bc"], ["br"]), helper.make_node("ReduceMax", ["br"], ["b"])],
                             "else", [], [vi("b", None)])
    then = helper.make_graph([helper.make_node("ReduceMin", ["r"], ["t"])], "then", [], [vi("t", None)])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"]),
             helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=body)]
    model = make_model(nodes, [vi("x", [1, 16, 6, 6]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                       [vi("y", [1, 16, 6, 6]), vi("z", None)], [init("w", w)])
    res = optimize_model(model, threshold=NEG_INF, min_units=8, include_first_layer=True, sparse_input=False)
    onnx.checker.check_model(res.model, full_check=True)
    assert node_types(res.model) == ["Relu", "If", "Gather", "Slice", "Conv", "ExPruneConvRelu"]
    branch = next(a.g for a in res.model.graph.node[1].attribute if a.name == "else_branch")
    assert [n.op_type for n in branch.node] == ["Gather", "Slice", "Conv", "ExPruneConvRelu", "ReduceMax"]
    for cond in (False, True):
        assert_equivalent(model, res.model, lambda rng, c=cond: {
            "x": rng.standard_normal((1, 16, 6, 6)).astype(np.float32), "cond": np.array(c)})
    assert not optimize_model(res.model, threshold=NEG_INF, min_units=8, include_first_layer=True,
                              sparse_input=False).changed
