"""measure/timing.py: what the latency objective times."""

import numpy as np
import onnx
from helpers import init, make_model, vi
from onnx import helper

from exprune_onnx.measure.timing import constant_weights


def weight_model(ir_version: int) -> onnx.ModelProto:
    """x @ W, with W an initializer that is also listed as a graph input."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    inputs = [vi("x", ["N", 4]), vi("W", [4, 3])]
    return make_model(nodes, inputs, [vi("y", ["N", 3])], [init("W", np.ones((4, 3), np.float32))],
                      opset=13 if ir_version >= 4 else 8, ir_version=ir_version)


def test_timing_copy_makes_listed_initializers_constant():
    model = weight_model(8)
    timed = constant_weights(model)
    assert [i.name for i in timed.graph.input] == ["x"]
    assert [i.name for i in model.graph.input] == ["x", "W"]  # the model itself is left as it is
    onnx.checker.check_model(timed)


def test_ir3_initializers_are_constants_already():
    """Before IR 4 every initializer must be listed, and onnxruntime folds them all."""
    model = weight_model(3)
    assert constant_weights(model) is model
    plain = weight_model(8)
    del plain.graph.input[1:]
    assert constant_weights(plain) is plain
