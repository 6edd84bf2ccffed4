"""measure/shape_probe.py: FLOPs of the nodes shape inference cannot size, from one run."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from click.testing import CliRunner
from helpers import FOLDED_PER_SAMPLE, folded, init, make_model, save_model, scaled_normal, vi
from onnx import helper

import exprune_onnx
from exprune_onnx.cli import main
from exprune_onnx.compiler.pipeline import infer_shapes
from exprune_onnx.io.feeds import with_input_shapes
from exprune_onnx.measure.flops import model_flops
from exprune_onnx.measure.shape_probe import runtime_flops

T, C, HEADS = 5, 8, 2


def heads_model():
    """x [N, T, 8] -> MatMul -> Reshape to [N, T, 2, 4] by a shape computed at run time
    (a Range over the input's own dims, which shape inference cannot follow) -> two heads'
    scores and context (MatMuls) -> Reshape back -> MatMul -> Relu -> MatMul."""
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Slice", ["xs", "zero", "two"], ["nt"]),
        helper.make_node("ReduceMax", ["nt"], ["big"], keepdims=1),
        helper.make_node("Squeeze", ["big"], ["big_s"]),
        helper.make_node("Range", ["zero_s", "big_s", "big_s"], ["one"]),  # [0]: known only when run
        helper.make_node("Add", ["one", "heads"], ["h"]),
        helper.make_node("Concat", ["nt", "h", "hd"], ["split"], axis=0),
        helper.make_node("Reshape", ["q", "split"], ["q4"]),
        helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["q4"], ["kh"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["qh", "kh"], ["scores"]),
        helper.make_node("MatMul", ["scores", "qh"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ct"], perm=[0, 2, 1, 3]),
        helper.make_node("Concat", ["nt", "width"], ["merged"], axis=0),
        helper.make_node("Reshape", ["ct", "merged"], ["m"]),
        helper.make_node("MatMul", ["m", "w1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    inits = [init("wq", scaled_normal(C, C)), init("w1", scaled_normal(C, 16)), init("w2", scaled_normal(16, 4)),
             init("zero", np.array([0], np.int64)), init("two", np.array([2], np.int64)),
             init("zero_s", np.array(0, np.int64)), init("heads", np.array([HEADS], np.int64)),
             init("hd", np.array([C // HEADS], np.int64)), init("width", np.array([C], np.int64))]
    return make_model(nodes, [vi("x", ["N", "T", C])], [vi("y", ["N", "T", 4])], inits)


# Per sample: the three projections, and per head T x T scores and T x 4 context.
HEADS_FOLDED_PER_SAMPLE = 2 * T * (C * C + C * 16 + 16 * 4) + 2 * 2 * HEADS * T * T * (C // HEADS)


def static_flops(model, shapes):
    return model_flops(gs.import_onnx(infer_shapes(with_input_shapes(model, shapes))))


def feed(batch=1):
    return {"x": np.random.default_rng(0).standard_normal((batch, T, C)).astype(np.float32)}


@pytest.mark.parametrize("batch", [1, 3])
def test_a_run_sizes_the_heads_that_shape_inference_cannot(batch):
    model = heads_model()
    total, unknown = static_flops(model, {"x": ("N", T, C)})
    assert unknown == 2 and total == 2 * T * (C * C + C * 16 + 16 * 4)  # the two head MatMuls
    seen = runtime_flops(model, feed(batch))
    assert seen["scores"] == seen["ctx"] == 2 * HEADS * T * T * (C // HEADS)
    graph = gs.import_onnx(infer_shapes(with_input_shapes(model, {"x": ("N", T, C)})))
    assert model_flops(graph, seen) == (HEADS_FOLDED_PER_SAMPLE, 0)


def test_fixed_dims_size_a_batch_whose_symbol_inference_lost():
    model = folded("N")  # [N, 6, 8] -> Reshape [-1, 8]: with the batch open, the rows counted as samples
    assert static_flops(model, {}) == (2 * (8 * 16 + 16 * 4), 0)
    seen = runtime_flops(model, {"x": np.ones((2, 6, 8), np.float32)})
    assert model_flops(gs.import_onnx(infer_shapes(model)), seen) == (FOLDED_PER_SAMPLE, 0)


def test_nothing_unsized_needs_no_run(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no session was needed")

    monkeypatch.setattr("exprune_onnx.runtime.inference_session", refuse)
    assert sum(runtime_flops(folded(1), {"x": np.ones((1, 6, 8), np.float32)}).values()) == FOLDED_PER_SAMPLE


def test_a_failed_run_leaves_the_unsized_nodes_uncounted(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no session")

    monkeypatch.setattr("exprune_onnx.runtime.inference_session", broken)
    seen = runtime_flops(heads_model(), feed())
    assert "scores" not in seen and "ctx" not in seen and seen["y"] == 2 * T * 16 * 4


def test_a_model_of_a_gib_or_more_is_counted_on_its_skeleton_and_not_run(monkeypatch):
    monkeypatch.setattr("exprune_onnx.io.bigmodel.BIG_MODEL_BYTES", 0)
    seen = runtime_flops(heads_model(), feed())
    assert "scores" not in seen and "ctx" not in seen and seen["y"] == 2 * T * 16 * 4


def test_optimize_and_evaluate_count_the_heads(tmp_path):
    path = save_model(heads_model(), tmp_path)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((16, T, C)).astype(np.float32))
    out, report, evaluated = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "e.json"
    run = CliRunner().invoke(main, ["optimize", str(path), "--check-data", str(data), "-o", str(out), "--threshold",
                                    "-2", "--objective", "flops", "--min-units", "4", "--include-first-layer",
                                    "--report", str(report)])
    assert run.exit_code == 0, run.output
    written = json.loads(report.read_text())
    assert (written["dense_flops_per_sample"], written["uncounted_nodes"]) == (HEADS_FOLDED_PER_SAMPLE, 0)
    assert "not counted" not in run.output and "measured FLOPs" in run.output
    # The report's measured count is the summary's, and no more than the dense one.
    measured = written["measured_flops_per_sample"]
    shown = re.search(r"measured FLOPs\s+│\s+([\d.]+) kFLOPs per sample \(([-\d.]+)% saved", run.output)
    assert 0 < measured <= HEADS_FOLDED_PER_SAMPLE and shown.group(1) == f"{measured / 1e3:.2f}"
    assert shown.group(2) == f"{100 * (1 - measured / HEADS_FOLDED_PER_SAMPLE):.1f}"
    run = CliRunner().invoke(main, ["evaluate", str(path), str(out), "--data", str(data), "--runs", "2",
                                    "--json", str(evaluated)])
    assert run.exit_code == 0, run.output
    assert json.loads(evaluated.read_text())["dense_flops_per_sample"] == HEADS_FOLDED_PER_SAMPLE


def test_no_data_and_open_dims_leave_an_unchanged_model_as_before(tmp_path):
    """Random inputs cannot be made for [N, 3, H, W] without data: the count then stays
    static, and a model with nothing to rewrite is still written, as it was before."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", 3, "H", "W"])], [vi("y", ["N", 4, "h", "w"])],
                       [init("w", scaled_normal(4, 3, 3, 3))])
    path, out = save_model(model, tmp_path), tmp_path / "o.onnx"
    run = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--objective", "flops"])
    assert run.exit_code == 0, run.output
    assert "nothing to rewrite" in run.output and out.exists()


def test_the_layer_table_counts_a_folded_batch_as_the_summary_does(tmp_path):
    path, data = save_model(folded("N"), tmp_path), tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((8, 6, 8)).astype(np.float32))
    report = tmp_path / "r.json"
    run = CliRunner().invoke(main, ["optimize", str(path), "--check-data", str(data), "-o", str(tmp_path / "o.onnx"),
                                    "--threshold", "-2", "--objective", "flops", "--min-units", "8",
                                    "--include-first-layer", "--report", str(report)])
    assert run.exit_code == 0, run.output
    written = json.loads(report.read_text())
    assert written["dense_flops_per_sample"] == FOLDED_PER_SAMPLE
    assert [row["dense_flops"] for row in written["layers"]] == [2 * 6 * 8 * 16]


def test_inspect_counts_the_heads_once_every_dim_is_known(tmp_path):
    path = save_model(heads_model(), tmp_path)
    fixed = CliRunner().invoke(main, ["inspect", str(path), "--input-shape", f"x:1,{T},{C}", "--min-units", "4"])
    assert fixed.exit_code == 0, fixed.output
    assert f"dense FLOPs: {HEADS_FOLDED_PER_SAMPLE / 1e3:.2f} kFLOPs per sample (Conv/Gemm/MatMul)\n" in fixed.output
    # With T open, the heads are counted at the 128 positions optimize takes without data, said so.
    open_dims = CliRunner().invoke(main, ["inspect", str(path), "--min-units", "4"])
    text = " ".join(open_dims.output.split())
    assert open_dims.exit_code == 0, open_dims.output
    assert re.search(r"dense FLOPs: [\d.]+ [kMG]FLOPs per sample \(Conv/Gemm/MatMul\), with 'x' \[N, T, 8\] as "
                     r"\[N, 128, 8\]: sizes taken", text), text
    assert "not counted" not in text  # the run-time shapes of the heads too


def test_a_batch_too_large_to_feed_leaves_inspect_to_shape_inference(tmp_path):
    """--input-shape may fix a batch no random input fits (it was 'out of memory', exit 1)."""
    path = save_model(heads_model(), tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(path), "--input-shape", f"x:99999999999,{T},{C}", "--min-units", "4"])
    assert r.exit_code == 0 and "dense FLOPs:" in r.output, r.output


def test_inspect_model_counts_as_the_inspect_command_does():
    options = exprune_onnx.Options(min_units=4, input_shapes={"x": (1, T, C)})
    shown = exprune_onnx.inspect_model(heads_model(), options)
    assert shown.dense_flops == HEADS_FOLDED_PER_SAMPLE
    assert options.runtime_flops is None  # the caller's options are left as given
    # T open: counted where the inspect command counts it, at the 128 optimize takes without data.
    open_t = exprune_onnx.inspect_model(heads_model(), min_units=4)
    assert open_t.input_shapes == {"x": ("N", 128, C)}
    assert open_t.dense_flops == 2 * 128 * (C * C + C * 16 + 16 * 4) + 2 * 2 * HEADS * 128 * 128 * (C // HEADS)
    assert exprune_onnx.optimize_model(heads_model(), options).dense_flops < HEADS_FOLDED_PER_SAMPLE  # the compiler alone


def test_calibration_counts_the_heads_too(tmp_path):
    """Calibration weighs FLOPs saved: its count is the full one as well."""
    path, data = save_model(heads_model(), tmp_path), tmp_path / "d.npz"
    rng = np.random.default_rng(3)
    np.savez(data, x=rng.standard_normal((64, T, C)).astype(np.float32), labels=rng.integers(0, 4, (64, T)))
    report = tmp_path / "r.json"
    run = CliRunner().invoke(main, ["optimize", str(path), "--calibration", str(data), "-o", str(tmp_path / "o.onnx"),
                                    "--objective", "flops", "--min-units", "4", "--include-first-layer",
                                    "--max-drop", "0.1", "--confidence", "0", "--report", str(report)])
    assert run.exit_code == 0, run.output
    written = json.loads(report.read_text())
    assert (written["dense_flops_per_sample"], written["uncounted_nodes"]) == (HEADS_FOLDED_PER_SAMPLE, 0)


def branches():
    """x [N, 8] and a flag: If(flag) then x @ W1 @ W2 (8 -> 64 -> 4) else x @ W3 (8 -> 4)."""
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "w1"], ["h"]),
                                helper.make_node("MatMul", ["h", "w2"], ["t"])], "then", [], [vi("t", ["N", 4])])
    else_g = helper.make_graph([helper.make_node("MatMul", ["x", "w3"], ["e"])], "else", [], [vi("e", ["N", 4])])
    nodes = [helper.make_node("If", ["flag"], ["y"], then_branch=then_g, else_branch=else_g)]
    inits = [init("w1", scaled_normal(8, 64)), init("w2", scaled_normal(64, 4)), init("w3", scaled_normal(8, 4))]
    inputs = [vi("x", ["N", 8]), vi("flag", [], onnx.TensorProto.BOOL)]
    return make_model(nodes, inputs, [vi("y", ["N", 4])], inits)


@pytest.mark.parametrize(("flag", "taken"), [(True, 2 * (8 * 64 + 64 * 4)), (False, 2 * 8 * 4)])
def test_an_if_counts_the_branch_the_data_takes(flag, taken):
    model = branches()
    graph = gs.import_onnx(infer_shapes(model))
    assert model_flops(graph) == (2 * (8 * 64 + 64 * 4) + 2 * 8 * 4, 0)  # both, without data
    seen = runtime_flops(model, {"x": np.ones((2, 8), np.float32), "flag": np.array(flag)})
    assert seen == {"y": taken}
    assert model_flops(graph, seen) == (taken, 0)


def test_inspect_says_when_the_model_did_not_run_at_the_sizes_taken(tmp_path):
    """A model that takes 16 positions at most counted only what inference sized, and said
    nothing of the 128 it was tried at (a trial's transformer)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", "T"])], [vi("y", ["N", 4])], [init("w", scaled_normal(16, 4))])
    path = save_model(model, tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(path)])
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "note: the model did not run at 'x' [N, T] as [N, 128], the sizes optimize takes" in text, text
    fixed = CliRunner().invoke(main, ["inspect", str(path), "--input-shape", "x:N,16"])
    assert fixed.exit_code == 0 and "did not run" not in fixed.output, fixed.output


def test_at_a_fixed_batch_a_folded_first_axis_that_inference_lost_is_sized_by_the_run():
    """x [1, 6, 8] reshaped to [6, 8] by a shape inference cannot compute: the second
    MatMul's input is [?, 16], whose unsized first axis was taken for the batch (4 rows of
    a legacy transformer's out-projection counted as one, 6.72 MFLOPs of 7.49)."""
    nodes = [helper.make_node("Shape", ["x"], ["xs"]),
             helper.make_node("ReduceMax", ["xs"], ["big"], keepdims=1),  # [8]: no data propagation through it
             helper.make_node("Div", ["big", "big"], ["one"]),
             helper.make_node("Neg", ["one"], ["m1"]),
             helper.make_node("Concat", ["m1", "eight"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    inits = [init("eight", np.array([8], np.int64)), init("w1", scaled_normal(8, 16)), init("w2", scaled_normal(16, 4))]
    model = make_model(nodes, [vi("x", [1, 6, 8])], [vi("y", ["R", 4])], inits)
    graph = gs.import_onnx(infer_shapes(model))
    second = next(n for n in graph.nodes if n.outputs[0].name == "y")
    assert second.inputs[0].shape[1] == 16 and not isinstance(second.inputs[0].shape[0], int)  # as in the trial
    feed = {"x": np.ones((1, 6, 8), np.float32)}
    assert runtime_flops(model, feed)["y"] == 2 * 16 * 4 * 6



@pytest.mark.parametrize(("flag", "counted"), [(True, False), (False, True)])
def test_a_taken_branch_with_a_product_the_count_does_not_cover_leaves_the_if_uncounted(flag, counted):
    """A quantized branch's MatMulInteger dropped out of the taken branch's sum, and the
    total passed for the model's; model_flops then counts the If's bodies itself, the
    MatMulInteger among the nodes not counted."""
    model = branches()
    then = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")
    then.node[0].op_type = "MatMulInteger"  # (nothing runs it here)
    seen = runtime_flops(model, {"x": np.ones((2, 8), np.float32), "flag": np.array(flag)})
    assert ("y" in seen) == counted
