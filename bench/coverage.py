"""Does ``--confidence`` keep its promise? Calibrate many times on fresh data and count the misses.

    python -m bench.coverage [--models fashion_cnn,digits_mlp,debian_gnn] [--reps 50] [--max-drop 0.01]

For each model the pool is its calibration file and its test file together (bench/models.py;
each build script writes them). Repetition r permutes the pool with seed r: the first
``--calibration`` samples are the calibration set, the next ``--test`` samples (at most the
rest) the test split, which that search never sees. Each calibration set is searched twice,
at confidence 0.9 (Learn-then-Test, certify.py) and at 0 (the point estimate with the
held-out back-off), both under the FLOPs objective, and each written model is scored on
the test split: accuracy drop and right answers lost. The promise at 0.9 is that at most
10% of the runs end over budget (the drop on the data distribution, which the test split
estimates). Fractions are reported with a two-sided 95% Clopper-Pearson interval.

Results go to bench/coverage/<model>.json (rewritten after every repetition, so a cut run
keeps what it did, and ``--resume`` goes on from it; one process per model can run side
by side); ``--markdown`` prints the table of docs/calibration.md from those files.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from exprune_onnx.config import Options
from exprune_onnx.io.data import Dataset, load_dataset
from exprune_onnx.io.modelio import load_model
from exprune_onnx.runtime import inference_session
from exprune_onnx.tuning.metrics import predictions
from exprune_onnx.tuning.risk import upper_bound
from exprune_onnx.tuning.search import search

from .models import ALL, ROOT

OUT = ROOT / "bench" / "coverage"
MODELS = ("fashion_cnn", "digits_mlp", "debian_gnn")
CONFIDENCES = (0.9, 0.0)


def interval(hits: int, n: int) -> tuple[float, float]:
    """Two-sided 95% Clopper-Pearson interval of a fraction (two one-sided 97.5% bounds)."""
    if n == 0:
        return 0.0, 1.0
    return 1.0 - upper_bound(n - hits, n, 0.975), upper_bound(hits, n, 0.975)


def pool_of(name: str, model) -> Dataset:
    m = next(x for x in ALL if x.name == name)
    parts = [load_dataset(m.calibration, model), load_dataset(m.test, model)]
    inputs = {k: np.concatenate([p.inputs[k] for p in parts]) for k in parts[0].inputs}
    return Dataset(inputs, np.concatenate([p.labels for p in parts]), f"{m.calibration.name} + {m.test.name}")


def take(data: Dataset, idx: np.ndarray) -> Dataset:
    return Dataset({k: v[idx] for k, v in data.inputs.items()}, data.labels[idx], data.source)


def predict(model, data: Dataset, batch: int = 256) -> np.ndarray:
    session = inference_session(model)
    name = model.graph.output[0].name
    return np.concatenate([predictions(session.run([name], feeds)[0]) for feeds in data.batches(batch)])


def one_run(model, pool: Dataset, reference: np.ndarray, rep: int, sizes: tuple[int, int], max_drop: float,
            confidence: float) -> dict:
    order = np.random.default_rng(rep).permutation(len(pool))
    calib_idx, test_idx = np.sort(order[:sizes[0]]), np.sort(order[sizes[0]:sizes[0] + sizes[1]])
    start = time.perf_counter()
    outcome = search(model, Options(confidence=confidence), take(pool, calib_idx), max_drop=max_drop, seed=rep)
    seconds = time.perf_counter() - start
    labels, before = pool.labels[test_idx], reference[test_idx]
    after = predict(outcome.result.model, take(pool, test_idx)) if outcome.result.changed else before
    right = before == labels
    drop = float(np.mean(right) - np.mean(after == labels))
    lost = float(np.mean(right & (after != labels)))
    cert = outcome.certificate
    return {"rep": rep, "test_drop": drop, "test_lost": lost, "over_budget": drop > max_drop + 1e-9,
            "lost_over_budget": lost > max_drop + 1e-9, "changed": outcome.result.changed,
            "saved_on_search_part": outcome.saved_holdout, "search_seconds": seconds, "passes": outcome.passes,
            "certified_bound": None if cert is None else cert.bound,
            "certified_rung": None if cert is None else cert.chosen + 1}


def summary(runs: list[dict]) -> dict:
    n = len(runs)
    over = sum(r["over_budget"] for r in runs)
    lost_over = sum(r["lost_over_budget"] for r in runs)
    saved = [r["saved_on_search_part"] or 0.0 for r in runs]
    return {"runs": n, "over_budget": over, "fraction_over": over / n if n else None,
            "interval_95": interval(over, n), "lost_over_budget": lost_over,
            "lost_fraction_over": lost_over / n if n else None, "lost_interval_95": interval(lost_over, n),
            "mean_test_drop": float(np.mean([r["test_drop"] for r in runs])) if n else None,
            "mean_flops_saved": float(np.mean(saved)) if n else None,
            "rewritten_runs": sum(r["changed"] for r in runs)}


def markdown(out: Path) -> str:
    files = sorted(out.glob("*.json"))
    lines = ["| model | calibration / test samples | confidence | runs | over budget on test (drop) | 95% interval "
             "| over budget (right answers lost) | mean test drop (points) | mean FLOPs saved |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in files:
        m = json.loads(path.read_text())
        name = path.stem
        for conf, s in m.get("summary", {}).items():
            if not s["runs"]:
                continue
            lo, hi = s["interval_95"]
            lines.append(f"| {name} | {m['sizes'][0]} / {m['sizes'][1]} | {conf} | {s['runs']} | "
                         f"{s['over_budget']} ({100 * s['fraction_over']:.0f}%) | {100 * lo:.0f}-{100 * hi:.0f}% | "
                         f"{s['lost_over_budget']} ({100 * s['lost_fraction_over']:.0f}%) | "
                         f"{100 * s['mean_test_drop']:+.2f} | {100 * s['mean_flops_saved']:.1f}% |")
    return "\n".join(lines)


def run_model(name: str, args) -> None:
    from .write import machine

    m = next(x for x in ALL if x.name == name)
    model = load_model(m.onnx)
    pool = pool_of(name, model)
    reference = predict(model, pool)
    n_cal = min(args.calibration, len(pool) // 2)
    sizes = (n_cal, min(args.test, len(pool) - n_cal))
    path = args.out / f"{name}.json"
    entry = {"max_drop": args.max_drop, "pool": pool.source, "pool_samples": len(pool), "sizes": sizes,
             "machine": machine(), "runs": {str(c): [] for c in CONFIDENCES}}
    if args.resume and path.exists():
        entry = json.loads(path.read_text())
        if entry["max_drop"] != args.max_drop or tuple(entry["sizes"]) != sizes:
            raise SystemExit(f"{path}: another budget or other sizes; drop --resume")
    for rep in range(args.first, args.first + args.reps):
        for conf in CONFIDENCES:
            runs = entry["runs"][str(conf)]
            if any(r["rep"] == rep for r in runs):
                continue  # --resume: done before
            runs.append(one_run(model, pool, reference, rep, sizes, args.max_drop, conf))
            r = runs[-1]
            print(f"{name} rep {rep} confidence {conf}: test drop {100 * r['test_drop']:+.2f} points, "
                  f"lost {100 * r['test_lost']:.2f}%, {r['search_seconds']:.1f} s", flush=True)
        entry["summary"] = {str(c): summary(entry["runs"][str(c)]) for c in CONFIDENCES}
        path.write_text(json.dumps(entry, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--first", type=int, default=0,
                        help="first repetition (seed): another process can do reps 25-49 into another --out")
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--calibration", type=int, default=1000, help="calibration samples per run")
    parser.add_argument("--test", type=int, default=3000, help="test samples per run (at most the rest of the pool)")
    parser.add_argument("--out", type=Path, default=OUT, help="directory of the per-model results")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    parser.add_argument("--markdown", action="store_true", help="print the table from --out and stop")
    args = parser.parse_args()
    if not args.markdown:
        args.out.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            run_model(name, args)
    print(markdown(args.out))


if __name__ == "__main__":
    main()
