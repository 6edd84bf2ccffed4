"""Early-exit layers left out before anything is timed, where the objective could never
keep them: under ``--objective flops`` in the lossless mode, and in ``optimize_model``
with no threshold, an early exit at -inf prunes nothing and only adds its partial product
and its decision.

(A screen of each layer alone at its best, pruning every output, was tried for the
latency objective under calibration, to spare the search where no threshold could pay:
the layers a sparse-input consumer reads, every early exit of a CNN whose convs follow
each other, cannot be timed alone, as their gain is in the consumer; see screen.py.)
"""

from __future__ import annotations

import dataclasses

import onnx

from ..config import Options

IDLE = ("prunes nothing at threshold -inf, so it is left out where nothing asks to prune (--threshold or "
        "--calibration makes it prune)")


def skipping(options: Options, reasons: dict[str, str]) -> Options:
    """``options`` with the layers of ``reasons`` skipped, each for its reason."""
    layers = dict(options.layers)
    for layer, reason in reasons.items():
        layers[layer] = dataclasses.replace(options.setting(layer), skip=True, skip_reason=reason)
    return dataclasses.replace(options, layers=layers)


def without_idle(model: onnx.ModelProto, options: Options, result, rules=None):
    """``result`` without its early-exit layers that can prune nothing (the threshold rule at
    -inf; a trial's SqueezeNet ran 1.48x slower with them), compiled again if it had any.
    (--threshold=-inf typed keeps them: the workflow calls this only when nothing asked.)
    ``rules``: the rule set ``result`` was compiled with, if not the built-in one.

    Compiled again until none is left: a layer left out can free another to take its place
    (a ResNet block's shortcut conv skipped, the main conv beside it takes the shared Add ->
    Relu it had been refused; a trial's ResNet-18 kept three such at 1.04x the original's
    time)."""
    from ..compiler.pipeline import optimize as compile_model
    from ..report.advice import pruning_nothing

    left_out: dict[str, str] = {}
    while True:
        idle = [layer for layer in pruning_nothing(result) if layer not in left_out]
        if not idle:
            return result
        left_out.update(dict.fromkeys(idle, IDLE))
        skipped = skipping(options, left_out)
        result = compile_model(model, skipped) if rules is None else compile_model(model, skipped, rules)
