"""argmax_head: the rule, the ExPruneArgmaxHead op, its calibration statistics and the CLI."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import NEG_INF, NODE, init, make_model, node_types, run_exprune, run_plain, vi
from onnx import TensorProto, helper, numpy_helper
from op_cases import assert_ort_error, run_single_op

from exprune_onnx import ops, optimize_model
from exprune_onnx.cli import main
from exprune_onnx.io.data import random_dataset
from exprune_onnx.tuning.head_stats import HeadStats, head_statistics
from exprune_onnx.tuning.metrics import top1_agreement

N_IN, HIDDEN, CLASSES = 20, 64, 10
MODELS = Path(__file__).resolve().parent.parent / "models"


def head_model(*, tail="argmax", op="gemm", opset=17, axis=None, keepdims=0, extra_consumer=False,
               weight_input=False, logits_output=False, seed=0):
    """x -> MatMul -> Relu -> h -> Gemm | MatMul+Add -> [Softmax | LogSoftmax] -> ArgMax | TopK."""
    rng = np.random.default_rng(seed)
    inits = [init("w1", rng.normal(size=(N_IN, HIDDEN)).astype(np.float32)),
             init("B", rng.normal(size=CLASSES).astype(np.float32))]
    inputs = [vi("x", ["N", N_IN])]
    w = (rng.normal(size=(CLASSES, HIDDEN)) / 4).astype(np.float32)
    if weight_input:
        inputs.append(vi("W", [CLASSES, HIDDEN]))
    else:
        inits.append(init("W", w))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="hidden"), helper.make_node("Relu", ["a"], ["h"])]
    if op == "gemm":
        nodes.append(helper.make_node("Gemm", ["h", "W", "B"], ["z"], name="head", transB=1))
    else:
        inits.append(init("Wt", np.ascontiguousarray(w.T)))
        nodes += [helper.make_node("MatMul", ["h", "Wt"], ["m"], name="head"),
                  helper.make_node("Add", ["m", "B"], ["z"], name="bias")]
    t = "z"
    outputs = []
    if tail in ("softmax", "logsoftmax"):
        nodes.append(helper.make_node("Softmax" if tail == "softmax" else "LogSoftmax", [t], ["p"], axis=1))
        t = "p"
    if logits_output:
        outputs.append(vi(t, ["N", CLASSES]))
    elif tail == "topk":
        inits.append(init("one", np.array([1], np.int64)))
        nodes.append(helper.make_node("TopK", [t, "one"], ["vals", "y"], axis=-1))
        outputs.append(vi("y", ["N", 1], TensorProto.INT64))
    else:
        nodes.append(helper.make_node("ArgMax", [t], ["y"], axis=1 if axis is None else axis, keepdims=keepdims))
        shape = (["N", 1] if keepdims else ["N"]) if axis in (None, 1, -1) else ([1, CLASSES] if keepdims else [CLASSES])
        outputs.append(vi("y", shape, TensorProto.INT64))
    if extra_consumer:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["side"]))
        outputs.append(vi("side", ["N", CLASSES]))
    return make_model(nodes, inputs, outputs, inits, opset=opset)


def draws(seed, rows=300):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(rows, N_IN)).astype(np.float32)}


def assert_same_answers(model, optimized, extra=None):
    for seed in range(3):
        feeds = {**draws(seed), **(extra or {})}
        ref, got = run_plain(model, feeds)[0], run_exprune(optimized, feeds)[0]
        if ref.dtype.kind == "f":
            ref = ref.argmax(-1)
        assert got.dtype == np.int64 and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------------------ rewrite


@pytest.mark.parametrize("tail,op,keepdims,expected_tail", [
    ("argmax", "gemm", 0, []),
    ("argmax", "gemm", 1, []),
    ("argmax", "matmul", 0, []),
    ("softmax", "gemm", 0, []),
    ("logsoftmax", "matmul", 1, []),
    ("topk", "gemm", 1, []),
])
def test_head_rewritten_and_exact_when_never_deciding_early(tail, op, keepdims, expected_tail):
    model = head_model(tail=tail, op=op, keepdims=keepdims)
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["MatMul", "Relu", "Gather", "Slice", "MatMul", "ExPruneArgmaxHead"]
    assert [r.candidate.layer for r in res.rewritten] == ["head"]
    onnx.checker.check_model(res.model)
    assert_same_answers(model, res.model)
    assert not optimize_model(res.model, threshold=NEG_INF).changed


def test_argmax_only_turns_the_logits_into_the_index():
    model = head_model(logits_output=True)
    left = optimize_model(model, threshold=NEG_INF)
    assert not left.changed and "argmax_only z" in left.rejected[-1].reason  # (the keyword, from Python)
    renamed = head_model(logits_output=True)  # a reconstruction or boxes: no arg-max to suggest
    for node in renamed.graph.node:
        node.output[:] = ["recon" if o == "z" else o for o in node.output]
    renamed.graph.output[0].name = "recon"
    assert optimize_model(renamed, threshold=NEG_INF).rejected[-1].reason == \
        "its result 'recon' is a graph output, of values by its name"
    res = optimize_model(model, threshold=NEG_INF, argmax_only=("z",))
    out = res.model.graph.output[0]
    assert out.name == "z" and out.type.tensor_type.elem_type == TensorProto.INT64
    assert len(out.type.tensor_type.shape.dim) == 1
    assert node_types(res.model)[-1] == "ExPruneArgmaxHead"
    assert_same_answers(model, res.model)


def test_a_float16_head_is_told_its_type_not_to_try_argmax_only():
    """inspect advised --argmax-only on a float16 model's logits, and following it gave 'the
    weight is float16' (a trial's)."""
    model = head_model(logits_output=True)
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in (*model.graph.input, *model.graph.output):
        v.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(model, full_check=True)
    (reason,) = [r.reason for r in optimize_model(model, threshold=NEG_INF).rejected if r.layer == "head"]
    assert reason == "the weight is float16, only float32 layers are rewritten"


@pytest.mark.parametrize("case,words", [
    ({"extra_consumer": True}, "other node"),
    ({"axis": 0}, "axis 0"),
    ({"weight_input": True}, "not a constant"),
])
def test_must_not_fire(case, words):
    model = head_model(**case)
    res = optimize_model(model, threshold=NEG_INF)
    assert "ExPruneArgmaxHead" not in node_types(res.model)
    reasons = [r.reason for r in res.rejected if r.layer == "head"]
    assert reasons and words in reasons[0], reasons


def test_select_last_index_and_topk_values_are_left_alone():
    model = head_model()
    model.graph.node[-1].attribute.append(helper.make_attribute("select_last_index", 1))
    res = optimize_model(model, threshold=NEG_INF)
    assert not any(n.op_type == "ExPruneArgmaxHead" for n in res.model.graph.node)
    model = head_model(tail="topk")
    model.graph.output.append(vi("vals", ["N", 1]))
    res = optimize_model(model, threshold=NEG_INF)
    assert not res.changed and "values output" in res.rejected[-1].reason


def test_unknown_argmax_only_name_is_a_config_error():
    from exprune_onnx.errors import ConfigError

    with pytest.raises(ConfigError, match="does not output"):
        optimize_model(head_model(), threshold=NEG_INF, argmax_only=("nope",))


# ------------------------------------------------------------------ op


def head_case(rng, rows, n, classes, k, exchangeable=False, noise=0.0):
    """Inputs of a head split at k, and the finished logits (float64)."""
    if exchangeable:  # the tail repeats the head: the estimate is exact up to `noise`
        reps = n // k
        h_head = np.abs(rng.normal(size=(rows, k))).astype(np.float32)
        w_head = rng.normal(size=(k, classes)).astype(np.float32)
        h = np.tile(h_head, reps) + (noise * rng.uniform(-1, 1, size=(rows, n))).astype(np.float32)
        h[:, :k] = h_head
        w = np.tile(w_head, (reps, 1))
    else:
        h = np.abs(rng.normal(size=(rows, n))).astype(np.float32)
        w = (rng.normal(size=(n, classes)) / np.sqrt(n)).astype(np.float32)
    b = rng.normal(size=classes).astype(np.float32)
    h64, w64 = h.astype(np.float64), w.astype(np.float64)
    partial = (h64[:, :k] @ w64[:k]).astype(np.float32)
    arrays = {"partial": partial, "x": h, "w_tail": np.ascontiguousarray(w[k:].T), "bias": b,
              "partial_sq": ((h64[:, :k] ** 2) @ (w64[:k] ** 2)).astype(np.float32)}
    return arrays, h64 @ w64 + b


def reference(arrays, n, k, rule, param):
    """The op's answer and unfinished-logit count, from docs/custom_ops.md."""
    top, stat = head_statistics(arrays["partial"], arrays["partial_sq"], arrays["bias"], k, n)
    out = stat[rule] < param
    out[np.arange(top.size), top] = False
    classes = stat[rule].shape[1]
    full = arrays["partial"].astype(np.float64) + arrays["x"][:, k:].astype(np.float64) @ \
        arrays["w_tail"].T.astype(np.float64) + arrays["bias"]
    answer = np.where(out.sum(1) == classes - 1, top, np.where(out, -np.inf, full).argmax(1))
    excluded = out.sum(1)
    return answer, int(np.where(excluded == classes - 1, classes, excluded).sum())


@pytest.mark.parametrize("rule,param", [("threshold", -3.0), ("threshold", -1.0), ("statstest", -2.0),
                                        ("statstest", -0.5)])
def test_op_decides_as_documented(rule, param):
    rng = np.random.default_rng(5)
    n, classes, k = 96, 12, 24
    arrays, _ = head_case(rng, 400, n, classes, k)
    attrs = {"k": k, "threshold": param if rule == "threshold" else 0.0, "rule": rule}
    if rule == "statstest":
        attrs["z_crit"] = param
    else:
        arrays = {**arrays, "partial_sq": None}
    y, stats = run_single_op(ops.ARGMAX_HEAD, arrays, attrs, name=NODE, stats=True)
    if rule == "threshold":
        arrays["partial_sq"] = np.zeros_like(arrays["partial"])
    answer, skipped = reference(arrays, n, k, rule, param)
    np.testing.assert_array_equal(y, answer)
    assert stats.tolist() == [skipped, 400 * classes] and 0 < skipped < 400 * classes


def test_op_never_deciding_is_the_arg_max_of_the_finished_logits():
    rng = np.random.default_rng(6)
    arrays, full = head_case(rng, 300, 80, 7, 16)
    arrays["partial_sq"] = None
    y, stats = run_single_op(ops.ARGMAX_HEAD, arrays, {"k": 16, "threshold": NEG_INF, "keepdims": 1}, name=NODE,
                             stats=True)
    assert y.shape == (300, 1)
    np.testing.assert_array_equal(y[:, 0], full.argmax(1))
    assert stats.tolist() == [0, 300 * 7]


def test_decisions_that_the_tail_cannot_overturn_are_right():
    """The tail repeats the head up to +-noise per term: a margin above the worst the noise
    can add never emits a wrong class, while it still decides most samples early."""
    rng = np.random.default_rng(7)
    n, k, classes, noise = 64, 16, 10, 0.01
    arrays, full = head_case(rng, 500, n, classes, k, exchangeable=True, noise=noise)
    arrays["partial_sq"] = None
    w_tail = arrays["w_tail"].astype(np.float64)
    # |tail_j - tail_top - (n/k - 1)(p_j - p_top)| <= noise * sum |w_j - w_top| over the tail.
    worst = noise * max(np.abs(w_tail[j] - w_tail[i]).sum() for i in range(classes) for j in range(classes))
    y, stats = run_single_op(ops.ARGMAX_HEAD, arrays, {"k": k, "threshold": -worst}, name=NODE, stats=True)
    np.testing.assert_array_equal(y, full.argmax(1))
    assert stats[0] > 0.5 * stats[1]


def test_nan_never_decides_early_and_empty_batch():
    rng = np.random.default_rng(8)
    arrays, full = head_case(rng, 4, 40, 5, 10)
    arrays["partial_sq"] = None
    arrays["partial"][1, 2] = np.nan
    y, stats = run_single_op(ops.ARGMAX_HEAD, arrays, {"k": 10, "threshold": 0.0}, name=NODE, stats=True)
    assert y.shape == (4,)
    empty = {key: (v[:0] if key in ("partial", "x") else v) for key, v in arrays.items()}
    y, stats = run_single_op(ops.ARGMAX_HEAD, empty, {"k": 10, "threshold": 0.0}, name=NODE, stats=True)
    assert y.shape == (0,) and stats.tolist() == [0, 0]


@pytest.mark.parametrize("change,words", [
    ({"attrs": {"rule": "certified"}}, "certified"),
    ({"attrs": {"thresholds": [0.0] * 5}}, "thresholds"),
    ({"attrs": {"keepdims": 2}}, "keepdims"),
    ({"attrs": {"k": 40}}, "k = 40"),
    ({"arrays": {"residual": np.zeros((4, 5), np.float32)}}, "residual"),
    ({"arrays": {"w_tail": np.zeros((5, 29), np.float32)}}, "w_tail"),
    ({"arrays": {"bias": np.zeros(4, np.float32)}}, "bias"),
    ({"arrays": {"x": np.zeros((3, 40), np.float32)}}, "leading dimensions"),
    ({"attrs": {"rule": "statstest", "z_crit": -1.0}}, "partial_sq"),
])
def test_op_bad_inputs_are_errors(change, words):
    rng = np.random.default_rng(9)
    arrays, _ = head_case(rng, 4, 40, 5, 10)
    arrays["partial_sq"] = None
    arrays.update(change.get("arrays", {}))
    attrs = {"k": 10, "threshold": 0.0, **change.get("attrs", {})}
    assert_ort_error(lambda: run_single_op(ops.ARGMAX_HEAD, arrays, attrs, name=NODE), words)


# ------------------------------------------------------------------ calibration


def test_head_stats_match_what_the_op_does():
    rng = np.random.default_rng(10)
    n, k, classes = 96, 24, 12
    arrays, full = head_case(rng, 600, n, classes, k)
    top, found = head_statistics(arrays["partial"], arrays["partial_sq"], arrays["bias"], k, n)
    plain = {**arrays, "partial_sq": None}
    # The winners as calibration sees them: the op itself, never deciding early.
    (winner,) = run_single_op(ops.ARGMAX_HEAD, plain, {"k": k, "threshold": NEG_INF}, name=NODE)
    assert np.mean(winner == full.argmax(1)) > 0.99
    s = HeadStats("head", "node", found["threshold"], top, winner)
    for share in (0.0, 0.01, 0.05):
        t = s.threshold_for(share)
        y, stats = run_single_op(ops.ARGMAX_HEAD, plain, {"k": k, "threshold": t}, name=NODE, stats=True)
        changed = float(np.mean(y != winner))
        assert changed == pytest.approx(s.loss(t)) and changed <= share + 1e-12
        assert stats[0] / stats[1] == pytest.approx(s.prune_rate(t))
    assert s.prune_rate(s.threshold_for(0.05)) > s.prune_rate(s.threshold_for(0.0))


def test_calibrated_head_from_the_cli(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copyfile(MODELS / "fashion_cnn_argmax.onnx", model)
    with np.load(MODELS / "fashion_test_slice.npz") as data:
        np.savez(tmp_path / "d.npz", input=data["input"][:200], labels=data["labels"][:200])
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["optimize", str(model), "-o", str(out), "--calibration", str(tmp_path / "d.npz"),
                                  "--max-drop", "0.02", "--report", str(rep), "--objective", "flops",
                                  "--confidence", "0"])
    assert r.exit_code == 0, r.output
    report = json.loads(rep.read_text())
    assert report["calibration"]["drop"] <= 0.02 + 1e-9
    head = [row for row in report["layers"] if row["layer"] == "/fc2/Gemm"]
    assert head and head[0]["pattern"] == ["Gemm", "ArgMax"]
    assert "ExPruneArgmaxHead" in [n.op_type for n in onnx.load(out).graph.node]


def test_language_model_style_head_on_3d_input():
    """[B, T, n] x [n, V] -> ArgMax(axis -1): one decision per position; FLOPs count all T positions."""
    from exprune_onnx.measure.flops import dense_flops

    rng = np.random.default_rng(11)
    n, vocab, steps = 48, 30, 5
    inits = [init("w1", rng.normal(size=(8, n)).astype(np.float32)),
             init("Wv", (rng.normal(size=(n, vocab)) / 4).astype(np.float32))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "Wv"], ["z"], name="lm_head"),
             helper.make_node("ArgMax", ["z"], ["y"], axis=-1, keepdims=0)]
    model = make_model(nodes, [vi("x", ["B", steps, 8])], [vi("y", ["B", steps], TensorProto.INT64)], inits)
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model)[-1] == "ExPruneArgmaxHead"
    assert dense_flops(res.rewritten[0].candidate) == 2 * n * vocab * steps
    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=(4, steps, 8)).astype(np.float32)
        np.testing.assert_array_equal(run_exprune(res.model, {"x": x})[0], run_plain(model, {"x": x})[0])


LM_STEPS, LM_VOCAB = 5, 30


def per_position_logits(rng, opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """x [B, 5, 8] -> MatMul -> Relu -> MatMul (lm_head, n = 48) -> z [B, 5, 30] logits."""
    inits = [init("w1", rng.normal(size=(8, 48)).astype(np.float32)),
             init("Wv", (rng.normal(size=(48, LM_VOCAB)) / 4).astype(np.float32))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "Wv"], ["z"], name="lm_head")]
    return make_model(nodes, [vi("x", ["B", LM_STEPS, 8])], [vi("z", ["B", LM_STEPS, LM_VOCAB])], inits,
                      opset=opset, ir_version=ir_version)


def test_argmax_only_on_per_position_logits_is_checked_per_position():
    """[B, T, V] logits turned into [B, T] indices: the check, evaluate and verify compare
    one answer per position (they failed on broadcasting [B, T, V] against [B, T])."""
    from exprune_onnx.measure.compare import compare
    from exprune_onnx.verify import verify

    model = per_position_logits(np.random.default_rng(12))
    steps, vocab = LM_STEPS, LM_VOCAB
    res = optimize_model(model, threshold=NEG_INF, argmax_only=("z",))
    assert node_types(res.model)[-1] == "ExPruneArgmaxHead"
    data = random_dataset(model, 16, 0)
    checked = compare(model, res.model, data)
    (diff,) = checked.outputs
    assert diff.index and diff.top1_agreement == 1.0
    rows = verify(model, res.model, data)
    assert all(r.ok for r in rows), rows
    # A changed answer at one position counts as one of B x T.
    z = run_plain(model, data.take(slice(0, 2)))[0]
    got = z.argmax(-1)
    got[0, 0] = (got[0, 0] + 1) % vocab
    assert top1_agreement(z, got) == pytest.approx(1 - 1 / (2 * steps))


def test_argmax_only_with_shapes_given_declares_the_index_output():
    """--argmax-only with --input-shape on an IR 6 model (torch's legacy exporter below
    opset 12): the indices keep the original's leading dims, declared, so the onnx
    checker accepts the file (it requires a shape on IR 6 outputs)."""
    rng = np.random.default_rng(14)
    model = per_position_logits(rng, opset=11, ir_version=6)
    steps = LM_STEPS
    res = optimize_model(model, threshold=NEG_INF, argmax_only=("z",), input_shapes={"x": (2, steps, 8)})
    onnx.checker.check_model(res.model)
    dims = [d.dim_param or d.dim_value for d in res.model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["B", steps]
    x = rng.normal(size=(3, steps, 8)).astype(np.float32)  # another batch than the one given
    got = run_exprune(res.model, {"x": x})[0]
    np.testing.assert_array_equal(got, run_plain(model, {"x": x})[0].argmax(-1))


def test_a_head_ending_a_branch_suggests_no_argmax_only():
    """A classifier head whose scores are an If branch's output: --argmax-only cannot name
    it (it names the model's outputs), so the reason does not suggest it."""
    rng = np.random.default_rng(13)
    branches = []
    for side in ("then", "else"):
        w = init(f"W_{side}", (rng.normal(size=(CLASSES, HIDDEN)) / 4).astype(np.float32))
        b = init(f"B_{side}", rng.normal(size=CLASSES).astype(np.float32))
        head = helper.make_node("Gemm", ["h", w.name, b.name], [f"{side}_z"], name=f"head_{side}", transB=1)
        branches.append(helper.make_graph([head], side, [], [vi(f"{side}_z", ["N", CLASSES])], [w, b]))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="hidden"), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("If", ["c"], ["z"], name="pick", then_branch=branches[0], else_branch=branches[1])]
    model = make_model(nodes, [vi("x", ["N", N_IN]), vi("c", [], TensorProto.BOOL)], [vi("z", ["N", CLASSES])],
                       [init("w1", rng.normal(size=(N_IN, HIDDEN)).astype(np.float32))])
    res = optimize_model(model, threshold=NEG_INF)
    reasons = {r.layer: r.reason for r in res.rejected}
    assert reasons["head_then"] == "its result 'then_z' is an output of the then subgraph"
    assert not any("argmax" in r for r in reasons.values())


def test_argmax_only_on_an_output_no_head_makes_says_so():
    """A detection head's scores come from a Concat of Conv outputs: --argmax-only cannot
    turn them into indices, and the reason says what makes them (it was silent)."""
    model = head_model(logits_output=True)
    model.graph.node.append(helper.make_node("Concat", ["z", "z"], ["both"], name="join", axis=1))
    model.graph.output.append(vi("both", ["N", 2 * CLASSES]))
    res = optimize_model(model, threshold=NEG_INF, argmax_only=("both",))
    (row,) = [r for r in res.rejected if r.layer == "both"]
    assert row.op == "Concat" and "made by Concat 'join', not by a Gemm or MatMul" in row.reason
    assert res.model.graph.output[1].type.tensor_type.elem_type == TensorProto.FLOAT
    assert not [r for r in optimize_model(model, threshold=NEG_INF, argmax_only=("z",)).rejected if r.layer == "z"]
    # A head the rule matched but refused has the rule's row only (here: too few units).
    refused = optimize_model(head_model(logits_output=True), threshold=NEG_INF, argmax_only=("z",), min_units=1000)
    assert [r.layer for r in refused.rejected if r.rule == "argmax_head"] == ["head"]


@pytest.mark.parametrize(("min_units", "warned"), [(10**6, True), (8, False)])
def test_an_argmax_only_output_left_as_scores_is_warned_of(tmp_path, min_units, warned):
    """--argmax-only on a head the rule refuses (here: too few units) leaves the scores as
    they were: said in a warning, not only in --explain."""
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(head_model(tail="softmax", logits_output=True), src)
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--argmax-only", "p", "--objective", "flops",
                                  "--threshold=-inf", "--min-units", str(min_units)])
    assert r.exit_code == 0, r.output
    text = "warning: --argmax-only p: not rewritten as an arg-max head, the output stays the scores"
    assert (text in " ".join(r.output.split())) == warned, r.output


def test_a_softmax_on_axis_1_after_a_gemm_of_unknown_shape_is_on_the_class_axis():
    """Shape inference stops at an op it does not know (onnxruntime's FusedGemm in a model
    it optimised), but a Gemm's result is still a matrix: Softmax(axis=1) is on its classes."""
    model = head_model(tail="softmax")
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "Unknown", "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    res = optimize_model(model, threshold=NEG_INF, min_units=8)
    assert "ExPruneArgmaxHead" in node_types(res.model), [r.reason for r in res.rejected]
