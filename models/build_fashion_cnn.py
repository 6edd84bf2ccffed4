#!/usr/bin/env python3
"""Build the bundled example model: a small residual CNN trained on Fashion-MNIST.

Rerunnable end to end::

    python3 models/build_fashion_cnn.py

What it does:

1. Installs what it needs when missing: PyTorch (``pip install torch==2.13.0``,
   a local CPU wheel on these machines) and the Debian package
   ``dataset-fashion-mnist`` (gzip IDX files under /usr/share/datasets/fashion-mnist/).
2. Reads the IDX files with a small numpy parser (no torchvision).
3. Trains a seeded, deterministic CNN (2 threads) on the full 60k training set.
4. Evaluates on the full 10k test set and prints the accuracy.
5. Exports to ONNX (TorchScript exporter, opset 17, BatchNorm kept as
   BatchNormalization nodes, dynamic batch axis) as ``models/fashion_cnn.onnx``.
6. Writes ``models/fashion_test_slice.npz`` (first 512 test images + labels).
7. Checks the ONNX model against torch with onnxruntime and prints its accuracy.

Input convention: ``input`` is float32 [batch, 1, 28, 28] holding raw pixel / 255
(values in [0, 1]); no mean/std normalisation. Output ``logits`` is float32
[batch, 10] (class scores before softmax).

The network (every conv after the first has >= 32 input channels)::

    conv1 Conv(1->32, 3x3, pad 1) -> BN -> ReLU                    28x28
    conv2 Conv(32->32, 3x3, pad 1) -> BN -> ReLU -> MaxPool(2)     14x14
    conv3 Conv(32->64, 3x3, pad 1) -> BN -> ReLU                   14x14
    residual block at 64 channels:
        conv4 3x3 -> BN -> ReLU -> conv5 3x3 -> BN -> (+ identity) -> ReLU
    MaxPool(2)                                                      7x7
    GlobalAveragePool -> Flatten -> Linear(64, 128) -> ReLU -> Dropout -> Linear(128, 10)
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
TORCH_REQUIREMENT = "torch==2.13.0"  # exact spelling: resolves to the local CPU wheel
APT_PACKAGE = "dataset-fashion-mnist"
SLICE_SIZE = 512
MAX_IR_VERSION = 10  # onnxruntime 1.31 loads this comfortably


# --------------------------------------------------------------------------- setup

def _run(cmd: list[str]) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def ensure_torch() -> None:
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    rc = _run([sys.executable, "-m", "pip", "install", TORCH_REQUIREMENT])
    if rc != 0:
        sys.exit(f"could not install {TORCH_REQUIREMENT} (pip exit code {rc})")
    import importlib

    importlib.invalidate_caches()


def _apt_prefix() -> list[str]:
    if hasattr(os, "geteuid") and os.geteuid() != 0 and shutil.which("sudo"):
        return ["sudo"]
    return []


def apt_install(package: str) -> None:
    """apt-get install, refreshing the package lists once if the first try fails."""
    prefix = _apt_prefix()
    install = prefix + ["apt-get", "install", "-y", package]
    if _run(install) != 0:
        _run(prefix + ["apt-get", "update"])
        if _run(install) != 0:
            sys.exit(f"could not install the Debian package {package}")


def ensure_dataset() -> None:
    if all((DATA_DIR / name).is_file() for name in DATA_FILES.values()):
        return
    apt_install(APT_PACKAGE)
    missing = [n for n in DATA_FILES.values() if not (DATA_DIR / n).is_file()]
    if missing:
        sys.exit(f"{APT_PACKAGE} installed but files missing under {DATA_DIR}: {missing}")


# --------------------------------------------------------------------------- IDX

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse an (optionally gzip-compressed) IDX file into a numpy array.

    Layout: two zero bytes, one dtype code byte, one byte with the number of
    dimensions, then one big-endian uint32 per dimension, then the data.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = _IDX_DTYPES[code]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 1
    expected = offset + count * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: size {len(raw)} bytes, header says {expected}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return data.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def load_fashion_mnist() -> dict[str, np.ndarray]:
    out = {key: read_idx(DATA_DIR / name) for key, name in DATA_FILES.items()}
    assert out["train_images"].shape == (60000, 28, 28), out["train_images"].shape
    assert out["test_images"].shape == (10000, 28, 28), out["test_images"].shape
    assert out["train_labels"].shape == (60000,)
    assert out["test_labels"].shape == (10000,)
    return out


def to_input(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] = pixel / 255."""
    return (images_u8.astype(np.float32) / np.float32(255.0))[:, None, :, :]


def write_split(data: dict[str, np.ndarray], data_dir: Path, name: str, seed: int,
                size: int = 2000) -> tuple[Path, Path]:
    """``<name>_calib.npz``, a seeded draw of ``size`` training images (the draw
    fashion_data.py makes, so every model is calibrated on the same images), and
    ``<name>_test.npz``, all test images; both hold ``input`` and int64 ``labels``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pick = np.sort(np.random.default_rng(seed).choice(len(data["train_images"]), size=size, replace=False))
    calib = data_dir / f"{name}_calib.npz"
    test = data_dir / f"{name}_test.npz"
    np.savez(calib, input=to_input(data["train_images"][pick]),
             labels=data["train_labels"][pick].astype(np.int64))
    np.savez(test, input=to_input(data["test_images"]), labels=data["test_labels"].astype(np.int64))
    return calib, test


# --------------------------------------------------------------------------- model

def conv_bn_relu_class():
    """The 3x3 Conv -> BatchNorm -> ReLU module the Fashion-MNIST models are built from
    (made here because torch is imported only once the script has ensured it)."""
    from torch import nn

    class ConvBNReLU(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=True)
            self.bn = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    return ConvBNReLU


def build_model():
    import torch
    from torch import nn

    ConvBNReLU = conv_bn_relu_class()

    class BasicBlock(nn.Module):
        """conv -> BN -> ReLU -> conv -> BN -> (+ identity) -> ReLU."""

        def __init__(self, ch: int):
            super().__init__()
            self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=True)
            self.bn1 = nn.BatchNorm2d(ch)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=True)
            self.bn2 = nn.BatchNorm2d(ch)
            self.relu2 = nn.ReLU()

        def forward(self, x):
            y = self.relu1(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu2(y + x)

    class FashionCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = ConvBNReLU(1, 32)
            self.conv2 = ConvBNReLU(32, 32)
            self.pool1 = nn.MaxPool2d(2)
            self.conv3 = ConvBNReLU(32, 64)
            self.block = BasicBlock(64)
            self.pool2 = nn.MaxPool2d(2)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Linear(64, 128)
            self.relu_fc = nn.ReLU()
            self.dropout = nn.Dropout(0.2)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = self.pool1(self.conv2(self.conv1(x)))
            x = self.pool2(self.block(self.conv3(x)))
            x = torch.flatten(self.gap(x), 1)
            x = self.dropout(self.relu_fc(self.fc1(x)))
            return self.fc2(x)

    return FashionCNN()


# --------------------------------------------------------------------------- train / eval

def start_torch(seed: int):
    """Install torch if needed, then seed it and numpy, 2 threads, deterministic kernels:
    the setting every Fashion-MNIST script trains in. Returns the torch module."""
    ensure_torch()
    import onnx
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, threads {torch.get_num_threads()}")
    return torch


def evaluate_torch(model, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> tuple[float, np.ndarray]:
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(x[i : i + batch])).numpy())
    logits = np.concatenate(outs)
    return float((logits.argmax(1) == y).mean()), logits


def train(model, x: np.ndarray, y: np.ndarray, epochs: int, batch: int, lr: float, seed: int) -> float:
    import torch
    from torch import nn

    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(x) + batch - 1) // batch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.25
    )
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total_loss, correct, seen = 0.0, 0, 0
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            xb, yb = xt[idx], yt[idx]
            # random horizontal flip of half the batch (seeded)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        print(
            f"epoch {epoch + 1}/{epochs}: train loss {total_loss / seen:.4f} "
            f"train acc {correct / seen:.4f} ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- export

EXAMPLE_DOC = ("exprune-onnx example: residual CNN trained on Fashion-MNIST (MIT). "
               "input: float32 [batch,1,28,28] = pixel/255; logits: float32 [batch,10].")


def export_onnx(model, path: Path, doc: str = EXAMPLE_DOC, batchnorms: int = 5, max_bytes: int = 0) -> None:
    """TorchScript export with BatchNorm kept as its own node (``batchnorms`` of them),
    weights inline, IR capped for onnxruntime; shared by the Fashion-MNIST model scripts.
    ``max_bytes`` (0: no limit) stops a model too large to commit."""
    import onnx
    import torch

    model.eval()
    dummy = torch.zeros(2, 1, 28, 28, dtype=torch.float32)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        model,
        (dummy,),
        str(tmp),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.EVAL,
    )
    m = onnx.load(str(tmp))
    tmp.unlink()
    m.ir_version = min(m.ir_version, MAX_IR_VERSION)
    m.doc_string = doc
    onnx.checker.check_model(m)
    ops = [n.op_type for n in m.graph.node]
    n_bn = ops.count("BatchNormalization")
    if n_bn != batchnorms:
        sys.exit(f"expected {batchnorms} BatchNormalization nodes in the export, found {n_bn}: {ops}")
    if any(init.HasField("data_location") and init.data_location == onnx.TensorProto.EXTERNAL
           for init in m.graph.initializer):
        sys.exit("unexpected external data in the export")
    onnx.save(m, str(path))
    if max_bytes and path.stat().st_size > max_bytes:
        sys.exit(f"{path} is {path.stat().st_size} bytes, over the {max_bytes} byte budget")


def onnx_logits(path: Path, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate(
        [sess.run(["logits"], {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    )


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where to write the outputs (default: models/)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    ensure_dataset()
    torch = start_torch(args.seed)
    import onnx

    data = load_fashion_mnist()
    x_train, y_train = to_input(data["train_images"]), data["train_labels"].astype(np.int64)
    x_test, y_test = to_input(data["test_images"]), data["test_labels"].astype(np.int64)
    print(f"train {x_train.shape}, test {x_test.shape}")

    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}")
    train_seconds = train(model, x_train, y_train, args.epochs, args.batch_size, args.lr, args.seed)
    print(f"training time: {train_seconds:.1f} s ({args.epochs} epochs, {torch.get_num_threads()} threads)")

    acc_test, torch_test_logits = evaluate_torch(model, x_test, y_test)
    acc_slice = float((torch_test_logits[:SLICE_SIZE].argmax(1) == y_test[:SLICE_SIZE]).mean())
    print(f"torch test accuracy (10000): {acc_test:.4f}")
    print(f"torch slice accuracy ({SLICE_SIZE}): {acc_slice:.4f}")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / "fashion_cnn.onnx"
    slice_path = args.out_dir / "fashion_test_slice.npz"
    export_onnx(model, onnx_path)
    x_slice = np.ascontiguousarray(x_test[:SLICE_SIZE], dtype=np.float32)
    y_slice = y_test[:SLICE_SIZE].astype(np.int64)
    np.savez_compressed(slice_path, input=x_slice, labels=y_slice)

    m = onnx.load(str(onnx_path))
    print(f"onnx: ir_version {m.ir_version}, opset {[(o.domain or 'ai.onnx', o.version) for o in m.opset_import]}")
    print(f"onnx nodes: {[n.op_type for n in m.graph.node]}")

    ort_test = onnx_logits(onnx_path, x_test)
    ort_slice = onnx_logits(onnx_path, x_slice, batch=SLICE_SIZE)
    diff_slice = float(np.abs(ort_slice - torch_test_logits[:SLICE_SIZE]).max())
    diff_test = float(np.abs(ort_test - torch_test_logits).max())
    print(f"max |onnx - torch| logits on slice: {diff_slice:.3e} (full test set: {diff_test:.3e})")
    onnx_acc_test = float((ort_test.argmax(1) == y_test).mean())
    onnx_acc_slice = float((ort_slice.argmax(1) == y_slice).mean())
    print(f"onnx test accuracy (10000): {onnx_acc_test:.4f}")
    print(f"onnx slice accuracy ({SLICE_SIZE}): {onnx_acc_slice:.4f}")
    for p in (onnx_path, slice_path):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    if diff_slice > 1e-3:
        print("ERROR: onnx and torch outputs differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
