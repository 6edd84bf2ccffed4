"""Reading and writing models: clear errors on bad files, atomic writes, IR versions."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import onnx

from .errors import ModelLoadError, OutputError

# Protobuf refuses single messages over 2 GiB; stay well clear of the limit.
_EXTERNAL_DATA_BYTES = 1 << 30


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and validate a model, resolving external data next to it."""
    return read_model(path)[0]


def read_model(path: str | os.PathLike) -> tuple[onnx.ModelProto, bool]:
    """The validated model and whether its weights were stored as external data."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, not an ONNX file")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p}: the file is empty")
    try:
        model = onnx.load(str(p), load_external_data=False)
        external = uses_external_data(model)
        if external:
            onnx.external_data_helper.load_external_data_for_model(model, str(p.parent))
    except Exception as exc:  # protobuf and IO errors come in many types
        raise ModelLoadError(f"{p}: not a readable ONNX model ({_first_line(exc)})") from exc
    if not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(f"{p}: not an ONNX model (no graph or no opset import)")
    try:
        # The path form also copes with models over 2 GiB.
        onnx.checker.check_model(str(p))
    except Exception as exc:
        raise ModelLoadError(f"{p}: fails the ONNX checker: {_first_line(exc)}") from exc
    return model, external


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    )


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of weights held in initializers (ours are always loaded, not external)."""
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_model(model: onnx.ModelProto, out: str | os.PathLike, *, external_data: bool = False) -> None:
    """Write ``model`` to ``out`` atomically: all or nothing, never a partial file.

    Weights go to ``<out>.data`` when asked to or when the model is too large for one
    protobuf message.
    """
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{out}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: the directory {parent} is not writable")
    if out.is_dir():
        raise OutputError(f"{out}: is a directory")
    external_data = external_data or tensor_bytes(model) > _EXTERNAL_DATA_BYTES
    data_name = out.name + ".data"
    try:
        with tempfile.TemporaryDirectory(dir=parent, prefix=".exprune-") as tmp:
            tmp_model = Path(tmp) / out.name
            if external_data:
                onnx.save_model(
                    model,
                    str(tmp_model),
                    save_as_external_data=True,
                    all_tensors_to_one_file=True,
                    location=data_name,
                    size_threshold=1024,
                )
                os.replace(Path(tmp) / data_name, parent / data_name)
            else:
                onnx.save_model(model, str(tmp_model))
            os.replace(tmp_model, out)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from exc


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    a, b = Path(a), Path(b)
    if not b.exists():
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


@functools.lru_cache(maxsize=1)
def max_runtime_ir_version() -> int:
    """The newest IR version the installed onnxruntime loads, found by trying."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    for version in range(onnx.IR_VERSION, 3, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = version
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return version
        except Exception:
            continue
    return 7


def runtime_ir_version(ir_version: int) -> int:
    """Keep the model's IR version unless onnxruntime cannot read it."""
    return min(ir_version, max_runtime_ir_version())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]

