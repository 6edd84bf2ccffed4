"""How far ExPruneSparseConv and onnxruntime's Conv are from the exact convolution.

    python -m bench.sparse_conv_accuracy [--layers 64x64x56,256x256x28,512x512x14] [--zeros 0.5]

Each layer (C -> M channels, S x S, 3x3, pads 1, batch 1, no bias) is fed |N(0, 1)| inputs
with a share `zeros` set to 0 independently and N(0, 1/(9C)) weights; both the op and
onnxruntime's Conv (optimisations off) run it, and float64 gives the exact sums. Per
output, the error is divided by the sum of |x * w| over its terms (float32's rounding of
such a sum is about 2^-24 = 6e-8 of that, times a growth with the number of terms); the
table prints the largest and the root mean square over the layer. Which path the op takes
is its own choice: $EXPRUNE_CONV_KERNELS=amx forces the tile path where the CPU has AMX
tiles, =avx512 the lists (docs/sparse_conv.md, "The tile path").
"""

from __future__ import annotations

import argparse

import numpy as np


def models(weight: np.ndarray):
    """Conv (pads 1, no bias) and the same layer as one ExPruneSparseConv node."""
    from onnx import TensorProto, helper, numpy_helper

    from bench.sparse_conv_kernels import as_models
    from exprune_onnx import ops

    c = weight.shape[1]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[0], None, None])
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    ref = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], **attrs)], "conv", [x], [y],
                            [numpy_helper.from_array(weight, "W")])
    node = helper.make_node(ops.SPARSE_CONV, ["x", "w"], ["y"], domain=ops.DOMAIN, **attrs)
    op = helper.make_graph([node], "sparse_conv", [x], [y], [numpy_helper.from_array(ops.sparse_conv_weights(weight), "w")])
    return as_models(ref, op)


def errors(c: int, m: int, size: int, zeros: float, seed: int = 0) -> dict:
    from exprune_onnx.runtime import inference_session

    rng = np.random.default_rng([seed, c, m, size])
    x = np.abs(rng.standard_normal((1, c, size, size))).astype(np.float32)
    x[rng.random(x.shape) < zeros] = 0.0
    weight = (rng.standard_normal((m, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    ref, op = models(weight)
    feeds = {"x": x}
    outputs = {name: inference_session(model, optimize=False).run(None, feeds)[0]
               for name, model in (("op", op), ("conv", ref))}
    row = {"layer": f"{c}->{m} @{size}x{size}", "zeros": zeros}
    for name, y in outputs.items():
        rel = relative_errors(y, x, weight)
        row[f"{name}_max"], row[f"{name}_rms"] = float(rel.max()), float(np.sqrt(np.mean(rel**2)))
    return row


def relative_errors(y: np.ndarray, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """|y - the exact 3x3, pads 1 convolution of x| / its sum of |x * w|, per output (float64)."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), (2, 3))
    exact = np.einsum("nchwij,mcij->nmhw", cols, weight.astype(np.float64), optimize=True)
    size_of = np.einsum("nchwij,mcij->nmhw", np.abs(cols), np.abs(weight.astype(np.float64)), optimize=True)
    return np.abs(y.astype(np.float64) - exact) / np.maximum(size_of, 1e-30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="64x64x56,256x256x28,512x512x14", help="C x M x S, comma-separated")
    parser.add_argument("--zeros", type=float, default=0.5)
    args = parser.parse_args(argv)
    print("layer            op max    op rms    conv max  conv rms  (error / sum |x * w|)")
    for spec in args.layers.split(","):
        c, m, size = (int(v) for v in spec.split("x"))
        r = errors(c, m, size, args.zeros)
        print(f"{r['layer']:<16} {r['op_max']:.2e}  {r['op_rms']:.2e}  {r['conv_max']:.2e}  {r['conv_rms']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
