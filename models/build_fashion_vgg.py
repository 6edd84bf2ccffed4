#!/usr/bin/env python3
"""Build two benchmark models: a small VGG with BatchNorm on Fashion-MNIST, and a copy of it
gradually magnitude-pruned to 90% sparsity.

Rerunnable end to end::

    python3 models/build_fashion_vgg.py            # --epochs 4 --prune-epochs 3 --finetune-epochs 1

Writes, under ``--out-dir`` (default models/):

- ``fashion_vgg.onnx``: the dense VGG (the paper's VGG11 row, scaled down for 28x28 inputs);
- ``fashion_vgg_pruned.onnx``: the same network after gradual magnitude pruning (Zhu & Gupta,
  2017) and fine-tuning with the masks fixed; at least 90% of the weights of every pruned
  layer are exact zeros;
- ``data/fashion_vgg_calib.npz`` (2,000 training images, seeded draw as in fashion_data.py),
  ``data/fashion_vgg_test.npz`` (the 10,000 test images) and copies of both named
  ``fashion_vgg_pruned_*.npz``. ``--data-only`` writes just these, without torch.

Input ``input`` is float32 [batch, 1, 28, 28] = raw pixel / 255, as for fashion_cnn.onnx;
output ``logits`` is float32 [batch, 10].

The network::

    conv1 Conv(1->32, 3x3, pad 1) -> BN -> ReLU -> MaxPool(2)      28x28 -> 14x14
    conv2 Conv(32->64) -> BN -> ReLU -> MaxPool(2)                 14x14 -> 7x7
    conv3 Conv(64->128) -> BN -> ReLU                              7x7
    conv4 Conv(128->128) -> BN -> ReLU -> MaxPool(2)               7x7 -> 3x3
    Flatten(1152) -> fc1 Linear(1152, 256) -> ReLU -> Dropout -> fc2 Linear(256, 10)

Pruning: every conv and linear weight except conv1's (288 weights; at 90% each filter would
keep about 3 taps, and conv1 reads the raw image, so ExPrune never rewrites it) is pruned
per layer by magnitude. The target sparsity follows
``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3`` with s_i = 0, t0 = 0, the mask
recomputed every dt steps and n * dt spanning the ``--prune-epochs``; then
``--finetune-epochs`` train with the masks fixed. Masked weights and their gradients are
zeroed after every optimizer step, so the exported weights hold exact (+0.0) zeros.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

# Spinning OpenMP workers made 2-thread training 4-8x slower on the shared 2-core machines;
# passive waiting changes only scheduling, not arithmetic. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from build_fashion_cnn import (  # noqa: E402
    conv_bn_relu_class,
    ensure_dataset,
    evaluate_torch,
    export_onnx,
    load_fashion_mnist,
    onnx_logits,
    start_torch,
    to_input,
    train,
    write_split,
)

DENSE = "fashion_vgg"
PRUNED = "fashion_vgg_pruned"
CONFIG = [32, "M", 64, "M", 128, 128, "M"]
FC_WIDTH = 256
N_BN = sum(1 for v in CONFIG if v != "M")
CALIBRATION = 2000


# --------------------------------------------------------------------------- data

def write_data(data: dict[str, np.ndarray], data_dir: Path, seed: int) -> None:
    """The calibration draw is fashion_data.py's, so both models see the same 2,000 images."""
    calib, test = write_split(data, data_dir, DENSE, seed, CALIBRATION)
    # Copies rather than symlinks: they survive copying models/data elsewhere.
    for src in (calib, test):
        shutil.copyfile(src, data_dir / src.name.replace(DENSE, PRUNED, 1))
    print(f"wrote {calib} ({CALIBRATION} training images, seed {seed}), {test} (10000 test images) "
          f"and their {PRUNED}_* copies")


# --------------------------------------------------------------------------- model

def build_model():
    import torch
    from torch import nn

    ConvBNReLU = conv_bn_relu_class()

    class FashionVGG(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin, n_conv, n_pool = [], 1, 0, 0
            for v in CONFIG:
                if v == "M":
                    n_pool += 1
                    layers.append((f"pool{n_pool}", nn.MaxPool2d(2)))
                else:
                    n_conv += 1
                    layers.append((f"conv{n_conv}", ConvBNReLU(cin, v)))
                    cin = v
            self.features = nn.Sequential()
            for name, layer in layers:
                self.features.add_module(name, layer)
            side = 28
            for _ in range(n_pool):
                side //= 2
            self.fc1 = nn.Linear(cin * side * side, FC_WIDTH)
            self.relu_fc = nn.ReLU()
            self.dropout = nn.Dropout(0.3)
            self.fc2 = nn.Linear(FC_WIDTH, 10)

        def forward(self, x):
            x = torch.flatten(self.features(x), 1)
            return self.fc2(self.dropout(self.relu_fc(self.fc1(x))))

    return FashionVGG()


def prunable_layers(model) -> list[tuple[str, object]]:
    from torch import nn

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # conv1 stays dense: see the module docstring.
    return layers[1:]


# --------------------------------------------------------------------------- pruning

def target_sparsity(step: int, final: float, n: int, dt: int, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017), eq. 1, with t0 = 0; constant at `final` after n * dt steps."""
    if n <= 0:
        return final
    progress = min(step / (n * dt), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def magnitude_mask(weight, sparsity: float):
    """Keep all but the round(sparsity * numel) smallest-magnitude weights.

    A stable sort gives a deterministic choice among equal magnitudes; already-pruned weights
    are 0, the smallest, so masks only ever shrink while the target sparsity grows.
    """
    import torch

    flat = weight.detach().abs().flatten()
    n_zero = int(round(sparsity * flat.numel()))
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:n_zero]] = False
    return keep.view_as(weight)


def apply_masks(layers, masks) -> None:
    import torch

    with torch.no_grad():
        for name, layer in layers:
            layer.weight.masked_fill_(~masks[name], 0.0)


def prune_and_finetune(model, x: np.ndarray, y: np.ndarray, args) -> float:
    import torch
    from torch import nn

    layers = prunable_layers(model)
    masks = {name: torch.ones_like(layer.weight, dtype=torch.bool) for name, layer in layers}
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(args.seed + 1)
    batch = args.batch_size
    steps_per_epoch = (len(x) + batch - 1) // batch
    prune_steps = args.prune_epochs * steps_per_epoch
    total_steps = prune_steps + args.finetune_epochs * steps_per_epoch
    dt = args.prune_every
    n_updates = prune_steps // dt
    opt = torch.optim.AdamW(model.parameters(), lr=args.prune_lr, weight_decay=1e-4)
    # Cosine decay over pruning and fine-tuning: a high rate early lets the network recover
    # from the big early mask steps, a low one at the end settles the final masks.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s / max(total_steps, 1), 1.0))))
    loss_fn = nn.CrossEntropyLoss()
    print(f"pruning {len(layers)} layers to {args.sparsity:.2f} over {prune_steps} steps "
          f"({n_updates} mask updates, every {dt} steps), then {total_steps - prune_steps} "
          f"fine-tuning steps", flush=True)

    def update_masks(step: int) -> float:
        s = target_sparsity(step, args.sparsity, n_updates, dt)
        for name, layer in layers:
            masks[name] = magnitude_mask(layer.weight, s)
        apply_masks(layers, masks)
        return s

    t0 = time.perf_counter()
    step, current = 0, 0.0
    n_epochs = args.prune_epochs + args.finetune_epochs
    for epoch in range(n_epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total_loss, correct, seen = 0.0, 0, 0
        for i in range(0, len(x), batch):
            if step <= n_updates * dt and step % dt == 0:
                current = update_masks(step)
            idx = perm[i : i + batch]
            xb, yb = xt[idx], yt[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            # Zeroed gradients keep AdamW's moments of pruned weights at 0; the mask after the
            # step undoes the weight decay and any leftover moment from before the prune.
            for name, layer in layers:
                layer.weight.grad.masked_fill_(~masks[name], 0.0)
            opt.step()
            apply_masks(layers, masks)
            sched.step()
            step += 1
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        phase = "prune" if epoch < args.prune_epochs else "fine-tune"
        print(f"{phase} epoch {epoch + 1}/{n_epochs}: sparsity {current:.4f} train loss "
              f"{total_loss / seen:.4f} train acc {correct / seen:.4f} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    if current < args.sparsity:  # no fine-tuning step reached the last mask update
        current = update_masks(n_updates * dt)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- export

def onnx_sparsity(path: Path) -> tuple[list[tuple[str, int, int]], int, int]:
    """Exact zeros of each Conv/Gemm weight, read back from the exported file itself."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    rows = []
    for node in m.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            w = inits[node.input[1]]
            rows.append((node.name, int(np.count_nonzero(w == 0)), int(w.size)))
    return rows, sum(r[1] for r in rows), sum(r[2] for r in rows)


def print_sparsity(path: Path, pruned_names: set[str]) -> None:
    rows, zeros, total = onnx_sparsity(path)
    p_zeros = sum(z for name, z, _ in rows if name in pruned_names)
    p_total = sum(n for name, _, n in rows if name in pruned_names)
    print(f"weight sparsity of {path.name} (exact zeros):")
    for name, z, n in rows:
        pruned = name in pruned_names
        print(f"  {name:24s} {z:8d} / {n:8d} = {z / n:.4f}{'' if pruned else '  (kept dense)'}")
    print(f"  pruned layers: {p_zeros} / {p_total} = {p_zeros / p_total:.4f}; "
          f"all conv/linear weights: {zeros} / {total} = {zeros / total:.4f}")


# --------------------------------------------------------------------------- main

def onnx_accuracy(path: Path, model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(onnxruntime accuracy, max |onnxruntime - torch| logits) on the test set."""
    _, torch_logits = evaluate_torch(model, x, y)
    ort = onnx_logits(path, x)
    return float((ort.argmax(1) == y).mean()), float(np.abs(ort - torch_logits).max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where to write the outputs (default: models/)")
    ap.add_argument("--epochs", type=int, default=4, help="dense training epochs")
    ap.add_argument("--prune-epochs", type=int, default=3, help="epochs over which sparsity ramps up")
    ap.add_argument("--finetune-epochs", type=int, default=1, help="epochs with the final masks fixed")
    ap.add_argument("--sparsity", type=float, default=0.9, help="final sparsity s_f of each pruned layer")
    ap.add_argument("--prune-every", type=int, default=50, help="steps dt between mask updates")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak OneCycle rate of dense training")
    ap.add_argument("--prune-lr", type=float, default=1e-3, help="starting (cosine) rate of pruning")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only (smoke runs)")
    ap.add_argument("--data-only", action="store_true", help="only write the data files, no training")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.prune_epochs < 0 or args.finetune_epochs < 0:
        ap.error("--epochs must be >= 1, --prune-epochs and --finetune-epochs >= 0")
    if not 0.0 < args.sparsity < 1.0:
        ap.error("--sparsity must be in (0, 1)")
    if args.prune_every < 1 or args.batch_size < 1 or args.limit < 0:
        ap.error("--prune-every and --batch-size must be >= 1, --limit >= 0")

    ensure_dataset()
    data = load_fashion_mnist()
    write_data(data, args.out_dir / "data", args.seed)
    if args.data_only:
        return 0

    torch = start_torch(args.seed)

    x_train, y_train = to_input(data["train_images"]), data["train_labels"].astype(np.int64)
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    x_test, y_test = to_input(data["test_images"]), data["test_labels"].astype(np.int64)
    print(f"train {x_train.shape}, test {x_test.shape}")

    model = build_model()
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    dense_seconds = train(model, x_train, y_train, args.epochs, args.batch_size, args.lr, args.seed)
    print(f"dense training time: {dense_seconds:.1f} s ({args.epochs} epochs)")
    dense_path = args.out_dir / f"{DENSE}.onnx"
    export_onnx(model, dense_path, batchnorms=N_BN, doc=
                "exprune-onnx benchmark: VGG-style CNN with BatchNorm trained on Fashion-MNIST (MIT). "
                "input: float32 [batch,1,28,28] = pixel/255; logits: float32 [batch,10].")
    dense_acc, dense_diff = onnx_accuracy(dense_path, model, x_test, y_test)

    prune_seconds = prune_and_finetune(model, x_train, y_train, args)
    print(f"pruning + fine-tuning time: {prune_seconds:.1f} s "
          f"({args.prune_epochs} + {args.finetune_epochs} epochs)")
    pruned_path = args.out_dir / f"{PRUNED}.onnx"
    export_onnx(model, pruned_path, batchnorms=N_BN, doc=
                f"exprune-onnx benchmark: fashion_vgg gradually magnitude-pruned (Zhu & Gupta 2017) to "
                f"{args.sparsity:.0%} per pruned layer, then fine-tuned. "
                "input: float32 [batch,1,28,28] = pixel/255; logits: float32 [batch,10].")
    pruned_acc, pruned_diff = onnx_accuracy(pruned_path, model, x_test, y_test)

    # Torch module names and exported node names agree: /features/conv2/conv/Conv, /fc1/Gemm.
    pruned_nodes = set()
    for name, layer in prunable_layers(model):
        op = "Conv" if isinstance(layer, torch.nn.Conv2d) else "Gemm"
        pruned_nodes.add("/" + name.replace(".", "/") + "/" + op)
    print_sparsity(pruned_path, pruned_nodes)
    rows, _, _ = onnx_sparsity(pruned_path)
    if {r[0] for r in rows} & pruned_nodes != pruned_nodes:
        print(f"ERROR: pruned layers {sorted(pruned_nodes)} not all found in the export", file=sys.stderr)
        return 1
    short = [name for name, z, n in rows if name in pruned_nodes and z < args.sparsity * n - 0.5]
    if short:
        print(f"ERROR: layers below {args.sparsity:.2f} sparsity: {short}", file=sys.stderr)
        return 1

    for p in (dense_path, pruned_path):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    print(f"total training time: {dense_seconds + prune_seconds:.1f} s")
    print(f"max |onnx - torch| logits on the test set: {DENSE} {dense_diff:.3e}, {PRUNED} {pruned_diff:.3e}")
    if max(dense_diff, pruned_diff) > 1e-3:
        print("ERROR: onnx and torch outputs differ", file=sys.stderr)
        return 1
    n = len(y_test)
    print(f"{DENSE}: test accuracy {dense_acc:.4f} (onnxruntime, {n} samples)")
    print(f"{PRUNED}: test accuracy {pruned_acc:.4f} (onnxruntime, {n} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
