"""io/file_kinds.py: model files of other formats named as such, not as corrupt protobuf."""

from __future__ import annotations

import zipfile

import pytest
from helpers import save_model, weight_model

from exprune_onnx.errors import ModelLoadError
from exprune_onnx.io.file_kinds import other_format
from exprune_onnx.io.modelio import load_model


@pytest.mark.parametrize(("head", "words"), [(b"\x18\x00\x00\x00ORTM", "an ORT-format model"),
                                             (b"\x1c\x00\x00\x00TFL3", "a TensorFlow Lite model")])
def test_a_flatbuffer_model_is_named_by_its_kind(tmp_path, head, words):
    path = tmp_path / "m.ort"
    path.write_bytes(head + bytes(64))
    with pytest.raises(ModelLoadError, match=f"m.ort: {words}.*not an ONNX model: give the .onnx file"):
        load_model(path)


def test_a_zip_archive_is_named_as_one(tmp_path):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02")
    with pytest.raises(ModelLoadError, match="a zip archive .*torch.onnx.export"):
        load_model(path)


def test_an_onnx_model_whose_producer_spells_a_flatbuffer_kind_still_loads(tmp_path):
    """Bytes 4-8 of a ModelProto are its producer name's first four: looked at only once
    protobuf cannot read the file."""
    model = weight_model(8)
    model.producer_name = "TFL3 converter"
    assert other_format(save_model(model, tmp_path)) is not None  # what the bytes alone would say
    assert load_model(tmp_path / "m.onnx").producer_name == "TFL3 converter"


def test_an_onnx_model_and_a_short_file_are_no_other_format(tmp_path):
    assert other_format(save_model(weight_model(8), tmp_path)) is None
    (tmp_path / "short").write_bytes(b"\x08")
    assert other_format(tmp_path / "short") is None
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        load_model(tmp_path / "short")
