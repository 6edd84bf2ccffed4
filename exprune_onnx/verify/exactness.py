"""The exactness check: with every threshold at -inf (nothing pruned) the optimised model
computes what the original computes, up to float summation order."""

from __future__ import annotations

import math

import numpy as np
import onnx

from .. import ops
from ..errors import error_message, original_unloadable
from ..io.data import Dataset, quoted_source
from ..progress import quiet
from ..tuning.metrics import abs_diff, finite_abs, rounding_tolerance
from .base import SPARSE_OPS, Row


def exact_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose early-exit ops prune nothing: threshold -inf, default rule, no per-output thresholds."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for graph in _proto_graphs(out.graph):
        for node in graph.node:
            if node.domain != ops.DOMAIN or node.op_type in SPARSE_OPS:  # they prune nothing
                continue
            keep = [a for a in node.attribute if a.name not in ("threshold", "thresholds", "rule", "z_crit")]
            del node.attribute[:]
            node.attribute.extend(keep)
            node.attribute.append(onnx.helper.make_attribute("threshold", -math.inf))
    return out


def _proto_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _proto_graphs(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _proto_graphs(g)


def _joined_runs(a, b) -> tuple[np.ndarray, np.ndarray, str]:
    """Two PerRun outputs flattened run by run, or why they cannot be: a run whose shape differs."""
    differ = sum(x.shape != y.shape for x, y in zip(a, b))
    if differ:
        return a, b, f"has another shape than the original's on {differ} of {len(a)} runs"
    return (np.concatenate([x.reshape(-1) for x in a]) if a else np.zeros(0),
            np.concatenate([y.reshape(-1) for y in b]) if b else np.zeros(0), "")


def exactness_row(original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, tolerance: float,
                  batch: int = 64, log=quiet) -> Row:
    """With optimisations off, then at onnxruntime's default level, where it may run part of
    the original otherwise (a QDQ model's float layer between Q/DQ pairs runs quantized):
    verify passed a rewrite of such a layer that moved the logits by 0.8% there (a trial's)."""
    from ..measure.compare import tensor_outputs

    name = "exact at -inf"
    names = tensor_outputs(original)
    skipped = [o.name for o in original.graph.output if o.name not in names]
    if not names:  # nothing compared must not read as a pass
        return Row(name, False, f"no output is a tensor to compare ({', '.join(skipped)}: sequences or maps)")
    worst, widened = 0.0, {}
    for optimize in (False, True):
        found = _compare(original, optimized, data, names, tolerance, batch, log, optimize)
        if isinstance(found, str) and not optimize:
            return Row(name, False, found)
        if isinstance(found, str):
            why = " (equal with optimisations off: onnxruntime runs part of the original otherwise there)"
            why = why if "differs" in found else ""
            return Row(name, False, f"{found} at onnxruntime's default optimisation level{why}")
        worst, widened = max(worst, found[0]), {**widened, **found[1]}
    unread = f"; not compared: {', '.join(skipped)} (sequences or maps)" if skipped else ""
    wider = "".join(f", {t:g} for {kind} outputs (two of their steps)" for kind, t in widened.items())
    return Row(name, True, f"outputs equal the original's within {tolerance:g}{wider} of their largest magnitude, with "
                           f"optimisations off and at the default level, on {len(data)} samples of "
                           f"{quoted_source(data.source)} (largest {worst:.1e}){unread}")


def _compare(original, optimized, data: Dataset, names: list[str], tolerance: float, batch: int, log,
             optimize: bool) -> tuple[float, dict] | str:
    """Both models at -inf run at one optimisation level: (the largest difference as a share
    of an output's largest magnitude, the wider tolerances taken per output type), or what
    failed."""
    from ..measure.compare import run_counting
    from ..measure.runs import joined
    from ..runtime import inference_session

    try:
        # An original this compiler wrote runs its own ops at -inf too: its finite thresholds are not in question.
        ref = inference_session(exact_copy(original), optimize=optimize)
    except Exception as exc:  # noqa: BLE001 - the model's problem, not the rewrite's: nothing to verify against
        raise original_unloadable(exc) from exc
    try:
        opt = inference_session(exact_copy(optimized), optimize=optimize)
    except Exception as exc:  # noqa: BLE001
        return f"onnxruntime cannot load the optimised model: {error_message(exc)}"
    level = "the default level" if optimize else "optimisations off"
    try:
        key = next(iter(data.inputs))
        want, _ = run_counting(ref, names, {}, data.batches(batch), len(data),
                               lambda done: log(f"exactness ({level}): the original", done, len(data)), per_run=True,
                               key=key)
        got, _ = run_counting(opt, names, {}, data.batches(batch), len(data),
                              lambda done: log(f"exactness ({level}): the optimised model", done, len(data)),
                              per_run=True, key=key)
    except Exception as exc:  # noqa: BLE001
        return f"onnxruntime failed to run the models: {error_message(exc)}"
    worst, widened = 0.0, {}
    for n in names:
        a, b = joined(want[n], got[n], len(data))
        if isinstance(a, list):  # no batch axis (PerRun): compared run by run
            a, b, problem = _joined_runs(a, b)
            if problem:
                return f"output '{n}' {problem}"
        if a.dtype.kind == "f" and b.dtype.kind in "iu" and b.shape == a.shape[:-1]:
            a = a.argmax(-1)  # an --argmax-only output: compare the class index
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"output '{n}' is {b.dtype} {list(b.shape)}, the original's {a.dtype} {list(a.shape)}"
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return f"output '{n}' differs from the original's on {np.mean(a != b):.2%} of entries"
            continue
        scale = max(float(finite_abs(a).max()) if a.size else 0.0, 1e-6)
        err = float(abs_diff(a, b).max()) / scale if a.size else 0.0
        allowed = rounding_tolerance(onnx.helper.np_dtype_to_tensor_dtype(a.dtype), tolerance)
        if not err <= allowed:
            return (f"output '{n}' differs from the original's by {err:.2g} of its largest magnitude "
                    f"(tolerance {allowed:g}) with nothing pruned")
        worst = max(worst, err)
        if allowed > tolerance:
            widened[str(a.dtype)] = allowed
    return worst, widened
