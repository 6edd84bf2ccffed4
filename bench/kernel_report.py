"""bench/kernels.py's tables: its rows, and the per-node kernel times of a dense layer and
its compiled form under onnxruntime's profiler (--profile)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx


def _profiled_session(model: onnx.ModelProto, threads: int, custom: bool, prefix: str):
    import onnxruntime as ort

    from exprune_onnx.io.ir_version import runnable
    from exprune_onnx.runtime import session_options

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = prefix
    if custom:
        session_options(opts)
    return ort.InferenceSession(runnable(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _kernel_medians(profile: Path, runs: int) -> dict[str, float]:
    """Median kernel time (ms) per node over the last ``runs`` runs, keyed 'op_type name'."""
    samples: dict[str, list[float]] = {}
    for e in json.loads(profile.read_text()):
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            key = f"{e['args'].get('op_name', '?')} {e['name'][: -len('_kernel_time')]}"
            samples.setdefault(key, []).append(e["dur"] / 1e3)
    return {key: float(np.median(v[-runs:])) for key, v in samples.items()}


def node_times(dense: onnx.ModelProto, optimized: onnx.ModelProto, feeds: dict, threads: int = 1,
               runs: int = 20) -> dict[str, dict[str, float]]:
    """Per-node kernel times of both models under onnxruntime's profiler.

    The two run alternately, as in the timing, so each starts with the caches the other
    left: a big dense layer evicts the survivors' tail weights from L3 between runs,
    as the rest of a network would.
    """
    with tempfile.TemporaryDirectory() as tmp:
        a = _profiled_session(dense, threads, False, str(Path(tmp) / "dense"))
        b = _profiled_session(optimized, threads, True, str(Path(tmp) / "optimized"))
        for _ in range(3 + runs):  # the first runs allocate and warm up; only the last `runs` count
            a.run(None, feeds)
            b.run(None, feeds)
        return {"dense": _kernel_medians(Path(a.end_profiling()), runs),
                "optimized": _kernel_medians(Path(b.end_profiling()), runs)}


def table(rows):
    from rich.table import Table

    t = Table(title="dense onnxruntime vs optimised, median ms")
    for col in ("case", "inputs", "batch", "k/n", "s", "dense ms", "opt ms", "speedup", "ideal", "% ideal", "runs"):
        t.add_column(col, justify="left" if col in ("case", "inputs") else "right")
    for r in rows:
        t.add_row(r.case, r.inputs, str(r.batch), f"{r.k}/{r.n}", f"{100 * r.survivors:.1f}%", f"{r.dense_ms:.3f}",
                  f"{r.optimized_ms:.3f}", f"{r.speedup:.2f}", f"{r.ideal:.2f}", f"{r.pct_ideal:.0f}%", str(r.runs))
    return t


def profile_table(rows):
    from rich.table import Table

    t = Table(title="median kernel time per node (onnxruntime profiler), ms")
    for col in ("case", "batch", "s", "dense nodes", "optimised nodes", "kernel % ideal"):
        t.add_column(col)
    for r in rows:
        dense, opt = r.profile.get("dense", {}), r.profile.get("optimized", {})
        text = [", ".join(f"{key.split()[0]} {ms:.3f}" for key, ms in nodes.items()) + f" = {sum(nodes.values()):.3f}"
                for nodes in (dense, opt)]
        t.add_row(r.case + ("" if r.inputs == "iid" else f" ({r.inputs})"), str(r.batch), f"{100 * r.survivors:.1f}%",
                  text[0], text[1],
                  f"{100 * kernel_speedup(r) / r.ideal:.0f}%" if opt else "?")
    return t


def kernel_speedup(row) -> float:
    """Dense over optimised summed kernel time, from the row's profile."""
    return sum(row.profile["dense"].values()) / sum(row.profile["optimized"].values())
