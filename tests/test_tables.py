"""report/tables.py: what `optimize` says about models it cannot see into."""

from __future__ import annotations

import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import conv_hw, save_model

from exprune_onnx.cli import main


@pytest.mark.parametrize(("level", "op"), [
    (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "com.microsoft.FusedConv"),
    (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "com.microsoft.nchwc.Conv"),
])
def test_a_model_saved_by_onnxruntime_is_named_as_such(tmp_path, level, op):
    model = conv_hw()
    for d, value in zip(model.graph.input[0].type.tensor_type.shape.dim, [1, 3, 12, 12]):
        d.dim_value = value  # fixed dims: --input-shape cannot help
    source = save_model(model, tmp_path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.optimized_model_filepath = str(tmp_path / "saved.onnx")
    ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
    r = CliRunner().invoke(main, ["optimize", str(tmp_path / "saved.onnx"), "-o", str(tmp_path / "o.onnx"),
                                  "--objective", "flops"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "onnxruntime's own fused ops" in text and op in text and "give it the model as exported" in text
    assert "--input-shape" not in text
