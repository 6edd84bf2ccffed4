"""models/build_fashion_vgg.py: the pruning schedule and masks, and the committed VGG models."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import exprune_onnx

MODELS = Path(__file__).resolve().parent.parent / "models"
DENSE = MODELS / "fashion_vgg.onnx"
PRUNED = MODELS / "fashion_vgg_pruned.onnx"


def _build_module():
    # The script imports only numpy at module level, so this works without torch.
    sys.path.insert(0, str(MODELS))
    try:
        spec = importlib.util.spec_from_file_location("build_fashion_vgg", MODELS / "build_fashion_vgg.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(MODELS))
    return module


build = _build_module()


def test_schedule_follows_zhu_gupta():
    final, n, dt = 0.9, 10, 5
    values = [build.target_sparsity(t, final, n, dt) for t in range(0, n * dt + 1)]
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(final)
    # Half-way the cubic has removed 7/8 of the gap: s_f * (1 - 0.5**3).
    assert build.target_sparsity(n * dt // 2, final, n, dt) == pytest.approx(final * 0.875)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert build.target_sparsity(10 * n * dt, final, n, dt) == pytest.approx(final)
    assert build.target_sparsity(0, final, 0, dt) == final


def test_magnitude_mask_prunes_smallest_and_only_grows():
    torch = pytest.importorskip("torch")
    w = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32))
    mask = build.magnitude_mask(w, 0.5)
    assert mask.shape == w.shape and int((~mask).sum()) == w.numel() // 2
    assert w.abs()[~mask].max() <= w.abs()[mask].min()
    pruned = w.masked_fill(~mask, 0.0)
    tighter = build.magnitude_mask(pruned, 0.9)
    assert int((~tighter).sum()) == round(0.9 * w.numel())
    assert not bool((mask == 0)[tighter].any()), "a pruned weight came back"


def _weights(path: Path) -> list[tuple[str, np.ndarray]]:
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [(n.name, inits[n.input[1]]) for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


@pytest.mark.skipif(not (DENSE.is_file() and PRUNED.is_file()), reason="VGG models not built")
def test_committed_pruned_model_is_sparse_and_dense_one_is_not():
    dense, pruned = _weights(DENSE), _weights(PRUNED)
    assert [n for n, _ in dense] == [n for n, _ in pruned]
    assert len(pruned) == 6
    first, rest = pruned[0], pruned[1:]
    assert np.count_nonzero(first[1]) == first[1].size, "conv1 is meant to stay dense"
    for name, w in rest:
        assert np.count_nonzero(w == 0) >= 0.9 * w.size - 0.5, name
    for name, w in dense:
        assert np.count_nonzero(w == 0) < 0.01 * w.size, name


@pytest.mark.skipif(not PRUNED.is_file(), reason="VGG models not built")
def test_pruned_model_rewrite_is_exact_at_minus_inf():
    result = exprune_onnx.optimize_model(PRUNED, threshold=float("-inf"))
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("ExPruneConvRelu") == 3 and ops.count("ExPruneDenseRelu") == 1
    x = np.random.default_rng(1).random((16, 1, 28, 28), dtype=np.float32)
    ref = exprune_onnx.inference_session(onnx.load(str(PRUNED))).run(["logits"], {"input": x})[0]
    got = exprune_onnx.inference_session(result.model).run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
