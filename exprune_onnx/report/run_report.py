"""The record of one `optimize` run (workflow.py): its rows and what --report writes."""

from __future__ import annotations

from .calibration_tables import calibration_json
from .latency import latency_json
from .tables import input_executed, jsonable, layer_rows, measured_total, sparse_rows


def run_rows(result, checked, calibrated) -> list[dict]:
    """One record per early-exit layer written, its prune rate measured on the check (or the
    calibration's held-out part)."""
    counts = checked.pruned if checked is not None else (calibrated.counts_holdout or None if calibrated else None)
    return layer_rows(result, counts, calibrated.stats if calibrated else None)


def run_report(result, checked, calibrated, timed, timings, original=None) -> dict:
    """What --report writes, and the Python API's ``Optimized.report``, less what the
    workflow adds after (warnings, the sizes taken for open dims, the paths); ``original``,
    the input model, for what it executes where it was rewritten before."""
    report = calibration_json(calibrated, "", "") if calibrated is not None else {}
    sparse = {s.op_node.name for s in result.sparse}
    report.update({
        "changed": result.changed,
        "dense_flops_per_sample": result.dense_flops,  # of the nodes whose shapes are known
        "uncounted_nodes": result.uncounted_nodes,
        # As the summary's "measured FLOPs": by the ops' counters on the check, null where unknown.
        "measured_flops_per_sample": measured_total(result, checked.pruned, checked.rows or checked.samples)
        if checked is not None else None,
        "input_measured_flops_per_sample": input_executed(original, result, checked) if original is not None else None,
        "layers": report.get("layers") or run_rows(result, checked, None),
        "zero_input_layers": sparse_rows(result, checked.pruned if checked is not None else None),
        "rejected": rejected_rows(result),
        "latency": latency_json(timed) if timed is not None else None,
        "check": None if checked is None else {
            "samples": checked.samples, "source": checked.source, "outputs": [d.as_json() for d in checked.outputs],
            "accuracy": checked.accuracy,  # [original, optimised] with labels, as evaluate --json has it
            # [pruned, total] outputs of each early-exit op; [read, total] inputs of each sparse conv or matmul.
            "pruned": {node: list(c) for node, c in checked.pruned.items() if node not in sparse},
            "inputs_read": {node: list(c) for node, c in checked.pruned.items() if node in sparse}},
        "seconds": dict(timings),
    })
    return jsonable(report)


def rejected_rows(result) -> list[dict]:
    """--explain's rows: each layer not rewritten (early exit or zero-input read), and why."""
    return [vars(r) for r in result.rejected + result.sparse_rejected]


def inspect_report(result, assumed: dict, notes: list[str]) -> dict:
    """What `inspect --json` writes (docs/json.md): ``inspect``'s tables as records."""
    return jsonable({
        "layers": layer_rows(result, None),
        "zero_input_candidates": [{"layer": layer, "reads": source, "pattern": list(pattern)}
                                  for layer, source, pattern in result.zero_input_candidates],
        "rejected": rejected_rows(result),
        "dense_flops_per_sample": result.dense_flops,
        "uncounted_nodes": result.uncounted_nodes,
        "assumed_input_shapes": assumed_json(assumed),
        "notes": notes,
    })


def assumed_json(assumed: dict) -> dict | None:
    """The sizes taken for open dims without data, as the JSON files give them (null: none)."""
    return {name: list(dims) for name, dims in assumed.items()} or None
