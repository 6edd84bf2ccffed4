"""bench/sparse_conv_groups.py: the op and onnxruntime's grouped Conv compute the same layer
at every group count the bench times, and each row says which it measured."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import sparse_conv_groups  # noqa: E402


def test_every_group_count_is_timed_on_the_same_layer():
    rows = sparse_conv_groups.run(16, 6, threads=1, runs=2)
    assert [(r["group"], r["outputs_per_group"], r["zeros"]) for r in rows] == [
        (g, 16 // g, z) for g in (16, 8, 4, 2, 1) for z in sparse_conv_groups.ZEROS]
    assert all(r["max_rel_error"] < 1e-5 and r["ratio"] > 0 for r in rows)


@pytest.mark.parametrize("zeros", [0.5, 0.9])
def test_the_inputs_hold_the_zeros_asked_for(zeros):
    x = sparse_conv_groups.sparse_input(64, 16, zeros)
    assert x.min() >= 0 and abs((x == 0).mean() - zeros) < 0.02
