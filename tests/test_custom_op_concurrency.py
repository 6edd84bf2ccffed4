"""The custom ops under concurrency: one session shared by threads, many sessions at once.

onnxruntime releases the GIL inside ``InferenceSession.run``, so Python threads really
run the ops at the same time. The ops keep nothing between runs but scratch that each run
leases for itself (custom_ops/src/scratch.h) and weights packed once when the session is created;
these tests would catch a buffer or a counter shared by two runs: every concurrent run
must give bit for bit what the same session gives for the same input run alone.
Inputs and batch sizes differ per thread, so a run reading another's scratch or
stats cannot go unnoticed.

tests/test_sanitizers.py runs this file again against an ASan/UBSan build.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import init, make_model, node_types, vi
from onnx import helper
from op_cases import single_op_model

import exprune_onnx
from exprune_onnx import ops, optimize_model
from exprune_onnx.config import DECISION_RULES

ROOT = Path(__file__).resolve().parents[1]
THREADS = 4
ITERATIONS = 15


def in_threads(count, work):
    """work(t) for t < count, each in its own thread, all released at once; results in
    thread order. An exception in any thread is raised here."""
    barrier = threading.Barrier(count)

    def start(t):
        barrier.wait(timeout=60)
        return work(t)

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start, t) for t in range(count)]
        return [f.result() for f in futures]


def assert_same_outputs(expected, got, what):
    assert len(expected) == len(got), what
    for i, (e, g) in enumerate(zip(expected, got)):
        assert e.dtype == g.dtype and e.shape == g.shape, f"{what}, output {i}"
        assert np.array_equal(e, g), f"{what}, output {i}: differs from the sequential run"


# ------------------------------------------------------------------ models


def mlp_model() -> onnx.ModelProto:
    """Dense only: Relu -> Gemm(64->96) -> Relu -> MatMul+Add(96->48) -> Relu -> Gemm(48->10)."""
    rng = np.random.default_rng(7)

    def weight(n, o):
        return (rng.standard_normal((n, o)) / np.sqrt(n)).astype(np.float32)

    # Strongly negative biases on a third of the outputs: even the lossless rule,
    # whose bound is loose, prunes some.
    def bias(o):
        return (0.2 * rng.standard_normal(o) - 4.0 * (np.arange(o) % 3 == 0)).astype(np.float32)

    inits = [init("W1", weight(64, 96)), init("B1", bias(96)), init("W2", weight(96, 48)), init("B2", bias(48)),
             init("W3", weight(48, 10)), init("B3", np.zeros(10, np.float32))]
    nodes = [
        helper.make_node("Relu", ["inp"], ["x0"]),
        helper.make_node("Gemm", ["x0", "W1", "B1"], ["g1"], name="fc1"),
        helper.make_node("Relu", ["g1"], ["x1"]),
        helper.make_node("MatMul", ["x1", "W2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "B2"], ["g2"]),
        helper.make_node("Relu", ["g2"], ["x2"]),
        helper.make_node("Gemm", ["x2", "W3", "B3"], ["logits"], name="head"),
    ]
    return make_model(nodes, [vi("inp", ["N", 64])], [vi("logits", ["N", 10])], inits)


def compile_model(name: str, rule: str) -> onnx.ModelProto:
    if name == "cnn":
        source, threshold = onnx.load(str(ROOT / "models" / "fashion_cnn.onnx")), -1.0
    else:
        source, threshold = mlp_model(), 0.0
    result = optimize_model(source, threshold=threshold, rule=rule, alpha=0.05, emit_stats=True)
    wanted = ops.CONV_RELU if name == "cnn" else ops.DENSE_RELU
    assert node_types(result.model).count(wanted) >= 2, node_types(result.model)
    return result.model


@functools.cache
def images() -> np.ndarray:
    return np.load(ROOT / "models" / "fashion_test_slice.npz")["input"]


def feeds_for(name: str, t: int) -> dict:
    """Thread t's input: its own samples and its own batch size."""
    batch = 2 + 3 * t
    if name == "cnn":
        return {"input": np.ascontiguousarray(images()[16 * t:16 * t + batch])}
    rng = np.random.default_rng(1000 + t)
    return {"inp": rng.standard_normal((batch, 64)).astype(np.float32)}


@pytest.fixture(scope="module")
def compiled():
    cache = {}

    def get(name, rule):
        if (name, rule) not in cache:
            cache[name, rule] = compile_model(name, rule).SerializeToString()
        return cache[name, rule]

    return get


def stats_of(outputs):
    """The [pruned, total] pairs of every rewritten layer (outputs after the first)."""
    return tuple(tuple(int(v) for v in o) for o in outputs[1:])


# ------------------------------------------------------------------ one shared session


@pytest.mark.parametrize("intra", [1, 2])
@pytest.mark.parametrize("rule", DECISION_RULES)
@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_shared_session_matches_sequential_runs(compiled, name, rule, intra):
    sess = exprune_onnx.inference_session(compiled(name, rule), threads=intra)
    feeds = [feeds_for(name, t) for t in range(THREADS)]
    expected = [sess.run(None, f) for f in feeds]
    # The inputs must tell the threads apart, or a mix-up would pass unseen.
    assert len({stats_of(e) for e in expected}) == THREADS
    assert sum(p for e in expected for p, _ in stats_of(e)) > 0

    got = in_threads(THREADS, lambda t: [sess.run(None, feeds[t]) for _ in range(ITERATIONS)])
    for t in range(THREADS):
        for i, outputs in enumerate(got[t]):
            assert_same_outputs(expected[t], outputs, f"{name}/{rule}, thread {t}, run {i}")


# ------------------------------------------------------------------ many sessions


def test_sessions_created_and_run_concurrently(compiled):
    """Each thread registers the library in its own sessions, of different models and
    thread counts, runs and drops them, over several rounds."""
    models = [("cnn", "threshold"), ("mlp", "statstest"), ("cnn", "certified"), ("mlp", "threshold")]
    expected = {}
    for t, (name, rule) in enumerate(models):
        for intra in (1, 2):
            expected[t, intra] = exprune_onnx.inference_session(compiled(name, rule), threads=intra).run(
                None, feeds_for(name, t))

    def work(t):
        name, rule = models[t]
        out = []
        for round_ in range(4):
            intra = 1 + (t + round_) % 2
            sess = exprune_onnx.inference_session(compiled(name, rule), threads=intra)
            out.append((intra, [sess.run(None, feeds_for(name, t)) for _ in range(3)]))
            del sess
        return out

    for t, rounds in enumerate(in_threads(len(models), work)):
        for round_, (intra, runs) in enumerate(rounds):
            for outputs in runs:
                assert_same_outputs(expected[t, intra], outputs, f"{models[t]}, thread {t}, round {round_}")


def test_sessions_created_and_destroyed_repeatedly(compiled):
    model = compiled("cnn", "statstest")
    feeds = feeds_for("cnn", 1)
    expected = exprune_onnx.inference_session(model, threads=1).run(None, feeds)
    for i in range(25):
        # A fresh options object each time: the library is registered again.
        sess = exprune_onnx.inference_session(model, threads=1 + i % 2)
        assert_same_outputs(expected, sess.run(None, feeds), f"session {i}")
        del sess


# ------------------------------------------------------------------ stats are per run


def counted_case(op, t):
    """A single-op layer where exactly `pruned` outputs fall under the threshold 0.

    partial is -4 at `pruned` seeded positions and +4 elsewhere, bias and tail 0-mean
    small, so est = (n/k) * partial decides alone."""
    rng = np.random.default_rng(50 + t)
    # Big enough that runs last long enough to overlap.
    n, k, outs = 256, 8, 64
    if op == ops.DENSE_RELU:
        shape, x_shape, w_shape = (40 * (t + 1), outs), (40 * (t + 1), n), (outs, n - k)
    else:
        shape, x_shape, w_shape = (1 + t, outs, 12, 12), (1 + t, n, 12, 12), (outs, n - k, 1, 1)
    size = int(np.prod(shape))
    pruned = size // (t + 2)
    partial = np.full(size, 4.0, np.float32)
    partial[rng.choice(size, pruned, replace=False)] = -4.0
    arrays = {
        "partial": partial.reshape(shape),
        "x": rng.standard_normal(x_shape).astype(np.float32),
        "w_tail": (0.01 * rng.standard_normal(w_shape)).astype(np.float32),
        "bias": (0.01 * rng.standard_normal(outs)).astype(np.float32),
    }
    return arrays, pruned, size


@pytest.mark.parametrize("op", [ops.DENSE_RELU, ops.CONV_RELU])
def test_stats_are_per_run(op):
    attrs = {"k": 8, "threshold": 0.0}
    model = single_op_model(op, counted_case(op, 0)[0], attrs, name="counted", stats=True)
    # Leading dims free, so that every thread can feed its own batch size.
    for value in model.graph.input:
        if value.name in ("partial", "x"):
            value.type.tensor_type.shape.dim[0].dim_param = "N"
    sess = exprune_onnx.inference_session(model, optimize=False, threads=2)
    cases = [counted_case(op, t) for t in range(THREADS)]
    for arrays, pruned, size in cases:
        assert sess.run(["stats"], arrays)[0].tolist() == [pruned, size]

    got = in_threads(THREADS, lambda t: [sess.run(None, cases[t][0]) for _ in range(40)])
    for t, runs in enumerate(got):
        arrays, pruned, size = cases[t]
        for y, stats in runs:
            assert stats.tolist() == [pruned, size], f"thread {t}"
            assert np.all(y[arrays["partial"] < 0] == 0), f"thread {t}"
