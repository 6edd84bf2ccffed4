"""``exprune_onnx.optimize``: the workflow the CLI runs, from Python; progress and Ctrl-C."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import conv_hw, input_mlp, save_model

import exprune_onnx
from exprune_onnx import workflow
from exprune_onnx.cli import main
from exprune_onnx.progress import Bar, quiet
from exprune_onnx.tuning import objective

MODELS = Path(__file__).resolve().parent.parent / "models"
EXAMPLE = MODELS / "fashion_cnn.onnx"
SLICE = MODELS / "fashion_test_slice.npz"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("extra, kwargs", [
    ([], {}),
    (["--threshold", "-0.5", "--k", "16", "--no-sparse-input"], {"threshold": -0.5, "k": 16, "sparse_input": False}),
    (["--calibration", "SMALL", "--max-drop", "0.02", "--granularity", "layer", "--confidence", "0"],
     {"calibration": "SMALL", "max_drop": 0.02, "granularity": "layer", "confidence": 0.0}),
    # 160 samples cannot certify 2 points at the default confidence: both write the original.
    (["--calibration", "SMALL", "--max-drop", "0.05"], {"calibration": "SMALL", "max_drop": 0.05}),
], ids=["defaults", "compiler-options", "calibration", "certified-calibration"])
def test_python_gives_the_cli_s_model_bytes(tmp_path, extra, kwargs):
    """Same options, same model: the objective is flops here, since timing is not repeatable."""
    small = tmp_path / "small.npz"
    with np.load(SLICE) as data:
        np.savez(small, input=data["input"][:160], labels=data["labels"][:160])
    extra = [small if a == "SMALL" else a for a in extra]
    kwargs = {k: small if v == "SMALL" else v for k, v in kwargs.items()}
    out = tmp_path / "o.onnx"
    r = cli("optimize", EXAMPLE, "-o", out, "--objective", "flops", "--check-data", small, *extra)
    assert r.exit_code == 0, r.output
    done = exprune_onnx.optimize(EXAMPLE, objective="flops", check_data=small, **kwargs)
    assert out.read_bytes() == done.model.SerializeToString()
    if "calibration" in kwargs and "confidence" not in kwargs:
        assert done.calibrated.certificate is not None and done.calibrated.certificate.enough
        return
    if not kwargs:  # the lossless mode: the objective flops leaves out early exits that prune nothing
        assert not done.changed and out.read_bytes() == EXAMPLE.read_bytes()
        return
    assert done.changed and done.rows
    assert [row["layer"] for row in done.report["layers"]] == [row["layer"] for row in done.rows]
    assert set(done.timings) <= {"compile", "calibrate", "objective", "check"} and done.timings
    if "calibration" in kwargs:
        assert done.calibrated is not None and done.report["budget_met"] in (True, False)
    else:
        assert done.checked is not None and done.report["check"]["samples"] == done.checked.samples


def test_options_given_keep_the_command_line_s_default_confidence():
    """Options(...) without a confidence is the command line's 0.9, as with no options at all:
    giving one compiler knob must not turn the guarantee off."""
    with np.load(SLICE) as data:
        arrays = {"input": data["input"][:160], "labels": data["labels"][:160]}
    given = exprune_onnx.optimize(EXAMPLE, options=exprune_onnx.Options(k="auto"), calibration=arrays,
                                  objective="flops", max_drop=0.05, check=False)
    assert given.calibrated.certificate is not None and given.calibrated.certificate.confidence == 0.9
    plain = exprune_onnx.optimize(EXAMPLE, options=exprune_onnx.Options(confidence=0.0), calibration=arrays,
                                  objective="flops", max_drop=0.05, check=False)
    assert plain.calibrated.certificate is None


def test_python_takes_data_as_arrays(tmp_path):
    """calibration= and check_data= also take arrays keyed by input name (and 'labels'),
    checked as a file's are: the same model as from the .npz."""
    with np.load(SLICE) as data:
        arrays = {"input": data["input"][:160], "labels": data["labels"][:160]}
    np.savez(tmp_path / "small.npz", **arrays)
    settings = {"objective": "flops", "max_drop": 0.02, "confidence": 0.0}
    from_file = exprune_onnx.optimize(EXAMPLE, calibration=tmp_path / "small.npz", **settings)
    from_arrays = exprune_onnx.optimize(EXAMPLE, calibration=arrays, check_data=arrays, **settings)
    assert from_arrays.changed and from_arrays.model.SerializeToString() == from_file.model.SerializeToString()
    np.save(tmp_path / "y.npy", arrays["labels"])
    apart = exprune_onnx.optimize(EXAMPLE, calibration={"input": arrays["input"]}, labels=tmp_path / "y.npy",
                                  **settings)
    assert apart.model.SerializeToString() == from_file.model.SerializeToString()
    with pytest.raises(exprune_onnx.errors.DataError, match="the arrays given: no array for model input 'input'"):
        exprune_onnx.optimize(EXAMPLE, calibration={"x": arrays["input"]}, **settings)


def test_with_calibration_and_no_check_data_the_check_runs_on_the_held_out_part():
    """--check is on by default: with calibration only, it compares the two models on the
    calibration data's held-out part (it was skipped), or all of it with --holdout 0;
    with labels only when the metric reads them."""
    from exprune_onnx.tuning.search import split_indices

    with np.load(SLICE) as data:
        arrays = {"input": data["input"][:160], "labels": data["labels"][:160]}
    settings = {"objective": "flops", "max_drop": 0.02, "confidence": 0.0}
    done = exprune_onnx.optimize(EXAMPLE, calibration=arrays, **settings)
    assert done.changed and done.checked.source == "arrays, held out" and done.checked.samples == 80
    assert done.report["check"]["samples"] == 80 and done.checked.accuracy is not None
    assert done.report["check"]["accuracy"] == list(done.checked.accuracy)  # what the check printed
    done = exprune_onnx.optimize(EXAMPLE, calibration=arrays, holdout=0.0, **settings)
    assert done.checked.source == "arrays, calibrated on" and done.checked.samples == 160
    # Soft labels the agreement metric never reads fit no output: the check leaves them (it
    # refused them after the whole calibration, exit 6).
    soft = {"input": arrays["input"], "labels": np.eye(10, dtype=np.float32)[arrays["labels"]] * 0.9}
    done = exprune_onnx.optimize(EXAMPLE, calibration=soft, metric="agreement", **settings)
    assert done.checked.samples == 80 and done.checked.accuracy is None
    off = exprune_onnx.optimize(EXAMPLE, calibration=arrays, check=False, **settings)
    assert off.checked is None and off.report["check"] is None
    assert len(split_indices(160, 0.5, 0)[1]) == 80


def test_a_share_of_one_sample_held_out_is_said_to_hold_none():
    """The default holdout of a single sample rounds to none: the note says so, not 'holdout 0'."""
    with np.load(SLICE) as data:
        arrays = {"input": data["input"][:1], "labels": data["labels"][:1]}
    done = exprune_onnx.optimize(EXAMPLE, calibration=arrays, objective="flops", max_drop=0.05, confidence=0.0,
                                 check=False)
    assert any("no held-out part (holdout 0.5 of 1 sample(s) holds none out)" in w for w in done.warnings), \
        done.warnings


def test_check_data_the_original_cannot_run_is_refused_when_nothing_is_rewritten(tmp_path):
    """An index past an embedding's rows: refused (exit 6, nothing written) as where something
    was rewritten; with nothing rewritten the data was never run and the model written."""
    from helpers import init, make_model, vi
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Gather", ["table", "idx"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["y"])]  # no ReLU: nothing to rewrite
    model = make_model(nodes, [vi("idx", ["N"], TensorProto.INT64)], [vi("y", ["N", 8])],
                       [init("table", rng.normal(size=(5, 16)).astype(np.float32)),
                        init("w", rng.normal(size=(16, 8)).astype(np.float32))])
    path = save_model(model, tmp_path)
    out = tmp_path / "o.onnx"
    for idx, code in (([0, 4, 2], 0), ([0, 7, 2], 6)):
        np.savez(tmp_path / "d.npz", idx=np.array(idx, np.int64))
        r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--objective", "flops", "--check-data",
                                      str(tmp_path / "d.npz")])
        assert r.exit_code == code, r.output
        assert out.exists() == (code == 0)
        out.unlink(missing_ok=True)
    assert "onnxruntime cannot run the original model on 'd.npz'" in " ".join(r.output.split())
    # With calibration too, and labels in the check data (a review's: the one case left unrun):
    # a layer to calibrate, which nothing asks to keep.
    nodes = [helper.make_node("Gather", ["table", "idx"], ["e"]), helper.make_node("Relu", ["e"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    model = make_model(nodes, [vi("idx", ["N"], TensorProto.INT64)], [vi("y", ["N", 8])],
                       [init("table", rng.normal(size=(5, 64)).astype(np.float32)),
                        init("w", rng.normal(size=(64, 8)).astype(np.float32))])
    good = {"idx": np.array([0, 4, 2, 1] * 10, np.int64), "labels": np.zeros(40, np.int64)}
    bad = {"idx": np.array([0, 7, 2, 1], np.int64), "labels": np.zeros(4, np.int64)}
    with pytest.raises(exprune_onnx.errors.DataError, match="onnxruntime cannot run the original model"):
        exprune_onnx.optimize(model, calibration=good, check_data=bad, metric="agreement", max_drop=0.0,
                              confidence=0.0, objective="latency", min_units=8, sparse_relu="off")


def test_inputs_of_minus_inf_with_finite_answers_are_checked_and_verified():
    """A float mask's -inf into a ReLU MLP: the original answers finite values, and the data
    was refused as 'contains NaN or Inf' (an API trial's); a layer's outputs of -inf in both
    models are no difference."""
    from helpers import init, make_model, vi
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["h0"]), helper.make_node("MatMul", ["h0", "w1"], ["m1"]),
             helper.make_node("Relu", ["m1"], ["h1"]), helper.make_node("MatMul", ["h1", "w2"], ["y"]),
             helper.make_node("Add", ["x", "y"], ["z"])]  # and an output that keeps the -inf
    model = make_model(nodes, [vi("x", ["N", 64])], [vi("z", ["N", 64])],
                       [init("w1", rng.normal(size=(64, 64)).astype(np.float32)),
                        init("w2", rng.normal(size=(64, 64)).astype(np.float32))])
    x = rng.normal(size=(32, 64)).astype(np.float32)
    x[:, :8] = -np.inf
    done = exprune_onnx.optimize(model, check_data={"x": x}, objective="flops", threshold=float("-inf"),
                                 sparse_relu="on")
    (diff,) = done.checked.outputs
    assert done.changed and diff.max_rel < 1e-5, diff  # (it was NaN)
    assert exprune_onnx.verify_model(model, done.model, data={"x": x}).passed


def test_calibration_of_a_model_with_nothing_to_calibrate_writes_it_unchanged():
    """No early-exit layer (a Sigmoid MLP): as without calibration, the original comes back
    (it was exit 6, "no layer of this model can be rewritten", blaming the data)."""
    from helpers import init, make_model, vi
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Sigmoid", ["h"], ["s"]),
             helper.make_node("MatMul", ["s", "w2"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", 48])], [vi("y", ["N", 10])],
                       [init("w1", rng.normal(size=(48, 64)).astype(np.float32)),
                        init("w2", rng.normal(size=(64, 10)).astype(np.float32))])
    arrays = {"x": rng.normal(size=(200, 48)).astype(np.float32), "labels": rng.integers(0, 10, 200)}
    done = exprune_onnx.optimize(model, calibration=arrays, max_drop=0.05)
    assert not done.changed and done.calibrated is None and done.model == model and done.model is not model
    # With an exact zero-input rewrite of a plain ReLU's reader, the check runs on all of the
    # data (nothing was calibrated on it) and keeps the labels.
    relu_first = make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w1"], ["h"]),
                             *nodes[1:]], [vi("x", ["N", 48])], [vi("y", ["N", 10])], model.graph.initializer)
    done = exprune_onnx.optimize(relu_first, calibration=arrays, max_drop=0.05, sparse_relu="on", objective="flops")
    assert done.changed and done.calibrated is None
    assert done.checked.samples == 200 and done.checked.accuracy is not None


def test_python_takes_input_shapes_and_rejects_unknown_options(tmp_path):
    done = exprune_onnx.optimize(conv_hw(), input_shapes={"x": ("N", 3, 12, 12)}, objective="flops",
                                 threshold=float("-inf"))
    assert done.changed and done.checked is not None
    assert done.model.graph.input[0] == conv_hw().graph.input[0]
    with pytest.raises(TypeError, match=r"unknown option 'thresold' \(did you mean 'threshold'\?\)"):
        exprune_onnx.optimize(conv_hw(), thresold=0)
    with pytest.raises(TypeError, match=r"unknown option 'min_unit' \(did you mean 'min_units'\?\)"):
        exprune_onnx.optimize_model(conv_hw(), min_unit=3)
    with pytest.raises(TypeError, match=r"unknown option 'zzz'$"):
        exprune_onnx.optimize(conv_hw(), zzz=0)
    with pytest.raises(workflow.UsageProblem, match="rule auto chooses per layer on data: give calibration"):
        exprune_onnx.optimize(input_mlp(["N"]), rule="auto")


def test_warnings_come_back_as_plain_text_and_in_the_report():
    """The lines `optimize` prints under its tables reach a Python caller too (in its keywords);
    a budget that reads as points is warned of before any work, as on the command line."""
    with np.load(SLICE) as data:
        arrays = {"input": data["input"][:160], "labels": data["labels"][:160]}
    with pytest.warns(UserWarning, match=r"0\.01 is one point"):
        done = exprune_onnx.optimize(EXAMPLE, calibration=arrays, max_drop=0.5, confidence=0.0, objective="flops")
    assert done.warnings[0].startswith("max_drop 0.5 is a fraction")
    assert done.report["warnings"] == done.warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn of before the work
        low = exprune_onnx.optimize(EXAMPLE, threshold=-2.0, check_data=arrays, objective="flops")
    assert low.checked.outputs[0].top1_agreement < 0.99
    assert [w[:35] for w in low.warnings] == ["objective flops keeps the rewrites ", "top-1 agreement is below 99%: use a"]
    assert "times none: on a CPU an early exit often runs slower" in low.warnings[0]
    assert low.report["warnings"] == low.warnings


def test_the_report_names_the_model_as_the_command_s_does():
    """The command's --report names the model and the file written; from Python, the path
    given (it was '' under calibration, absent otherwise) and no file."""
    import onnx

    by_path = exprune_onnx.optimize(EXAMPLE, objective="flops", check=False)
    assert (by_path.report["model"], by_path.report["output"]) == (str(EXAMPLE), None)
    given = exprune_onnx.optimize(onnx.load(EXAMPLE), objective="flops", check=False)
    assert (given.report["model"], given.report["output"]) == (None, None)


def test_compiler_options_given_whole_are_kept():
    options = exprune_onnx.Options(rule="statstest", threshold=float("-inf"))
    done = exprune_onnx.optimize(input_mlp(["N"]), options=options, objective="flops", check=False)
    assert {rw.rule for rw in done.result.rewritten} == {"statstest"}
    assert options.rule == "statstest" and done.timings.keys() == {"compile"}


def test_optimize_model_is_still_the_compiler_alone():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = exprune_onnx.optimize_model(input_mlp(["N"]), threshold=float("-inf"))
    assert res.changed and not hasattr(res, "timings")


def test_ctrl_c_stops_cleanly_and_writes_nothing(tmp_path, monkeypatch):
    path = save_model(input_mlp([1]), tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(objective, "time_pair", interrupted)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx")
    assert r.exit_code == 130 and "interrupted" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left behind


def test_progress_is_quiet_off_a_terminal(tmp_path):
    path = save_model(input_mlp([1]), tmp_path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx")
    assert r.exit_code == 0, r.output
    assert "ETA" not in r.output and "timing early-exit" not in r.output


def test_the_bar_counts_steps():
    seen = []
    with Bar() as bar:
        bar("timing early-exit layers: a", 0, 3)
        bar("timing early-exit layers: b", 1, 3)
        task = bar._progress.tasks[0]
        seen.append((task.completed, task.total, task.description))
        bar("checking: the original", 5, 10)
        seen.append((bar._progress.tasks[0].completed, bar._progress.tasks[0].total))
        assert len(bar._progress.tasks) == 1
    assert seen == [(1, 3, "timing early-exit layers: b"), (5, 10)]
    quiet("anything", 1, 2)


def test_the_bar_shows_names_as_written():
    """A layer named 'a[/b]' stopped a run on a terminal (rich read it as a closing tag), and
    an ESC in a name reached the terminal raw."""
    with Bar() as bar:
        bar("timing a[/b]\x1b]0;TITLE\x07: x", 0, 2)
        bar("timing a[/b]\x1b]0;TITLE\x07: x", 1, 2)
        task = bar._progress.tasks[0]
        shown = [column.render(task) for column in bar._progress.columns if hasattr(column, "text_format")][0]
    assert shown.plain == "timing a[/b]\\x1b]0;TITLE\\x07: x"


def test_zero_input_rewrites_have_their_rows_in_the_report():
    """Only exact zero-input rewrites kept: rows (the early-exit layers') is empty, and a
    trial's API user concluded nothing was rewritten; the report lists them with the share
    of inputs each skipped on the check."""
    done = exprune_onnx.optimize(EXAMPLE, objective="flops", sparse_relu="on", check_data=SLICE, check_samples=64)
    assert done.changed and done.rows == []
    rows = done.report["zero_input_layers"]
    assert sorted(r["op"] for r in rows) == ["ExPruneSparseConv"] * 4 + ["ExPruneSparseMatMul"]
    assert {r["layer"]: r["reads"] for r in rows}["/conv2/conv/Conv"] == "Relu"
    assert all(0.0 < r["skipped_inputs"] < 1.0 for r in rows)


def test_labels_the_check_cannot_score_stop_the_run_before_the_timing(tmp_path, monkeypatch):
    """Labels out of the classes failed the check after the latency objective's timing (minutes
    on a large CNN), and passed unread where nothing was rewritten (a trial's); the message
    now names the file."""
    with np.load(SLICE) as data:
        np.savez(tmp_path / "d.npz", input=data["input"][:32], labels=data["labels"][:32] + 100)
    monkeypatch.setattr(objective, "choose", lambda *a, **k: pytest.fail("timed before the labels were read"))
    for objective_name in ("latency", "flops"):  # under flops this model keeps nothing: no check would run
        r = CliRunner().invoke(main, ["optimize", str(EXAMPLE), "-o", str(tmp_path / "o.onnx"), "--check-data",
                                      str(tmp_path / "d.npz"), "--objective", objective_name])
        assert r.exit_code == 6, r.output
        assert "--check-data 'd.npz': label 1" in r.output and "is not a class" in r.output, r.output
        assert not (tmp_path / "o.onnx").exists()


def test_the_report_names_its_objective_with_or_without_calibration():
    """json.md lists `objective` as a top-level key; it was there only with calibration (trial AJ)."""
    import exprune_onnx

    model = Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx"
    for goal in ("flops", "latency"):
        done = exprune_onnx.optimize(model, threshold=-2.0, objective=goal, check=False)
        assert done.report["objective"] == goal
