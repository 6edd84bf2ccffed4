"""Choosing the StatsTest or Certified rule for every layer (rules/common.py), compiler level,
and which layers read raw features (first layers, left alone unless --include-first-layer).

`optimize_model(model, rule=..., alpha=...)` sets the rule of all layers; the compiled
graph must have the documented shape, run on onnxruntime with the ExPrune ops, prune,
and keep what it does not prune equal to the original model. Certified is lossless and
only accepted on layers whose input is provably non-negative.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import NEG_INF, assert_close, assert_equivalent, init, make_model, node_types, run_exprune, run_plain, vi
from onnx import TensorProto, helper, numpy_helper
from quirk_models import reasons, rewritten

import exprune_onnx
from exprune_onnx import optimize_model

C, C_OUT, HW = 64, 24, 8  # conv: channels in, out, spatial size
N_IN, N_OUT = 64, 40  # dense


# ------------------------------------------------------------------ models


def switched_off(values, axis, off, shift):
    """Adds `shift` to the first `off` output channels along `axis`."""
    index = [slice(None)] * values.ndim
    index[axis] = slice(0, off)
    values = values.copy()
    values[tuple(index)] += shift
    return values


def conv_model(seed=0, *, source="relu", bias_mean=0.0, off=0):
    """inp -> <source> -> x -> Conv(3x3, pad 1) -> Relu -> y. The first `off` output
    channels are switched off (weights leaning negative, negative bias), as many units
    of a trained network are for a given input."""
    rng = np.random.default_rng(seed)
    w = switched_off(rng.normal(size=(C_OUT, C, 3, 3)) / np.sqrt(C * 9), 0, off, -0.08).astype(np.float32)
    b = switched_off(0.3 * rng.normal(size=C_OUT) + bias_mean, 0, off, -1.0).astype(np.float32)
    nodes, inits = source_nodes(source, [1, C, 1, 1])
    nodes += [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["y"], name="act")]
    inits += [init("W", w), init("B", b)]
    return make_model(nodes, [vi("inp", ["N", C, HW, HW])], [vi("y", None)], inits)


def dense_model(seed=0, *, source="relu", bias_mean=0.0, off=0):
    """inp -> <source> -> x -> Gemm -> Relu -> y, the first `off` outputs switched off."""
    rng = np.random.default_rng(seed)
    w = switched_off(rng.normal(size=(N_IN, N_OUT)) / np.sqrt(N_IN), 1, off, -0.15).astype(np.float32)
    b = switched_off(0.3 * rng.normal(size=N_OUT) + bias_mean, 0, off, -1.0).astype(np.float32)
    nodes, inits = source_nodes(source, [1, N_IN])
    nodes += [helper.make_node("Gemm", ["x", "W", "B"], ["g"], name="fc"),
              helper.make_node("Relu", ["g"], ["y"], name="act")]
    inits += [init("W", w), init("B", b)]
    return make_model(nodes, [vi("inp", ["N", N_IN])], [vi("y", None)], inits)


def source_nodes(source, shift_shape):
    """How x is made from the graph input: ReLU (non-negative) or something that is not."""
    if source == "relu":
        return [helper.make_node("Relu", ["inp"], ["x"], name="relu_in")], []
    if source == "tanh":
        return [helper.make_node("Tanh", ["inp"], ["x"], name="tanh_in")], []
    if source == "add_input":  # relu(inp) + inp: may be negative
        return [helper.make_node("Relu", ["inp"], ["r"], name="relu_in"),
                helper.make_node("Add", ["r", "inp"], ["x"], name="add_in")], []
    if source == "add_shift":  # relu(inp) - 0.5
        return [helper.make_node("Relu", ["inp"], ["r"], name="relu_in"),
                helper.make_node("Add", ["r", "shift"], ["x"], name="add_in")], [
                    init("shift", np.full(shift_shape, -0.5, np.float32))]
    raise ValueError(source)


MODELS = {"conv": conv_model, "dense": dense_model}
OP = {"conv": "ExPruneConvRelu", "dense": "ExPruneDenseRelu"}
PRODUCT = {"conv": "Conv", "dense": "MatMul"}


def feeds(kind, seed, batch=2):
    rng = np.random.default_rng(1000 + seed)
    shape = (batch, C, HW, HW) if kind == "conv" else (batch, N_IN)
    return {"inp": rng.normal(size=shape).astype(np.float32)}


def op_node(model):
    return next(n for n in model.graph.node if n.domain == exprune_onnx.DOMAIN)


def attrs_of(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def with_outputs(model, names):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name in names:
        out.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return out


# ------------------------------------------------------------------ statstest


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_statstest_graph_prunes_and_keeps_exactly(kind):
    model = MODELS[kind](bias_mean=-0.3)
    res = optimize_model(model, threshold=0.0, rule="statstest", alpha=0.05, emit_stats=True)
    p = PRODUCT[kind]
    head = ["Gather", "Slice"] if kind == "conv" else ["Gather"]  # the dense op gathers its own tail
    assert node_types(res.model) == ["Relu", *head, p, "Mul", p, OP[kind]]
    assert [(r.candidate.layer, r.rule) for r in res.rewritten] == [({"conv": "conv", "dense": "fc"}[kind],
                                                                     "statstest")]
    onnx.checker.check_model(res.model)
    node = op_node(res.model)
    a = attrs_of(node)
    assert a["rule"] == b"statstest"
    assert a["z_crit"] == pytest.approx(-1.6448536, abs=1e-6)
    assert len(node.input) == 6 and node.input[4] == "" and node.input[5]
    consts = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    bias = consts[node.input[3]]
    taps = 9 if kind == "conv" else 1
    n = C if kind == "conv" else N_IN
    t_k, t_n = a["k"] * taps, n * taps
    probe = with_outputs(res.model, [node.input[0], node.input[5]])
    pruned_total = 0
    for seed in range(3):
        f = feeds(kind, seed)
        (ref,) = run_plain(model, f)
        y, stats, partial, partial_sq = run_exprune(probe, f)
        base = bias.reshape((1, -1) + (1,) * (partial.ndim - 2)).astype(np.float64)
        mean = partial.astype(np.float64) / t_k
        m = mean + base / t_n
        v = partial_sq.astype(np.float64) / t_k - mean * mean
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(v > 0, m / np.sqrt(np.where(v > 0, v, 1.0) / t_k),
                         np.where(m < 0, -np.inf, np.where(m > 0, np.inf, 0.0)))
        mask = z < np.float64(np.float32(a["z_crit"]))
        assert 0 < mask.sum() < mask.size, "the case must both prune and keep"
        assert stats.tolist() == [int(mask.sum()), mask.size]
        assert np.all(y[mask] == 0)
        assert_close(ref[~mask], y[~mask])
        pruned_total += int(stats[0])
    assert pruned_total > 0


def test_statstest_alpha_zero_prunes_nothing():
    model = conv_model(bias_mean=-0.3)
    res = optimize_model(model, threshold=0.0, rule="statstest", alpha=0.0, emit_stats=True)
    assert attrs_of(op_node(res.model))["z_crit"] == float("-inf")
    f = feeds("conv", 0)
    y, stats = run_exprune(res.model, f)
    assert stats[0] == 0
    assert_close(run_plain(model, f)[0], y)


# ------------------------------------------------------------------ certified


# Half the outputs switched off: those are provably <= 0, the others are not.
CERTIFIED = {"conv": {"off": C_OUT // 2, "bias_mean": 0.3}, "dense": {"off": N_OUT // 2, "bias_mean": 0.3}}


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_certified_graph_is_lossless_and_prunes(kind):
    model = MODELS[kind](**CERTIFIED[kind])
    res = optimize_model(model, threshold=0.0, rule="certified", emit_stats=True)
    head = ["Gather", "Slice"] if kind == "conv" else ["Gather"]
    assert node_types(res.model) == ["Relu", *head, PRODUCT[kind], OP[kind]]
    assert [r.rule for r in res.rewritten] == ["certified"]
    onnx.checker.check_model(res.model)
    node = op_node(res.model)
    assert attrs_of(node)["rule"] == b"certified"
    assert list(node.input[4:6]) == ["", ""] and len(node.input) == 8
    pruned = total = 0
    for seed in range(6):
        f = feeds(kind, seed, batch=1 + seed % 3)
        (ref,) = run_plain(model, f)
        y, stats = run_exprune(res.model, f)
        assert_close(ref, y)
        # lossless: nothing the original leaves positive is zeroed
        assert not np.any((ref > 1e-5 * max(float(ref.max()), 1e-6)) & (y == 0))
        pruned += int(stats[0])
        total += int(stats[1])
        assert stats[1] == ref.size
    assert 0 < pruned < total


@pytest.mark.parametrize("kind", ["conv", "dense"])
@pytest.mark.parametrize("source", ["tanh", "add_input", "add_shift"])
def test_certified_needs_a_nonnegative_input(kind, source):
    model = MODELS[kind](source=source)
    before = model.SerializeToString()
    res = optimize_model(model, threshold=0.0, rule="certified")
    assert not res.changed
    assert res.model.SerializeToString() == before
    assert model.SerializeToString() == before
    reasons = [r.reason for r in res.rejected]
    assert any("non-negative" in r for r in reasons), reasons
    # the same layer is accepted under the other rules
    assert optimize_model(model, threshold=0.0, rule="statstest").changed


# ------------------------------------------------------------------ first layers (raw features)


def test_layer_reading_a_slice_of_the_graph_input_is_a_first_layer():
    """SIGN-style GNNs slice per-hop raw features off one input: still raw, not exchangeable."""
    rng = np.random.default_rng(13)
    w = rng.normal(size=(40, 40)).astype(np.float32)
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a"], ["xs"]),
             helper.make_node("MatMul", ["xs", "w"], ["m"], name="hop"), helper.make_node("Relu", ["m"], ["y"])]
    inits = [init("w", w), init("s", np.array([0], np.int64)), init("e", np.array([40], np.int64)),
             init("a", np.array([1], np.int64))]
    model = make_model(nodes, [vi("x", ["N", 80])], [vi("y", ["N", 40])], inits)
    res = optimize_model(model, threshold=NEG_INF)
    assert not res.changed and "graph input" in res.rejected[0].reason
    assert optimize_model(model, threshold=NEG_INF, include_first_layer=True).changed


@pytest.mark.parametrize("before", ["scaler", "normalise"])
def test_a_layer_reading_scaled_raw_features_is_a_first_layer(before):
    """sklearn's StandardScaler (an ai.onnx.ml Scaler, which onnx's inference gives no
    shape) or (x - mean) / std before the first MatMul: still raw features. The shape is
    carried through the Scaler, so the next layer is a candidate (every MatMul read 'the
    rank of the input is unknown')."""
    rng = np.random.default_rng(14)
    if before == "scaler":
        pre = [helper.make_node("Scaler", ["x"], ["xs"], domain="ai.onnx.ml", offset=[0.5] * 40, scale=[2.0] * 40)]
    else:
        pre = [helper.make_node("Sub", ["x", "mean"], ["xc"]), helper.make_node("Div", ["xc", "std"], ["xs"])]
    nodes = [*pre, helper.make_node("Cast", ["xs"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "w0"], ["m0"], name="first"), helper.make_node("Relu", ["m0"], ["h"]),
             helper.make_node("MatMul", ["h", "w1"], ["m1"], name="second"), helper.make_node("Relu", ["m1"], ["y"])]
    inits = [init("w0", rng.normal(size=(40, 48)).astype(np.float32)),
             init("w1", rng.normal(size=(48, 32)).astype(np.float32)),
             init("mean", np.full(40, 0.5, np.float32)), init("std", np.full(40, 2.0, np.float32))]
    model = make_model(nodes, [vi("x", ["N", 40])], [vi("y", ["N", 32])], inits,
                       domains=["ai.onnx.ml"] if before == "scaler" else ())
    res = optimize_model(model, threshold=NEG_INF)
    assert rewritten(res) == ["second"], reasons(res)
    assert "graph input" in reasons(res)["first"]
    assert_equivalent(model, res.model, lambda g: {"x": g.normal(size=(3, 40)).astype(np.float32)}, draws=1)


@pytest.mark.parametrize("beside", ["embedding", "relu"])
def test_a_concat_holding_raw_features_is_a_first_layer(beside):
    """A tabular model's numbers concatenated with an embedding of its ids: the layer reads
    raw features (it was rewritten); a Concat of computed features alone is no first layer."""
    rng = np.random.default_rng(17)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]), helper.make_node("Relu", ["x"], ["xr"]),
             helper.make_node("Concat", ["x" if beside == "embedding" else "xr", "emb"], ["cat"], axis=1),
             helper.make_node("MatMul", ["cat", "w0"], ["m0"], name="first"), helper.make_node("Relu", ["m0"], ["y"])]
    inits = [init("w0", rng.normal(size=(48, 40)).astype(np.float32)),
             init("table", rng.normal(size=(10, 8)).astype(np.float32))]
    model = make_model(nodes, [vi("x", ["N", 40]), vi("ids", ["N"], TensorProto.INT64)], [vi("y", ["N", 40])], inits)
    res = optimize_model(model, threshold=NEG_INF)
    if beside == "embedding":
        assert rewritten(res) == [] and "(or holds) a graph input" in reasons(res)["first"]
        assert rewritten(optimize_model(model, threshold=NEG_INF, include_first_layer=True)) == ["first"]
    else:
        assert rewritten(res) == ["first"], reasons(res)


@pytest.mark.parametrize("op", ["reciprocal", "table"])
def test_new_features_from_the_input_make_no_first_layer(op):
    """1 / x, or a [N, 1] input times a [1, 48] table, computes features: the layer reading
    them is a candidate (only x + c, x - c, x * c, x / c that keep x's entries are raw)."""
    rng = np.random.default_rng(16)
    if op == "reciprocal":
        pre, width = [helper.make_node("Div", ["one", "x"], ["xs"])], 48
    else:
        pre, width = [helper.make_node("Mul", ["x", "table"], ["xs"])], 1
    nodes = [*pre, helper.make_node("MatMul", ["xs", "w0"], ["m0"], name="first"),
             helper.make_node("Relu", ["m0"], ["y"])]
    inits = [init("w0", rng.normal(size=(48, 40)).astype(np.float32)), init("one", np.ones(1, np.float32)),
             init("table", rng.normal(size=(1, 48)).astype(np.float32))]
    model = make_model(nodes, [vi("x", ["N", width])], [vi("y", ["N", 40])], inits)
    assert rewritten(optimize_model(model, threshold=NEG_INF)) == ["first"]


@pytest.mark.parametrize("source", ["x", "hidden"])
def test_a_scan_body_reading_the_graph_input_step_by_step_is_a_first_layer(source):
    """A Scan hands its body the scanned input one step at a time: a layer there reading
    the graph input reads raw features (refused, as outside the Scan); reading a hidden
    ReLU's output it is rewritten."""
    rng = np.random.default_rng(14)
    body = helper.make_graph(
        [helper.make_node("Gemm", ["xs", "w", "b"], ["g"], transB=1, name="step"),
         helper.make_node("Relu", ["g"], ["ys"]), helper.make_node("Identity", ["s_in"], ["s_out"])], "body",
        [vi("s_in", [1]), vi("xs", ["N", 40])], [vi("s_out", [1]), vi("ys", ["N", 48])],
        [init("w", rng.normal(size=(48, 40)).astype(np.float32)), init("b", rng.normal(size=48).astype(np.float32))])
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m"]), helper.make_node("Relu", ["m"], ["h"]),
             helper.make_node("Scan", ["s0", source if source == "x" else "h"], ["s", "y"], body=body,
                              num_scan_inputs=1, name="scan")]
    model = make_model(nodes, [vi("x", [4, "N", 40])], [vi("y", [4, "N", 48]), vi("h", [4, "N", 40])],
                       [init("s0", np.zeros(1, np.float32)), init("w0", rng.normal(size=(40, 40)).astype(np.float32))])
    res = optimize_model(model, threshold=NEG_INF)
    if source == "x":
        assert "graph input" in reasons(res)["step"] and not res.rewritten
        forced = optimize_model(model, threshold=NEG_INF, include_first_layer=True)
        assert "step" in [r.candidate.layer for r in forced.rewritten]
    else:
        assert [r.candidate.layer for r in res.rewritten] == ["step"]
        assert_equivalent(model, res.model, lambda r: {"x": r.normal(size=(4, 3, 40)).astype(np.float32)})
