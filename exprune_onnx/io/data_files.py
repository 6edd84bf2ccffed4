"""The files a model keeps its weights in (external data): each one beside the model, and
read where it is a symbolic link, as onnxruntime reads it. onnx's loader and its checker
refuse a linked data file, and a Hugging Face cache links every file of a snapshot to its
blob (``model.onnx_data -> ../../blobs/<hash>``)."""

from __future__ import annotations

from pathlib import Path

import onnx

from ..errors import ModelLoadError


def _location(tensor: onnx.TensorProto) -> tuple[str, int, int | None]:
    """Where a tensor's data is: its file's name, the offset and the length (None: to the end)."""
    info = {e.key: e.value for e in tensor.external_data}
    length = info.get("length")
    return info.get("location", ""), int(info.get("offset", 0)), None if length is None else int(length)


def check_data_files(tensors, path: Path) -> None:
    """Every external-data file the model names exists beside it (onnx's own message for a
    missing one names a tensor and says 'not regular file')."""
    for tensor in tensors:
        location = _location(tensor)[0]
        if location and not (path.parent / location).is_file():
            raise ModelLoadError(f"{path}: its weights are stored apart, in '{location}', which is not beside it "
                                 f"({path.parent / location} is missing): keep the two files together")


def read_linked(tensors, path: Path) -> bool:
    """Read into each tensor the data it keeps in a file that is a symbolic link, checked as
    onnx checks a location (a name within the model's folder); True when there was one.
    The other tensors are left to onnx's loader."""
    linked = False
    for tensor in tensors:
        location, offset, length = _location(tensor)
        name = Path(location)
        if not location or not (path.parent / name).is_symlink():
            continue
        if name.is_absolute() or ".." in name.parts:
            raise ModelLoadError(f"{path}: tensor '{tensor.name}' keeps its data at '{location}', outside the "
                                 "model's folder: a location must be a name within it")
        with open(path.parent / name, "rb") as f:
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
        if length is not None and len(data) != length:
            raise ModelLoadError(f"{path}: '{location}' ends before tensor '{tensor.name}''s {length} bytes "
                                 f"at offset {offset}")
        tensor.raw_data = data
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
        linked = True
    return linked
