"""Input shapes and values (feeds.py) for models in the styles real exports come in, through ``optimize``.

Fixed batch 1 and 4, a symbolic batch, symbolic H/W, a [batch, sequence] audio input
with a scalar int64 sample rate, int64 token ids: each either works with the plain
command, works with ``--input-shape``/``--input-value`` where the dims or values are
unknowable, or fails with exit 6 and a message naming the option to give.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import (
    WEIGHT_RNG,
    conv_hw,
    init,
    input_mlp,
    make_model,
    run_exprune,
    run_plain,
    save_model,
    scaled_normal,
    vi,
)
from onnx import TensorProto, helper

from exprune_onnx.cli import main
from exprune_onnx.errors import DataError, error_message
from exprune_onnx.io.data import dataset_of, load_dataset, random_dataset
from exprune_onnx.io.feeds import InputSpec, batch_layout, check_batch_first, parse_input_shape, parse_input_value
from exprune_onnx.report.units import flops_text


def audio() -> onnx.ModelProto:
    """wave [batch, sequence] float and a scalar int64 sample rate -> y [batch, 8]."""
    nodes = [helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["srf", "ref_rate"], ["scale"]),
             helper.make_node("Mul", ["wave", "scale"], ["scaled"]),
             helper.make_node("Unsqueeze", ["scaled", "axis"], ["frames"]),
             helper.make_node("MatMul", ["frames", "w0"], ["h0"]), helper.make_node("Relu", ["h0"], ["r0"]),
             helper.make_node("MatMul", ["r0", "w1"], ["h1"], name="h1"), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"]),
             helper.make_node("ReduceMean", ["h2", "time"], ["y"], keepdims=0)]
    return make_model(nodes, [helper.make_tensor_value_info("wave", TensorProto.FLOAT, ["batch", "sequence"]),
                              helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
                      [init("ref_rate", np.float32(16000)), init("axis", np.array([-1], np.int64)),
                       init("w0", scaled_normal(1, 32)), init("w1", scaled_normal(32, 64)), init("w2", scaled_normal(64, 8)),
                       init("time", np.array([1], np.int64))], opset=18)


def token_ids() -> onnx.ModelProto:
    """ids [N, 16] int64 -> Gather(embedding [100, 32]) -> MatMul (rewritable) -> Relu -> ... -> y [N, 10]."""
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"]),
             helper.make_node("MatMul", ["e", "w1"], ["h1"], name="h1"), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="h2"), helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("MatMul", ["r2", "w3"], ["h3"]),
             helper.make_node("ReduceMean", ["h3", "time"], ["y"], keepdims=0)]
    return make_model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                      [init("emb", WEIGHT_RNG.random((100, 32)).astype(np.float32)), init("w1", scaled_normal(32, 64)),
                       init("w2", scaled_normal(64, 64)), init("w3", scaled_normal(64, 10)), init("time", np.array([1], np.int64))],
                      opset=18)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, code: int) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.output
    return lines[0]


# ------------------------------------------------------------------ fixed and symbolic batch


@pytest.mark.parametrize("first", [[1], [4], ["N"]], ids=["batch1", "batch4", "symbolic"])
@pytest.mark.parametrize("objective", ["latency", "flops"])
def test_plain_command_runs_at_the_batch_the_model_takes(tmp_path, first, objective):
    path = save_model(input_mlp(first), tmp_path)
    args = ["optimize", path, "-o", tmp_path / "o.onnx"] + (["--objective", "flops", "--threshold=-inf"]
                                                             if objective == "flops" else [])
    r = cli(*args)
    assert r.exit_code == 0, r.output
    out = onnx.load(tmp_path / "o.onnx")
    onnx.checker.check_model(out)
    assert out.graph.input[0] == onnx.load(path).graph.input[0]
    if objective == "flops":  # rewritten and checked on 32 random samples
        assert "ExPruneDenseRelu" in [n.op_type for n in out.graph.node]
        assert "check 'y'" in r.output  # the check ran, at the batch the model takes


def scaled_mlp(first) -> onnx.ModelProto:
    """input_mlp's x [first, 32], times a side input scale [32] with no batch axis."""
    model = input_mlp([first])
    model.graph.node[0].input[0] = "xs"
    model.graph.node.insert(0, helper.make_node("Mul", ["x", "scale"], ["xs"]))
    model.graph.input.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [32]))
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize(("dims", "shapes", "layout"), [
    ({"x": [1, 3], "s": [48, 1, 1]}, {}, (1, {"s"})),  # the scale is fed whole
    ({"s": [3, 1, 1], "x": [1, 3, 8, 8]}, {}, (1, {"s"})),  # listed first: still not the batch (a tie goes to 1)
    ({"x": [4, 3], "m": [4, 5], "s": [7]}, {}, (4, {"s"})),  # the dim most inputs share
    ({"x": ["N", 3], "s": [48, 1, 1]}, {}, (None, {"s"})),
    ({"x": ["N", 3], "m": [1, 5]}, {}, (1, set())),  # an export that fixed one input's batch at 1
    ({"ids": ["N", "T"], "use_cache_branch": [1]}, {}, (None, {"use_cache_branch"})),  # optimum's merged decoder
    ({"x": ["N", 3], "r": []}, {}, (None, set())),  # a scalar is fed whole, not a batch question
    # dynamo's export fixes the example's batch; a [1] temperature beside it is a flag, no vote
    ({"x": [2, 3, 8, 8], "temp": [1]}, {}, (2, {"temp"})),
    ({"x": [1, 3, 8, 8], "temp": [1]}, {}, (1, set())),  # batch 1: a [1] is fed as is either way
    ({"a": [1], "b": [1]}, {}, (1, set())),  # nothing but flags: they are the batch
    # --input-shape sizes a symbolic batch; it does not make an input lose its batch axis.
    ({"img": ["N", 3, "H", "W"], "side": ["N"]}, {"img": (4, 3, 8, 8)}, (4, set())),
])
def test_batch_layout(dims, shapes, layout):
    model = helper.make_model(helper.make_graph(
        [], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in dims.items()], []))
    batch, whole = batch_layout(model, InputSpec(shapes))
    assert (batch, set(whole)) == layout


@pytest.mark.parametrize(("inputs", "refused"), [
    ({"x": [30, "N", 12]}, "x"),  # sequence-first (PyTorch's GRU/LSTM/Transformer default): T fixed, batch second
    ({"x": [30, "batch_size", 12]}, "x"),
    ({"x": ["seq", "batch", 12]}, "x"),  # both open, the sequence first
    ({"x": [30, "N", 12], "h0": [2, "N", 16]}, "x"),
    ({"x": [2, "T", 12]}, None),  # dynamo fixed the example's batch of 2, the sequence stays open
    ({"x": [1, "N", 12]}, None),  # a first dim of 1 is a batch of 1 whatever follows
    ({"x": ["N", 30, 12]}, None),
    ({"x": ["N", 30, 12], "h0": [2, "N", 16]}, None),  # a batch-first LSTM's states [layers, N, H]: fed whole
    ({"ids": ["batch", "seq"], "past_0": [2, "batch", 4, "past", 8]}, None),  # GPT-2's stacked past
    ({"x": ["T", "B", 12]}, "x"),  # a sequence's name, then a batch's letter
    ({"x": ["a", "b", 12]}, None),  # a batch-first export's own letters: "b" is no batch after "a"
    ({"x": ["d0", "n", 12]}, None),
])
def test_a_batch_axis_that_is_not_the_first_is_refused(inputs, refused):
    """Samples run along the first axis: with a fixed T first, samples would be fed along
    the time axis and every check scored on scrambled inputs. Inputs fed whole keep theirs."""
    model = helper.make_model(helper.make_graph(
        [], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in inputs.items()], []))
    if refused:
        with pytest.raises(DataError, match=rf"input '{refused}' is \[\w+, \w+, 12\]: its batch axis '\w+' is not"):
            check_batch_first(model)
    else:
        check_batch_first(model)
    sizes = {n: tuple(d if isinstance(d, int) else 1 for d in dims) for n, dims in inputs.items()}
    x = np.zeros((4, *sizes["x"][1:]), np.float32) if "x" in inputs else None
    if refused:  # both ways in: data files and random inputs
        with pytest.raises(DataError, match="is not the first"):
            random_dataset(model, 4, 0, InputSpec(sizes))
        with pytest.raises(DataError, match="is not the first"):
            dataset_of({"x": x}, model)


@pytest.mark.parametrize("first", [1, "N"])
def test_side_input_without_a_batch_axis(tmp_path, first):
    """A fixed-batch export with a per-feature scale [32] beside x [1, 32]: random inputs,
    the check, the latency objective and calibration data all feed the scale whole."""
    path = save_model(scaled_mlp(first), tmp_path)
    for extra in ([], ["--objective", "flops", "--threshold", "-inf"]):
        r = cli("optimize", path, "-o", tmp_path / "o.onnx", *extra)
        assert r.exit_code == 0, r.output
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((70, 32), dtype=np.float32), scale=rng.random(32, dtype=np.float32))
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--calibration", tmp_path / "d.npz", "--metric", "relerr",
            "--max-drop", "0.05", "--confidence", "0")
    assert r.exit_code == 0, r.output
    np.savez(tmp_path / "bad.npz", x=rng.random((70, 32), dtype=np.float32), scale=rng.random((70, 32), np.float32))
    line = one_line_error(cli("optimize", path, "--check-data", tmp_path / "bad.npz"), 6)
    assert "'scale' has shape [70, 32]" in line and "give it whole" in line


def test_fixed_batch_pads_the_last_run_and_cuts_it_off(tmp_path):
    """5 samples at a fixed batch of 4: two runs, the second padded; outputs are exactly the 5 samples'."""
    model = input_mlp([4])
    data = random_dataset(model, 5, 0)
    assert data.batch == 4
    runs = list(data.batches(64))
    assert [f["x"].shape[0] for f in runs] == [4, 4]
    np.testing.assert_array_equal(runs[1]["x"][:1], data.inputs["x"][4:5])
    from exprune_onnx.measure.compare import compare

    checked = compare(model, model, data)
    assert checked.samples == 5 and checked.outputs[0].max_abs == 0.0


def test_check_on_fewer_samples_than_a_fixed_batch(tmp_path):
    path = save_model(input_mlp([4]), tmp_path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--objective", "flops", "--check-samples", 3,
            "--threshold", "-inf")
    assert r.exit_code == 0, r.output
    assert "100.00%" in r.output


def test_latency_batch_a_fixed_batch_forbids_is_a_clear_error(tmp_path):
    path = save_model(input_mlp([1]), tmp_path)
    line = one_line_error(cli("optimize", path, "-o", tmp_path / "o.onnx", "--latency-batch", 8), 6)
    assert "--latency-batch 8 is impossible" in line and "fix the batch at 1" in line
    assert not (tmp_path / "o.onnx").exists()


def test_evaluate_and_verify_at_a_fixed_batch(tmp_path):
    path = save_model(input_mlp([4]), tmp_path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--objective", "flops", "--threshold", "-inf")
    assert r.exit_code == 0, r.output
    r = cli("verify", path, tmp_path / "o.onnx", "--samples", 6)
    assert r.exit_code == 0, r.output
    np.savez(tmp_path / "d.npz", x=WEIGHT_RNG.random((6, 32)).astype(np.float32))
    r = cli("evaluate", path, tmp_path / "o.onnx", "--data", tmp_path / "d.npz", "--runs", 2)
    assert r.exit_code == 0, r.output
    line = one_line_error(cli("evaluate", path, tmp_path / "o.onnx", "--data", tmp_path / "d.npz", "--batch", 2), 6)
    assert "--batch 2 is impossible" in line


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
        assert not written.graph.value_info  # no shape inferred at 12x12 is left behind
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
    assert cli("optimize", path, "--input-shape", "x:1,3,0,16").exit_code == 2  # not a size: a usage error


# ------------------------------------------------------------------ audio with a scalar side input


def test_audio_with_a_scalar_sample_rate(tmp_path):
    path = save_model(audio(), tmp_path)
    out = tmp_path / "o.onnx"
    # (The waveform's open length is run at 128 samples; the sample rate has no such default.)
    for shape in ([], ["--input-shape", "wave:1,50"]):
        line = one_line_error(cli("optimize", path, "-o", out, *shape), 6)
        assert "--input-value sr:VALUE" in line and "open dims" not in line  # nothing ran: no size to blame
    r = cli("optimize", path, "-o", out, "--objective", "flops", "--threshold", "-inf",
            "--input-shape", "wave:batch,50", "--input-value", "sr:16000")
    assert r.exit_code == 0, r.output
    assert "ExPruneDenseRelu" in [n.op_type for n in onnx.load(out).graph.node]
    # The same sample rate goes with every run of given data that lacks it.
    np.savez(tmp_path / "d.npz", wave=WEIGHT_RNG.random((5, 50)).astype(np.float32))
    r = cli("verify", path, out, "--data", tmp_path / "d.npz", "--input-value", "sr:8000")
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------ token ids


def test_token_ids_get_ids_within_the_embedding(tmp_path):
    model = token_ids()
    data = random_dataset(model, 64, 0)
    ids = data.inputs["ids"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() == 99
    path = save_model(model, tmp_path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--objective", "flops")
    assert r.exit_code == 0, r.output
    assert cli("optimize", path, "-o", tmp_path / "o2.onnx").exit_code == 0  # the plain command
    spec = InputSpec(values={"ids": (5, 5)})
    assert (random_dataset(model, 3, 0, spec).inputs["ids"] == 5).all()
    # torch's exporter also reads the ids' Shape (the sequence length): still token ids.
    model.graph.node.append(helper.make_node("Shape", ["ids"], ["ids_shape"]))
    model.graph.output.append(helper.make_tensor_value_info("ids_shape", TensorProto.INT64, [2]))
    assert random_dataset(model, 64, 0).inputs["ids"].max() == 99
    model.graph.node.append(helper.make_node("Cast", ["ids"], ["ids_float"], to=TensorProto.FLOAT))
    with pytest.raises(DataError, match="--input-value ids:"):  # a Cast reads the values: not only an index
        random_dataset(model, 2, 0)


def test_an_integer_input_of_unknown_meaning_asks_for_input_value():
    model = audio()
    with pytest.raises(DataError, match="--input-value sr:VALUE"):
        random_dataset(model, 2, 0, InputSpec(shapes={"wave": (1, 10)}))
    data = random_dataset(model, 2, 0, InputSpec(shapes={"wave": (1, 10)}, values={"sr": (16000, 16000)}))
    assert data.shared["sr"].shape == () and int(data.shared["sr"]) == 16000
    assert data.inputs["wave"].shape == (2, 10)


def test_option_parsers():
    assert parse_input_shape("x:1,3,224,224") == ("x", (1, 3, 224, 224))
    assert parse_input_shape("a:b:N,16") == ("a:b", ("N", 16))
    assert parse_input_value("ids:0..999") == ("ids", (0.0, 999.0))
    assert parse_input_value("sr:16000") == ("sr", (16000.0, 16000.0))
    for bad in ("x", "x:1,-3", "x:1,,3", "x:", "x: "):
        with pytest.raises(ValueError):
            parse_input_shape(bad)
    for bad in ("sr", "sr:abc", "ids:9..1", "x:nan"):
        with pytest.raises(ValueError):
            parse_input_value(bad)


# ------------------------------------------------------------------ whole error messages


def test_multi_line_onnxruntime_errors_keep_their_detail():
    model = input_mlp([1])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as info:
        session.run(None, {"x": np.zeros((32, 32), np.float32)})
    text = error_message(info.value)
    assert "\n" not in text
    assert "Got invalid dimensions for input: x" in text and "index: 0 Got: 32 Expected: 1" in text
    long = error_message(ValueError("a" * 2000 + " the reason"))
    assert long.endswith("the reason") and len(long) < 700
    assert error_message(ValueError("/x/y.cc:12 void f(int) Something failed\n\nStacktrace:\n#0 f")) == \
        "Something failed"
    # onnxruntime's broadcast failure goes on in lower case after the signature.
    assert error_message(ValueError("Status Message: /src/ops.h:583 void ns::It::Append(ptrdiff_t, ptrdiff_t) "
                                    "axis == 1 was false. 20 by 32")) == "Status Message: axis == 1 was false. 20 by 32"


def test_a_bool_mask_keeps_everything_and_floats_take_a_range():
    nodes = [helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "m"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    data = random_dataset(model, 3, 0, InputSpec(values={"x": (2.0, 3.0)}))
    assert data.inputs["mask"].dtype == np.bool_ and data.inputs["mask"].all()
    assert data.inputs["x"].min() >= 2.0 and data.inputs["x"].max() < 3.0
    assert not random_dataset(model, 3, 0, InputSpec(values={"mask": (0, 0)})).inputs["mask"].any()


def test_data_the_original_cannot_run_on_is_a_data_error(tmp_path):
    """Token ids past the embedding table: onnxruntime fails on the original as well, so
    it is the data (exit 6), in the check, the latency objective and calibration alike."""
    path = save_model(token_ids(), tmp_path)
    ids = np.arange(16 * 8, dtype=np.int64).reshape(8, 16)  # up to 127, the table has 100 rows
    np.savez(tmp_path / "d.npz", ids=ids)
    for extra in (["--objective", "flops", "--threshold", "-inf"], ["--threshold", "-inf"],
                  ["--calibration", tmp_path / "d.npz", "--max-drop", 0.1, "--confidence", 0],
                  ["--calibration", tmp_path / "d.npz", "--max-drop", 0.1]):  # certified: the testing part too
        data = [] if "--calibration" in extra else ["--check-data", tmp_path / "d.npz"]
        line = one_line_error(cli("optimize", path, "-o", tmp_path / "o.onnx", *data, *extra), 6)
        assert "cannot run the original model" in line and "the data does not fit the model" in line
        assert "out of data bounds" in line and ".cc:" not in line and ".h:" not in line
        assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize(("value", "words"), [("n:1.5", "1.5..1.5 holds no int64 value"),
                                              ("n:0.2..0.8", "0.2..0.8 holds no int64"),
                                              ("n:1e30", "1e+30..1e+30 holds no int64"),
                                              ("x:-1e300..1", "float32, whose largest value is 3.40282e+38")])
def test_an_integer_input_s_value_must_hold_an_integer(tmp_path, value, words):
    """... and a float input's must fit its type: 1e300 made every random input inf."""
    nodes = [helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "f"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", 3]), vi("n", [1], TensorProto.INT64)], [vi("y", ["N", 3])])
    line = one_line_error(cli("optimize", save_model(model, tmp_path), "--input-value", value), 6)
    assert words in line


# ------------------------------------------------------------------ random samples: size and values


def _wide_input_model(width: int, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    return make_model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", ["N", width], dtype)],
                      [vi("y", ["N", width], dtype)])


@pytest.mark.parametrize("dtype, bounds", [(TensorProto.FLOAT, None), (TensorProto.FLOAT, (-2.0, 3.0)),
                                           (TensorProto.FLOAT16, None), (TensorProto.DOUBLE, (1.0, 2.0)),
                                           (TensorProto.INT8, (-100, 100)), (TensorProto.INT64, (0, 2**40))])
def test_random_values_drawn_in_chunks_are_one_draws_values(dtype, bounds):
    from exprune_onnx.io.feeds import random_arrays

    model = _wide_input_model(700_001, dtype)  # two samples: more than one chunk, not a multiple of it
    spec = InputSpec({}, {} if bounds is None else {"x": bounds})
    got = random_arrays(model, 2, 7, spec)[0]["x"]
    rng = np.random.default_rng(7)
    if bounds is None:
        want = rng.random((2, 700_001))
    elif dtype in (TensorProto.INT8, TensorProto.INT64):
        want = rng.integers(bounds[0], bounds[1] + 1, (2, 700_001))
    else:
        want = rng.uniform(*bounds, (2, 700_001))
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    assert got.dtype == np_type and np.array_equal(got, want.astype(np_type))


def test_random_samples_that_cannot_fit_are_refused_before_drawing(monkeypatch):
    import exprune_onnx.io.feeds as feeds

    monkeypatch.setattr(feeds, "available_bytes", lambda: 64 << 20)
    model = _wide_input_model(1000)
    random_dataset(model, 10_000, 0)  # 38 MiB, and 8 MiB to draw in
    with pytest.raises(DataError, match="^100000 random samples of input.s. 'x' need 389 MiB of memory and 64 MiB "
                                        "is available: ask for fewer .optimize --check-samples, verify --samples., or "
                                        "give sample data$"):
        random_dataset(model, 100_000, 0)


def test_the_check_refuses_random_samples_the_machine_cannot_hold(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_wide_input_model(1000), path)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--check-samples",
                                  str(10**12)])
    assert r.exit_code == 6 and "Traceback" not in r.output, r.output
    assert f"{10**12} random samples of input(s) 'x' need" in r.stderr
    assert not (tmp_path / "o.onnx").exists()


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
