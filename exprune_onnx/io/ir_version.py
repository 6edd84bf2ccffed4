"""The IR version a model is run and written with: the model's own, unless the installed
onnxruntime cannot read it (a model exported by a newer onnx than the runtime)."""

from __future__ import annotations

import functools

import onnx


@functools.lru_cache(maxsize=1)
def max_runtime_ir_version() -> int:
    """The newest IR version the installed onnxruntime loads, found by trying."""
    from onnx import TensorProto, helper

    from ..runtime import inference_session

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    for version in range(onnx.IR_VERSION, 3, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = version
        try:
            inference_session(model.SerializeToString(), library=False)
            return version
        except Exception:
            continue
    return 7


def runtime_ir_version(ir_version: int) -> int:
    """Keep the model's IR version unless onnxruntime cannot read it."""
    return min(ir_version, max_runtime_ir_version())


def runnable(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy stamped with an IR version onnxruntime reads.

    The compiler writes its output with such an IR version; running the original the
    same way lets the check compare a model exported by a newer onnx than the runtime.
    """
    ir_version = runtime_ir_version(model.ir_version)
    if ir_version == model.ir_version:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = ir_version
    return copy
