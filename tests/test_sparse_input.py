"""The pass that emits ExPruneSparseMatMul (exprune_onnx/passes/sparse_input.py): the layer
after an early-exit layer, or a plain ReLU with --sparse-relu, skips its zero inputs. The op
itself: test_sparse_matmul_op.py."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from click.testing import CliRunner
from helpers import NEG_INF, assert_equivalent, init, make_model, node_types, normal_feeds, vi
from onnx import TensorProto, helper, numpy_helper

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.cli import main
from exprune_onnx.compiler.pipeline import infer_shapes
from exprune_onnx.io.data import random_dataset
from exprune_onnx.measure.flops import model_flops
from exprune_onnx.rules.common import is_nonnegative
from exprune_onnx.verify import verify

N_IN, HIDDEN, N_OUT = 48, 64, 10


def mlp(*, trans_b=1, alpha=1.0, beta=1.0, w2_input=False, share_w2=False, w2_inf=False, trans_a=False,
        y_output=False, seed=0):
    """inp -> Relu -> Gemm(fc1) -> Relu -> Gemm(fc2) -> out"""
    rng = np.random.default_rng(seed)
    w2 = rng.normal(size=(N_OUT, HIDDEN) if trans_b else (HIDDEN, N_OUT)).astype(np.float32)
    if w2_inf:
        w2[0, 0] = np.inf
    inputs = [vi("inp", ["N", N_IN])]
    inits = [init("W1", rng.normal(size=(N_IN, HIDDEN)).astype(np.float32) / 7),
             init("B1", rng.normal(size=HIDDEN).astype(np.float32)), init("B2", rng.normal(size=N_OUT).astype(np.float32))]
    if w2_input:
        inputs.append(vi("W2", list(w2.shape)))
    else:
        inits.append(init("W2", w2))
    h1 = "h1"
    nodes = [helper.make_node("Relu", ["inp"], ["h0"]),
             helper.make_node("Gemm", ["h0", "W1", "B1"], ["g1"], name="fc1"),
             helper.make_node("Relu", ["g1"], ["h1"], name="act1")]
    if trans_a:
        nodes.append(helper.make_node("Transpose", ["h1"], ["h1t"], perm=[1, 0]))
        h1 = "h1t"
    nodes.append(helper.make_node("Gemm", [h1, "W2", "B2"], ["out"], name="fc2", transA=int(trans_a),
                                  transB=trans_b, alpha=alpha, beta=beta))
    outputs = [vi("out", None)]
    if share_w2:  # a second user of the stored weight
        nodes.append(helper.make_node("Identity", ["W2"], ["w2_copy"]))
        outputs.append(vi("w2_copy", None))
    if y_output:
        outputs.append(vi("h1", None))
    return make_model(nodes, inputs, outputs, inits)


def ffn(*, extra_mm_consumer=False, transposed=False, shared=False):
    """[N, T, d] -> MatMul(W1) -> Add(b1) -> Relu -> MatMul(W2) -> Add(b2): a transformer's feed-forward.

    ``transposed``: W2 = Transpose(stored), as PyTorch exports nn.Linear on 3-D inputs;
    ``shared``: the stored matrix also feeds a graph output.
    """
    rng = np.random.default_rng(1)
    d, hidden = 32, 128
    w2 = rng.normal(size=(hidden, d)).astype(np.float32) / 11
    inits = [init("W1", rng.normal(size=(d, hidden)).astype(np.float32) / 6),
             init("b1", rng.normal(size=hidden).astype(np.float32)),
             init("W2t" if transposed else "W2", w2.T.copy() if transposed else w2),
             init("b2", rng.normal(size=(1, 1, d)).astype(np.float32))]
    nodes = [helper.make_node("Transpose", ["W2t"], ["W2"], perm=[1, 0])] if transposed else []
    nodes += [helper.make_node("MatMul", ["x", "W1"], ["m1"], name="fc1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"),
             helper.make_node("Relu", ["a1"], ["h"], name="act"),
             helper.make_node("MatMul", ["h", "W2"], ["m2"], name="fc2"),
             helper.make_node("Add", ["b2", "m2"], ["y"], name="fc2_bias")]
    outputs = [vi("y", None)]
    if extra_mm_consumer:
        outputs.append(vi("m2", None))
    if shared:
        nodes.append(helper.make_node("Neg", ["W2t"], ["w2_neg"]))
        outputs.append(vi("w2_neg", None))
    return make_model(nodes, [vi("x", ["N", 5, d])], outputs, inits)


def weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def sparse_node(model):
    return next(n for n in model.graph.node if n.op_type == ops.SPARSE_MATMUL)


@pytest.mark.parametrize("cfg", [{}, {"trans_b": 0}, {"alpha": 0.5, "beta": 2.0}])
def test_mlp_second_gemm_reads_sparsely(cfg):
    model = mlp(**cfg)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["Relu", "Gather", "MatMul", "ExPruneDenseRelu", "ExPruneSparseMatMul"]
    assert [(s.layer, s.op_types) for s in res.sparse] == [("fc2", ["Gemm"])] and not res.sparse_rejected
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, normal_feeds(model))
    # Weights stored once: the sparse op's weight is the only copy of W2.
    node, stored = sparse_node(res.model), weights(res.model)
    original = weights(model)["W2"]
    want = (original.T if cfg.get("trans_b", 1) else original) * np.float32(cfg.get("alpha", 1.0))
    np.testing.assert_array_equal(stored[node.input[1]], want)
    assert sum(v.size == original.size for v in stored.values()) == 1
    if cfg == {"trans_b": 0}:
        assert list(node.input[1:]) == ["W2", "B2"]  # used as stored: the very initializers


def test_ffn_matmul_and_add_become_one_op():
    model = ffn()
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, include_first_layer=True)
    assert node_types(res.model) == ["Gather", "MatMul", "ExPruneDenseRelu", "ExPruneSparseMatMul"]
    assert [s.op_types for s in res.sparse] == [["MatMul", "Add"]]
    node = sparse_node(res.model)
    assert node.input[1] == "W2" and node.output[0] == "y"
    np.testing.assert_array_equal(weights(res.model)[node.input[2]], weights(model)["b2"].reshape(-1))
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, normal_feeds(model))


def test_weight_computed_from_an_initializer_is_folded_once():
    model = ffn(transposed=True)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, include_first_layer=True)
    assert node_types(res.model) == ["Gather", "MatMul", "ExPruneDenseRelu", "ExPruneSparseMatMul"]
    stored = weights(res.model)
    assert "W2t" not in stored and sum(v.shape == (128, 32) for v in stored.values()) == 1
    np.testing.assert_array_equal(stored[sparse_node(res.model).input[1]], weights(model)["W2t"].T)
    assert_equivalent(model, res.model, normal_feeds(model))
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 4, 0)))


def test_weight_computed_from_a_shared_initializer_is_left_alone():
    model = ffn(transposed=True, shared=True)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, include_first_layer=True)
    assert not res.sparse and "would store it twice" in res.sparse_rejected[0].reason


def test_matmul_output_with_another_consumer_keeps_its_add():
    model = ffn(extra_mm_consumer=True)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, include_first_layer=True)
    assert node_types(res.model) == ["Gather", "MatMul", "ExPruneDenseRelu", "ExPruneSparseMatMul", "Add"]
    assert len(sparse_node(res.model).input) == 2
    assert_equivalent(model, res.model, normal_feeds(model))


def test_pruning_threshold_still_agrees_where_nothing_is_pruned_differently():
    """At threshold 0 the sparse op computes exactly what MatMul would on the pruned activations."""
    model = mlp()
    on = exprune_onnx.optimize_model(model, threshold=0.0)
    off = exprune_onnx.optimize_model(model, threshold=0.0, sparse_input=False)
    assert "Gemm" in node_types(off.model) and "Gemm" not in node_types(on.model)
    x = normal_feeds(model)(np.random.default_rng(3))
    a = exprune_onnx.inference_session(on.model).run(None, x)[0]
    b = exprune_onnx.inference_session(off.model).run(None, x)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("kwargs,options,reason", [
    ({"w2_input": True}, {}, "is not a constant"),
    ({}, {"min_units": 64}, "was not rewritten into an early-exit op"),
    ({"share_w2": True}, {}, "also feeds other nodes"),
    ({"w2_inf": True, "trans_b": 0}, {}, "NaN or Inf"),
])
def test_must_not_fire(kwargs, options, reason):
    model = mlp(**kwargs)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, **options)
    assert not res.sparse and "Gemm" in node_types(res.model)
    reasons = {r.layer: r.reason for r in res.sparse_rejected}
    assert reason in reasons["fc2"], reasons
    if not kwargs.get("w2_inf"):
        assert_equivalent(model, res.model, normal_feeds(model), draws=1)


def test_a_float16_layer_says_so_before_the_plain_relu_s_switch():
    """Not "was not rewritten into an early-exit op": no switch would read it sparsely."""
    from onnx import TensorProto

    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["inp", "W1"], ["g1"], name="fc1"), helper.make_node("Relu", ["g1"], ["h1"]),
             helper.make_node("MatMul", ["h1", "W2"], ["out"], name="fc2")]
    model = make_model(nodes, [vi("inp", ["N", N_IN], TensorProto.FLOAT16)], [vi("out", None, TensorProto.FLOAT16)],
                       [init("W1", rng.normal(size=(N_IN, HIDDEN)).astype(np.float16)),
                        init("W2", rng.normal(size=(HIDDEN, N_OUT)).astype(np.float16))])
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF)
    assert {r.layer: r.reason for r in res.sparse_rejected}["fc2"] == "the weight 'W2' is float16, only float32 is read sparsely"


def test_transposed_input_with_trans_a_is_refused():
    """Gemm(Transpose(y), transA=1) reads y's zeros through a Transpose, but as columns."""
    res = exprune_onnx.optimize_model(mlp(trans_a=True), threshold=NEG_INF, sparse_relu="on")
    assert not res.sparse
    assert "transA = 1" in {r.layer: r.reason for r in res.sparse_rejected}["fc2"]


def test_another_consumer_of_y_does_not_block():
    """The op only reads y, so y may also be a graph output (or feed anything else)."""
    model = mlp(y_output=True)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF)
    assert [s.layer for s in res.sparse] == ["fc2"]
    assert [o.name for o in res.model.graph.output] == ["out", "h1"]
    assert_equivalent(model, res.model, normal_feeds(model))


def test_second_run_changes_nothing():
    once = exprune_onnx.optimize_model(mlp(), threshold=0.0)
    twice = exprune_onnx.optimize_model(once.model, threshold=0.0)
    assert not twice.changed and not twice.sparse
    assert twice.model.SerializeToString() == once.model.SerializeToString()


def test_an_early_exit_op_s_partial_product_is_not_read_sparsely():
    """fc1's first k units are a MatMul of a Slice of a ReLU (stored unit order): the Slice
    keeps the zeros, but that MatMul is the early-exit group's own, not a layer to rewrite."""
    model = mlp()
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on", unit_order="stored")
    assert node_types(res.model) == ["Relu", "Slice", "MatMul", "ExPruneDenseRelu", "ExPruneSparseMatMul"]
    assert [(s.layer, s.source) for s in res.sparse] == [("fc2", ops.DENSE_RELU)]
    onnx.checker.check_model(res.model)
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 8, 0)))
    again = exprune_onnx.optimize_model(res.model, threshold=NEG_INF, sparse_relu="on", unit_order="stored")
    assert not again.changed


def test_pass_also_finds_early_exit_ops_already_in_the_model():
    model = mlp()
    dense = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_input=False)
    assert not dense.sparse and "Gemm" in node_types(dense.model)
    later = exprune_onnx.optimize_model(dense.model, threshold=NEG_INF)
    assert later.changed and not later.rewritten and [s.layer for s in later.sparse] == ["fc2"]
    assert_equivalent(model, later.model, normal_feeds(model))


def test_flops_count_the_sparse_op_as_the_dense_gemm():
    model = mlp()
    on = exprune_onnx.optimize_model(model, threshold=0.0)
    off = exprune_onnx.optimize_model(model, threshold=0.0, sparse_input=False)

    def flops(m):
        return model_flops(gs.import_onnx(infer_shapes(m)))

    assert flops(on.model) == flops(off.model) != (0, 0)
    assert flops(on.model)[1] == 0


def test_sparse_output_is_not_known_nonnegative():
    res = exprune_onnx.optimize_model(mlp(), threshold=0.0)
    graph = gs.import_onnx(res.model)
    node = next(n for n in graph.nodes if n.op == ops.SPARSE_MATMUL)
    relu_out = next(n for n in graph.nodes if n.op == ops.DENSE_RELU).outputs[0]
    assert is_nonnegative(relu_out) and not is_nonnegative(node.outputs[0])


def test_verify_accepts_the_sparse_op_and_catches_a_changed_weight():
    model = ffn()
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, include_first_layer=True)
    data = random_dataset(model, 8, 0)
    rows = verify(model, res.model, data)
    assert all(r.ok for r in rows), rows
    assert "ExPruneSparseMatMul" in rows[0].detail
    bad = onnx.ModelProto()
    bad.CopyFrom(res.model)
    w = next(t for t in bad.graph.initializer if t.name == "W2")
    value = numpy_helper.to_array(w).copy()
    value[3, 4] += 1.0
    w.CopyFrom(numpy_helper.from_array(value, "W2"))
    rows = verify(model, bad, data)
    assert rows[0].ok and not rows[1].ok and "W2" in rows[1].detail, rows


def test_verify_rejects_a_sparse_op_that_replaces_nothing():
    model = ffn()
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, include_first_layer=True, sparse_input=False)
    bad = onnx.ModelProto()
    bad.CopyFrom(res.model)
    add = next(n for n in bad.graph.node if n.op_type == "Add")
    add.CopyFrom(helper.make_node(ops.SPARSE_MATMUL, ["m2", "W2"], ["y"], name="bogus", domain=ops.DOMAIN))
    rows = verify(model, bad, random_dataset(model, 4, 0))
    want = "'m2' comes from MatMul 'fc2', not an early-exit op, Relu or Clip (or a pool or reshape of one)"
    assert not rows[0].ok and want in rows[0].detail, rows[0]


def test_cli_no_sparse_input_and_explain(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(mlp(w2_input=True), src)
    rep = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops", "--explain",
                                  "--no-check", "--report", str(rep)])
    assert r.exit_code == 0, r.output
    assert "sparse_input" in r.output and "is not a constant" in " ".join(r.output.split())
    # The report holds --explain's rows, the zero-input reads' among them.
    rows = {row["layer"]: row for row in json.loads(rep.read_text())["rejected"]}
    assert rows["fc2"]["rule"] == "sparse_input" and "is not a constant" in rows["fc2"]["reason"]
    onnx.save(mlp(), src)
    for flag, want in (("--no-sparse-input", "Gemm"), ("--sparse-input", ops.SPARSE_MATMUL)):
        r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops", "--threshold",
                                      "-inf", flag])
        assert r.exit_code == 0, r.output
        assert node_types(onnx.load(out))[-1] == want
    r = CliRunner().invoke(main, ["verify", str(src), str(out)])
    assert r.exit_code == 0, r.output


def test_threshold_attribute_is_not_added_to_the_sparse_op_by_exact_copy():
    from exprune_onnx.verify import exact_copy

    res = exprune_onnx.optimize_model(mlp(), threshold=0.0)
    copy = exact_copy(res.model)
    assert not sparse_node(copy).attribute
    assert math.isinf(next(a.f for n in copy.graph.node if n.op_type == ops.DENSE_RELU for a in n.attribute
                           if a.name == "threshold"))




# ------------------------------------------------------------------ after a plain ReLU


def clip_ffn(low, opset=17):
    """[N, 5, 32] -> MatMul -> Add -> Clip(low, 6) -> MatMul(W2) -> y; Clip's bounds are
    inputs from opset 11 on, attributes before."""
    rng = np.random.default_rng(3)
    inits = [init("W1", rng.normal(size=(32, 64)).astype(np.float32) / 6),
             init("b1", rng.normal(size=64).astype(np.float32)),
             init("W2", rng.normal(size=(64, 8)).astype(np.float32) / 8)]
    if opset >= 11:
        inits += [init("lo", np.array(low, np.float32)), init("hi", np.array(6.0, np.float32))]
        clip = helper.make_node("Clip", ["a1", "lo", "hi"], ["h"], name="act")
    else:
        clip = helper.make_node("Clip", ["a1"], ["h"], name="act", min=float(low), max=6.0)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["m1"], name="fc1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"), clip,
             helper.make_node("MatMul", ["h", "W2"], ["y"], name="fc2")]
    return make_model(nodes, [vi("x", ["N", 5, 32])], [vi("y", None)], inits, opset=opset,
                      ir_version=8 if opset >= 11 else 6)


@pytest.mark.parametrize("make", [ffn, lambda: clip_ffn(0.0), lambda: clip_ffn(0.0, opset=9)],
                         ids=["relu", "clip-input", "clip-attribute"])
def test_plain_relu_consumer_reads_sparsely_with_sparse_relu_on(make):
    """fc1 reads the graph input, so it is not rewritten; its activation stays plain."""
    model = make()
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on")
    act = next(n.op_type for n in model.graph.node if n.name == "act")
    assert node_types(res.model) == ["MatMul", "Add", act, "ExPruneSparseMatMul"]
    assert not res.rewritten and [(s.layer, s.source, s.after_relu) for s in res.sparse] == [("fc2", act, True)]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, normal_feeds(model))
    rows = verify(model, res.model, random_dataset(model, 8, 0))
    assert all(r.ok for r in rows), rows
    again = exprune_onnx.optimize_model(res.model, threshold=NEG_INF, sparse_relu="on")
    assert not again.changed and again.model.SerializeToString() == res.model.SerializeToString()


@pytest.mark.parametrize("options,reason", [
    ({}, "only with sparse_relu on"),
    ({"sparse_relu": "off"}, "only with sparse_relu on"),
    ({"sparse_relu": "on", "sparse_relu_layers": frozenset({"other"})}, "the latency objective found the model"),
    ({"sparse_relu": "on", "sparse_relu_layers": frozenset()}, "the latency objective found the model"),
])
def test_plain_relu_consumer_must_not_fire(options, reason):
    model = ffn()
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, **options)
    assert not res.changed and res.model is model
    assert reason in {r.layer: r.reason for r in res.sparse_rejected}["fc2"]


def test_clip_with_a_nonzero_floor_is_not_a_source_of_zeros():
    model = clip_ffn(-1.0)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on")
    assert not res.changed and not res.sparse and not res.sparse_rejected


def test_sparse_relu_layers_picks_among_plain_consumers():
    """The MLP with fc1 too small to rewrite: fc2 reads a plain Relu; only named consumers change."""
    model = mlp()
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, min_units=64, sparse_relu="on",
                                      sparse_relu_layers=frozenset({"fc2"}))
    assert [(s.layer, s.source) for s in res.sparse] == [("fc2", "Relu")]
    assert node_types(res.model) == ["Relu", "Gemm", "Relu", "ExPruneSparseMatMul"]
    assert_equivalent(model, res.model, normal_feeds(model))


def test_cli_sparse_relu(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(ffn(), src)
    for value, want in (("on", ops.SPARSE_MATMUL), ("auto", "Add"), ("off", "Add")):
        r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops",
                                      "--sparse-relu", value, "--threshold", "-inf"])
        assert r.exit_code == 0, r.output
        assert node_types(onnx.load(out))[-1] == want
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--sparse-relu", "maybe"])
    assert r.exit_code == 2 and "maybe" in r.output


def if_model():
    """x -> Relu -> h; If(c) then MatMul(h, W1) else MatMul(h, W2): the consumers live in
    the branches, the ReLU outside (a fuzzed model found that the timing session then
    did not register the library)."""
    rng = np.random.default_rng(4)
    branches = []
    for i in (1, 2):
        w = init(f"W{i}", rng.normal(size=(40, 6)).astype(np.float32))
        body = helper.make_graph([helper.make_node("MatMul", ["h", f"W{i}"], [f"y{i}"], name=f"mm{i}")], f"b{i}", [],
                                 [vi(f"y{i}", None)], [w])
        branches.append(body)
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="act"),
             helper.make_node("If", ["c"], ["y"], name="branch", then_branch=branches[0], else_branch=branches[1])]
    return make_model(nodes, [vi("x", ["N", 40]), vi("c", [], TensorProto.BOOL)], [vi("y", None)])


def test_consumers_inside_if_branches():
    from exprune_onnx.measure.timing import session
    from exprune_onnx.runtime import uses_library

    model = if_model()
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on")
    assert sorted(s.layer for s in res.sparse) == ["mm1", "mm2"] and not res.rewritten
    assert ops.SPARSE_MATMUL not in node_types(res.model) and uses_library(res.model) and not uses_library(model)
    onnx.checker.check_model(res.model)
    x = np.maximum(np.random.default_rng(5).normal(size=(3, 40)), 0).astype(np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        (want,) = session(model, 1).run(None, feeds)
        (got,) = session(res.model, 1).run(None, feeds)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_inspect_lists_the_gemms_that_may_read_a_relu_s_zeros():
    """inspect listed only convs, though optimize times MatMul/Gemm readers of a ReLU too (a trial's MLP)."""
    from helpers import three_layer_mlp

    res = exprune_onnx.inspect_model(three_layer_mlp())
    assert res.zero_input_candidates == [("h1", "Relu", ["Gemm"]), ("h2", "Relu", ["Gemm"]),
                                         ("out", "Relu", ["Gemm"])]
    assert exprune_onnx.inspect_model(three_layer_mlp(), sparse_input=False).zero_input_candidates == []
