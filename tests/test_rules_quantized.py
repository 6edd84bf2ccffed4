"""rules/quantized.py: a float layer of a QDQ model that onnxruntime quantizes itself.

A quantizer's excluded Conv or Gemm keeps float weights, but sits between a per-tensor
DequantizeLinear and a QuantizeLinear: onnxruntime then quantizes the weight
(WeightBiasQuantization) and runs the unit as an integer op, so a float rewrite moved the
outputs by a quantization step at the default level (a trial's partly quantized CNN). The
integer and QDQ-weight forms are in test_pipeline_shapes.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import NEG_INF, init, make_model, node_types, vi
from onnx import helper
from quirk_models import reasons, rewritten

import exprune_onnx
from exprune_onnx import optimize_model

# Ops that keep a conv's [N, 24, 6, 6] result's shape (Unsqueeze and Squeeze in turn), with
# the attributes and constant inputs they need.
ATTRS = {"MaxPool": {"kernel_shape": [1, 1]}, "Transpose": {"perm": [0, 1, 3, 2]}}
CONSTANTS = {"Reshape": ["shape"], "Unsqueeze": ["last"], "Squeeze": ["last"], "Slice": ["zero", "all", "one"]}


def _model(op: str = "Conv", scale=0.05, between: str | None = None, quantized: bool = True,
           after: tuple = ("Relu",), opset: int = 13, exposed: bool = False) -> onnx.ModelProto:
    """Relu -> Q -> DQ -> [between] -> Conv|Gemm (float weight) -> Relu [-> Q -> DQ]: the
    layer's input straight from the DequantizeLinear unless ``between`` puts an op there,
    its output quantized again when ``quantized``, through the ops ``after``; ``exposed``
    makes the first of those a graph output too."""
    r = np.random.default_rng(21)
    channels = 32
    scale = np.array(scale, np.float32)
    zero = np.zeros(scale.shape, np.uint8)
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], **({"axis": 1} if scale.ndim else {})),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], **({"axis": 1} if scale.ndim else {}))]
    source = "xd"
    if between:
        nodes.append(helper.make_node(between, ["xd"], ["xb"], **ATTRS.get(between, {})))
        source = "xb"
    if op == "Conv":
        w = r.normal(size=(24, channels, 3, 3)).astype(np.float32) * 0.1
        nodes.append(helper.make_node("Conv", [source, "w", "b"], ["c"], pads=[1, 1, 1, 1], name="layer"))
        shape, out = ["N", channels, 6, 6], ["N", 24, 6, 6]
    else:
        w = r.normal(size=(channels, 24)).astype(np.float32) * 0.1
        nodes.append(helper.make_node("Gemm", [source, "w", "b"], ["c"], name="layer"))
        shape, out = ["N", channels], ["N", 24]
    for i, name in enumerate(after):
        nodes.append(helper.make_node(name, [f"c{i - 1}" if i else "c", *CONSTANTS.get(name, [])], [f"c{i}"],
                                      **ATTRS.get(name, {})))
    nodes.append(helper.make_node("Identity", [f"c{len(after) - 1}"], ["r" if quantized else "y"]))
    if quantized:
        nodes += [helper.make_node("QuantizeLinear", ["r", "s2", "z2"], ["rq"]),
                  helper.make_node("DequantizeLinear", ["rq", "s2", "z2"], ["y"])]
    inits = [init("s", scale), init("z", zero), init("w", w), init("b", r.normal(size=24).astype(np.float32)),
             init("s2", np.array(0.02, np.float32)), init("z2", np.array(0, np.uint8))]
    constants = {"shape": [-1, 24, 6, 6], "last": [4], "zero": [0], "all": [24], "one": [1]}
    used = {name for op_type in after for name in CONSTANTS.get(op_type, [])}
    inits += [init(name, np.array(value, np.int64)) for name, value in constants.items() if name in used]
    outputs = [vi("y", out)] + ([vi("c0", out)] if exposed else [])
    return make_model(nodes, [vi("inp", shape)], outputs, inits, opset=opset)


# onnxruntime walks Relu chains and Identity too (a review's); its QDQ propagation moves the
# QuantizeLinear up across a MaxPool or Transpose after the Relu, and the DequantizeLinear
# down across one before the layer (a trial's QDQ CNN whose excluded convs fed MaxPools).
# (op, after, between, exposed): a Relu that is a graph output too did not stop onnxruntime
# moving the QuantizeLinear over a Transpose.
QUANTIZED = [("Conv", ("Relu",), None, False), ("Gemm", ("Relu",), None, False),
             ("Conv", ("Relu", "Relu"), None, False), ("Conv", ("Identity", "Relu"), None, False),
             ("Conv", ("Relu", "MaxPool"), None, False), ("Conv", ("Relu", "Transpose", "MaxPool"), None, False),
             ("Conv", ("Relu",), "MaxPool", False), ("Conv", ("Relu", "Reshape"), None, False),
             ("Conv", ("Relu", "Unsqueeze", "Squeeze"), None, False), ("Conv", ("Relu", "Slice"), None, False),
             ("Conv", ("Relu", "Transpose"), None, True)]


@pytest.mark.parametrize(("op", "after", "between", "exposed"), QUANTIZED)
def test_a_float_layer_onnxruntime_quantizes_is_left_alone(op, after, between, exposed):
    model = _model(op, after=after, between=between, exposed=exposed)
    res = optimize_model(model, threshold=NEG_INF, include_first_layer=True)
    assert rewritten(res) == [] and not res.changed
    why = reasons(res)["layer"]
    assert "onnxruntime quantizes its float weight itself" in why, why


QDQ = ["Relu", "QuantizeLinear", "DequantizeLinear"]
CONV = ["Gather", "Slice", "Conv", "ExPruneConvRelu", "Identity"]


@pytest.mark.parametrize(("kwargs", "nodes", "why"), [
    ({"quantized": False}, QDQ + CONV, "no QuantizeLinear after it: onnxruntime keeps it float"),
    ({"quantized": False, "op": "Gemm"}, QDQ + ["Gather", "MatMul", "ExPruneDenseRelu", "Identity"], "on a Gemm"),
    ({"between": "Relu"}, QDQ + ["Relu"] + CONV + QDQ[1:], "a Relu between: its input is not the DequantizeLinear's"),
    ({"scale": [0.05] * 32}, QDQ + CONV + QDQ[1:], "a per-channel scale, which onnxruntime does not take"),
    ({"after": ("Relu", "MaxPool", "Relu")}, QDQ + CONV[:-1] + ["MaxPool", "Relu", "Identity"] + QDQ[1:],
     "a Relu after the MaxPool holds the QuantizeLinear there"),
    ({"after": ("Relu", "MaxPool"), "opset": 11}, QDQ + CONV[:-1] + ["MaxPool", "Identity"] + QDQ[1:],
     "onnxruntime moves a QuantizeLinear over a MaxPool from opset 12 only"),
])
def test_it_does_not_fire_where_onnxruntime_keeps_the_layer_float(kwargs, nodes, why):
    """The layer is rewritten, and at onnxruntime's default level its outputs equal the
    original's within float rounding (onnxruntime ran both in float)."""
    model = _model(**kwargs)
    res = optimize_model(model, threshold=NEG_INF, include_first_layer=True)
    assert rewritten(res) == ["layer"], (why, reasons(res))
    assert node_types(res.model) == nodes, why
    assert not optimize_model(res.model, threshold=NEG_INF, include_first_layer=True).changed  # nothing more to do
    onnx.checker.check_model(res.model)
    shape = (2, 32) if kwargs.get("op") == "Gemm" else (2, 32, 6, 6)
    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = exprune_onnx.inference_session(res.model.SerializeToString())
    np.testing.assert_allclose(ours.run(None, {"inp": x})[0], plain.run(None, {"inp": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("op", "after", "between", "exposed"), [case for case in QUANTIZED if case[0] == "Conv"])
def test_onnxruntime_does_quantize_such_a_layer(op, after, between, exposed):
    """Why the rule exists, checked on the installed onnxruntime: the original itself differs
    between no optimisation and the default level (int8 weights at the default)."""
    model = _model(op, after=after, between=between, exposed=exposed).SerializeToString()
    x = np.random.default_rng(5).normal(size=(2, 32, 6, 6)).astype(np.float32)
    runs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        runs.append(ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, {"inp": x})[0])
    assert np.abs(runs[0] - runs[1]).max() > 1e-4
