"""Accuracy and measured FLOPs of the bundled example at several global thresholds.

    python bench/threshold_sweep.py [--model M] [--data NPZ] [--k auto]

Every row compiles the model, runs original and optimised model in onnxruntime on the
same inputs, and reads the pruning counters from the early-exit ops. The thresholds
are evaluated on the data given, so picking the best row from this table is tuning on
that data, not a held-out result.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import onnxruntime as ort

import exprune_onnx
from exprune_onnx.io.data import load_dataset
from exprune_onnx.io.modelio import load_model
from exprune_onnx.measure.compare import compare
from exprune_onnx.report.tables import measured_total

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ROOT / "models" / "fashion_cnn.onnx", type=Path)
    parser.add_argument("--data", default=ROOT / "models" / "fashion_test_slice.npz", type=Path)
    parser.add_argument("--k", default="auto")
    parser.add_argument("--thresholds", default="-inf,-4,-2,-1,-0.5,0")
    args = parser.parse_args()

    model = load_model(args.model)
    data = load_dataset(args.data, model)
    samples = len(data)
    print(f"{args.model.name} on {samples} samples of {args.data.name}; k={args.k}; "
          f"onnxruntime {ort.__version__}, {platform.machine()}, batch 64, default threads")
    print(f"{'threshold':>9}  {'accuracy':>8}  {'change':>7}  {'top-1 agree':>11}  {'FLOPs saved':>11}")
    for text in args.thresholds.split(","):
        threshold = float(text)
        res = exprune_onnx.optimize_model(model, threshold=threshold, k=args.k)
        check = compare(model, res.model, data)
        saved = 1 - measured_total(res, check.pruned, check.samples) / res.dense_flops
        before, after = check.accuracy if check.accuracy else (float("nan"), float("nan"))
        agree = check.outputs[0].top1_agreement
        print(f"{threshold:>9g}  {100 * after:>7.2f}%  {100 * (after - before):>+6.2f}  {100 * agree:>10.2f}%  "
              f"{100 * saved:>10.1f}%")


if __name__ == "__main__":
    main()
