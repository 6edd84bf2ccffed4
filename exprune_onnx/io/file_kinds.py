"""Model files of other formats, named by their first bytes: protobuf's own message for
them ("Wire format was corrupt", "Error parsing message") told a user nothing of why."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelLoadError

# A flatbuffer names its kind in bytes 4-8, after the root's offset.
_FLATBUFFERS = {b"ORTM": "an ORT-format model (onnxruntime's .ort, converted from an .onnx file)",
                b"TFL3": "a TensorFlow Lite model"}
_ZIP = b"PK\x03\x04"


def other_format(path: Path) -> str | None:
    """What the file at ``path`` is, when its first bytes say it is no ONNX model, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:  # unreadable: onnx.load says so, as for any file
        return None
    if head[4:8] in _FLATBUFFERS:
        return _FLATBUFFERS[head[4:8]]
    if head.startswith(_ZIP):
        return ("a zip archive (a PyTorch checkpoint is one: export the model with torch.onnx.export; a zipped "
                ".onnx file: unzip it)")
    return None


def refuse_other_format(path: Path) -> None:
    """Name a file of another format in a ModelLoadError; called once the file has not read
    as an ONNX model (not before: an ONNX file's producer name may spell 'ORTM' where
    ``other_format`` looks)."""
    kind = other_format(path)
    if kind:
        raise ModelLoadError(f"{path}: {kind}, not an ONNX model: give the .onnx file")
