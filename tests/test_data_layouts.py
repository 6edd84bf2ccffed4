"""io/data.py: data layouts read in the order, under the names and with the memory a user
expects (a review of the data layer: the rest of data.py's behaviour is test_data.py's)."""

import os

import numpy as np
import pytest
from helpers import make_model, vi
from onnx import helper, numpy_helper

from exprune_onnx.errors import DataError
from exprune_onnx.io.data import load_dataset, read_labels
from exprune_onnx.io.feeds import InputSpec


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
