"""report/tables.py: what `optimize` says about models it cannot see into."""

from __future__ import annotations

import re

import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import conv_hw, save_model

import exprune_onnx
from exprune_onnx.cli import main


def _saved_by_onnxruntime(tmp_path, level, *args):
    model = conv_hw()
    for d, value in zip(model.graph.input[0].type.tensor_type.shape.dim, [1, 3, 12, 12]):
        d.dim_value = value  # fixed dims: --input-shape cannot help
    source = save_model(model, tmp_path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.optimized_model_filepath = str(tmp_path / "saved.onnx")
    ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
    return [" ".join(CliRunner().invoke(main, command).output.split()) for command in (
        ["optimize", str(tmp_path / "saved.onnx"), "-o", str(tmp_path / "o.onnx"), "--objective", "flops", *args],
        ["inspect", str(tmp_path / "saved.onnx")])]


def test_a_model_saved_by_onnxruntime_in_its_own_layout_is_named_as_such(tmp_path):
    for text in _saved_by_onnxruntime(tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):  # inspect said nothing
        assert "onnxruntime's own fused ops" in text and "com.microsoft.nchwc.Conv" in text, text
        assert "give it the model as exported" in text and "--input-shape" not in text


def test_a_model_saved_at_onnxruntime_s_extended_level_is_read_through_its_fused_ops(tmp_path):
    optimized, inspected = _saved_by_onnxruntime(tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                                "--threshold", "0")
    assert "wrote" in optimized and "ExPruneConvRelu 0->1" in optimized and "FusedConv 2->0" in optimized, optimized
    assert "own fused ops" not in optimized + inspected and "--input-shape" not in optimized + inspected
    assert "its fused ops (2 FusedConv) are read as the ops they fuse" in inspected, inspected


def test_a_map_that_moves_much_is_warned_of(tmp_path):
    model = conv_hw()
    del model.graph.node[-2:]  # no pooling: the output is the map [N, 32, H, W]
    model.graph.output[0].name = "d"
    model.graph.output[0].type.tensor_type.shape.Clear()
    path = save_model(model, tmp_path)
    args = ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--objective", "flops", "--input-shape",
            "x:N,3,12,12"]
    r = CliRunner().invoke(main, [*args, "--threshold", "1"])
    assert r.exit_code == 0 and "warning: output 'd' moved by up to" in r.output, r.output
    r = CliRunner().invoke(main, [*args, "--threshold", "-inf"])
    assert r.exit_code == 0 and "moved by up to" not in r.output, r.output


@pytest.mark.parametrize(("parts", "said"), [
    (("the whole calibration part",), "over budget on the whole calibration part"),
    (("the held-out part",), "over budget on the held-out part, which therefore took part in the final choice"),
])
def test_a_back_off_names_the_part_that_was_over_budget(parts, said):
    """With --holdout 0 there is no held-out part to blame: the confirmation on the whole
    calibration part (screened on a subset) is what can send the choice down a rung."""
    from types import SimpleNamespace

    from rich.console import Console

    from exprune_onnx.report.calibration_tables import calibration_table
    from exprune_onnx.tuning.metrics import Score

    outcome = SimpleNamespace(split=(3000, 0), output="y", metric="accuracy", max_drop=0.01, rule="threshold",
                              trials=[], passes=2.0, seconds=1.0, calibration=Score("accuracy", 0.9, 0.895, 0.005),
                              saved_calibration=0.1, result=SimpleNamespace(uncounted_nodes=0), holdout=None,
                              met=True, backoffs=1, backoff_parts=parts, labelled=False)
    console = Console(width=400, record=True)
    console.print(calibration_table(outcome))
    text = console.export_text()
    assert f"met after backing off 1 rung(s): the first choice was {said}" in text
    assert ("held-out" in text) == ("the held-out part" in parts)


def test_a_budget_met_without_a_certificate_says_it_is_a_point_estimate():
    """--confidence 0 printed "budget: met" on 1,000 held-out samples, and new data then
    dropped 1.1 points against a budget of 1 (a trial's ResNet): the row says what it is."""
    from types import SimpleNamespace

    from rich.console import Console

    from exprune_onnx.report.calibration_tables import calibration_table
    from exprune_onnx.tuning.metrics import Score

    score = Score("accuracy", 0.9, 0.895, 0.005)
    outcome = SimpleNamespace(split=(1000, 1000), output="y", metric="accuracy", max_drop=0.01, rule="threshold",
                              trials=[], passes=2.0, seconds=1.0, calibration=score, saved_calibration=0.1,
                              result=SimpleNamespace(uncounted_nodes=0), holdout=score, saved_holdout=0.1, met=True,
                              backoffs=0, backoff_parts=[], labelled=False)
    console = Console(width=400, record=True)
    console.print(calibration_table(outcome))
    assert "met on the 1000 held-out samples (a point estimate, not certified)" in console.export_text()


def _map_model(tmp_path, labels_shape):
    """conv_hw without its pool (the output is the map d [N, 32, H, W]), saved with 40
    samples and random labels of ``labels_shape``; the CLI arguments of a run on it."""
    import numpy as np
    import onnx

    model = conv_hw()
    del model.graph.node[-2:]
    model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("d", onnx.TensorProto.FLOAT, ["N", 32, "H", "W"]))
    path = save_model(model, tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((40, 3, 8, 8)).astype(np.float32),
             labels=rng.integers(0, 32, labels_shape))
    return ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--objective", "flops", "--min-units", "8"]


def test_labels_no_output_can_take_are_said_to_be_unused(tmp_path):
    """Labels of one class per sample for a map [N, C, H, W]: no output is class scores
    they fit, so they score nothing; the check and calibration say so."""
    common = _map_model(tmp_path, (40,))
    r = CliRunner().invoke(main, [*common, "--threshold", "0", "--check-data", str(tmp_path / "d.npz")])
    assert r.exit_code == 0, r.output
    assert "not measured: no output is class scores the labels could name" in " ".join(r.output.split())
    r = CliRunner().invoke(main, [*common, "--calibration", str(tmp_path / "d.npz"), "--max-drop", "0.05",
                                  "--confidence", "0"])
    assert r.exit_code == 0, r.output
    assert "not used: the relerr metric scores this output" in " ".join(r.output.split())
    r = CliRunner().invoke(main, [*common, "--calibration", str(tmp_path / "d.npz"), "--max-drop", "0.05",
                                  "--confidence", "0", "--metric", "relerr"])
    assert r.exit_code == 0 and "not used by the relerr metric (asked for)" in " ".join(r.output.split()), r.output


def test_segmentation_labels_score_the_map_per_position(tmp_path):
    """[N, H, W] labels for a map [N, C, H, W] put its classes on axis 1 (a segmentation
    map): the check reports top-1 agreement and accuracy per position, and calibration
    budgets accuracy."""
    common = _map_model(tmp_path, (40, 8, 8))
    r = CliRunner().invoke(main, [*common, "--threshold", "0", "--check-data", str(tmp_path / "d.npz")])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "top-1 agreement" in text and "not measured" not in text
    assert re.search(r"accuracy │ \d+\.\d+% -> \d+\.\d+%", text), text
    r = CliRunner().invoke(main, [*common, "--calibration", str(tmp_path / "d.npz"), "--max-drop", "0.05",
                                  "--confidence", "0"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "accuracy" in text and "not used" not in text and "relerr" not in text


def test_an_index_output_is_compared_per_prediction():
    """An [N, T] arg-max has a prediction per position: its agreement is not per sample."""
    from exprune_onnx.measure.compare import OutputDiff
    from exprune_onnx.report.tables import output_text

    assert output_text(OutputDiff("ids", 1.0, 0.0, 0.9917, index=True)) == "same value on 99.17% of predictions"


def test_an_accuracy_change_is_the_difference_of_the_figures_shown():
    """86.83% -> 86.83% read "(-0.01 points)" in an audit: the change is taken after rounding."""
    from types import SimpleNamespace

    from exprune_onnx.report.tables import accuracy_text

    def text(a, b):
        return accuracy_text(SimpleNamespace(accuracy=(a, b), labelled=True))

    assert text(0.868344, 0.868256) == "86.83% -> 86.83% (+0.00 points)"
    assert text(0.8683, 0.8642) == "86.83% -> 86.42% (-0.41 points)"
    assert text(0.5, 0.5125) == "50.00% -> 51.25% (+1.25 points)"


def test_shares_and_counts_read_as_a_person_writes_them():
    from exprune_onnx.report.tables import percent, samples_text

    assert [percent(-0.0001), percent(0.0), percent(0.133), percent(-0.218)] == ["0.0%", "0.0%", "13.3%", "-21.8%"]
    assert [samples_text(1), samples_text(0), samples_text(512)] == ["1 sample", "0 samples", "512 samples"]


def test_per_output_thresholds_show_the_median_of_the_finite_ones_and_how_many_never_prune():
    """Outputs left at -inf (never pruned) are counted apart, and the median is that of the
    others, as the layer's threshold in --report is (calibration's median of the live ones;
    the table's median of them all disagreed with it, a trial found)."""
    import math

    from helpers import three_layer_mlp
    from rich.console import Console

    import exprune_onnx
    from exprune_onnx.config import LayerSetting, Options
    from exprune_onnx.report.tables import layers_table

    ths = (-math.inf,) * 100 + (0.5,) * 60  # h2 has 160 outputs
    options = Options(threshold=0.0, sparse_relu="off", layers={"h2": LayerSetting(0.0, thresholds=ths)})
    result = exprune_onnx.optimize_model(three_layer_mlp(), options)
    console = Console(record=True, width=300)
    console.print(layers_table(result, None, "t"))
    assert "per output, median 0.5, 100 at -inf" in console.export_text()


def test_a_model_with_nothing_to_count_says_so():
    """Not '0.00 MFLOPs per sample': a quantized model's QLinearConv is no float product."""
    from helpers import make_model
    from onnx import TensorProto, helper

    from exprune_onnx.report.units import dense_flops_text

    model = make_model([helper.make_node("Identity", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    result = exprune_onnx.inspect_model(model)
    assert result.dense_flops == 0 and not result.uncounted_nodes
    assert dense_flops_text(result) == "none counted: the model has no float Conv, Gemm or MatMul"


@pytest.mark.parametrize(("confidence", "said"), [
    ("0.9", "relative error over 0.05 on at most 5% of samples on output 'probabilities'"),
    ("0", "mean relative error <= 0.05 on output 'probabilities'"),
])
def test_a_relative_error_budget_says_what_it_bounds(confidence, said):
    """Certified, --max-drop bounds both a sample's relative error and the share of samples
    over it (docs/calibration.md); the budget row said "relerr drop <= 0.05" either way."""
    from pathlib import Path

    models = Path(__file__).resolve().parents[1] / "models"
    with CliRunner().isolated_filesystem():
        r = CliRunner().invoke(main, ["optimize", str(models / "digits_mlp.onnx"), "-o", "o.onnx", "--calibration",
                                      str(models / "data" / "digits_mlp_calib.npz"), "--max-drop", "0.05", "--metric",
                                      "relerr", "--score-output", "probabilities", "--objective", "flops",
                                      "--confidence", confidence])
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and f"budget │ {said}, rule threshold" in text, r.output


def test_json_drops_and_sources_read_as_the_tables_do():
    """0.871 - 0.861 came out as 0.010000000000000009 beside a budget of 0.01 called met, and
    the latency JSON's source kept the table's quotes (a trial's report)."""
    from exprune_onnx.report.calibration_tables import _score_json
    from exprune_onnx.report.latency import latency_json
    from exprune_onnx.tuning.metrics import Score
    from exprune_onnx.tuning.objective import LatencyChoice

    score = Score("accuracy", 0.871, 0.861, 0.871 - 0.861)
    assert score.drop > 0.01 and _score_json(score, 0.25) == {"metric": "accuracy", "original": 0.871,
                                                              "optimized": 0.861, "drop": 0.01,
                                                              "answer_kind": "top-1", "over": None, "flops_saved": 0.25}
    assert latency_json(LatencyChoice(None, None, 1, 1, "'calib.npz'"))["source"] == "calib.npz"
    random = "seeded random inputs: prune rates on real data differ, give --check-data"
    assert latency_json(LatencyChoice(None, None, 1, 1, random))["source"] == random


def test_measured_savings_say_how_much_is_exact_zero_input_skipping():
    """A lossless decoder step read '20.4% saved' as pruning (a trial's): the skipped zero
    inputs are named, apart from pruning, wherever they show at one decimal."""
    from exprune_onnx.report.tables import saved_text

    assert saved_text(0.133, 0.0003) == "13.3% saved"  # a small layer's skipped inputs: nothing to show
    assert saved_text(0.204, 0.204) == "20.4% saved, all by exact zero-input skipping"
    assert saved_text(0.26, 0.2) == "26.0% saved: 20.0% by exact zero-input skipping, 6.0% by pruning"
    # Early exits that cost more than they prune are no negative pruning (a trial's "0.0% by
    # pruning" at -inf, where they added 0.04%).
    assert saved_text(0.010, 0.013) == "1.0% saved: 1.3% by exact zero-input skipping, less 0.3% the early exits add"
    assert saved_text(0.0955, 0.0959) == (
        "9.6% saved: 9.6% by exact zero-input skipping, less under 0.05% the early exits add")
    assert saved_text(0.0960, 0.0959) == "9.6% saved: 9.6% by exact zero-input skipping, under 0.05% by pruning"


def test_the_fused_ops_warned_of_are_the_ones_the_rule_reports():
    """The warning had its own list, without NhwcFusedConv, which the runtime_fused rule reports."""
    from onnx import TensorProto, helper

    from exprune_onnx.report.tables import runtime_fused

    nodes = [helper.make_node("NhwcFusedConv", ["x", "w"], ["a"], domain="com.microsoft"),
             helper.make_node("FusedGemm", ["a", "w"], ["b"], domain="com.microsoft"),
             helper.make_node("ReorderInput", ["b"], ["y"], domain="com.microsoft.nchwc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    assert runtime_fused(helper.make_model(graph)) == ["com.microsoft.FusedGemm", "com.microsoft.NhwcFusedConv",
                                                       "com.microsoft.nchwc.ReorderInput"]
