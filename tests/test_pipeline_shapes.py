"""The compile pipeline on real exporter quirks (issue 7, item 1), continued: dynamic
batch and spatial dims, float16 / bfloat16 / int8 layers left alone, and models over 2 GB."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_calls import invoke
from helpers import NEG_INF, assert_equivalent, init, make_model, vi
from onnx import TensorProto, helper, numpy_helper
from quirk_models import reasons, rewritten, sweep_feeds, sweep_model

import exprune_onnx
from exprune_onnx import optimize_model

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


def _qgemm() -> onnx.ModelProto:
    """onnxruntime's quantizer, operator form, on a Gemm: its own com.microsoft QGemm (the
    layer went unlisted, a trial's)."""
    r = np.random.default_rng(13)
    inits = [init("xs", np.array(0.05, np.float32)), init("xz", np.array(0, np.uint8)),
             init("Wg", r.integers(-20, 20, size=(64, 40)).astype(np.int8)),
             init("ws", np.array(0.02, np.float32)), init("wz", np.array(0, np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["inp", "xs", "xz"], ["xq"]),
             helper.make_node("QGemm", ["xq", "xs", "xz", "Wg", "ws", "wz"], ["y"], name="qgemm",
                              domain="com.microsoft")]
    return make_model(nodes, [vi("inp", ["N", 64])], [vi("y", ["N", 40])], inits, opset=13, domains=["com.microsoft"])


LOW_PRECISION = {
    "float16": (lambda: _conv_of_type(TensorProto.FLOAT16), "conv", "float16"),
    "bfloat16": (lambda: _conv_of_type(TensorProto.BFLOAT16), "conv", "bfloat16"),
    "qlinearconv": (_qlinear_conv, "qconv", "quantized (integer)"),
    "qdq": (_qdq_conv, "conv", "DequantizeLinear"),
    "matmulinteger": (_matmul_integer, "mmi", "quantized (integer)"),
    "qgemm": (_qgemm, "qgemm", "quantized (integer)"),
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
    if case in ("qlinearconv", "matmulinteger", "qgemm"):  # no FLOPs figure passes for the model's
        assert "dense FLOPs: none counted: 1 " in r.output and "this count does not cover" in r.output, r.output
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
    assert_equivalent(model, big.model, sweep_feeds, draws=1)
