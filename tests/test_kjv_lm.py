"""models/build_kjv_lm.py and its text handling (models/kjv_data.py), and the committed character-level
language model."""

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import exprune_onnx

MODELS = Path(__file__).resolve().parent.parent / "models"
FULL = MODELS / "kjv_lm.onnx"
STEP = MODELS / "kjv_lm_step.onnx"
FC1 = [f"/blocks.{i}/fc1/MatMul" for i in range(4)]


def _build_module():
    # The script imports only numpy at module level, so this works without torch.
    spec = importlib.util.spec_from_file_location("build_kjv_lm", MODELS / "build_kjv_lm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _build_module()
data = importlib.import_module("kjv_data")  # the build script puts models/ on the path


def test_vocab_is_64_distinct_characters():
    assert len(data.VOCAB) == 64 == len(set(data.VOCAB))
    assert data.VOCAB[0] == "\n"


def test_encode_maps_through_vocab_and_rejects_unknown_characters():
    ids = data.encode("In the beginning\n")
    assert "".join(data.VOCAB[i] for i in ids) == "In the beginning\n"
    with pytest.raises(SystemExit, match="outside VOCAB"):
        data.encode("verse 7")


def test_windows_label_the_next_character():
    ids = np.arange(100, dtype=np.int64) * 3
    tokens, labels = data.windows(ids, np.array([0, 10, 50]), 8)
    assert tokens.shape == labels.shape == (3, 8)
    np.testing.assert_array_equal(tokens[1], ids[10:18])
    np.testing.assert_array_equal(labels[1], ids[11:19])


def test_sizes_name_their_files_and_caches():
    small, wide = build.SIZES["small"], build.SIZES["wide"]
    assert (small.stem, wide.stem) == ("kjv_lm", "kjv_lm_wide")  # the committed files keep their names
    assert small.cache_shape == (4, build.CONTEXT, 32) and wide.cache_shape == (8, build.CONTEXT, 64)
    assert build.cache_names("past", wide) == ["past_key_0", "past_value_0", "past_key_1", "past_value_1"]


def _session(path: Path):
    return exprune_onnx.inference_session(onnx.load(str(path)))


@pytest.mark.skipif(not (FULL.is_file() and STEP.is_file()), reason="kjv_lm models not built")
def test_step_graph_reproduces_full_graph():
    t = build.CONTEXT
    tokens = np.random.default_rng(0).integers(0, len(data.VOCAB), (2, t), dtype=np.int64)
    full = _session(FULL).run(["logits"], {"tokens": tokens})[0]
    assert full.shape == (2, t, len(data.VOCAB))
    step = _session(STEP)
    small = build.SIZES["small"]
    # Non-zero junk in the caches: slots past 'position' must be ignored.
    caches = {n: np.full((2, *small.cache_shape), 7.0, np.float32) for n in build.cache_names("past", small)}
    for pos in range(t):
        out = step.run(None, {"token": tokens[:, pos:pos + 1], "position": np.full(2, pos, np.int64), **caches})
        np.testing.assert_allclose(out[0], full[:, pos], rtol=1e-4, atol=1e-4, err_msg=f"position {pos}")
        caches = dict(zip(build.cache_names("past", small), out[1:]))


@pytest.mark.skipif(not STEP.is_file(), reason="kjv_lm models not built")
def test_step_graph_candidates_are_the_ffn_fc1_layers():
    result = exprune_onnx.inspect_model(STEP)
    assert sorted(r.candidate.layer for r in result.rewritten) == FC1


@pytest.mark.skipif(not FULL.is_file(), reason="kjv_lm models not built")
def test_full_graph_rewrite_is_exact_at_minus_inf():
    result = exprune_onnx.optimize_model(FULL, threshold=float("-inf"))
    assert sorted(r.candidate.layer for r in result.rewritten) == FC1
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("ExPruneDenseRelu") == 4 and "Relu" not in ops
    tokens = np.random.default_rng(1).integers(0, len(data.VOCAB), (3, build.CONTEXT), dtype=np.int64)
    ref = _session(FULL).run(["logits"], {"tokens": tokens})[0]
    got = exprune_onnx.inference_session(result.model).run(["logits"], {"tokens": tokens})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
