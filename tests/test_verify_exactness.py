"""verify/exactness.py: with nothing pruned, the optimised model's outputs equal the original's
within float rounding, with optimisations off and at onnxruntime's default level."""

import math
import re
from pathlib import Path

import numpy as np
import onnx
from cli_calls import error_text, invoke
from onnx import helper, numpy_helper

import exprune_onnx

MODELS = Path(__file__).resolve().parent.parent / "models"
EXAMPLE = MODELS / "fashion_cnn.onnx"
SLICE = MODELS / "fashion_test_slice.npz"
FAILED = 8


def test_float16_outputs_are_exact_within_two_of_their_steps(tmp_path):
    """A model with float16 outputs (its compute float32, as deployments cast them): a float32
    sum in another order turns a few outputs' rounding by one float16 step, 2.9e-4 of the
    logits' range in a trial, and verify failed the compiler's own lossless model at 1e-4."""
    model = onnx.load(EXAMPLE)
    logits = model.graph.output[0]
    model.graph.node.append(helper.make_node("Cast", [logits.name], ["logits16"], to=onnx.TensorProto.FLOAT16))
    logits.name = "logits16"
    logits.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    original, optimized = tmp_path / "half.onnx", tmp_path / "half.exprune.onnx"
    onnx.save(model, original)
    onnx.save(exprune_onnx.optimize_model(model, threshold=-math.inf).model, optimized)
    r = invoke("verify", original, optimized, "--data", SLICE)
    assert r.exit_code == 0, r.output
    said = re.sub(r"[│\s]+", " ", r.output)
    assert "within 0.0001, 0.00195312 for float16 outputs (two of their steps) of their largest" in said, said
    assert "(largest 0.0e+00)" not in said  # some output did turn by a step: the test tests something


def test_a_rewrite_onnxruntime_runs_otherwise_only_when_optimising_fails_exactness(tmp_path, monkeypatch):
    """A QDQ model's float conv whose Relu feeds a MaxPool, then a QuantizeLinear: onnxruntime
    quantizes it at its default level, so a float rewrite of it (the rule used to miss it)
    moved the outputs there while verify, comparing with optimisations off only, passed it."""
    from exprune_onnx.rules import quantized

    rng = np.random.default_rng(3)
    s, z = numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Conv", ["d", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="layer"),
             helper.make_node("Relu", ["c"], ["a"]), helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[1, 1]),
             helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["y"])]
    weights = [s, z, numpy_helper.from_array((rng.normal(size=(24, 32, 3, 3)) * 0.1).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(size=24).astype(np.float32), "b")]
    x, y = (helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", c, 6, 6]) for n, c in (("x", 32), ("y", 24)))
    graph = helper.make_graph(nodes, "qdq", [x], [y], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    monkeypatch.setattr(quantized, "_quantized_by_runtime", lambda node, ctx: False)  # the rule as it was
    res = exprune_onnx.optimize_model(model, threshold=-math.inf, include_first_layer=True)
    assert [r.candidate.layer for r in res.rewritten] == ["layer"]
    original, optimized = tmp_path / "qdq.onnx", tmp_path / "qdq.exprune.onnx"
    onnx.save(model, original)
    onnx.save(res.model, optimized)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(16, 32, 6, 6)).astype(np.float32))
    r = invoke("verify", original, optimized, "--data", tmp_path / "d.npz")
    assert r.exit_code == FAILED, r.output
    assert "at onnxruntime's default optimisation level (equal with optimisations off" in error_text(r), r.output
