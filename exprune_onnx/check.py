"""Running the original and the optimised model side by side on the same inputs.

The optimised model is run with every early-exit op's ``stats`` output exposed, so
the pruning it reports is counted by the op itself, not estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from . import ops
from .errors import DataError, RuntimeCheckError

_NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8, onnx.TensorProto.BOOL: np.bool_,
}


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float
    top1_agreement: float | None  # for [N, classes] outputs


@dataclass
class CheckResult:
    samples: int
    source: str
    outputs: list[OutputDiff]
    pruned: dict[str, tuple[int, int]] = field(default_factory=dict)  # op node -> (pruned, total)
    accuracy: tuple[float, float] | None = None  # (original, optimised) when labels are given


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim]


def load_data(path: Path, model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Inputs (and optional ``labels``) from a .npz keyed by input name; first axis = samples."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    labels = arrays.pop("labels", None)
    feeds = {}
    for vi in model_inputs(model):
        if vi.name not in arrays:
            raise DataError(f"{path}: no array for model input '{vi.name}' (has: {', '.join(sorted(arrays)) or 'nothing'})")
        a = arrays[vi.name]
        want = _NP_TYPES.get(vi.type.tensor_type.elem_type)
        if want is not None and a.dtype != want:
            raise DataError(f"{path}: input '{vi.name}' is {a.dtype}, the model wants {np.dtype(want)}")
        dims = _dims(vi)
        if a.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims[1:], a.shape[1:])):
            raise DataError(f"{path}: input '{vi.name}' has shape {list(a.shape)}, the model wants {dims}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise DataError(f"{path}: input '{vi.name}' contains NaN or Inf")
        feeds[vi.name] = a
    counts = {a.shape[0] for a in feeds.values()}
    if len(counts) != 1 or 0 in counts:
        raise DataError(f"{path}: the inputs must share a non-zero first (sample) axis, got {sorted(counts)}")
    if labels is not None and labels.shape[:1] != (counts.pop(),):
        raise DataError(f"{path}: 'labels' must have one entry per sample")
    return feeds, labels


def random_data(model: onnx.ModelProto, samples: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs in [0, 1); the batch axis is the sample axis, other dims must be known."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model_inputs(model):
        dims = _dims(vi)
        rest = dims[1:]
        if not all(isinstance(d, int) and d > 0 for d in rest):
            raise DataError(f"input '{vi.name}' has unknown dimensions {dims}: give --check-data")
        dtype = _NP_TYPES.get(vi.type.tensor_type.elem_type)
        if dtype is None or np.dtype(dtype).kind != "f":
            raise DataError(f"input '{vi.name}' is not floating point: give --check-data")
        feeds[vi.name] = rng.random((samples, *rest)).astype(dtype)
    return feeds


def with_stats(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy whose outer-graph early-exit ops expose ``stats``; returns it and node -> output."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    exposed = {o.name for o in out.graph.output}
    mapping = {}
    for node in out.graph.node:
        if node.domain != ops.DOMAIN:
            continue
        if len(node.output) < 2:
            node.output.append(f"{node.name}__stats")
        mapping[node.name] = node.output[1]
        if node.output[1] not in exposed:
            out.graph.output.append(onnx.helper.make_tensor_value_info(node.output[1], onnx.TensorProto.INT64, [2]))
    return out, mapping


def compare(original: onnx.ModelProto, optimized: onnx.ModelProto, feeds: dict[str, np.ndarray],
            labels: np.ndarray | None = None, *, source: str = "", batch: int = 64,
            threads: int | None = None) -> CheckResult:
    import onnxruntime as ort

    from .runtime import inference_session

    stats_model, stats_names = with_stats(optimized)
    try:
        ref = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RuntimeCheckError(f"onnxruntime cannot run the original model ({_first_line(exc)}); "
                                "--no-check skips the comparison") from exc
    try:
        opt = inference_session(stats_model, threads=threads)
    except Exception as exc:
        raise RuntimeCheckError(f"onnxruntime could not load the optimised model: {_first_line(exc)}") from exc
    names = [o.name for o in original.graph.output]
    total = next(iter(feeds.values())).shape[0]
    got_ref = {n: [] for n in names}
    got_opt = {n: [] for n in names}
    pruned = {n: [0, 0] for n in stats_names}
    for start in range(0, total, batch):
        chunk = {k: v[start:start + batch] for k, v in feeds.items()}
        try:
            r = ref.run(names, chunk)
            o = opt.run(names + list(stats_names.values()), chunk)
        except Exception as exc:
            raise RuntimeCheckError(f"onnxruntime failed to run the models: {_first_line(exc)}") from exc
        for i, n in enumerate(names):
            got_ref[n].append(r[i])
            got_opt[n].append(o[i])
        for j, node in enumerate(stats_names):
            s = o[len(names) + j]
            pruned[node][0] += int(s[0])
            pruned[node][1] += int(s[1])
    diffs = []
    accuracy = None
    for n in names:
        a, b = np.concatenate(got_ref[n]), np.concatenate(got_opt[n])
        diffs.append(_diff(n, a, b))
        if labels is not None and accuracy is None and _is_scores(a):
            accuracy = (float(np.mean(a.argmax(1) == labels)), float(np.mean(b.argmax(1) == labels)))
    return CheckResult(total, source, diffs, {k: tuple(v) for k, v in pruned.items()}, accuracy)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]


def _is_scores(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f"


def _diff(name: str, a: np.ndarray, b: np.ndarray) -> OutputDiff:
    if a.dtype.kind != "f":
        same = float(np.mean(a == b)) if a.size else 1.0
        return OutputDiff(name, float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0, 0.0, same)
    err = np.abs(a.astype(np.float64) - b)
    max_abs = float(err.max()) if err.size else 0.0
    scale = float(np.abs(a).max()) if a.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    top1 = float(np.mean(a.argmax(1) == b.argmax(1))) if _is_scores(a) else None
    return OutputDiff(name, max_abs, max_rel, top1)
