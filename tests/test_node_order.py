"""io/node_order.py: a graph whose nodes are out of topological order (onnxruntime's float16
converter writes its input Casts last) is read in order instead of refused."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import init, run_plain, vi
from onnx import TensorProto, helper

from exprune_onnx.io.modelio import checked_in_memory, load_model
from exprune_onnx.io.node_order import in_order


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    """A model as given, unchecked (helpers.make_model checks it, and these the checker refuses)."""
    model = helper.make_model(helper.make_graph(nodes, "test", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _shuffled(rng) -> onnx.ModelProto:
    """Cast -> MatMul -> Relu -> MatMul, stored with the Cast last and the head first."""
    nodes = [helper.make_node("MatMul", ["h", "w2"], ["y"], name="head"),
             helper.make_node("Relu", ["a"], ["h"], name="relu"),
             helper.make_node("MatMul", ["x32", "w1"], ["a"], name="fc1"),
             helper.make_node("Cast", ["x"], ["x32"], name="cast", to=TensorProto.FLOAT)]
    model = _model(nodes, [vi("x", ["N", 8], TensorProto.DOUBLE)], [vi("y", ["N", 4])],
                       [init("w1", rng.standard_normal((8, 16)).astype(np.float32)),
                        init("w2", rng.standard_normal((16, 4)).astype(np.float32))])
    return model


def test_nodes_out_of_order_are_read_in_order(tmp_path):
    model = _shuffled(np.random.default_rng(0))
    try:
        onnx.checker.check_model(model)
        raise AssertionError("the checker took nodes out of order")
    except onnx.checker.ValidationError as exc:
        assert "topologically sorted" in str(exc)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    loaded = load_model(path)
    assert [n.name for n in loaded.graph.node] == ["cast", "fc1", "relu", "head"]
    onnx.checker.check_model(loaded)
    x = np.random.default_rng(1).standard_normal((3, 8))
    np.testing.assert_array_equal(run_plain(loaded, {"x": x})[0], run_plain(model, {"x": x})[0])
    assert [n.name for n in model.graph.node] == ["head", "relu", "fc1", "cast"]  # the caller's model is kept
    assert [n.name for n in checked_in_memory(model).graph.node] == ["cast", "fc1", "relu", "head"]


def test_nodes_in_order_and_graphs_with_no_order_are_left_as_they_are():
    model = _shuffled(np.random.default_rng(0))
    ordered = in_order(model)
    assert in_order(ordered) is None
    cycle = _model([helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                        helper.make_node("Add", ["x", "a"], ["y"])], [vi("x", ["N", 2])], [vi("y", ["N", 2])])
    assert in_order(cycle) is None
    missing = _model([helper.make_node("Add", ["x", "nowhere"], ["y"])], [vi("x", ["N", 2])],
                         [vi("y", ["N", 2])])
    assert in_order(missing) is None


def test_a_body_waits_for_the_outer_values_it_reads():
    """An If's branches may read a value of the graph around them: the If goes after its writer."""
    then = helper.make_graph([helper.make_node("Relu", ["outer"], ["t"])], "then", [], [vi("t", ["N", 2])])
    other = helper.make_graph([helper.make_node("Neg", ["outer"], ["e"])], "else", [], [vi("e", ["N", 2])])
    nodes = [helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then, else_branch=other),
             helper.make_node("Abs", ["x"], ["outer"], name="writer")]
    model = _model(nodes, [vi("x", ["N", 2]), vi("flag", [], TensorProto.BOOL)], [vi("y", ["N", 2])])
    assert [n.name for n in in_order(model).graph.node] == ["writer", "branch"]
