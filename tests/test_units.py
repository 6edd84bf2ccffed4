"""report/units.py: FLOPs in the unit that suits them."""

from __future__ import annotations

import pytest

from exprune_onnx.report.units import flops_text, flops_unit


@pytest.mark.parametrize("value, shown", [
    (51.05e6, "51.05 MFLOPs"), (35.216e9, "35.22 GFLOPs"), (4160, "4.16 kFLOPs"), (416, "416 FLOPs"), (0, "0 FLOPs"),
    (-2.5e6, "-2.50 MFLOPs"),
])
def test_the_largest_unit_that_leaves_at_least_one(value, shown):
    assert flops_text(value) == shown


def test_figures_side_by_side_share_the_first_s_unit():
    assert flops_text(900e6, like=1.2e9) == "0.90 GFLOPs"
    assert flops_text(None, like=1.2e9) == "? GFLOPs"


def test_a_column_stops_at_megaflops():
    assert flops_unit(3.7e9, largest=1e6) == (1e6, "MFLOPs")
    assert flops_unit(20e3, largest=1e6) == (1e3, "kFLOPs")
