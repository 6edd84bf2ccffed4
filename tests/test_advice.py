"""report/advice.py: the warnings under optimize's tables, each with what to change."""

from pathlib import Path

import onnx
from click.testing import CliRunner
from helpers import save_model, three_layer_mlp

import exprune_onnx
from exprune_onnx.cli import main
from exprune_onnx.config import Options
from exprune_onnx.report.advice import costlier_layers

ROOT = Path(__file__).resolve().parent.parent


def test_outputs_compared_by_value_warn_when_they_move_much():
    """A heatmap or a box regression has no top-1 answer to check: a move of over 5% of its
    largest |value| is warned of, as top-1 agreement under 99% is; so is one compared run by
    run (a scalar sum moved by 7% with no word, a trial found), over the runs whose shapes
    agree, and not one whose shapes agree in no run."""
    import math

    from exprune_onnx.measure.compare import CheckResult, OutputDiff
    from exprune_onnx.report.advice import changed_values

    outputs = [OutputDiff("heatmap", 0.9, 0.35, None), OutputDiff("logits", 3.0, 0.19, 0.96),
               OutputDiff("ids", 1.0, 0.0, 0.9, index=True), OutputDiff("wh", 0.01, 0.04, None),
               OutputDiff("det", 1.0, 0.5, None, runs=(1, 2)), OutputDiff("sum", 0.7, 0.073, None, runs=(0, 4)),
               OutputDiff("boxes", math.inf, math.inf, None, runs=(3, 3)),
               OutputDiff("masked", math.inf, math.inf, None)]  # an inf (from an input of inf) made a number
    checked = CheckResult(8, "d.npz", outputs, {}, None)
    assert [d.name for d in changed_values(checked)] == ["heatmap", "det", "sum", "masked"]


def test_under_calibration_a_value_output_the_budget_does_not_bound_is_warned_of():
    """A classifier with a regression head, calibrated on its scores: the head moved by 32%
    of its range, with no warning (and verify calls it 'not judged')."""
    from types import SimpleNamespace

    from exprune_onnx.measure.compare import CheckResult, OutputDiff
    from exprune_onnx.report.advice import unbounded_outputs

    outputs = [OutputDiff("logits", 3.0, 0.19, 0.995), OutputDiff("value", 0.3, 0.32, None),
               OutputDiff("aux", 0.3, 0.01, None)]
    checked = CheckResult(8, "d.npz", outputs, {}, None)
    (line,) = unbounded_outputs(checked, SimpleNamespace(output="logits"))
    # Not "calibrate on it too": a budget scores one output, and --score-output is given once.
    assert line == ("output 'value' moved by up to 32% of its largest |value|, and the budget bounds only 'logits' "
                    "(it scores one output): to bound this one instead, --score-output value --metric relerr; or "
                    "check it with your own measure")
    assert unbounded_outputs(checked, SimpleNamespace(output="value")) == []  # the one it bounds
    # Class scores the budget does not bound: an embedding scored, the logits at 97.6% (a trial's).
    low = CheckResult(8, "d.npz", [OutputDiff("logits", 3.0, 0.19, 0.976), OutputDiff("emb", 0.3, 0.01, None)], {},
                      None)
    assert unbounded_outputs(low, SimpleNamespace(output="emb")) == [
        "output 'logits' has top-1 agreement 97.60% on the check, and the budget bounds only 'emb' (it scores one "
        "output): to bound this one instead, --score-output logits; or check it with your own measure"]
    assert unbounded_outputs(low, SimpleNamespace(output="logits")) == []
    assert unbounded_outputs(checked, None) == []  # without calibration the plain warning says it
    from exprune_onnx.report.advice import warnings

    # (At threshold 0 it prunes, as a calibrated model does: one that prunes nothing gets a warning more.)
    result = exprune_onnx.optimize_model(three_layer_mlp(), Options(threshold=0.0, sparse_relu="off"))
    calibrated = SimpleNamespace(met=True, counts_holdout={}, notes=[], output="logits")
    done = SimpleNamespace(result=result, checked=checked, calibrated=calibrated, model=result.model)
    assert warnings(done) == [line]  # under optimize's tables


def test_a_layer_that_prunes_too_little_to_pay_for_its_decision_is_named():
    result = exprune_onnx.optimize_model(three_layer_mlp(), Options(threshold=0.0, sparse_relu="off"))
    names = {rw.candidate.layer: rw.op_node.name for rw in result.rewritten}
    assert set(names) == {"h1", "h2"}
    # h1 pruned nothing (its decision on top of the dense product), h2 half its outputs.
    counts = {names["h1"]: (0, 100), names["h2"]: (50, 100)}
    assert costlier_layers(result, counts) == ["h1"]
    assert costlier_layers(result, {}) == []


def test_the_warning_names_the_costlier_layers_and_not_the_saving_ones(tmp_path):
    path = save_model(three_layer_mlp(), tmp_path)
    text = {}
    for case, args in {"costly": ["--rule", "statstest", "--alpha", "1e-12"], "saving": ["--threshold", "0"]}.items():
        r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / f"{case}.onnx"), "--objective",
                                      "flops", "--sparse-relu", "off", *args])
        assert r.exit_code == 0, r.output
        text[case] = " ".join(r.output.split())
    assert "warning: 2 rewritten layer(s) cost as many FLOPs as dense or more on the data" in text["costly"]
    assert "(h1, h2)" in text["costly"]
    assert "cost as many FLOPs as dense" not in text["saving"]


def test_layers_at_minus_inf_are_not_told_to_raise_a_threshold(tmp_path):
    """--threshold=-inf typed under --objective flops keeps early-exit layers that prune
    nothing: raising --threshold, as the warning said, would leave the lossless mode."""
    path = save_model(three_layer_mlp(), tmp_path)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--objective", "flops",
                                  "--sparse-relu", "off", "--threshold=-inf"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "warning: 2 early-exit layer(s) at threshold -inf prune nothing" in text, text
    assert "raise --threshold" not in text


def test_under_calibration_the_advice_is_a_rule_not_a_threshold_to_raise():
    from types import SimpleNamespace

    from exprune_onnx.report.advice import warnings

    result = exprune_onnx.optimize_model(three_layer_mlp(), Options(threshold=0.0, sparse_relu="off"))
    counts = {rw.op_node.name: (0, 100) for rw in result.rewritten}
    calibrated = SimpleNamespace(met=True, counts_holdout=counts, notes=[])
    done = SimpleNamespace(result=result, checked=None, calibrated=calibrated, model=result.model)
    (line,) = warnings(done)
    assert line.startswith("2 rewritten layer(s) cost as many FLOPs as dense") and "use --rule threshold" in line
    assert "raise --threshold" not in line


def test_layers_inside_a_branch_are_said_to_have_no_counters(tmp_path):
    """A body cannot hand its ops' counters out: the table's '?' and the missing measured
    FLOPs are explained, and a main-graph rewrite alone is not warned of."""
    import numpy as np
    import onnx
    from helpers import init, make_model, vi
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)

    def branch(side):
        w = init(side + "_w", (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32))
        nodes = [helper.make_node("Conv", ["r0", side + "_w"], [side + "_c"], pads=[1, 1, 1, 1], name=side + "_conv"),
                 helper.make_node("Relu", [side + "_c"], [side + "_y"])]
        return helper.make_graph(nodes, side, [], [vi(side + "_y", ["N", 16, 6, 6])], [w])

    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("t"), else_branch=branch("e"))]
    model = make_model(nodes, [vi("x", ["N", 1, 6, 6]), vi("cond", [], TensorProto.BOOL)], [vi("y", ["N", 16, 6, 6])],
                       [init("w0", (rng.standard_normal((16, 1, 3, 3)) * 0.1).astype(np.float32))])
    path = tmp_path / "if.onnx"
    onnx.save(model, path)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--objective", "flops",
                                  "--threshold", "-1", "--min-units", "8", "--sparse-relu", "off"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "warning: 2 ExPrune op(s) inside If/Loop/Scan bodies have no counters" in text
    assert "measured FLOPs" not in text
    # evaluate neither: what the ops in the branch skipped is not counted, so no share is given.
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((8, 1, 6, 6)).astype(np.float32), cond=np.array(True))
    r = CliRunner().invoke(main, ["evaluate", str(path), str(tmp_path / "o.onnx"), "--data", str(data), "--runs", "2"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "FLOPs dense; executed unknown: 2 ExPrune op(s) inside If/Loop/Scan bodies" in text
    path = save_model(three_layer_mlp(), tmp_path)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "mlp.exprune.onnx"), "--objective", "flops",
                                  "--threshold", "0", "--sparse-relu", "off"])
    assert r.exit_code == 0 and "have no counters" not in r.output


def test_the_lossless_note_says_when_the_model_given_prunes_already():
    from exprune_onnx.report.advice import lossless_note

    model = three_layer_mlp()
    assert lossless_note(model).startswith("lossless: no threshold above -inf and no calibration")
    pruning = exprune_onnx.optimize_model(model, Options(threshold=0.0, sparse_relu="off")).model
    assert lossless_note(pruning).startswith("nothing more is pruned (exact rewrites only), but the model given has "
                                             "2 early-exit layer(s) of its own")


def test_a_threshold_on_a_model_optimised_before_says_its_layers_keep_theirs(tmp_path):
    """Re-optimising with --threshold found nothing new to rewrite and said only that,
    though the old layers kept their old thresholds (a trial's report)."""
    pruning = exprune_onnx.optimize_model(three_layer_mlp(), Options(threshold=0.0, sparse_relu="off")).model
    path = save_model(pruning, tmp_path)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "again.onnx"), "--objective", "flops",
                                  "--threshold", "-2", "--sparse-relu", "off"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert ("note: the model given has 2 early-exit layer(s) of its own, which keep the thresholds they were "
            "written with: --threshold and --config set only the layers rewritten now") in text, text
    r = CliRunner().invoke(main, ["optimize", str(save_model(three_layer_mlp(), tmp_path, "plain.onnx")), "-o",
                                  str(tmp_path / "once.onnx"), "--objective", "flops", "--threshold", "-2"])
    assert r.exit_code == 0 and "of its own" not in r.output, r.output


def test_a_lossless_model_given_again_says_what_it_holds(tmp_path):
    """'nothing to rewrite' alone, on a model whose layers were all rewritten before (a
    pipeline's trial), read as though the model held nothing of ours."""
    plain = save_model(three_layer_mlp(), tmp_path, "plain.onnx")
    args = ["--objective", "flops", "--sparse-relu", "on", "--no-check"]
    first = CliRunner().invoke(main, ["optimize", str(plain), "-o", str(tmp_path / "once.onnx"), *args])
    assert first.exit_code == 0 and "optimised already" not in first.output, first.output
    again = CliRunner().invoke(main, ["optimize", str(tmp_path / "once.onnx"), "-o", str(tmp_path / "twice.onnx"),
                                      *args])
    text = " ".join(again.output.split())
    assert again.exit_code == 0, again.output
    assert "nothing to rewrite" in text and "note: the model holds 3 ExPruneSparseMatMul (optimised already)" in text


def test_a_budget_given_as_a_percentage_is_warned_of_before_any_work(tmp_path):
    import numpy as np
    from helpers import calibration_dataset, calibration_mlp

    model = calibration_mlp()
    data = calibration_dataset(model, 200)
    np.savez(tmp_path / "d.npz", x=data.inputs["x"], labels=data.labels)
    args = ["optimize", str(save_model(model, tmp_path)), "--calibration", str(tmp_path / "d.npz"), "--objective",
            "flops", "-o", str(tmp_path / "o.onnx"), "--max-drop"]
    r = CliRunner().invoke(main, [*args, "1"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("warning: --max-drop 1 is a fraction: it allows a drop of 100 points (0.01 is one "
                               "point)")
    r = CliRunner().invoke(main, [*args, "0.05"])
    assert r.exit_code == 0 and "allows" not in r.output


def test_calibration_that_reaches_no_layer_says_so(tmp_path):
    """Early exits inside If branches hand no counters out, so calibration reached none of
    them, printed no table and said nothing (a trial's report): a warning now says why."""
    import numpy as np
    from helpers import if_mlp

    rng = np.random.default_rng(4)
    path, data = save_model(if_mlp(rng), tmp_path), tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((400, 16)).astype(np.float32), cond=np.array(True),
             labels=rng.integers(0, 8, 400))
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(data),
                                  "--max-drop", "0.05", "--confidence", "0", "--objective", "flops", "--min-units", "8",
                                  "--sparse-relu", "off"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert ("warning: --calibration calibrated nothing: the 2 early-exit layer(s) are inside If/Loop/Scan bodies, "
            "whose counters calibration cannot read") in text, text


def test_calibration_of_a_model_with_no_early_exit_says_so(tmp_path):
    """Nothing to calibrate at all: the data served the check and the timing, and the
    warnings say so beside the progress line."""
    import numpy as np
    from helpers import make_model, vi
    from onnx import helper

    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", 10])], [vi("y", ["N", 10])])
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((200, 10)).astype(np.float32))
    r = CliRunner().invoke(main, ["optimize", str(save_model(model, tmp_path)), "-o", str(tmp_path / "o.onnx"),
                                  "--calibration", str(data), "--objective", "flops"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert ("warning: --calibration calibrated nothing: no layer of this model has an early exit (`exprune-onnx "
            "inspect` says why)") in text, text


def test_a_config_layer_that_is_not_rewritten_is_named_with_why(tmp_path):
    """A config naming the first layer (a graph input's reader) or a k past the layer's n
    was dropped without a word; skipped layers and the latency objective's drops are not
    named (the latency table shows those)."""
    import json

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"layers": {"h0": {"threshold": -1}, "h1": {"k": 96}, "h2": {"skip": True}}}))
    path = save_model(three_layer_mlp(), tmp_path)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--config", str(cfg),
                                  "--objective", "flops", "--no-check", "--sparse-relu", "off"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "warning: the config sets layer 'h0', which is not rewritten: its input is (or holds) a graph input" in text
    assert "warning: the config sets layer 'h1', which is not rewritten: k = 96 is not between 1 and n - 1 = 95" in text
    assert "'h2'" not in text, text
    options = exprune_onnx.config.load_config(cfg, Options(sparse_relu="off"))
    done = exprune_onnx.optimize(path, options=options, objective="flops", check=False)
    named = [w for w in done.warnings if w.startswith("the config sets")]  # the API's warnings too
    assert [w.split(":")[0] for w in named] == ["the config sets layer 'h0', which is not rewritten",
                                                "the config sets layer 'h1', which is not rewritten"], done.warnings


def test_config_notes_cap_the_layers_named_and_speak_of_calibration():
    from types import SimpleNamespace

    from exprune_onnx.compiler.pipeline import Rejected
    from exprune_onnx.config import LayerSetting
    from exprune_onnx.report.advice import config_notes

    layers = {f"l{i}": LayerSetting(0.0) for i in range(5)} | {"s": LayerSetting(0.0, skip=True)}
    rejected = [Rejected(f"l{i}", "Conv", "conv_relu", f"reason {i}") for i in range(5)]
    rejected += [Rejected("s", "Conv", "conv_relu", "skipped by the config file", True),
                 Rejected("other", "Conv", "conv_relu", "not in the config")]
    notes = config_notes(layers, SimpleNamespace(rejected=rejected), calibrated=True)
    assert notes == ["the config sets layer 'l0', which is not rewritten: reason 0",
                     "the config sets layer 'l1', which is not rewritten: reason 1",
                     "the config sets layer 'l2', which is not rewritten: reason 2",
                     "2 more layer(s) the config sets are not rewritten (--explain lists why)",
                     "--calibration chose every layer's threshold and rule: of the config, only its k and skip were used"]
    assert config_notes({"s": layers["s"]}, SimpleNamespace(rejected=rejected), calibrated=True) == []
    assert config_notes({}, SimpleNamespace(rejected=rejected), calibrated=False) == []
    # A threshold in the config's default is chosen over as well (a docs trial's: no word of it).
    assert config_notes({"s": layers["s"]}, SimpleNamespace(rejected=rejected), calibrated=True,
                        default_threshold=True) == [notes[-1]]
    assert config_notes({}, SimpleNamespace(rejected=rejected), calibrated=False, default_threshold=True) == []


def test_more_latency_threads_than_usable_cpus_are_warned_of(monkeypatch):
    """--latency-threads 2 inside a one-core taskset timed both models 2-3 times slower,
    and nothing said the choices were made so (a trial's)."""
    import os
    from types import SimpleNamespace

    from exprune_onnx.report import advice

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    text = advice.crowded_threads(SimpleNamespace(threads=2))
    assert text.startswith("the latency objective timed 2 threads on the 1 CPU(s) this process may use"), text
    assert advice.crowded_threads(SimpleNamespace(threads=1)) == ""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    assert advice.crowded_threads(SimpleNamespace(threads=4)) == ""


def test_outputs_that_move_in_a_model_that_prunes_nothing_are_warned_of():
    """A QDQ model's float layer that onnxruntime quantized in the original, rewritten in float:
    the check showed the logits 0.8% apart under 'lossless', with no word (a trial's). More
    than float rounding (1e-4 of the largest |value|, two steps for a float16 output) in a
    model whose early exits all sit at -inf is now warned of; a model that prunes is not."""
    import math
    from types import SimpleNamespace

    from exprune_onnx.measure.compare import CheckResult, OutputDiff
    from exprune_onnx.report.advice import model_is_exact, moved_while_exact, warnings

    exact_result = exprune_onnx.optimize_model(three_layer_mlp(), Options(threshold=-math.inf, sparse_relu="off"))
    exact = exact_result.model
    pruning = exprune_onnx.optimize_model(three_layer_mlp(), Options(threshold=0.0, sparse_relu="off")).model
    assert model_is_exact(exact) and not model_is_exact(pruning)
    out = exact.graph.output[0].name
    moved = CheckResult(8, "d.npz", [OutputDiff(out, 0.09, 0.008, 1.0)], {}, None)
    (line,) = moved_while_exact(moved, exact)
    assert line.startswith(f"nothing is pruned, yet output '{out}' differs from the original's by 0.008 of its largest")
    assert moved_while_exact(moved, pruning) == []
    assert moved_while_exact(CheckResult(8, "d.npz", [OutputDiff(out, 1e-5, 5e-5, 1.0)], {}, None), exact) == []
    exact.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT16  # one step of float16: rounding
    assert moved_while_exact(CheckResult(8, "d.npz", [OutputDiff(out, 0.004, 3e-4, 1.0)], {}, None), exact) == []
    assert moved_while_exact(None, exact) == []
    # Not class indices, outputs compared run by run, nor an output with no figure (inf).
    others = [OutputDiff(out, 1.0, 0.5, 0.9, index=True), OutputDiff(out, 1.0, 0.5, None, runs=(3, 4)),
              OutputDiff(out, math.inf, math.inf, None)]
    assert moved_while_exact(CheckResult(8, "d.npz", others, {}, None), exact) == []
    # Nor, for such a model, the advice to lower a threshold it does not have.
    done = SimpleNamespace(result=exact_result, calibrated=None, model=exact,
                           checked=CheckResult(8, "d.npz", [OutputDiff(out, 3.0, 0.08, 0.95)], {}, None))
    said = warnings(done)
    assert any(line.startswith("nothing is pruned") for line in said), said
    assert not any("more negative --threshold" in line for line in said), said


def test_a_check_that_measures_the_budget_exceeded_is_warned_of():
    """Calibrated to 1 point (met on its held-out part, at confidence 0), the check showed 3.1
    points lost on 128 samples in its table with no word, while `verify` failed the model on
    the same data (a trial's): the same verdict is now a warning."""
    import json

    from exprune_onnx.measure.compare import CheckResult, OutputDiff
    from exprune_onnx.report.advice import over_budget_on_check
    from exprune_onnx.verify.agreement import BUDGET_KEY

    model = three_layer_mlp()
    out = model.graph.output[0].name
    onnx.helper.set_model_props(model, {BUDGET_KEY: json.dumps({"metric": "accuracy", "max_drop": 0.01, "output": out,
                                                                "confidence": 0})})
    worse = CheckResult(128, "d.npz", [OutputDiff(out, 2.9, 0.2, 0.96)], {}, (0.8594, 0.8281))
    (line,) = over_budget_on_check(worse, model)
    assert line.startswith("the check exceeds the budget: accuracy drop 3.13 points > 1 point, the budget it was "
                           "calibrated to (an estimate on its held-out part; measured on these data"), line
    assert line.endswith("or certify the budget (--confidence 0.9, the default)")
    within = CheckResult(128, "d.npz", [OutputDiff(out, 0.1, 0.01, 0.99)], {}, (0.8594, 0.8516))
    assert over_budget_on_check(within, model) == []
    assert over_budget_on_check(CheckResult(128, "d.npz", [], {}, None), model) == []  # no labels: nothing measured
    assert over_budget_on_check(worse, three_layer_mlp()) == []  # no budget stamped


def test_calibration_data_of_one_class_is_warned_of(tmp_path):
    """A trial calibrated on one class certified its budget there and lost 35 points on the
    balanced test set, with no word."""
    import numpy as np

    data = np.load(ROOT / "models" / "fashion_test_slice.npz")
    nine = data["labels"] == 9
    np.savez(tmp_path / "nine.npz", input=data["input"][nine], labels=data["labels"][nine])
    r = CliRunner().invoke(main, ["optimize", str(ROOT / "models" / "fashion_cnn.onnx"), "-o", str(tmp_path / "o.onnx"),
                                  "--calibration", str(tmp_path / "nine.npz"), "--max-drop", "0.05", "--confidence",
                                  "0", "--objective", "flops", "--sparse-relu", "off"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert f"warning: class 9 is 100% of the {int(nine.sum())} calibration samples (by their labels)" in text, text
    # Off a terminal a warning stays on one line, for a log's grep to find whole.
    assert any(line.startswith("warning: class 9") and line.endswith('"What the promise needs")')
               for line in r.output.splitlines()), r.output


def test_a_model_written_unchanged_with_broken_weights_is_warned_of(tmp_path):
    """Nothing kept, no check ran to refuse it: a trial's model with a NaN weight was written
    back with no word (under --objective flops the check refused it)."""
    import numpy as np
    from onnx import numpy_helper

    model = onnx.load(Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx")
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = np.nan
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    done = exprune_onnx.optimize(model, sparse_input=False)
    assert not done.changed
    assert any("weights hold NaN or Inf" in w and "written unchanged" in w for w in done.warnings), done.warnings
    healthy = exprune_onnx.optimize(Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx",
                                    sparse_input=False)
    assert not any("NaN" in w for w in healthy.warnings)
