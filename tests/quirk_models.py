"""Helpers that the pipeline's exporter-quirk tests share (test_pipeline_quirks.py,
test_pipeline_shapes.py, test_pipeline_graphs.py): what a compile rewrote and why not, and
the small model swept over every opset."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from helpers import init, vi
from onnx import helper, numpy_helper


def rewritten(res) -> list[str]:
    return sorted(r.candidate.layer for r in res.rewritten)


def reasons(res) -> dict[str, str]:
    return {r.layer: r.reason for r in res.rejected}


def sweep_model(opset: int, ir_version: int | None = None) -> onnx.ModelProto:
    """inp -> Relu -> Conv -> BN -> ReLU6 -> GlobalAveragePool -> Flatten -> Gemm(transB) -> Relu -> Gemm.

    ReLU6 is Clip with attributes before opset 11 and with Constant-node bounds after
    (PyTorch's export). IR 3 (opsets 7, 8) lists initializers as graph inputs too.
    """
    r = np.random.default_rng(6)
    inits = [init("W", (r.normal(size=(40, 32, 3, 3)) * 0.1).astype(np.float32)),
             init("B", r.normal(size=40).astype(np.float32)),
             init("s", r.uniform(0.5, 1.5, 40).astype(np.float32)), init("b", r.normal(size=40).astype(np.float32)),
             init("m", r.normal(size=40).astype(np.float32)), init("v", r.uniform(0.5, 1.5, 40).astype(np.float32)),
             init("G1", (r.normal(size=(48, 40)) / 6).astype(np.float32)),
             init("C1", r.normal(size=48).astype(np.float32)),
             init("G2", (r.normal(size=(48, 10)) / 7).astype(np.float32)),
             init("C2", r.normal(size=10).astype(np.float32))]
    nodes = [helper.make_node("Relu", ["inp"], ["x"]),
             helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"])]
    if opset < 11:
        nodes.append(helper.make_node("Clip", ["n"], ["a"], min=0.0, max=6.0))
    else:
        nodes += [helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(np.array(0, np.float32))),
                  helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.array(6, np.float32))),
                  helper.make_node("Clip", ["n", "lo", "hi"], ["a"])]
    nodes += [helper.make_node("GlobalAveragePool", ["a"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "G1", "C1"], ["g1"], name="fc1", transB=1),
              helper.make_node("Relu", ["g1"], ["h"]),
              helper.make_node("Gemm", ["h", "G2", "C2"], ["y"], name="fc2")]
    inputs = [vi("inp", ["N", 32, 6, 6])]
    imports = [helper.make_opsetid("", opset)]
    ir_version = ir_version or helper.find_min_ir_version_for(imports)
    if ir_version < 4:
        inputs += [vi(t.name, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "sweep", inputs, [vi("y", ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=imports, ir_version=ir_version)
    onnx.checker.check_model(model)
    return model


def sweep_feeds(g):
    return {"inp": g.normal(size=(2, 32, 6, 6)).astype(np.float32)}


def runtime_refuses(model: onnx.ModelProto) -> str | None:
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return None
    except Exception as exc:  # noqa: BLE001 - any refusal is the answer
        return str(exc)
