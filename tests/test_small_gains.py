"""Small gains under the latency objective (exprune_onnx/tuning/small_gains.py): zero-input
rewrites that save under the margin alone are timed together, kept as a group when it
clears the margin, and timed again beside a later kept layer; decisions by scripted clock."""

import onnx
import pytest
from helpers import latency_choice, node_types, three_layer_mlp

from exprune_onnx.config import Options
from exprune_onnx.tuning import objective


def _zero_input_choice(gains, scripted_clock):
    calls = scripted_clock(gains)
    choice = latency_choice(three_layer_mlp(), Options(threshold=0.0, min_units=1000))
    return calls, choice


def _decisions(choice) -> dict:
    from rich.console import Console

    from exprune_onnx.report.latency import latency_table

    console = Console(width=400, record=True)
    console.print(latency_table(choice))
    lines = console.export_text().splitlines()
    return {t.layer: next(line for line in lines if line.startswith(f"│ {t.layer} ")) for t in choice.layers}


def test_small_zero_input_gains_are_kept_together_when_the_group_clears_the_margin(scripted_clock):
    small = 0.6 * objective.MARGIN
    calls, choice = _zero_input_choice({"zero:h1": small, "zero:h2": small}, scripted_clock)
    rows = {t.layer: (t.kept, t.group) for t in choice.layers}
    assert rows["h1"] == rows["h2"] == (True, ())
    assert {t.layer for t in choice.layers if choice.in_group(t)} == {"h1", "h2"}
    group = next(t for t in choice.layers if t.group)
    assert set(group.group) == {"h1", "h2"} and group.kept and group.layer == " + ".join(group.group)
    assert group.with_ms == pytest.approx(1.0 - 2 * small) and group.without_ms == pytest.approx(1.0)
    assert len(calls) == 5  # out, h1, h2 one by one; the two together; the result against the original
    assert node_types(choice.result.model).count("ExPruneSparseMatMul") == 2
    assert choice.options.sparse_relu_layers == {"h1", "h2"}
    decisions = _decisions(choice)
    assert "kept with the group below" in decisions["h1"] and "kept with the group below" in decisions["h2"]
    onnx.checker.check_model(choice.result.model)


def test_small_gains_whose_group_misses_the_margin_are_dropped(scripted_clock):
    small = 0.3 * objective.MARGIN
    calls, choice = _zero_input_choice({"zero:h1": small, "zero:h2": small}, scripted_clock)
    assert len(calls) == 4 and not choice.result.changed  # nothing left to time against the original
    group = next(t for t in choice.layers if t.group)
    assert not group.kept and all(not t.kept for t in choice.layers)
    assert "dropped: too small, alone or together" in _decisions(choice)["h1"]
    from exprune_onnx.report.latency import latency_json

    rows = {row["layer"]: row for row in latency_json(choice)["layers"]}
    assert rows[group.layer]["group"] == list(group.group) and not rows[group.layer]["in_group"]
    assert rows["h1"]["in_group"] and rows["h2"]["in_group"] and rows["h1"]["group"] == []


@pytest.mark.parametrize(("gains", "small", "timed", "again"), [
    ({"zero:h1": 0.6 * objective.MARGIN}, "h1", 3, False),
    # h2, timed after h1, is kept: h1 is timed again beside it, then the result
    ({"zero:h1": 0.6 * objective.MARGIN, "zero:h2": 2 * objective.MARGIN}, "h1", 5, True),
    # h1, timed before h2, is kept: nothing changed around h2 since its timing
    ({"zero:h1": 2 * objective.MARGIN, "zero:h2": 0.6 * objective.MARGIN}, "h2", 4, False),
], ids=["one_small_gain", "small_before_a_kept_one", "small_after_a_kept_one"])
def test_one_small_gain_is_not_timed_in_a_group(gains, small, timed, again, scripted_clock):
    calls, choice = _zero_input_choice(gains, scripted_clock)
    assert len(calls) == timed and not any(t.group or choice.in_group(t) for t in choice.layers)
    assert choice.kept(small, objective.ZERO_INPUTS) is False
    row = next(t for t in choice.layers if t.layer == small)
    assert row.again is again
    assert ("timed again after later layers were kept" in _decisions(choice)[small]) is again


def test_a_small_gain_timed_again_beside_a_later_kept_layer_can_clear_the_margin(scripted_clock):
    # h1 alone saves half the margin; once h2 reads sparsely too it saves one margin more
    # (as a conv between two sparse convs sheds onnxruntime's layout conversions).
    gains = {"zero:h1": 0.5 * objective.MARGIN, "zero:h2": 2 * objective.MARGIN, "zero:h1+h2": objective.MARGIN}
    calls, choice = _zero_input_choice(gains, scripted_clock)
    assert len(calls) == 5  # out, h1, h2 one by one; h1 again; the result against the original
    row = next(t for t in choice.layers if t.layer == "h1")
    assert row.kept and row.again and not row.group
    assert row.with_ms == pytest.approx(1.0 - 3.5 * objective.MARGIN)
    assert row.without_ms == pytest.approx(1.0 - 2 * objective.MARGIN)
    assert choice.options.sparse_relu_layers == {"h1", "h2"}
    assert node_types(choice.result.model).count("ExPruneSparseMatMul") == 2
    assert "kept, timed again after later layers were kept" in _decisions(choice)["h1"]
    from exprune_onnx.report.latency import latency_json

    again = {row["layer"]: row["again"] for row in latency_json(choice)["layers"]}
    assert again["h1"] is True and again["h2"] is False
    onnx.checker.check_model(choice.result.model)
