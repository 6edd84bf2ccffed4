"""How much an early-exit conv tail that keeps weight reuse could skip (issue 16, part 3).

    python -m bench.tail_tiles [--models vgg16_tumor,fashion_vgg] [--samples 55] [--json PATH]

ExPruneSparseConv is fast because it computes a tile of output positions by a block of
output channels in registers, one weight load serving the whole block. An early-exit
tail with that shape can skip only tiles whose outputs are *all* predicted zero; a tile
holding one survivor costs as much as a full one. This script measures, for every
Conv -> ... -> Relu of a model on its test file (real photos for vgg16_tumor), with a
perfect predictor (the true ReLU zeros, so an upper bound for any calibrated one):

* ``in nz``: the share of the conv's inputs that are non-zero, the work the lossless
  sparse conv does (relative to dense);
* ``out zero``: the share of the ReLU's outputs that are exactly zero;
* ``skip PxC``: the share of tiles of P consecutive positions of a row by C consecutive
  output channels that are all zero, for the op's tile (14 x 32), a one-vector tile
  (14 x 16) and per-position blocks of output channels (1 x 16, 1 x 32);
* ``bound``: the largest share of the lossless conv's work a tile-skipping tail could
  save, ``(1 - k/C_in) * skip`` at the op's tile, where k is the compiler's default
  head ("auto", config.choose_k): the head's k input channels run for every tile.

The model-wide line gives that bound for every tile shape, each layer weighted by its
dense FLOPs times ``in nz`` (the share of the lossless model's sparse-conv work it holds).

It also measures what the lossless conv itself could share (docs/sparse_conv.md, "On a
second CPU"): a weight vector serves every non-zero input of its channel in a block of
positions that a tile walks together, so ``loads RxC`` is the number of (channel, block of
R rows x C columns) with a non-zero input per non-zero input: 1.0 when nothing is shared,
down to 1 / (R * C). The op's column pairs are 1x2; a 2x2 trial is measured there.

``hybrid`` models a 3x3 tile that would pick, per input channel and window of input
columns one tile reads, the cheaper of two ways: its non-zero inputs through the lists
(each multiplied into the taps reaching the tile, at ``--list-rate``) or the whole window
with the channel's weights in registers (every tap of every output, at ``--dense-rate``;
G multiply-adds/s, the defaults measured on the Xeon of docs/sparse_conv.md). It prints
the hybrid's modelled tile time over the list tile's alone: a cost model, not a timing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from exprune_onnx.config import choose_k
from exprune_onnx.measure.shape_probe import tensor_values

from .lossless import MODELS_BY_NAME

TILES = ((14, 32), (14, 16), (1, 32), (1, 16))
# The op's AVX-512 two-vector tile: 14 output positions, reading 16 input columns.
WINDOW = 14
LIST_RATE = 3.4  # the op's list tile on unpaired lists, weights in level 2 (tile probe)
DENSE_RATE = 5.4  # onnxruntime's Conv on the bench layers (5.0-5.8)
SHARES = ((1, 2), (2, 2))
PASS_THROUGH = {"BatchNormalization", "Add", "Mul"}


def conv_groups(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str]]:
    """(Conv, the Relu output it reaches through BN/Add/Mul only) for every such Conv."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    groups = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        out = node.output[0]
        while len(consumers.get(out, [])) == 1 and consumers[out][0].op_type in PASS_THROUGH:
            out = consumers[out][0].output[0]
        users = consumers.get(out, [])
        if len(users) == 1 and users[0].op_type == "Relu":
            groups.append((node, users[0].output[0]))
    return groups


def all_zero_share(y: np.ndarray, positions: int, channels: int) -> float:
    """Share of (positions along a row) x (output channels) tiles of NCHW ``y`` that are all zero."""
    n, m, h, w = y.shape
    zero = y == 0
    pm, pw = -m % channels, -w % positions
    # Padding counts as zero, so an edge tile is judged on its real outputs only.
    zero = np.pad(zero, ((0, 0), (0, pm), (0, 0), (0, pw)), constant_values=True)
    tiles = zero.reshape(n, (m + pm) // channels, channels, h, (w + pw) // positions, positions)
    return float(tiles.all(axis=(2, 5)).mean())


def weight_loads(x: np.ndarray, rows: int, cols: int) -> float:
    """Blocks of ``rows`` x ``cols`` positions of one channel of NCHW ``x`` that hold a
    non-zero, per non-zero: the weight loads per input when one load serves a block."""
    nz = x != 0
    total = int(nz.sum())
    if total == 0:
        return 0.0
    n, c, h, w = nz.shape
    ph, pw = -h % rows, -w % cols
    nz = np.pad(nz, ((0, 0), (0, 0), (0, ph), (0, pw)))
    blocks = nz.reshape(n, c, (h + ph) // rows, rows, (w + pw) // cols, cols).any(axis=(3, 5))
    return float(blocks.sum()) / total


def window_mix(x: np.ndarray, list_rate: float, dense_rate: float, positions: int = WINDOW) -> float:
    """Modelled time of the hybrid 3x3 tile (module docstring) over the list tile's, for
    NCHW ``x`` (stride 1, pad 1): windows of ``positions`` + 2 padded columns, ``positions``
    apart; 1.0 when ``x`` is all zero."""
    nz = x != 0
    w = nz.shape[3]
    tiles = -(-w // positions)
    cols = np.zeros(nz.shape[:3] + (tiles * positions + 2,), bool)
    cols[..., 1 : w + 1] = nz
    # How many of the tile's outputs each column of a window reaches (taps kx = 0..2).
    reach = np.array([sum(0 <= i - kx < positions for kx in range(3)) for i in range(positions + 2)], float)
    list_time = hybrid_time = 0.0
    for t in range(tiles):
        window = cols[..., t * positions : t * positions + positions + 2]
        by_list = (window * reach).sum(axis=-1) / list_rate
        list_time += float(by_list.sum())
        hybrid_time += float(np.minimum(by_list, 3 * positions / dense_rate).sum())
    return hybrid_time / list_time if list_time > 0 else 1.0


def conv_attrs(conv: onnx.NodeProto) -> dict:
    """A Conv node's attributes as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in conv.attribute}


def layer_row(conv: onnx.NodeProto, x: np.ndarray, y: np.ndarray, weight_shape, rates=(LIST_RATE, DENSE_RATE)) -> dict:
    m, c_per_group, kh, kw = weight_shape
    c_in = x.shape[1]
    k = choose_k("auto", c_in)
    row = {
        "layer": conv.name or conv.output[0],
        "shape": f"{c_in}->{m} @{y.shape[2]}x{y.shape[3]}",
        "in_nonzero": float((x != 0).mean()),
        "out_zero": float((y == 0).mean()),
        "k": k,
        "flops": 2.0 * m * c_per_group * kh * kw * y.shape[2] * y.shape[3],
    }
    for p, c in TILES:
        row[f"skip_{p}x{c}"] = all_zero_share(y, p, c)
        row[f"bound_{p}x{c}"] = (1 - k / c_in) * row[f"skip_{p}x{c}"]
    row["bound"] = row["bound_14x32"]
    for r, c in SHARES:
        row[f"loads_{r}x{c}"] = weight_loads(x, r, c)
    attrs = conv_attrs(conv)
    ones = [list(attrs.get(key, [1, 1])) == [1, 1] for key in ("strides", "dilations")]
    sweep = (kh, kw) == (3, 3) and all(ones) and attrs.get("group", 1) == 1  # Sweep3's layers
    row["hybrid"] = window_mix(x, *rates) if sweep else None
    return row


def measure(name: str, samples: int, batch: int, rates=(LIST_RATE, DENSE_RATE)) -> dict:
    bench_model = MODELS_BY_NAME[name]
    model = onnx.load(bench_model.onnx)
    data = np.load(bench_model.test)
    inp = model.graph.input[0].name
    xs = data[inp if inp in data else "input"][:samples]
    groups = conv_groups(model)
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    names = list(dict.fromkeys(n for conv, relu in groups for n in (conv.input[0], relu)))
    outs = tensor_values(model, names, [{inp: xs[start : start + batch]} for start in range(0, len(xs), batch)])
    sums = {n: [out[n] for out in outs] for n in names}
    rows = []
    for conv, relu in groups:
        x = np.concatenate(sums[conv.input[0]])
        y = np.concatenate(sums[relu])
        rows.append(layer_row(conv, x, y, weights[conv.input[1]], rates))
    work = np.array([r["flops"] * r["in_nonzero"] for r in rows])
    bounds = {f"{p}x{c}": float((work * np.array([r[f"bound_{p}x{c}"] for r in rows])).sum() / work.sum())
              for p, c in TILES}
    loads = {f"{r}x{c}": float((work * np.array([row[f"loads_{r}x{c}"] for row in rows])).sum() / work.sum())
             for r, c in SHARES}
    mixed = [(wk, r["hybrid"]) for wk, r in zip(work, rows) if r["hybrid"] is not None]
    hybrid = sum(wk * h for wk, h in mixed) / sum(wk for wk, _ in mixed) if mixed else None
    return {"model": name, "samples": int(len(xs)), "layers": rows, "model_bound": bounds, "model_loads": loads,
            "model_hybrid": hybrid, "rates": {"list": rates[0], "dense": rates[1]}}


def show(result: dict) -> None:
    heads = (["layer", "shape", "in nz", "out zero"] + [f"skip {p}x{c}" for p, c in TILES] + ["bound"]
             + [f"loads {r}x{c}" for r, c in SHARES] + ["hybrid"])
    print(f"\n{result['model']}: {result['samples']} test samples")
    print("  ".join(f"{h:>12}" for h in heads))
    for r in result["layers"]:
        cells = [r["layer"][-12:], r["shape"], f"{r['in_nonzero']:.2f}", f"{r['out_zero']:.2f}"]
        cells += [f"{r[f'skip_{p}x{c}']:.3f}" for p, c in TILES] + [f"{r['bound']:.3f}"]
        cells += [f"{r[f'loads_{a}x{b}']:.2f}" for a, b in SHARES]
        cells += ["-" if r["hybrid"] is None else f"{r['hybrid']:.2f}"]
        print("  ".join(f"{c:>12}" for c in cells))
    shares = ", ".join(f"{share:.1%} at {tile}" for tile, share in result["model_bound"].items())
    print(f"model: a tile-skipping tail with a perfect predictor saves at most {shares} "
          "of the lossless sparse-conv work")
    loads = ", ".join(f"{v:.2f} in {block} blocks" for block, v in result["model_loads"].items())
    print(f"model: weight loads per non-zero input (work-weighted; 1.00 unshared): {loads}")
    if result["model_hybrid"] is not None:
        rates = result["rates"]
        print(f"model: hybrid 3x3 tile time over the list tile's (work-weighted, a model at list "
              f"{rates['list']} and dense {rates['dense']} G multiply-adds/s): {result['model_hybrid']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg16_tumor,fashion_cnn,fashion_vgg,fashion_resnet")
    parser.add_argument("--samples", type=int, default=1000, help="test samples per model (at most)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--list-rate", type=float, default=LIST_RATE, help="G multiply-adds/s (hybrid)")
    parser.add_argument("--dense-rate", type=float, default=DENSE_RATE, help="G multiply-adds/s (hybrid)")
    args = parser.parse_args()
    if not (args.list_rate > 0 and args.dense_rate > 0):
        parser.error("--list-rate and --dense-rate must be positive")
    names = args.models.split(",")
    unknown = [name for name in names if name not in MODELS_BY_NAME]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}: choose from {', '.join(sorted(MODELS_BY_NAME))}")
    for name in names:
        m = MODELS_BY_NAME[name]
        if not (m.onnx.is_file() and m.test.is_file()):
            parser.error(f"{name}: its model or test file is missing; build them with `{m.build}`")
    results = []
    for name in names:
        results.append(measure(name, args.samples, args.batch, (args.list_rate, args.dense_rate)))
        show(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
