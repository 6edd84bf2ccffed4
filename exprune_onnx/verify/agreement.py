"""The agreement check: the model as shipped agrees with the original on the data."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import onnx

from .. import ops
from ..errors import DataError, error_message
from ..io.data import Dataset, naming, quoted_source
from ..progress import quiet
from ..runtime import TILES_NOTE, cpu_has_tiles
from ..tuning.metrics import LABELLED, budget_words, points
from .base import Row

# The budget a calibrated model was written for (workflow.run), which verify then checks
# in place of the agreement bar: an accuracy budget allows changed answers that cancel.
BUDGET_KEY = "exprune_onnx.budget"


def stamp_budget(model: onnx.ModelProto, outcome) -> None:
    """The budget of a calibration ``outcome`` (tuning/search.Outcome), as it was promised: a
    certificate bounds right answers lost where the metric is accuracy (an accuracy drop
    is at most that), at its confidence; without one the held-out figure is an estimate
    (confidence 0). A map's class axis (labels [N, H, W] for [N, C, H, W] scores) is kept,
    so that verify reads its answers per position without labels too."""
    cert = getattr(outcome, "certificate", None)
    metric = "lost" if cert is not None and outcome.metric == "accuracy" else outcome.metric
    budget = {"metric": metric, "max_drop": outcome.max_drop, "output": outcome.output,
              "confidence": cert.confidence if cert is not None else 0.0}
    if getattr(outcome, "class_axis", None) is not None:
        budget["class_axis"] = int(outcome.class_axis)
    entry = model.metadata_props.add()
    entry.key = BUDGET_KEY
    entry.value = json.dumps(budget)


def read_budget(model: onnx.ModelProto) -> dict | None:
    """The budget stamped on ``model``, or None (none, or not one this version reads)."""
    for p in model.metadata_props:
        if p.key == BUDGET_KEY:
            try:
                budget = json.loads(p.value)
                return budget if isinstance(budget.get("max_drop"), (int, float)) and budget.get("metric") else None
            except (ValueError, AttributeError):
                return None
    return None


def agreement_row(original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, min_agreement: float,
                  batch: int = 64, log=quiet, budget: dict | None = None, bar_asked: bool = False) -> Row:
    """``budget`` (read_budget): judge the budget's metric on the data instead of top-1
    agreement, where the data allows (labels for accuracy or lost), unless ``bar_asked``
    (--min-agreement typed); either way its class axis reads a map's answers per position."""
    from ..measure.compare import compare

    name = "agreement"
    axis = (budget or {}).get("class_axis")
    class_axes = {budget["output"]: int(axis)} if isinstance(axis, int) and budget.get("output") else None
    budget = None if bar_asked else budget
    # A drop of 100 points or more holds whatever the model answers (--max-drop 1 typed for one
    # point, a trial's model passed on it): the agreement bar judges, and the row says why.
    vacuous = ""  # the budget that bounds nothing, as a share
    if budget is not None and budget["metric"] != "relerr" and float(budget["max_drop"]) >= 1:
        vacuous, budget = f"{100 * float(budget['max_drop']):g}%", None
    try:
        # Labels that are no class indices are the data's fault: exit 6, as evaluate says,
        # naming the file that held them.
        with naming(data, "--data") if data.labels is not None else contextlib.nullcontext():
            checked = compare(original, optimized, data, batch=batch, class_axes=class_axes, log=log)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. outputs of another shape: the models do not correspond
        return Row(name, False, error_message(exc))
    judged = budget_verdict(budget, checked)
    parts, ok = ([judged[1]], judged[0]) if judged is not None else ([], True)
    # A budget the data cannot measure is no reason to hold the model to another bar it was
    # never promised: a model calibrated to lose 1 point may change more answers than that.
    unmeasured = _unmeasured(budget) if budget is not None and judged is None else ""
    measured = judged[2] if judged is not None else None  # the value output a relerr budget judged
    unjudged = []
    for d in checked.outputs:
        # (A difference of class indices means nothing: only their agreement is given.)
        text = f"'{d.name}'" if d.index else f"'{d.name}' max abs diff {d.max_abs:.3g}"
        if d.runs is not None:  # no batch axis: a changed detection count is a change, not a mismatch
            text = f"'{d.name}' another shape on {d.runs[0]} of {d.runs[1]} runs"
        elif d.top1_agreement is None and not d.index:
            text += f" ({d.max_rel:.3g} of its largest |value|, mean relative error {d.mean_rel or 0:.3g})"
            if d.name != measured and d.max_abs > 0:
                unjudged.append(d.name)
        elif d.top1_agreement is not None:
            text += f"{' ' if d.index else ', '}{d.answer_kind} agreement {d.top1_agreement:.2%}"
            if data.source == "random" and d.classes == 1 and checked.samples > 1:
                # (A random-weight or saturated model: its agreement then turns on one close call.)
                text += (f" (the original gives all {checked.samples} random inputs one class, so agreement on them "
                         "says little: give --data)")
            if judged is None and not unmeasured and d.top1_agreement < min_agreement:
                ok = False
                text += f" < {min_agreement:.2%}"
        parts.append(text)
    if checked.accuracy is not None:
        parts.append(f"accuracy {checked.accuracy[0]:.2%} -> {checked.accuracy[1]:.2%}")
    if vacuous:
        parts.append(f"the budget it was calibrated to, a drop of {vacuous}, bounds nothing: held to "
                     f"{min_agreement:.2%} agreement instead (--min-agreement sets it)")
    kinds = {n.name: n.op_type for n in optimized.graph.node}
    sparse = (ops.SPARSE_CONV, ops.SPARSE_MATMUL)
    early = [c for node, c in checked.pruned.items() if kinds.get(node) not in sparse]
    read = [c for node, c in checked.pruned.items() if kinds.get(node) in sparse]
    if sum(t for _p, t in early):
        parts.append(f"{sum(p for p, _t in early) / sum(t for _p, t in early):.1%} of outputs pruned")
    if sum(t for _r, t in read):  # a sparse op counts the inputs it read, not outputs it pruned
        parts.append(f"{1 - sum(r for r, _t in read) / sum(t for _r, t in read):.1%} of sparse inputs skipped"
                     + (f" ({TILES_NOTE})" if cpu_has_tiles() else ""))
    answered = [d for d in checked.outputs if d.top1_agreement is not None and d.runs is None]
    if bar_asked and not answered and not unmeasured:
        unmeasured = ("--min-agreement judges answers, and no output gives any on this data (values, compared "
                      "above): a map of class scores [N, C, H, W] gives one per position with labels [N, H, W]")
    return Row(name, ok, "; ".join(parts) + f" on {checked.samples} samples of {quoted_source(checked.source)}", tuple(unjudged),
               unmeasured)


def _unmeasured(budget: dict) -> str:
    """Why the data cannot judge ``budget`` (read_budget), and what would."""
    metric, confidence = budget["metric"], float(budget.get("confidence") or 0)
    promise = f"at confidence {confidence:g}" if confidence else "an estimate"
    what = (f"the model was calibrated to a budget, "
            f"{budget_words(metric, float(budget['max_drop']), confidence > 0)} ({promise})")
    if metric in LABELLED:
        return (f"{what}, which needs labels: give --data with labels, of the kind the model was calibrated on, "
                "or --min-agreement for a bar of your own")
    return f"{what}, and the data has no output it scores: give --data like the calibration data, or --min-agreement"


def budget_verdict(budget: dict | None, checked) -> tuple[bool, str, str | None] | None:
    """(within the budget, what was measured against it, the value output a relerr budget
    measured), or None when the data cannot tell: no budget, labels missing for a labelled
    metric, or a metric the check does not measure."""
    if budget is None:
        return None
    metric, max_drop, measured = budget["metric"], float(budget["max_drop"]), None
    if metric in LABELLED and checked.accuracy is None:
        return None
    if metric == "accuracy":
        drop, what = checked.accuracy[0] - checked.accuracy[1], "accuracy drop"
    elif metric == "lost":
        drop, what = checked.lost, "right answers lost"
    elif metric == "agreement":
        scored = {d.name: d.top1_agreement for d in checked.outputs if d.top1_agreement is not None and d.runs is None}
        if not scored:
            return None
        drop, what = 1 - scored.get(budget.get("output"), min(scored.values())), "answers changed"
    elif metric == "relerr":
        values = {d.name: d for d in checked.outputs if d.mean_rel is not None and d.runs is None}
        d = values.get(budget.get("output")) or next(iter(values.values()), None)
        if d is None:
            return None
        measured = d.name
        if float(budget.get("confidence") or 0) > 0:  # certified: the share of samples over the budget (certify.py)
            drop = float(np.mean(d.sample_rel > max_drop)) if d.sample_rel is not None and d.sample_rel.size else 0.0
            what = f"'{d.name}': samples whose relative error is over {max_drop:g}"
        else:
            drop, what = d.mean_rel, f"'{d.name}': mean relative error"
    else:
        return None
    # Differences of accuracies carry float noise far below one sample.
    ok = drop <= max_drop + 1e-9
    confidence = float(budget.get("confidence") or 0)
    promise = f"at confidence {confidence:g}" if confidence else "an estimate on its held-out part"
    unit = " points" if metric == "accuracy" else "%"  # a difference of accuracies, as optimize says it
    bound = points(max_drop) if metric == "accuracy" else f"{100 * max_drop:g}%"
    return ok, (f"{what} {100 * drop:.2f}{unit} {'<=' if ok else '>'} {bound}, the budget it was calibrated "
                f"to ({promise}; measured on these data, a point estimate)"), measured
