"""compiler/symbolic_shapes.py: onnxruntime's symbolic shape inference, quiet, bounded in
time, and asked once a model (a ShuffleNet v2 with symbolic H and W took 33 s to inspect
and printed 58 warnings of it on one optimize run)."""

import logging

import numpy as np
import onnx
from helpers import assert_equivalent, init, make_model, vi
from onnx import TensorProto, helper, numpy_helper

import exprune_onnx
from exprune_onnx.compiler import symbolic_shapes as ss
from exprune_onnx.compiler.pipeline import infer_shapes

LOGGER = "onnxruntime.tools.symbolic_shape_infer"


def slice_to_another_dim() -> onnx.ModelProto:
    """x [1, 4, H] sliced to y's length K on its last axis: whether K <= H, it cannot say."""
    nodes = [helper.make_node("Shape", ["y"], ["ys"]), helper.make_node("Slice", ["x", "zero", "ys", "axis"], ["out"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([2], np.int64), "axis")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, "H"]),
                                           helper.make_tensor_value_info("y", TensorProto.FLOAT, ["K"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def dims(model: onnx.ModelProto, name: str) -> list:
    vi = next(v for v in [*model.graph.value_info, *model.graph.output] if v.name == name)
    return [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]


def test_its_warnings_are_not_printed(caplog):
    logging.getLogger(LOGGER).setLevel(logging.NOTSET)
    with caplog.at_level(logging.WARNING):
        found = ss.symbolic_shapes(slice_to_another_dim())
    assert found is not None and dims(found, "out") == [1, 4, "H"]
    assert not [r for r in caplog.records if r.name == LOGGER]
    assert logging.getLogger(LOGGER).level == logging.NOTSET  # as it was


def test_a_model_asked_again_is_answered_from_the_first_answer(monkeypatch):
    calls = []
    real = ss._infer
    monkeypatch.setattr(ss, "_infer", lambda model: calls.append(1) or real(model))
    ss._cache.clear()
    model = slice_to_another_dim()
    first = ss.symbolic_shapes(model)
    first.graph.ClearField("output")  # a caller's change does not reach the next answer
    second = ss.symbolic_shapes(slice_to_another_dim())
    assert len(calls) == 1 and dims(second, "out") == [1, 4, "H"]
    other = slice_to_another_dim()
    other.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.array([1], np.int64), "axis"))
    ss.symbolic_shapes(other)  # a constant it reads differs: asked anew
    assert len(calls) == 2


def residual_block() -> onnx.ModelProto:
    """inp [N, 8, H, W] -> Relu -> x -> Conv(3x3, padded) -> Add(x) -> Relu: that the sum
    keeps x's shape takes arithmetic on H and W."""
    w = np.random.default_rng(0).normal(size=(8, 8, 3, 3)).astype(np.float32) / 8
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    return make_model(nodes, [vi("inp", ["N", 8, "H", "W"])], [vi("y", None)], [init("W", w)])


def test_out_of_time_it_gives_up_and_onnx_s_shapes_stand(monkeypatch):
    """The residual block's shapes proved by the symbolic inference, or left to onnx's
    where it runs out of time; either way the model is rewritten exactly."""
    model = residual_block()
    ss._cache.clear()
    assert ss.symbolic_shapes(model) is not None
    ss._cache.clear()
    monkeypatch.setattr(ss, "SECONDS", -1.0)
    assert ss.symbolic_shapes(model) is None
    assert infer_shapes(model).graph.value_info  # onnx's own
    res = exprune_onnx.optimize_model(model, threshold=float("-inf"), sparse_relu="on")
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, lambda rng: {"inp": rng.normal(size=(1, 8, 7, 5)).astype(np.float32)})
    ss._cache.clear()
