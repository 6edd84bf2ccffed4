#!/usr/bin/env python3
"""Build the graph benchmark model: a SIGN-style GNN on the Debian package graph.

Rerunnable end to end::

    python3 models/build_debian_gnn.py            # --epochs 12 --seed 0 --out-dir models/
    python3 models/build_debian_gnn.py --data-only  # only rewrite models/data/debian_gnn_*.npz

The graph is the machine's own apt state (``apt-cache dumpavail``; ``apt-get update``
is run only when the lists are empty), so the script records what it read: the
Packages list files, their Release dates, the package count and the sha256 of the
dumpavail text. They are printed, cached with the parsed graph in
``models/data/debian_graph.npz`` and stored in the ONNX model's metadata;
``--data-only`` warns when the lists no longer match the ones the model was
trained on.

Graph and labels (all packages are nodes, nothing is dropped):

* nodes: every binary package dumpavail lists (one stanza each);
* edges: Depends, Pre-Depends and Recommends, made undirected; of the alternatives
  ``a | b`` only the first counts; version constraints and ``:any`` qualifiers are
  dropped; a name no package has is resolved through Provides (the alphabetically
  first provider), else the edge is dropped; self edges and duplicates are dropped;
* label: the Section with its component prefix (``contrib/``, ``non-free/``, ...)
  stripped; the 20 most frequent sections are classes 0..19 (most frequent first),
  every other section, or none, is class 20 ``other``.

Features (fixed and deterministic, nothing random; F = 512 + 5 per node):

* 512 hashed bag-of-words of the short Description: lower-cased tokens
  ``[a-z0-9][a-z0-9+]*``, bucket ``crc32(token) % 512``, presence 0/1, each row then
  scaled to unit L2 norm (a row without tokens stays zero);
* 5 scalars: log1p(out-degree) / 4, log1p(in-degree) / 4 (directed dependency
  edges after resolution), log1p(undirected degree) / 4, 1 if Architecture is
  ``all``, log1p(Installed-Size in kB) / 10.

Propagation (SIGN, Frasca et al. 2020; SGC, Wu et al. 2019): A = D^-1/2 (S + I) D^-1/2
with S the symmetric 0/1 adjacency above; the model's input per node is
``[X, A X, A^2 X]`` (3F = 1551 float32), computed here with numpy CSR code, so a
batch of nodes needs no graph at inference time.

Model (ONNX input ``features`` float32 [batch, 1551], output ``logits`` [batch, 21])::

    for each hop k in 0, 1, 2: slice F columns -> Linear(F, 256) -> BN -> ReLU
    Concat (768) -> Linear(768, 512) -> BN -> ReLU -> Linear(512, 256) -> BN -> ReLU
    -> Linear(256, 21)

Split: a seeded permutation of all nodes, 70 % train / 10 % val / 20 % test. The
weights of the epoch with the best validation accuracy are kept.
``debian_gnn_calib.npz`` holds 2,000 seeded training nodes, ``debian_gnn_test.npz``
the first 10,000 nodes of the (seeded, shuffled) test split.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NAME = "debian_gnn"

HASH_DIMS = 512
N_SCALARS = 5
N_FEATURES = HASH_DIMS + N_SCALARS
HOPS = 2  # inputs are X, A X, ..., A^HOPS X
TOP_SECTIONS = 20
HOP_WIDTH = 256
HIDDEN = (512, 256)
CALIB_SIZE = 2000
TEST_CAP = 10000
MAX_IR_VERSION = 10  # onnxruntime 1.31 loads this comfortably

_TOKEN = re.compile(r"[a-z0-9][a-z0-9+]*")


# --------------------------------------------------------------------------- setup

# Installing torch and running apt: the same as for the bundled example.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_fashion_cnn import ensure_torch  # noqa: E402
from debian_apt import load_graph  # noqa: E402

# --------------------------------------------------------------------------- features

def class_names(sections: np.ndarray) -> list[str]:
    values, counts = np.unique(sections[sections != ""], return_counts=True)
    order = sorted(range(len(values)), key=lambda i: (-counts[i], values[i]))
    return [str(values[i]) for i in order[:TOP_SECTIONS]] + ["other"]


def labels_of(sections: np.ndarray, classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes[:-1])}
    return np.array([lookup.get(str(s), len(classes) - 1) for s in sections], dtype=np.int64)


def node_features(graph: dict) -> np.ndarray:
    n = len(graph["names"])
    x = np.zeros((n, N_FEATURES), dtype=np.float32)
    for i, desc in enumerate(graph["descriptions"]):
        buckets = {zlib.crc32(t.encode()) % HASH_DIMS for t in _TOKEN.findall(str(desc).lower())}
        if buckets:
            x[i, sorted(buckets)] = 1.0 / np.sqrt(len(buckets))
    src, dst = graph["edges"][:, 0], graph["edges"][:, 1]
    out_deg = np.bincount(src, minlength=n)
    in_deg = np.bincount(dst, minlength=n)
    und = undirected(graph["edges"], n)
    und_deg = np.bincount(und[0], minlength=n)
    x[:, HASH_DIMS + 0] = np.log1p(out_deg) / 4
    x[:, HASH_DIMS + 1] = np.log1p(in_deg) / 4
    x[:, HASH_DIMS + 2] = np.log1p(und_deg) / 4
    x[:, HASH_DIMS + 3] = graph["arch_all"]
    x[:, HASH_DIMS + 4] = np.log1p(np.maximum(graph["installed_size"], 0)) / 10
    return x


def undirected(edges: np.ndarray, n: int) -> np.ndarray:
    """[2, E] rows/cols of the symmetric adjacency without self loops, sorted by row."""
    both = np.concatenate([edges, edges[:, ::-1]]).astype(np.int64)
    key = np.unique(both[:, 0] * n + both[:, 1])
    return np.stack([key // n, key % n])


def propagate(x: np.ndarray, edges: np.ndarray, hops: int) -> np.ndarray:
    """[X, A X, ..., A^hops X] with A = D^-1/2 (S + I) D^-1/2, by CSR row sums in numpy."""
    n = len(x)
    rows, cols = undirected(edges, n)
    loops = np.arange(n)
    key = np.sort(np.concatenate([rows * n + cols, loops * n + loops]))
    rows, cols = key // n, key % n
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    weight = (1.0 / np.sqrt(deg[rows] * deg[cols])).astype(np.float32)[:, None]
    indptr = np.concatenate([[0], np.cumsum(deg.astype(np.int64))])
    out = [x]
    chunk = 4096
    for _ in range(hops):
        prev, nxt = out[-1], np.empty_like(x)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            lo, hi = indptr[start], indptr[stop]
            prod = prev[cols[lo:hi]] * weight[lo:hi]
            # every row has its self loop, so no segment is empty
            nxt[start:stop] = np.add.reduceat(prod, indptr[start:stop] - lo, axis=0)
        out.append(nxt)
    return np.ascontiguousarray(np.concatenate(out, axis=1))


def split(n: int, seed: int) -> dict[str, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(0.7 * n), int(0.1 * n)
    return {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}


def prepare(data_dir: Path, seed: int):
    graph, record = load_graph(data_dir)
    n = len(graph["names"])
    print(f"apt lists: {record['packages']} packages, dumpavail sha256 {record['dumpavail_sha256'][:16]}...")
    for item in record["lists"]:
        print(f"  {item['file']} (Release date {item['date']})")
    classes = class_names(graph["sections"])
    y = labels_of(graph["sections"], classes)
    t0 = time.perf_counter()
    feats = propagate(node_features(graph), graph["edges"], HOPS)
    print(f"graph: {n} nodes, {len(graph['edges'])} directed dependency edges, "
          f"{undirected(graph['edges'], n).shape[1] // 2} undirected; features {feats.shape} "
          f"in {time.perf_counter() - t0:.1f} s")
    print("classes: " + ", ".join(f"{c} {int((y == i).sum())}" for i, c in enumerate(classes)))
    return feats, y, classes, record, split(n, seed)


def write_data(data_dir: Path, feats: np.ndarray, y: np.ndarray, parts: dict, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed + 1)
    calib = np.sort(rng.choice(parts["train"], size=min(CALIB_SIZE, len(parts["train"])), replace=False))
    test = parts["test"][:TEST_CAP]
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, idx in (("calib", calib), ("test", test)):
        path = data_dir / f"{NAME}_{kind}.npz"
        np.savez_compressed(path, features=feats[idx], labels=y[idx])
        paths.append(path)
        print(f"wrote {path} ({len(idx)} nodes)")
    return paths


# --------------------------------------------------------------------------- model

def build_model(n_classes: int):
    import torch
    from torch import nn

    def dense(cin: int, cout: int):
        return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU())

    class SignMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.hops = nn.ModuleList(dense(N_FEATURES, HOP_WIDTH) for _ in range(HOPS + 1))
            widths = [(HOPS + 1) * HOP_WIDTH, *HIDDEN]
            self.body = nn.ModuleList(dense(a, b) for a, b in zip(widths, widths[1:]))
            self.dropout = nn.Dropout(0.3)
            self.head = nn.Linear(widths[-1], n_classes)

        def forward(self, x):
            h = torch.cat([hop(x[:, k * N_FEATURES:(k + 1) * N_FEATURES]) for k, hop in enumerate(self.hops)], 1)
            for layer in self.body:
                h = layer(self.dropout(h))
            return self.head(self.dropout(h))

    return SignMLP()


def predict(model, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def train(model, x, y, parts, epochs: int, batch: int, lr: float, seed: int) -> float:
    import torch
    from torch import nn

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    tr = torch.from_numpy(parts["train"])
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(tr) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss()
    best = (-1.0, 0, None)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = tr[torch.randperm(len(tr), generator=gen)]
        total, seen = 0.0, 0
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        val_acc = float((predict(model, x[parts["val"]]).argmax(1) == y[parts["val"]]).mean())
        if val_acc > best[0]:
            best = (val_acc, epoch + 1, {k: v.clone() for k, v in model.state_dict().items()})
        print(f"epoch {epoch + 1}/{epochs}: train loss {total / seen:.4f} val acc {val_acc:.4f} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    model.load_state_dict(best[2])
    print(f"kept epoch {best[1]} (val acc {best[0]:.4f})")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- export

def export_onnx(model, path: Path, classes: list[str], record: dict) -> None:
    import onnx
    import torch

    model.eval()
    dummy = torch.zeros(2, (HOPS + 1) * N_FEATURES, dtype=torch.float32)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():  # dynamo=False is deliberate: it keeps weights inline
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(tmp), dynamo=False, opset_version=17,
            input_names=["features"], output_names=["logits"],
            dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
        )
    m = onnx.load(str(tmp))
    tmp.unlink()
    m.ir_version = min(m.ir_version, MAX_IR_VERSION)
    m.doc_string = (
        "exprune-onnx benchmark: SIGN-style GNN on the Debian package graph (apt-cache dumpavail). "
        f"features: float32 [batch,{(HOPS + 1) * N_FEATURES}] = [X, AX, A^2X] as built by "
        f"models/build_debian_gnn.py; logits: float32 [batch,{len(classes)}] over Sections."
    )
    meta = {"classes": json.dumps(classes), "apt_lists": json.dumps(record),
            "hash_dims": str(HASH_DIMS), "hops": str(HOPS)}
    for key, value in meta.items():
        prop = m.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(m)
    n_bn = [n.op_type for n in m.graph.node].count("BatchNormalization")
    if n_bn != HOPS + 1 + len(HIDDEN):
        sys.exit(f"expected {HOPS + 1 + len(HIDDEN)} BatchNormalization nodes in the export, found {n_bn}")
    onnx.save(m, str(path))


def onnx_logits(path: Path, x: np.ndarray, batch: int = 2000) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["logits"], {"features": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def onnx_record(path: Path) -> dict | None:
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # a broken file is a user-facing error, not a traceback
        sys.exit(f"cannot read {path}: {exc}")
    props = {p.key: p.value for p in m.metadata_props}
    return json.loads(props["apt_lists"]) if "apt_lists" in props else None


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where to write the outputs (default: models/)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-only", action="store_true",
                    help="skip training: rewrite the calibration/test files and score the existing .onnx")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 2 or not args.lr > 0:
        ap.error("--epochs must be >= 1, --batch-size >= 2 and --lr > 0")

    onnx_path = args.out_dir / f"{NAME}.onnx"
    data_dir = args.out_dir / "data"
    if args.data_only and not onnx_path.is_file():
        sys.exit(f"--data-only needs the trained model {onnx_path}; run without --data-only first")
    np.random.seed(args.seed)
    feats, y, classes, record, parts = prepare(data_dir, args.seed)
    print(f"split: train {len(parts['train'])}, val {len(parts['val'])}, test {len(parts['test'])}")

    if args.data_only:
        trained = onnx_record(onnx_path)
        if trained is not None and trained["dumpavail_sha256"] != record["dumpavail_sha256"]:
            print(f"WARNING: the apt lists changed since {onnx_path} was trained "
                  f"({trained['packages']} -> {record['packages']} packages); the graph, split and "
                  "features differ from training, so the metric is not comparable", file=sys.stderr)
    else:
        # Spinning OpenMP threads slow 2-thread training several times on a shared,
        # loaded machine; passive waiting does not change the numbers.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        ensure_torch()
        import onnx
        import torch

        torch.manual_seed(args.seed)
        torch.set_num_threads(2)
        torch.use_deterministic_algorithms(True)
        print(f"torch {torch.__version__}, onnx {onnx.__version__}, threads {torch.get_num_threads()}")
        model = build_model(len(classes))
        print(f"parameters: {sum(p.numel() for p in model.parameters())}")
        seconds = train(model, feats, y, parts, args.epochs, args.batch_size, args.lr, args.seed)
        print(f"training time: {seconds:.1f} s ({args.epochs} epochs, {torch.get_num_threads()} threads)")
        torch_test = predict(model, feats[parts["test"][:TEST_CAP]])
        export_onnx(model, onnx_path, classes, record)
        print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes)")

    write_data(data_dir, feats, y, parts, args.seed)
    test = parts["test"][:TEST_CAP]
    logits = onnx_logits(onnx_path, feats[test])
    if not args.data_only:
        diff = float(np.abs(logits - torch_test).max())
        print(f"torch test accuracy: {float((torch_test.argmax(1) == y[test]).mean()):.4f}")
        print(f"max |onnx - torch| logits: {diff:.3e}")
        if diff > 1e-3:
            print("ERROR: onnx and torch outputs differ", file=sys.stderr)
            return 1
    print(f"test accuracy {float((logits.argmax(1) == y[test]).mean()):.4f} (onnxruntime, {len(test)} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
