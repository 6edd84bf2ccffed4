"""A short run of the custom ops, valid and invalid inputs, for memory checkers.

    PYTHONMALLOC=malloc valgrind --error-exitcode=99 --suppressions=tests/valgrind.supp \
        "$(python -c 'import sys; print(sys.executable)')" tests/exercise_ops.py

(tests/test_sanitizers.py does this under ``pytest -m sanitize``.) Small shapes, every
rule, residual and stats, 1 and 2 threads, a constant (pre-packed) and a fed w_tail,
then inputs each op must refuse with an error status. onnxruntime's arena is
turned off (tests/sanitized_ops.py says why). Exits non-zero if a result is
wrong or a bad input is accepted; prints ``ok`` at the end.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from op_cases import run_single_op, shuffled_units, single_op_model  # noqa: E402
from sanitized_ops import unpool_sessions  # noqa: E402

import exprune_onnx  # noqa: E402
from exprune_onnx import ops  # noqa: E402

RULE_ATTRS = {
    "threshold": {"threshold": 0.0},
    "statstest": {"threshold": 0.0, "rule": "statstest", "z_crit": -1.0},
    "certified": {"threshold": 0.0, "rule": "certified"},
}


def layer(op, rng, n=12, k=4, outs=6, batch=3):
    """Inputs of a small layer (dense or 3x3 conv on 5x5, pads 1), every optional one given."""
    if op == ops.DENSE_RELU:
        x = np.abs(rng.standard_normal((batch, n))).astype(np.float32)
        w = rng.standard_normal((n, outs)).astype(np.float32)
        partial, partial_sq = x[:, :k] @ w[:k], (x[:, :k] ** 2) @ (w[:k] ** 2)
        w_tail = np.ascontiguousarray(w[k:].T)
        attrs = {}
    else:
        x = np.abs(rng.standard_normal((batch, n, 5, 5))).astype(np.float32)
        w = rng.standard_normal((outs, n, 3, 3)).astype(np.float32)
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        patches = np.stack([xp[:, :k, i:i + 5, j:j + 5] for i in range(3) for j in range(3)], axis=-1)
        taps = w[:, :k].reshape(outs, k, 9)
        partial = np.einsum("nchwt,oct->nohw", patches, taps)
        partial_sq = np.einsum("nchwt,oct->nohw", patches ** 2, taps ** 2)
        w_tail = np.ascontiguousarray(w[:, k:])
        attrs = {"pads": [1, 1, 1, 1]}
    positive = np.maximum(w_tail.reshape(outs, -1), 0)
    arrays = {
        "partial": partial.astype(np.float32),
        "x": x,
        "w_tail": w_tail,
        "bias": rng.standard_normal(outs).astype(np.float32),
        "residual": rng.standard_normal(partial.shape).astype(np.float32),
        "partial_sq": partial_sq.astype(np.float32),
        "w_pos_sum": positive.sum(axis=1).astype(np.float32),
        "w_pos_norm": np.sqrt((positive ** 2).sum(axis=1)).astype(np.float32),
    }
    return arrays, {"k": k, **attrs}


def check_valid(op, rng):
    arrays, attrs = layer(op, rng)
    for rule, rule_attrs in RULE_ATTRS.items():
        for threads in (1, 2):
            y, stats = run_single_op(op, arrays, {**attrs, **rule_attrs}, name=f"{op}-{rule}", stats=True,
                                     threads=threads)
            assert y.shape == arrays["partial"].shape and np.all(y >= 0), (op, rule)
            assert stats[1] == y.size and 0 <= stats[0] <= np.count_nonzero(y == 0), (op, rule, stats)
    if op == ops.DENSE_RELU:
        # x in a shuffled unit order, the tail named by tail_units: the op's own gather.
        x, tail_units = shuffled_units(arrays["x"], attrs["k"], rng)
        moved = {**arrays, "x": x}
        for rule, rule_attrs in RULE_ATTRS.items():
            for threads in (1, 2):
                want = run_single_op(op, arrays, {**attrs, **rule_attrs}, name=f"{op}-{rule}", threads=threads)[0]
                got = run_single_op(op, moved, {**attrs, **rule_attrs, "tail_units": tail_units},
                                    name=f"{op}-{rule}-tail-units", threads=threads)[0]
                assert np.array_equal(got, want), (op, rule, "tail_units")
    # w_tail as a constant: the conv op packs it when the session is created.
    model = single_op_model(op, arrays, {**attrs, "threshold": 0.0}, name=f"{op}-constant")
    w = next(i for i in model.graph.input if i.name == "w_tail")
    model.graph.input.remove(w)
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(arrays["w_tail"], "w_tail"))
    feeds = {n: a for n, a in arrays.items() if n != "w_tail"}
    fed = run_single_op(op, arrays, {**attrs, "threshold": 0.0}, name=f"{op}-fed")[0]
    constant = exprune_onnx.inference_session(model, optimize=False).run(None, feeds)[0]
    np.testing.assert_allclose(constant, fed, rtol=1e-5, atol=1e-5)


def check_invalid(op, rng):
    arrays, attrs = layer(op, rng)
    bad_cases = [
        ("w_tail shape", {**arrays, "w_tail": arrays["w_tail"][:-1]}, {**attrs, "threshold": 0.0}),
        ("bias shape", {**arrays, "bias": arrays["bias"][:-1]}, {**attrs, "threshold": 0.0}),
        ("residual shape", {**arrays, "residual": arrays["residual"][:1]}, {**attrs, "threshold": 0.0}),
        ("k too large", arrays, {**attrs, "k": 50, "threshold": 0.0}),
        ("partial_sq missing", {**arrays, "partial_sq": None}, {**attrs, **RULE_ATTRS["statstest"]}),
        ("w_pos_norm shape", {**arrays, "w_pos_norm": arrays["w_pos_norm"][:2]}, {**attrs, **RULE_ATTRS["certified"]}),
        ("thresholds length", arrays, {**attrs, "threshold": 0.0, "thresholds": [0.0, 1.0]}),
    ]
    if op == ops.DENSE_RELU:
        n, k = arrays["x"].shape[-1], attrs["k"]
        bad_cases += [
            ("tail_units count", arrays, {**attrs, "threshold": 0.0, "tail_units": list(range(k, n - 1))}),
            ("tail_units range", arrays, {**attrs, "threshold": 0.0, "tail_units": [*range(k, n - 1), n]}),
        ]
    for what, bad_arrays, bad_attrs in bad_cases:
        try:
            run_single_op(op, bad_arrays, bad_attrs, name=f"{op}-bad")
        except Exception as e:  # onnxruntime's own exception types
            assert f"{op}-bad" in str(e), (what, str(e))
        else:
            raise AssertionError(f"{op}: {what} was accepted")


def check_sparse_conv(rng):
    """ExPruneSparseConv: the 3x3 sweep, the taps path (1x1, strided, dilated), groups with
    a partial block of output channels, a fed and a constant w, 1 and 2 threads, then
    inputs it must refuse. (Channel chunks are covered under ASan by test_sparse_conv_op.)"""
    import fuzz_sparse_conv as fz
    from sparse_conv_case import case, check, op_model, run

    geometries = [dict(attrs={"pads": [1, 1, 1, 1], "activation": "relu"}, batch=2),
                  dict(kernel=(1, 1), outs=40, attrs={"strides": [2, 2]}),
                  dict(channels=6, outs=40, attrs={"group": 2, "dilations": [2, 1], "pads": [2, 1, 0, 1],
                                                   "activation": "relu", "clip_max": 6.0})]
    for threads in (1, 2):
        for kw in geometries:
            x, weight, b, attrs = case(rng, zeros=0.6, **kw)
            check(x, weight, b, attrs, residual=None, threads=threads, stats=True)
    x, weight, b, attrs = case(rng, zeros=0.5, attrs={"pads": [1, 1, 1, 1]})
    w = fz.sparse_w(weight, attrs)
    fed = run(op_model(x.shape, w, b, None, attrs, w_input=True), {"x": x, "w": w})[0]
    assert np.array_equal(fed, run(op_model(x.shape, w, b, None, attrs), {"x": x})[0])
    refused = 0
    for seed in range(12):
        x, weight, b, res, attrs, crng = fz.case(seed)
        x, w, b, res, what = fz.corrupt(x, fz.sparse_w(weight, attrs), b, res, attrs, crng)
        model = op_model(x.shape, w, b, None if res is None else res.shape, attrs)
        try:
            run(model, {"x": x} | ({"r": res} if res is not None else {}))
        except Exception as e:  # onnxruntime's own exception types
            assert "sparse_conv_under_test" in str(e), (what, str(e))
            refused += 1
        else:
            raise AssertionError(f"{ops.SPARSE_CONV}: {what} was accepted")
    assert refused == 12


def main() -> int:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # the refused inputs below are expected errors
    unpool_sessions()
    rng = np.random.default_rng(0)
    for op in (ops.DENSE_RELU, ops.CONV_RELU):
        check_valid(op, rng)
        check_invalid(op, rng)
    check_sparse_conv(rng)
    print("ok")
    return 0


if __name__ == "__main__":
    code = main()
    # Sessions (and their kernels and thread pools) go now, under the checker. Then
    # leave without the interpreter's exit handlers: they free onnxruntime's static
    # data while one of onnxruntime's own threads may still read it, a race inside
    # onnxruntime that valgrind reports now and then.
    gc.collect()
    sys.stdout.flush()
    os._exit(code)
