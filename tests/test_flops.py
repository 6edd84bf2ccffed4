"""measure/flops.py: a model this compiler wrote counts the dense FLOPs of the model it
came from, early-exit tails, sparse ops and arg-max heads included."""

from __future__ import annotations

import onnx_graphsurgeon as gs
import pytest
from helpers import calibration_mlp, conv_model, node_types

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.compiler.pipeline import infer_shapes
from exprune_onnx.measure.flops import model_flops

NEG_INF = float("-inf")


def flops(model):
    return model_flops(gs.import_onnx(infer_shapes(model)))


@pytest.mark.parametrize(("build", "options", "op"), [
    (calibration_mlp, {"min_units": 8}, ops.DENSE_RELU),
    (calibration_mlp, {"min_units": 8, "argmax_only": ("logits",)}, ops.ARGMAX_HEAD),
    (conv_model, {"min_units": 4}, ops.CONV_RELU),
])
def test_an_optimised_model_counts_the_dense_flops_of_its_original(build, options, op):
    model = build()
    first = exprune_onnx.optimize_model(model, threshold=NEG_INF, **options)
    assert op in node_types(first.model)
    total, unknown = flops(model)
    assert total > 0 and unknown == 0
    assert flops(first.model) == (total, 0)
    # A second run on the written model reports the same dense count (it was the partial products' alone).
    assert exprune_onnx.optimize_model(first.model, threshold=NEG_INF, **options).dense_flops == total
