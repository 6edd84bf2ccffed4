"""The memory check on a batch the user picks (exprune_onnx/io/batch_memory.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import init, make_model, vi
from onnx import helper

from exprune_onnx.cli import main
from exprune_onnx.errors import DataError
from exprune_onnx.io.batch_memory import check_batch_memory, largest_step
from exprune_onnx.io.data import dataset_of, load_dataset
from exprune_onnx.io.feeds import InputSpec


def _cnn(batch="N") -> onnx.ModelProto:
    """[batch, 1, 8, 8] -> Conv 8x3x3 -> Relu -> MaxPool 2 -> Flatten -> Gemm 10: per sample the
    Conv allocates 2048 bytes (its input is the caller's), the Relu 2048 (in place), the
    MaxPool 2048 + 512, the Gemm 512 + 40."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "g"], ["y"], name="head", transB=1)]
    weights = [init("w", rng.standard_normal((8, 1, 3, 3)).astype(np.float32)),
               init("g", rng.standard_normal((10, 128)).astype(np.float32))]
    return make_model(nodes, [vi("x", [batch, 1, 8, 8])], [vi("y", [batch, 10])], weights)


def _data(model, samples=4):
    return dataset_of({"x": np.ones((samples, 1, 8, 8), np.float32)}, model)


PER_SAMPLE = 256 + 2 * 2560  # one input batch and two sessions' largest step (the MaxPool)


def _two(model):
    return [("original", model), ("optimised", model)]


def test_largest_step_counts_a_new_output_beside_its_inputs_and_an_in_place_one_alone():
    model = _cnn()
    assert largest_step(model, _data(model)) == (2560, "MaxPool 'pool'")


def test_the_symbolic_batch_leaves_the_model_alone():
    model = _cnn()
    before = model.SerializeToString()
    largest_step(model, _data(model))
    assert model.SerializeToString() == before


def test_a_batch_that_fits_passes_and_one_more_byte_does_not():
    model = _cnn()
    data = _data(model)
    check_batch_memory(_two(model), data, 1000, "--batch", available=1000 * PER_SAMPLE)
    with pytest.raises(DataError) as err:
        check_batch_memory(_two(model), data, 1000, "--batch", available=1000 * PER_SAMPLE - 1)
    assert str(err.value) == ("--batch 1000 needs at least 5 MiB of memory (250 KiB of input batches; 5 MiB for 2 "
                              "onnxruntime session(s), the largest step being MaxPool 'pool' of the original model "
                              "at 2 MiB) and 5 MiB is available: use a smaller --batch; at most 999 can fit")


def test_each_input_batch_held_counts():
    model = _cnn()
    need = 100 * (8 * 256 + 2 * 2560)
    check_batch_memory(_two(model), _data(model), 100, "--latency-batch", feeds=8, available=need)
    with pytest.raises(DataError, match=r"--latency-batch 100 needs at least 700 KiB of memory \(200 KiB of input"):
        check_batch_memory(_two(model), _data(model), 100, "--latency-batch", feeds=8, available=need - 1)


def test_a_model_whose_inputs_fix_the_batch_runs_at_it_unchecked():
    model = _cnn(batch=4)
    check_batch_memory([("original", model)], _data(model), 4, "--batch", available=1)


def test_a_batch_fixed_by_input_shape_is_the_users_and_checked(tmp_path):
    model = _cnn()
    np.savez(tmp_path / "d.npz", x=np.ones((4, 1, 8, 8), np.float32))
    data = load_dataset(tmp_path / "d.npz", model, None, InputSpec({"x": (4, 1, 8, 8)}))
    assert data.batch == 4
    with pytest.raises(DataError, match="--batch 4 needs at least"):
        check_batch_memory([("original", model)], data, 4, "--batch", available=1)


def test_optimize_refuses_an_input_shape_batch_no_run_could_feed(tmp_path):
    """The check's runs take the batch --input-shape fixes: 10^8 images of 1x28x28 ran out of
    memory 30 s into allocating 292 GiB; now refused before any run, as --batch is."""
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx"
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), "--objective", "flops",
                                  "--threshold=-inf", "--input-shape", "input:100000000,1,28,28"])
    assert r.exit_code == 6 and "--input-shape batch 100000000 needs at least" in " ".join(r.output.split())
    assert not (tmp_path / "o.onnx").exists()
    # verify too: it tried to allocate them and called that onnxruntime failing on the original (a review)
    r = CliRunner().invoke(main, ["verify", str(example), str(example), "--input-shape", "input:100000000,1,28,28"])
    assert r.exit_code == 6 and "--input-shape batch 100000000 needs at least" in " ".join(r.output.split())


def test_batch_1_is_not_checked():
    model = _cnn()
    check_batch_memory([("original", model)], _data(model), 1, "--batch", available=1)


def test_nothing_is_refused_where_the_memory_cannot_be_read(monkeypatch):
    import exprune_onnx.io.batch_memory as batch_memory

    monkeypatch.setattr(batch_memory, "available_bytes", lambda: None)
    model = _cnn()
    check_batch_memory([("original", model)], _data(model), 10**12, "--batch")


def test_tensors_of_unknown_size_are_left_out():
    # Shape inference knows nothing of an op from an unknown domain, nor so of what follows
    # it but the declared output; a node without outputs or a name is named by its op.
    nodes = [helper.make_node("Mystery", ["x"], ["r"], name="mystery", domain="com.example"),
             helper.make_node("MatMul", ["r", "m"], ["y"], name="mm"),
             helper.make_node("Sink", ["y"], [], domain="com.example")]
    model = make_model(nodes, [vi("x", ["N", 64])], [vi("y", ["N", 4])], [init("m", np.ones((64, 4), np.float32))],
                       domains=["com.example"])
    data = dataset_of({"x": np.ones((3, 64), np.float32)}, model)
    assert largest_step(model, data) == (16, "MatMul 'mm'")


def test_a_declared_output_under_the_models_batch_name_counts():
    # The logits are the largest tensor: shape inference keeps the declared [batch, 50000].
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["logits"], name="head")], [vi("x", ["batch", 8])],
                       [vi("logits", ["batch", 50000])], [init("w", np.ones((8, 50000), np.float32))])
    data = dataset_of({"x": np.ones((2, 8), np.float32)}, model)
    assert largest_step(model, data) == (200000, "MatMul 'head'")


def test_the_graph_input_is_counted_once_with_the_input_batches():
    # A MatMul that shrinks a wide input: the input is the caller's, read in place.
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [vi("x", ["N", 4096])],
                       [vi("y", ["N", 16])], [init("w", np.ones((4096, 16), np.float32))])
    data = dataset_of({"x": np.ones((2, 4096), np.float32)}, model)
    assert largest_step(model, data) == (64, "MatMul 'mm'")


def test_only_onnx_ops_count_as_writing_a_new_output():
    # The same op name in another domain (a local function) may work in place.
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Concat", ["a", "a"], ["y"], name="cat", axis=1)]
    model = make_model(nodes, [vi("x", ["N", 256])], [vi("y", ["N", 512])])
    data = dataset_of({"x": np.ones((2, 256), np.float32)}, model)
    assert largest_step(model, data) == (1024 + 2048, "Concat 'cat'")
    model.graph.node[1].domain = "local"
    assert largest_step(model, data) == (2048, "Concat 'cat'")


def _one_line_error(r, *words):
    assert r.exit_code == 6, r.output
    assert "Traceback" not in r.output
    for word in words:
        assert word in r.stderr, r.stderr


def test_evaluate_refuses_a_batch_that_cannot_fit(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(_cnn(), model)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((4, 1, 8, 8), np.float32))
    r = CliRunner().invoke(main, ["evaluate", str(model), str(model), "--data", str(data), "--batch", str(10**12)])
    _one_line_error(r, f"--batch {10**12} needs at least", "use a smaller --batch")


def test_optimize_refuses_a_latency_batch_that_cannot_fit_and_writes_nothing(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(_cnn(), model)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).random((200, 1, 8, 8), np.float32),
             labels=np.zeros(200, np.int64))
    out = tmp_path / "out.onnx"
    r = CliRunner().invoke(main, ["optimize", str(model), "-o", str(out), "--calibration", str(data),
                                  "--latency-batch", str(10**12), "--confidence", "0"])
    _one_line_error(r, f"--latency-batch {10**12} needs at least")
    assert not out.exists()


def test_nothing_timed_nothing_refused(tmp_path):
    """A model with nothing to rewrite is never timed, so no batch is refused for it."""
    model = tmp_path / "m.onnx"
    onnx.save(make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", 10])], [vi("y", ["N", 10])]),
              model)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).random((200, 10), np.float32))
    r = CliRunner().invoke(main, ["optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--calibration",
                                  str(data), "--latency-batch", str(10**12)])
    assert r.exit_code == 0, r.output


def test_four_bit_elements_count_half_a_byte():
    model = make_model([helper.make_node("Cast", ["x"], ["y"], name="c", to=onnx.TensorProto.INT4)],
                       [vi("x", ["N", 64])], [vi("y", ["N", 64], onnx.TensorProto.INT4)], opset=21, ir_version=10)
    data = dataset_of({"x": np.ones((2, 64), np.float32)}, model)
    assert largest_step(model, data) == (32, "Cast 'c'")


def test_a_batch_the_data_free_from_an_input_fixed_at_1_is_checked():
    """x [N, 64] + r [1, 64], data of 8 samples and one r: the runs may take any batch, and
    the guard skipped them as if the model fixed it at 1 (a review)."""
    model = make_model([helper.make_node("Add", ["x", "r"], ["y"])], [vi("x", ["N", 64]), vi("r", [1, 64])],
                       [vi("y", ["N", 64])])
    data = dataset_of({"x": np.ones((8, 64), np.float32), "r": np.ones((1, 64), np.float32)}, model)
    assert data.batch is None and set(data.shared) == {"r"}
    with pytest.raises(DataError, match="--batch 8 needs"):
        check_batch_memory([("original", model)], data, 8, "--batch", available=1)
