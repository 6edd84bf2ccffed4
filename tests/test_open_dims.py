"""Open input dims (io/open_dims.py, io/feeds.py) through ``optimize``, ``inspect`` and
``verify``: symbolic H/W run at the sizes most such models take and say so, --input-shape
and data give the sizes FLOPs are counted at, and a model that cannot run at the sizes
assumed says what was assumed."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from cli_calls import cli, one_line_error
from helpers import (
    WEIGHT_RNG,
    conv_hw,
    init,
    make_model,
    run_exprune,
    run_plain,
    save_model,
    scaled_normal,
    vi,
)
from onnx import TensorProto, helper

from exprune_onnx.errors import DataError
from exprune_onnx.io.data import load_dataset
from exprune_onnx.io.feeds import InputSpec
from exprune_onnx.report.units import flops_text

# ------------------------------------------------------------------ symbolic H/W


def test_symbolic_hw_without_a_shape_runs_at_224_and_says_so(tmp_path):
    """The export most tools write ([N, 3, H, W]) and the plain command: it refused (exit 6)
    and asked for --input-shape; it now runs at 224 x 224, says so, and the written model
    keeps its open dims. verify without --data does the same."""
    path = save_model(conv_hw(), tmp_path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--threshold", "0", "--objective", "flops",
            "--report", tmp_path / "r.json")
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r.json").read_text())["assumed_input_shapes"] == {"x": ["N", 3, 224, 224]}
    assert "no data and no --input-shape for open dims: took 'x' [N, 3, H, W] as [N, 3, 224, 224] (a size most " \
        "such models take)" in text and "--input-shape or --check-data sets the size you run at" in text, text
    assert "top-1 agreement" in text  # the check ran
    written = onnx.load(tmp_path / "o.onnx")
    assert [d.dim_param or d.dim_value for d in written.graph.input[0].type.tensor_type.shape.dim] == ["N", 3, "H", "W"]
    r = cli("verify", path, tmp_path / "o.onnx", "--min-agreement", "0")
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "note: no --data and no --input-shape for open dims: took 'x' [N, 3, H, W] as " \
        "[N, 3, 224, 224]" in text, r.output
    # Given a size, or data, nothing is assumed.
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--input-shape", "x:N,3,16,16")
    assert r.exit_code == 0 and "open dims" not in r.output, r.output


def _open_channels(nhwc: bool) -> onnx.ModelProto:
    """conv_hw with its channel dim open too: [N, C, H, W], or [N, H, W, C] through a Transpose."""
    model = conv_hw()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims, ["N", "H", "W", "C"] if nhwc else ["N", "C", "H", "W"]):
        d.ClearField("dim_value")
        d.dim_param = name
    if nhwc:
        model.graph.node[0].input[0] = "x_nchw"
        model.graph.node.insert(0, helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
    return model


@pytest.mark.parametrize("nhwc", [False, True])
def test_an_open_channel_dim_takes_the_first_convs_channels(tmp_path, nhwc):
    """[N, C, H, W] all open: C was taken as 128 and the Conv refused the run (exit 6); the
    channels are the count the Conv's weight takes (3), through an NHWC Transpose too, and
    the image's sides then 224."""
    from exprune_onnx.io.open_dims import assumed_shapes, shape_example

    model = _open_channels(nhwc)
    want = ("N", 224, 224, 3) if nhwc else ("N", 3, 224, 224)
    assert assumed_shapes(model) == {"x": want}
    assert shape_example(model) == f"--input-shape x:{','.join(map(str, want))}"
    # The channel dim alone open: still taken, where the input counted as closed once filled.
    only = _open_channels(nhwc)
    for i, d in enumerate(only.graph.input[0].type.tensor_type.shape.dim):
        if d.dim_param != "C":
            d.dim_value = 1 if i == 0 else 8
    sides = (1, 8, 8, 3) if nhwc else (1, 3, 8, 8)
    assert assumed_shapes(only) == {"x": sides}
    path = save_model(model, tmp_path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--threshold", "0", "--objective", "flops")
    assert r.exit_code == 0, r.output
    shown = "[N, H, W, C] as [N, 224, 224, 3]" if nhwc else "[N, C, H, W] as [N, 3, 224, 224]"
    assert f"took 'x' {shown}" in " ".join(r.output.split()), r.output


def test_assumed_sizes_share_a_dim_name_and_keep_the_batch():
    from exprune_onnx.io.open_dims import assumed_shapes

    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"])
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, ["B", "T"])
    img = helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, "T", "W"])  # an image sharing 'T'
    fixed = helper.make_tensor_value_info("f", TensorProto.FLOAT, ["B", 8])
    graph = helper.make_graph([], "g", [ids, mask, img, fixed], [])
    model = helper.make_model(graph)
    assert assumed_shapes(model) == {"ids": ("B", 224), "mask": ("B", 224), "img": (1, 3, 224, 224)}
    del model.graph.input[2]  # the image
    assert assumed_shapes(model) == {"ids": ("B", 128), "mask": ("B", 128)}
    assert assumed_shapes(model, InputSpec({"ids": ("B", 32), "mask": ("B", 32)})) == {}
    # A size given for one input reaches the others that name the dim alike.
    assert assumed_shapes(model, InputSpec({"ids": ("B", 32)})) == {"mask": ("B", 32)}
    # Nothing for a dim named as a batch is (an adjacency [N, N]), nor past four axes (a video).
    square = helper.make_model(helper.make_graph([], "g", [
        helper.make_tensor_value_info("adj", TensorProto.FLOAT, ["N", "N"]),
        helper.make_tensor_value_info("video", TensorProto.FLOAT, ["B", 3, "T", "H", "W"])], []))
    assert assumed_shapes(square) == {}


def test_the_input_shape_example_fills_images_not_a_kv_cache_with_224():
    from exprune_onnx.io.open_dims import shape_example

    def one(name, dims):
        return make_model([helper.make_node("Identity", [name], ["y"])],
                          [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])

    assert shape_example(one("x", ["N", 3, "H", "W"])) == "--input-shape x:N,3,224,224"
    assert shape_example(one("x", ["N", "H", "W", 3])) == "--input-shape x:N,224,224,3"
    assert shape_example(one("past", ["N", 12, "P", 64])) == "--input-shape past:N,12,128,64"
    assert shape_example(one("past", ["N", 4, "P", 64])) == "--input-shape past:N,4,128,64"  # 4 KV heads (TinyLlama)


def test_a_dim_fixed_at_zero_is_not_called_unknown():
    from exprune_onnx.io.feeds import random_arrays

    model = make_model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", ["N", 3, 0, 8])], [vi("y", None)])
    with pytest.raises(DataError, match=r"has a dimension fixed at 0 \[N, 3, 0, 8\]: it holds no values"):
        random_arrays(model, 2, 0)


def test_symbolic_hw_with_input_shape_works_and_keeps_the_open_dims(tmp_path):
    path = save_model(conv_hw(), tmp_path)
    out = tmp_path / "o.onnx"
    r = cli("optimize", path, "-o", out, "--objective", "flops", "--input-shape", "x:N,3,12,12", "--threshold", "-inf")
    assert r.exit_code == 0, r.output
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node if n.domain] == ["ExPruneConvRelu"]
    assert model.graph.input[0] == onnx.load(path).graph.input[0]  # still [N, 3, H, W]
    # It runs at another size than the one it was compiled at, exactly.
    x = WEIGHT_RNG.random((2, 3, 9, 7)).astype(np.float32)
    np.testing.assert_allclose(run_exprune(model, {"x": x})[0], run_plain(onnx.load(path), {"x": x})[0],
                               rtol=1e-4, atol=1e-5)


def test_data_gives_the_shapes_flops_are_counted_at(tmp_path):
    """Without --input-shape, the calibration or check data's shapes fix the open dims for
    FLOPs (the batch stays open); the written model keeps [N, 3, H, W]."""
    path = save_model(conv_hw(), tmp_path)
    flops = 2 * 12 * 12 * 9 * (3 * 32 + 32 * 32)  # as test_inspect_counts_flops_with_input_shape, at 12x12
    x = WEIGHT_RNG.random((16, 3, 12, 12)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    for data in (["--check-data", tmp_path / "d.npz", "--threshold", -1],
                 ["--calibration", tmp_path / "d.npz", "--confidence", 0, "--max-drop", 0.2]):
        out = tmp_path / "o.onnx"
        r = cli("optimize", path, "-o", out, "--objective", "flops", *data)
        assert r.exit_code == 0, r.output
        assert f"dense FLOPs      │ {flops_text(flops)} per sample" in r.output
        assert "% saved, counted by the ops" in r.output or "% of FLOPs saved (measured by the ops)" in r.output
        written = onnx.load(out)
        assert written.graph.input[0] == onnx.load(path).graph.input[0]
        # Every tensor typed at the model's own dims: no shape inferred at 12x12 is left behind.
        dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in written.graph.value_info]
        assert len(dims) == 7 and all(12 not in d for d in dims), dims
    r = cli("evaluate", path, out, "--data", tmp_path / "d.npz", "--runs", 2)
    assert r.exit_code == 0 and f"{flops_text(flops)} dense" in r.output, r.output
    shapes = load_dataset(tmp_path / "d.npz", onnx.load(path)).input_shapes(onnx.load(path), {})
    assert shapes == {"x": ("N", 3, 12, 12)}


@pytest.mark.parametrize("how", ["data", "input_shape"])
def test_numbers_given_for_open_dims_prove_no_residual_shape(tmp_path, how):
    """x [B, S, 8] -> MatMul -> Add(r [B, 1, 64]) -> Relu, compiled at S = 1 (a decoder
    step's data, or --input-shape): the Add broadcasts at other S, so it must not become
    the op's residual; the written model runs at S = 4 as the original does."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"]), helper.make_node("Relu", ["h0"], ["x0"]),
             helper.make_node("MatMul", ["x0", "w1"], ["h1"], name="h1"), helper.make_node("Add", ["h1", "r"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["y1"]), helper.make_node("MatMul", ["y1", "w2"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 8]),
                               helper.make_tensor_value_info("r", TensorProto.FLOAT, ["B", 1, 64])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", 10])],
                       [init("w0", scaled_normal(8, 32)), init("w1", scaled_normal(32, 64)), init("w2", scaled_normal(64, 10))])
    path, out = save_model(model, tmp_path), tmp_path / "o.onnx"
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((16, 1, 8)).astype(np.float32),
             r=rng.standard_normal((16, 1, 64)).astype(np.float32))
    given = ["--check-data", tmp_path / "d.npz"] if how == "data" else ["--input-shape", "x:B,1,8"]
    r = cli("optimize", path, "-o", out, "--objective", "flops", "--threshold", "0", "--min-units", 8, *given)
    assert r.exit_code == 0, r.output
    assert "Add" in [n.op_type for n in onnx.load(out).graph.node]  # not fused as the op's residual
    feeds = {"x": rng.standard_normal((2, 4, 8)).astype(np.float32), "r": rng.standard_normal((2, 1, 64)).astype(np.float32)}
    np.testing.assert_allclose(run_exprune(onnx.load(out), feeds)[0], run_plain(model, feeds)[0], rtol=1e-4, atol=1e-5)
    assert cli("verify", path, out, "--data", tmp_path / "d.npz").exit_code == 0


@pytest.mark.parametrize("probed", [True, False])
def test_flops_of_a_partly_unknown_model_are_not_set_against_all_savings(tmp_path, monkeypatch, probed):
    """A MatMul after a Reshape to a runtime shape has no shape that inference knows. One
    run on the data sizes it (measure/shape_probe.py); where that cannot be done (a model
    over 2 GB), the ops' savings cannot be set against the rest's count (it printed -14
    MFLOPs, 5542% saved)."""
    if not probed:
        monkeypatch.setattr("exprune_onnx.measure.shape_probe.runtime_flops", lambda model, feed: {})
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"]), helper.make_node("Relu", ["h0"], ["r0"]),
             helper.make_node("MatMul", ["r0", "w1"], ["h1"], name="h1"), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Reshape", ["r1", "shape"], ["s"]),
             helper.make_node("MatMul", ["s", "w2"], ["h2"], name="h2"), helper.make_node("Relu", ["h2"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                       [init("w0", scaled_normal(32, 64)), init("w1", scaled_normal(64, 64)),
                        init("w2", scaled_normal(64, 64))])
    path = save_model(model, tmp_path)
    x = WEIGHT_RNG.standard_normal((32, 32)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, shape=np.array([-1, 64], np.int64))
    out = tmp_path / "o.onnx"
    r = cli("optimize", path, "-o", out, "--objective", "flops", "--threshold", "0", "--min-units", 32,
            "--check-data", tmp_path / "d.npz")
    assert r.exit_code == 0, r.output
    if probed:
        dense = 2 * (32 * 64 + 64 * 64 + 64 * 64)
        assert f"{dense / 1e3:.2f} kFLOPs per sample (Conv/Gemm/MatMul) │" in " ".join(r.output.split())
        assert "not counted" not in r.output and "measured FLOPs" in r.output
    else:
        assert "node(s) with unknown shapes not counted" in r.output and "measured FLOPs" not in r.output
    r = cli("evaluate", path, out, "--data", tmp_path / "d.npz", "--runs", 2)
    assert r.exit_code == 0, r.output
    unknown = ("FLOPs per sample │ unknown: some Conv/Gemm/MatMul shapes are unknown (shape inference cannot size "
               "them, e.g. after a Reshape to a shape computed at run time)")
    assert (unknown in " ".join(r.output.split())) is not probed


def test_a_batch_fixed_by_input_shape_says_how_to_keep_it_open(tmp_path):
    path = save_model(conv_hw(), tmp_path)
    line = one_line_error(cli("optimize", path, "--input-shape", "x:1,3,8,8", "--latency-batch", 4), 6)
    assert "--input-shape fixes the batch at 1" in line and "--input-shape x:N,...) or use --latency-batch 1" in line


def test_inspect_counts_flops_with_input_shape(tmp_path):
    path = save_model(conv_hw(), tmp_path)
    r = cli("inspect", path, "--input-shape", "x:1,3,16,16")
    assert r.exit_code == 0, r.output
    # conv1 3->32 and conv2 32->32, 3x3 taps, 16x16 outputs, 2 FLOPs per MAC.
    flops = 2 * 16 * 16 * 9 * (3 * 32 + 32 * 32)
    assert f"dense FLOPs: {flops / 1e6:.2f} MFLOPs per sample" in r.output


def test_inspect_without_input_shape_counts_at_the_sizes_optimize_takes(tmp_path):
    """It said the FLOPs were unknown; it now counts them at the sizes optimize would take
    without data, and says so. Where some shapes stay unknown the text says that instead."""
    r = cli("inspect", save_model(conv_hw(), tmp_path))
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert re.search(r"dense FLOPs: [\d.]+ [kMG]FLOPs per sample \(Conv/Gemm/MatMul\), with 'x' \[N, 3, H, W\] as "
                     r"\[N, 3, 224, 224\]: sizes taken for open dims as optimize takes them without data", text), text
    r = cli("inspect", save_model(conv_hw(), tmp_path), "--input-shape", "x:N,3,8,8")
    assert r.exit_code == 0 and "sizes taken" not in r.output, r.output
    from exprune_onnx.compiler.pipeline import Result
    from exprune_onnx.report.units import dense_flops_text

    assert dense_flops_text(Result(conv_hw(), dense_flops=0, uncounted_nodes=2)).startswith(
        "unknown: no shape of the 2 Conv/Gemm/MatMul nodes is known")
    some = dense_flops_text(Result(conv_hw(), dense_flops=1280, uncounted_nodes=20))
    assert some == ("1.28 kFLOPs per sample (Conv/Gemm/MatMul), 20 node(s) with unknown shapes not counted "
                    "(--input-shape fixes symbolic input dims)")


def test_inspect_model_counts_at_the_sizes_the_inspect_command_takes():
    """The Python API's inspect_model counted no FLOPs on open dims, where the command
    counted them at the sizes optimize takes; both now share one count."""
    import exprune_onnx

    model = conv_hw()
    before = model.SerializeToString()
    result = exprune_onnx.inspect_model(model)
    assert result.dense_flops == 2 * 224 * 224 * 9 * (3 * 32 + 32 * 32)
    assert result.input_shapes == {"x": ("N", 3, 224, 224)}
    assert model.SerializeToString() == before
    given = exprune_onnx.inspect_model(model, input_shapes={"x": ("N", 3, 16, 16)})
    assert given.dense_flops == 2 * 16 * 16 * 9 * (3 * 32 + 32 * 32)


def test_input_shape_must_agree_with_the_model_and_the_data(tmp_path):
    path = save_model(conv_hw(), tmp_path)
    line = one_line_error(cli("optimize", path, "--input-shape", "x:1,4,16,16"), 6)
    assert "dim 1 is 4, the model fixes it at 3" in line
    line = one_line_error(cli("optimize", path, "--input-shape", "y:1,3"), 6)
    assert "not a model input" in line and "x" in line
    np.savez(tmp_path / "d.npz", x=WEIGHT_RNG.random((2, 3, 8, 8)).astype(np.float32))
    line = one_line_error(cli("optimize", path, "--check-data", tmp_path / "d.npz", "--input-shape", "x:1,3,16,16"), 6)
    assert "[2, 3, 8, 8]" in line and "--input-shape" in line
    assert cli("optimize", path, "--input-shape", "x:1,3").exit_code == 6
    assert cli("optimize", path, "--input-shape", "x:1,3,-1,16").exit_code == 2  # not a size: a usage error
    assert cli("optimize", path, "--input-shape", "x:0,3,8,16").exit_code == 2  # no samples in a batch


def test_the_shape_hint_does_not_ask_for_input_shape_once_it_is_given():
    import exprune_onnx
    from exprune_onnx.compiler import pipeline
    from exprune_onnx.report.units import shape_hint

    model = conv_hw()  # x [N, 3, H, W]
    assert shape_hint(model) == "--input-shape fixes symbolic input dims"
    assert shape_hint(model, {"x": [1, 3, 8, 8]}).startswith("shape inference cannot size them")
    # The dims given reach the report through the compiler's result, rewritten or not.
    options = exprune_onnx.Options(input_shapes={"x": (1, 3, 8, 8)})
    for run in (exprune_onnx.optimize_model, pipeline.inspect):
        assert run(model, options).input_shapes == {"x": (1, 3, 8, 8)}


def _mask_model(mask_dim: str) -> onnx.ModelProto:
    """x [N, T, 16] -> MLP -> mean over features [N, T], times a mask [N, mask_dim] past its
    first position: it runs only where the mask is one longer than the sequence."""
    nodes = [helper.make_node("Relu", ["x"], ["r0"]), helper.make_node("MatMul", ["r0", "w"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("ReduceMean", ["o"], ["s"], keepdims=0, axes=[2]),
             helper.make_node("Slice", ["m", "one", "end", "one"], ["ms"]), helper.make_node("Mul", ["s", "ms"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 16]),
                                           helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", mask_dim])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T"])],
                              [onnx.numpy_helper.from_array(WEIGHT_RNG.standard_normal((16, 64)).astype(np.float32), "w"),
                               onnx.numpy_helper.from_array(WEIGHT_RNG.standard_normal((64, 16)).astype(np.float32), "w2"),
                               onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
                               onnx.numpy_helper.from_array(np.array([1 << 40], np.int64), "end")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_model_that_cannot_run_at_the_assumed_sizes_says_what_was_assumed(tmp_path):
    """A mask one longer than the sequence under a name of its own ([N, S] beside [N, T, C]):
    128 for both does not run, and the error names the sizes taken and what sets them."""
    path = tmp_path / "m.onnx"
    onnx.save(_mask_model("S"), path)
    line = one_line_error(cli("optimize", path, "-o", tmp_path / "o.onnx"), 6)
    assert "onnxruntime cannot run the original model on seeded random inputs" in line
    assert "(with no data, open dims were taken as 'x' [N, T, 16] as [N, 128, 16], 'm' [N, S] as [N, 128]: " \
        "--input-shape or --check-data gives the sizes it takes)" in line
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--input-shape", "x:N,8,16", "--input-shape", "m:N,9")
    assert r.exit_code == 0, r.output
    onnx.save(_mask_model("S"), tmp_path / "o.onnx")
    line = one_line_error(cli("verify", path, tmp_path / "o.onnx"), 6)  # verify names them too, and its own option
    assert "(open dims were taken as 'x' [N, T, 16] as [N, 128, 16], 'm' [N, S] as [N, 128]: --input-shape or " \
        "--data gives the sizes it takes)" in line and "give sample data (--check-data; verify: --data)" in line
    # inspect counts no FLOPs at sizes the model cannot take: shape inference's count and the hint stand.
    r = cli("inspect", path)
    assert r.exit_code == 0 and "sizes taken" not in r.output and "--input-shape" in r.output, r.output


def test_a_dim_written_as_arithmetic_of_another_follows_it(tmp_path):
    """The same mask declared [N, T + 1] (a KV cache's past length + 1) is taken as 129."""
    from exprune_onnx.io.open_dims import assumed_shapes

    model = _mask_model("T + 1")
    assert assumed_shapes(model) == {"x": ("N", 128, 16), "m": ("N", 129)}
    assert assumed_shapes(_mask_model("2*T - 255")) == {"x": ("N", 128, 16), "m": ("N", 1)}
    assert assumed_shapes(_mask_model("T - 200")) == {"x": ("N", 128, 16), "m": ("N", 128)}  # no size under 1
    assert assumed_shapes(_mask_model("len(T)")) == {"x": ("N", 128, 16), "m": ("N", 128)}  # no calls
    # A size given for the expression itself, in another input, stands.
    model.graph.input.append(helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", "T + 1"]))
    assert assumed_shapes(model, InputSpec({"m": ("N", 9)})) == {"x": ("N", 128, 16), "q": ("N", 9)}
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx")
    assert r.exit_code == 0 and "'m' [N, T + 1] as [N, 129]" in " ".join(r.output.split()), r.output


def test_a_size_given_to_a_shared_dim_name_is_not_said_to_be_no_input_shape(tmp_path):
    """--input-shape x:N,8,16 sizes the mask's T too: the note said "no --input-shape" and
    "a size most such models take" of a size the user had given (a trial's)."""
    path = tmp_path / "m.onnx"
    onnx.save(_mask_model("T + 1"), path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--input-shape", "x:N,8,16")
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "no data, and --input-shape leaves open dims: took 'm' [N, T + 1] as [N, 9] (a size most such models " \
        "take, or the one --input-shape gives a dim of that name in another input)" in text, text
    assert "no --input-shape" not in text
    r = cli("verify", path, tmp_path / "o.onnx", "--input-shape", "x:N,8,16")
    text = " ".join(r.output.split())
    assert "note: no --data, and --input-shape leaves open dims: took 'm' [N, T + 1] as [N, 9]" in text, r.output


def test_a_zero_given_past_the_batch_is_a_size_not_an_open_dim(tmp_path):
    """A decoder's empty cache at its first step: --input-shape past:N,0,64 ran at [N, 128, 64]
    and warned that the dim was left open (trial AH)."""
    from exprune_onnx.io.open_dims import assumed_shapes

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Concat", ["past", "x"], ["c"], axis=1),
             helper.make_node("MatMul", ["c", "W"], ["m"], name="mm"), helper.make_node("Relu", ["m"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", 1, 64]), vi("past", ["N", "P", 64])], [vi("y", None)],
                       [init("W", rng.normal(size=(64, 64)).astype(np.float32))])
    assert assumed_shapes(model, InputSpec({"past": ("N", 0, 64)})) == {}
    assert assumed_shapes(model) == {"past": ("N", 128, 64)}
    path = save_model(model, tmp_path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--objective", "flops", "--threshold", "0",
            "--input-shape", "past:N,0,64", "--report", tmp_path / "r.json")
    assert r.exit_code == 0 and "took 'past'" not in r.output, r.output
    assert json.loads((tmp_path / "r.json").read_text()).get("assumed_input_shapes") is None


def test_a_batch_declared_0_is_no_size_to_suggest():
    """A model declaring [0, 1, H, W] was offered --input-shape x:0,... (refused by the parser)."""
    from exprune_onnx.io.open_dims import assumed_shapes, shape_example

    model = helper.make_model(helper.make_graph([], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [0, 1, "H", "W"])], []))
    assert assumed_shapes(model) == {"x": ("N", 1, 224, 224)}
    assert shape_example(model) == "--input-shape x:N,1,224,224"
