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
from dataclasses import dataclass, field

import numpy as np
import onnx

from .. import ops
from ..compiler.pipeline import Result, optimize
from ..config import LayerSetting, Options
from ..errors import RuntimeCheckError, error_message, original_failed, original_unloadable
from ..io.data import Dataset
from .head_stats import HeadStats, float32_floor, head_statistics

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
    channel: np.ndarray | None = None  # output channel of each sampled element, in est order
    outputs: int = 0  # output channels of the layer
    _hull: tuple | None = field(default=None, repr=False)

    def threshold_for(self, max_loss: float) -> float:
        """The largest T whose pruned outputs lose at most ``max_loss`` of the layer's output mass."""
        if self.est.size == 0:
            return -math.inf
        budget = max_loss * self.total_y
        count = int(np.searchsorted(self.lost, budget, side="right"))  # prune the `count` lowest
        return _cut(self.est, count)

    def thresholds_for(self, max_loss: float) -> np.ndarray:
        """One threshold per output channel, losing at most ``max_loss`` of the mass in all.

        The budget goes first to the channels that prune the most per unit of mass
        lost (greedy over the lower convex hulls of each channel's loss curve, on a
        grid of GRID points per channel).
        """
        if self._hull is None:
            self._hull = self._channel_hulls()
        counts_by_channel, steps = self._hull
        thresholds = np.full(self.outputs, -math.inf)
        if steps[0].size == 0:
            return thresholds
        cost = np.cumsum(steps[1])
        take = int(np.searchsorted(cost, max_loss * self.total_y, side="right"))
        count = np.zeros(self.outputs, dtype=np.int64)
        np.maximum.at(count, steps[0][:take], steps[2][:take])
        for o, (est, _) in counts_by_channel.items():
            thresholds[o] = _cut(est, int(count[o]))
        return thresholds

    def _channel_hulls(self):
        y = np.diff(self.lost, prepend=0.0)
        per_channel, segments = {}, []
        for o in range(self.outputs):
            mine = self.channel == o
            if not mine.any():
                continue
            est, lost = self.est[mine], np.cumsum(y[mine])
            per_channel[o] = (est, lost)
            grid = np.unique(np.linspace(0, est.size, min(GRID, est.size) + 1).astype(np.int64))
            curve = np.concatenate([[0.0], lost])[grid]
            for a, b in _lower_hull(grid, curve):
                segments.append((o, curve[b] - curve[a], grid[b], (curve[b] - curve[a]) / (grid[b] - grid[a])))
        segments.sort(key=lambda seg: seg[3])
        steps = (np.array([s[0] for s in segments], dtype=np.int64), np.array([s[1] for s in segments]),
                 np.array([s[2] for s in segments], dtype=np.int64))
        return per_channel, steps

    def _pruned(self, threshold) -> np.ndarray:
        if np.ndim(threshold) == 0:
            return self.est < threshold
        return self.est < np.asarray(threshold, dtype=np.float64)[self.channel]

    def prune_rate(self, threshold) -> float:
        """Share of sampled outputs pruned by T, or by per-channel thresholds."""
        if np.ndim(threshold) == 0:
            return float(np.searchsorted(self.est, threshold, side="left")) / max(self.est.size, 1)
        return float(self._pruned(threshold).mean()) if self.est.size else 0.0

    def loss(self, threshold) -> float:
        if self.total_y <= 0:
            return 0.0
        if np.ndim(threshold) == 0:
            i = int(np.searchsorted(self.est, threshold, side="left"))
            return float(self.lost[i - 1]) / self.total_y if i > 0 else 0.0
        y = np.diff(self.lost, prepend=0.0)
        return float(y[self._pruned(threshold)].sum()) / self.total_y


# Points per channel on which the per-channel loss curves are allocated.
GRID = 256


def _cut(est: np.ndarray, count: int) -> float:
    """A threshold that prunes the ``count`` lowest of the sorted ``est``, or fewer when ties
    or the op's float32 threshold cannot separate them (never more)."""
    if count <= 0:
        return -math.inf
    if count >= est.size:
        return float(np.nextafter(np.float32(est[-1]), np.float32(np.inf)))
    lo, hi = float(est[count - 1]), float(est[count])
    return float32_floor(hi if hi > lo else lo)  # est < T prunes exactly the first `count` when they differ


def _lower_hull(x: np.ndarray, y: np.ndarray) -> list[tuple[int, int]]:
    """Segments (index pairs) of the lower convex hull of points sorted by x."""
    hull: list[int] = []
    for i in range(len(x)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (y[b] - y[a]) * (x[i] - x[a]) >= (y[i] - y[a]) * (x[b] - x[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return list(zip(hull[:-1], hull[1:]))


def exact_options(options: Options, rule: str = "threshold") -> Options:
    """``options`` with every layer's decision disabled (same k, same skips).

    With ``rule="statstest"`` the compiled model also computes each layer's
    ``partial_sq``, so the probe sees both rules' statistics.
    """
    out = copy.deepcopy(options)
    out.threshold = -math.inf
    out.emit_stats = False
    out.rule = rule
    out.alpha = 0.0
    out.layers = {name: LayerSetting(-math.inf, s.k, s.skip, rule) for name, s in options.layers.items()}
    return out


@dataclass
class Probe:
    partial: str
    partial_sq: str | None
    residual: str | None
    y: str
    bias: np.ndarray
    k_terms: int  # terms in the partial sum: k * taps
    n_terms: int  # terms in the full sum: n * taps
    channel_axis: int
    head: bool = False  # an arg-max head: y is the class index


def probe_model(compiled: onnx.ModelProto, only: set[str] | None = None) -> tuple[onnx.ModelProto, dict[str, Probe]]:
    """Expose the partial sums, residual and output of every outer-graph early-exit op (or of
    those named in ``only``: a model optimised before holds ops of its own, calibrated then)."""
    model = onnx.ModelProto()
    model.CopyFrom(compiled)
    inits = {t.name: t for t in model.graph.initializer}
    exposed = {o.name for o in model.graph.output}
    probes = {}
    for node in model.graph.node:
        if node.domain != ops.DOMAIN or node.op_type not in ops.PRUNE_OPS or only is not None and node.name not in only:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        w_tail = list(inits[node.input[2]].dims)
        k = int(attrs["k"])
        taps = int(np.prod(w_tail[2:])) if len(w_tail) > 2 else 1
        optional = list(node.input[4:6]) + [""] * 2
        residual, partial_sq = optional[0] or None, optional[1] or None
        bias = onnx.numpy_helper.to_array(inits[node.input[3]])
        axis = 1 if node.op_type == ops.CONV_RELU else -1
        probes[node.name] = Probe(node.input[0], partial_sq, residual, node.output[0], bias, k * taps,
                                  (k + w_tail[1]) * taps, axis, node.op_type == ops.ARGMAX_HEAD)
        for name in filter(None, (node.input[0], partial_sq, residual, node.output[0])):
            if name not in exposed:
                index = name == node.output[0] and node.op_type == ops.ARGMAX_HEAD
                kind = onnx.TensorProto.INT64 if index else onnx.TensorProto.FLOAT
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, kind, None))
                exposed.add(name)
    return model, probes


def statistics(probe: Probe, outs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each rule's decision statistic per output element, as the op computes it (float64)."""
    p = outs[probe.partial].astype(np.float64)
    base = _broadcast(probe.bias, p.shape, probe.channel_axis)
    if probe.residual is not None:
        base = base + outs[probe.residual]
    base = base.astype(np.float64)
    found = {"threshold": base + (probe.n_terms / probe.k_terms) * p}
    if probe.partial_sq is not None:
        mean = p / probe.k_terms
        m = mean + base / probe.n_terms
        v = outs[probe.partial_sq].astype(np.float64) / probe.k_terms - mean * mean
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(v > 0, m / np.sqrt(np.maximum(v, 1e-300) / probe.k_terms), np.sign(m) * np.inf)
        found["statstest"] = np.where((v <= 0) & (m == 0), 0.0, z)
    return found


def _run(session, names: list[str], feeds: dict, original: onnx.ModelProto, source: str) -> list:
    """The compiled model's outputs on ``feeds``; when it fails, the original is run on them
    to tell data that does not fit the model (out-of-range token ids) from a compiler fault."""
    from ..runtime import inference_session

    try:
        return session.run(names, feeds)
    except Exception as exc:
        try:
            inference_session(original).run(None, feeds)
        except Exception as again:
            raise original_failed(source, again) from again
        raise RuntimeCheckError(f"onnxruntime failed on the compiled model: {error_message(exc)}") from exc


def collect(model: onnx.ModelProto, options: Options, data: Dataset, indices: np.ndarray,
            batch: int = 64, seed: int = 0, rules: tuple[str, ...] = ("threshold",),
            progress=None) -> tuple[dict[str, dict[str, LayerStats]], Result]:
    """One pass over ``data[indices]``: layer -> rule -> stats, and the exact compiled result."""
    from ..measure.compare import tensor_outputs
    from ..measure.runs import as_array
    from ..runtime import inference_session

    result = optimize(model, exact_options(options, "statstest" if "statstest" in rules else "threshold"))
    if not result.changed:
        return {}, result
    layer_of = {r.op_node.name: r.candidate.layer for r in result.rewritten}
    probing, probes = probe_model(result.model, set(layer_of))
    try:
        session = inference_session(probing)
    except Exception as exc:
        try:  # the original's own ops (an unknown domain), or the rewrite's
            inference_session(model)
        except Exception as again:
            raise original_unloadable(again) from again
        raise RuntimeCheckError(f"onnxruntime cannot load the compiled model: {error_message(exc)}") from exc
    names = tensor_outputs(probing)
    rng = np.random.default_rng(seed)
    parts = {node: {"y": [], "channel": []} for node in probes}
    outputs = {}
    zeros = {node: [0, 0] for node in probes}
    rate: dict[str, float] = {}
    heads = {node: {"partial": [], "partial_sq": [], "winner": []} for node in probes if probes[node].head}
    seen = 0
    for feeds in data.batches(batch, indices):
        outs = dict(zip(names, map(as_array, _run(session, names, feeds, model, data.source))))
        run = next(iter(data.inputs))
        rows = min(feeds[run].shape[0], len(indices) - seen)  # a fixed batch pads the last run: drop the pad
        outs = {k: v[:rows] if v.ndim and v.shape[0] == feeds[run].shape[0] else v for k, v in outs.items()}
        seen += rows
        for node, probe in probes.items():
            if probe.head:
                h = heads[node]
                h["partial"].append(outs[probe.partial])
                h["winner"].append(outs[probe.y].reshape(-1))
                if probe.partial_sq is not None:
                    h["partial_sq"].append(outs[probe.partial_sq])
                continue
            y = outs[probe.y]
            if node not in rate:
                rate[node] = min(1.0, SAMPLE_PER_LAYER / max(1, (y.size // rows) * len(indices)))
            keep = rng.random(y.size) < rate[node]
            outputs[node] = y.shape[probe.channel_axis]
            flat = np.flatnonzero(keep)
            inner = int(np.prod(y.shape[probe.channel_axis:][1:]))  # elements per channel step
            parts[node]["channel"].append(((flat // inner) % outputs[node]).astype(np.int32))
            for rule, value in statistics(probe, outs).items():
                parts[node].setdefault(rule, []).append(value.reshape(-1)[keep])
            parts[node]["y"].append(y.reshape(-1)[keep].astype(np.float64))
            zeros[node][0] += int(np.count_nonzero(y == 0))
            zeros[node][1] += y.size
        if progress is not None:
            progress(rows)
    stats: dict[str, dict[str, LayerStats]] = {}
    for node, h in heads.items():
        probe = probes[node]
        partial = np.concatenate(h["partial"])
        sq = np.concatenate(h["partial_sq"]) if h["partial_sq"] else None
        top, found = head_statistics(partial, sq, probe.bias, probe.k_terms, probe.n_terms)
        winner = np.concatenate(h["winner"]).astype(np.int64)
        stats[layer_of[node]] = {rule: HeadStats(layer_of[node], node, value, top, winner)
                                 for rule, value in found.items()}
    for node in probes:
        if probes[node].head:
            continue
        layer = layer_of[node]
        y = np.concatenate(parts[node].pop("y"))
        channel = np.concatenate(parts[node].pop("channel"))
        share_zero = zeros[node][0] / max(zeros[node][1], 1)
        stats[layer] = {}
        for rule, chunks in parts[node].items():
            value = np.concatenate(chunks)
            order = np.argsort(value, kind="stable")
            lost = np.cumsum(y[order])
            stats[layer][rule] = LayerStats(layer, node, value[order], lost, float(lost[-1]) if lost.size else 0.0,
                                            share_zero, channel[order], outputs.get(node, 0))
    return stats, result


def _broadcast(bias: np.ndarray, shape: tuple, channel: int) -> np.ndarray:
    view = [1] * len(shape)
    view[channel] = bias.size
    return np.broadcast_to(bias.reshape(view), shape).astype(np.float32)
