"""Zero-input skipping (ExPruneSparseMatMul) against onnxruntime's MatMul.

    python -m bench.sparse_input_bench [--runs 300] [--passes 5] [--threads 1] [--only op|lm] [--library PATH]
                                       [--shape N,M ...]

1. The op alone: x [B, n] with a share of exact zeros (independent per element) times
   a constant W [n, m], against a MatMul with the same initializer, for
   (n, m) = (4096, 1024) and (512, 128) (or each --shape), 50/80/95% zeros, batch 1
   and 8, 1 thread.
   Reported: the median onnxruntime kernel time of the node (profiler) and the median
   wall time of a whole session.run, runs of the two models alternating.
2. The language model's decode step, models/kjv_lm_step.onnx (batch 1, 1 thread,
   ORT_ENABLE_ALL): the original, ENP at threshold 0 without the sparse pass, and with
   it. The feeds are consecutive decode steps over held-out text (the caches the
   original produces), so the activations are the real ones. Reported: the median step
   time (the three models alternating), the per-op kernel time of fc2 (MatMul + its
   Add, or ExPruneSparseMatMul) from the profiler (mean, as it rounds to whole
   microseconds; profiling adds its own overhead to every node), and the share of zeros
   in fc2's input.

`--library` (or $EXPRUNE_ONNX_LIBRARY) selects the op library build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
STEP = ROOT / "models" / "kjv_lm_step.onnx"
TEST = ROOT / "models" / "data" / "kjv_lm_test.npz"
SHAPES = [(4096, 1024), (512, 128)]
ZEROS = [0.5, 0.8, 0.95]
BATCHES = [1, 8]
THREADS = 1  # intra-op threads of every session (--threads)


def session(model: onnx.ModelProto, profile: str | None = None) -> ort.InferenceSession:
    from exprune_onnx.runtime import get_library_path

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.register_custom_ops_library(get_library_path())
    if profile is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def kernel_times(sess: ort.InferenceSession) -> dict[str, list[float]]:
    """Node name -> kernel durations (microseconds), from the profiler's JSON."""
    path = sess.end_profiling()
    events = json.loads(Path(path).read_text())
    Path(path).unlink()
    out: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            out.setdefault(e["name"].removesuffix("_kernel_time"), []).append(float(e["dur"]))
    return out


def alternate(sessions: list, feeds: list[dict], passes: int) -> list[float]:
    """Median wall milliseconds per run of each session, runs interleaved (rotating who goes first)."""
    times = [[] for _ in sessions]
    for s in sessions:  # warm up
        for f in feeds[:3]:
            s.run(None, f)
    for p in range(passes):
        for j, f in enumerate(feeds):
            order = list(range(len(sessions)))
            shift = (p + j) % len(sessions)
            for i in order[shift:] + order[:shift]:
                t0 = time.perf_counter()
                sessions[i].run(None, f)
                times[i].append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times]


# ------------------------------------------------------------------ the op alone


def single(op: str, w: np.ndarray) -> onnx.ModelProto:
    n, m = w.shape
    domain = "ai.exprune" if op != "MatMul" else ""
    node = helper.make_node(op, ["x", "W"], ["y"], name="mm", domain=domain)
    graph = helper.make_graph([node], "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", m])],
                              [numpy_helper.from_array(w, "W")])
    imports = [helper.make_opsetid("", 17), helper.make_opsetid("ai.exprune", 1)]
    return helper.make_model(graph, opset_imports=imports, ir_version=8)


def op_bench(runs: int, shapes=SHAPES) -> None:
    print(f"op alone, {THREADS} thread(s): median kernel us (profiler) / median session.run us")
    print(f"{'n x m':>11} {'zeros':>5} {'B':>2} | {'MatMul':>15} | {'sparse':>15} | kernel speed-up")
    rng = np.random.default_rng(0)
    for n, m in shapes:
        w = (rng.standard_normal((n, m)) / np.sqrt(n)).astype(np.float32)
        for zeros in ZEROS:
            for b in BATCHES:
                feeds = []
                for _ in range(8):
                    x = np.abs(rng.standard_normal((b, n))).astype(np.float32)
                    x[rng.random((b, n)) < zeros] = 0.0
                    feeds.append({"x": x})
                models = [single("MatMul", w), single("ExPruneSparseMatMul", w)]
                wall = alternate([session(mo) for mo in models], feeds, max(1, runs // len(feeds)))
                kernel = []
                for mo in models:
                    s = session(mo, profile=str(Path("/tmp") / f"sparse_bench_{os.getpid()}"))
                    for _ in range(max(1, runs // len(feeds))):
                        for f in feeds:
                            s.run(None, f)
                    kernel.append(statistics.median(kernel_times(s)["mm"]))
                ref = feeds[0]["x"].astype(np.float64) @ w
                got = session(models[1]).run(None, feeds[0])[0]
                assert np.allclose(got, ref, rtol=1e-3, atol=1e-3), "sparse op disagrees with numpy"
                print(f"{n:>5}x{m:<5} {zeros:>5.0%} {b:>2} | {kernel[0]:7.1f} / {1e3 * wall[0]:6.1f} | "
                      f"{kernel[1]:7.1f} / {1e3 * wall[1]:6.1f} | {kernel[0] / kernel[1]:5.2f}x")


# ------------------------------------------------------------------ the decode step


def decode_feeds(model: onnx.ModelProto, steps: int) -> list[dict]:
    """Consecutive decode steps of one held-out window (batch 1), caches from the original."""
    names = [f"past_{kind}_{i}" for i in range(4) for kind in ("key", "value")]
    tokens = np.load(TEST)["tokens"][7:8]
    sess = session(model)
    caches = {name: np.zeros((1, 4, 128, 32), np.float32) for name in names}
    feeds = []
    for t in range(steps):
        feed = {"token": tokens[:, t:t + 1], "position": np.array([t], np.int64), **caches}
        feeds.append(feed)
        out = sess.run(None, feed)
        caches = dict(zip(names, out[1:]))
    return feeds


def fc2_zero_share(model: onnx.ModelProto, feeds: list[dict]) -> float:
    """Share of exact zeros in the inputs of the four fc2 layers, over all feeds."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [f"/blocks.{i}/relu/Relu_output_0" for i in range(4)]
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = session(probe)
    zeros = total = 0
    for f in feeds:
        for y in sess.run(names, f):
            zeros += int((y == 0).sum())
            total += y.size
    return zeros / total


def lm_bench(passes: int) -> None:
    import exprune_onnx

    original = onnx.load(str(STEP))
    enp = exprune_onnx.optimize_model(original, threshold=0.0, sparse_input=False).model
    sparse = exprune_onnx.optimize_model(original, threshold=0.0).model
    feeds = decode_feeds(original, 128)
    models = {"original": original, "ENP": enp, "ENP + sparse": sparse}
    wall = alternate([session(m) for m in models.values()], feeds, passes)
    print(f"\nkjv_lm_step decode, batch 1, {THREADS} thread(s), {len(feeds)} consecutive steps x {passes} passes")
    for (name, _m), ms in zip(models.items(), wall):
        print(f"  {name:<13} median step {ms:.4f} ms ({ms / wall[0]:.3f} of the original)")
    for name, m in models.items():
        print(f"  {name:<13} zeros in fc2 input: {fc2_zero_share(m, feeds):.1%}")
    # The profiler rounds to whole microseconds: a mean over many steps resolves better than a median.
    print("  fc2 kernel time per step, mean us (layers 0..3; MatMul + Add, or the sparse op):")
    for name, m in models.items():
        s = session(m, profile=str(Path("/tmp") / f"sparse_bench_{os.getpid()}"))
        for _ in range(2):
            for f in feeds:
                s.run(None, f)
        times = kernel_times(s)
        per_layer = []
        for i in range(4):
            # Per call: the layer's nodes whose names mention fc2 (MatMul, Add, or the sparse op).
            mine = [v for k, v in times.items() if f"blocks.{i}/fc2" in k and "Transpose" not in k]
            per_layer.append(sum(statistics.mean(v) for v in mine))
        print(f"  {name:<13} " + "  ".join(f"{t:6.2f}" for t in per_layer) + f"   total {sum(per_layer):6.2f}")


def _shape(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in text.split(","))
    except ValueError:
        n = m = 0
    if n < 1 or m < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not N,M (two whole numbers, at least 1)")
    return n, m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="runs per model and case (op alone)")
    parser.add_argument("--passes", type=int, default=5, help="passes over the decode steps")
    parser.add_argument("--library", help="the op library to load (default: $EXPRUNE_ONNX_LIBRARY or installed)")
    parser.add_argument("--only", choices=["op", "lm"], help="run one part")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--shape", action="append", type=_shape, metavar="N,M",
                        help="x [B, N] times W [N, M] instead of the default shapes (repeatable); 25088,4096 is "
                             "a VGG's first classifier layer")
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    if args.library:
        os.environ["EXPRUNE_ONNX_LIBRARY"] = args.library
    print(f"{platform.machine()}, onnxruntime {ort.__version__}")
    if args.only != "lm":
        op_bench(args.runs, args.shape or SHAPES)
    if args.only != "op":
        lm_bench(args.passes)


if __name__ == "__main__":
    main()
