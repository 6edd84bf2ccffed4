"""A small conv net whose classifier head reads its last ReLU's zeros through each chain of
ops real exports put between them (test_zeros.py; test_screen.py and test_certify.py run it
too)."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import init, make_model, vi
from onnx import helper

C, HW, M, HIDDEN = 8, 6, 12, 16  # the conv's channels, map size, and the head's widths


def _pool(name, src, dst, kernel):
    return helper.make_node(name, [src], [dst], kernel_shape=[kernel, kernel], strides=[kernel, kernel])


# Each chain turns the Relu's [N, C, 6, 6] output "r" into "flat" [N, C * 9].
CHAINS = {
    "torch_vgg": lambda: [_pool("MaxPool", "r", "p", 2), _pool("AveragePool", "p", "a", 1),
                          helper.make_node("Flatten", ["a"], ["flat"], axis=1)],
    "tf2onnx": lambda: [_pool("MaxPool", "r", "p", 2), helper.make_node("Transpose", ["p"], ["t"], perm=[0, 2, 3, 1]),
                        helper.make_node("Reshape", ["t", "shape"], ["flat"])],
    "dropout": lambda: [helper.make_node("Dropout", ["r"], ["d"]), _pool("MaxPool", "d", "p", 2),
                        helper.make_node("Flatten", ["p"], ["flat"], axis=1)],
    "pool_indices": lambda: [helper.make_node("MaxPool", ["r"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
                             helper.make_node("Flatten", ["p"], ["flat"], axis=1)],
    # Not looked through: they mix values.
    "global_pool": lambda: [helper.make_node("GlobalAveragePool", ["r"], ["g"]),
                            helper.make_node("Flatten", ["g"], ["flat"], axis=1)],
    "avg_pool_2x2": lambda: [_pool("AveragePool", "r", "p", 2), helper.make_node("Flatten", ["p"], ["flat"], axis=1)],
    "shifted": lambda: [_pool("MaxPool", "r", "p", 2), helper.make_node("Add", ["p", "one"], ["s"]),
                        helper.make_node("Flatten", ["s"], ["flat"], axis=1)],
}
LOOKED_THROUGH = ["torch_vgg", "tf2onnx", "dropout", "pool_indices"]


def head_model(chain: str, matmul: bool = False, head_relu: bool = True, seed: int = 0) -> onnx.ModelProto:
    """x -> conv1 -> Relu -> conv2 -> Relu -> r -> <chain> -> flat -> fc1 [-> Relu -> fc2] -> out."""
    rng = np.random.default_rng(seed)
    flat_n = C if chain == "global_pool" else C * 9
    nodes = [helper.make_node("Conv", ["x", "W0", "B0"], ["c0"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "W1", "B1"], ["c1"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r"]), *CHAINS[chain]()]
    w2 = rng.normal(size=(flat_n, M)).astype(np.float32) / 5
    if matmul:
        nodes += [helper.make_node("MatMul", ["flat", "W2"], ["m2"], name="fc1"),
                  helper.make_node("Add", ["m2", "B2"], ["h"])]
    else:
        w2 = np.ascontiguousarray(w2.T)
        nodes.append(helper.make_node("Gemm", ["flat", "W2", "B2"], ["h"], name="fc1", transB=1))
    if head_relu:
        nodes += [helper.make_node("Relu", ["h"], ["hr"]), helper.make_node("Gemm", ["hr", "W3"], ["out"], name="fc2")]
    else:
        nodes.append(helper.make_node("Identity", ["h"], ["out"]))
    inits = [init("W0", rng.normal(size=(C, 3, 3, 3)).astype(np.float32) / 4),
             init("B0", rng.normal(size=C).astype(np.float32) / 4),
             init("W1", rng.normal(size=(C, C, 3, 3)).astype(np.float32) / 8),
             init("B1", rng.normal(size=C).astype(np.float32) / 2 - 0.5), init("W2", w2),
             init("B2", rng.normal(size=M).astype(np.float32)),
             init("W3", rng.normal(size=(M, 5)).astype(np.float32)),
             init("shape", np.array([-1, flat_n], np.int64)), init("one", np.ones(1, np.float32))]
    outputs = [vi("out", None)] + ([vi("idx", None, onnx.TensorProto.INT64)] if chain == "pool_indices" else [])
    return make_model(nodes, [vi("x", ["N", 3, HW, HW])], outputs, inits)
