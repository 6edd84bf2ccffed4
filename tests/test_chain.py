"""rules/chain.py: why a reduction with no ReLU-family activation after it is left alone."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import NEG_INF, init, make_model, vi
from onnx import helper

import exprune_onnx


@pytest.mark.parametrize(("tail", "reason"), [
    ("output", "'m' is a graph output, with no ReLU-family activation after it"),
    ("unused", "'m' is used by no node, with no ReLU-family activation after it"),
    ("sigmoid", "'m' does not feed a ReLU-family activation (consumers: Sigmoid)"),
])
def test_a_reduction_without_an_activation_says_what_follows_it(tail, reason):
    rng = np.random.default_rng(0)
    # Convs: a Gemm/MatMul ending in a graph output is a classifier head's case (argmax_head.py).
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("Conv", ["h", "w1"], ["m"], name="fc")]
    outputs = [vi("m" if tail == "output" else "h", None)]
    if tail == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["m"], ["y"]))
        outputs = [vi("y", None)]
    model = make_model(nodes, [vi("x", ["N", 4, 6, 6])], outputs,
                       [init("w0", rng.standard_normal((16, 4, 1, 1)).astype(np.float32)),
                        init("w1", rng.standard_normal((16, 16, 1, 1)).astype(np.float32))])
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, min_units=8)
    assert {r.layer: r.reason for r in res.rejected}["fc"] == reason
