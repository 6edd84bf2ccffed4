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
from exprune_onnx.io.batch_memory import available_bytes, check_batch_memory, largest_step
from exprune_onnx.io.data import dataset_of


def _cnn(batch="N") -> onnx.ModelProto:
    """[batch, 1, 8, 8] -> Conv 8x3x3 -> Relu -> MaxPool 2 -> Flatten -> Gemm 10: per sample the
    Conv holds 256 + 2048 bytes, the Relu 2048 (in place), the MaxPool 2048 + 512, the Gemm 512 + 40."""
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


PER_SAMPLE = 256 + 2 * 2560  # one batch of inputs and two sessions' largest step (the MaxPool)


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
    check_batch_memory([model, model], data, 1000, "--batch", available=1000 * PER_SAMPLE)
    with pytest.raises(DataError) as err:
        check_batch_memory([model, model], data, 1000, "--batch", available=1000 * PER_SAMPLE - 1)
    text = str(err.value)
    assert text.startswith("--batch 1000 needs at least 5 MiB of memory")
    assert "MaxPool 'pool'" in text and "more than 999 cannot fit" in text


def test_feeds_held_count_once_each():
    model = _cnn()
    need = 100 * (8 * 256 + 2 * 2560)
    check_batch_memory([model, model], _data(model), 100, "--latency-batch", feeds=8, available=need)
    with pytest.raises(DataError, match="--latency-batch 100 needs .* for 8 batches of inputs"):
        check_batch_memory([model, model], _data(model), 100, "--latency-batch", feeds=8, available=need - 1)


def test_a_model_whose_inputs_fix_the_batch_runs_at_it_unchecked():
    model = _cnn(batch=4)
    check_batch_memory([model], _data(model), 4, "--batch", available=1)


def test_batch_1_is_not_checked():
    model = _cnn()
    check_batch_memory([model], _data(model), 1, "--batch", available=1)


def test_nothing_is_refused_where_the_memory_cannot_be_read(monkeypatch):
    import exprune_onnx.io.batch_memory as batch_memory

    monkeypatch.setattr(batch_memory, "available_bytes", lambda: None)
    model = _cnn()
    check_batch_memory([model], _data(model), 10**12, "--batch")


def test_tensors_of_unknown_size_are_left_out():
    # Shape inference knows nothing of an op from an unknown domain, nor so of what follows it.
    nodes = [helper.make_node("Mystery", ["x"], ["r"], name="mystery", domain="com.example"),
             helper.make_node("MatMul", ["r", "m"], ["y"], name="mm")]
    model = make_model(nodes, [vi("x", ["N", 64])], [vi("y", ["N", 4])], [init("m", np.ones((64, 4), np.float32))],
                       domains=["com.example"])
    data = dataset_of({"x": np.ones((3, 64), np.float32)}, model)
    assert largest_step(model, data) == (256, "Mystery 'mystery'")
    check_batch_memory([model], data, 10, "--batch", feeds=1, available=10 * 512)
    with pytest.raises(DataError, match=r"--batch 10 needs at least 5 KiB of memory \(2 KiB for 1 batch of inputs"):
        check_batch_memory([model], data, 10, "--batch", available=10 * 512 - 1)


def test_available_bytes_takes_the_tightest_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 9000 kB\nMemAvailable: 1000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/a/b\n")
    root = tmp_path / "fs"
    for folder, limit, used in ((root / "a" / "b", "max", 5), (root / "a", "500000", 100000), (root, "max", 7)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "memory.max").write_text(limit + "\n")
        (folder / "memory.current").write_text(f"{used}\n")
    assert available_bytes(str(meminfo), str(cgroup), str(root)) == 400000
    (root / "a" / "memory.max").write_text("max\n")
    assert available_bytes(str(meminfo), str(cgroup), str(root)) == 1024000
    assert available_bytes(str(tmp_path / "none"), str(tmp_path / "none"), str(root)) is None


def _one_line_error(r, *words):
    assert r.exit_code != 0, r.output
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


def test_optimize_refuses_a_latency_batch_that_cannot_fit_before_any_work(tmp_path, monkeypatch):
    import exprune_onnx.tuning.search as search

    def no_search(*args, **kwargs):
        raise AssertionError("the batch is refused before the calibration search")

    monkeypatch.setattr(search, "search", no_search)
    model = tmp_path / "m.onnx"
    onnx.save(_cnn(), model)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((16, 1, 8, 8), np.float32), labels=np.zeros(16, np.int64))
    out = tmp_path / "out.onnx"
    r = CliRunner().invoke(main, ["optimize", str(model), "-o", str(out), "--calibration", str(data),
                                  "--latency-batch", str(10**12)])
    _one_line_error(r, f"--latency-batch {10**12} needs at least")
    assert not out.exists()
