"""Run the benchmark: calibrate each model at two budgets, check on its test split, time it.

For each model of bench/models.py whose files exist (each build script writes them):

* the original's test metric;
* for budgets 0.1 point and 1 point: `search` on the calibration file (2,000 training
  samples, split in half for its own held-out check), then the optimised model on the
  test file: metric reached, FLOPs saved over the whole model and over the rewritten
  layers only (counted by the ops), compile (search) time;
* the same budgets certified at confidence 0.9 (bench/certified.py), on the model's
  larger certification file where its build wrote one;
* latency of original and optimised side by side in one process, same session options
  (graph optimisations at onnxruntime's default), batch 1 and 32, 1 and 2 threads,
  median and quartiles of alternating runs;
* model size, and peak resident memory of a fresh process that loads and runs each;
* the latency objective (objective.py) applied to the search's choice: the rewrites
  that make the whole model faster at batch 1, 1 thread, timed on the calibration
  file, and the kept model's test metric, FLOPs saved and time ratio. The search
  itself runs under the FLOPs objective, so that the paper's table stays comparable;
* for the language model, its one-token decode step (bench/decode.py).

For a magnitude-pruned model, FLOPs count zero weights as skipped in both models (a
pruned output's tail is charged the average non-zeros of a tail row), so the saving
is ExPrune's own. Results go to bench/results.json and, through bench/write.py, to
docs/benchmarks.md with its plots; `--out DIR` writes all three to DIR instead (for a
trial or CI run that must leave the committed run alone). `--quick` uses fewer test
samples and timed runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from exprune_onnx import ops
from exprune_onnx.compiler.graphutil import all_graphs
from exprune_onnx.compiler.pipeline import infer_shapes
from exprune_onnx.config import Options
from exprune_onnx.io.data import Dataset, load_dataset
from exprune_onnx.io.modelio import load_model
from exprune_onnx.measure.compare import compare
from exprune_onnx.measure.counters import flops_saved
from exprune_onnx.measure.flops import counted, dense_flops, node_flops
from exprune_onnx.measure.memory import peak_rss_mb
from exprune_onnx.measure.timing import measure
from exprune_onnx.report.latency import latency_json
from exprune_onnx.report.tables import layer_rows
from exprune_onnx.tuning.objective import EARLY_EXIT, ZERO_INPUTS, choose, passes_for, time_pair, timing_feeds
from exprune_onnx.tuning.search import search

from .certified import certified_data, certified_row
from .decode import decode_row
from .models import ALL, ROOT, BenchModel

BUDGETS = (0.001, 0.01)
LATENCY = ((1, 1), (1, 2), (32, 1), (32, 2))  # (batch, threads)


def subset(data: Dataset, count: int) -> Dataset:
    if count >= len(data):
        return data
    pick = np.arange(count)
    return Dataset({k: v[pick] for k, v in data.inputs.items()}, None if data.labels is None else data.labels[pick],
                   data.source, data.shared, data.batch)


def sparse_flops(model: onnx.ModelProto, counts: dict | None = None, samples: int = 1) -> float:
    """FLOPs per sample with zero weights skipped; early-exit ops charged from their counters."""
    graph = gs.import_onnx(infer_shapes(model))
    total = 0.0
    for g in all_graphs(graph):
        for node in g.nodes:
            if counted(node):  # ExPruneSparseMatMul too: the zeros it skips are not ExPrune's
                w = node.inputs[1]
                flops = node_flops(node)
                if flops is None:
                    continue
                density = float(np.count_nonzero(w.values)) / w.values.size if isinstance(w, gs.Constant) else 1.0
                total += flops * density
            elif node.domain == ops.DOMAIN and counts is not None and node.name in counts:
                pruned, elements = counts[node.name]
                tail = node.inputs[2].values
                nnz_row = np.count_nonzero(tail) / tail.shape[0]
                total += ((elements - pruned) * 2 * nnz_row + elements) / samples
    return total


def feeds_of(data: Dataset, batch: int) -> dict:
    return next(data.batches(batch))


def bench_budget(m: BenchModel, model, calib, test, budget: float, runs: int, log=print) -> dict:
    certified = certified_row(m, model, certified_data(m, model, calib), test, budget)
    outcome = search(model, Options(), calib, max_drop=budget, seed=0)
    result = outcome.result
    row = {"budget": budget, "search_seconds": outcome.seconds, "backoffs": outcome.backoffs, "met": outcome.met,
           "calibration_drop": outcome.calibration.drop,
           "held_out_drop": None if outcome.holdout is None else outcome.holdout.drop,
           "trials": [{"drop": t.drop, "saved": t.saved, "feasible": t.feasible} for t in outcome.trials],
           "rewritten": len(result.rewritten), "certified": certified}
    if not result.changed:
        row.update(test_metric=None, saved=0.0, saved_layers=0.0, latency=[], layers=[])
        return row
    optimized = result.model
    checked = compare(model, optimized, test)
    samples = checked.samples
    saved = flops_saved(optimized, checked.pruned) / samples
    layers_dense = sum(dense_flops(rw.candidate) or 0 for rw in result.rewritten)
    # The search keeps the budget on its calibration file (`met`); the test split may still
    # go over it, and a reader of the results should see that without redoing the arithmetic.
    if checked.accuracy:
        drop = checked.accuracy[0] - checked.accuracy[1]
        row.update(test_drop=drop, over_budget_on_test=drop > budget + 1e-9)
    row.update(test_metric=checked.accuracy[1] if checked.accuracy else None,
               saved=saved / result.dense_flops, saved_layers=saved / layers_dense if layers_dense else 0.0,
               dense_flops=result.dense_flops, layers_dense_flops=layers_dense,
               layers=[{k: r[k] for k in ("layer", "n", "k", "rule", "pruned", "outputs")}
                       for r in layer_rows(result, checked.pruned)])
    if m.sparse:
        before, after = sparse_flops(model), sparse_flops(optimized, checked.pruned, samples)
        row.update(sparse_dense_flops=before, sparse_saved=(before - after) / before)
    row["latency"] = []
    for batch, threads in LATENCY:
        t = measure(model, optimized, feeds_of(test, batch), threads=threads, runs=runs)
        row["latency"].append({"batch": batch, "threads": threads, "runs": runs, "original_ms": t.original_ms,
                               "optimized_ms": t.optimized_ms, "ratio": t.ratio})
    feeds = feeds_of(test, 32)
    row["memory_mb"] = {"original": peak_rss_mb(model, feeds), "optimized": peak_rss_mb(optimized, feeds)}
    row["size_bytes"] = {"original": model.ByteSize(), "optimized": optimized.ByteSize()}
    row["latency_objective"] = latency_objective(model, outcome, calib, test, runs)
    if m.decode:
        row["decode"] = decode_row(outcome.options, log=log)
    return row


def latency_objective(model, outcome, calib: Dataset, test: Dataset, runs: int) -> dict:
    """What ``--objective latency`` keeps of this budget's choice (objective.py): each
    rewrite timed in the whole model at batch 1, 1 thread, on the calibration file; then
    the kept model's test metric, FLOPs saved and time ratio (the median of three
    rounds, each the medians over ``runs`` passes through eight test samples, or as many
    as the objective's own timing makes for a small model)."""
    choice = choose(model, outcome.options, outcome.result, calib, batch=1, threads=1,
                    source=f"{len(calib)} calibration samples")
    early = [t for t in choice.layers if t.kind == EARLY_EXIT]
    relu = [t for t in choice.layers if t.kind == ZERO_INPUTS and not t.group]  # a group's row is no layer
    out = {"kept": [t.layer for t in early if choice.kept(t.layer)], "candidates": len(early),
           "kept_zero_inputs": [t.layer for t in relu if choice.kept(t.layer, ZERO_INPUTS)],
           "zero_input_candidates": len(relu),
           "reverted_all": choice.reverted_all, "timing_seconds": choice.seconds,
           "layers": latency_json(choice)["layers"]}
    if not choice.result.changed:
        # The file written is the original itself: nothing to time or score.
        out.update(unchanged=True, ratio=1.0, test_metric=None, saved=0.0)
        return out
    optimized = choice.result.model
    checked = compare(model, optimized, test)
    # Eight test samples, not one: a sample's own prune rate moves the time of the op.
    # Three rounds, the median ratio: a burst from another job on a shared machine can
    # move one round's medians by a tenth.
    passes = max(runs, passes_for(choice.original_ms / 1e3))  # as many as the objective's own timing
    rounds = sorted((time_pair(model, optimized, timing_feeds(test, 1, seed=1), 1, passes) for _ in range(3)),
                    key=lambda t: t[1] / t[0])
    original_ms, optimized_ms = rounds[1]
    out.update(unchanged=False, ratio=optimized_ms / original_ms, original_ms=original_ms, optimized_ms=optimized_ms,
               round_ratios=[b / a for a, b in rounds], passes=passes,
               test_metric=checked.accuracy[1] if checked.accuracy else None,
               saved=flops_saved(optimized, checked.pruned) / checked.samples / choice.result.dense_flops)
    return out


def bench_model(m: BenchModel, quick: bool, log) -> dict:
    model = load_model(m.onnx)
    calib = load_dataset(m.calibration, model)
    test = load_dataset(m.test, model)
    if quick:
        test = subset(test, 1000)
    runs = 5 if quick else 30
    start = time.perf_counter()
    baseline = compare(model, model, test).accuracy
    out = {"name": m.name, "title": m.title, "paper_row": m.paper_row, "paper": list(m.paper), "build": m.build,
           "calibration_samples": len(calib), "test_samples": len(test),
           "baseline_metric": baseline[0] if baseline else None, "budgets": []}
    for budget in BUDGETS:
        log(f"{m.name}: budget {budget:g}")
        out["budgets"].append(bench_budget(m, model, calib, test, budget, runs, log))
    out["seconds"] = time.perf_counter() - start
    return out


def main() -> None:
    from .write import load_average, machine, out_paths, write_markdown

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 test samples and 5 timed runs per case")
    parser.add_argument("--models", help="comma-separated names (default: every model whose files exist)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write results.json, benchmarks.md and benchmarks/*.png to DIR "
                             "(default: bench/results.json, docs/benchmarks.md and docs/benchmarks/)")
    parser.add_argument("--append", action="store_true",
                        help="keep the other models' results already in the results file (same mode and machine)")
    args = parser.parse_args()
    if args.out is not None and (args.out.is_file() or args.out.suffix == ".md"):
        parser.error(f"--out takes a directory (results.json, benchmarks.md and plots go in it), not {args.out}")
    wanted = set(args.models.split(",")) if args.models else None
    if wanted is not None and wanted - {m.name for m in ALL}:
        parser.error(f"unknown model(s) {', '.join(sorted(wanted - {m.name for m in ALL}))}; "
                     f"known: {', '.join(m.name for m in ALL)}")
    results_path, markdown_path = out_paths(args.out)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "quick": args.quick, "models": [], "missing": []}
    if args.append and results_path.exists():
        old = json.loads(results_path.read_text())
        if old.get("quick") != args.quick:
            parser.error("--append mixes a quick and a full run")
        results["models"] = [m for m in old["models"] if wanted is None or m["name"] not in wanted]
    for m in ALL:
        if wanted is not None and m.name not in wanted:
            continue
        missing = [str(p.relative_to(ROOT)) for p in (m.onnx, m.calibration, m.test) if not p.exists()]
        if missing:
            print(f"{m.name}: skipped, missing {', '.join(missing)} (run `{m.build}`)", flush=True)
            results["missing"].append({"name": m.name, "files": missing, "build": m.build})
            continue
        results["models"].append(bench_model(m, args.quick, lambda msg, *counts: print(msg, flush=True)))
        order = [x.name for x in ALL]
        results["models"].sort(key=lambda r: order.index(r["name"]))
        results_path.write_text(json.dumps(results, indent=1))
    results["machine"]["load_average_end"] = load_average()
    results_path.write_text(json.dumps(results, indent=1))
    write_markdown(results, markdown_path, results_path)
    print(f"wrote {results_path} and {markdown_path}")
