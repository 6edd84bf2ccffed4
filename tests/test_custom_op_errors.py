"""Bad inputs and attributes of the ExPrune early-exit ops (custom_ops/src): each one an
onnxruntime error naming the node and what is wrong, never a crash; and the Conv
attributes a copied node may carry. The ops' results: test_custom_op.py."""


from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import NODE
from onnx import helper
from op_cases import act, assert_ort_error, conv_case, dense_case, run_single_op, single_op_model

import exprune_onnx
from exprune_onnx import ops


def run(op, arrays, attrs):
    return run_single_op(op, arrays, attrs, name=NODE)


@pytest.mark.parametrize("tail_units,words", [
    (list(range(5, 19)), ["tail_units", "14", "n - k = 15"]),
    (list(range(5, 19)) + [20], ["tail_units", "unit 20", "position 14"]),
    (list(range(5, 19)) + [-1], ["tail_units", "unit -1"]),
])
def test_error_tail_units(tail_units, words):
    rng = np.random.default_rng(25)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    assert_ort_error(lambda: run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0, "tail_units": tail_units}),
                     *words)


def test_error_empty_tail_units():
    rng = np.random.default_rng(26)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    model = single_op_model(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0}, name=NODE)
    model.graph.node[0].attribute.append(helper.make_attribute("tail_units", [], attr_type=onnx.AttributeProto.INTS))
    assert_ort_error(lambda: exprune_onnx.inference_session(model, optimize=False), "tail_units is empty")


def test_error_wrong_rank():
    rng = np.random.default_rng(11)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    arrays["partial"] = arrays["partial"][0]
    arrays["x"] = arrays["x"][0]
    assert_ort_error(lambda: run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0}), "partial")
    arrays, _, attrs, _ = conv_case(rng, 1, 6, 3, (2, 5, 5), (1, 3, 3), 2)
    assert_ort_error(lambda: run(ops.CONV_RELU, arrays, {**attrs, "threshold": 0.0}), "spatial rank")


def test_error_w_tail_shape():
    rng = np.random.default_rng(12)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    arrays["w_tail"] = np.zeros((8, 16), np.float32)
    assert_ort_error(lambda: run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0}), "w_tail")
    arrays, _, attrs, _ = conv_case(rng, 1, 6, 3, (5, 5), (3, 3), 2)
    arrays["w_tail"] = np.zeros((3, 4, 3), np.float32)
    assert_ort_error(lambda: run(ops.CONV_RELU, arrays, {**attrs, "threshold": 0.0}), "w_tail")


def test_error_bias_shape():
    rng = np.random.default_rng(13)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    arrays["bias"] = np.zeros(7, np.float32)
    assert_ort_error(lambda: run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0}), "bias")


@pytest.mark.parametrize("k", [0, -1, 20, 25])
def test_error_k_out_of_range(k):
    rng = np.random.default_rng(14)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    assert_ort_error(lambda: run(ops.DENSE_RELU, arrays, {"k": k, "threshold": 0.0}), "k")
    arrays, _, attrs, _ = conv_case(rng, 1, 6, 3, (5, 5), (3, 3), 2)
    bad = {**attrs, "k": k if k < 6 else 6}
    assert_ort_error(lambda: run(ops.CONV_RELU, arrays, {**bad, "threshold": 0.0}), "k")


def test_error_wrong_dtype():
    rng = np.random.default_rng(15)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    arrays["x"] = arrays["x"].astype(np.float64)
    # onnxruntime rejects it against the op's declared input types, naming the node.
    assert_ort_error(lambda: run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0}), "x", ours=False)


def test_error_residual_shape():
    rng = np.random.default_rng(16)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    arrays["residual"] = np.zeros((4, 9), np.float32)
    assert_ort_error(lambda: run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0}), "residual")
    arrays, _, attrs, _ = conv_case(rng, 1, 6, 3, (5, 5), (3, 3), 2)
    arrays["residual"] = np.zeros((1, 3, 3, 4), np.float32)
    assert_ort_error(lambda: run(ops.CONV_RELU, arrays, {**attrs, "threshold": 0.0}), "residual")


def test_error_conv_output_shape():
    rng = np.random.default_rng(17)
    arrays, _, attrs, _ = conv_case(rng, 1, 6, 3, (7, 7), (3, 3), 2, strides=(2, 2))
    assert_ort_error(lambda: run(ops.CONV_RELU, arrays, {**attrs, "strides": [1, 1], "threshold": 0.0}),
                     "output shape")
    assert_ort_error(lambda: run(ops.CONV_RELU, arrays, {**attrs, "pads": [1, 1], "threshold": 0.0}), "pads")


@pytest.mark.parametrize("bad", [{"clip_max": -1.0}, {"auto_pad": "SAME"}, {"strides": [0, 1]},
                                 {"dilations": [1, -2]}, {"threshold": float("nan")}, {"k": 2.0},
                                 {"pads": [-1, 0, 0, 0]}, {"auto_pad": "VALID", "pads": [0, 0, 0, 0]},
                                 {"group": 2}, {"kernel_shape": [3, 2]}])
def test_error_attribute_ranges(bad):
    rng = np.random.default_rng(18)
    arrays, _, attrs, _ = conv_case(rng, 1, 6, 3, (5, 5), (3, 3), 2)
    assert_ort_error(lambda: run(ops.CONV_RELU, arrays, {**attrs, "threshold": 0.0, **bad}))


def test_conv_accepts_copied_conv_attributes():
    rng = np.random.default_rng(21)
    arrays, full, attrs, _ = conv_case(rng, 1, 6, 3, (5, 5), (3, 3), 2, pads=(1, 1, 1, 1))
    attrs = {**attrs, "group": 1, "kernel_shape": [3, 3], "threshold": float("-inf")}
    (y,) = run(ops.CONV_RELU, arrays, attrs)
    np.testing.assert_allclose(y, act(full, np.inf), rtol=1e-4, atol=1e-5)


def test_error_missing_attribute():
    rng = np.random.default_rng(19)
    arrays, _ = dense_case(rng, (4,), 20, 8, 5)
    assert_ort_error(lambda: run(ops.DENSE_RELU, arrays, {"k": 5}), "threshold")
