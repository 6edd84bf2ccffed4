"""bench/sparse_conv_accuracy.py: the errors it prints are the op's and Conv's against float64."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import sparse_conv_accuracy  # noqa: E402


def test_both_errors_are_float32_rounding():
    row = sparse_conv_accuracy.errors(40, 24, 9, 0.5)
    assert row["layer"] == "40->24 @9x9" and row["zeros"] == 0.5
    for name in ("op", "conv"):
        assert 0 < row[f"{name}_rms"] <= row[f"{name}_max"] < 2.0**-20


def test_an_output_off_by_a_part_in_a_thousand_shows():
    import numpy as np

    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((1, 4, 5, 5))).astype(np.float32)
    weight = np.abs(rng.standard_normal((3, 4, 3, 3))).astype(np.float32)  # all terms >= 0: y = sum |x * w|
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), (2, 3))
    y = np.einsum("nchwij,mcij->nmhw", cols.astype(np.float64), weight.astype(np.float64))
    assert sparse_conv_accuracy.relative_errors(y, x, weight).max() < 1e-15
    assert np.allclose(sparse_conv_accuracy.relative_errors(y * 1.001, x, weight), 1e-3)
