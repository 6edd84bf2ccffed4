"""bench/classifier_head.py: the grafted classifier is tf2onnx's form, and its first layer
reads the pool's zeros through the Transpose and Reshape."""

import sys
from pathlib import Path

import numpy as np
import onnx
from helpers import NEG_INF, assert_equivalent, init, make_model, vi
from onnx import helper

import exprune_onnx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import classifier_head as head  # noqa: E402

POOL, FLAT = head.POOL, head.FLAT


def trunk() -> onnx.ModelProto:
    """NHWC x -> Conv (via Transposes) -> Relu -> MaxPool -> Transpose -> Reshape -> a small head -> Softmax."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["xc", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], [POOL], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Transpose", [POOL], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "shape"], [FLAT]),
             helper.make_node("MatMul", [FLAT, "Wh"], ["h"]),
             helper.make_node("Softmax", ["h"], ["probs"], axis=-1)]
    inits = [init("W", rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
             init("shape", np.array([-1, 16], np.int64)), init("Wh", rng.normal(size=(16, 2)).astype(np.float32))]
    return make_model(nodes, [vi("x", ["N", 4, 4, 3])], [vi("probs", ["N", 2])], inits)


def test_grafted_head_is_read_sparsely_through_the_reshape():
    model = head.with_vgg_head(trunk(), widths=(16, 12, 8, 5))
    assert [n.op_type for n in model.graph.node][-9:] == ["MatMul", "Add", "Relu", "MatMul", "Add", "Relu",
                                                          "MatMul", "Add", "Softmax"]
    assert "Wh" not in {t.name for t in model.graph.initializer}  # the old head is gone
    assert model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value == 5
    res = exprune_onnx.optimize_model(model, min_units=1 << 30, sparse_relu="on",
                                      sparse_relu_layers=frozenset(head.LAYERS[:1]))
    assert [s.layer for s in res.sparse] == ["head/fc1"] and res.sparse[0].op_node.inputs[0].name == FLAT
    assert_equivalent(model, res.model, lambda rng: {"x": rng.random((2, 4, 4, 3), dtype=np.float32)})
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, min_units=1 << 30, sparse_relu="on",
                                      sparse_relu_layers=frozenset(head.LAYERS))
    assert sorted(s.layer for s in res.sparse) == sorted(head.LAYERS)
