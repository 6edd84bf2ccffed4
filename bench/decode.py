"""One-token decode of the KJV language model: what the rewrites do to a generation step.

``models/kjv_lm_step.onnx`` is the same network as ``kjv_lm.onnx`` run one token at a
time with a key/value cache; its FFN layers carry the same names, so the per-layer
settings calibrated on the full-sequence model apply to it unchanged. For one set of
settings (``Options``) this measures:

* decode-step latency at batch 1, original vs optimised, side by side in one process
  (same session options, median), with and without the sparse-input consumer
  (``ExPruneSparseMatMul`` for each FFN's second matrix), and under the latency
  objective (objective.py) timed on real decode states. Timed twice: taking turns every
  ``BLOCK`` steps, as a decode loop runs one model step after step, and alternating
  every step, where two models whose weights do not both fit in the cache evict each
  other's (the wide LM's original and optimised step graphs hold 26 MB of weights
  each, against a 32 MB L3 on our machines);
* next-character accuracy of a real decode: each graph runs over held-out windows
  from its own caches, position by position, so pruning errors feed forward as they
  would in generation;
* where the original step's time goes (onnxruntime profiling), which bounds what any
  rewrite of the FFN can gain.

``python -m bench`` runs it on ``kjv_lm`` with each budget's settings. Run alone, it
calibrates the full-sequence model at each budget first::

    python -m bench.decode [--model kjv_lm_wide] [--budget 0.01] [--save]

``kjv_lm_wide`` (``python models/build_kjv_lm.py --size wide``, not in git) is the
same design at d_model 512: its step is dominated by weight matrices, as a real LM's
is, where the small model's is dominated by per-node overhead. With ``--save`` the
results go to bench/decode_MODEL.json and into docs/benchmarks.md (bench/write.py).
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from exprune_onnx.compiler.pipeline import optimize
from exprune_onnx.config import Options
from exprune_onnx.io.data import Dataset
from exprune_onnx.io.modelio import load_model
from exprune_onnx.measure.timing import session
from exprune_onnx.tuning import objective
from exprune_onnx.tuning.search import search

from .models import DATA, MODELS

STEP = MODELS / "kjv_lm_step.onnx"
TEST = DATA / "kjv_lm_test.npz"
CALIB = DATA / "kjv_lm_calib.npz"
BUDGETS = (0.001, 0.01)
WINDOWS = 32  # held-out windows decoded for the accuracy check
STATES = 8  # decode states the latency runs cycle through
BLOCK = 32  # consecutive steps per model when timing as a decode loop runs


@dataclass(frozen=True)
class LM:
    build: str
    calib_samples: int  # windows the search calibrates on (the wide graph is 8 times the work per window)
    windows: int  # held-out windows decoded for the accuracy check


LMS = {"kjv_lm": LM("python models/build_kjv_lm.py", 2000, WINDOWS),
       "kjv_lm_wide": LM("python models/build_kjv_lm.py --size wide", 1000, 128)}


def _cache_inputs(model: onnx.ModelProto) -> list[str]:
    return [i.name for i in model.graph.input if i.name.startswith("past_")]


def decode(model: onnx.ModelProto, tokens: np.ndarray, keep_states: set[int] = frozenset()):
    """Run the step graph over ``tokens`` [B, T] from empty caches. Returns the logits
    [B, T, V] and the feeds of the steps in ``keep_states`` (batch sliced to one)."""
    s = session(model, 1)
    b, t = tokens.shape
    past = _cache_inputs(model)
    shape = [d.dim_value for d in next(i for i in model.graph.input if i.name == past[0]).type.tensor_type.shape.dim]
    caches = {name: np.zeros((b, *shape[1:]), np.float32) for name in past}
    logits, states = [], []
    for pos in range(t):
        feeds = {"token": tokens[:, pos:pos + 1], "position": np.full(b, pos, np.int64), **caches}
        if pos in keep_states:
            states.append({k: np.ascontiguousarray(v[:1]) for k, v in feeds.items()})
        out = s.run(None, feeds)
        logits.append(out[0])
        caches = dict(zip(past, out[1:]))
    return np.stack(logits, 1), states


def profile_shares(model: onnx.ModelProto, feeds: list[dict], runs: int = 200) -> dict[str, float]:
    """Share of kernel time per op type of one decode step (onnxruntime profiler)."""
    with tempfile.TemporaryDirectory() as tmp:
        s = session(model, 1, profile=str(Path(tmp) / "p"))
        for i in range(runs):
            s.run(None, feeds[i % len(feeds)])
        events = json.loads(Path(s.end_profiling()).read_text())
    total: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
    ffn = sum(e["dur"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
              and ("/fc1/" in e["name"] or "/fc2/" in e["name"] or "/relu/" in e["name"]))
    whole = sum(total.values())
    shares = {op: t / whole for op, t in total.most_common()}
    shares["(FFN: fc1, relu, fc2)"] = ffn / whole
    return shares


def timed(step: onnx.ModelProto, model: onnx.ModelProto, states: list[dict], passes: int, block: int) -> dict:
    """Original and optimised ms per step: of three rounds, the one with the median ratio
    (a burst from another job on a shared machine can move one round by a tenth)."""
    rounds = sorted((objective.time_pair(step, model, states, 1, passes, block=block) for _ in range(3)),
                    key=lambda t: t[1] / t[0])
    orig_ms, opt_ms = rounds[1]
    return {"original_ms": orig_ms, "optimized_ms": opt_ms, "ratio": opt_ms / orig_ms, "block": block,
            "round_ratios": [b / a for a, b in rounds]}


def decode_row(options: Options, step_path: Path = STEP, windows: int = WINDOWS, passes: int = 200,
               log=print) -> dict:
    """Latency and accuracy of the step graph compiled with ``options`` (module docstring)."""
    step = load_model(step_path)
    with np.load(TEST) as data:
        tokens, labels = data["tokens"][:windows], data["labels"][:windows]
    positions = sorted({int(p) for p in np.linspace(8, tokens.shape[1] - 1, STATES)})
    log("decode: original step graph")
    ref_logits, states = decode(step, tokens, set(positions))
    variants = {"flops objective": optimize(step, options).model}
    dense_consumer = copy.deepcopy(options)
    dense_consumer.sparse_input = False
    variants["flops objective, no sparse input"] = optimize(step, dense_consumer).model
    timing_data = Dataset({k: np.concatenate([s[k] for s in states]) for k in states[0]}, None, "decode states")
    result = optimize(step, options)
    choice = objective.choose(step, options, result, timing_data, batch=1, threads=1,
                              source=f"{len(states)} decode states of held-out text", log=log)
    variants["latency objective"] = choice.result.model
    row = {"windows": windows, "block": BLOCK, "positions": positions, "variants": {},
           "original_accuracy": float((ref_logits.argmax(-1) == labels).mean()),
           "profile": profile_shares(step, states)}
    for name, model in variants.items():
        log(f"decode: {name}")
        rewritten = sum(1 for n in model.graph.node if n.domain)
        if not rewritten:  # the original itself: timing it against itself would only show noise
            row["variants"][name] = {"custom_ops": 0, "accuracy": row["original_accuracy"], "original_ms": None,
                                     "optimized_ms": None, "ratio": 1.0, "unchanged": True}
            continue
        got, _ = decode(model, tokens)
        row["variants"][name] = {"custom_ops": rewritten, "accuracy": float((got.argmax(-1) == labels).mean()),
                                 **timed(step, model, states, passes, BLOCK),
                                 "alternating": timed(step, model, states, passes, 1), "unchanged": False}
    row["latency_objective_layers"] = [{"layer": t.layer, "rewrite": t.kind, "with_ms": t.with_ms,
                                        "without_ms": t.without_ms, "kept": choice.kept(t.layer, t.kind)}
                                       for t in choice.layers]
    return row


def budget_row(name: str, budget: float, calib_samples: int, windows: int, test_windows: int, log) -> dict:
    """Calibrate the full-sequence model at ``budget``, score it on held-out windows, then
    run ``decode_row`` on the step graph with the settings found."""
    from exprune_onnx.io.data import load_dataset
    from exprune_onnx.measure.compare import compare

    from .run import subset

    full = load_model(MODELS / f"{name}.onnx")
    calib = subset(load_dataset(CALIB, full), calib_samples)
    outcome = search(full, Options(), calib, max_drop=budget, seed=0, log=log)
    row = {"budget": budget, "search_seconds": outcome.seconds, "met": outcome.met,
           "calibration_drop": outcome.calibration.drop,
           "held_out_drop": None if outcome.holdout is None else outcome.holdout.drop,
           "rewritten": len(outcome.result.rewritten)}
    if outcome.result.changed:
        test = subset(load_dataset(TEST, full), test_windows)
        checked = compare(full, outcome.result.model, test)
        row["test"] = {"windows": len(test), "original": checked.accuracy[0], "optimized": checked.accuracy[1]}
    row["decode"] = decode_row(outcome.options, MODELS / f"{name}_step.onnx", windows, log=log)
    return row


def main() -> None:
    from .write import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(LMS), default="kjv_lm", help="which language model (default kjv_lm)")
    parser.add_argument("--budget", type=float, action="append",
                        help="accuracy drop allowed; repeat for several (default 0.001 and 0.01)")
    parser.add_argument("--threshold", type=float, help="one threshold for every layer instead of calibrating")
    parser.add_argument("--calib-samples", type=int,
                        help="calibration windows the search uses (default 2000; 1000 for kjv_lm_wide)")
    parser.add_argument("--windows", type=int,
                        help=f"held-out windows decoded for accuracy (default {WINDOWS}; 128 for kjv_lm_wide)")
    parser.add_argument("--test-windows", type=int, default=500,
                        help="held-out windows on which the full-sequence model is scored")
    parser.add_argument("--save", action="store_true",
                        help="write bench/decode_MODEL.json and refresh docs/benchmarks.md from it")
    args = parser.parse_args()
    lm = LMS[args.model]
    if args.calib_samples is None:
        args.calib_samples = lm.calib_samples
    if args.windows is None:
        args.windows = lm.windows
    if min(args.calib_samples, args.windows, args.test_windows) <= 0:
        parser.error("--calib-samples, --windows and --test-windows must be positive")
    if args.save and args.threshold is not None:
        parser.error("--save records calibrated runs (docs/benchmarks.md); drop --threshold")
    missing = [p for p in (MODELS / f"{args.model}.onnx", MODELS / f"{args.model}_step.onnx", CALIB, TEST)
               if not p.is_file()]
    if missing:
        sys.exit(f"error: {missing[0]} not found; build it with `{lm.build}`")
    if args.threshold is not None:
        out = {"threshold": args.threshold,
               "rows": [{"decode": decode_row(Options(threshold=args.threshold), MODELS / f"{args.model}_step.onnx",
                                              args.windows)}]}
    else:
        started = time.perf_counter()
        rows = [budget_row(args.model, b, args.calib_samples, args.windows, args.test_windows, print)
                for b in (args.budget or BUDGETS)]
        out = {"rows": rows, "seconds": time.perf_counter() - started}
    out.update(model=args.model, build=lm.build, calib_samples=args.calib_samples, machine=machine(),
               command=" ".join(["python -m bench.decode", *sys.argv[1:]]))
    print(json.dumps(out, indent=1))
    if args.save:
        from .write import decode_results, refresh

        decode_results(args.model).write_text(json.dumps(out, indent=1) + "\n")
        refresh()


if __name__ == "__main__":
    main()
