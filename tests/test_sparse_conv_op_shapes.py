"""ExPruneSparseConv on shapes at the edge of what it takes (a review of the op's C++): no
input channels at all, and a stride far past the row that an end pad lets step."""

from __future__ import annotations

import numpy as np
from sparse_conv_case import case, check, op_model, run
from test_sparse_conv_op import assert_node_error

from exprune_onnx import ops


def test_no_input_channels_give_the_bias_residual_and_activation():
    """C = 0: onnxruntime's Conv gives the bias; the op stored tile sums that no channel
    started, whatever the stack held (a conv run before on the same thread left its own)."""
    rng = np.random.default_rng(11)
    check(*case(rng, channels=8, outs=8, zeros=0.5, attrs={"pads": [1, 1, 1, 1]}))  # sums on the stack
    x = np.zeros((2, 0, 5, 6), np.float32)
    weight = np.zeros((8, 0, 3, 3), np.float32)
    b = np.linspace(-2.0, 2.0, 8).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1], "activation": "relu"}
    residual = rng.standard_normal((2, 8, 5, 6)).astype(np.float32)
    y = check(x, weight, b, attrs, residual=residual)[0]
    np.testing.assert_array_equal(y, np.maximum(b[None, :, None, None] + residual, 0))


def test_a_stride_far_past_the_row_is_refused_not_listed():
    """Two outputs 2^24 apart (an end pad of 2^24): the lists held a count for every column a
    tile of 24 positions could reach, 2.3 GB for a 1 x 1 input, where 2^26 would have run
    this machine out of memory."""
    x = np.ones((1, 1, 1, 1), np.float32)
    w = ops.sparse_conv_weights(np.ones((1, 1, 1, 1), np.float32))
    model = op_model(x.shape, w, None, None, {"strides": [1, 2**24], "pads": [0, 0, 0, 2**24]})
    assert_node_error(lambda: run(model, {"x": x}), "read at stride 16777216",
                      "spans more padded columns than this op lists (2^24)")
    # A stride past the row with outputs the lists can hold still runs (ONNX's answer: x, then padding).
    model = op_model(x.shape, w, None, None, {"strides": [1, 4096], "pads": [0, 0, 0, 4096]})
    np.testing.assert_array_equal(run(model, {"x": x})[0], [[[[1.0, 0.0]]]])
