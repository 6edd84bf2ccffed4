"""The fuzz loops of tests/test_fuzz.py; each case comes from its seed, so any failure replays.

* ``graphs``: random valid graphs (tests/graphgen.py). At threshold -inf the optimised
  model passes the checker and computes the original's outputs (to 1e-4 of their
  range) on two seeded draws and an empty batch; optimising it again changes nothing;
  at a finite threshold, under any rule, it runs and gives outputs of the right shapes
  and dtypes (the certified rule, being lossless, the same values); nothing raises,
  not even a documented exprune_onnx error.
* ``files``: mutated model files (tests/fuzz_files.py) through ``exprune-onnx
  optimize``: the exit code is a documented one (never 1 = internal error), no
  traceback, the input is untouched, no output file is left when it fails, and exit 7
  only when onnxruntime cannot run the original either.
* ``ops``: random inputs and attributes, valid and not (tests/fuzz_ops.py), fed to
  single early-exit nodes: a valid case runs and matches the numpy reference, an
  invalid one is an onnxruntime error naming the node.

Run as ``python tests/fuzz_loops.py LOOP FIRST_SEED COUNT SECONDS``: it prints
``case <seed>`` to stderr before each case (so a native crash names its seed) and one
JSON line of counts and failures to stdout at the end.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
from fuzz_files import base_model, mutate
from fuzz_ops import corrupt, op_case

from exprune_onnx.config import DECISION_RULES
from exprune_onnx.errors import error_message

NODE = "fuzz_node"
MAX_REPORTED = 20  # failure messages kept per loop and kind
KNOWN = "known issue"  # reported in the summary, not a test failure
_ALLOWED_EXITS = {0, 3, 4, 5, 6, 7}


class Tally:
    """Counts of one loop and the first failures, as the child reports them."""

    def __init__(self):
        self.counts = Counter()
        self.failures: list[str] = []

    def fail(self, kind: str, seed: int, message: str) -> None:
        self.counts[kind] += 1
        if sum(f": {kind}: " in f for f in self.failures) < MAX_REPORTED:
            self.failures.append(f"seed {seed}: {kind}: {message}")


def _documented(exc: BaseException) -> bool:
    from exprune_onnx.errors import ExPruneError

    return isinstance(exc, ExPruneError) and exc.exit_code != 1


def _short(exc: BaseException) -> str:
    """The exception's type and message, on one line for the tally."""
    return f"{type(exc).__name__}: {error_message(exc, 400)}"


# ------------------------------------------------------------------ graphs


def _compare(ref: list, got: list, exact: bool) -> str | None:
    """Why ``got`` (optimised) does not reproduce ``ref`` (original), or None."""
    from helpers import assert_close

    if len(got) < len(ref):
        return f"{len(got)} outputs instead of {len(ref)}"
    for i, (a, b) in enumerate(zip(ref, got)):
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"output {i} is {b.dtype}{list(b.shape)}, not {a.dtype}{list(a.shape)}"
        if exact and a.size:
            try:
                assert_close(a, b)
            except AssertionError as exc:
                return f"output {i}: {exc}"
    return None


def check_graph(seed: int, tally: Tally) -> None:
    import onnx
    from graphgen import BATCH, generate
    from helpers import run_exprune, run_plain

    import exprune_onnx

    g = generate(seed)
    rng = np.random.default_rng(seed)
    draws = [g.feeds(rng) for _ in range(2)]
    refs = [run_plain(g.model, feeds) for feeds in draws]  # the generator promises this runs
    if g.batch == BATCH:
        # An empty batch, where the original copes with one (a Reshape to [0, -1] does not).
        empty = g.feeds(rng, batch=0)
        try:
            refs.append(run_plain(g.model, empty))
            draws.append(empty)
        except Exception:  # noqa: BLE001 - the original's limit, not ours
            pass
    tally.counts["graphs"] += 1
    tally.counts["inputs"] += len(draws)
    where = g.describe()
    common = {"min_units": g.min_units, "include_first_layer": g.include_first_layer,
              "unit_order": str(rng.choice(["weight", "stored"]))}
    settings = [("exact", {"threshold": -math.inf}),
                ("pruning", {"threshold": float(rng.choice([0.0, -1.0, 0.5])), "rule": str(rng.choice(DECISION_RULES)),
                             "k": str(rng.choice(["auto", "auto", "0.25", "0.5", "3"])),
                             "emit_stats": bool(rng.random() < 0.5)})]
    for label, options in settings:
        try:
            exprune_onnx.inspect_model(g.model, **common, **options)
            result = exprune_onnx.optimize_model(g.model, **common, **options)
            onnx.checker.check_model(result.model)
            again = exprune_onnx.optimize_model(result.model, **common, **options) if label == "exact" else None
            outs = [run_exprune(result.model, feeds) for feeds in draws]
        except Exception as exc:  # noqa: BLE001 - every failure is counted, not raised
            tally.fail("documented error" if _documented(exc) else "crash", seed,
                       f"{label} {options}: {_short(exc)} in {where}")
            continue
        for r in result.rewritten:
            tally.counts[f"rewritten {r.candidate.rule} ({label})"] += 1
        if again is not None and again.changed:
            tally.fail("wrong result", seed, f"a second pass rewrote {[r.candidate.layer for r in again.rewritten]}"
                                             f" in {where}")
        exact = label == "exact" or options.get("rule") == "certified"
        for ref, got in zip(refs, outs):
            problem = _compare(ref, got, exact)
            if problem:
                tally.fail("wrong result", seed, f"{label} {options}: {problem} in {where}")
                break


# ------------------------------------------------------------------ files


def check_file(seed: int, tally: Tally) -> None:
    from click.testing import CliRunner

    from exprune_onnx.cli import main

    rng = np.random.default_rng(seed)
    mutated, what = mutate(base_model(rng), rng)
    args = ["--threshold", str(rng.choice(["-inf", "0", "-2"])), "--rule", str(rng.choice(DECISION_RULES)),
            "--min-units", str(rng.choice([32, 8]))]
    args += [flag for flag in ("--no-check", "--include-first-layer", "--emit-stats") if rng.random() < 0.5]
    args += ["--objective", "latency" if rng.random() < 0.2 else "flops"]
    if rng.random() < 0.3:
        args += ["--unit-order", "stored", "--k", str(rng.choice(["0.5", "4", "auto"]))]
    with tempfile.TemporaryDirectory(prefix="exprune-fuzz-") as tmp:
        src, out = Path(tmp) / "model.onnx", Path(tmp) / "out.onnx"
        src.write_bytes(mutated)
        r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--check-samples", "8", *args])
        tally.counts["files"] += 1
        tally.counts[f"exit {r.exit_code}"] += 1
        text = r.output  # stdout and stderr, interleaved (click >= 8.2)
        where = f"{what} with {' '.join(args)}"
        if r.exit_code not in _ALLOWED_EXITS or (r.exception is not None and not isinstance(r.exception, SystemExit)):
            tally.fail("crash", seed, f"exit {r.exit_code}: {text.strip().splitlines()[-1:] or r.exception} ({where})")
        elif "Traceback" in text:
            tally.fail("crash", seed, f"traceback in the output ({where})")
        if src.read_bytes() != mutated:
            tally.fail("wrong result", seed, f"the input file changed ({where})")
        left = sorted(p.name for p in Path(tmp).iterdir() if p.name != src.name)
        if r.exit_code != 0 and left:
            tally.fail("wrong result", seed, f"exit {r.exit_code} left {left} ({where})")
        if r.exit_code == 7 and _original_runs(src):
            # A wrong value_info claim that onnxruntime overrides in the original: the
            # compiler's shape inference spreads it, and the optimised model no longer loads.
            kind = KNOWN if "value_info" in what else "wrong result"
            tally.fail(kind, seed, f"the original runs, the optimised model does not: "
                                   f"{text.strip().splitlines()[-1:]} ({where})")
        if r.exit_code == 0:
            import onnx

            try:
                onnx.checker.check_model(str(out))
            except Exception as exc:  # noqa: BLE001
                tally.fail("wrong result", seed, f"exit 0 but the output fails the checker: {_short(exc)} ({where})")


def _original_runs(path: Path) -> bool:
    """Whether onnxruntime runs the input model on the inputs the CLI's check used."""
    import onnxruntime as ort

    from exprune_onnx.io.data import random_dataset
    from exprune_onnx.io.ir_version import runtime_ir_version
    from exprune_onnx.io.modelio import load_model

    model = load_model(path)
    model.ir_version = runtime_ir_version(model.ir_version)
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, next(random_dataset(model, 8, 0).batches(64)))
    except Exception:  # noqa: BLE001 - any failure means the original is to blame
        return False
    return True


# ------------------------------------------------------------------ ops


def _judge_error(exc: Exception, invalid, node: str, seed: int, tally: Tally, where: str, counter: str) -> None:
    """An op run raised: right only for an invalid case, as onnxruntime's error naming the node."""
    if invalid is None:
        tally.fail("wrong result", seed, f"a valid case failed: {_short(exc)} ({where})")
    elif not type(exc).__module__.startswith("onnxruntime") or node not in str(exc):
        tally.fail("wrong result", seed, f"error without the node name: {_short(exc)} ({where})")
    else:
        tally.counts[counter] += 1


def check_op(seed: int, tally: Tally) -> None:
    from op_cases import run_single_op

    op, arrays, attrs, expected, pruned, ambiguous, rng = op_case(seed)
    invalid = corrupt(op, arrays, attrs, rng) if rng.random() < 0.4 else None
    tally.counts["op cases"] += 1
    where = f"{op} {invalid or 'valid'} {attrs} shapes " + str({n: list(a.shape) for n, a in arrays.items() if a is not None})
    try:
        y, stats = run_single_op(op, arrays, attrs, name=NODE, stats=True, threads=int(rng.choice([1, 2])))
    except Exception as exc:  # noqa: BLE001 - judged below
        _judge_error(exc, invalid, NODE, seed, tally, where, "op errors")
        return
    if invalid is not None:
        tally.fail("wrong result", seed, f"an invalid case ran ({where})")
        return
    tally.counts["op runs"] += 1
    tally.counts["op runs that prune"] += bool(pruned.any())
    tally.counts["op runs with NaN or Inf"] += bool(not np.isfinite(arrays["x"]).all() or not np.isfinite(y).all())
    if y.shape != expected.shape or y.dtype != np.float32:
        tally.fail("wrong result", seed, f"y is {y.dtype}{list(y.shape)}, not float32{list(expected.shape)} ({where})")
        return
    decided = ~ambiguous
    wrong = decided & pruned & (y != 0)
    kept = decided & ~pruned
    scale = max(float(np.nanmax(np.abs(np.where(np.isfinite(expected), expected, 0)), initial=0.0)), 1.0)
    with np.errstate(invalid="ignore"):
        off = kept & ~np.isclose(y, expected, rtol=1e-4, atol=1e-5 * scale, equal_nan=True)
    if wrong.any() or off.any():
        i = tuple(np.argwhere(wrong | off)[0])
        tally.fail("wrong result", seed, f"{int(wrong.sum())} decisions and {int(off.sum())} values differ, first at "
                                         f"{i}: y {y[i]}, reference {expected[i]} (pruned {pruned[i]}) ({where})")
        return
    total = int(np.prod(expected.shape))
    if stats.tolist()[1] != total or (not ambiguous.any() and stats.tolist()[0] != int(pruned.sum())):
        tally.fail("wrong result", seed, f"stats {stats.tolist()}, expected [{int(pruned.sum())}, {total}] ({where})")


def check_sparse_conv(seed: int, tally: Tally) -> None:
    """ExPruneSparseConv against onnxruntime's Conv (+Add, +Relu/Clip); invalid cases are
    errors naming the node; stats count the inputs read (the non-zero ones where listed)."""
    import fuzz_sparse_conv as fz
    from sparse_conv_case import NODE as SC_NODE
    from sparse_conv_case import inputs_read, op_model, run

    x, weight, bias, residual, attrs, rng = fz.case(seed)
    w = fz.sparse_w(weight, attrs)
    invalid = None
    if rng.random() < 0.3:
        x, w, bias, residual, invalid = fz.corrupt(x, w, bias, residual, attrs, rng)
    tally.counts["sparse conv cases"] += 1
    where = f"{invalid or 'valid'} {attrs} x {list(x.shape)} w {list(w.shape)}"
    model = op_model(x.shape, w, bias, None if residual is None else residual.shape, attrs, stats=True)
    feeds = {"x": x} | ({"r": residual} if residual is not None else {})
    try:
        y, stats = run(model, feeds, threads=int(rng.choice([1, 2])))
    except Exception as exc:  # noqa: BLE001 - judged below
        _judge_error(exc, invalid, SC_NODE, seed, tally, where, "sparse conv errors")
        return
    if invalid is not None:
        tally.fail("wrong result", seed, f"an invalid case ran ({where})")
        return
    tally.counts["sparse conv runs"] += 1
    want = fz.expected(x, weight, bias, residual, attrs)
    scale = max(float(np.abs(np.where(np.isfinite(want), want, 0)).max(initial=0.0)), 1.0)
    with np.errstate(invalid="ignore"):
        close = np.isclose(y, want, rtol=1e-4, atol=1e-5 * scale, equal_nan=True)
    if y.shape != want.shape or not close.all():
        tally.fail("wrong result", seed, f"y {list(y.shape)} differs from Conv {list(want.shape)} ({where})")
    elif stats.tolist() != [inputs_read(x, attrs.get("group", 1)), x.size]:
        tally.fail("wrong result", seed, f"stats {stats.tolist()} ({where})")


# ------------------------------------------------------------------ driver

LOOPS = {"graphs": check_graph, "files": check_file, "ops": check_op, "sparse_conv": check_sparse_conv}


def run_loop(loop: str, first: int, count: int, seconds: float) -> Tally:
    """Seeds first, first + 1, ... until ``count`` cases or ``seconds`` have passed."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # expected failures would flood stderr
    tally = Tally()
    start = time.monotonic()
    seed = first
    while seed < first + count and time.monotonic() - start < seconds:
        print(f"case {seed}", file=sys.stderr, flush=True)
        try:
            LOOPS[loop](seed, tally)
        except Exception as exc:  # noqa: BLE001 - a bug in the loop itself is a failure too
            tally.fail("crash", seed, f"{_short(exc)}\n{traceback.format_exc()[-1500:]}")
        seed += 1
    tally.counts["seconds"] = round(time.monotonic() - start)
    return tally


if __name__ == "__main__":
    name, first, count, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    if name not in LOOPS:
        print(f"case {first}", file=sys.stderr)
        sys.exit(f"unknown loop {name!r}")
    result = run_loop(name, first, count, budget)
    print(json.dumps({"counts": result.counts, "failures": result.failures}))
