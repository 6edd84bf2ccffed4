"""A saved model changed on purpose, as the verify tests tamper with one."""

from __future__ import annotations

from pathlib import Path

import onnx


def tampered(path: Path, tmp_path: Path, change) -> Path:
    """A copy of the model at ``path``, ``change``d in place, saved in ``tmp_path``."""
    model = onnx.load(path)
    change(model)
    out = tmp_path / "tampered.onnx"
    onnx.save(model, out)
    return out
