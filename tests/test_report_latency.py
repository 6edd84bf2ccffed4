"""report/latency.py: the latency objective's table, its decisions in words."""

from rich.console import Console

from exprune_onnx.config import Options
from exprune_onnx.report.latency import latency_table
from exprune_onnx.tuning.objective import EARLY_EXIT, ZERO_INPUTS, LatencyChoice, LayerTiming


def _rows(*timings) -> str:
    from types import SimpleNamespace

    choice = LatencyChoice(Options(), SimpleNamespace(changed=True), 1, 1, "test", layers=list(timings))
    console = Console(width=300, record=True)
    console.print(latency_table(choice))
    return console.export_text()


def test_a_layer_faster_by_under_the_margin_is_not_called_slower():
    """A trial read 'dropped: not faster' beside '+0.8%'."""
    text = _rows(LayerTiming("a", 0.992, 1.0, False, EARLY_EXIT), LayerTiming("b", 1.05, 1.0, False, EARLY_EXIT),
                 LayerTiming("c", 0.9, 1.0, True, EARLY_EXIT))
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│ ")}
    assert "+0.8%" in rows["a"] and "dropped: under 1% faster" in rows["a"]
    assert "dropped: not faster" in rows["b"] and "kept" in rows["c"]


def test_the_written_model_timed_far_apart_in_its_row_and_at_the_end_is_a_busy_machine():
    """A trial's written model took 0.247 ms as the last row's 'without' and 0.386 ms in the
    final pair against the original, with no warning."""
    from types import SimpleNamespace

    from exprune_onnx.report.latency import same_model_times
    from exprune_onnx.tuning.objective import ZERO_INPUTS

    rows = [LayerTiming("conv4", 0.25, 0.31, True, ZERO_INPUTS), LayerTiming("fc1", 0.30, 0.247, False, ZERO_INPUTS)]
    busy = LatencyChoice(Options(), SimpleNamespace(changed=True), 1, 1, "test", layers=rows, original_ms=0.32,
                         optimized_ms=0.386)
    assert same_model_times(busy) == (0.247, 0.386)
    quiet = LatencyChoice(Options(), SimpleNamespace(changed=True), 1, 1, "test", layers=rows, original_ms=0.32,
                          optimized_ms=0.25)
    assert same_model_times(quiet) is None


def test_a_result_under_the_margin_faster_says_why_it_is_not_kept():
    """A trial read 'the kept rewrites ran in 1.096 ms against the original's 1.103 ms' and
    asked why the faster one was not written."""
    from types import SimpleNamespace

    choice = LatencyChoice(Options(), SimpleNamespace(changed=False), 1, 1, "test",
                           layers=[LayerTiming("a", 0.9, 1.0, True, EARLY_EXIT)], original_ms=1.103,
                           optimized_ms=1.103, attempt_ms=1.096, reverted_all=True)
    assert latency_table(choice).caption == ("left unchanged: the kept rewrites ran in 1.096 ms against the "
                                             "original's 1.103 ms, not the 1% faster the result must be")


def test_a_reverted_result_timed_far_from_its_row_is_a_busy_machine():
    """A trial's run wrote the original ('not faster') with no warning, and a rerun of the
    same command kept its rewrites at 0.81: the attempt's time in the last step is the last
    row's model's, as the written model's is when it is kept."""
    from types import SimpleNamespace

    from exprune_onnx.report.latency import same_model_times

    rows = [LayerTiming("conv4", 0.25, 0.31, True, ZERO_INPUTS)]
    reverted = LatencyChoice(Options(), SimpleNamespace(changed=False), 1, 1, "test", layers=rows,
                             original_ms=0.31, optimized_ms=0.31, attempt_ms=0.40, reverted_all=True)
    assert same_model_times(reverted) == (0.25, 0.40)
