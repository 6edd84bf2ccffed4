"""The exactness check: with every threshold at -inf (nothing pruned) the optimised model
computes what the original computes, up to float summation order."""

from __future__ import annotations

import math

import numpy as np
import onnx

from .. import ops
from ..errors import error_message, original_unloadable
from ..io.data import Dataset
from ..progress import quiet
from ..tuning.metrics import abs_diff, finite_abs
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
    from ..measure.compare import run_counting, tensor_outputs
    from ..measure.runs import joined
    from ..runtime import inference_session

    name = "exact at -inf"
    try:
        # An original this compiler wrote runs its own ops at -inf too: its finite thresholds are not in question.
        ref = inference_session(exact_copy(original), optimize=False)
    except Exception as exc:  # noqa: BLE001 - the model's problem, not the rewrite's: nothing to verify against
        raise original_unloadable(exc) from exc
    try:
        opt = inference_session(exact_copy(optimized), optimize=False)
    except Exception as exc:  # noqa: BLE001
        return Row(name, False, f"onnxruntime cannot load the optimised model: {error_message(exc)}")
    names = tensor_outputs(original)
    skipped = [o.name for o in original.graph.output if o.name not in names]
    if not names:  # nothing compared must not read as a pass
        return Row(name, False, f"no output is a tensor to compare ({', '.join(skipped)}: sequences or maps)")
    try:
        key = next(iter(data.inputs))
        want, _ = run_counting(ref, names, {}, data.batches(batch), len(data),
                               lambda done: log("exactness: the original", done, len(data)), per_run=True, key=key)
        got, _ = run_counting(opt, names, {}, data.batches(batch), len(data),
                              lambda done: log("exactness: the optimised model", done, len(data)), per_run=True,
                              key=key)
    except Exception as exc:  # noqa: BLE001
        return Row(name, False, f"onnxruntime failed to run the models: {error_message(exc)}")
    worst = 0.0
    for n in names:
        a, b = joined(want[n], got[n], len(data))
        if isinstance(a, list):  # no batch axis (PerRun): compared run by run
            a, b, problem = _joined_runs(a, b)
            if problem:
                return Row(name, False, f"output '{n}' {problem}")
        if a.dtype.kind == "f" and b.dtype.kind in "iu" and b.shape == a.shape[:-1]:
            a = a.argmax(-1)  # an --argmax-only output: compare the class index
        if a.shape != b.shape or a.dtype != b.dtype:
            return Row(name, False, f"output '{n}' is {b.dtype} {list(b.shape)}, "
                                    f"the original's {a.dtype} {list(a.shape)}")
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return Row(name, False, f"output '{n}' differs from the original's on {np.mean(a != b):.2%} of entries")
            continue
        scale = max(float(finite_abs(a).max()) if a.size else 0.0, 1e-6)
        err = float(abs_diff(a, b).max()) / scale if a.size else 0.0
        if not err <= tolerance:
            return Row(name, False, f"output '{n}' differs from the original's by {err:.2g} of its largest magnitude "
                                    f"(tolerance {tolerance:g}) with nothing pruned")
        worst = max(worst, err)
    unread = f"; not compared: {', '.join(skipped)} (sequences or maps)" if skipped else ""
    return Row(name, True, f"outputs equal the original's within {tolerance:g} of their largest magnitude on {len(data)} "
                           f"samples of '{data.source}' (largest {worst:.1e}){unread}")
