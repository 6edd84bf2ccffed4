"""Single-node layers of the two ops that lease large scratch (custom_ops/src/scratch.h),
with their feeds: for the tests that watch that memory (test_scratch.py, test_sanitizers.py)."""

from __future__ import annotations

import numpy as np
from op_cases import single_op_model
from sparse_conv_case import op_model, sparse_input

from exprune_onnx import ops


def sparse_conv_layer(size: int, channels: int):
    """A 3x3 ExPruneSparseConv, channels -> channels at size x size, half its inputs zero."""
    rng = np.random.default_rng(0)
    w = (0.1 * rng.standard_normal((channels, 3, 3, channels))).astype(np.float32)
    model = op_model((1, channels, size, size), w, attrs={"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]})
    return model, {"x": sparse_input(rng, (1, channels, size, size), 0.5)}


def conv_relu_layer(size: int, units: int, outs: int, batch: int):
    """A 1x1 ExPruneConvRelu of `units` inputs (k = 8) and `outs` outputs at size x size."""
    rng = np.random.default_rng(1)
    arrays = {"partial": rng.standard_normal((batch, outs, size, size)).astype(np.float32),
              "x": rng.standard_normal((batch, units, size, size)).astype(np.float32),
              "w_tail": (0.01 * rng.standard_normal((outs, units - 8, 1, 1))).astype(np.float32),
              "bias": np.zeros(outs, np.float32)}
    return single_op_model(ops.CONV_RELU, arrays, {"k": 8, "threshold": 0.0}, name="conv_relu"), arrays
