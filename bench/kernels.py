"""Kernel microbenchmarks: one layer, dense onnxruntime against the compiled layer.

    python -m bench.kernels [--quick] [--threads 1] [--cases gemm,conv64] [--json PATH] [--profile N]
    python -m bench.kernels --cases sparse_conv [...]   (ExPruneSparseConv: bench/sparse_conv_kernels.py)

Each case is a one-layer model built here with seeded weights ~ N(0, 2/fan_in) and a
small bias: Gemm(transB=1) -> Relu with n inputs and O outputs (1024->4096 and
4096->4096; batch 1, 8, 32) or Conv 3x3 pad 1, C -> C channels -> Relu (64 ch at
56x56, 128 ch at 28x28; batch 1). The input is relu of a seeded normal, as a ReLU
network's hidden activations are, and the layer is compiled as a hidden layer
(`include_first_layer`), with the default k ("auto") and unit order. Being i.i.d., the
input scatters a conv's survivors over the image and makes each row of a batch prune
different outputs: the hard case for the kernels. The "images" cases (labels ending
in /images) feed instead what a hidden layer sees on real images: Fashion-MNIST test
images through a seeded first layer and ReLU (`image_activations`). There survivors
cluster in space (these images have a uniform black background, so the favourable
end) and rows of a batch share more of them, which the conv op's block skipping and
the dense op's output-major batches profit from.

For every requested survivor fraction s the threshold is set from the op's own
estimate `bias + (n/k) * partial` on the benchmark input (read by exposing the
partial product of the model compiled at -inf), so that a fraction s of the output
elements is at or above it; s = 1 means threshold -inf. The survivor fraction shown
is the one the op reports through its stats output (a second compile with
`emit_stats`), not the requested one.

Timing is exprune_onnx.measure.timing.measure: the dense model and the compiled one (compiled
without stats) in one process, same session options (ORT_ENABLE_ALL, intra-op
threads from --threads), alternating runs, medians. The number of runs is chosen per
case from a quick dense timing so that each measurement takes a few seconds.

    speedup    = dense ms / optimised ms
    ideal      = 1 / (k/n + (1 - k/n) * s)      (phase 2 costs exactly its share)
    % of ideal = speedup / ideal

`--profile N` then runs, for each case, the N rows furthest below their ideal under
onnxruntime's profiler and prints the median kernel time of every node, to show where
the optimised time goes; its "kernel % ideal" is the same ratio over the summed kernel
times, i.e. without the fixed cost of a session run, which weighs on the smallest
layers. With --threads > 1 the idle session's pool threads spin while the other runs,
which penalises both sides; the 1-thread numbers are the clean ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .kernel_report import node_times, profile_table, table

SURVIVORS = (0.1, 0.3, 0.5, 1.0)
QUICK_SURVIVORS = (0.1, 0.5, 1.0)
SECONDS_PER_MEASUREMENT = 3.0
QUICK_SECONDS = 0.5
MIN_RUNS, MAX_RUNS = 10, 400


@dataclass(frozen=True)
class Case:
    kind: str  # "gemm" or "conv"
    n: int  # input units (features, or channels)
    out: int  # output units
    batch: int = 1
    size: int = 0  # H = W of a conv input
    inputs: str = "iid"  # or "images" (image_activations)

    @property
    def name(self) -> str:
        if self.kind == "gemm":
            return f"gemm{self.n}x{self.out}"
        return f"conv{self.n}x{self.size}x{self.size}"

    @property
    def label(self) -> str:
        return f"{self.name}/b{self.batch}" + ("" if self.inputs == "iid" else f"/{self.inputs}")


CASES = (
    [Case("gemm", 1024, 4096, b) for b in (1, 8, 32)]
    + [Case("gemm", 4096, 4096, b) for b in (1, 8, 32)]
    + [Case("conv", 64, 64, 1, 56), Case("conv", 128, 128, 1, 28)]
    + [Case("gemm", 1024, 4096, b, inputs="images") for b in (8, 32)]
    + [Case("conv", 64, 64, 1, 56, "images"), Case("conv", 128, 128, 1, 28, "images")]
)
IMAGES = Path(__file__).resolve().parent.parent / "models" / "fashion_test_slice.npz"
QUICK_CASES = ("gemm1024x4096/b1", "gemm1024x4096/b32", "conv64x56x56/b1")


@dataclass
class Row:
    case: str
    kind: str
    batch: int
    k: int
    n: int
    requested: float
    survivors: float  # measured by the op's stats output
    threshold: float
    runs: int
    dense_ms: float  # medians
    optimized_ms: float
    dense_iqr_ms: tuple[float, float]
    optimized_iqr_ms: tuple[float, float]
    max_error: float  # over finished elements, relative to the dense output's range
    profile: dict = field(default_factory=dict)
    inputs: str = "iid"

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.optimized_ms

    @property
    def ideal(self) -> float:
        return 1.0 / (self.k / self.n + (1.0 - self.k / self.n) * self.survivors)

    @property
    def pct_ideal(self) -> float:
        return 100.0 * self.speedup / self.ideal

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(speedup=self.speedup, ideal=self.ideal, pct_ideal=self.pct_ideal)
        if math.isinf(self.threshold):
            d["threshold"] = None  # JSON has no -inf; None means nothing is pruned
        return d


def build(case: Case, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The one-layer model and its benchmark input (non-negative, seeded)."""
    rng = np.random.default_rng(seed)
    if case.kind == "gemm":
        fan_in = case.n
        w = rng.normal(size=(case.out, case.n)) * np.sqrt(2.0 / fan_in)
        layer = helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="fc", transB=1)
        in_shape, out_shape = [case.batch, case.n], [case.batch, case.out]
    elif case.kind == "conv":
        fan_in = case.n * 9
        w = rng.normal(size=(case.out, case.n, 3, 3)) * np.sqrt(2.0 / fan_in)
        layer = helper.make_node("Conv", ["x", "W", "B"], ["h"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        in_shape = [case.batch, case.n, case.size, case.size]
        out_shape = [case.batch, case.out, case.size, case.size]
    else:
        raise ValueError(f"unknown case kind {case.kind!r}")
    bias = rng.normal(size=case.out) * 0.05
    graph = helper.make_graph(
        [layer, helper.make_node("Relu", ["h"], ["y"], name="act")], case.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(w.astype(np.float32), "W"), numpy_helper.from_array(bias.astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    x = image_activations(case, rng) if case.inputs == "images" else np.maximum(rng.normal(size=in_shape), 0.0)
    return model, {"x": x.astype(np.float32)}


def image_activations(case: Case, rng: np.random.Generator) -> np.ndarray:
    """The layer's input as a hidden layer of a network sees it on real images:
    Fashion-MNIST test images (models/fashion_test_slice.npz, pixels in [0, 1]) through
    a seeded first layer ~ N(0, 2/fan_in), bias ~ N(0, 0.05), and ReLU. For a conv the
    first layer is a 3x3 conv 1 -> C on the image scaled to H x W (nearest neighbour);
    for a Gemm it is dense 784 -> n on the flattened image. Different images per row."""
    images = np.load(IMAGES)["input"][:, 0].astype(np.float64)
    pick = images[rng.choice(len(images), size=case.batch, replace=False)]
    if case.kind == "gemm":
        flat = pick.reshape(case.batch, -1)
        w = rng.normal(size=(flat.shape[1], case.n)) * np.sqrt(2.0 / flat.shape[1])
        return np.maximum(flat @ w + rng.normal(size=case.n) * 0.05, 0.0)
    scale = case.size // pick.shape[1]
    if scale < 1 or scale * pick.shape[1] != case.size:
        raise ValueError(f"image inputs need H = W a multiple of {pick.shape[1]}, got {case.size}")
    up = np.pad(pick.repeat(scale, axis=1).repeat(scale, axis=2), ((0, 0), (1, 1), (1, 1)))
    size = case.size
    patches = np.stack([up[:, i:i + size, j:j + size] for i in range(3) for j in range(3)], axis=-1)
    w = rng.normal(size=(9, case.n)) * np.sqrt(2.0 / 9)
    act = np.maximum(patches @ w + rng.normal(size=case.n) * 0.05, 0.0)
    return act.transpose(0, 3, 1, 2)


def compile_layer(model: onnx.ModelProto, threshold: float, emit_stats: bool = False) -> onnx.ModelProto:
    import exprune_onnx

    result = exprune_onnx.optimize_model(model, threshold=threshold, include_first_layer=True, emit_stats=emit_stats)
    if len(result.rewritten) != 1:
        reasons = "; ".join(r.reason for r in result.rejected) or "no candidate"
        raise RuntimeError(f"the benchmark layer was not rewritten: {reasons}")
    return result.model


def _custom_node(model: onnx.ModelProto) -> onnx.NodeProto:
    from exprune_onnx import DOMAIN

    return next(n for n in model.graph.node if n.domain == DOMAIN)


def estimates(compiled: onnx.ModelProto, feeds: dict) -> tuple[np.ndarray, int, int]:
    """The op's estimate for every output element, in float64 as the op evaluates it, and k, n."""
    import exprune_onnx

    node = _custom_node(compiled)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    probe = onnx.ModelProto()
    probe.CopyFrom(compiled)
    probe.graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None))
    partial = exprune_onnx.inference_session(probe).run([node.input[0]], feeds)[0]
    inits = {t.name: t for t in compiled.graph.initializer}
    bias = numpy_helper.to_array(inits[node.input[3]]).astype(np.float32)
    x_units = feeds["x"].shape[1] if partial.ndim > 2 else feeds["x"].shape[-1]
    k = int(attrs["k"])
    # Outputs sit on axis 1 (conv, NCHW) or last (dense); broadcast the bias there.
    shape = [1] * partial.ndim
    shape[1 if partial.ndim > 2 else -1] = -1
    est = bias.reshape(shape).astype(np.float64) + (float(x_units) / float(k)) * partial.astype(np.float64)
    return est, k, x_units


def threshold_for(est: np.ndarray, fraction: float) -> float:
    """A float32 threshold under which all but ``fraction`` of ``est`` falls (-inf for 1).

    The op reads the threshold as a float32 attribute and keeps est >= threshold, so the
    cut is rounded down to the next float32 at or below the chosen estimate.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"survivor fraction must be in (0, 1], got {fraction}")
    if fraction >= 1.0:
        return float("-inf")
    flat = np.sort(est.reshape(-1))
    index = min(len(flat) - 1, int(round((1.0 - fraction) * len(flat))))
    cut = float(flat[index])
    t = np.float32(cut)
    if float(t) > cut:
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


def survivors_of(stats_model: onnx.ModelProto, feeds: dict) -> tuple[float, np.ndarray]:
    """The survivor fraction the op reports, and the layer's output."""
    import exprune_onnx

    y, stats = exprune_onnx.inference_session(stats_model).run(None, feeds)
    pruned, total = int(stats[0]), int(stats[1])
    return 1.0 - pruned / total, y


def runs_for(model: onnx.ModelProto, feeds: dict, threads: int, seconds: float) -> int:
    """Alternating runs that take about ``seconds`` in all, from a quick dense timing."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    times = []
    for _ in range(8):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    per_run = min(times[3:])  # the first runs allocate and warm caches
    # Two models a run; the optimised one is assumed up to twice as slow.
    return int(min(MAX_RUNS, max(MIN_RUNS, seconds / (3 * per_run))))


def _max_error(dense_y: np.ndarray, y: np.ndarray) -> float:
    kept = y != 0
    if not kept.any():
        return 0.0
    scale = max(float(np.abs(dense_y).max()), 1e-6)
    return float(np.abs(dense_y[kept].astype(np.float64) - y[kept]).max()) / scale


def measure_case(case: Case, fractions=SURVIVORS, threads: int = 1, seconds: float = SECONDS_PER_MEASUREMENT,
                 runs: int | None = None, seed: int = 0, log=None) -> list[Row]:
    """One row per survivor fraction: compile, check the survivors, time dense vs optimised."""
    from exprune_onnx.measure.timing import measure

    model, feeds = build(case, seed)
    dense_y = _plain_run(model, feeds)
    est, k, n = estimates(compile_layer(model, float("-inf")), feeds)
    count = runs or runs_for(model, feeds, threads, seconds)
    rows = []
    for fraction in fractions:
        t = threshold_for(est, fraction)
        survivors, stats_y = survivors_of(compile_layer(model, t, emit_stats=True), feeds)
        optimized = compile_layer(model, t)
        lat = measure(model, optimized, feeds, threads=threads, runs=count)
        row = Row(case.name, case.kind, case.batch, k, n, fraction, survivors, t, count,
                  lat.original_ms[1], lat.optimized_ms[1], (lat.original_ms[0], lat.original_ms[2]),
                  (lat.optimized_ms[0], lat.optimized_ms[2]), _max_error(dense_y, stats_y), inputs=case.inputs)
        rows.append(row)
        if log:
            log(row)
    return rows


def _plain_run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def profile_row(row: Row, case: Case, threads: int, runs: int = 20, seed: int = 0) -> dict:
    model, feeds = build(case, seed)
    return node_times(model, compile_layer(model, row.threshold), feeds, threads, runs)


def select(cases, patterns: list[str] | None):
    """Cases whose label ('gemm4096x4096/b8') contains any of ``patterns``."""
    if not patterns:
        return list(cases)
    return [c for c in cases if any(p in c.label for p in patterns)]


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both sessions (default 1)")
    parser.add_argument("--quick", action="store_true", help="a subset of cases, fewer fractions and runs")
    parser.add_argument("--cases", default=None,
                        help="comma-separated substrings of case labels, e.g. gemm4096,conv,b32 (labels: "
                             + ", ".join(c.label for c in CASES) + ")")
    parser.add_argument("--survivors", default=None, help="comma-separated fractions in (0, 1], default 0.1,0.3,0.5,1")
    parser.add_argument("--seconds", type=float, default=None, help="target seconds per measurement")
    parser.add_argument("--json", default=None, help="write the rows (and machine details) to this file")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="per case, profile the N rows furthest below their ideal and print per-node "
                             "kernel times")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.profile < 0:
        parser.error(f"--profile must be >= 0, got {args.profile}")
    if args.seconds is not None and not args.seconds > 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    try:
        fractions = [float(v) for v in args.survivors.split(",")] if args.survivors else None
    except ValueError:
        parser.error(f"--survivors must be comma-separated numbers, got {args.survivors!r}")
    if fractions is not None and not all(0.0 < f <= 1.0 for f in fractions):
        parser.error(f"--survivors fractions must be in (0, 1], got {args.survivors!r}")
    patterns = [p.strip() for p in args.cases.split(",") if p.strip()] if args.cases else None
    cases = select(CASES, patterns)
    if args.quick and not patterns:
        cases = [c for c in cases if c.label in QUICK_CASES]
    if not cases:
        parser.error(f"--cases {args.cases!r} matches none of: {', '.join(c.label for c in CASES)}")
    if args.json:
        parent = Path(args.json).resolve().parent
        if not parent.is_dir():
            parser.error(f"--json: directory {parent} does not exist")
    args.case_list = cases
    args.fractions = fractions or (QUICK_SURVIVORS if args.quick else SURVIVORS)
    args.seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS_PER_MEASUREMENT)
    return args


def main(argv=None) -> int:
    from bench import sparse_conv_kernels

    if sparse_conv_kernels.wanted(argv):  # its own table: bench/sparse_conv_kernels.py
        return sparse_conv_kernels.main(argv)
    args = parse_args(argv)
    import onnxruntime as ort
    from rich.console import Console

    import exprune_onnx

    # Not a terminal (a log file, a pipe): wide enough that no column is cut.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        library = exprune_onnx.get_library_path()
    except FileNotFoundError as exc:
        console.print(f"error: {exc}", markup=False)
        return 2
    load_before = os.getloadavg()
    console.print(f"onnxruntime {ort.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
                  f"{args.threads} thread(s); library {library}; load average {load_before[0]:.2f}", markup=False)
    rows: list[Row] = []
    by_row: dict[int, Case] = {}
    start = time.perf_counter()
    for case in args.case_list:
        def log(row, case=case):
            by_row[id(row)] = case
            console.print(f"  {case.label:<20} s={100 * row.survivors:5.1f}% dense {row.dense_ms:8.3f} ms  "
                          f"opt {row.optimized_ms:8.3f} ms  {row.pct_ideal:4.0f}% of ideal", markup=False)

        rows += measure_case(case, args.fractions, args.threads, args.seconds, seed=args.seed, log=log)
    worst = []
    for case in args.case_list:
        mine = [r for r in rows if by_row[id(r)] is case]
        worst += sorted(mine, key=lambda r: r.pct_ideal)[: args.profile]
    for row in worst:
        row.profile = profile_row(row, by_row[id(row)], args.threads, seed=args.seed)
    load_after = os.getloadavg()
    console.print(table(rows))
    if worst:
        console.print(profile_table(worst))
    bad = [r for r in rows if r.max_error > 1e-4]
    for r in bad:
        console.print(f"warning: {r.case}/b{r.batch}/{r.inputs} s={r.survivors:.3f}: finished outputs differ from dense "
                      f"by {r.max_error:.2e} of the range", markup=False)
    console.print(f"{time.perf_counter() - start:.0f} s; load average {load_before[0]:.2f} before, "
                  f"{load_after[0]:.2f} after (on {os.cpu_count()} CPUs)", markup=False)
    if args.json:
        from .write import commit

        meta = {"onnxruntime": ort.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
                "commit": commit(), "threads": args.threads, "library": library, "load_average": [load_before[0], load_after[0]]}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
