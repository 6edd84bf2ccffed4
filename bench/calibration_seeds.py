"""Calibrated optimisation of the bundled CNN, checked on the 10,000 test images.

    python models/fashion_data.py          # writes models/data/fashion_{calib,test}.npz
    python bench/calibration_seeds.py [--max-drop 0.001] [--seeds 0,1,2,3,4]

For each setting and seed: `search` on the 2,000 training images of fashion_calib.npz
(split by the seed into calibration and held-out halves), then the written model is run
on fashion_test.npz, which the search never sees. The settings are the paper's (stored
unit order, one threshold per layer) and this project's two additions one at a time.
Every seed is printed, including those over budget on the test set.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import onnxruntime as ort

import exprune_onnx
from exprune_onnx.config import Options
from exprune_onnx.io.data import load_dataset
from exprune_onnx.io.modelio import load_model
from exprune_onnx.measure.compare import compare
from exprune_onnx.measure.counters import flops_saved
from exprune_onnx.tuning.search import search

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {  # name: (unit order, per-output thresholds)
    "paper: stored order, per layer": ("stored", False),
    "weight order, per layer": ("weight", False),
    "weight order, per output (default)": ("weight", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ROOT / "models" / "fashion_cnn.onnx", type=Path)
    parser.add_argument("--calibration", default=ROOT / "models" / "data" / "fashion_calib.npz", type=Path)
    parser.add_argument("--test", default=ROOT / "models" / "data" / "fashion_test.npz", type=Path)
    parser.add_argument("--max-drop", type=float, default=0.001)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--only", help="Run only the settings whose name contains this text.")
    args = parser.parse_args()
    for path in (args.calibration, args.test):
        if not path.exists():
            parser.error(f"{path} is missing: run `python models/fashion_data.py` first")

    model = load_model(args.model)
    calib, test = load_dataset(args.calibration, model), load_dataset(args.test, model)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{args.model.name}: calibrate on {len(calib)} images ({args.calibration.name}, held-out half), "
          f"test on {len(test)} ({args.test.name}); budget: accuracy drop <= {args.max_drop:g}")
    print(f"exprune-onnx {exprune_onnx.__version__}, onnxruntime {ort.__version__}, {platform.machine()}, "
          f"rule threshold, default k\n")
    print("| setting | seed | FLOPs saved (test, measured) | test accuracy | test drop (points) | within budget "
          "| held-out backoffs | search s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (order, per_output) in SETTINGS.items():
        if args.only and args.only not in name:
            continue
        saved_all, drops = [], []
        for seed in seeds:
            outcome = search(model, Options(unit_order=order), calib, max_drop=args.max_drop, seed=seed,
                             per_output=per_output)
            checked = compare(model, outcome.result.model, test)
            dense = outcome.result.dense_flops
            saved = flops_saved(outcome.result.model, checked.pruned) / checked.samples / dense if checked.pruned else 0.0
            before, after = checked.accuracy
            drop = before - after
            saved_all.append(saved)
            drops.append(drop)
            print(f"| {name} | {seed} | {100 * saved:.1f}% | {100 * before:.2f}% -> {100 * after:.2f}% | "
                  f"{-100 * drop:+.2f} | {'yes' if drop <= args.max_drop + 1e-9 else 'NO'} | {outcome.backoffs} "
                  f"| {outcome.seconds:.1f} |", flush=True)
        within = sum(d <= args.max_drop + 1e-9 for d in drops)
        print(f"| {name} | mean | {100 * statistics.mean(saved_all):.1f}% | | "
              f"{-100 * statistics.mean(drops):+.2f} | {within} of {len(seeds)} | | |", flush=True)


if __name__ == "__main__":
    main()
