#!/usr/bin/env python3
"""Build a character-level language model of the King James Bible (a small OPT-style transformer).

Rerunnable end to end::

    python3 models/build_kjv_lm.py                 # train, export, evaluate (about 10-15 min on 2 free cores)
    python3 models/build_kjv_lm.py --size wide     # the wide variant (about 20 min; not in git, 26 MB per graph)
    python3 models/build_kjv_lm.py --data-only     # only rewrite models/data/kjv_lm_{calib,test}.npz

What it does:

1. Installs what it needs when missing: the Debian package ``bible-kjv`` (the
   ``bible`` program and its text) and PyTorch (``pip install torch==2.13.0``).
2. Reads ``bible -f Gen1:1-Rev22:21``, drops each line's verse reference and keeps
   one verse per line. Characters are mapped through the fixed 64-symbol ``VOCAB``.
3. Splits by whole books: Genesis to Acts (the first 44 books) train, Romans to
   Revelation (the last 22, 9.3% of the characters) are held out as the test set.
4. Trains a decoder-only transformer with ReLU feed-forward layers (the OPT design:
   pre-LayerNorm, learned positional embeddings, causal multi-head self-attention,
   FFN = Linear(d, 4d) -> ReLU -> Linear(4d, d)) on random 128-character windows.
   Two sizes (``SIZES``): ``small`` (d=128, 4 layers, 0.8M parameters; the benchmark
   model) and ``wide`` (d=512, 2 layers, 6.4M parameters). The wide one exists for
   the decode benchmark: like a real LM's, its one-token step is dominated by weight
   matrices, while the small one's step is dominated by per-node overhead.
5. Exports two ONNX graphs with the same weights (TorchScript exporter, opset 17):
   ``kjv_lm.onnx`` (whole window -> logits at every position) and
   ``kjv_lm_step.onnx`` (one token with a key/value cache -> next-token logits), or
   ``kjv_lm_wide.onnx`` and ``kjv_lm_wide_step.onnx`` for the wide size, and
   checks with onnxruntime that the step graph reproduces the full graph's logits.
6. Writes ``models/data/kjv_lm_calib.npz`` (2,000 seeded training windows) and
   ``models/data/kjv_lm_test.npz`` (the held-out books cut into consecutive windows).
7. Prints next-character accuracy and bits per character on the held-out windows,
   computed with onnxruntime, as the last line.

Full graph: ``tokens`` int64 [batch, 128] (character indices into ``VOCAB``) ->
``logits`` float32 [batch, 128, 64]; ``logits[:, t]`` scores the character after
``tokens[:, t]``. Step graph: see ``StepModel``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MAX_IR_VERSION = 10  # onnxruntime 1.31 loads this comfortably
STEP_CHECK_WINDOWS = 4


@dataclass(frozen=True)
class Size:
    name: str
    d_model: int
    heads: int
    layers: int
    lr: float  # default peak learning rate: wider transformers want a lower one

    @property
    def stem(self) -> str:
        return "kjv_lm" if self.name == "small" else f"kjv_lm_{self.name}"

    @property
    def cache_shape(self) -> tuple[int, int, int]:
        """[heads, CONTEXT, d_head] of one key or value cache, per sample."""
        return self.heads, CONTEXT, self.d_model // self.heads


SIZES = {s.name: s for s in (Size("small", 128, 4, 4, 4e-3), Size("wide", 512, 8, 2, 2e-3))}


# --------------------------------------------------------------------------- setup

# Installing torch and running apt: the same as for the bundled example.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_fashion_cnn import ensure_torch  # noqa: E402
from kjv_data import CONTEXT, VOCAB, ensure_bible, load_split, write_data  # noqa: E402

# --------------------------------------------------------------------------- model

def build_models(seed: int, size: Size):
    """(LM, StepModel class): the network and the wrapper exported as the decode step."""
    import torch
    from torch import nn

    d, heads = size.d_model, size.heads
    d_head = d // heads

    def attend(q, k, v, mask):
        """q [B,H,Tq,dh], k/v [B,H,Tk,dh], mask additive (0 or -inf) broadcast to [B,H,Tq,Tk]."""
        scores = torch.matmul(q, k.transpose(-1, -2)) * (d_head ** -0.5) + mask
        return torch.matmul(torch.softmax(scores, dim=-1), v)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, 4 * d)
            self.relu = nn.ReLU()
            self.fc2 = nn.Linear(4 * d, d)

        def heads(self, x):
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
            b, t = x.shape[0], x.shape[1]
            return [z.reshape(b, t, heads, d_head).transpose(1, 2) for z in (q, k, v)]

        def finish(self, x, y):
            b, t = x.shape[0], x.shape[1]
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.fc2(self.relu(self.fc1(self.ln2(x))))

        def forward(self, x, mask, past_k=None, past_v=None, write=None):
            """Whole window, or (with a cache) one step: x [B,1,d], whose key/value go
            into the cache slot where ``write`` is true; then returns the caches too.
            One method for both keeps the exported node names (/blocks.i/fc1/...) alike."""
            q, k, v = self.heads(x)
            if past_k is None:
                return self.finish(x, attend(q, k, v, mask))
            k = torch.where(write, k, past_k)
            v = torch.where(write, v, past_v)
            return self.finish(x, attend(q, k, v, mask)), k, v

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(len(VOCAB), d)
            self.pos = nn.Embedding(CONTEXT, d)
            self.blocks = nn.ModuleList(Block() for _ in range(size.layers))
            self.ln_f = nn.LayerNorm(d)
            self.head = nn.Linear(d, len(VOCAB))
            self.register_buffer("causal", torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1))
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    nn.init.zeros_(p)
                elif p.dim() == 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, tokens):
            t = tokens.shape[1]
            x = self.embed(tokens) + self.pos.weight[:t]
            mask = self.causal[:t, :t]
            for block in self.blocks:
                x = block(x, mask)
            return self.head(self.ln_f(x))

    class StepModel(nn.Module):
        """One decode step with a fixed-size key/value cache.

        Inputs: ``token`` int64 [B, 1], ``position`` int64 [B] (0..CONTEXT-1, where this
        token sits), then per layer i ``past_key_i`` and ``past_value_i`` float32
        [B, heads, CONTEXT, d_head]. Outputs: ``logits`` [B, V] for the next character,
        then ``present_key_i``/``present_value_i``: the caches with this token's key
        and value written at slot ``position``. Attention sees slots 0..position only,
        so stale or zero slots beyond it are ignored; start from zero caches.
        """

        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, token, position, *caches):
            lm = self.lm
            x = lm.embed(token) + lm.pos(position).unsqueeze(1)
            slots = torch.arange(CONTEXT, dtype=torch.int64)
            write = (slots[None, :] == position[:, None]).reshape(-1, 1, CONTEXT, 1)
            mask = torch.where(slots[None, :] <= position[:, None], 0.0, float("-inf")).reshape(-1, 1, 1, CONTEXT)
            present = []
            for i, block in enumerate(lm.blocks):
                x, k, v = block(x, mask, caches[2 * i], caches[2 * i + 1], write)
                present += [k, v]
            return (lm.head(lm.ln_f(x))[:, 0], *present)

    torch.manual_seed(seed)
    return LM(), StepModel


# --------------------------------------------------------------------------- train

def train(model, ids: np.ndarray, steps: int, batch: int, lr: float, seed: int) -> float:
    import torch
    from torch import nn

    data = torch.from_numpy(ids)
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(CONTEXT + 1)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        # linear warm-up, then cosine down to a tenth of the peak
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    running = 0.0
    report = max(1, steps // 20)
    for step in range(steps):
        starts = torch.randint(0, len(ids) - CONTEXT, (batch,), generator=gen)
        chunk = data[starts[:, None] + offsets[None, :]]
        logits = model(chunk[:, :-1])
        loss = loss_fn(logits.reshape(-1, len(VOCAB)), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % report == 0 or step + 1 == steps:
            n = (step % report) + 1
            print(f"step {step + 1}/{steps}: train loss {running / n:.4f} "
                  f"({running / n / math.log(2):.3f} bits/char, {time.perf_counter() - t0:.0f} s)", flush=True)
            running = 0.0
    model.eval()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- export

def _finish_export(tmp: Path, path: Path, doc: str) -> None:
    import onnx

    m = onnx.load(str(tmp))
    tmp.unlink()
    m.ir_version = min(m.ir_version, MAX_IR_VERSION)
    m.doc_string = doc
    onnx.checker.check_model(m)
    if any(init.HasField("data_location") and init.data_location == onnx.TensorProto.EXTERNAL
           for init in m.graph.initializer):
        sys.exit(f"unexpected external data in the export of {path.name}")
    onnx.save(m, str(path))


def export_full(model, path: Path, size: Size) -> None:
    import torch

    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        model, (torch.zeros(2, CONTEXT, dtype=torch.int64),), str(tmp), dynamo=False, opset_version=17,
        input_names=["tokens"], output_names=["logits"],
        # T stays fixed so shape inference (and the compiler's FLOP counts) see static shapes.
        dynamic_axes={"tokens": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
    )
    _finish_export(tmp, path, (
        f"exprune-onnx example: character-level OPT-style transformer ({size.name}: d={size.d_model}, "
        f"{size.layers} layers) trained on the KJV Bible (Genesis..Acts). tokens: int64 [batch,{CONTEXT}], indices into VOCAB of "
        f"models/build_kjv_lm.py; logits: float32 [batch,T,{len(VOCAB)}], next-character scores."))


def cache_names(prefix: str, size: Size) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(size.layers) for kind in ("key", "value")]


def export_step(step_model, path: Path, size: Size) -> None:
    import torch

    caches = tuple(torch.zeros(2, *size.cache_shape) for _ in range(2 * size.layers))
    args = (torch.zeros(2, 1, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), *caches)
    inputs = ["token", "position", *cache_names("past", size)]
    outputs = ["logits", *cache_names("present", size)]
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        step_model, args, str(tmp), dynamo=False, opset_version=17,
        input_names=inputs, output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
        do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
    )
    _finish_export(tmp, path, (
        f"exprune-onnx example: one decode step of {size.stem}.onnx with a key/value cache. "
        f"token int64 [batch,1]; position int64 [batch] (0..{CONTEXT - 1}); past_key_i/past_value_i "
        f"float32 [batch,{','.join(map(str, size.cache_shape))}] (start with zeros). Outputs logits "
        f"[batch,{len(VOCAB)}] and present_key_i/present_value_i (the caches with slot 'position' written)."))


# --------------------------------------------------------------------------- onnxruntime

def session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def evaluate_onnx(path: Path, tokens: np.ndarray, labels: np.ndarray, batch: int = 128) -> tuple[float, float]:
    """(next-character accuracy, bits per character) over every position of every window."""
    sess = session(path)
    correct, nats = 0, 0.0
    for i in range(0, len(tokens), batch):
        logits = sess.run(["logits"], {"tokens": tokens[i:i + batch]})[0].astype(np.float64)
        y = labels[i:i + batch]
        correct += int((logits.argmax(-1) == y).sum())
        top = logits.max(-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
        nats += float((log_z - np.take_along_axis(logits, y[..., None], -1)[..., 0]).sum())
    return correct / labels.size, nats / labels.size / math.log(2)


def check_step(full_path: Path, step_path: Path, tokens: np.ndarray, size: Size) -> float:
    """Max |step - full| logits when the step graph decodes ``tokens`` one character at a time."""
    full = session(full_path).run(["logits"], {"tokens": tokens})[0]
    sess = session(step_path)
    b = len(tokens)
    caches = {name: np.zeros((b, *size.cache_shape), np.float32) for name in cache_names("past", size)}
    worst = 0.0
    for t in range(tokens.shape[1]):
        out = sess.run(None, {"token": tokens[:, t:t + 1], "position": np.full(b, t, np.int64), **caches})
        worst = max(worst, float(np.abs(out[0] - full[:, t]).max()))
        caches = dict(zip(cache_names("past", size), out[1:]))
    return worst


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where to write the outputs (default: models/)")
    ap.add_argument("--epochs", type=float, default=1.0,
                    help="training length in passes over the training characters (default 1.0; fractions allowed)")
    ap.add_argument("--batch-size", type=int, default=32, help="windows of 128 characters per step")
    ap.add_argument("--size", choices=sorted(SIZES), default="small",
                    help="small (the benchmark model, default) or wide (for the decode benchmark)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default 4e-3 small, 2e-3 wide)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-only", action="store_true",
                    help="only write models/data/kjv_lm_{calib,test}.npz (and score an existing model)")
    args = ap.parse_args(argv)
    size = SIZES[args.size]
    if args.lr is None:
        args.lr = size.lr
    if args.epochs <= 0 or args.batch_size <= 0 or args.lr <= 0:
        ap.error("--epochs, --batch-size and --lr must be positive")

    np.random.seed(args.seed)
    train_ids, test_ids = load_split(ensure_bible())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    calib_path, test_path = write_data(train_ids, test_ids, args.out_dir, args.seed)
    full_path, step_path = args.out_dir / f"{size.stem}.onnx", args.out_dir / f"{size.stem}_step.onnx"
    with np.load(test_path) as f:
        test_tokens, test_labels = f["tokens"], f["labels"]

    if args.data_only:
        if not full_path.is_file():
            print(f"{full_path} not found: wrote the data files only")
            return 0
    else:
        ensure_torch()
        import onnx
        import torch

        torch.manual_seed(args.seed)
        torch.set_num_threads(2)
        torch.use_deterministic_algorithms(True)
        print(f"torch {torch.__version__}, onnx {onnx.__version__}, threads {torch.get_num_threads()}")

        model, step_cls = build_models(args.seed, size)
        print(f"parameters: {sum(p.numel() for p in model.parameters())}")
        steps = max(1, round(args.epochs * len(train_ids) / (args.batch_size * CONTEXT)))
        seconds = train(model, train_ids, steps, args.batch_size, args.lr, args.seed)
        print(f"training time: {seconds:.1f} s ({steps} steps of {args.batch_size}x{CONTEXT} characters, "
              f"{args.epochs:g} epochs, {torch.get_num_threads()} threads)")

        export_full(model, full_path, size)
        export_step(step_cls(model), step_path, size)
        for p in (full_path, step_path):
            m = onnx.load(str(p))
            ops: dict[str, int] = {}
            for n in m.graph.node:
                ops[n.op_type] = ops.get(n.op_type, 0) + 1
            print(f"wrote {p} ({p.stat().st_size} bytes, ir {m.ir_version}, opset 17): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))

        probe = test_tokens[:8]
        with torch.no_grad():
            ref = model(torch.from_numpy(probe)).numpy()
        diff = float(np.abs(session(full_path).run(["logits"], {"tokens": probe})[0] - ref).max())
        print(f"max |onnx - torch| logits on 8 held-out windows: {diff:.3e}")
        if diff > 1e-3:
            print("ERROR: onnx and torch outputs differ", file=sys.stderr)
            return 1

    if step_path.is_file():
        diff = check_step(full_path, step_path, test_tokens[:STEP_CHECK_WINDOWS], size)
        print(f"max |step - full| logits over {STEP_CHECK_WINDOWS} held-out windows x {CONTEXT} positions "
              f"(onnxruntime): {diff:.3e}")
        if diff > 1e-3:
            print("ERROR: the step graph does not reproduce the full graph", file=sys.stderr)
            return 1
    acc, bpc = evaluate_onnx(full_path, test_tokens, test_labels)
    print(f"test next-character accuracy {acc:.4f}, {bpc:.4f} bits/char "
          f"(onnxruntime, {len(test_tokens)} held-out windows x {CONTEXT} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
