"""Sample data for checking and calibration: reading it and fitting it to a model's inputs.

Accepted layouts (first axis = samples everywhere):

* ``data.npz``: one array per model input, keyed by input name; an optional ``labels``.
* a directory of ``<input name>.npy`` files (memory-mapped, so large sets stay on
  disk); an optional ``labels.npy``.
* the ONNX test-data layout: a directory of ``input_0.pb, input_1.pb, ...`` (serialized
  TensorProtos in model-input order), or a directory of ``test_data_set_*``
  directories holding them, concatenated along the first axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import DataError

_NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8, onnx.TensorProto.BOOL: np.bool_,
}


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]  # may be memory-mapped
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def batches(self, size: int, indices: np.ndarray | None = None):
        """Feeds of at most ``size`` samples: all in order, or those at ``indices``."""
        total = len(self) if indices is None else len(indices)
        for start in range(0, total, size):
            if indices is None:
                pick = slice(start, start + size)
            else:
                pick = indices[start:start + size]
            yield {k: np.ascontiguousarray(v[pick]) for k, v in self.inputs.items()}

    def labels_of(self, indices: np.ndarray | None = None) -> np.ndarray | None:
        if self.labels is None or indices is None:
            return self.labels
        return self.labels[indices]


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim]


def input_dtype(vi: onnx.ValueInfoProto):
    return _NP_TYPES.get(vi.type.tensor_type.elem_type)


def load_dataset(path: str | Path, model: onnx.ModelProto, labels: str | Path | None = None) -> Dataset:
    """Read ``path`` in any accepted layout and check it against ``model``'s inputs."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    names = [vi.name for vi in model_inputs(model)]
    if path.is_dir():
        arrays, found_labels = _read_dir(path, names)
    else:
        arrays, found_labels = _read_npz(path)
    if labels is not None:
        found_labels = _read_labels(Path(labels))
    dataset = Dataset(fit_to_model(arrays, model, str(path)), found_labels, path.name)
    if dataset.labels is not None and dataset.labels.shape[:1] != (len(dataset),):
        raise DataError(f"{path}: {dataset.labels.shape[0] if dataset.labels.ndim else 0} labels "
                        f"for {len(dataset)} samples")
    return dataset


def fit_to_model(arrays: dict[str, np.ndarray], model: onnx.ModelProto, where: str) -> dict[str, np.ndarray]:
    feeds = {}
    for vi in model_inputs(model):
        if vi.name not in arrays:
            raise DataError(f"{where}: no array for model input '{vi.name}' (has: {', '.join(sorted(arrays)) or 'nothing'})")
        a = arrays[vi.name]
        want = input_dtype(vi)
        if want is not None and a.dtype != want:
            raise DataError(f"{where}: input '{vi.name}' is {a.dtype}, the model wants {np.dtype(want)}")
        dims = input_dims(vi)
        if a.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims[1:], a.shape[1:])):
            raise DataError(f"{where}: input '{vi.name}' has shape {list(a.shape)}, the model wants {dims}")
        if a.dtype.kind == "f" and not _all_finite(a):
            raise DataError(f"{where}: input '{vi.name}' contains NaN or Inf")
        feeds[vi.name] = a
    counts = {a.shape[0] for a in feeds.values()}
    if len(counts) != 1 or 0 in counts:
        raise DataError(f"{where}: the inputs must share a non-zero first (sample) axis, got {sorted(counts)}")
    return feeds


def _all_finite(a: np.ndarray, chunk: int = 1024) -> bool:
    # Chunked so a memory-mapped set is never loaded whole.
    return all(np.isfinite(a[i:i + chunk]).all() for i in range(0, a.shape[0], chunk))


def _read_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    return arrays, arrays.pop("labels", None)


def _read_labels(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if len(f.files) != 1 and "labels" not in f.files:
                    raise DataError(f"{path}: expected one array or one named 'labels'")
                return f["labels"] if "labels" in f.files else f[f.files[0]]
        return np.load(path, allow_pickle=False)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable labels file ({exc})") from None


def _read_dir(path: Path, names: list[str]):
    sets = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith("test_data_set_"))
    if sets or any(path.glob("input_*.pb")):
        return _read_pb_sets(sets or [path], names), None
    arrays = {}
    for name in names:
        f = path / f"{name}.npy"
        if f.exists():
            try:
                arrays[name] = np.load(f, mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise DataError(f"{f}: not a readable .npy file ({exc})") from None
    if not arrays:
        raise DataError(f"{path}: holds no <input name>.npy, input_*.pb or test_data_set_* entries")
    labels_file = path / "labels.npy"
    return arrays, (np.load(labels_file, allow_pickle=False) if labels_file.exists() else None)


def _read_pb_sets(dirs: list[Path], names: list[str]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for d in dirs:
        files = sorted(d.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
        if len(files) != len(names):
            raise DataError(f"{d}: {len(files)} input_*.pb files for a model with {len(names)} inputs")
        for name, f in zip(names, files):
            tensor = onnx.TensorProto()
            try:
                tensor.ParseFromString(f.read_bytes())
                parts[name].append(onnx.numpy_helper.to_array(tensor))
            except Exception as exc:
                raise DataError(f"{f}: not a serialized TensorProto ({exc})") from None
    return {n: np.concatenate(p) if len(p) > 1 else p[0] for n, p in parts.items()}


def random_dataset(model: onnx.ModelProto, samples: int, seed: int) -> Dataset:
    """Seeded inputs in [0, 1); the batch axis is the sample axis, other dims must be known."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model_inputs(model):
        dims = input_dims(vi)
        if not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise DataError(f"input '{vi.name}' has unknown dimensions {dims}: give sample data")
        dtype = input_dtype(vi)
        if dtype is None or np.dtype(dtype).kind != "f":
            raise DataError(f"input '{vi.name}' is not floating point: give sample data")
        feeds[vi.name] = rng.random((samples, *dims[1:])).astype(dtype)
    return Dataset(feeds, None, "random")
