"""Resident memory of a service that makes, runs and destroys sessions over and over.

    python -m bench.session_churn [--sessions 120] [--size 224] [--runs 1] [--mmap-threshold BYTES]

A VGG-like ReLU CNN (3x3 convs of 64, 64, 128, 128 and 256 channels with max pools
between, seeded random weights: a memory benchmark, not an accuracy one) at SIZE x SIZE,
and the same model compiled losslessly with every conv after a ReLU read sparsely
(`optimize_model(model, sparse_relu="on")`: no threshold, so no early exit, and every
candidate conv an ExPruneSparseConv, which holds the large scratch). Each model runs in a
fresh process: one warm-up session, then SESSIONS sessions each made, run twice on seeded
inputs and destroyed, one thread, batch 1. It prints the resident size after the warm-up
and at the end, and the bytes glibc's allocator holds (mallinfo2, Linux).
`--mmap-threshold` sets glibc's MALLOC_MMAP_THRESHOLD_ in the children (docs/custom_ops.md,
"Memory between runs"). The resident size after many sessions moves a lot from run to run
(glibc's heap, whose blocks are placed anew in each process): `--runs N` repeats the pair N
times, each in fresh processes, and prints each run and the range.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHANNELS = (64, 64, "pool", 128, 128, "pool", 256)


def vgg_like(size: int, seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, x, c_in = [], [], "input", 3
    for i, c in enumerate(CHANNELS):
        if c == "pool":
            nodes.append(helper.make_node("MaxPool", [x], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"p{i}"
            continue
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((c, c_in, 3, 3)) * np.sqrt(2.0 / (c_in * 9))).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(c) - 0.1).astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1],
                                      kernel_shape=[3, 3]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x, c_in = f"r{i}", c
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"])]
    inits.append(numpy_helper.from_array((0.1 * rng.standard_normal((c_in, 10))).astype(np.float32), "wf"))
    nodes.append(helper.make_node("MatMul", ["flat", "wf"], ["logits"]))
    graph = helper.make_graph(nodes, "vgg_like", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                 [1, 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def held_mb() -> float | None:
    """The bytes glibc's allocator has handed out and not had back (None without mallinfo2)."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def churn(path: str, sessions: int) -> dict:
    """In this process: a warm-up session, then ``sessions`` made, run twice and destroyed."""
    import onnxruntime as ort

    import exprune_onnx

    def one(seed: int) -> None:
        sess = ort.InferenceSession(path, exprune_onnx.session_options(threads=1), providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
        for r in range(2):
            x = np.random.default_rng([seed, r]).standard_normal(shape).astype(np.float32)
            sess.run(None, {sess.get_inputs()[0].name: x})
        del sess
        gc.collect()

    one(0)
    start = (resident_mb(), held_mb())
    for i in range(sessions):
        one(i + 1)
    end = (resident_mb(), held_mb())
    return {"resident_start": start[0], "resident_end": end[0], "held_start": start[1], "held_end": end[1]}


def _child(path: str, sessions: int, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.session_churn", "--child", path, str(sessions)],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1], check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=120)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--mmap-threshold", type=int, default=None)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SESSIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.sessions < 1:
        parser.error("--runs and --sessions must be at least 1")
    if args.child:
        print(json.dumps(churn(args.child[0], int(args.child[1]))))
        return 0

    import onnx

    import exprune_onnx

    original = vgg_like(args.size)
    optimised = exprune_onnx.optimize_model(original, sparse_relu="on").model
    kept = sum(n.op_type == "ExPruneSparseConv" for n in optimised.graph.node)
    env = dict(os.environ)
    if args.mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    print(f"VGG-like {args.size}x{args.size}, {args.sessions} sessions each, 1 thread, batch 1; "
          f"optimised: {kept} ExPruneSparseConv; MALLOC_MMAP_THRESHOLD_={env.get('MALLOC_MMAP_THRESHOLD_', 'unset')}; "
          f"load average {os.getloadavg()[0]:.2f}")
    ends: dict[str, list[float]] = {"original": [], "optimised": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, model in (("original", original), ("optimised", optimised)):
            paths[name] = str(Path(tmp) / f"{name}.onnx")
            onnx.save(model, paths[name])
        for run in range(args.runs):
            for name, path in paths.items():
                r = _child(path, args.sessions, env)
                ends[name].append(r["resident_end"])
                held = "" if r["held_end"] is None else f"; held by malloc {r['held_start']:.1f} -> {r['held_end']:.1f} MB"
                label = f"run {run + 1} " if args.runs > 1 else ""
                print(f"{label}{name:>9}: resident {r['resident_start']:.1f} -> {r['resident_end']:.1f} MB{held}")
    if args.runs > 1:
        for name, values in ends.items():
            print(f"{name:>9}: resident at the end {min(values):.1f}-{max(values):.1f} MB over {args.runs} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
