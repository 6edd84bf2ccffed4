"""Writing models (exprune_onnx/io/modelio.py): what ``save_model`` leaves behind."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exprune_onnx.io.modelio import save_model

EXAMPLE = Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx"


@pytest.mark.parametrize("source", ["inline", "external"])
@pytest.mark.parametrize("external_data", [False, True], ids=["to_inline", "to_external_data"])
def test_save_model_leaves_the_model_in_memory_as_it_was(external_data, source, tmp_path):
    if source == "external":  # onnx.load then sets every tensor's data location explicitly
        onnx.save_model(onnx.load(EXAMPLE), tmp_path / "in.onnx", save_as_external_data=True, location="in.data")
        model = onnx.load(tmp_path / "in.onnx")
        tmp_path = tmp_path / "out"
        tmp_path.mkdir()
    else:
        model = onnx.load(EXAMPLE)
    before = model.SerializeToString()
    save_model(model, tmp_path / "m.onnx", external_data=external_data)
    assert model.SerializeToString() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] + (["m.onnx.data"] if external_data else [])
    if external_data:
        assert (tmp_path / "m.onnx").stat().st_size < 0.1 * EXAMPLE.stat().st_size
    written = onnx.load(tmp_path / "m.onnx")
    assert written.graph.node == model.graph.node
    for got, want in zip(written.graph.initializer, model.graph.initializer, strict=True):
        assert got.name == want.name
        np.testing.assert_array_equal(numpy_helper.to_array(got), numpy_helper.to_array(want))


def test_an_inline_output_removes_the_data_file_of_the_output_it_replaces(tmp_path):
    model = onnx.load(EXAMPLE)
    save_model(model, tmp_path / "m.onnx", external_data=True)
    (tmp_path / "other.onnx.data").write_bytes(b"not ours")
    save_model(model, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "other.onnx.data"]
    assert onnx.load(tmp_path / "m.onnx").graph.initializer == model.graph.initializer
    # A data file the replaced output did not use is not ours to remove.
    (tmp_path / "m.onnx.data").write_bytes(b"someone's")
    save_model(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").read_bytes() == b"someone's"
