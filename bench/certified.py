"""The benchmark under the guarantee: each budget searched again at confidence 0.9 (certify.py).

The certified search runs on the model's certification file when its build wrote one
(bench/models.py, ``certify``: 10,000 Fashion-MNIST training images for the Fashion
models), else on its calibration file; half of it is the testing part. Where that part
is smaller than the budget needs (risk.samples_needed), the row says so: the model
written is then the original, or the least aggressive rung certified. The written model
is scored on the test split like the uncertified one (bench/run.py), and the tables put
both savings beside the paper's.
"""

from __future__ import annotations

from exprune_onnx.config import Options
from exprune_onnx.io.data import Dataset, load_dataset
from exprune_onnx.measure.compare import compare
from exprune_onnx.measure.counters import flops_saved
from exprune_onnx.report.certificate import certificate_json
from exprune_onnx.tuning.search import search

from .models import BenchModel

CONFIDENCE = 0.9


def certified_data(m: BenchModel, model, calib: Dataset) -> Dataset:
    return load_dataset(m.certify, model) if m.certify is not None and m.certify.exists() else calib


def certified_row(m: BenchModel, model, data: Dataset, test: Dataset, budget: float) -> dict:
    """The certified search at ``budget`` and its written model on the test split."""
    outcome = search(model, Options(confidence=CONFIDENCE), data, max_drop=budget, seed=0)
    cert = outcome.certificate
    row = {"confidence": CONFIDENCE, "data": data.source, "samples": len(data), "search_seconds": outcome.seconds,
           "passes": outcome.passes, "certificate": certificate_json(cert), "saved": 0.0, "test_drop": 0.0}
    if outcome.result.changed:
        checked = compare(model, outcome.result.model, test)
        row["saved"] = flops_saved(outcome.result.model, checked.pruned) / checked.samples / outcome.result.dense_flops
        if m.sparse:  # as the uncertified row: zero weights count as skipped in both models
            from .run import sparse_flops

            before = sparse_flops(model)
            row["sparse_saved"] = (before - sparse_flops(outcome.result.model, checked.pruned, checked.samples)) / before
        if checked.accuracy:
            row["test_drop"] = checked.accuracy[0] - checked.accuracy[1]
    return row


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def certified_section(results: dict) -> list[str]:
    """Certified (confidence 0.9) and uncertified FLOPs saved on the test split, beside the paper's."""
    rows = [(m, b) for m in results["models"] for b in m["budgets"] if "certified" in b]
    if not rows:
        return []
    out = ["", "## Under the guarantee (`--confidence 0.9`)", "",
           "Certified: the budget holds on data like the calibration data with probability >= 0.9 "
           "(docs/calibration.md). Uncertified: the point estimate of the tables above (confidence 0). "
           "FLOPs saved are measured on the test split; \"needed\" is the fewest testing samples that could "
           "certify the budget at all (no loss at all in them). For a magnitude-pruned model both columns count "
           "zero weights as skipped in both models, as the headline does. Where a model's calibration file is its "
           "own training data, its test split is not data like it, and the promise does not cover it "
           "(docs/calibration.md, \"What the promise needs\").", "",
           "| model | budget | FLOPs saved, certified | uncertified | paper | test drop, certified (points) "
           "| testing samples (needed) | losses | certified bound |",
           "|---|---|---|---|---|---|---|---|---|"]
    for m, b in rows:
        c = b["certified"]
        cert = c["certificate"]
        paper = m["paper"][m["budgets"].index(b)]
        enough = "" if cert["enough_samples"] else ", **too few**"
        certified, uncertified = c.get("sparse_saved", c["saved"]), b.get("sparse_saved", b.get("saved"))
        bound = "original written" if cert["certified_rung"] is None else pct(cert["certified_bound"])
        out.append(f"| {m['name']} | {100 * b['budget']:g} pt | {pct(certified)} | {pct(uncertified)} | {paper} "
                   f"| {-100 * c['test_drop'] + 0.0:+.2f} | {cert['testing_samples']} ({cert['samples_needed']}{enough}) "
                   f"| {_losses(cert['observed_losses'])} | {bound} |")
    return out


def _losses(value) -> str:
    return "-" if value is None else f"{value:.4g}"  # None: no rung certified, the original written
