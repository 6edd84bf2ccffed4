"""tuning/prescreen.py: early-exit layers left out before anything is timed."""

import math

import numpy as np
from helpers import node_types, three_layer_mlp
from onnx import helper
from sparse_conv_models import build, conv, init, stem, weight

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


def shortcut_block(n=32):
    """r0 -> c1 -> Relu -> c2, and r0 -> 1x1 'down'; c2 + down -> Relu: a ResNet block whose
    shortcut is a conv, so that two layers end in one activation."""
    rng = np.random.default_rng(0)
    nodes, inits = stem(rng, n)
    inits += [init("W1", weight(rng, n, n)), init("W2", weight(rng, n, n)), init("Wd", weight(rng, n, n, 1))]
    nodes += [conv("c1", "r0", "W1", "a1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a1"], ["r1"], name="act1"),
              conv("c2", "r1", "W2", "a2", pads=[1, 1, 1, 1]), conv("down", "r0", "Wd", "d"),
              helper.make_node("Add", ["a2", "d"], ["s"], name="join"), helper.make_node("Relu", ["s"], ["y"], name="act2")]
    return build(nodes, inits)


def test_a_layer_freed_by_one_left_out_is_left_out_too():
    """c2 takes the shared Add -> Relu and 'down' is refused; c2 left out, 'down' takes it,
    and prunes nothing either (a trial's ResNet-18 kept three such, 1.04x slower)."""
    model = shortcut_block()
    lossless = Options(threshold=-math.inf, sparse_relu="off")
    result = exprune_onnx.optimize_model(model, lossless)
    assert {r.layer: r.reason for r in result.rejected}["down"].startswith("shares its activation with layer 'c2'")
    out = without_idle(model, lossless, result)
    assert node_types(out.model) == node_types(model) and not out.rewritten
    assert {r.layer: r.reason for r in out.rejected if r.layer != "c0"} == {"c1": IDLE, "c2": IDLE, "down": IDLE}
    assert without_idle(model, lossless, out) is out
    assert node_types(exprune_onnx.optimize_model(model, sparse_relu="off").model) == node_types(model)
    pruning = Options(threshold=0.0, sparse_relu="off")
    kept = exprune_onnx.optimize_model(model, pruning)
    assert node_types(kept.model).count("ExPruneConvRelu") == 2 and without_idle(model, pruning, kept) is kept
