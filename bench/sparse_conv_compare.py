"""Side-by-side A/B of ExPruneSparseConv library builds against onnxruntime's Conv + Relu.

    python -m bench.sparse_conv_compare LIB[,LIB...] [--layers 64x64x112x3,...] [--zeros 0.5,0.9]
                                        [--inputs iid,photo] [--seconds 2] [--threads 1]

For kernel work: build variants of custom_ops/ into separate directories and pass their
libexprune_ops.so files. Each layer (C x M x S x K, the bench layers of
bench/sparse_conv_kernels.py) and zero fraction runs the reference and every library in
one process, each library right after the reference, run after run, so that load changes
hit all of them and each starts with the caches the reference left; it prints the
reference's median time and each library's median ratio op / reference (r0, r1, ...),
and the largest output difference from the reference relative to its range. Batch 1, one
thread unless --threads; pin it (taskset -c 0, or -c 0,1 for two) on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _session(model, library: str | None = None, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if library:
        opts.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def compare(libraries, layers, zeros, inputs, seconds: float, log=print, threads: int = 1) -> None:
    from bench import sparse_conv_kernels as bench

    log(f"load average {os.getloadavg()[0]:.2f}")
    for layer in layers:
        ref, op = bench.models(layer)
        sessions = [_session(ref, threads=threads)] + [_session(op, lib, threads) for lib in libraries]
        for kind in inputs:
            for z in zeros:
                rng = np.random.default_rng([0, int(round(z * 100)), bench.INPUTS.index(kind)])
                feeds = {"x": (bench.iid_input if kind == "iid" else bench.photo_input)(layer, z, rng)}
                want = sessions[0].run(None, feeds)[0]
                scale = max(float(np.abs(want).max()), 1e-6)
                err = max(float(np.abs(s.run(None, feeds)[0] - want).max()) / scale for s in sessions[1:])
                t0 = time.perf_counter()
                sessions[0].run(None, feeds)
                runs = int(min(200, max(5, seconds / (time.perf_counter() - t0) / (2 * len(libraries)))))
                times = [[] for _ in sessions]
                for _ in range(runs):
                    # Every library runs right after the reference, as in bench.kernels and in a
                    # model, where the layer before has used the caches: a library run after
                    # another would find the input and its own buffers warmer.
                    for i in range(1, len(sessions)):
                        for k in (0, i):
                            t0 = time.perf_counter()
                            sessions[k].run(None, feeds)
                            times[k].append(time.perf_counter() - t0)
                med = [float(np.median(t)) * 1e3 for t in times]
                ratios = " ".join(f"r{i}={m / med[0]:.3f}" for i, m in enumerate(med[1:]))
                log(f"{bench.label(layer)} {kind} zeros {z:.2f}: conv {med[0]:.2f} ms {ratios} max err {err:.1e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sparse_conv_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("libraries", help="comma-separated paths of libexprune_ops.so builds")
    parser.add_argument("--layers", default="64x64x112x3,128x128x56x3,256x256x28x3,512x512x14x3")
    parser.add_argument("--zeros", default="0.5,0.7,0.9")
    parser.add_argument("--inputs", default="iid")
    parser.add_argument("--seconds", type=float, default=2.0, help="about this long per row")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (pin to as many cores)")
    args = parser.parse_args(argv)
    libraries = [p for p in args.libraries.split(",") if p]
    missing = [p for p in libraries if not os.path.isfile(p)]
    if not libraries or missing:
        parser.error(f"no such library: {', '.join(missing) or '(none given)'}")
    try:
        layers = [tuple(int(v) for v in s.split("x")) for s in args.layers.split(",")]
        zeros = [float(z) for z in args.zeros.split(",")]
    except ValueError:
        parser.error("--layers are CxMxSxK, --zeros numbers")
    if any(len(layer) != 4 or min(layer) < 1 for layer in layers) or not all(0 <= z <= 1 for z in zeros):
        parser.error("--layers are CxMxSxK with positive sizes, --zeros in [0, 1]")
    inputs = [k for k in args.inputs.split(",") if k]
    if not inputs or any(k not in ("iid", "photo") for k in inputs):
        parser.error("--inputs: iid, photo")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    compare(libraries, layers, zeros, inputs, args.seconds, log=lambda text: print(text, flush=True),
            threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
