"""A kept early exit against the same layer reading its input's zeros (tuning/exact_read.py),
decided by scripted clocks: time_pair answers from a table of gains (conftest.scripted_clock)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from rich.console import Console
from sparse_conv_models import chain3

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.cli import main
from exprune_onnx.io.data import random_dataset
from exprune_onnx.report.latency import latency_json, latency_table
from exprune_onnx.tuning import objective

MARGIN = objective.MARGIN


def _choose(**options):
    """chain3: r0 (plain ReLU) -> c1 -> ReLU -> c2. c1 is the early-exit layer; as one, c2
    reads its output sparsely untimed."""
    model = chain3(np.random.default_rng(14))
    opts = exprune_onnx.Options(threshold=0.0, min_units=8, **options)
    result = exprune_onnx.optimize_model(model, opts)
    assert [rw.candidate.layer for rw in result.rewritten] == ["c1"]
    return model, objective.choose(model, opts, result, random_dataset(model, 8, 0))


def _ops(model: onnx.ModelProto) -> list[tuple[str, str]]:
    return [(n.op_type, n.name) for n in model.graph.node if n.domain == ops.DOMAIN]


def _table(choice) -> str:
    console = Console(width=300, record=True)
    console.print(latency_table(choice))
    return console.export_text()


@pytest.mark.parametrize("exact_gain", [5 * MARGIN, 4.5 * MARGIN, 8 * MARGIN], ids=["as_fast", "within", "faster"])
def test_an_exact_read_as_fast_as_the_early_exit_replaces_it(scripted_clock, exact_gain):
    """The early exit saves 5% of the model's time; reading c1's zero inputs saves as much,
    half a margin less (the exact one still wins) or more."""
    calls = scripted_clock({"c1": 5 * MARGIN, "zero:c1": exact_gain})
    model, choice = _choose()
    # c2 reads c1's ReLU in the exact model too: the pair differs in c1 alone.
    assert [(_ops(a), _ops(b)) for a, b in calls[1:2]] == [
        ([(ops.SPARSE_CONV, "c1_sparse"), (ops.SPARSE_CONV, "c2_sparse")],
         [(ops.CONV_RELU, "c1_exprune"), (ops.SPARSE_CONV, "c2_sparse")])]
    # c2 then reads a plain ReLU, and saves nothing doing so: timed on its own (step 3), it is dense.
    assert _ops(choice.result.model) == [(ops.SPARSE_CONV, "c1_sparse")]
    assert [(t.layer, t.kind, t.kept, t.versus_early_exit) for t in choice.layers] == [
        ("c1", objective.EARLY_EXIT, False, False), ("c1", objective.ZERO_INPUTS, True, True),
        ("c2", objective.ZERO_INPUTS, False, False)]
    assert choice.kept("c1") is False and choice.kept("c1", objective.ZERO_INPUTS) is True
    reason = choice.options.setting("c1").skip_reason
    assert reason.startswith("objective latency: it reads its input's zeros instead (exact)"), reason
    text = _table(choice)
    assert "dropped: read exactly instead (next row)" in text and "zero inputs vs early exit" in text
    assert ("exact, and faster" if exact_gain > 5 * MARGIN else "exact, and within 1% of its time") in text
    onnx.checker.check_model(choice.result.model)
    rows = latency_json(choice)["layers"]
    assert [r["versus_early_exit"] for r in rows] == [False, True, False]
    json.dumps(rows)


def test_a_consumer_of_the_replaced_early_exit_is_kept_on_its_own_gain(scripted_clock):
    scripted_clock({"c1": 5 * MARGIN, "zero:c1": 5 * MARGIN, "zero:c2": 3 * MARGIN})
    _, choice = _choose()
    assert _ops(choice.result.model) == [(ops.SPARSE_CONV, "c1_sparse"), (ops.SPARSE_CONV, "c2_sparse")]
    assert choice.kept("c2", objective.ZERO_INPUTS) is True


def test_an_early_exit_faster_by_over_the_margin_stays(scripted_clock):
    calls = scripted_clock({"c1": 5 * MARGIN, "zero:c1": 3.5 * MARGIN})
    _, choice = _choose()
    assert _ops(choice.result.model) == [(ops.CONV_RELU, "c1_exprune"), (ops.SPARSE_CONV, "c2_sparse")]
    assert [(t.kind, t.kept) for t in choice.layers] == [(objective.EARLY_EXIT, True), (objective.ZERO_INPUTS, False)]
    assert len(calls) == 3
    assert "dropped: the early exit was faster by over 1%" in _table(choice)
    assert choice.read_exactly("c1") is None


def test_an_early_exit_not_kept_is_not_compared(scripted_clock):
    """Dropped as an early exit, c1 is a plain-ReLU consumer like any other (step 3)."""
    calls = scripted_clock({"c1": -MARGIN, "zero:c1": 5 * MARGIN})
    _, choice = _choose()
    assert not any(t.versus_early_exit for t in choice.layers)
    assert _ops(choice.result.model) == [(ops.SPARSE_CONV, "c1_sparse")]
    assert choice.kept("c1", objective.ZERO_INPUTS) is True and len(calls) >= 2


@pytest.mark.parametrize("options", [{"sparse_relu": "off"}, {"sparse_input": False}], ids=["relu_off", "no_sparse"])
def test_no_exact_read_is_timed_where_the_options_forbid_it(scripted_clock, options):
    calls = scripted_clock({"c1": 5 * MARGIN, "zero:c1": 10 * MARGIN})
    _, choice = _choose(**options)
    assert not any(t.versus_early_exit for t in choice.layers)
    assert any(n.op_type == ops.CONV_RELU for n in choice.result.model.graph.node)
    assert len(calls) == 2


def test_a_layer_that_cannot_read_its_input_sparsely_keeps_its_early_exit(scripted_clock):
    """c1 reads a Sigmoid, not a ReLU: it has no zeros to read, so nothing is timed against its early exit."""
    calls = scripted_clock({"c1": 5 * MARGIN, "zero:c1": 10 * MARGIN})
    model = chain3(np.random.default_rng(14))
    relu = next(n for n in model.graph.node if n.op_type == "Relu" and n.output[0] == "r0")
    relu.op_type = "Sigmoid"  # c1 now reads a Sigmoid: no zeros to skip
    opts = exprune_onnx.Options(threshold=0.0, min_units=8)
    result = exprune_onnx.optimize_model(model, opts)
    assert [rw.candidate.layer for rw in result.rewritten] == ["c1"]
    choice = objective.choose(model, opts, result, random_dataset(model, 8, 0))
    assert not any(t.versus_early_exit for t in choice.layers)
    assert _ops(choice.result.model)[0] == (ops.CONV_RELU, "c1_exprune")
    assert len(calls) == 2


def test_the_result_slower_than_the_original_reverts_the_exact_read_too(scripted_clock, monkeypatch):
    scripted_clock({"c1": 5 * MARGIN, "zero:c1": 5 * MARGIN})
    scripted = objective.time_pair

    def original_wins(a, b, *args, **kwargs):
        # Only the last pair times a model without our ops first: the original, against the result.
        return (0.5, 1.0) if not any(n.domain for n in a.graph.node) else scripted(a, b, *args, **kwargs)

    monkeypatch.setattr(objective, "time_pair", original_wins)
    model, choice = _choose()
    assert choice.reverted_all and not choice.result.changed
    assert choice.kept("c1", objective.ZERO_INPUTS) is False
    assert choice.options.setting("c1").skip_reason.endswith("not faster than the original with the layers left")
    text = _table(choice)
    assert "dropped: read exactly instead (next row)" in text  # the early exit's row, then the read's:
    assert "dropped: the rest was not faster than the original" in text


def test_cli_report_names_the_exact_read(scripted_clock, tmp_path):
    """The plain command under a threshold: the report's table and JSON, and --explain's reason."""
    scripted_clock({"c1": 5 * MARGIN, "zero:c1": 5 * MARGIN})
    src, out, report = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "r.json"
    onnx.save(chain3(np.random.default_rng(14)), src)
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--threshold", "0", "--min-units", "8",
                                  "--no-check", "--explain", "--report", str(report)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "kept instead of the early exit" in r.output and "reads its input's zeros instead (exact)" in r.output
    rows = json.loads(report.read_text())["latency"]["layers"]
    assert [(row["rewrite"], row["kept"], row["versus_early_exit"]) for row in rows][:2] == [
        ("early exit", False, False), ("zero inputs", True, True)]
    assert [n.op_type for n in onnx.load(out).graph.node if n.domain] == [ops.SPARSE_CONV]


def test_calibration_writes_the_exact_read_in_place_of_the_early_exit(scripted_clock, tmp_path, monkeypatch):
    """Under --max-drop the search's early exit on conv2 is replaced by its exact read, which
    the written model has in place of the early exit, and the report says so."""
    from exprune_onnx.tuning import search as search_module

    # No faster than its exact read even at reach, conv2 would be left out first (test_reach.py).
    monkeypatch.setattr(search_module, "unpaying", lambda *args: set())
    models = Path(__file__).resolve().parent.parent / "models"
    with np.load(models / "fashion_test_slice.npz") as data:
        np.savez(tmp_path / "d.npz", input=data["input"][:200], labels=data["labels"][:200])
    scripted_clock({"conv2/conv/Conv": 5 * MARGIN, "zero:conv2/conv/Conv": 5 * MARGIN, "fc1/Gemm": -0.1,
                    "conv3/conv/Conv": -0.1, "block/conv1/Conv": -0.1, "block/conv2/Conv": -0.1})
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["optimize", str(models / "fashion_cnn.onnx"), "-o", str(out), "--calibration",
                                  str(tmp_path / "d.npz"), "--max-drop", "0.05", "--report", str(report)],
                           env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    rows = json.loads(report.read_text())["latency"]["layers"]
    conv2 = [(row["rewrite"], row["kept"]) for row in rows if row["layer"] == "/conv2/conv/Conv"]
    assert conv2[:2] == [("early exit", False), ("zero inputs", True)]
    written = [(n.op_type, n.name) for n in onnx.load(out).graph.node if n.domain]
    assert (ops.SPARSE_CONV, "conv2/conv/Conv_sparse") in written
    assert not any(op == ops.CONV_RELU for op, _ in written)
    assert "kept instead of the early exit" in r.output


def test_later_early_exits_are_timed_with_the_exact_reads_kept(scripted_clock):
    """h1's exact read replaces its early exit; h2's pair then has h1 reading its zeros on
    both sides, as kept so far (it had h1 dense: a trial's rows timed the original as
    "without" right after a kept exact read)."""
    from helpers import latency_choice, three_layer_mlp

    calls = scripted_clock({"h1": 5 * MARGIN, "zero:h1": 5 * MARGIN, "h2": 5 * MARGIN})
    choice = latency_choice(three_layer_mlp(), exprune_onnx.Options(threshold=0.0))
    assert [(t.layer, t.kind, t.kept) for t in choice.layers][:3] == [
        ("h1", objective.EARLY_EXIT, False), ("h1", objective.ZERO_INPUTS, True), ("h2", objective.EARLY_EXIT, True)]
    with_h2, without_h2 = calls[2]
    assert all((ops.SPARSE_MATMUL, "h1_sparse") in _ops(m) for m in (with_h2, without_h2))
    assert (ops.DENSE_RELU, "h2_exprune") in _ops(with_h2) and (ops.DENSE_RELU, "h2_exprune") not in _ops(without_h2)
