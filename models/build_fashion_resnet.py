#!/usr/bin/env python3
"""Build a benchmark model: a ResNet-style CNN (basic blocks, 3 stages) trained on Fashion-MNIST.

Rerunnable end to end::

    python3 models/build_fashion_resnet.py               # train, export, write the data files
    python3 models/build_fashion_resnet.py --data-only   # only (re)write models/data/*.npz

It stands in for the paper's ResNet18 / CIFAR-10 row, scaled down to train in a few
minutes on 2 CPU cores. Data loading and files, the training setting and loop, the
export and the onnxruntime runner come from build_fashion_cnn.py, so the input
convention is the same as
``fashion_cnn.onnx``: ``input`` float32 [batch, 1, 28, 28] = raw pixel / 255, no
mean/std normalisation; the output ``logits`` is float32 [batch, 10].

The network (the paper's method works on layers with many input channels, so it
spends its budget on width rather than depth; the stem pools, like ResNet18's
ImageNet stem, because full-resolution stages cost ~4x the training time)::

    stem  Conv(1->32, 3x3) -> BN -> ReLU -> MaxPool(2)                   28x28 -> 14x14
    stage 1: blocks at 32 channels, stride 1                             14x14
    stage 2: blocks at 64 channels, the first one with stride 2           7x7
    stage 3: blocks at 128 channels, the first one with stride 2          4x4
    GlobalAveragePool -> Flatten -> Linear(128, 10)
    (--blocks basic blocks per stage, default 2)

    basic block: conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> Add(shortcut) -> ReLU,
    shortcut = identity, or 1x1 conv (stride 2) -> BN where the shape changes.

Outputs (``--out-dir``, default models/):

* ``fashion_resnet.onnx``: opset 17, weights inline, dynamic batch axis, BatchNorm
  kept as BatchNormalization nodes (``do_constant_folding=False``).
* ``data/fashion_resnet_calib.npz``: 2,000 training images drawn with the seed, the
  same draw as models/fashion_data.py makes (so, at seed 0, the same images as
  ``fashion_calib.npz``); ``data/fashion_resnet_test.npz``: all 10,000 test images.
  Both hold ``input`` and ``labels`` (int64).

The last line printed is the test accuracy of the exported model in onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from build_fashion_cnn import (  # noqa: E402
    ensure_dataset,
    evaluate_torch,
    load_fashion_mnist,
    onnx_logits,
    start_torch,
    to_input,
    train,
    write_split,
)
from build_fashion_cnn import export_onnx as export_fashion_onnx  # noqa: E402

NAME = "fashion_resnet"
WIDTHS = (32, 64, 128)
CALIBRATION_SIZE = 2000
MAX_ONNX_BYTES = 5_000_000  # committed to git: keep it small


# --------------------------------------------------------------------------- model

def build_model(blocks_per_stage: int):
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        """conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> (+ shortcut) -> ReLU."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            # No conv bias: the BatchNorm right after it has its own shift.
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu2 = nn.ReLU()
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = self.relu1(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu2(y + self.shortcut(x))

    class FashionResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(1, WIDTHS[0], 3, padding=1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU(),
                nn.MaxPool2d(2),
            )
            layers, cin = [], WIDTHS[0]
            for stage, width in enumerate(WIDTHS):
                for block in range(blocks_per_stage):
                    stride = 2 if stage > 0 and block == 0 else 1
                    layers.append(BasicBlock(cin, width, stride))
                    cin = width
            self.blocks = nn.Sequential(*layers)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, 10)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(self.gap(x), 1))

    return FashionResNet()


def expected_batchnorms(blocks_per_stage: int) -> int:
    # stem + 2 per block + one per projection shortcut (first block of stages 2 and 3)
    return 1 + 2 * blocks_per_stage * len(WIDTHS) + (len(WIDTHS) - 1)


# --------------------------------------------------------------------------- export

def export_onnx(model, path: Path, blocks_per_stage: int) -> None:
    export_fashion_onnx(
        model, path, batchnorms=expected_batchnorms(blocks_per_stage), max_bytes=MAX_ONNX_BYTES,
        doc=f"exprune-onnx benchmark: ResNet-style CNN ({blocks_per_stage} basic blocks per stage, widths "
            f"{'/'.join(map(str, WIDTHS))}) trained on Fashion-MNIST (MIT). "
            "input: float32 [batch,1,28,28] = pixel/255; logits: float32 [batch,10].")


# --------------------------------------------------------------------------- data files

def write_data_files(data: dict[str, np.ndarray], data_dir: Path, seed: int) -> tuple[Path, Path]:
    calib, test = write_split(data, data_dir, NAME, seed, CALIBRATION_SIZE)
    print(f"wrote {calib} ({CALIBRATION_SIZE} training images, seed {seed}) and {test} "
          f"({len(data['test_images'])} test images)")
    return calib, test


def onnx_accuracy_line(onnx_path: Path, x_test: np.ndarray, y_test: np.ndarray) -> tuple[str, np.ndarray]:
    logits = onnx_logits(onnx_path, x_test)
    acc = float((logits.argmax(1) == y_test).mean())
    return f"test accuracy {acc:.4f} (onnxruntime, {len(y_test)} samples)", logits


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=HERE,
                    help="where to write the .onnx; data files go to <out-dir>/data (default: models/)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--blocks", type=int, default=2, help="basic blocks per stage")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-only", action="store_true",
                    help="skip training: write the data files and score the existing .onnx")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.blocks < 1 or args.batch_size < 1 or not args.lr > 0:
        ap.error("--epochs, --blocks and --batch-size must be >= 1 and --lr > 0")

    onnx_path = args.out_dir / f"{NAME}.onnx"
    if args.data_only and not onnx_path.is_file():
        ap.error(f"--data-only scores the existing model, but {onnx_path} does not exist")

    ensure_dataset()
    data = load_fashion_mnist()
    x_test, y_test = to_input(data["test_images"]), data["test_labels"].astype(np.int64)
    write_data_files(data, args.out_dir / "data", args.seed)
    if args.data_only:
        print(onnx_accuracy_line(onnx_path, x_test, y_test)[0])
        return 0

    torch = start_torch(args.seed)
    import onnx

    x_train, y_train = to_input(data["train_images"]), data["train_labels"].astype(np.int64)
    model = build_model(args.blocks)
    print(f"parameters: {sum(p.numel() for p in model.parameters())}, {args.blocks} blocks per stage")
    t0 = time.perf_counter()
    train_seconds = train(model, x_train, y_train, args.epochs, args.batch_size, args.lr, args.seed)
    print(f"training time: {train_seconds:.1f} s ({args.epochs} epochs, {torch.get_num_threads()} threads)")

    acc_torch, torch_logits = evaluate_torch(model, x_test, y_test)
    print(f"torch test accuracy ({len(y_test)}): {acc_torch:.4f}")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(model, onnx_path, args.blocks)
    m = onnx.load(str(onnx_path))
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes, ir_version {m.ir_version}, "
          f"{len(m.graph.node)} nodes)")

    line, ort_logits = onnx_accuracy_line(onnx_path, x_test, y_test)
    diff = float(np.abs(ort_logits - torch_logits).max())
    print(f"max |onnx - torch| logits on the test set: {diff:.3e}; whole run {time.perf_counter() - t0:.1f} s")
    if diff > 1e-3:
        print("ERROR: onnx and torch outputs differ", file=sys.stderr)
        return 1
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
