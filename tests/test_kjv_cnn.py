"""models/build_kjv_cnn.py (its split and windows) and the committed 1-D text CNN, read
sparsely by ExPruneSparseConv."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import exprune_onnx
from exprune_onnx import ops

MODELS = Path(__file__).resolve().parent.parent / "models"
MODEL = MODELS / "kjv_cnn.onnx"
INNER = ["/body/body.3/Conv", "/body/body.7/Conv", "/body/body.10/Conv"]  # the convs that read ReLUs


def _build_module():
    # The script imports only numpy at module level, so this works without torch or the Bible.
    spec = importlib.util.spec_from_file_location("build_kjv_cnn", MODELS / "build_kjv_cnn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _build_module()


def _books():
    return [(f"B{i}", "In the beginning God created the heaven and the earth.\n" * (10 + i)) for i in range(66)]


def test_genres_cover_the_66_books_and_each_book_splits_at_its_85_percent():
    assert sum(count for _, count in build.GENRES) == 66
    train, test = build.split_text(_books())
    assert [g for _, g in train] == [g for _, g in test]
    assert [g for _, g in train][:5] == [0] * 5 and train[-1][1] == len(build.GENRES) - 1
    for (a, _), (b, _), (_, text) in zip(train, test, _books()):
        assert len(a) == int(len(text) * build.TRAIN_SHARE) and len(a) + len(b) == len(text)
    with pytest.raises(SystemExit, match="GENRES covers 66 books"):
        build.split_text(_books()[:-1])


def test_windows_come_from_one_part_and_carry_its_genre():
    parts = [(np.arange(500, dtype=np.int64), 3), (np.arange(1000, 1100, dtype=np.int64), 5),
             (np.arange(2000, 2400, dtype=np.int64), 1)]
    tokens, labels = build.random_windows(parts, 50, np.random.default_rng(0))
    assert tokens.shape == (50, build.LENGTH)
    assert 5 not in labels  # a part shorter than a window gives none
    for row, label in zip(tokens, labels):
        np.testing.assert_array_equal(np.diff(row), 1)  # one contiguous stretch of one part
        assert (row[0] < 1000) == (label == 3)
    tokens, labels = build.consecutive_windows(parts)
    assert labels.tolist() == [3, 3, 1, 1] and tokens[1, 0] == build.LENGTH  # non-overlapping


@pytest.mark.skipif(not MODEL.is_file(), reason="kjv_cnn.onnx not built")
def test_its_inner_convs_are_read_sparsely_and_exactly():
    model = onnx.load(str(MODEL))
    result = exprune_onnx.optimize_model(model, threshold=float("-inf"), sparse_relu="on", min_units=10**6)
    assert sorted(s.layer for s in result.sparse) == sorted(INNER)
    types = [n.op_type for n in result.model.graph.node]
    assert types.count(ops.SPARSE_CONV) == 3 and types.count("Conv") == 1  # the first reads the embedding
    tokens = np.random.default_rng(2).integers(1, 64, (3, build.LENGTH), dtype=np.int64)
    ref = exprune_onnx.inference_session(model).run(["logits"], {"tokens": tokens})[0]
    got = exprune_onnx.inference_session(result.model).run(["logits"], {"tokens": tokens})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args", [["--steps", "0"], ["--batch-size", "-1"], ["--lr", "0"]])
def test_the_script_refuses_a_training_length_or_rate_of_zero(args, capsys):
    with pytest.raises(SystemExit) as info:
        build.main(args)
    assert info.value.code == 2 and "must be positive" in capsys.readouterr().err
