"""Sparse-input conv microbenchmark: ExPruneSparseConv against onnxruntime's Conv + Relu.

    python -m bench.kernels --cases sparse_conv [--quick] [--conv1d] [--threads 1] [--repeats 3] [--json PATH]

Layers (batch 1, pads k // 2, stride 1): 3x3 64->64 @ 112x112, 128->128 @ 56x56,
256->256 @ 28x28, 512->512 @ 14x14 and 1x1 256->1024 @ 14x14. With --conv1d, 1-D convs of
the sizes text and audio CNNs have instead (k3 256->256 over 512 positions, k5 128->128
over 1000, k3 512->512 over 128, k9 64->64 over 4000, k1 128->256 over 500), i.i.d. zeros
only (the photos are 2-D), and no targets (the issue set them for 2-D layers). Weights ~ N(0, 2/fan_in),
bias ~ N(0, 0.05), seeded. The reference is the plain layer Conv -> Relu; the op is one
ExPruneSparseConv node (activation relu) with the same weights repacked. Both run in
one process through exprune_onnx.measure.timing.measure: same session options (onnxruntime's
default graph optimisations, --threads intra-op threads), alternating runs, medians.
Each measurement is repeated --repeats times (the whole table again), and the table
shows the median ratio with its spread (min..max over the repeats).

Input zero fractions 0.3 / 0.5 / 0.7 / 0.9, two kinds of zeros:
  iid    |N(0, 1)| with each element set to 0 independently with the given probability;
  photo  what a ReLU layer sees on a natural photograph: a scikit-image sample photo
         (astronaut, coffee, chelsea, rocket; cropped square, resized to H x W) through
         a seeded 3x3 conv 3 -> C, normalised per channel over the image (BatchNorm with
         the image's statistics), then shifted by one global constant and ReLU'd. The
         shift is the quantile of the normalised values that gives the requested zero
         fraction, so zeros follow the image's content: clustered in space, different
         per channel.
The zero fraction shown is the one measured on the input. Outputs are compared with the
reference at optimisations off (max error relative to the output range).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LAYERS = ((64, 64, 112, 3), (128, 128, 56, 3), (256, 256, 28, 3), (512, 512, 14, 3), (256, 1024, 14, 1))
QUICK_LAYERS = ((16, 16, 12, 3), (16, 40, 6, 1))
# (C, M, positions, kernel, 1): 1-D convs
LAYERS_1D = ((256, 256, 512, 3, 1), (128, 128, 1000, 5, 1), (512, 512, 128, 3, 1), (64, 64, 4000, 9, 1),
             (128, 256, 500, 1, 1))
QUICK_LAYERS_1D = ((16, 16, 40, 3, 1), (16, 40, 30, 1, 1))
ZEROS = (0.3, 0.5, 0.7, 0.9)
QUICK_ZEROS = (0.5, 0.9)
INPUTS = ("iid", "photo")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# The targets for the 3x3 layers: ratio at most this at the zero fraction.
TARGETS = {0.5: 0.80, 0.7: 0.55, 0.9: 0.30}
SECONDS = 2.0
QUICK_SECONDS = 0.2


def dims(layer) -> int:
    """The conv's spatial rank: 2 unless the layer says 1."""
    return layer[4] if len(layer) > 4 else 2


def label(layer) -> str:
    c, m, s, k = layer[:4]
    return f"k{k} {c}->{m} @{s} (1-D)" if dims(layer) == 1 else f"{k}x{k} {c}->{m} @{s}x{s}"


def models(layer, seed: int = 0) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The reference Conv -> Relu and the same layer as one ExPruneSparseConv node."""
    from exprune_onnx import ops

    c, m, s, k = layer[:4]
    d = dims(layer)
    rng = np.random.default_rng([seed, c, m, s, k, *([d] if d != 2 else [])])
    weight = (rng.normal(size=(m, c, *[k] * d)) * np.sqrt(2.0 / (c * k**d))).astype(np.float32)
    bias = (rng.normal(size=m) * 0.05).astype(np.float32)
    pads = [k // 2] * (2 * d)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, *[s] * d])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, *[s] * d])
    b = numpy_helper.from_array(bias, "B")
    ref = helper.make_graph([helper.make_node("Conv", ["x", "W", "B"], ["h"], kernel_shape=[k] * d, pads=pads),
                             helper.make_node("Relu", ["h"], ["y"])], "conv_relu", [x], [y],
                            [numpy_helper.from_array(weight, "W"), b])
    node = helper.make_node(ops.SPARSE_CONV, ["x", "w", "B"], ["y"], domain=ops.DOMAIN, kernel_shape=[k] * d,
                            pads=pads, activation="relu")
    op = helper.make_graph([node], "sparse_conv", [x], [y],
                           [numpy_helper.from_array(ops.sparse_conv_weights(weight), "w"), b])
    return as_models(ref, op)


def as_models(ref: onnx.GraphProto, op: onnx.GraphProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The reference graph and the op's as checked models (the op's with our domain)."""
    from exprune_onnx import ops

    out = []
    for graph, domains in ((ref, []), (op, [helper.make_opsetid(ops.DOMAIN, ops.VERSION)])):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *domains], ir_version=8)
        onnx.checker.check_model(model)
        out.append(model)
    return out[0], out[1]


def iid_input(layer, zeros: float, rng) -> np.ndarray:
    c, _, s, _ = layer[:4]
    x = np.abs(rng.normal(size=(1, c, *[s] * dims(layer))))
    return np.where(rng.random(x.shape) < zeros, 0.0, x).astype(np.float32)


def photo_input(layer, zeros: float, rng) -> np.ndarray:
    """relu(BN(conv3x3(photo)) - shift), the shift set so that `zeros` of it is 0 (see above)."""
    try:
        import skimage.data
    except ImportError:
        # The photos ship inside scikit-image; like the model scripts, the bench installs what it uses.
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "scikit-image"], check=True)
        import skimage.data
    from skimage.transform import resize
    c, _, s, _ = layer
    name = PHOTOS[int(rng.integers(len(PHOTOS)))]
    img = getattr(skimage.data, name)().astype(np.float64) / 255.0
    side = min(img.shape[:2])
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    img = resize(img[top:top + side, left:left + side], (s, s), anti_aliasing=True)
    padded = np.pad(img, ((1, 1), (1, 1), (0, 0)))
    patches = np.stack([padded[i:i + s, j:j + s] for i in range(3) for j in range(3)], axis=2).reshape(s, s, 27)
    h = patches @ (rng.normal(size=(27, c)) * np.sqrt(2.0 / 27))
    h = (h - h.mean(axis=(0, 1))) / (h.std(axis=(0, 1)) + 1e-6)
    h -= np.quantile(h, zeros)
    # C order: a strided array costs every session.run a copy (1.3 ms at 64 x 112 x 112), which
    # would be timed in both the op and the reference.
    return np.ascontiguousarray(np.maximum(h, 0.0).transpose(2, 0, 1)[None], dtype=np.float32)


def _max_error(ref: onnx.ModelProto, op: onnx.ModelProto, feeds) -> float:
    import onnxruntime as ort

    import exprune_onnx

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(ref.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = exprune_onnx.inference_session(op, optimize=False).run(None, feeds)[0]
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-6))


def measure_layer(layer, inputs: str, zeros, threads: int = 1, seconds: float = SECONDS, repeats: int = 1,
                  runs: int | None = None, seed: int = 0, log=None) -> list[dict]:
    """One row per zero fraction: the input's measured zero fraction, both times (median
    over the repeats of each repeat's median) and the ratio op / reference per repeat."""
    from exprune_onnx.measure.timing import measure, session

    ref, op = models(layer, seed)
    rows = []
    for z in zeros:
        rng = np.random.default_rng([seed, int(round(z * 100)), INPUTS.index(inputs)])
        x = (iid_input if inputs == "iid" else photo_input)(layer, z, rng)
        feeds = {"x": x}
        count = runs
        if count is None:
            sess = session(ref, threads)
            for _ in range(3):
                sess.run(None, feeds)
            t0 = time.perf_counter()
            sess.run(None, feeds)
            count = int(min(300, max(5, seconds / (2 * (time.perf_counter() - t0)))))
        lats = [measure(ref, op, feeds, threads=threads, runs=count, warmup=5) for _ in range(repeats)]
        ratios = [lat.ratio for lat in lats]
        row = {"layer": label(layer), "kernel": layer[3], "inputs": inputs, "zeros_requested": z,
               "zeros": float((x == 0).mean()), "threads": threads, "batch": 1, "runs": count,
               "conv_ms": float(np.median([lat.original_ms[1] for lat in lats])),
               "op_ms": float(np.median([lat.optimized_ms[1] for lat in lats])),
               "ratio": float(np.median(ratios)), "ratio_min": min(ratios), "ratio_max": max(ratios),
               "ratios": ratios, "max_error": _max_error(ref, op, feeds)}
        row["target"] = TARGETS.get(z) if layer[3] == 3 and dims(layer) == 2 else None
        rows.append(row)
        if log:
            log(row)
    return rows


def table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="ExPruneSparseConv / onnxruntime Conv+Relu, median ms, ratio median (min..max over repeats)")
    for col in ("layer", "inputs", "zeros", "conv ms", "op ms", "ratio", "spread", "target", "max err"):
        t.add_column(col, justify="left" if col in ("layer", "inputs") else "right")
    for r in rows:
        target = "" if r["target"] is None else f"{r['target']:.2f}" + (" ok" if r["ratio"] <= r["target"] else " no")
        t.add_row(r["layer"], r["inputs"], f"{100 * r['zeros']:.0f}%", f"{r['conv_ms']:.2f}", f"{r['op_ms']:.2f}",
                  f"{r['ratio']:.2f}", f"{r['ratio_min']:.2f}..{r['ratio_max']:.2f}", target, f"{r['max_error']:.1e}")
    return t


def wanted(argv) -> bool:
    """True when the kernels bench was asked for this table (--cases sparse_conv)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(argv):
        value = a.split("=", 1)[1] if a.startswith("--cases=") else (argv[i + 1] if a == "--cases" and i + 1 < len(argv) else None)
        if value is not None and "sparse_conv" in value.split(","):
            return True
    return False


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.kernels --cases sparse_conv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="sparse_conv", help="sparse_conv (this table)")
    parser.add_argument("--quick", action="store_true", help="tiny layers, two zero fractions, few runs")
    parser.add_argument("--conv1d", action="store_true", help="1-D convs (text and audio sizes) instead, i.i.d. zeros")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="times each measurement is repeated (default 3)")
    parser.add_argument("--inputs", default=None, help="comma-separated: iid, photo (default both; iid with --conv1d)")
    parser.add_argument("--json", default=None, help="write the rows (and machine details) to this file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cases != "sparse_conv":
        parser.error(f"--cases sparse_conv runs alone, got {args.cases!r}")
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    inputs = args.inputs if args.inputs is not None else "iid" if args.conv1d else "iid,photo"
    args.input_kinds = [k.strip() for k in inputs.split(",") if k.strip()]
    if not args.input_kinds or any(k not in INPUTS for k in args.input_kinds):
        parser.error(f"--inputs must name some of {', '.join(INPUTS)}, got {inputs!r}")
    if args.conv1d and "photo" in args.input_kinds:
        parser.error("--conv1d takes --inputs iid only: the photo inputs are 2-D images")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json: directory {Path(args.json).resolve().parent} does not exist")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160)
    load_before = os.getloadavg()
    from .write import affinity, commit, cpu_name

    console.print(f"onnxruntime {ort.__version__}, {platform.machine()}, {cpu_name()}, "
                  f"{os.cpu_count()} CPUs, {args.threads} thread(s), batch 1, {args.repeats} repeat(s); "
                  f"load average {load_before[0]:.2f}", markup=False)
    layers, zeros = (QUICK_LAYERS, QUICK_ZEROS) if args.quick else (LAYERS, ZEROS)
    if args.conv1d:
        layers = QUICK_LAYERS_1D if args.quick else LAYERS_1D
    seconds = QUICK_SECONDS if args.quick else SECONDS
    start = time.perf_counter()

    def log(r):
        console.print(f"  {r['layer']:<24} {r['inputs']:<5} zeros {100 * r['zeros']:3.0f}%  conv {r['conv_ms']:7.2f} ms"
                      f"  op {r['op_ms']:7.2f} ms  ratio {r['ratio']:.2f} ({r['ratio_min']:.2f}..{r['ratio_max']:.2f})",
                      markup=False)

    rows = []
    for layer in layers:
        for kind in args.input_kinds:
            rows += measure_layer(layer, kind, zeros, args.threads, seconds, args.repeats, seed=args.seed, log=log)
    load_after = os.getloadavg()
    console.print(table(rows))
    console.print(f"{time.perf_counter() - start:.0f} s; load average {load_before[0]:.2f} before, "
                  f"{load_after[0]:.2f} after (on {os.cpu_count()} CPUs)", markup=False)
    bad = [r for r in rows if r["max_error"] > 1e-4]
    for r in bad:
        console.print(f"warning: {r['layer']} {r['inputs']} zeros {r['zeros']:.2f}: output differs from Conv by "
                      f"{r['max_error']:.1e} of the range", markup=False)
    if args.json:
        meta = {"onnxruntime": ort.__version__, "machine": platform.machine(), "cpu": cpu_name(), "cpus": os.cpu_count(),
                "commit": commit(), "threads": args.threads, "batch": 1, "repeats": args.repeats, "conv1d": args.conv1d,
                "kernels": os.environ.get("EXPRUNE_CONV_KERNELS") or "default (best the CPU runs)",
                "load_average": [load_before[0], load_after[0]], "affinity": affinity()}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 1 if bad else 0
