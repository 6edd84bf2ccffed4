"""io/data.py: data layouts read in the order, under the names and with the memory a user
expects (a review of the data layer: the rest of data.py's behaviour is test_data.py's)."""

import os

import numpy as np
import onnx
import pytest
from helpers import make_model, vi
from onnx import helper, numpy_helper

from exprune_onnx.errors import DataError
from exprune_onnx.io.data import load_dataset, read_labels
from exprune_onnx.io.feeds import InputSpec, check_batch, may_broadcast


@pytest.fixture
def model():
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    return make_model(nodes, [vi("a", ["N", 3]), vi("b", ["N", 3])], [vi("y", ["N", 3])])


def _write_set(folder, a, b, names=("", ""), order=(0, 1)):
    folder.mkdir()
    for i, (value, name) in zip(order, ((a, names[0]), (b, names[1]))):
        (folder / f"input_{i}.pb").write_bytes(numpy_helper.from_array(value, name).SerializeToString())


def test_twelve_test_data_sets_are_read_in_their_numbers_order(tmp_path, model):
    """By name, test_data_set_10 and _11 came before _2: labels in the sets' order were read
    against other samples (100% accuracy shown as 25%)."""
    for s in range(12):
        _write_set(tmp_path / f"test_data_set_{s}", np.full((1, 3), s, np.float32), np.zeros((1, 3), np.float32))
    d = load_dataset(tmp_path, model)
    assert d.inputs["a"][:, 0].tolist() == list(range(12))


def test_onnx_tensors_named_after_the_inputs_go_to_those_inputs(tmp_path, model):
    """Two inputs of one shape: files numbered in another order than the model's inputs
    were swapped silently; their tensors' names say which is which."""
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    _write_set(tmp_path / "test_data_set_0", a, b, names=("a", "b"), order=(1, 0))
    d = load_dataset(tmp_path, model)
    assert d.inputs["a"].tolist() == a.tolist() and d.inputs["b"].tolist() == b.tolist()
    _write_set(tmp_path / "unnamed", a, b, order=(1, 0))  # no names: the files' numbers, as ONNX's test data
    assert load_dataset(tmp_path / "unnamed", model).inputs["a"].tolist() == b.tolist()


def test_an_array_the_model_does_not_read_is_not_loaded(tmp_path, model, monkeypatch):
    """A 400 MB extra in the .npz was read whole; its name still reaches the messages."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", a=rng.random((4, 3), dtype=np.float32), b=rng.random((4, 3), dtype=np.float32),
             raw=np.zeros((4, 1000), np.float32), labels=np.arange(4))
    read = []
    real = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: read.append(key) or real(self, key))
    d = load_dataset(tmp_path / "d.npz", model)
    assert sorted(read) == ["a", "b", "labels"] and d.labels.tolist() == [0, 1, 2, 3]
    np.savez(tmp_path / "e.npz", a=np.zeros((4, 3), np.float32), raw=np.zeros(3))
    with pytest.raises(DataError, match=r"no array for model input 'b' \(has: a, raw\)"):
        load_dataset(tmp_path / "e.npz", model)


@pytest.mark.parametrize("name", ["labels.NPZ", "labels"])
def test_labels_saved_as_npz_under_any_name(tmp_path, name):
    """'lab.NPZ' or a name without a suffix: numpy read a zip, and 'NpzFile' has no shape (exit 1)."""
    with open(tmp_path / name, "wb") as f:
        np.savez(f, labels=np.arange(3))
    assert read_labels(tmp_path / name).tolist() == [0, 1, 2]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_in_a_data_directory_is_refused_not_read(tmp_path, model):
    """<input>.npy as a named pipe: the read waited for a writer that never came."""
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float32))
    os.mkfifo(tmp_path / "b.npy")
    with pytest.raises(DataError, match=r"b.npy: not a .npy file \(a directory, device or pipe\)"):
        load_dataset(tmp_path, model)


def test_the_samples_of_an_input_filled_by_value_are_the_inputs_own(tmp_path):
    """An extra array of another length listed first gave the filled input its sample count."""
    nodes = [helper.make_node("Add", ["x", "k"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", 8]), vi("k", ["N", 8])], [vi("y", ["N", 8])])
    np.savez(tmp_path / "d.npz", class_names=np.arange(4), x=np.zeros((64, 8), np.float32))
    d = load_dataset(tmp_path / "d.npz", model, spec=InputSpec(values={"k": (3.0, 3.0)}))
    assert d.inputs["k"].shape == (64, 8) and float(d.inputs["k"][0, 0]) == 3.0


def lstm_model(layers: int = 1, hidden: int = 16):
    """x [N, T, 8] through an LSTM whose first state h0 [layers, N, H] is an input (its first
    layer's), then a ReLU head: a streaming model's export."""
    from helpers import init
    from onnx import TensorProto

    rng = np.random.default_rng(3)
    weights = [init("W", rng.standard_normal((1, 4 * hidden, 8)).astype(np.float32) * 0.3),
               init("R", rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.1),
               init("W1", rng.standard_normal((hidden, 64)).astype(np.float32)),
               init("W2", rng.standard_normal((64, 4)).astype(np.float32)),
               *(init(n, np.array([v], np.int64)) for n, v in (("s0", 0), ("s1", 1), ("ax", 0)))]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("Slice", ["h0", "s0", "s1", "ax"], ["h0a"]),
             helper.make_node("LSTM", ["xt", "W", "R", "", "", "h0a"], ["Y", "Yh"], hidden_size=hidden),
             helper.make_node("Squeeze", ["Yh", "ax"], ["hl"]), helper.make_node("MatMul", ["hl", "W1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["y"])]
    return make_model(nodes, [vi("x", ["N", "T", 8]), vi("h0", [layers, "N", hidden], TensorProto.FLOAT)],
                      [vi("y", ["N", 4])], weights)


@pytest.mark.parametrize("layers", [1, 2])
def test_a_recurrent_state_is_fed_one_sample_s_part_a_run(tmp_path, layers):
    """h0 [layers, N, H] holds one state a sample along its axis 1: fed whole, it ran only at
    the batch the data held (a one-layer one was refused as a batch of 1, a review)."""
    from exprune_onnx.io.feeds import state_axes
    from exprune_onnx.tuning.certify import subset

    model = lstm_model(layers)
    assert state_axes(model) == {"h0": 1}
    rng = np.random.default_rng(0)
    x, h0 = rng.random((10, 5, 8), dtype=np.float32), rng.random((layers, 10, 16), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, h0=h0)
    d = load_dataset(tmp_path / "d.npz", model)
    picked = d.take(np.array([7, 2]))
    np.testing.assert_array_equal(picked["h0"], h0[:, [7, 2]])
    np.testing.assert_array_equal(d.first(12)["h0"], h0[:, np.arange(12) % 10])
    np.testing.assert_array_equal(subset(d, np.array([4, 5])).take(slice(None))["h0"], h0[:, [4, 5]])
    np.savez(tmp_path / "e.npz", x=x, h0=h0[:, :8])
    with pytest.raises(DataError, match=r"input 'h0' .* holds 8 samples' states along its axis 1, and the other "
                                        r"inputs 10 samples"):
        load_dataset(tmp_path / "e.npz", model)


def test_the_plain_command_runs_a_model_with_a_recurrent_state(tmp_path):
    """No data: the states are drawn a sample each, as the inputs are (it asked for h0's sizes);
    with data, at a latency batch other than the data's."""
    from cli_calls import cli
    from helpers import run_exprune, run_plain

    model = lstm_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx")
    assert r.exit_code == 0, r.output
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=rng.random((12, 6, 8), dtype=np.float32),
             h0=rng.random((1, 12, 16), dtype=np.float32))
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--check-data", tmp_path / "d.npz", "--latency-batch", "4")
    assert r.exit_code == 0, r.output
    feeds = {"x": rng.random((3, 6, 8), dtype=np.float32), "h0": rng.random((1, 3, 16), dtype=np.float32)}
    np.testing.assert_allclose(run_exprune(onnx.load(tmp_path / "o.onnx"), feeds)[0], run_plain(model, feeds)[0],
                               rtol=1e-5, atol=1e-5)


def test_states_join_along_their_axis_and_a_pinned_batch_is_the_runs_own(tmp_path, monkeypatch):
    """test_data_set_* of one sample each had to hold the same h0 (a state, per sample); a
    batch --input-shape pins is the runs' (the state was checked against it); the memory a
    random draw needs counts the states (a GPT-2 past of 9 MB a sample went uncounted)."""
    from cli_calls import cli

    from exprune_onnx.io import feeds
    from exprune_onnx.io.feeds import random_arrays

    model = lstm_model()
    rng = np.random.default_rng(2)
    for s in range(3):
        folder = tmp_path / "sets" / f"test_data_set_{s}"
        folder.mkdir(parents=True)
        for i, value in enumerate((rng.random((1, 5, 8), dtype=np.float32), np.full((1, 1, 16), s, np.float32))):
            (folder / f"input_{i}.pb").write_bytes(numpy_helper.from_array(value).SerializeToString())
    d = load_dataset(tmp_path / "sets", model)
    assert d.shared["h0"][0, :, 0].tolist() == [0.0, 1.0, 2.0]
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "d.npz", x=rng.random((12, 6, 8), dtype=np.float32), h0=rng.random((1, 12, 16), dtype=np.float32))
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--check-data", tmp_path / "d.npz", "--input-shape",
            "x:4,6,8", "--input-shape", "h0:1,4,16", "--objective", "flops")
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(feeds, "available_bytes", lambda: 64 << 20)
    with pytest.raises(DataError, match="'x', 'h0' need"):
        random_arrays(model, 600_000, 0, InputSpec({"x": ("N", 2, 8)}))  # x alone fits


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_among_input_pb_files_is_refused_not_read(tmp_path, model):
    np.save(tmp_path / "unused.npy", np.zeros(1))
    (tmp_path / "input_0.pb").write_bytes(numpy_helper.from_array(np.zeros((2, 3), np.float32)).SerializeToString())
    os.mkfifo(tmp_path / "input_1.pb")
    with pytest.raises(DataError, match=r"input_1.pb: not an input_<i>.pb file \(a directory, device or pipe\)"):
        load_dataset(tmp_path, model)


def test_no_states_where_the_inputs_have_two_batches():
    """A graph's nodes [V, F] and edges [2, E] beside edge features [E, D]: E is no batch."""
    from exprune_onnx.io.feeds import state_axes

    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    model = make_model(nodes, [vi("x", ["V", 4]), vi("edge_attr", ["E", 2]), vi("edges", [2, "E"])],
                       [vi("y", ["V", 4])])
    assert state_axes(model) == {}


def test_an_input_filled_by_value_takes_the_sizes_the_data_gives_its_dims(tmp_path):
    """x [N, T] in the data as [4, 20] and mask [N, T] filled by --input-value: it asked for T
    with an --input-shape hint of 128 that the data then contradicted (a review)."""
    nodes = [helper.make_node("Mul", ["x", "mask"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", "T"]), vi("mask", ["N", "T"])], [vi("y", ["N", "T"])])
    np.savez(tmp_path / "d.npz", x=np.ones((4, 20), np.float32))
    d = load_dataset(tmp_path / "d.npz", model, spec=InputSpec(values={"mask": (1.0, 1.0)}))
    assert d.inputs["mask"].shape == (4, 20) and float(d.inputs["mask"].min()) == 1.0


def test_samples_that_differ_only_in_their_state_are_no_repeats(tmp_path):
    """Silent chunks of a stream (the same x) with their own states were dropped as repeats."""
    from exprune_onnx.tuning.certify import distinct

    np.savez(tmp_path / "d.npz", x=np.zeros((4, 5, 8), np.float32),
             h0=np.arange(4, dtype=np.float32).repeat(16).reshape(1, 4, 16))
    assert distinct(load_dataset(tmp_path / "d.npz", lstm_model())).tolist() == [0, 1, 2, 3]


def test_big_endian_data_is_named_as_such():
    """'>f4, the model wants float32' left the user to find out what differs."""
    from exprune_onnx.io.data import dataset_of

    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", 3])], [vi("y", ["N", 3])])
    with pytest.raises(DataError, match=r"is >f4, the model wants float32 \(the same values, big-endian: save them "
                                        r"with .astype\('<f4'\)\)"):
        dataset_of({"x": np.zeros((2, 3), ">f4")}, model)


def test_an_input_fixed_at_1_beside_data_of_more_samples_is_given_whole(tmp_path):
    """x [N, 4] + r [1, 4]: with 3 samples of x and one r, r broadcasts (it was refused: "the
    inputs must share a non-zero first (sample) axis, got [1, 3]"); with one of each, r is a
    sample's as before."""
    model = make_model([helper.make_node("Add", ["x", "r"], ["y"])], [vi("x", ["N", 4]), vi("r", [1, 4])],
                       [vi("y", ["N", 4])])
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "d.npz", x=rows, r=np.ones((1, 4), np.float32))
    data = load_dataset(tmp_path / "d.npz", model)
    assert len(data) == 3 and set(data.shared) == {"r"} and data.inputs["x"].shape == (3, 4) and data.batch is None
    assert check_batch(model, 3, "--batch", None, data.batch) == 3  # (the model alone fixes 1)
    np.savez(tmp_path / "one.npz", x=rows[:1], r=np.ones((1, 4), np.float32))
    one = load_dataset(tmp_path / "one.npz", model)
    assert len(one) == 1 and set(one.inputs) == {"x", "r"}
    # An r a sample is the sample's, a batch of 1 (a review: refused as "no batch axis").
    np.savez(tmp_path / "each.npz", x=rows, r=rows * 10)
    each = load_dataset(tmp_path / "each.npz", model)
    assert len(each) == 3 and set(each.inputs) == {"x", "r"} and each.batch == 1
    with pytest.raises(DataError, match=r"--batch 3 is impossible: the model's inputs fix the batch at 1 \('r' is "):
        check_batch(model, 3, "--batch", None, each.batch)


def test_an_input_fixed_at_1_that_an_input_shape_batch_must_broadcast_is_refused_a_row_a_sample(tmp_path):
    """--input-shape x:3 makes r [1, 4] broadcast: data giving it a row a sample are refused
    with what to give (they went on to onnxruntime, which refused r [3, 4], a review)."""
    model = make_model([helper.make_node("Add", ["x", "r"], ["y"])], [vi("x", ["N", 4]), vi("r", [1, 4])],
                       [vi("y", ["N", 4])])
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "each.npz", x=rows, r=rows)
    with pytest.raises(DataError, match=r"input 'r' has shape \[3, 4\], the model wants \[1, 4\] \(it has no batch "
                                        r"axis: give it whole\)"):
        load_dataset(tmp_path / "each.npz", model, spec=InputSpec({"x": (3, 4)}))
    assert may_broadcast(model) and not may_broadcast(make_model(
        [helper.make_node("Add", ["x", "r"], ["y"])], [vi("x", ["N", 4]), vi("r", ["N", 4])], [vi("y", ["N", 4])]))


def test_a_latency_batch_the_data_free_is_not_refused_for_the_model_alone(tmp_path):
    """optimize --latency-batch 3 was refused before any data was read ("the model's inputs
    fix the batch at 1") where the data give r [1, 4] whole, and evaluate took --batch 3."""
    from click.testing import CliRunner

    from exprune_onnx.cli import main

    model = make_model([helper.make_node("Add", ["x", "r"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
                       [vi("x", ["N", 4]), vi("r", [1, 4])], [vi("y", ["N", 4])])
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.ones((3, 4), np.float32), r=np.ones((1, 4), np.float32))
    r = CliRunner().invoke(main, ["optimize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"),
                                  "--check-data", str(tmp_path / "d.npz"), "--latency-batch", "3"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["optimize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"),
                                  "--latency-batch", "3"])  # no data: the model's own layout holds
    assert r.exit_code == 6 and "--latency-batch 3 is impossible" in r.output, r.output
