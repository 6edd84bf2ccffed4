"""Grouped convolutions: ExPruneSparseConv against onnxruntime's grouped Conv + Relu.

    python -m bench.sparse_conv_groups [--channels 128] [--size 28] [--threads 1] [--json PATH]

One 3x3 conv of C -> C channels (pads 1, batch 1) at each group count from depthwise (C
groups, 1 output channel a group) to 1, fed |N(0, 1)| inputs with 50% and 90% of their
elements set to 0 independently. Both models run side by side in one process
(measure.timing.measure: alternating runs, medians), and the op's outputs are checked
against the reference at optimisations off. The table is why the sparse_conv pass leaves
groups of fewer than MIN_GROUP_OUTPUTS output channels alone.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.sparse_conv_kernels import as_models

ZEROS = (0.5, 0.9)


def models(c: int, size: int, group: int, seed: int = 0) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Conv(group) -> Relu, and the same layer as one ExPruneSparseConv node."""
    from exprune_onnx import ops

    rng = np.random.default_rng([seed, c, size, group])
    weight = (rng.normal(size=(c, c // group, 3, 3)) * np.sqrt(2.0 / (9 * c // group))).astype(np.float32)
    bias = numpy_helper.from_array((rng.normal(size=c) * 0.05).astype(np.float32), "B")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, size, size])
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group)
    ref = helper.make_graph([helper.make_node("Conv", ["x", "W", "B"], ["h"], **attrs),
                             helper.make_node("Relu", ["h"], ["y"])], "conv_relu", [x], [y],
                            [numpy_helper.from_array(weight, "W"), bias])
    node = helper.make_node(ops.SPARSE_CONV, ["x", "w", "B"], ["y"], domain=ops.DOMAIN, activation="relu", **attrs)
    op = helper.make_graph([node], "sparse_conv", [x], [y],
                           [numpy_helper.from_array(ops.sparse_conv_weights(weight, group), "w"), bias])
    return as_models(ref, op)


def sparse_input(c: int, size: int, zeros: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng([seed, c, size])
    x = np.abs(rng.normal(size=(1, c, size, size)))
    return np.where(rng.random(x.shape) < zeros, 0.0, x).astype(np.float32)


def run(c: int, size: int, threads: int, runs: int) -> list[dict]:
    from exprune_onnx.measure.timing import measure
    from exprune_onnx.runtime import inference_session

    rows = []
    groups = [g for g in (c, c // 2, c // 4, c // 8, c // 16, 1) if g >= 1 and c % g == 0]
    for group in dict.fromkeys(groups):
        ref, op = models(c, size, group)
        for zeros in ZEROS:
            feeds = {"x": sparse_input(c, size, zeros)}
            want = inference_session(ref, optimize=False).run(None, feeds)[0]
            got = inference_session(op, optimize=False).run(None, feeds)[0]
            error = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
            lat = measure(ref, op, feeds, threads=threads, runs=runs, warmup=5)
            rows.append({"group": group, "outputs_per_group": c // group, "zeros": zeros,
                         "onnxruntime_ms": lat.original_ms[1], "op_ms": lat.optimized_ms[1], "ratio": lat.ratio,
                         "max_rel_error": error})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    from bench.write import machine

    before = machine()  # its load average: before the runs, and after them below
    rows = run(args.channels, args.size, args.threads, args.runs)
    after = machine()["load_average"]
    print(f"3x3 {args.channels}->{args.channels} @{args.size}x{args.size}, batch 1, {args.threads} thread(s); "
          f"{before['cpu']}, commit {before['commit']}, load {before['load_average']} -> {after}")
    print(f"{'group':>6} {'out/group':>9} {'zeros':>6} {'ort ms':>8} {'op ms':>8} {'ratio':>7} {'rel err':>9}")
    for r in rows:
        print(f"{r['group']:>6} {r['outputs_per_group']:>9} {r['zeros']:>6.0%} {r['onnxruntime_ms']:>8.3f} "
              f"{r['op_ms']:>8.3f} {r['ratio']:>7.2f} {r['max_rel_error']:>9.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": before, "load_after": after, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
