"""tuning/prescreen.py: early-exit layers left out before anything is timed."""

import math

from helpers import node_types, three_layer_mlp

import exprune_onnx
from exprune_onnx.config import Options
from exprune_onnx.tuning.prescreen import IDLE, skipping, without_idle


def test_idle_early_exits_are_left_out_and_pruning_ones_kept():
    model = three_layer_mlp()
    lossless = Options(threshold=-math.inf, sparse_relu="off")  # typed: optimize_model keeps them
    result = exprune_onnx.optimize_model(model, lossless)
    assert node_types(result.model).count("ExPruneDenseRelu") == 2
    out = without_idle(model, lossless, result)
    assert not out.rewritten and node_types(out.model) == node_types(model)
    assert {r.layer: (r.reason, r.skipped) for r in out.rejected if r.layer in ("h1", "h2")} == {
        "h1": (IDLE, True), "h2": (IDLE, True)}
    assert without_idle(model, lossless, out) is out  # a second pass finds nothing more to do
    pruning = Options(threshold=0.0, sparse_relu="off")
    kept = exprune_onnx.optimize_model(model, pruning)
    assert without_idle(model, pruning, kept) is kept


def test_skipping_keeps_each_layer_s_other_settings():
    options = Options(threshold=-1.0, k=16)
    out = skipping(options, {"h1": "why"})
    assert out.layers["h1"].skip and out.layers["h1"].skip_reason == "why" and out.layers["h1"].k == 16
    assert out.layers["h1"].threshold == -1.0 and "h1" not in options.layers  # the options given are not changed
    assert not math.isinf(out.setting("h2").threshold) and not out.setting("h2").skip
