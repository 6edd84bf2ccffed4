"""rules/chain.py: why a reduction with no ReLU-family activation after it is left alone."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import NEG_INF, init, make_model, vi
from onnx import helper

import exprune_onnx


@pytest.mark.parametrize(("tail", "reason"), [
    ("output", "'m' is a graph output, with no ReLU-family activation after it"),
    ("unused", "'m' is used by no node, with no ReLU-family activation after it"),
    ("sigmoid", "'m' does not feed a ReLU-family activation (consumers: Sigmoid)"),
    ("two_relus", "'m' feeds 3 nodes (Relu 'r1', Relu 'r2', Sigmoid 's'): each would need the whole result"),
    # A residual stream (a transformer's FFN output): two non-constant Adds and no activation.
    ("stream", "'m' does not feed a ReLU-family activation: after its residual Add, Add 'add2' adds another "
               "tensor and no Relu or Clip follows"),
    ("two_adds", "Add 'add2' is a second non-constant Add before the activation"),
    # MobileNetV2's linear bottleneck: said of the layer's output, not of the next block's sum.
    ("linear", "'m' does not feed a ReLU-family activation (a linear layer): Add 'add1' after it ends the chain "
               "('s1' does not feed a ReLU-family activation (consumers: Conv))"),
])
def test_a_reduction_without_an_activation_says_what_follows_it(tail, reason):
    rng = np.random.default_rng(0)
    # Convs: a Gemm/MatMul ending in a graph output is a classifier head's case (argmax_head.py).
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("Conv", ["h", "w1"], ["m"], name="fc")]
    outputs = [vi("m" if tail == "output" else "h", None)]
    if tail == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["m"], ["y"]))
        outputs = [vi("y", None)]
    if tail == "two_relus":  # it said "does not feed a ReLU-family activation (consumers: Relu)"
        nodes += [helper.make_node("Relu", ["m"], ["y"], name="r1"), helper.make_node("Relu", ["m"], ["y2"], name="r2"),
                  helper.make_node("Sigmoid", ["m"], ["y3"], name="s")]  # every consumer is counted
        outputs = [vi("y", None), vi("y2", None), vi("y3", None)]
    if tail == "linear":
        nodes += [helper.make_node("Add", ["m", "h"], ["s1"], name="add1"),
                  helper.make_node("Conv", ["s1", "w1"], ["y"], name="next")]
        outputs = [vi("y", None)]
    if tail in ("stream", "two_adds"):
        nodes += [helper.make_node("Add", ["m", "h"], ["s1"], name="add1"),
                  helper.make_node("Add", ["s1", "h"], ["s2"], name="add2")]
        end = "s2"
        if tail == "two_adds":
            nodes.append(helper.make_node("Relu", ["s2"], ["y"]))
            end = "y"
        outputs = [vi(end, None)]
    model = make_model(nodes, [vi("x", ["N", 4, 6, 6])], outputs,
                       [init("w0", rng.standard_normal((16, 4, 1, 1)).astype(np.float32)),
                        init("w1", rng.standard_normal((16, 16, 1, 1)).astype(np.float32))])
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, min_units=8)
    assert {r.layer: r.reason for r in res.rejected}["fc"] == reason


def _two_layers(rng, dense: bool):
    """x -> Conv -> Relu -> fc (a Conv or MatMul) -> m: the nodes and weights, and x's shape."""
    second = (helper.make_node("MatMul", ["h", "w1"], ["m"], name="fc") if dense
              else helper.make_node("Conv", ["h", "w1"], ["m"], name="fc"))
    nodes = [helper.make_node("Conv" if not dense else "MatMul", ["x", "w0"], ["a"]),
             helper.make_node("Relu", ["a"], ["h"]), second]
    w0 = rng.standard_normal((16, 4, 1, 1) if not dense else (4, 16)).astype(np.float32)
    w1 = rng.standard_normal((16, 16, 1, 1) if not dense else (16, 16)).astype(np.float32)
    return nodes, [init("w0", w0), init("w1", w1)], ["N", 4, 6, 6] if not dense else ["N", 4]


def _conv_then(op: str, swap: bool = False, dense: bool = False):
    """x -> Conv -> Relu -> <conv2 or MatMul fc> -> op(constant) -> Relu -> y."""
    rng = np.random.default_rng(1)
    value = (rng.random((1, 16, 1, 1) if not dense else (16,)) + 0.5).astype(np.float32)
    nodes, inits, shape = _two_layers(rng, dense)
    nodes += [helper.make_node(op, ["c", "m"] if swap else ["m", "c"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    return make_model(nodes, [vi("x", shape)], [vi("y", None)], [*inits, init("c", value)])


def _assert_one_group(model, dense: bool) -> None:
    """``model``'s second layer (fc) and all between it and its Relu became one early-exit
    op: the exact node list, equal outputs at -inf, verify, and nothing left for a second run."""
    from helpers import assert_equivalent, node_types, normal_feeds

    from exprune_onnx.io.data import random_dataset
    from exprune_onnx.verify import verify

    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, min_units=8)
    reduction, tail = ("MatMul", "ExPruneDenseRelu") if dense else ("Conv", "ExPruneConvRelu")
    # The partial product picks its k inputs with a Gather (a conv: and a Slice of the weights).
    assert node_types(res.model) == [reduction, "Relu", "Gather", *([] if dense else ["Slice"]), reduction, tail]
    assert_equivalent(model, res.model, normal_feeds(model))
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 4, 0)))
    again = exprune_onnx.optimize_model(res.model, threshold=NEG_INF, min_units=8)
    assert node_types(again.model) == node_types(res.model)


@pytest.mark.parametrize("dense", [False, True], ids=["conv", "matmul"])
@pytest.mark.parametrize("op", ["Sub", "Div"])
def test_a_constant_subtracted_or_divided_by_folds_into_the_group(op, dense):
    """torch's relu(conv(x) - c) and relu(conv(x) / t): a bias and a scale like Add and Mul."""
    _assert_one_group(_conv_then(op, dense=dense), dense)


@pytest.mark.parametrize("op", ["Sub", "Div"])
def test_the_intermediate_as_a_second_operand_does_not_fold(op):
    res = exprune_onnx.optimize_model(_conv_then(op, swap=True), threshold=NEG_INF, min_units=8)
    assert {r.layer: r.reason for r in res.rejected}["fc"] == f"{op} -> 's' takes the intermediate as its second operand"
    assert not res.changed


def _identities(dense: bool, exposed: bool = False):
    """x -> Conv -> Relu -> fc -> Identity -> Add(bias) -> Identity -> Relu -> y; ``exposed``:
    the first Identity's output is a graph output too."""
    rng = np.random.default_rng(2)
    nodes, inits, shape = _two_layers(rng, dense)
    nodes += [helper.make_node("Identity", ["m"], ["i1"]), helper.make_node("Add", ["i1", "c"], ["s"]),
              helper.make_node("Identity", ["s"], ["i2"]), helper.make_node("Relu", ["i2"], ["y"])]
    bias = rng.standard_normal((1, 16, 1, 1) if not dense else (16,)).astype(np.float32)
    outputs = [vi("y", None)] + ([vi("i1", None)] if exposed else [])
    return make_model(nodes, [vi("x", shape)], outputs, [*inits, init("c", bias)])


@pytest.mark.parametrize("dense", [False, True], ids=["conv", "matmul"])
def test_identities_between_a_layer_and_its_relu_join_its_group(dense):
    """Identity nodes between a layer and its activation (graph editors and some exporters
    leave them) blocked the layer: '... does not feed a ReLU-family activation (consumers:
    Identity)', a Keras trial found."""
    _assert_one_group(_identities(dense), dense)
    # An Identity whose output the graph also gives out keeps the whole result: not rewritten.
    exposed = exprune_onnx.optimize_model(_identities(dense, exposed=True), threshold=NEG_INF, min_units=8)
    assert {r.layer: r.reason for r in exposed.rejected}["fc"] == "intermediate 'i1' is a graph output"
