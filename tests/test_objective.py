"""The latency objective (exprune_onnx/tuning/objective.py): which rewrites it keeps and why.

The decisions are tested with a scripted clock (time_pair replaced), so that they are
exact; one test times for real and checks only that the decisions follow the numbers.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import init, latency_choice, make_model, node_types, three_layer_mlp, vi
from onnx import helper

import exprune_onnx
from exprune_onnx.cli import main
from exprune_onnx.config import Options
from exprune_onnx.io.data import Dataset, random_dataset
from exprune_onnx.tuning import objective

MODELS = Path(__file__).resolve().parent.parent / "models"
SLICE = MODELS / "fashion_test_slice.npz"


def test_keeps_the_layer_that_saves_time_and_drops_the_one_that_costs(scripted_clock):
    model = three_layer_mlp()
    scripted_clock({"h1": -0.2, "h2": 0.3})
    choice = latency_choice(model)
    assert [(t.layer, t.kept) for t in choice.layers] == [("h1", False), ("h2", True)]  # smallest layer first
    assert [r.candidate.layer for r in choice.result.rewritten] == ["h2"]
    reason = next(r.reason for r in choice.result.rejected if r.layer == "h1")
    assert reason.startswith("objective latency: the model took 0.900 ms with it rewritten and 0.700 ms without")
    assert choice.original_ms == 1.0 and choice.optimized_ms == pytest.approx(0.7) and not choice.reverted_all
    assert node_types(choice.result.model).count("ExPruneDenseRelu") == 1
    onnx.checker.check_model(choice.result.model)


def test_a_gain_below_the_margin_is_not_kept(scripted_clock):
    model = three_layer_mlp()
    scripted_clock({"h1": 0.5 * objective.MARGIN, "h2": 2 * objective.MARGIN})
    choice = latency_choice(model)
    assert [(t.layer, t.kept) for t in choice.layers] == [("h1", False), ("h2", True)]


def test_nothing_faster_than_the_original_returns_the_original(scripted_clock):
    model = three_layer_mlp()
    scripted_clock({"h1": 0.1, "h2": 0.1}, slower_than_original=True)
    choice = latency_choice(model)
    assert choice.reverted_all and all(t.kept for t in choice.layers)
    assert not choice.result.changed and choice.result.model is model
    assert choice.optimized_ms == choice.original_ms == 0.5 and choice.attempt_ms == pytest.approx(0.8)
    reasons = {r.layer: r.reason for r in choice.result.rejected}
    assert reasons["h1"] == reasons["h2"] == ("objective latency: the model was not faster than the original "
                                              "with the layers left")


def test_all_dropped_needs_no_extra_timing(scripted_clock):
    model = three_layer_mlp()
    calls = scripted_clock({"h1": -0.1, "h2": -0.1})
    choice = latency_choice(model)
    assert len(calls) == 2 and not choice.result.changed
    assert choice.original_ms == choice.optimized_ms == 1.0 and choice.ratio == 1.0


def test_emit_stats_survives_the_choice(scripted_clock):
    model = three_layer_mlp()
    scripted_clock({"h1": 0.1, "h2": 0.1})
    choice = latency_choice(model, Options(threshold=0.0, emit_stats=True, sparse_relu="off"))
    assert sum(o.name.endswith("stats") or "stats" in o.name for o in choice.result.model.graph.output) == 2


def test_a_plain_relu_consumer_that_saves_time_reads_sparsely(scripted_clock):
    """h1 reverts, so relu0 is plain again and h1 (its consumer) is timed reading it
    sparsely; h2 stays an early-exit layer (reading relu1's zeros instead saves nothing), so
    it is no plain consumer; 'out' reads h2's early-exit op and is sparse anyway."""
    model = three_layer_mlp()
    scripted_clock({"h1": -0.2, "h2": 0.3, "zero:h1": 0.1})
    choice = latency_choice(model, Options(threshold=0.0))
    assert [(t.layer, t.kind, t.kept) for t in choice.layers] == [
        ("h1", objective.EARLY_EXIT, False), ("h2", objective.EARLY_EXIT, True), ("h2", objective.ZERO_INPUTS, False),
        ("h1", objective.ZERO_INPUTS, True)]
    assert choice.kept("h1") is False and choice.kept("h1", objective.ZERO_INPUTS) is True
    assert [(s.layer, s.source) for s in choice.result.sparse] == [("h1", "Relu"), ("out", "ExPruneDenseRelu")]
    assert choice.optimized_ms == pytest.approx(0.6) and not choice.reverted_all
    types = node_types(choice.result.model)
    assert types.count("ExPruneSparseMatMul") == 2 and types.count("ExPruneDenseRelu") == 1
    onnx.checker.check_model(choice.result.model)


def test_plain_relu_consumers_not_faster_leave_the_original(scripted_clock):
    model = three_layer_mlp()
    calls = scripted_clock({"h1": -0.1, "h2": -0.1})
    choice = latency_choice(model, Options(threshold=0.0))
    # Both layers revert; then each of the three Gemms after a ReLU is timed, smallest
    # weight first, and none gains.
    assert [(t.layer, t.kind) for t in choice.layers[2:]] == [
        ("out", objective.ZERO_INPUTS), ("h1", objective.ZERO_INPUTS), ("h2", objective.ZERO_INPUTS)]
    assert len(calls) == 5 and not any(t.kept for t in choice.layers)
    assert not choice.result.changed and choice.result.model is model
    reasons = {r.layer: r.reason for r in choice.result.sparse_rejected}
    assert "the latency objective found the model no faster with it read sparsely" in reasons["out"]


def test_sparse_relu_off_times_no_plain_consumer(scripted_clock):
    calls = scripted_clock({"h1": -0.1, "h2": -0.1, "zero:h1": 0.5})
    choice = latency_choice(three_layer_mlp(), Options(threshold=0.0, sparse_relu="off"))
    assert len(calls) == 2 and not choice.result.changed


def test_real_timing_decisions_follow_the_measured_numbers():
    model = three_layer_mlp((64, 256, 512, 64))
    choice = latency_choice(model, batch=4, threads=1)
    assert [t.layer for t in choice.layers] == ["h2", "h1"]  # 512x64 before 256x512
    for t in choice.layers:
        assert t.with_ms > 0 and t.without_ms > 0
        assert t.kept == (t.with_ms <= t.without_ms * (1 - objective.MARGIN))
    kept = {t.layer for t in choice.layers if t.kept and not choice.reverted_all}
    assert {r.candidate.layer for r in choice.result.rewritten} == kept
    if not kept:
        assert choice.result.model is model


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_prints_the_latency_table_and_explains_dropped_layers(tmp_path, scripted_clock):
    src = tmp_path / "mlp.onnx"
    onnx.save(three_layer_mlp(), src)
    scripted_clock({"h1": -0.2, "h2": 0.3})
    r = _invoke("optimize", src, "-o", tmp_path / "o.onnx", "--threshold", "0", "--explain", "--no-check")
    assert r.exit_code == 0, r.output
    assert "Latency objective" in r.output and "dropped: not faster" in r.output and "kept" in r.output
    assert "objective latency: the model took" in r.output
    assert "seeded random inputs" in r.output  # says the prune rates were not measured on real data
    assert node_types(onnx.load(tmp_path / "o.onnx")).count("ExPruneDenseRelu") == 1


def test_cli_flops_objective_keeps_every_rewrite(tmp_path, scripted_clock):
    src = tmp_path / "mlp.onnx"
    onnx.save(three_layer_mlp(), src)
    calls = scripted_clock({"h1": -0.2, "h2": -0.3})
    r = _invoke("optimize", src, "-o", tmp_path / "o.onnx", "--objective", "flops", "--no-check", "--threshold", "-1")
    assert r.exit_code == 0, r.output
    assert not calls and "Latency objective" not in r.output
    assert node_types(onnx.load(tmp_path / "o.onnx")).count("ExPruneDenseRelu") == 2


def test_cli_nothing_faster_writes_the_model_unchanged(tmp_path, scripted_clock):
    src = tmp_path / "mlp.onnx"
    onnx.save(three_layer_mlp(), src)
    scripted_clock({"h1": -0.2, "h2": -0.3})
    r = _invoke("optimize", src, "-o", tmp_path / "o.onnx")
    assert r.exit_code == 0, r.output
    assert "no rewrite kept" in r.output and "no rewrite made the model faster" in r.output
    assert onnx.load(tmp_path / "o.onnx").SerializeToString() == onnx.load(src).SerializeToString()


def test_cli_times_plain_relu_consumers_where_no_layer_is_rewritten(tmp_path, scripted_clock):
    """--min-units keeps every early-exit candidate out; the ReLU consumers are still timed."""
    src = tmp_path / "mlp.onnx"
    onnx.save(three_layer_mlp(), src)
    calls = scripted_clock({"zero:h1": 0.2})
    r = _invoke("optimize", src, "-o", tmp_path / "o.onnx", "--min-units", "1000", "--no-check")
    assert r.exit_code == 0, r.output
    assert "zero inputs" in r.output and len(calls) == 4  # out, h1, h2; then the result against the original
    out = onnx.load(tmp_path / "o.onnx")
    assert node_types(out).count("ExPruneSparseMatMul") == 1 and "ExPruneDenseRelu" not in node_types(out)
    assert next(n.name for n in out.graph.node if n.op_type == "ExPruneSparseMatMul") == "h1_sparse"
    r = _invoke("optimize", src, "-o", tmp_path / "o.onnx", "--sparse-relu", "off", "--min-units", "1000")
    assert r.exit_code == 0 and len(calls) == 4, r.output  # nothing more timed


def test_search_keeps_the_plain_relu_consumers_the_timing_kept(scripted_clock):
    from exprune_onnx.tuning import search as search_module

    model = three_layer_mlp()
    data = random_dataset(model, 64, 0)
    scripted_clock({"h1": -0.2, "h2": 0.3, "zero:h1": 0.1})
    out = search_module.search(model, Options(), data, max_drop=1.0, latency=(1, 1))
    assert out.latency.kept("h1", objective.ZERO_INPUTS) and out.options.sparse_relu_layers == {"h1"}
    assert [(s.layer, s.source) for s in out.result.sparse] == [("h1", "Relu"), ("out", "ExPruneDenseRelu")]
    assert [r.candidate.layer for r in out.result.rewritten] == ["h2"]


def test_search_writes_the_original_when_nothing_beats_it(scripted_clock, monkeypatch):
    from exprune_onnx.tuning import search as search_module

    monkeypatch.setattr(search_module, "unpaying", lambda *args: set())  # the objective's last step, not reach.py's
    model = three_layer_mlp()
    scripted_clock({"h1": 0.1, "h2": 0.1, "zero:h1": 0.1}, slower_than_original=True)
    out = search_module.search(model, Options(sparse_relu="on"), random_dataset(model, 64, 0), max_drop=1.0,
                               latency=(1, 1))
    assert out.latency.reverted_all and not out.result.changed and not out.options.sparse_input


def test_sparse_relu_on_needs_sparse_input(tmp_path):
    src = tmp_path / "mlp.onnx"
    onnx.save(three_layer_mlp(), src)
    r = _invoke("optimize", src, "-o", tmp_path / "o.onnx", "--sparse-relu", "on", "--no-sparse-input")
    assert r.exit_code == 2 and "--no-sparse-input" in r.output and not (tmp_path / "o.onnx").exists()
    from exprune_onnx.errors import ConfigError

    with pytest.raises(ConfigError, match="sparse_relu must be one of"):
        exprune_onnx.optimize_model(three_layer_mlp(), Options(sparse_relu="maybe"))


@pytest.mark.parametrize("args", [("--objective", "speed"), ("--latency-batch", "0"), ("--latency-threads", "0"),
                                  ("--objective", "flops", "--latency-threads", "2")])
def test_cli_bad_objective_options_are_usage_errors(tmp_path, args):
    src = tmp_path / "mlp.onnx"
    onnx.save(three_layer_mlp(), src)
    r = _invoke("optimize", src, "-o", tmp_path / "o.onnx", *args)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert not (tmp_path / "o.onnx").exists()
    if "flops" in args:  # a timing option with nothing to time would be ignored
        assert "--latency-threads does nothing with --objective flops" in r.output


def test_calibration_under_the_latency_objective(tmp_path, scripted_clock, monkeypatch):
    """The search drops the slow layer before its held-out check; the report says so."""
    from exprune_onnx.tuning import search as search_module

    # (Timed at their reach, the slow layers would be left out before the objective: test_reach.py.)
    monkeypatch.setattr(search_module, "unpaying", lambda *args: set())
    model = MODELS / "fashion_cnn.onnx"
    shutil.copyfile(model, tmp_path / "m.onnx")
    with np.load(SLICE) as data:
        np.savez(tmp_path / "d.npz", input=data["input"][:200], labels=data["labels"][:200])
    scripted_clock({"conv2/conv/Conv": 0.2, "fc1/Gemm": -0.1, "conv3/conv/Conv": -0.1,
                                 "block/conv1/Conv": -0.1, "block/conv2/Conv": -0.1})
    rep = tmp_path / "r.json"
    r = _invoke("optimize", tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--calibration", tmp_path / "d.npz",
                "--max-drop", "0.02", "--report", rep, "--confidence", "0")
    assert r.exit_code == 0, r.output
    report = json.loads(rep.read_text())
    assert report["objective"] == "latency"
    decisions = {row["layer"]: row["kept"] for row in report["latency"]["layers"] if row["rewrite"] == "early exit"}
    kept = [row["layer"] for row in report["layers"]]
    assert kept == [layer for layer, k in decisions.items() if k]
    assert set(kept) <= {"/conv2/conv/Conv"}
    assert report["held_out"]["drop"] <= 0.02 + 1e-9 or not report["budget_met"]
    # The search's own choice saved more than the layers the objective kept: the table says both.
    before = report["before_latency"]
    assert before["flops_saved"] > report["calibration"]["flops_saved"]
    text = " ".join(r.output.split())
    assert "search's choice │" in text and "the latency objective then dropped the rewrites" in text
    # Its FLOPs are the early exits' alone: the reads kept after may save more (a trial read 1.2% -> 25.9%).
    assert "(its early exits;" in text
    assert "calibration part (after the latency objective)" in text
    types = node_types(onnx.load(tmp_path / "o.onnx"))
    assert types.count("ExPruneConvRelu") == len(kept)


def residual_block() -> onnx.ModelProto:
    """x -> Relu -> h; a = Relu(Conv_a(h)); y = Relu(Conv_b(a) + Conv_s(h)): Conv_b and the
    1x1 shortcut Conv_s both match the block's Add -> Relu, Conv_b first."""
    rng = np.random.default_rng(1)
    c = 32

    def conv(name, kernel):
        w = (rng.standard_normal((c, c, kernel, kernel)) * np.sqrt(2 / (c * kernel * kernel))).astype(np.float32)
        return init(f"{name}_w", w), init(f"{name}_b", rng.normal(0, 0.1, c).astype(np.float32))

    inits = [*conv("a", 3), *conv("b", 3), *conv("s", 1)]
    pads = [1, 1, 1, 1]
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="in_relu"),
        helper.make_node("Conv", ["h", "a_w", "a_b"], ["ca"], name="conv_a", pads=pads),
        helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "b_w", "b_b"], ["cb"], name="conv_b", pads=pads),
        helper.make_node("Conv", ["h", "s_w", "s_b"], ["cs"], name="conv_s"),
        helper.make_node("Add", ["cb", "cs"], ["sum"], name="add"),
        helper.make_node("Relu", ["sum"], ["y"], name="relu_out"),
    ]
    return make_model(nodes, [vi("x", ["N", c, 8, 8])], [vi("y", ["N", c, 8, 8])], inits)


def _rewritten(result) -> list[str]:
    return sorted(r.candidate.layer for r in result.rewritten)


def test_a_dropped_layer_does_not_hand_its_activation_to_an_untimed_shortcut(scripted_clock):
    model = residual_block()
    assert _rewritten(exprune_onnx.optimize_model(model, threshold=0.0)) == ["conv_a", "conv_b"]
    scripted_clock({"conv_a": 0.2, "conv_b": -0.1})
    choice = latency_choice(model)
    assert [(t.layer, t.kept) for t in choice.layers] == [("conv_a", True), ("conv_b", False)]
    assert _rewritten(choice.result) == ["conv_a"]  # conv_s was never timed: it stays dense
    reason = next(r.reason for r in choice.result.rejected if r.layer == "conv_s")
    assert reason.startswith("not among the layers the calibration or the latency objective chose")
    # Its block's main conv was left alone (a trial read the old words as contradicting that).
    assert "matched only once that layer was left alone, after they had chosen" in reason


def test_chosen_options_rewrite_only_the_chosen_layers():
    from exprune_onnx.config import LayerSetting

    model = residual_block()
    skip_b = {"conv_b": LayerSetting(0.0, skip=True)}
    # A user's config that skips conv_b lets the shortcut take the block's Relu...
    assert _rewritten(exprune_onnx.optimize_model(model, Options(threshold=0.0, layers=dict(skip_b)))) == \
        ["conv_a", "conv_s"]
    # ...a calibration's choice (only the layers it chose) does not.
    chosen = Options(threshold=0.0, layers=dict(skip_b), chosen=frozenset({"conv_a", "conv_b"}))
    assert _rewritten(exprune_onnx.optimize_model(model, chosen)) == ["conv_a"]


@pytest.mark.parametrize("shortcut_gain", [-0.5, -0.05])
def test_a_layer_named_by_the_config_cannot_slip_in_untimed(shortcut_gain, scripted_clock):
    """The user's config names the shortcut (say, for its k). When the latency objective
    drops conv_b, the shortcut must not be rewritten behind its back (review finding)."""
    from exprune_onnx.config import LayerSetting

    model = residual_block()
    options = Options(threshold=0.0, layers={"conv_s": LayerSetting(0.0)})
    result = exprune_onnx.optimize_model(model, options)
    assert _rewritten(result) == ["conv_a", "conv_b"]
    scripted_clock({"conv_a": -0.1, "conv_b": -0.1, "conv_s": shortcut_gain})
    choice = objective.choose(model, options, result, random_dataset(model, 16, 0))
    assert not choice.result.changed and choice.result.model is model


def test_what_is_left_is_always_timed_against_the_original(scripted_clock):
    """Every timed layer kept, yet the whole is slower than the original: nothing is written."""
    model = three_layer_mlp()
    calls = scripted_clock({"h1": 0.1, "h2": 0.1}, slower_than_original=True)
    choice = latency_choice(model)
    original_vs_final = [c for c in calls if not any(n.domain for n in c[0].graph.node)]
    assert original_vs_final and choice.reverted_all and not choice.result.changed


def test_a_fixed_batch_model_timed_at_another_batch_says_so(tmp_path):
    model = three_layer_mlp()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # batch fixed at 2
    src = tmp_path / "fixed.onnx"
    onnx.save(model, src)
    r = _invoke("optimize", src, "-o", tmp_path / "o.onnx", "--no-check", "--latency-batch", "1")
    assert r.exit_code == 6 and "--latency-batch 1 is impossible" in r.output and "Traceback" not in r.output, \
        r.output
    assert not (tmp_path / "o.onnx").exists()
    # Without --latency-batch it times at the batch the model fixes.
    r = _invoke("optimize", src, "-o", tmp_path / "o.onnx", "--no-check")
    assert r.exit_code == 0 and "batch 2" in r.output, r.output


def test_calibration_times_after_the_held_out_back_off(monkeypatch, scripted_clock):
    """The latency choice is made on the shares the model ships with, after any back-off,
    and the scores reported are those of the model written."""
    from exprune_onnx.tuning import search as search_module

    seen = []
    real = search_module._keep_faster

    def spy(original, planner, shares, *args, **kwargs):
        seen.append(dict(shares))
        return real(original, planner, shares, *args, **kwargs)

    monkeypatch.setattr(search_module, "_keep_faster", spy)
    scripted_clock({"conv2/conv/Conv": 0.2, "fc1/Gemm": -0.1, "conv3/conv/Conv": -0.1,
                                 "block/conv1/Conv": -0.1, "block/conv2/Conv": -0.1})
    model = onnx.load(MODELS / "fashion_cnn.onnx")
    with np.load(SLICE) as d:
        data = Dataset({"input": d["input"][:200]}, d["labels"][:200], "slice")
    out = search_module.search(model, Options(), data, max_drop=0.02, latency=(1, 1))
    assert len(seen) == 1  # once, on the final shares
    for layer, share in seen[0].items():
        dropped = out.latency.kept(layer) is False
        assert out.shares[layer] == (None if dropped else share)
    assert {r.candidate.layer for r in out.result.rewritten} <= {"/conv2/conv/Conv"}
    # The scores reported are those of the model written.
    calib_idx, _ = search_module.split_indices(len(data), 0.5, 0)
    runner = search_module.Runner(model, data, calib_idx, 64)
    score, _, _ = runner.run(out.result.model, out.metric, out.result.dense_flops)
    assert score.optimized == out.calibration.optimized


def test_timing_sessions_do_not_spin_and_deployed_ones_keep_the_default():
    from exprune_onnx.measure.timing import session

    model = three_layer_mlp()
    key = "session.intra_op.allow_spinning"
    timed = session(model, threads=2).get_session_options()
    assert timed.get_session_config_entry(key) == "0" and timed.intra_op_num_threads == 2
    plain = exprune_onnx.inference_session(model, threads=2).get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        plain.get_session_config_entry(key)  # unset: onnxruntime's default, spinning


def test_a_compiled_candidate_frees_the_compilers_graph(monkeypatch):
    """The objective holds a few candidate models at a time; the compiler's graph behind
    each (every weight once more, in reference cycles) must not outlive its compilation:
    on VGG19 the candidates alone passed 23 GB."""
    import weakref

    graphs = []
    compile_model = objective.optimize

    def spied(model, options):
        res = compile_model(model, options)
        graphs.append(weakref.ref(res.sparse[0].op_node))
        return res

    monkeypatch.setattr(objective, "optimize", spied)
    built = objective._compile(three_layer_mlp(), Options(threshold=0.0, min_units=1000, sparse_relu="on"))
    assert [(s.layer, s.op, s.after_relu) for s in built.sparse] == \
        [("h1", "ExPruneSparseMatMul", True), ("h2", "ExPruneSparseMatMul", True),
         ("out", "ExPruneSparseMatMul", True)]
    assert built.changed and node_types(built.model).count("ExPruneSparseMatMul") == 3
    assert len(graphs) == 1 and graphs[0]() is None


def test_two_timings_of_one_model_far_apart_are_found():
    """A dropped early exit's "without" is the next row's "with", a dropped zero-input
    row's "without" the next one's: one model timed twice. A trial's busy host timed one
    at 1.859 and 5.809 ms, and the table showed both with no word."""
    from exprune_onnx.report.latency import same_model_times
    from exprune_onnx.tuning.objective import ZERO_INPUTS, LatencyChoice, LayerTiming

    def choice(*rows):
        return LatencyChoice(None, None, 1, 1, "data", list(rows))

    busy = choice(LayerTiming("a", 7.477, 6.454, False), LayerTiming("b", 6.527, 1.859, False),
                  LayerTiming("c", 5.809, 1.177, False))
    assert same_model_times(busy) == (1.859, 5.809)
    assert same_model_times(choice(LayerTiming("a", 1.952, 1.969, False), LayerTiming("b", 1.969, 1.370, False),
                                   LayerTiming("c", 1.365, 1.2, False))) is None
    # A kept row's model is its "with"; a row decided untimed (a note) breaks the chain.
    assert same_model_times(choice(LayerTiming("a", 1.0, 2.0, True), LayerTiming("b", 1.02, 1.5, False))) is None
    assert same_model_times(choice(LayerTiming("a", 1.0, 2.0, True), LayerTiming("b", 2.0, 1.5, False))) == (1.0, 2.0)
    assert same_model_times(choice(LayerTiming("a", 1.0, 2.0, False), LayerTiming("x", 0.0, 0.0, False, note="n"),
                                   LayerTiming("b", 9.0, 1.5, False))) is None
    zero = choice(LayerTiming("h1", 6.4, 6.5, False, ZERO_INPUTS), LayerTiming("h2", 4.8, 4.769, False, ZERO_INPUTS))
    assert same_model_times(zero) == (4.769, 6.5)
    # The first zero-input row's "without", before anything is kept, is the original that the
    # end times again (a trial's busy VGG timed it at 13.7 ms there and 11.5 at the end).
    first = choice(LayerTiming("e", 9.0, 8.0, False), LayerTiming("c1", 15.0, 16.0, True, ZERO_INPUTS))
    first.original_ms = 11.5
    assert same_model_times(first) == (11.5, 16.0)
    first.layers[0].kept = True  # an early exit kept: that "without" is no longer the original
    assert same_model_times(first) is None
