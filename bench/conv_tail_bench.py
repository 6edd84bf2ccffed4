"""Latency of ExPruneConvRelu against plain onnxruntime on single 3x3 conv layers.

    python bench/conv_tail_bench.py [--runs 50] [--threads 1,2] [--library PATH]

Each case is one layer, inp -> Relu -> Conv(3x3, pad 1) -> Relu, batch 1. The
original model runs in plain onnxruntime (ORT_ENABLE_ALL); the compiled model runs in
`exprune_onnx.inference_session` with the same options and thread count, in the same
process. Thresholds are chosen per case from quantiles of the exact estimate the op
evaluates (base + (n/k) * partial, in float64), read by exposing the partial sum, so
that about 100%, 50%, 30% and 10% of the outputs survive; the survivor column is the
fraction the op itself reports through its stats output.

    ideal = dense * (k/n + (1 - k/n) * survivors)
    % ideal = ideal / exprune   (100% = phase 2 costs exactly its share of the work)

`--library` (or $EXPRUNE_ONNX_LIBRARY) runs against another build of the op library,
e.g. an older one, to compare kernels without reinstalling.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SHAPES = [(64, 56), (128, 28), (256, 14)]  # (C = O, H = W)
SURVIVORS = [1.0, 0.5, 0.3, 0.1]


def conv_model(channels: int, size: int, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    fan_in = channels * 9
    w = (rng.normal(size=(channels, channels, 3, 3)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    b = (rng.normal(size=channels) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Relu", ["inp"], ["x"], name="relu_in"),
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="act"),
    ]
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        nodes, "conv_tail", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def options(threads: int) -> ort.SessionOptions:
    """What exprune_onnx.inference_session(model, threads=threads) uses, minus the library."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    return opts


def custom_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.domain == "ai.exprune")


def attr(node: onnx.NodeProto, name: str):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def estimate(compiled: onnx.ModelProto, feeds: dict, weights: dict) -> tuple[np.ndarray, int, int]:
    """The op's exact float64 estimate for every output element, and k, n."""
    import exprune_onnx

    node = custom_node(compiled)
    probe = onnx.ModelProto()
    probe.CopyFrom(compiled)
    probe.graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None))
    partial = exprune_onnx.inference_session(probe, optimize=False).run([node.input[0]], feeds)[0]
    k = attr(node, "k")
    n = weights["W"].shape[1]
    base = weights["B"].astype(np.float32).reshape(1, -1, 1, 1)
    est = base.astype(np.float64) + (float(n) / float(k)) * partial.astype(np.float64)
    return est, k, n


def timed(sess: ort.InferenceSession, feeds: dict, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        out.append(time.perf_counter() - t0)
    return out


def compare(dense: ort.InferenceSession, ours: ort.InferenceSession, feeds: dict, runs: int,
            warmup: int) -> tuple[float, float]:
    """Seconds per run of each: the lowest of the medians of `blocks` alternating blocks.

    Alternating blocks make drift hit both alike; taking the best block's median keeps
    a burst of load from other processes out of one side's number. Each session's pool
    threads spin for a while after a run, so a pause and a few untimed runs precede
    every block, keeping the idle session from competing for cores.
    """
    blocks = 5
    size = max(1, runs // blocks)
    td, to = [], []
    for _ in range(blocks):
        for sess, out in ((dense, td), (ours, to)):
            time.sleep(0.02)
            for _ in range(warmup):
                sess.run(None, feeds)
            out.append(float(np.median(timed(sess, feeds, size))))
    return min(td), min(to)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before each timed block")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--shapes", default=",".join(f"{c}x{s}" for c, s in SHAPES),
                        help="C x H pairs, e.g. 64x56,128x28")
    parser.add_argument("--survivors", default=",".join(str(s) for s in SURVIVORS))
    parser.add_argument("--library", default=None, help="op library to load instead of the installed one")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.library:
        os.environ["EXPRUNE_ONNX_LIBRARY"] = os.path.abspath(args.library)

    import exprune_onnx

    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    fractions = [float(s) for s in args.survivors.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    print(f"onnxruntime {ort.__version__}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"library {exprune_onnx.get_library_path()}; best median of 5 blocks of {max(1, args.runs // 5)} runs")
    header = (f"{'shape':>14} {'thr':>3} {'k/n':>6} {'surv %':>7} {'dense ms':>9} {'exprune ms':>10} "
              f"{'ratio':>6} {'% ideal':>8}")
    print(header)
    print("-" * len(header))
    for channels, size in shapes:
        model = conv_model(channels, size, args.seed)
        weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        rng = np.random.default_rng(args.seed + 1)
        feeds = {"inp": rng.normal(size=(1, channels, size, size)).astype(np.float32)}
        est, k, n = estimate(exprune_onnx.optimize_model(model, threshold=float("-inf")).model, feeds, weights)
        for t in threads:
            dense = ort.InferenceSession(model.SerializeToString(), options(t), providers=["CPUExecutionProvider"])
            for frac in fractions:
                threshold = float("-inf") if frac >= 1.0 else float(np.quantile(est, 1.0 - frac))
                compiled = exprune_onnx.optimize_model(model, threshold=threshold, emit_stats=True).model
                ours = exprune_onnx.inference_session(compiled, threads=t)
                outs = ours.run(None, feeds)
                stats = outs[-1]
                survivors = 1.0 - float(stats[0]) / float(stats[1])
                ref = dense.run(None, feeds)[0]
                if frac >= 1.0:
                    err = float(np.abs(ref - outs[0]).max())
                    assert err <= 1e-4 * max(float(np.abs(ref).max()), 1e-6), f"mismatch at -inf: {err}"
                td, to = compare(dense, ours, feeds, args.runs, args.warmup)
                ideal = td * (k / n + (1 - k / n) * survivors)
                print(f"{f'{channels}x{size}x{size}':>14} {t:>3} {f'{k}/{n}':>6} {100 * survivors:>6.1f}% "
                      f"{1e3 * td:>9.3f} {1e3 * to:>10.3f} {to / td:>6.2f} {100 * ideal / to:>7.1f}%", flush=True)


if __name__ == "__main__":
    main()
