"""Write Fashion-MNIST calibration and test sets as .npz files the CLI reads.

    python models/fashion_data.py [--calibration 2000] [--seed 0] [--certify 10000] [--out models/data]

``fashion_calib.npz``: a seeded random draw of training images (the model never sees
test images while it is being calibrated); ``fashion_test.npz``: all 10,000 test
images. Both hold ``input`` (float32 [N, 1, 28, 28], pixel / 255, as the model
expects) and ``labels`` (int64 [N]). Installs the Debian package
``dataset-fashion-mnist`` when it is missing, as build_fashion_cnn.py does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_fashion_cnn import ensure_dataset, load_fashion_mnist, to_input  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", type=int, default=2000, help="training images to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--certify", type=int, default=0,
                        help="also write fashion_certify.npz: this many training images (seed + 1) for the "
                             "benchmark's certified search (bench/certified.py), e.g. 10000")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    args = parser.parse_args()
    ensure_dataset()
    data = load_fashion_mnist()
    args.out.mkdir(parents=True, exist_ok=True)
    pick = np.sort(np.random.default_rng(args.seed).choice(60000, size=args.calibration, replace=False))
    np.savez(args.out / "fashion_calib.npz", input=to_input(data["train_images"][pick]),
             labels=data["train_labels"][pick].astype(np.int64))
    np.savez(args.out / "fashion_test.npz", input=to_input(data["test_images"]),
             labels=data["test_labels"].astype(np.int64))
    print(f"wrote {args.out / 'fashion_calib.npz'} ({args.calibration} training images, seed {args.seed}) "
          f"and {args.out / 'fashion_test.npz'} (10000 test images)")
    if args.certify:
        pick = np.sort(np.random.default_rng(args.seed + 1).choice(60000, size=args.certify, replace=False))
        np.savez(args.out / "fashion_certify.npz", input=to_input(data["train_images"][pick]),
                 labels=data["train_labels"][pick].astype(np.int64))
        print(f"wrote {args.out / 'fashion_certify.npz'} ({args.certify} training images, seed {args.seed + 1})")


if __name__ == "__main__":
    main()
