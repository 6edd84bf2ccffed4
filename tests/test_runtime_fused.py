"""rules/runtime_fused.py and the FLOPs of onnxruntime's own ops: in a model saved after
onnxruntime's graph optimisations, a fused op the compiler does not split is left alone
with a reason a layer, fused products are counted as the ops they fuse, and those the count
does not cover are named."""

from __future__ import annotations

import json

import numpy as np
import onnx
from cli_calls import invoke
from helpers import init, make_model, scaled_normal, vi
from onnx import helper

from exprune_onnx.measure.flops import uncovered_names

C, M, HW = 4, 8, 8


def fused_conv(op: str = "FusedConv", domain: str = "com.microsoft") -> onnx.ModelProto:
    """Relu -> Conv+Relu as onnxruntime's extended level saves it (FusedConv, activation
    inside); with op "Conv" in the default domain, the model as exported."""
    attrs = {"activation": "Relu"} if op == "FusedConv" else {}
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node(op, ["r", "W", "B"], ["c"], name="conv", domain=domain, pads=[1, 1, 1, 1], **attrs)]
    if op != "FusedConv":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    out = "c" if op == "FusedConv" else "y"
    inits = [init("W", scaled_normal(M, C, 3, 3)), init("B", np.zeros(M, np.float32))]
    return make_model(nodes, [vi("x", [1, C, HW, HW])], [vi(out, [1, M, HW, HW])], inits,
                      domains=["com.microsoft"] if domain else [])


def fused_matmul() -> onnx.ModelProto:
    """Relu -> FusedMatMul (MatMul and a scale) -> Relu, onnxruntime's shapes kept in the
    file as it saves them: the MatMul -> Relu is inside, with no standard op to split into."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("FusedMatMul", ["r", "W"], ["m"], name="mm", domain="com.microsoft", alpha=0.5),
             helper.make_node("Relu", ["m"], ["y"])]
    model = make_model(nodes, [vi("x", [3, 16])], [vi("y", [3, M])], [init("W", scaled_normal(16, M))],
                       domains=["com.microsoft"])
    model.graph.value_info.append(vi("m", [3, M]))
    return model


def test_a_fused_op_that_stays_fused_is_left_alone_with_its_reason_and_counted(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(fused_matmul(), path)
    r = invoke("inspect", path)
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "runtime_fused" in text and "onnxruntime's own fused op" in text
    assert f"dense FLOPs: {2 * 16 * M} FLOPs per sample (Conv/Gemm/MatMul/FusedMatMul)" in text, text
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    r = invoke("optimize", path, "-o", out, "--explain", "--report", rep)
    assert r.exit_code == 0, r.output
    assert onnx.load(out) == onnx.load(path) and "onnxruntime's own fused op" in r.output
    # The warning reaches the report (and the Python API's warnings), not only the terminal.
    warnings = json.loads(rep.read_text())["warnings"]
    assert any("onnxruntime's own fused ops (com.microsoft.FusedMatMul)" in w for w in warnings), warnings
    assert sum("onnxruntime's own fused ops" in line for line in r.output.splitlines()) == 1


def test_a_fused_conv_is_counted_as_a_conv(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(fused_conv(), path)
    r = invoke("inspect", path)
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "runtime_fused" not in text, r.output
    assert f"dense FLOPs: {2 * M * C * 9 * HW * HW / 1e3:.2f} kFLOPs per sample (Conv/Gemm/MatMul/FusedConv)" in text


def test_the_model_as_exported_is_not_taken_for_a_fused_one(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(fused_conv("Conv", ""), path)
    r = invoke("inspect", path)
    assert r.exit_code == 0 and "runtime_fused" not in r.output and "fused op" not in r.output, r.output


def test_products_the_count_does_not_cover_are_named_by_op_and_layout_domain():
    nodes = [helper.make_node("Conv", ["a", "b"], ["c"], domain="com.microsoft.nchwc"),
             helper.make_node("Conv", ["c", "b"], ["d"], domain="com.microsoft.nchwc"),
             helper.make_node("QGemm", ["d"], ["e"], domain="com.microsoft"),
             helper.make_node("Conv", ["e", "b"], ["f"]), helper.make_node("FusedConv", ["f"], ["g"],
                                                                           domain="com.microsoft")]
    assert uncovered_names(nodes) == "1 QGemm, 2 com.microsoft.nchwc.Conv"
