"""Input shapes and values (feeds.py) for models in the styles real exports come in, through ``optimize``.

Fixed batch 1 and 4, a symbolic batch, symbolic H/W, a [batch, sequence] audio input
with a scalar int64 sample rate, int64 token ids: each either works with the plain
command, works with ``--input-shape``/``--input-value`` where the dims or values are
unknowable, or fails with exit 6 and a message naming the option to give.
"""


from __future__ import annotations

import click
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_calls import cli, one_line_error
from helpers import (
    WEIGHT_RNG,
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

from exprune_onnx.errors import DataError, error_message
from exprune_onnx.io.data import dataset_of, random_dataset
from exprune_onnx.io.feeds import InputSpec, batch_layout, check_batch_first, parse_input_shape, parse_input_value


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
    # ... unless the batch is given another size: it broadcasts (a fuzzer's x:3 fed it 32 rows)
    ({"x": ["N", 3], "m": [1, 5]}, {"x": (3, 3)}, (3, {"m"})),
    ({"x": ["N", 3], "m": [1, 5]}, {"x": (1, 3)}, (1, set())),
    ({"ids": ["N", "T"], "use_cache_branch": [1]}, {}, (None, {"use_cache_branch"})),  # optimum's merged decoder
    ({"x": ["N", 3], "r": []}, {}, (None, set())),  # a scalar is fed whole, not a batch question
    # dynamo's export fixes the example's batch; a [1] temperature beside it is a flag, no vote
    ({"x": [2, 3, 8, 8], "temp": [1]}, {}, (2, {"temp"})),
    ({"x": [1, 3, 8, 8], "temp": [1]}, {}, (1, set())),  # batch 1: a [1] is fed as is either way
    ({"a": [1], "b": [1]}, {}, (1, set())),  # nothing but flags: they are the batch
    # --input-shape sizes a symbolic batch; it does not make an input lose its batch axis.
    ({"img": ["N", 3, "H", "W"], "side": ["N"]}, {"img": (4, 3, 8, 8)}, (4, set())),
    # A recurrent state [layers, N, H] is fed whole at one layer too (it was a batch of 1, a review).
    ({"x": ["N", "T", 8], "h0": [1, "N", 64]}, {}, (None, {"h0"})),
    ({"x": ["N", "T", 8], "h0": [2, "N", 64]}, {}, (None, {"h0"})),
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


def test_categorical_ids_select_their_field_before_its_table():
    """torch's x[:, i] before each embedding: Gather(ids, i, axis=1), then the field's table
    (a trial's recommender: tables of 16, 16, 8 and 1024 rows, and the plain command refused
    it). The ids are drawn within the smallest table, which every field accepts."""
    sizes = (16, 8, 1024)
    inits = [init(f"emb{i}", WEIGHT_RNG.random((rows, 4)).astype(np.float32))
             for i, rows in enumerate(sizes)]
    nodes = []
    for i in range(len(sizes)):
        inits.append(init(f"field{i}", np.array(i, np.int64)))
        nodes += [helper.make_node("Gather", ["ids", f"field{i}"], [f"id{i}"], axis=1),
                  helper.make_node("Gather", [f"emb{i}", f"id{i}"], [f"e{i}"])]
    nodes.append(helper.make_node("Concat", [f"e{i}" for i in range(len(sizes))], ["y"], axis=1))
    model = make_model(nodes, [vi("ids", ["N", len(sizes)], TensorProto.INT64)], [vi("y", ["N", 12])], inits)
    ids = random_dataset(model, 256, 0).inputs["ids"]
    assert ids.min() == 0 and ids.max() == 7
    run_plain(model, {"ids": ids})  # every field's lookup in range
    # A field's ids that also feed anything else (here a Cast) are not only an index.
    model.graph.node.append(helper.make_node("Cast", ["id2"], ["id2_float"], to=TensorProto.FLOAT))
    with pytest.raises(DataError, match="--input-value ids:"):
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
    assert parse_input_shape("past:1,4,0,48") == ("past", (1, 4, 0, 48))  # an empty cache
    assert parse_input_value("ids:0..999") == ("ids", (0.0, 999.0))
    assert parse_input_value("sr:16000") == ("sr", (16000.0, 16000.0))
    for bad in ("x", "x:1,-3", "x:1,,3", "x:", "x: ", "x:0,3"):
        with pytest.raises(ValueError):
            parse_input_shape(bad)
    for bad in ("sr", "sr:abc", "ids:9..1", "x:nan"):
        with pytest.raises(ValueError):
            parse_input_value(bad)
    # A trial's: an internal error (int64 overflow) and a message that did not say what was wrong.
    with pytest.raises(ValueError, match="the dim 99999999999999999999 is too large"):
        parse_input_shape("x:99999999999999999999,3")
    with pytest.raises(ValueError, match=r"LOW \(9\) is above HIGH \(1\)"):
        parse_input_value("ids:9..1")


def test_an_input_given_twice_differently_is_refused():
    """The last --input-shape of a name won, silently (a trial's); the same one twice is fine."""
    from exprune_onnx.cli_options import parsed

    callback = parsed(parse_input_shape)
    assert callback(None, None, ("x:1,3", "x:1,3")) == {"x": (1, 3)}
    with pytest.raises(click.BadParameter, match="'x' is given twice, differently"):
        callback(None, None, ("x:N,3", "x:2,3"))


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


@pytest.mark.parametrize(("value", "words"), [
    ("n:1.5", "1.5..1.5 holds no whole number, and the input is int64"),
    ("n:0.2..0.8", "0.2..0.8 holds no whole number"),
    # A range too wide is no empty one (it read 'holds no int64 value', a review).
    ("n:1e30", "int64, whose values run from -9223372036854775808 to 9223372036854775807; 1e+30..1e+30 goes past"),
    ("x:-1e300..1", "float32, whose largest value is 3.40282e+38"),
    # A bool takes 0 and 1 only (0.5 was numpy's 'low >= high', exit 1; 5 became True).
    ("b:0.5", "the input is bool: give 0, 1 or 0..1, not 0.5..0.5"), ("b:5", "not 5..5"), ("b:-3..-1", "not -3..-1")])
def test_an_integer_input_s_value_must_hold_an_integer(tmp_path, value, words):
    """... and a float input's must fit its type: 1e300 made every random input inf."""
    nodes = [helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "f"], ["y"]),
             helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["y", "bf"], ["z"])]
    model = make_model(nodes, [vi("x", ["N", 3]), vi("n", [1], TensorProto.INT64), vi("b", [1], TensorProto.BOOL)],
                       [vi("z", ["N", 3])])
    line = one_line_error(cli("optimize", save_model(model, tmp_path), "--input-value", value), 6)
    assert words in line


def test_an_empty_cache_in_the_data_is_a_size_of_zero(tmp_path):
    """A decoder's first step has an empty key/value cache: data with a 0 past length was
    refused as 'each dim must be a size >= 1' with exit 4, a trial found; evaluate and
    verify ran it."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Unsqueeze", ["x", "axis"], ["xu"]),
             helper.make_node("Concat", ["past", "xu"], ["present"], axis=1),
             helper.make_node("ReduceSum", ["present", "axis"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", 8]), vi("past", ["N", "P", 8])],
                       [vi("y", ["N", 4]), vi("present", ["N", "Q", 8])],
                       [init("axis", np.array([1], np.int64)), init("w1", scaled_normal(8, 48)),
                        init("w2", scaled_normal(48, 4))], opset=13)
    path, data = save_model(model, tmp_path, "step.onnx"), tmp_path / "first.npz"
    np.savez(data, x=rng.standard_normal((16, 8)).astype(np.float32), past=np.zeros((16, 0, 8), np.float32))
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--check-data", data, "--threshold=-inf", "--min-units", "8",
            "--objective", "flops")
    assert r.exit_code == 0, r.output
    got = run_exprune(onnx.load(tmp_path / "o.onnx"), dict(np.load(data)))
    want = run_plain(model, dict(np.load(data)))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    assert got[1].shape == (16, 1, 8)
