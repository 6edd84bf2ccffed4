"""gemm_relu and matmul_relu: fully connected layers followed by Relu | Clip(0, c)."""

import numpy as np
import onnx
import pytest
from helpers import (
    NEG_INF,
    assert_close,
    assert_equivalent,
    expose,
    init,
    make_model,
    node_types,
    normal_feeds,
    run_exprune,
    threshold_of,
    vi,
)
from onnx import helper

from exprune_onnx import optimize_model

N_IN, N_OUT = 64, 40


def dense_model(*, op="gemm", trans_a=0, trans_b=0, alpha=1.0, beta=1.0, bn=False, residual=False, act="relu",
                rank=2, extra_consumer=False, graph_output=False, weight_input=False, first_layer=False,
                bias_shape=(N_OUT,), opset=17, seed=0, weight_3d=False):
    """inp -> Relu -> x -> Gemm | MatMul+Add -> [BN] -> [Add(r)] -> act -> y"""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(N_IN, N_OUT)) / np.sqrt(N_IN)).astype(np.float32)
    lead = ["N"] if rank == 2 else ["N", 5]
    inputs = [vi("inp", [N_IN, "N"] if trans_a else [*lead, N_IN])]
    inits = [init("B", rng.normal(size=bias_shape).astype(np.float32))]
    stored = w.T.copy() if trans_b else w
    stored = stored[None] if weight_3d else stored  # [1, n, O]: MatMul broadcasts it, no matrix of ours
    if weight_input:
        inputs.append(vi("W", list(stored.shape)))
    else:
        inits.append(init("W", stored))
    nodes = [] if first_layer else [helper.make_node("Relu", ["inp"], ["x"])]
    x = "inp" if first_layer else "x"
    if op == "gemm":
        nodes.append(helper.make_node("Gemm", [x, "W", "B"], ["g"], name="fc", transA=trans_a, transB=trans_b,
                                      alpha=alpha, beta=beta))
    else:
        nodes.append(helper.make_node("MatMul", [x, "W"], ["mm"], name="fc"))
        nodes.append(helper.make_node("Add", ["mm", "B"], ["g"], name="bias"))
    t = "g"
    if bn:
        inits += [init("s", rng.uniform(0.5, 1.5, N_OUT).astype(np.float32)), init("b", rng.normal(size=N_OUT).astype(np.float32)),
                  init("m", rng.normal(size=N_OUT).astype(np.float32)), init("v", rng.uniform(0.5, 1.5, N_OUT).astype(np.float32))]
        nodes.append(helper.make_node("BatchNormalization", [t, "s", "b", "m", "v"], ["bn"], name="bn"))
        t = "bn"
    if residual:
        inputs.append(vi("r", [*lead, N_OUT]))
        nodes.append(helper.make_node("Add", [t, "r"], ["sum"], name="add"))
        t = "sum"
    if act == "relu":
        nodes.append(helper.make_node("Relu", [t], ["y"], name="act"))
    else:
        inits += [init("lo", np.array(0, np.float32)), init("hi", np.array(6, np.float32))]
        nodes.append(helper.make_node("Clip", [t, "lo", "hi"], ["y"], name="act"))
    outputs = [vi("y", None)]
    if extra_consumer:
        nodes.append(helper.make_node("Neg", ["g"], ["side"]))
        outputs.append(vi("side", None))
    if graph_output:
        outputs.append(vi("g", None))
    return make_model(nodes, inputs, outputs, inits, opset=opset)


GEMM_CASES = {
    "gemm": {},
    "gemm_transB_alpha_beta": {"trans_b": 1, "alpha": 0.5, "beta": 2.0},
    "gemm_bn": {"bn": True, "bias_shape": (1, N_OUT)},
    "gemm_residual_relu6": {"residual": True, "act": "clip"},
    "gemm_transA": {"trans_a": 1},
}
MATMUL_CASES = {
    "matmul_add": {"op": "matmul"},
    "matmul_3d": {"op": "matmul", "rank": 3},
    "matmul_bn": {"op": "matmul", "bn": True},
    "matmul_3d_residual": {"op": "matmul", "rank": 3, "residual": True},
}


@pytest.mark.parametrize("case", {**GEMM_CASES, **MATMUL_CASES})
def test_rewrite_is_exact_at_minus_inf(case):
    model = dense_model(**{**GEMM_CASES, **MATMUL_CASES}[case])
    res = optimize_model(model, threshold=NEG_INF)
    transpose = ["Transpose"] if case == "gemm_transA" else []
    assert node_types(res.model) == ["Relu", *transpose, "Gather", "MatMul", "ExPruneDenseRelu"]
    assert [r.candidate.rule for r in res.rewritten] == ["gemm_relu" if case.startswith("gemm") else "matmul_relu"]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, normal_feeds(model))


@pytest.mark.parametrize("case", ["gemm_transB_alpha_beta", "matmul_3d_residual", "gemm_residual_relu6"])
def test_finite_threshold_prunes_exactly(case):
    cfg = {**GEMM_CASES, **MATMUL_CASES}[case]
    model = dense_model(**cfg)
    res = optimize_model(model, threshold=0.0)
    op = next(n for n in res.model.graph.node if n.domain)
    attrs = threshold_of(res.model)
    k = attrs["k"]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    w = weights["W"].T if cfg.get("trans_b") else weights["W"]
    alpha, beta = cfg.get("alpha", 1.0), cfg.get("beta", 1.0)
    bias = beta * weights["B"].reshape(-1)
    probe = expose(res.model, [op.input[0]])
    for seed in range(3):
        feed = normal_feeds(model)(np.random.default_rng(seed))
        y, part = run_exprune(probe, feed)
        x = np.maximum(feed["inp"], 0).astype(np.float64)
        base = bias + (feed["r"] if cfg.get("residual") else 0)
        full = np.clip(alpha * (x @ w) + base, 0, attrs["clip_max"])
        pruned = base + (N_IN / k) * part < 0.0
        assert 0 < pruned.sum() < pruned.size
        assert np.all(y[pruned] == 0)
        assert_close(full[~pruned], y[~pruned])


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"extra_consumer": True}, "also feeds"),
        ({"graph_output": True}, "is a graph output"),
        ({"weight_input": True}, "not a constant"),
        ({"first_layer": True}, "graph input"),
        ({"op": "matmul", "extra_consumer": True}, "also feeds"),
        ({"op": "matmul", "weight_input": True}, "not a constant"),
        ({"op": "matmul", "weight_3d": True}, f"the right operand 'W' has shape [1, {N_IN}, {N_OUT}], not a matrix"),
        ({"bias_shape": (3, N_OUT)}, "not a per-output bias"),
        ({"opset": 8}, "opset 8"),
    ],
)
def test_must_not_fire(kwargs, reason):
    model = dense_model(**kwargs)
    before = model.SerializeToString()
    res = optimize_model(model, threshold=0.0)
    assert not res.changed
    assert res.model.SerializeToString() == before
    assert any(reason in r.reason for r in res.rejected), [r.reason for r in res.rejected]


def test_second_run_finds_nothing():
    model = dense_model(op="matmul", rank=3, residual=True)
    once = optimize_model(model, threshold=0.0)
    assert once.changed
    assert not optimize_model(once.model, threshold=0.0).changed


def test_threads_do_not_change_results():
    model = dense_model(op="matmul", rank=3)
    res = optimize_model(model, threshold=0.0)
    feed = normal_feeds(model)(np.random.default_rng(7))
    one = run_exprune(res.model, feed, threads=1)[0]
    two = run_exprune(res.model, feed, threads=2)[0]
    np.testing.assert_array_equal(one, two)
