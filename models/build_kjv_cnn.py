#!/usr/bin/env python3
"""Build a character-level 1-D CNN that tells which part of the King James Bible a passage comes from.

Rerunnable end to end::

    python3 models/build_kjv_cnn.py                # train, export, evaluate (about 5 min on 2 free cores)
    python3 models/build_kjv_cnn.py --data-only    # only rewrite models/data/kjv_cnn_{calib,test}.npz

What it does:

1. Installs what it needs when missing: the Debian package ``bible-kjv`` and PyTorch
   (``pip install torch==2.13.0``), as models/build_kjv_lm.py does.
2. Reads the 66 books (models/kjv_data.py), labels each with its genre (``GENRES``:
   law, history, wisdom, major prophets, minor prophets, gospels and Acts, epistles,
   Revelation) and splits every book by position: its first 85% of characters train,
   its last 15% are held out, so no test window overlaps a training one.
3. Trains a text CNN of the usual shape (character embedding, then Conv1d ->
   BatchNorm -> ReLU four times with a MaxPool after the second, a max over positions
   and a Linear classifier; ``TextCNN``) on random 192-character windows.
4. Exports it with the TorchScript exporter (opset 17, BatchNorm kept as its own node,
   batch axis dynamic): ``tokens`` int64 [batch, 192] -> ``logits`` float32 [batch, 8].
5. Writes ``models/data/kjv_cnn_calib.npz`` (2,000 seeded training windows) and
   ``models/data/kjv_cnn_test.npz`` (the held-out text cut into consecutive windows),
   each with ``tokens`` and ``labels``, and prints the held-out accuracy computed with
   onnxruntime as the last line.

The benchmark model for 1-D convolutions read sparsely (docs/sparse_conv.md): its three
inner convs read ReLU outputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_fashion_cnn import ensure_torch  # noqa: E402
from kjv_data import VOCAB, encode, ensure_bible, read_books  # noqa: E402

LENGTH = 192
# (genre, number of books), in canonical order: Genesis..Deuteronomy, Joshua..Esther, ...
GENRES = (("law", 5), ("history", 12), ("wisdom", 5), ("major prophets", 5), ("minor prophets", 12),
          ("gospels and acts", 5), ("epistles", 21), ("revelation", 1))
TRAIN_SHARE = 0.85
CALIB_SAMPLES = 2000
MAX_TEST_SAMPLES = 4000
MAX_IR_VERSION = 10  # as models/build_kjv_lm.py writes


def split_text(books: list[tuple[str, str]]) -> tuple[list[tuple[np.ndarray, int]], list[tuple[np.ndarray, int]]]:
    """[(character ids, genre)] per book for the training and the held-out part."""
    labels = [g for g, (_, count) in enumerate(GENRES) for _ in range(count)]
    if len(labels) != len(books):
        sys.exit(f"GENRES covers {len(labels)} books, the text has {len(books)}")
    train, test = [], []
    for (_, text), genre in zip(books, labels):
        ids = encode(text)
        cut = int(len(ids) * TRAIN_SHARE)
        train.append((ids[:cut], genre))
        test.append((ids[cut:], genre))
    return train, test


def random_windows(parts, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``count`` windows drawn uniformly over the characters of ``parts`` (that fit a window)."""
    sizes = np.array([max(len(ids) - LENGTH, 0) for ids, _ in parts], dtype=np.float64)
    which = rng.choice(len(parts), size=count, p=sizes / sizes.sum())
    tokens = np.empty((count, LENGTH), np.int64)
    labels = np.empty(count, np.int64)
    for i, p in enumerate(which):
        ids, genre = parts[p]
        start = int(rng.integers(0, len(ids) - LENGTH))
        tokens[i], labels[i] = ids[start:start + LENGTH], genre
    return tokens, labels


def consecutive_windows(parts) -> tuple[np.ndarray, np.ndarray]:
    """Every held-out part cut into consecutive windows, evenly thinned to MAX_TEST_SAMPLES."""
    tokens, labels = [], []
    for ids, genre in parts:
        for start in range(0, len(ids) - LENGTH + 1, LENGTH):
            tokens.append(ids[start:start + LENGTH])
            labels.append(genre)
    keep = np.linspace(0, len(tokens) - 1, min(MAX_TEST_SAMPLES, len(tokens))).round().astype(int)
    return np.stack(tokens)[keep], np.array(labels, np.int64)[keep]


def write_data(train, test, out_dir: Path, seed: int) -> tuple[Path, Path]:
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    calib_path, test_path = data_dir / "kjv_cnn_calib.npz", data_dir / "kjv_cnn_test.npz"
    tokens, labels = random_windows(train, CALIB_SAMPLES, np.random.default_rng(seed))
    np.savez(calib_path, tokens=tokens, labels=labels)
    tokens, labels = consecutive_windows(test)
    np.savez(test_path, tokens=tokens, labels=labels)
    print(f"wrote {calib_path} ({CALIB_SAMPLES} training windows, seed {seed}) and {test_path} "
          f"({len(labels)} held-out windows) of {LENGTH} characters; held-out genres "
          f"{np.bincount(labels, minlength=len(GENRES)).tolist()}")
    return calib_path, test_path


def build_model():
    import torch
    from torch import nn

    def block(c_in: int, c_out: int, k: int):
        return [nn.Conv1d(c_in, c_out, k, padding=k // 2), nn.BatchNorm1d(c_out), nn.ReLU()]

    class TextCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(len(VOCAB), 48)
            self.body = nn.Sequential(*block(48, 128, 5), *block(128, 128, 5), nn.MaxPool1d(2),
                                      *block(128, 192, 3), *block(192, 192, 3))
            self.head = nn.Linear(192, len(GENRES))

        def forward(self, tokens):
            h = self.body(self.embed(tokens).transpose(1, 2))
            return self.head(torch.amax(h, dim=2))

    return TextCNN()


def train(model, parts, steps: int, batch: int, lr: float, seed: int) -> float:
    import torch
    from torch import nn

    rng = np.random.default_rng(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    t0, running, report = time.perf_counter(), 0.0, max(1, steps // 10)
    for step in range(steps):
        tokens, labels = random_windows(parts, batch, rng)
        loss = loss_fn(model(torch.from_numpy(tokens)), torch.from_numpy(labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % report == 0:
            print(f"step {step + 1}/{steps}: train loss {running / report:.4f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
            running = 0.0
    model.eval()
    return time.perf_counter() - t0


def export(model, path: Path) -> None:
    import onnx
    import torch

    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(model, (torch.zeros(2, LENGTH, dtype=torch.int64),), str(tmp), dynamo=False, opset_version=17,
                      input_names=["tokens"], output_names=["logits"],
                      dynamic_axes={"tokens": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL)
    m = onnx.load(str(tmp))
    tmp.unlink()
    m.ir_version = min(m.ir_version, MAX_IR_VERSION)
    m.doc_string = (f"exprune-onnx example: character-level 1-D CNN trained on the KJV Bible to tell a passage's "
                    f"genre. tokens: int64 [batch,{LENGTH}], indices into VOCAB of models/kjv_data.py; logits: "
                    f"float32 [batch,{len(GENRES)}], scores of {', '.join(g for g, _ in GENRES)}.")
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def accuracy(path: Path, tokens: np.ndarray, labels: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(["logits"], {"tokens": tokens[i:i + 256]})[0]
                             for i in range(0, len(tokens), 256)])
    return float((logits.argmax(1) == labels).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where to write the outputs (default: models/)")
    ap.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-only", action="store_true", help="only write the data files (and score an existing model)")
    args = ap.parse_args(argv)
    if args.steps <= 0 or args.batch_size <= 0 or args.lr <= 0:
        ap.error("--steps, --batch-size and --lr must be positive")

    train_parts, test_parts = split_text(read_books(ensure_bible()))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _, test_path = write_data(train_parts, test_parts, args.out_dir, args.seed)
    path = args.out_dir / "kjv_cnn.onnx"
    with np.load(test_path) as f:
        test_tokens, test_labels = f["tokens"], f["labels"]
    if args.data_only and not path.is_file():
        print(f"{path} not found: wrote the data files only")
        return 0
    if not args.data_only:
        ensure_torch()
        import torch

        torch.manual_seed(args.seed)
        torch.set_num_threads(2)
        torch.use_deterministic_algorithms(True)
        model = build_model()
        print(f"torch {torch.__version__}; parameters: {sum(p.numel() for p in model.parameters())}")
        seconds = train(model, train_parts, args.steps, args.batch_size, args.lr, args.seed)
        print(f"training time: {seconds:.1f} s ({args.steps} steps of {args.batch_size} windows)")
        export(model, path)
        with torch.no_grad():
            ref = model(torch.from_numpy(test_tokens[:8])).numpy()
        import onnxruntime as ort

        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            ["logits"], {"tokens": test_tokens[:8]})[0]
        diff = float(np.abs(got - ref).max())
        print(f"wrote {path} ({path.stat().st_size} bytes); max |onnx - torch| logits on 8 held-out windows: {diff:.3e}")
        if diff > 1e-3:
            print("ERROR: onnx and torch outputs differ", file=sys.stderr)
            return 1
    print(f"test accuracy {accuracy(path, test_tokens, test_labels):.4f} "
          f"(onnxruntime, {len(test_labels)} held-out windows of {LENGTH} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
