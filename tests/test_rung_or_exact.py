"""tuning/rung_or_exact.py: a certified rung's early exits against the exact model, under
the latency objective (the clock scripted, conftest.scripted_clock)."""

import math

import pytest
from helpers import three_layer_mlp
from rich.console import Console

from exprune_onnx.config import Options
from exprune_onnx.io.data import random_dataset
from exprune_onnx.report.certificate import certificate_json, certificate_rows
from exprune_onnx.report.latency import latency_table
from exprune_onnx.tuning import certify
from exprune_onnx.tuning.risk import Step
from exprune_onnx.tuning.search import search


def _gentlest_rung(monkeypatch, gains: dict, later: dict):
    """The most conservative rung passes (so the rung is timed again), with ``later`` gains then."""
    monkeypatch.setattr(certify, "fixed_sequence", lambda count, losses_of, test: (0, [Step(losses_of(0, math.inf),
                                                                                              0.0, True)]))
    first_retime = certify._retime

    def retime(*args, **kwargs):
        gains.update(later)
        return first_retime(*args, **kwargs)

    monkeypatch.setattr(certify, "_retime", retime)


def test_a_rung_faster_than_the_exact_model_is_written(scripted_clock, monkeypatch):
    model = three_layer_mlp()
    gains = {"h1": 0.2, "h2": 0.1, "zero:out": 0.3}
    calls = scripted_clock(gains)
    _gentlest_rung(monkeypatch, gains, {})
    out = search(model, Options(confidence=0.9), random_dataset(model, 400, 0), metric="relerr", max_drop=0.05,
                 seed=0, latency=(1, 1))
    assert not out.certificate.exact_written and not out.latency.over_rung
    assert {n.name for n in out.result.model.graph.node if n.domain} == {"h1_exprune", "h2_exprune", "out_sparse"}
    # The last pair timed: the rung (0.4 ms) against the exact model (out reading h2's plain ReLU, 0.7 ms).
    last = calls[-1]
    assert {n.name for n in last[1].graph.node if n.domain} == {"out_sparse"}
    notes = {t.layer: t.note for t in out.latency.layers if t.kind == "early exit"}
    assert notes == dict.fromkeys(("h1", "h2"),
                                  "the certified rung's: 0.400 ms with its early exits, 0.700 ms with exact reads only")
    assert "rung 1 of" in dict(certificate_rows(out.certificate))["certified"]
    assert "exact model" not in dict(certificate_rows(out.certificate))["certified"]


def test_a_rung_slower_than_the_exact_model_gives_way_to_it(scripted_clock, monkeypatch):
    """A trial's TCN: the rung written kept early exits that, gentler than the search's
    allocation, no longer paid; the exact model (zero-input reads only) was faster and lost
    nothing, and the rung was written all the same. Now the two are timed side by side."""
    model = three_layer_mlp()
    gains = {"h1": 0.2, "h2": 0.1, "zero:out": 0.3}
    scripted_clock(gains)
    _gentlest_rung(monkeypatch, gains, {"h1": -0.05, "h2": -0.05})  # the gentler rung's early exits cost time
    out = search(model, Options(confidence=0.9), random_dataset(model, 400, 0), metric="relerr", max_drop=0.05,
                 seed=0, latency=(1, 1))
    assert out.certificate.chosen == 0 and out.certificate.exact_written and out.latency.over_rung
    assert {n.name for n in out.result.model.graph.node if n.domain} == {"out_sparse"}
    assert "the exact model timed faster than it and is written instead" in dict(certificate_rows(out.certificate))[
        "certified"]
    rows = [t for t in out.latency.layers if t.kind == "early exit"]
    assert {t.layer for t in rows} == {"h1", "h2"}
    assert all((t.with_ms, t.without_ms) == pytest.approx((0.8, 0.7)) for t in rows)
    assert "the certified rung took 0.800 ms with its early exits, the exact model 0.700 ms" in \
        out.options.layers["h1"].skip_reason
    assert certificate_json(out.certificate)["exact_written"]
    console = Console(width=300, record=True)
    console.print(latency_table(out.latency))
    text = console.export_text()
    assert text.count("dropped with the rung's other early exits: the exact model was faster") == 2, text
