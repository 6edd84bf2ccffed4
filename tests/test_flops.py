"""measure/flops.py: a model this compiler wrote counts the dense FLOPs of the model it
came from, early-exit tails, sparse ops and arg-max heads included."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import FOLDED_PER_SAMPLE, calibration_mlp, conv_model, folded, node_types

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.compiler.pipeline import infer_shapes
from exprune_onnx.measure.flops import batch_of, dense_flops, model_flops

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


@pytest.mark.parametrize(("batch", "seq_first"), [(1, False), (3, False), (1, True), (3, True), ("N", True)])
def test_a_batch_folded_into_another_axis_counts_in_full(batch, seq_first):
    model = folded(batch, seq_first)
    assert flops(model) == (FOLDED_PER_SAMPLE, 0)
    # The layer table's count agrees with the summary's.
    result = exprune_onnx.inspect_model(model, min_units=8, include_first_layer=True)
    assert [dense_flops(rw.candidate) for rw in result.rewritten] == [2 * 6 * 8 * 16]


def test_without_a_known_batch_the_first_axis_is_taken_for_it():
    # A symbolic batch that the Reshape hides ([unk, 8]): the rows are counted as samples.
    assert flops(folded("N")) == (2 * (8 * 16 + 16 * 4), 0)
    assert batch_of(gs.import_onnx(folded("N"))) == "N"
    # Inputs that disagree on their first axis name no batch.
    two = folded(1)
    two.graph.input.append(onnx.helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, [2, 6]))
    assert batch_of(gs.import_onnx(two)) is None


def test_rows_that_are_no_multiple_of_the_batch_count_as_one_sample_s():
    """A [1, 64] layer (a Loop body's, say) in a graph of batch 8: not 64 / 8 elements a sample."""
    from types import SimpleNamespace

    from exprune_onnx.measure.flops import positions

    def layer(shape, batch):
        return SimpleNamespace(output=SimpleNamespace(shape=shape), head_logits_shape=None, kind="dense",
                               batch=batch, outputs=64, seen_flops=None)

    assert positions(layer([1, 64], 8)) == 1
    assert positions(layer([16, 64], 8)) == 2  # the batch folded with two rows a sample
    assert positions(layer(["N", 64], "N")) == 1


def recurrent(op: str, layout: int, directions: int, outputs: list[str]):
    """x [N, 5, 3] (for layout 0 transposed to [5, N, 3], as PyTorch's batch_first exports
    it) -> op of hidden size 2 -> a MatMul of its last hidden state."""
    from helpers import init, make_model, vi
    from onnx import helper

    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    rng = np.random.default_rng(0)
    inits = [init("W", rng.standard_normal((directions, gates * 2, 3)).astype(np.float32)),
             init("R", rng.standard_normal((directions, gates * 2, 2)).astype(np.float32)),
             init("head", rng.standard_normal((2, 4)).astype(np.float32))]
    direction = "bidirectional" if directions == 2 else "forward"
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2])] if layout == 0 else []
    nodes += [helper.make_node(op, ["xt" if layout == 0 else "x", "W", "R"], outputs, hidden_size=2, layout=layout,
                               direction=direction),
              helper.make_node("MatMul", [outputs[1], "head"], ["y"])]
    return make_model(nodes, [vi("x", ["N", 5, 3])], [vi("y", None)], inits)


@pytest.mark.parametrize(("op", "layout", "directions", "outputs"), [
    ("LSTM", 0, 1, ["", "h"]), ("GRU", 1, 2, ["seq", "h"]), ("RNN", 0, 1, ["seq", "h"]),
])
def test_recurrent_ops_count_every_step_of_their_gates(op, layout, directions, outputs):
    """A GRU or LSTM went uncounted and unlisted, so a pruned head read as 31.5% of the
    model saved where 0.2% was."""
    from exprune_onnx.report.units import dense_flops_text

    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    model = recurrent(op, layout, directions, outputs)
    steps = 5 * 2 * directions * gates * 2 * (3 + 2)  # per step and direction: gates x 2 outputs of I + H MACs
    head = 2 * directions * 4 * 2  # h holds a [2] state per direction and sample
    assert flops(model) == (steps + head, 0)
    shown = dense_flops_text(exprune_onnx.inspect_model(model))
    assert shown.endswith(f"per sample (Conv/Gemm/MatMul/{op})")


@pytest.mark.parametrize(("group", "stride"), [(1, 2), (2, 1)])
def test_a_conv_transpose_counts_each_input_into_its_kernels(group, stride):
    """A UNet's upsampling ConvTranspose went uncounted, and was not among the uncounted:
    its share of the FLOPs read as saved."""
    from helpers import init, make_model, vi
    from onnx import helper

    from exprune_onnx.report.units import dense_flops_text

    rng = np.random.default_rng(0)
    inits = [init("w", rng.standard_normal((4, 6 // group, 3, 3)).astype(np.float32)),
             init("fc", rng.standard_normal((6, 2)).astype(np.float32))]
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["up"], strides=[stride, stride], group=group),
             helper.make_node("GlobalAveragePool", ["up"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "fc"], ["y"])]
    model = make_model(nodes, [vi("x", ["N", 4, 5, 7])], [vi("y", None)], inits)
    transposed = 2 * (4 * 5 * 7) * (6 // group) * 3 * 3  # every input element times its M / group 3x3 kernels
    assert flops(model) == (transposed + 2 * 6 * 2, 0)
    assert dense_flops_text(exprune_onnx.inspect_model(model)).endswith("per sample (Conv/Gemm/MatMul/ConvTranspose)")

