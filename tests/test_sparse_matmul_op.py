"""ExPruneSparseMatMul, the op (custom_ops/src/sparse_matmul.cc): single-node models against
numpy, the inputs it counts as read, NaN and Inf, batch and thread independence, empty
shapes and bad inputs. The pass that emits it: test_sparse_input.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import vi
from onnx import TensorProto, helper, numpy_helper

import exprune_onnx
from exprune_onnx import ops

NODE = "sparse_under_test"


def op_model(x_shape, w_shape, bias_shape=None) -> onnx.ModelProto:
    names = ["x", "w"] + (["b"] if bias_shape is not None else [])
    shapes = [x_shape, w_shape] + ([bias_shape] if bias_shape is not None else [])
    node = helper.make_node(ops.SPARSE_MATMUL, names, ["y"], name=NODE, domain=ops.DOMAIN)
    graph = helper.make_graph([node], "sparse", [vi(n, list(s)) for n, s in zip(names, shapes)],
                              [vi("y", None)])
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                 helper.make_opsetid(ops.DOMAIN, ops.VERSION)])


def run_op(x, w, b=None, threads=1):
    model = op_model(x.shape, w.shape, None if b is None else b.shape)
    feeds = {"x": x, "w": w} | ({"b": b} if b is not None else {})
    return exprune_onnx.inference_session(model, optimize=False, threads=threads).run(None, feeds)[0]


def reference(x, w, b=None):
    """Elementwise products summed in float64: IEEE semantics for NaN and Inf, no BLAS shortcuts."""
    with np.errstate(invalid="ignore"):  # Inf - Inf = NaN is the point of some cases
        y = (x.astype(np.float64)[..., :, None] * w.astype(np.float64)).sum(-2)
    return y if b is None else y + b


def sparse_x(rng, shape, zeros):
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < zeros] = 0.0
    rows = x.reshape(-1, shape[-1])
    rows[0] = 0.0  # a row with nothing to add: y = bias exactly
    if len(rows) > 2:
        rows[2] = rng.standard_normal(shape[-1]).astype(np.float32) + 5.0  # no zeros at all
    return x


@pytest.mark.parametrize("lead", [(1,), (7,), (2, 3), (19,)])
@pytest.mark.parametrize("bias", [True, False])
def test_op_matches_numpy(lead, bias):
    for seed in range(3):
        rng = np.random.default_rng([seed, len(lead), lead[0], bias])
        n, m = ((300, 1100), (300, 270), (37, 5))[seed]  # several column tasks, one, tiny
        x = sparse_x(rng, (*lead, n), zeros=(0.5, 0.9, 0.0)[seed])
        w = rng.standard_normal((n, m)).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32) if bias else None
        y = run_op(x, w, b)
        assert y.shape == (*lead, m) and y.dtype == np.float32
        want = reference(x, w, b)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        first = y.reshape(-1, m)[0]
        assert np.array_equal(first, b if bias else np.zeros(m, np.float32))


@pytest.mark.parametrize("lead", [(1,), (19,), (0,)])
def test_op_stats_count_the_nonzero_inputs(lead):
    """stats = [inputs read, inputs]: each non-zero input (NaN and Inf too, not -0) multiplies
    a row of w; the FLOPs a skipped one saves are 2 * m (measure/counters.py)."""
    rng = np.random.default_rng(8)
    x = sparse_x(rng, (*lead, 300), 0.8) if lead[0] else np.zeros((0, 300), np.float32)
    if x.size:
        x.reshape(-1, 300)[-1, :3] = [np.nan, np.inf, -0.0]
    w = rng.standard_normal((300, 70)).astype(np.float32)
    node = helper.make_node(ops.SPARSE_MATMUL, ["x", "w"], ["y", "stats"], name=NODE, domain=ops.DOMAIN)
    graph = helper.make_graph([node], "sparse", [vi("x", list(x.shape)), vi("w", [300, 70])],
                              [vi("y", None), helper.make_tensor_value_info("stats", TensorProto.INT64, [2])])
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid(ops.DOMAIN, ops.VERSION)])
    y, stats = exprune_onnx.inference_session(model, optimize=False).run(None, {"x": x, "w": w})
    assert stats.dtype == np.int64 and stats.tolist() == [int(np.count_nonzero(x)), x.size]
    np.testing.assert_array_equal(y, run_op(x, w))
    from exprune_onnx.measure.counters import flops_saved, per_input

    with_w = helper.make_model(helper.make_graph([node], "s", graph.input[:1], graph.output,
                                                 [numpy_helper.from_array(w, "w")]))
    assert per_input(with_w) == {NODE: 2.0 * 70}
    assert flops_saved(with_w, {NODE: tuple(stats.tolist())}) == (x.size - np.count_nonzero(x)) * 140


def test_op_nan_and_inf_inputs_propagate_as_in_matmul():
    rng = np.random.default_rng(5)
    x = sparse_x(rng, (6, 40), 0.7)
    w = rng.standard_normal((40, 9)).astype(np.float32)
    x[1, 3], x[3, 7], x[4, 0], x[4, 1] = np.nan, np.inf, -np.inf, np.inf
    y = run_op(x, w)
    want = reference(x, w)
    assert np.isnan(y[1]).all() and np.isinf(y[3]).all()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_op_result_does_not_depend_on_batch_or_threads():
    """Each row is summed in input order, whatever rows share its block and however tasks split."""
    rng = np.random.default_rng(6)
    x = sparse_x(rng, (21, 700), 0.8)
    w = rng.standard_normal((700, 2100)).astype(np.float32)  # several row blocks times several column tasks
    b = rng.standard_normal(2100).astype(np.float32)
    whole = run_op(x, w, b, threads=2)
    assert np.array_equal(whole, run_op(x, w, b, threads=1))
    for r in (0, 5, 20):
        assert np.array_equal(whole[r:r + 1], run_op(x[r:r + 1], w, b))


def test_op_empty_shapes():
    w = np.ones((4, 3), np.float32)
    b = np.arange(3, dtype=np.float32)
    assert run_op(np.zeros((0, 4), np.float32), w, b).shape == (0, 3)
    assert run_op(np.zeros((2, 4), np.float32), np.ones((4, 0), np.float32)).shape == (2, 0)
    np.testing.assert_array_equal(run_op(np.zeros((2, 0), np.float32), np.ones((0, 3), np.float32), b),
                                  np.stack([b, b]))


@pytest.mark.parametrize("x_shape,w_shape,b_shape,words", [
    ((8,), (8, 3), None, "x must have shape [*, n]"),
    ((2, 8), (8, 3, 1), None, "w must have shape [n, m] with n = 8"),
    ((2, 8), (7, 3), None, "got [7, 3]"),
    ((2, 8), (8, 3), (4,), "bias must have shape [m] = [3], got [4]"),
    ((2, 8), (8, 3), (1, 3), "got [1, 3]"),
])
def test_op_bad_inputs_name_the_node(x_shape, w_shape, b_shape, words):
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in (x_shape, w_shape)]
    b = rng.standard_normal(b_shape).astype(np.float32) if b_shape is not None else None
    with pytest.raises(Exception) as info:
        run_op(*arrays, b)
    assert type(info.value).__module__.startswith("onnxruntime"), repr(info.value)
    message = str(info.value)
    assert f"{ops.SPARSE_MATMUL} node '{NODE}'" in message and words in message, message


# ------------------------------------------------------------------ the pass


def test_op_type_is_float_only():
    model = op_model((2, 4), (4, 3))
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(Exception, match=r"tensor\(double\)"):
        exprune_onnx.inference_session(model, optimize=False).run(
            None, {"x": np.zeros((2, 4)), "w": np.zeros((4, 3), np.float32)})
