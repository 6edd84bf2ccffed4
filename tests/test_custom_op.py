"""The ExPrune custom ops (custom_ops/src) against a numpy reference.

Each model is a single ai.exprune node fed through graph inputs, run by the installed
package's library (`pip install .`), per the contract in docs/custom_ops.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import NODE
from onnx import TensorProto, helper
from op_cases import (
    CONV_GEOMETRIES,
    act,
    check_result,
    conv_case,
    conv_ref,
    dense_case,
    estimate,
    onnx_pads,
    run_single_op,
    shuffled_units,
    single_op_model,
)

from exprune_onnx import ops

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ helpers


def run(op, arrays, attrs, *, stats=False, threads=None, empty_residual=False):
    return run_single_op(op, arrays, attrs, name=NODE, stats=stats, threads=threads,
                         min_inputs=5 if empty_residual else 0)


def scaled(arrays, factor):
    """The same layer with weights, bias and residual times factor: output times factor."""
    return {n: a if a is None or n == "x" else a * np.float32(factor) for n, a in arrays.items()}


def pruned_mask(partial, bias_b, residual, n, k, threshold):
    return estimate(partial, bias_b, residual, n, k) < np.float64(np.float32(threshold))


# ------------------------------------------------------------------ dense


DENSE_SHAPES = [
    ((4,), 40, 24, 10),  # 2-D
    ((2, 3), 40, 16, 8),  # 3-D
    ((37,), 100, 70, 25),  # several row and column blocks, tail not a lane multiple
    ((1,), 257, 300, 64),  # batch 1
    ((19,), 150, 203, 32),  # several 64-output column blocks, survivors in groups of 1-4
    ((1,), 40, 24, 10),  # one row with fewer outputs than a task's minimum of columns
]


@pytest.mark.parametrize("lead,n,outs,k", DENSE_SHAPES)
@pytest.mark.parametrize("residual", [False, True])
def test_dense_no_pruning_equals_full_layer(lead, n, outs, k, residual):
    rng = np.random.default_rng(0)
    arrays, full = dense_case(rng, lead, n, outs, k, residual)
    (y,) = run(ops.DENSE_RELU, arrays, {"k": k, "threshold": float("-inf")})
    np.testing.assert_allclose(y, act(full, np.inf), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lead,n,outs,k", DENSE_SHAPES)
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("clip_max", [None, 6.0])
def test_dense_threshold_prunes_exactly(lead, n, outs, k, residual, clip_max):
    rng = np.random.default_rng(1)
    arrays, full = dense_case(rng, lead, n, outs, k, residual)
    if clip_max is not None:  # scale so that the cap is actually reached
        arrays, full = scaled(arrays, 8), full * 8
    est = estimate(arrays["partial"], arrays["bias"], arrays["residual"], n, k)
    threshold = float(np.float32(np.quantile(est, 0.4)))
    attrs = {"k": k, "threshold": threshold}
    if clip_max is not None:
        attrs["clip_max"] = clip_max
    y, stats = run(ops.DENSE_RELU, arrays, attrs, stats=True)
    mask = pruned_mask(arrays["partial"], arrays["bias"], arrays["residual"], n, k, threshold)
    assert 0 < mask.sum() < mask.size
    check_result(y, arrays["partial"], full, mask, np.inf if clip_max is None else clip_max)
    if clip_max is not None:
        assert np.any(y == np.float32(clip_max))
    assert stats.dtype == np.int64 and stats.tolist() == [int(mask.sum()), mask.size]


def test_dense_residual_given_as_empty_name():
    rng = np.random.default_rng(2)
    arrays, full = dense_case(rng, (5,), 30, 12, 6)
    (y,) = run(ops.DENSE_RELU, arrays, {"k": 6, "threshold": float("-inf")}, empty_residual=True)
    np.testing.assert_allclose(y, act(full, np.inf), rtol=1e-4, atol=1e-5)


def test_dense_nan_never_prunes():
    rng = np.random.default_rng(3)
    arrays, _ = dense_case(rng, (3,), 20, 8, 5)
    arrays["partial"][1, 2] = np.nan
    y, stats = run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 1e30}, stats=True)
    assert np.isnan(y[1, 2])
    assert np.all(np.delete(y.ravel(), 1 * 8 + 2) == 0)
    assert stats.tolist() == [3 * 8 - 1, 3 * 8]


@pytest.mark.parametrize("lead", [(0,), (0, 4), (2, 0)])
def test_dense_empty_batch(lead):
    rng = np.random.default_rng(4)
    arrays, _ = dense_case(rng, lead, 20, 8, 5, residual=True)
    y, stats = run(ops.DENSE_RELU, arrays, {"k": 5, "threshold": 0.0}, stats=True)
    assert y.shape == (*lead, 8)
    assert stats.tolist() == [0, 0]


def test_dense_survivor_values_do_not_depend_on_which_others_survive():
    """Survivors are finished four at a time; an output's value must not depend on its
    group, so pruning others leaves it bit-identical to the unpruned run."""
    rng = np.random.default_rng(6)
    arrays, _ = dense_case(rng, (9,), 130, 150, 32, residual=True)
    (dense,) = run(ops.DENSE_RELU, arrays, {"k": 32, "threshold": float("-inf")})
    est = estimate(arrays["partial"], arrays["bias"], arrays["residual"], 130, 32)
    for q in (0.3, 0.7, 0.95):
        threshold = float(np.float32(np.quantile(est, q)))
        (y,) = run(ops.DENSE_RELU, arrays, {"k": 32, "threshold": threshold})
        kept = ~pruned_mask(arrays["partial"], arrays["bias"], arrays["residual"], 130, 32, threshold)
        assert 0 < kept.sum() < kept.size
        assert np.array_equal(y[kept], dense[kept])


@pytest.mark.parametrize("rows", [2, 5, 17, 40])
def test_dense_row_values_do_not_depend_on_the_batch(rows):
    """One row is finished output by output, several rows output-major (each surviving
    output's weights shared by its surviving rows); a row must come out bit-identical
    either way, whatever the batch and whichever rows survive with it."""
    rng = np.random.default_rng(7)
    arrays, _ = dense_case(rng, (rows,), 130, 150, 32, residual=True)
    est = estimate(arrays["partial"], arrays["bias"], arrays["residual"], 130, 32)
    attrs = {"k": 32, "threshold": float(np.float32(np.quantile(est, 0.6)))}
    (batched,) = run(ops.DENSE_RELU, arrays, attrs)
    for m in range(rows):
        alone = {name: None if a is None else a[m:m + 1] for name, a in arrays.items()
                 if name not in ("w_tail", "bias")}
        alone.update(w_tail=arrays["w_tail"], bias=arrays["bias"])
        (y,) = run(ops.DENSE_RELU, alone, attrs)
        assert np.array_equal(y[0], batched[m]), m


def test_dense_threads_give_identical_results():
    rng = np.random.default_rng(5)
    arrays, _ = dense_case(rng, (37,), 100, 70, 25, residual=True)
    attrs = {"k": 25, "threshold": 0.1, "clip_max": 6.0}
    y1, s1 = run(ops.DENSE_RELU, arrays, attrs, stats=True, threads=1)
    y2, s2 = run(ops.DENSE_RELU, arrays, attrs, stats=True, threads=2)
    assert np.array_equal(y1, y2) and np.array_equal(s1, s2)


def unordered(arrays, k, rng):
    """The same layer with x in a shuffled unit order, and its tail_units."""
    x, tail_units = shuffled_units(arrays["x"], k, rng)
    return {**arrays, "x": x}, tail_units


@pytest.mark.parametrize("lead,n,outs,k", DENSE_SHAPES)
@pytest.mark.parametrize("quantile", [None, 0.5])
def test_dense_tail_units_reads_the_tail_where_it_lies(lead, n, outs, k, quantile):
    """With tail_units the op gathers its tail itself: the same bits and counts as the
    op reading x already in its order."""
    rng = np.random.default_rng(23)
    arrays, _ = dense_case(rng, lead, n, outs, k, residual=True)
    est = estimate(arrays["partial"], arrays["bias"], arrays["residual"], n, k)
    threshold = float("-inf") if quantile is None else float(np.float32(np.quantile(est, quantile)))
    want, want_stats = run(ops.DENSE_RELU, arrays, {"k": k, "threshold": threshold}, stats=True)
    moved, tail_units = unordered(arrays, k, rng)
    for threads in (1, 2):
        got, stats = run(ops.DENSE_RELU, moved, {"k": k, "threshold": threshold, "tail_units": tail_units},
                         stats=True, threads=threads)
        assert np.array_equal(got, want) and np.array_equal(stats, want_stats)


@pytest.mark.parametrize("rule", ["statstest", "certified"])
def test_dense_tail_units_under_the_other_rules(rule):
    """StatsTest reads only partial_sq; Certified bounds the tail from the gathered inputs."""
    rng = np.random.default_rng(24)
    n, outs, k = 90, 40, 20
    arrays, _ = dense_case(rng, (6,), n, outs, k)
    arrays["x"] = np.abs(arrays["x"])  # a ReLU's output, so Certified can prune
    x64, w_tail = arrays["x"].astype(np.float64), arrays["w_tail"].astype(np.float64)
    if rule == "statstest":
        arrays["partial_sq"] = (0.05 * np.abs(rng.standard_normal(arrays["partial"].shape))).astype(np.float32)
        attrs = {"k": k, "threshold": 0.0, "rule": rule, "z_crit": -0.5}
    else:
        arrays["partial"] = (x64[:, :k] @ (rng.standard_normal((k, outs)) - 0.25)).astype(np.float32)
        positive = np.maximum(w_tail, 0)
        arrays["w_pos_sum"] = positive.sum(1).astype(np.float32)
        arrays["w_pos_norm"] = np.sqrt((positive ** 2).sum(1)).astype(np.float32)
        attrs = {"k": k, "threshold": 0.0, "rule": rule}
    want, want_stats = run(ops.DENSE_RELU, arrays, attrs, stats=True)
    assert 0 < want_stats[0] < want_stats[1]
    moved, tail_units = unordered(arrays, k, rng)
    got, stats = run(ops.DENSE_RELU, moved, {**attrs, "tail_units": tail_units}, stats=True)
    assert np.array_equal(got, want) and np.array_equal(stats, want_stats)


# ------------------------------------------------------------------ conv


def test_conv_reference_matches_onnxruntime_conv():
    """Guards the numpy reference itself: same numbers as onnxruntime's Conv."""
    import onnxruntime as ort

    rng = np.random.default_rng(6)
    for spatial, kernel, strides, pads, dilations, auto_pad in CONV_GEOMETRIES:
        arrays, full, attrs, _ = conv_case(rng, 2, 6, 4, spatial, kernel, 2, strides, pads, dilations, auto_pad)
        attrs.pop("k")
        w = np.concatenate([rng.standard_normal((4, 2, *kernel)).astype(np.float32), arrays["w_tail"]], axis=1)
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        graph = helper.make_graph(
            [node], "conv",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(arrays["x"].shape)),
             helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {"x": arrays["x"], "w": w})
        r = len(spatial)
        s, dl = list(strides or [1] * r), list(dilations or [1] * r)
        begins, ends, outs = onnx_pads(spatial, kernel, s, dl, list(pads or [0] * 2 * r), auto_pad or "NOTSET")
        np.testing.assert_allclose(got, conv_ref(arrays["x"], w, s, dl, begins, ends, outs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
@pytest.mark.parametrize("residual", [False, True])
def test_conv_no_pruning_equals_full_layer(geometry, residual):
    rng = np.random.default_rng(7)
    arrays, full, attrs, _ = conv_case(rng, 2, 12, 6, *geometry[:2], 4, *geometry[2:], residual=residual)
    (y,) = run(ops.CONV_RELU, arrays, {**attrs, "threshold": float("-inf")})
    np.testing.assert_allclose(y, act(full, np.inf), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("clip_max", [None, 6.0])
def test_conv_threshold_prunes_exactly(geometry, residual, clip_max):
    rng = np.random.default_rng(8)
    channels, k = 12, 4
    arrays, full, attrs, bias_b = conv_case(rng, 2, channels, 6, *geometry[:2], k, *geometry[2:], residual=residual)
    if clip_max is not None:  # scale so that the cap is actually reached
        arrays, full, bias_b = scaled(arrays, 8), full * 8, bias_b * np.float32(8)
    est = estimate(arrays["partial"], bias_b, arrays["residual"], channels, k)
    threshold = float(np.float32(np.quantile(est, 0.4)))
    attrs = {**attrs, "threshold": threshold}
    if clip_max is not None:
        attrs["clip_max"] = clip_max
    y, stats = run(ops.CONV_RELU, arrays, attrs, stats=True)
    mask = pruned_mask(arrays["partial"], bias_b, arrays["residual"], channels, k, threshold)
    assert 0 < mask.sum() < mask.size
    check_result(y, arrays["partial"], full, mask, np.inf if clip_max is None else clip_max)
    if clip_max is not None:
        assert np.any(y == np.float32(clip_max))
    assert stats.tolist() == [int(mask.sum()), mask.size]


def test_conv_clustered_survivors():
    """Survivors in patches, as on real feature maps: each channel keeps a different
    band of columns, so blocks of outputs are dense in some places, scattered in others
    and empty in the rest. Every kernel set must finish them exactly as the reference."""
    import os
    import subprocess
    import sys

    sets = ["default"] if os.environ.get("EXPRUNE_CONV_KERNELS") else ["default", "generic", "avx2"]
    for name in sets:
        env = {**os.environ}
        if name != "default":
            env["EXPRUNE_CONV_KERNELS"] = name
        done = subprocess.run([sys.executable, "-c", "import test_custom_op as t; t.clustered_case()"], env=env,
                              capture_output=True, text=True, cwd=str(Path(__file__).parent))
        assert done.returncode == 0, f"{name}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def clustered_case():
    rng = np.random.default_rng(12)
    channels, k, outs = 12, 4, 20
    arrays, full, attrs, bias_b = conv_case(rng, 2, channels, outs, (10, 70), (3, 3), k, pads=(1, 1, 1, 1))
    cols = np.arange(70)
    for o in range(outs):  # channel o survives in its own band of columns, here and there elsewhere
        band = (cols >= 3 * o) & (cols < 3 * o + 24)
        shift = np.where(band, 5.0, -5.0) + rng.normal(size=(2, 10, 70)) * (3.0 if o % 3 == 0 else 0.5)
        arrays["partial"][:, o] += shift.astype(np.float32)
        full[:, o] += shift.astype(np.float32).astype(np.float64)
    attrs = {**attrs, "threshold": 0.0}
    y, stats = run(ops.CONV_RELU, arrays, attrs, stats=True)
    mask = pruned_mask(arrays["partial"], bias_b, None, channels, k, 0.0)
    assert 0.3 < mask.mean() < 0.9
    check_result(y, arrays["partial"], full, mask, np.inf)
    assert stats.tolist() == [int(mask.sum()), mask.size]


@pytest.mark.parametrize("spatial,kernel", [((6, 6), (3, 3)), ((7,), (3,))])
def test_conv_empty_batch(spatial, kernel):
    rng = np.random.default_rng(9)
    r = len(spatial)
    arrays, _, attrs, _ = conv_case(rng, 0, 5, 3, spatial, kernel, 2, pads=[1] * (2 * r), residual=True)
    y, stats = run(ops.CONV_RELU, arrays, {**attrs, "threshold": 0.0}, stats=True)
    assert y.shape == (0, 3, *spatial)
    assert stats.tolist() == [0, 0]


def test_conv_threads_give_identical_results():
    rng = np.random.default_rng(10)
    arrays, _, attrs, _ = conv_case(rng, 1, 16, 8, (20, 20), (3, 3), 4, strides=(1, 2), pads=(1, 1, 1, 1),
                                    residual=True)
    attrs = {**attrs, "threshold": 0.0, "clip_max": 6.0}
    y1, s1 = run(ops.CONV_RELU, arrays, attrs, stats=True, threads=1)
    y2, s2 = run(ops.CONV_RELU, arrays, attrs, stats=True, threads=2)
    assert np.array_equal(y1, y2) and np.array_equal(s1, s2)


# ------------------------------------------------------------------ naming


def test_domain_header_matches_python():
    text = (ROOT / "custom_ops" / "src" / "domain.h").read_text()

    def value(name):
        m = re.search(rf"\b{name}\s*=\s*(\"[^\"]*\"|\d+)\s*;", text)
        assert m, f"{name} not found in domain.h"
        return m.group(1).strip('"')

    assert value("kDomain") == ops.DOMAIN
    assert int(value("kDomainVersion")) == ops.VERSION
    assert value("kDenseReluOp") == ops.DENSE_RELU
    assert value("kConvReluOp") == ops.CONV_RELU
    assert value("kArgmaxHeadOp") == ops.ARGMAX_HEAD
    assert value("kSparseMatMulOp") == ops.SPARSE_MATMUL
    assert value("kSparseConvOp") == ops.SPARSE_CONV
    assert set(ops.ALL_OPS) == {ops.DENSE_RELU, ops.CONV_RELU, ops.ARGMAX_HEAD, ops.SPARSE_MATMUL, ops.SPARSE_CONV}


def test_attribute_lists_match_what_the_ops_read():
    """ops.ATTRIBUTES (what `verify` lets through) against the ReadAttr calls of each op's source."""
    src = ROOT / "custom_ops" / "src"

    def read(*files):
        return {m for f in files for m in re.findall(r'ReadAttr\(info, "(\w+)"', (src / f).read_text())}

    prune, conv = read("kernel_util.cc"), read("conv_attrs.cc")
    want = {
        ops.DENSE_RELU: prune | read("dense_relu.cc"),
        ops.CONV_RELU: prune | conv | read("conv_relu.cc"),
        # The head reads clip_max with the other common attributes but has no activation to cap.
        ops.ARGMAX_HEAD: (prune - {"clip_max"}) | read("argmax_head.cc"),
        ops.SPARSE_MATMUL: read("sparse_matmul.cc"),
        ops.SPARSE_CONV: conv | read("sparse_conv.cc"),
    }
    assert want == ops.ATTRIBUTES
    every = read(*(f.name for f in src.iterdir() if f.suffix in (".cc", ".h")))
    assert every == set().union(*ops.ATTRIBUTES.values()), "an attribute read in a file this test does not map"


def test_model_checks_as_onnx():
    """The test models are themselves valid ONNX (custom domain aside)."""
    rng = np.random.default_rng(20)
    arrays, _ = dense_case(rng, (2,), 10, 4, 3)
    onnx.checker.check_model(single_op_model(ops.DENSE_RELU, arrays, {"k": 3, "threshold": 0.0}, name=NODE))


def test_library_lookup_falls_back_to_the_installed_package(monkeypatch, tmp_path):
    """Imported from a source checkout without a built library, the package uses the one
    `pip install .` installed; with neither, the error says how to get one."""
    from exprune_onnx import runtime

    monkeypatch.delenv(runtime.LIBRARY_ENV, raising=False)
    monkeypatch.setattr(runtime, "_library_name", lambda: "libexprune_ops_not_built_here.so")
    installed = tmp_path / "libexprune_ops.so"
    installed.write_bytes(b"")
    monkeypatch.setattr(runtime, "_installed_library", lambda: str(installed))
    assert runtime.get_library_path() == str(installed)
    monkeypatch.setattr(runtime, "_installed_library", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install"):
        runtime.get_library_path()
