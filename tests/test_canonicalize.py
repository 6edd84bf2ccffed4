"""Canonicalisation and model-level handling: Constant weights, BN folding, subgraphs, IR versions."""

import numpy as np
import onnx
from helpers import NEG_INF, assert_equivalent, init, make_model, node_types, run_exprune, run_plain, vi
from onnx import TensorProto, helper, numpy_helper

from exprune_onnx import optimize_model
from exprune_onnx.io.ir_version import max_runtime_ir_version

rng = np.random.default_rng(0)
W = (rng.normal(size=(48, 32, 3, 3)) * 0.1).astype(np.float32)
B = rng.normal(size=48).astype(np.float32)


def _feeds(rng, shape=(2, 48, 6, 6)):
    return {"inp": rng.normal(size=shape).astype(np.float32)}


def test_weights_in_constant_nodes():
    w2 = (rng.normal(size=(32, 48, 1, 1)) * 0.2).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w2)),
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(rng.normal(size=32).astype(np.float32))),
        helper.make_node("Relu", ["inp"], ["x"]),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model = make_model(nodes, [vi("inp", ["N", 48, 6, 6])], [vi("y", None)])
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["Relu", "Gather", "Slice", "Conv", "ExPruneConvRelu"]
    assert_equivalent(model, res.model, _feeds)


def test_weight_computed_from_constants():
    """A Transpose of an initializer is a folded constant, so the layer still qualifies."""
    wt = (rng.normal(size=(40, 64)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0]),
        helper.make_node("Relu", ["inp"], ["x"]),
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Relu", ["m"], ["y"]),
    ]
    model = make_model(nodes, [vi("inp", ["N", 64])], [vi("y", None)], [init("wt", wt)])
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["Relu", "Gather", "MatMul", "ExPruneDenseRelu"]
    assert_equivalent(model, res.model, lambda r: {"inp": r.normal(size=(3, 64)).astype(np.float32)})


def test_shared_weight_is_not_modified_in_place():
    """Two convs share one weight; BN folding of one must leave the other's weight alone."""
    s = rng.uniform(0.5, 1.5, 48).astype(np.float32)
    nodes = [
        helper.make_node("Relu", ["inp"], ["x"]),
        helper.make_node("Conv", ["x", "W", "B"], ["c1"], name="a", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "z", "z", "one"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["y1"]),
        helper.make_node("Conv", ["x", "W", "B"], ["c2"], name="b", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["y2"]),
    ]
    zeros, ones = np.zeros(48, np.float32), np.ones(48, np.float32)
    inits = [init("W", W[:, :32]), init("B", B), init("s", s), init("z", zeros), init("one", ones)]
    model = make_model(nodes, [vi("inp", ["N", 32, 6, 6])], [vi("y1", None), vi("y2", None)], inits)
    res = optimize_model(model, threshold=NEG_INF)
    assert [r.candidate.layer for r in res.rewritten] == ["a"]
    assert_equivalent(model, res.model, lambda r: _feeds(r, (2, 32, 6, 6)))


def _branch(name, relu_input):
    return helper.make_graph(
        [helper.make_node("Conv", [relu_input, "W", "B"], [f"{name}_c"], name=f"{name}_conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", [f"{name}_c"], [f"{name}_y"], name=f"{name}_relu")],
        name, [], [vi(f"{name}_y", ["N", 48, 6, 6])],
    )


def test_rewrites_inside_if_branches():
    nodes = [
        helper.make_node("Relu", ["inp"], ["x"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=_branch("then", "x"), else_branch=_branch("else", "x")),
    ]
    w48 = (rng.normal(size=(48, 48, 3, 3)) * 0.1).astype(np.float32)
    inits = [init("W", w48), init("B", B)]
    model = make_model(nodes, [vi("inp", ["N", 48, 6, 6]), vi("cond", [], TensorProto.BOOL)],
                       [vi("y", ["N", 48, 6, 6])], inits)
    res = optimize_model(model, threshold=NEG_INF)
    assert sorted(r.candidate.layer for r in res.rewritten) == ["else_conv", "then_conv"]
    if_node = next(n for n in res.model.graph.node if n.op_type == "If")
    branch = helper.get_attribute_value(if_node.attribute[0])
    assert [n.op_type for n in branch.node] == ["Gather", "Slice", "Conv", "ExPruneConvRelu"]
    onnx.checker.check_model(res.model)
    for flag in (True, False):
        assert_equivalent(model, res.model, lambda r, flag=flag: {**_feeds(r), "cond": np.array(flag)}, draws=2)


def test_relu_output_that_is_graph_output_and_has_several_consumers():
    nodes = [
        helper.make_node("Relu", ["inp"], ["x"]),
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"]),
        helper.make_node("Neg", ["y"], ["n"]),
        helper.make_node("Sigmoid", ["y"], ["s"]),
    ]
    model = make_model(nodes, [vi("inp", ["N", 32, 5, 5])], [vi("y", None), vi("n", None), vi("s", None)],
                       [init("W", W[:, :32]), init("B", B)])
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["Relu", "Gather", "Slice", "Conv", "ExPruneConvRelu", "Neg", "Sigmoid"]
    assert [o.name for o in res.model.graph.output] == ["y", "n", "s"]
    assert_equivalent(model, res.model, lambda r: _feeds(r, (2, 32, 5, 5)))


def test_ir_version_kept_or_lowered():
    nodes = [helper.make_node("Relu", ["inp"], ["x"]), helper.make_node("Conv", ["x", "W", "B"], ["c"]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, [vi("inp", ["N", 32, 5, 5])], [vi("y", None)], [init("W", W[:, :32]), init("B", B)])
    assert optimize_model(model, threshold=NEG_INF).model.ir_version == 8
    model.ir_version = onnx.IR_VERSION
    out = optimize_model(model, threshold=NEG_INF).model
    assert out.ir_version == min(onnx.IR_VERSION, max_runtime_ir_version())
    feeds = _feeds(np.random.default_rng(1), (1, 32, 5, 5))
    model.ir_version = 8
    np.testing.assert_allclose(run_plain(model, feeds)[0], run_exprune(out, feeds)[0], rtol=1e-4, atol=1e-5)


def test_stats_output_counts_pruned_elements():
    nodes = [helper.make_node("Relu", ["inp"], ["x"]), helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, [vi("inp", ["N", 32, 5, 5])], [vi("y", None)], [init("W", W[:, :32]), init("B", B)])
    res = optimize_model(model, threshold=0.0, emit_stats=True)
    assert [o.name for o in res.model.graph.output][0] == "y"
    assert len(res.model.graph.output) == 2
    y, stats = run_exprune(res.model, _feeds(np.random.default_rng(2), (2, 32, 5, 5)))
    assert stats.dtype == np.int64 and stats[1] == y.size
    assert 0 < stats[0] <= np.sum(y == 0)


def test_rewrites_inside_loop_body_with_outer_scope_weights():
    """A Loop body that reads the outer graph's x; the layer inside is rewritten."""
    body = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="body_conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"], name="body_relu"),
         helper.make_node("Add", ["acc_in", "r"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("acc_in", ["N", 48, 6, 6])],
        [vi("cond_out", [], TensorProto.BOOL), vi("acc_out", ["N", 48, 6, 6])],
    )
    w48 = (rng.normal(size=(48, 48, 3, 3)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Relu", ["inp"], ["x"]),
        helper.make_node("Loop", ["trips", "", "zeros"], ["y"], body=body),
    ]
    inits = [init("W", w48), init("B", B), init("trips", np.array(2, np.int64))]
    model = make_model(nodes, [vi("inp", ["N", 48, 6, 6]), vi("zeros", ["N", 48, 6, 6])],
                       [vi("y", ["N", 48, 6, 6])], inits)
    res = optimize_model(model, threshold=NEG_INF)
    assert [r.candidate.layer for r in res.rewritten] == ["body_conv"]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, lambda r: {**_feeds(r), "zeros": np.zeros((2, 48, 6, 6), np.float32)}, draws=2)


def test_early_exit_outputs_carry_shapes():
    nodes = [helper.make_node("Relu", ["inp"], ["x"]), helper.make_node("Conv", ["x", "W", "B"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Sigmoid", ["r"], ["y"])]
    model = make_model(nodes, [vi("inp", ["N", 32, 5, 5])], [vi("y", None)], [init("W", W[:, :32]), init("B", B)])
    out = optimize_model(model, threshold=0.0).model
    infos = {v.name: v for v in out.graph.value_info}
    op = next(n for n in out.graph.node if n.domain)
    for name in (op.output[0], op.input[0]):
        shape = infos[name].type.tensor_type.shape
        assert infos[name].type.tensor_type.elem_type == TensorProto.FLOAT
        assert [d.dim_param or d.dim_value for d in shape.dim] == ["N", 48, 3, 3]


def _max_model(zero, dtype=np.float32):
    """inp -> Relu -> Conv -> Max(., zero) -> y: torch.clamp(min=0) as the dynamo exporter writes it."""
    w2 = (rng.normal(size=(32, 48, 1, 1)) * 0.2).astype(np.float32)
    nodes = [helper.make_node("Relu", ["inp"], ["x"]), helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Max", ["c", "zero"], ["y"], name="clamp")]
    return make_model(nodes, [vi("inp", ["N", 48, 6, 6])], [vi("y", None)],
                      [init("w", w2), init("zero", np.asarray(zero, dtype))])


def test_max_with_a_constant_zero_is_a_relu():
    from exprune_onnx.io.data import random_dataset
    from exprune_onnx.verify import verify

    model = _max_model(0.0)
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["Relu", "Gather", "Slice", "Conv", "ExPruneConvRelu"]
    assert_equivalent(model, res.model, _feeds)
    onnx.checker.check_model(res.model)
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 4, 0)))
    assert not optimize_model(res.model, threshold=NEG_INF).rewritten  # nothing more to do


def test_max_with_anything_but_a_float_zero_that_keeps_the_shape_is_left_alone():
    for zero in (0.5, [[[[0.0]]], [[[0.0]]]], np.zeros((1, 1, 1, 1, 1))):  # not zero; two values; a rank up
        res = optimize_model(_max_model(zero), threshold=NEG_INF)
        assert not res.rewritten and "Max" in node_types(res.model), zero
    res = optimize_model(_max_model(np.zeros((1, 1, 1, 1))), threshold=NEG_INF)  # [1, 1, 1, 1] beside rank 4
    assert res.rewritten


def test_a_zero_bias_computed_from_the_weight_s_shape_folds_with_batchnorm():
    """The dynamo exporter with optimize=False: a bias-free conv gets
    Expand(CastLike(0, x), Expand(Shape(w)[0:1], [1])); its BatchNorm was "not folded"."""
    w2 = (rng.normal(size=(32, 48, 3, 3)) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("Shape", ["w"], ["s"], start=0, end=1),
             helper.make_node("Expand", ["s", "one"], ["s1"]),
             helper.make_node("CastLike", ["zero", "x"], ["z"]),
             helper.make_node("Expand", ["z", "s1"], ["b"]),
             helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    stats = [init(name, (rng.random(32) + 0.5).astype(np.float32)) for name in ("g", "beta", "mean", "var")]
    model = make_model(nodes, [vi("inp", ["N", 48, 6, 6])], [vi("y", None)],
                       [init("w", w2), init("one", np.array([1], np.int64)), init("zero", np.array(0.0, np.float64)),
                        *stats], opset=18)
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["Relu", "Gather", "Slice", "Conv", "ExPruneConvRelu"], res.rejected
    assert_equivalent(model, res.model, _feeds)
    onnx.checker.check_model(res.model)


def test_a_batchnorm_whose_variance_gives_no_real_scale_is_left_unfolded():
    """Garbage weights (a variance below -epsilon): numpy's 'invalid value encountered in
    sqrt' reached the user's screen and the folded weights were NaN."""
    import warnings

    w2 = (rng.normal(size=(32, 48, 3, 3)) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    var = (rng.random(32) + 0.5).astype(np.float32)
    var[3] = -1.0
    stats = [init(name, (rng.random(32) + 0.5).astype(np.float32)) for name in ("g", "beta", "mean")]
    model = make_model(nodes, [vi("inp", ["N", 48, 6, 6])], [vi("y", None)], [init("w", w2), *stats, init("var", var)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = optimize_model(model, threshold=NEG_INF)
    assert "BatchNormalization" in node_types(res.model)
    assert all(np.isfinite(numpy_helper.to_array(t)).all() for t in res.model.graph.initializer)


def _onnxsim_ffn(tail: str = "plain"):
    """x -> Gemm -> Relu -> Reshape [2, 6, 16] -> Gemm -> Reshape -> Relu -> Reshape -> Gemm -> y:
    a Linear on 3-D input as onnxsim writes it (Reshape -> Gemm -> Reshape) between two
    layers. ``tail``: "shared" gives the middle Reshape's output a second reader, "output"
    makes it a graph output, "sigmoid" puts a Sigmoid where the middle Gemm was."""
    from helpers import scaled_normal

    middle = (helper.make_node("Sigmoid", ["r1"], ["g2"]) if tail == "sigmoid"
              else helper.make_node("Gemm", ["r1", "w2", "b2"], ["g2"], name="fc2", transB=1))
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["g1"], name="fc1", transB=1), helper.make_node("Relu", ["g1"], ["a1"]),
             helper.make_node("Reshape", ["a1", "flat"], ["r1"]), middle,
             helper.make_node("Reshape", ["g2", "back"], ["h"]), helper.make_node("Relu", ["h"], ["a2"]),
             helper.make_node("Reshape", ["a2", "flat"], ["r2"]),
             helper.make_node("Gemm", ["r2", "w3"], ["y"], name="fc3", transB=1)]
    outputs = [vi("y", [12, 8])]
    if tail == "shared":
        nodes.append(helper.make_node("Sigmoid", ["h"], ["side"]))
        outputs.append(vi("side", [2, 6, 16]))
    if tail == "output":
        outputs.append(vi("h", [2, 6, 16]))
    inits = [init("w1", scaled_normal(16, 16)), init("w2", scaled_normal(16, 16)), init("b2", np.zeros(16, np.float32)),
             init("w3", scaled_normal(8, 16)), init("flat", np.array([-1, 16], np.int64)),
             init("back", np.array([2, 6, 16], np.int64))]
    return make_model(nodes, [vi("x", [12, 16])], outputs, inits)


def test_a_relu_after_onnxsims_reshape_joins_the_layer_before_it():
    """onnxsim writes a Linear on 3-D input as Reshape -> Gemm -> Reshape, so the Relu read
    a Reshape, not the Gemm: a transformer FFN got no rewrite at all (an interop trial's).
    The Relu moves above the Reshape (they commute), and the layer is matched."""
    from exprune_onnx.io.data import random_dataset
    from exprune_onnx.verify import verify

    model = _onnxsim_ffn()
    res = optimize_model(model, threshold=NEG_INF, min_units=8)
    # fc1 reads the graph input (a first layer); fc2's Relu now follows it, and fc3 reads its zeros.
    assert node_types(res.model) == ["Gemm", "Relu", "Reshape", "Gather", "MatMul", "ExPruneDenseRelu", "Reshape",
                                     "Reshape", "ExPruneSparseMatMul"]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, lambda g: {"x": g.standard_normal((12, 16)).astype(np.float32)})
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 4, 0)))
    assert node_types(optimize_model(res.model, threshold=NEG_INF, min_units=8).model) == node_types(res.model)


def test_a_relu_stays_after_a_reshape_it_cannot_move_above():
    """Not where the Reshape's output has another reader or is a graph output (the Relu's
    input itself is needed), nor where no Gemm or MatMul writes what the Reshape reads."""
    for tail in ("shared", "output", "sigmoid"):
        res = optimize_model(_onnxsim_ffn(tail), threshold=NEG_INF, min_units=8)
        reasons = {r.layer: r.reason for r in res.rejected}
        if tail == "sigmoid":
            assert "fc2" not in reasons and node_types(res.model)[3:6] == ["Sigmoid", "Reshape", "Relu"], tail
        else:
            assert reasons["fc2"] == "'g2' does not feed a ReLU-family activation (consumers: Reshape)", tail
