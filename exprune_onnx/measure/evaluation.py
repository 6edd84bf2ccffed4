"""One evaluation of a pair, as `exprune-onnx evaluate` runs it and as Python's
``exprune_onnx.evaluate_model`` does (api.py): outputs and metric side by side, the FLOPs
the optimised model's ops skipped, latency in alternating runs, size and peak memory."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import onnx

from ..io.data import Dataset, model_inputs, naming
from ..progress import quiet
from .compare import CheckResult
from .timing import Latency


@dataclass
class Evaluation:
    checked: CheckResult  # outputs side by side, accuracy with labels
    latency: Latency
    dense_flops: int | None  # per sample, the original's Conv/Gemm/MatMul; None: not all counted
    flops_saved: float | None  # per sample, by the optimised model's ops; None: not set against dense_flops
    flops_unknown: str  # why either is None
    memory: dict  # size_mb and peak_rss_mib, (original, optimised)
    tiles: bool  # sparse convs on a CPU with AMX tiles, whose dense images skip nothing
    original_saved: float = 0.0  # per sample, by the original's own ops (it was rewritten before)
    same_graph: bool = False  # the two graphs are equal, weights and all: any difference is the machine's

    def same_graph_note(self) -> str:
        """What the ratio means when both models are one graph (the latency objective keeps
        nothing on some models and writes the original back), else ""."""
        if not self.same_graph:
            return ""
        return (f"the two models have the same graph, weights and all: the ratio {self.latency.ratio:.3f} is the "
                "measurement's noise (what optimize wrote is the original, as where the latency objective kept "
                "nothing)")

    def as_json(self, original: str, optimized: str) -> dict:
        import onnxruntime as ort

        t = self.latency
        return {"original": original, "optimized": optimized, "samples": self.checked.samples,
                "accuracy": self.checked.accuracy, "outputs": [d.as_json() for d in self.checked.outputs],
                "dense_flops_per_sample": self.dense_flops, "flops_saved_per_sample": self.flops_saved,
                "original_flops_saved_per_sample": self.original_saved if self.flops_saved is not None else None,
                "latency": vars(t) | {"ratio": t.ratio}, "memory": self.memory, "machine": platform.machine(),
                "onnxruntime": ort.__version__, "same_graph": self.same_graph}


def unpaired(ref: onnx.ModelProto, opt: onnx.ModelProto) -> str | None:
    """Why two models are no original and its rewrite (which keeps the original's inputs),
    so that the same data cannot feed both; or None."""
    def inputs(model):
        return {v.name: v.type.tensor_type.elem_type for v in model_inputs(model)}

    def names(model):
        return ", ".join(f"'{name}'" for name in inputs(model)) or "none"

    if inputs(ref) == inputs(opt):
        return None
    return (f"the two models take different inputs: ORIGINAL {names(ref)}, OPTIMIZED {names(opt)} (or of other "
            "types); evaluate compares a model with its optimised version, which keeps the original's inputs")


# Timing goes on past --runs until this long: two identical 0.05 ms models, 30 runs each,
# timed 1.11 and 0.97 apart in a trial.
MIN_SECONDS = 1.0


def evaluate_pair(ref: onnx.ModelProto, opt: onnx.ModelProto, data: Dataset, batch: int, *, threads: int = 1,
                  runs: int = 30, input_shapes: dict | None = None, log=quiet) -> Evaluation:
    """Both models on ``data``; latency at ``batch`` (checked against a fixed one by the
    caller) over the latency objective's seeded batches, taken in turn."""
    from ..io.batch_memory import check_batch_memory
    from ..io.bigmodel import model_bytes
    from ..io.modelio import all_nodes
    from ..ops import SPARSE_CONV
    from ..report.units import shape_hint
    from ..runtime import cpu_has_tiles
    from ..tuning.pairs import FEEDS, timing_feeds
    from .compare import compare
    from .counters import SHAPES_UNKNOWN, executed_flops, original_saved
    from .memory import peak_rss_mb
    from .timing import SESSIONS, measure, session_pairs

    check_batch_memory([("original", ref), ("optimised", opt)], data, batch, "--batch", feeds=FEEDS)
    with naming(data, "--data"):  # labels that fit no output, say: which file held them
        checked = compare(ref, opt, data, log=log)
    feeds = timing_feeds(data, batch)  # the latency objective's seeded batches, taken in turn
    latency = measure(ref, opt, feeds, threads=threads, runs=runs, log=log, min_seconds=MIN_SECONDS,
                      sessions=session_pairs(ref, opt, SESSIONS))
    known = data.input_shapes(ref, input_shapes)  # the data's dims, and --input-shape's
    dense, saved, why = executed_flops(ref, opt, known, checked.pruned, checked.rows, data.first(1))
    if why == SHAPES_UNKNOWN:  # the ops' savings would be set against a partial count
        why += f" ({shape_hint(ref, known)})"
    memory = {"size_mb": (model_bytes(ref) / 1e6, model_bytes(opt) / 1e6),
              "peak_rss_mib": (peak_rss_mb(ref, feeds[0]), peak_rss_mb(opt, feeds[0]))}
    tiles = cpu_has_tiles() and any(n.op_type == SPARSE_CONV for n in all_nodes(opt.graph))
    return Evaluation(checked, latency, dense, saved, why, memory, tiles, original_saved(ref, checked),
                      ref.graph == opt.graph)
