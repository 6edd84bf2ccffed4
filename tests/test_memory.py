"""Peak memory of a model, measured in a child process (exprune_onnx/measure/memory.py)."""

import sys

import numpy as np
import pytest
from helpers import make_model, vi
from onnx import helper

from exprune_onnx.measure.memory import peak_rss_mb


def _identity(name: str):
    return make_model([helper.make_node("Relu", [name], ["y"])], [vi(name, ["N", 4])], [vi("y", ["N", 4])])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_the_figure_is_the_childs_own_not_the_parents():
    ballast = np.ones(400 * 2**20 // 8)  # 400 MiB held by this process while the child runs
    peak = peak_rss_mb(_identity("x"), {"x": np.ones((2, 4), np.float32)})
    assert ballast.sum() > 0
    assert 10 < peak < 300, peak  # a Python interpreter with numpy and onnxruntime


def test_an_input_may_be_called_file():
    peak = peak_rss_mb(_identity("file"), {"file": np.ones((2, 4), np.float32)})
    assert peak > 0
