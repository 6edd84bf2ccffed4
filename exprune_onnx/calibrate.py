"""Per-layer statistics in one pass of the model, and thresholds read off them.

The model is compiled with every decision disabled (threshold -inf: exact) and run
with each early-exit op's partial sum, residual and output exposed. For a sample of
output elements per layer we keep the Threshold rule's estimate
``est = bias + residual + (n/k) * partial`` and the true output ``y``. For any
threshold T that says what the layer would prune (``est < T``) and what it would lose
(the ``y`` of pruned elements that were not 0), so thresholds for any error level
come from sorting, not from re-running the model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import onnx

from . import ops
from .config import LayerSetting, Options
from .data import Dataset
from .pipeline import optimize

# Elements kept per layer: enough to place thresholds at the 1e-5 loss level.
SAMPLE_PER_LAYER = 400_000


@dataclass
class LayerStats:
    layer: str
    node: str  # early-exit node name in the compiled model
    est: np.ndarray  # sorted ascending
    lost: np.ndarray  # cumulative y in est order: lost[i] = sum of y over the i+1 lowest estimates
    total_y: float
    zeros: float  # share of sampled outputs that are exactly 0 (the most any rule can prune losslessly)

    def threshold_for(self, max_loss: float) -> float:
        """The largest T whose pruned outputs lose at most ``max_loss`` of the layer's output mass."""
        if self.est.size == 0:
            return -math.inf
        budget = max_loss * self.total_y
        count = int(np.searchsorted(self.lost, budget, side="right"))  # prune the `count` lowest
        if count == 0:
            return -math.inf
        if count >= self.est.size:
            return math.nextafter(float(self.est[-1]), math.inf)
        lo, hi = float(self.est[count - 1]), float(self.est[count])
        return hi if hi > lo else lo  # est < T prunes exactly the first `count` when they differ

    def prune_rate(self, threshold: float) -> float:
        return float(np.searchsorted(self.est, threshold, side="left")) / max(self.est.size, 1)

    def loss(self, threshold: float) -> float:
        i = int(np.searchsorted(self.est, threshold, side="left"))
        return float(self.lost[i - 1]) / self.total_y if i > 0 and self.total_y > 0 else 0.0


def exact_options(options: Options) -> Options:
    """``options`` with every layer's decision disabled (same k, same skips)."""
    out = copy.deepcopy(options)
    out.threshold = -math.inf
    out.emit_stats = False
    out.layers = {name: LayerSetting(-math.inf, s.k, s.skip) for name, s in options.layers.items()}
    return out


@dataclass
class Probe:
    partial: str
    residual: str | None
    y: str
    bias: np.ndarray
    ratio: float  # n / k
    channel_axis: int


def probe_model(compiled: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Probe]]:
    """Expose partial, residual and output of every outer-graph early-exit op."""
    model = onnx.ModelProto()
    model.CopyFrom(compiled)
    inits = {t.name: t for t in model.graph.initializer}
    exposed = {o.name for o in model.graph.output}
    probes = {}
    for node in model.graph.node:
        if node.domain != ops.DOMAIN:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        w_tail = inits[node.input[2]]
        k = int(attrs["k"])
        tail_units = int(w_tail.dims[1])
        residual = node.input[4] if len(node.input) > 4 and node.input[4] else None
        bias = onnx.numpy_helper.to_array(inits[node.input[3]])
        axis = 1 if node.op_type == ops.CONV_RELU else -1
        probes[node.name] = Probe(node.input[0], residual, node.output[0], bias, (k + tail_units) / k, axis)
        for name in filter(None, (node.input[0], residual, node.output[0])):
            if name not in exposed:
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                exposed.add(name)
    return model, probes


def collect(model: onnx.ModelProto, options: Options, data: Dataset, indices: np.ndarray,
            batch: int = 64, seed: int = 0, progress=None) -> tuple[dict[str, LayerStats], onnx.ModelProto]:
    """One pass over ``data[indices]``; returns per-layer stats and the exact compiled model."""
    from .runtime import inference_session

    result = optimize(model, exact_options(options))
    if not result.changed:
        return {}, result.model
    probing, probes = probe_model(result.model)
    layer_of = {r.op_node.name: r.candidate.layer for r in result.rewritten}
    session = inference_session(probing)
    names = [o.name for o in probing.graph.output]
    where = {n: i for i, n in enumerate(names)}
    rng = np.random.default_rng(seed)
    est_parts = {node: [] for node in probes}
    y_parts = {node: [] for node in probes}
    zeros = {node: [0, 0] for node in probes}
    rate: dict[str, float] = {}
    for feeds in data.batches(batch, indices):
        outs = session.run(names, feeds)
        rows = next(iter(feeds.values())).shape[0]
        for node, probe in probes.items():
            p = outs[where[probe.partial]]
            y = outs[where[probe.y]]
            base = _broadcast(probe.bias, p.shape, probe.channel_axis)
            if probe.residual is not None:
                base = base + outs[where[probe.residual]]
            if node not in rate:
                rate[node] = min(1.0, SAMPLE_PER_LAYER / max(1, (y.size // rows) * len(indices)))
            keep = rng.random(y.size) < rate[node]
            est = base.astype(np.float64).reshape(-1)[keep] + probe.ratio * p.astype(np.float64).reshape(-1)[keep]
            est_parts[node].append(est)
            y_parts[node].append(y.reshape(-1)[keep].astype(np.float64))
            zeros[node][0] += int(np.count_nonzero(y == 0))
            zeros[node][1] += y.size
        if progress is not None:
            progress(rows)
    stats = {}
    for node in probes:
        est = np.concatenate(est_parts[node])
        y = np.concatenate(y_parts[node])
        order = np.argsort(est, kind="stable")
        lost = np.cumsum(y[order])
        stats[layer_of[node]] = LayerStats(layer_of[node], node, est[order], lost, float(lost[-1]) if lost.size else 0.0,
                                           zeros[node][0] / max(zeros[node][1], 1))
    return stats, result.model


def _broadcast(bias: np.ndarray, shape: tuple, channel: int) -> np.ndarray:
    view = [1] * len(shape)
    view[channel] = bias.size
    return np.broadcast_to(bias.reshape(view), shape).astype(np.float32)
