"""scikit-learn's digits MLP, exported by skl2onnx: a real third-party exporter's graph.

    python models/build_digits_mlp.py [--seed 0] [--out-dir models/] [--data-only]

Data: sklearn.datasets.load_digits (1,797 8x8 handwritten digits, 64 features in 0..16),
divided by 16. Split: a seeded stratified 70/30 train/test split. Calibration data is the
whole training split (1,257 images; the set has fewer than 2,000) and the test data the
540 test images. Model: MLPClassifier(hidden_layer_sizes=(128, 128), activation="relu"),
exported with ``to_onnx(..., options={"zipmap": False}, target_opset=17)``, which gives
MatMul -> Add -> Relu layers followed by Softmax, ArgMax and ai.onnx.ml ops.

Writes models/digits_mlp.onnx (input ``X`` float32 [batch, 64]; outputs ``label`` int64
[batch] and ``probabilities`` float32 [batch, 10]) and models/data/digits_mlp_{calib,test}.npz.
Installs scikit-learn and skl2onnx with pip when they are missing (dev-only tools).
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def ensure(module: str, package: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)


def split(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--data-only", action="store_true", help="only write the data files")
    args = parser.parse_args()
    ensure("sklearn", "scikit-learn")
    ensure("skl2onnx", "skl2onnx")
    x_train, x_test, y_train, y_test = split(args.seed)
    data = args.out_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    np.savez(data / "digits_mlp_calib.npz", X=x_train, labels=y_train)
    np.savez(data / "digits_mlp_test.npz", X=x_test, labels=y_test)
    model_path = args.out_dir / "digits_mlp.onnx"
    if not args.data_only:
        from skl2onnx import to_onnx
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(hidden_layer_sizes=(128, 128), activation="relu", max_iter=500, random_state=args.seed)
        clf.fit(x_train, y_train)
        onx = to_onnx(clf, x_train[:1], options={"zipmap": False}, target_opset=17)
        model_path.write_bytes(onx.SerializeToString())
        print(f"wrote {model_path} ({model_path.stat().st_size} bytes); sklearn test accuracy "
              f"{clf.score(x_test, y_test):.4f}")
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    label = session.run(["label"], {"X": x_test})[0]
    print(f"test accuracy {np.mean(label == y_test):.4f} (onnxruntime, {len(y_test)} samples)")


if __name__ == "__main__":
    main()
