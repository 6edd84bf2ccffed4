"""FLOPs an optimised model actually executed, from the early-exit ops' own counters.

Per early-exit op: every output element costs the partial product and one decision;
a kept element also costs its tail. So relative to the dense layer the op saves

    pruned * 2 * tail_units * taps  -  total * DECISION_FLOPS

where ``tail_units * taps`` is the size of one output's tail weights (``w_tail`` row).
Only the outer graph's ops report counts.
"""

from __future__ import annotations

import numpy as np
import onnx

from . import ops
from .accounting import DECISION_FLOPS


def tail_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Early-exit node name -> multiply-accumulates in one output's tail."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    sizes = {}
    for node in model.graph.node:
        if node.domain == ops.DOMAIN and node.input[2] in shapes:
            sizes[node.name] = int(np.prod(shapes[node.input[2]][1:]))
    return sizes


def flops_saved(model: onnx.ModelProto, counts: dict[str, tuple[int, int]]) -> float:
    """Total FLOPs saved over a run, given node -> (pruned, total) counters."""
    sizes = tail_sizes(model)
    saved = 0.0
    for name, (pruned, total) in counts.items():
        saved += pruned * 2 * sizes[name] - total * DECISION_FLOPS
    return saved
