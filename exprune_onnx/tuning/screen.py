"""Cheap verdicts the latency objective reaches before timing a whole model.

Timing a rewrite in the whole model is the objective's rule (objective.py), but a real
CNN has dozens of layers and one whole-model pair costs seconds to minutes there
(ResNet-50: 48 layers, ~0.1 s a run). Three shortcuts keep the number of whole-model
timings down:

* an early-exit layer whose rule can prune nothing (the threshold rule at T = -inf,
  the lossless setting) only adds work: it is dropped untimed (``prunes_nothing``);
* an early-exit layer is first timed alone, when timing every layer in the whole model
  would take long (``screen_early_exit``): its rewritten form against its dense form
  from the original, on the inputs it sees in the original. A rewrite that is slower
  alone does not become faster in the model: the model adds what the rewrite costs
  around it (layout conversions, lost fusions), never a gain. A layer whose output a
  sparse-input consumer reads is not screened: its gain shows in the consumer, which
  the layer alone does not contain;
* the early-exit layers still to be timed in the model one by one, when there are
  ``GROUP_FIRST`` or more of them after that screen, are first timed together
  (``slower_together``): the model with all of them against the model with none. If it
  is clearly slower (objective.clearly_slower: over 5%), all are dropped with that
  timing. A layer that would pay alone could be among them, its gain hidden by the
  others' costs; but on the light-zoo DenseNet-121 the 58 layers timed one by one were
  each slower or within noise, at ten minutes of the command's eleven (see
  docs/latency.md);
* a sparse-input convolution (passes/sparse_conv.py) is first timed alone, on the very
  input it reads in the model, against the Conv (+ activation) it replaces
  (``screen_sparse_convs``). One that is not faster alone saves nothing elsewhere, so
  it is dropped without a whole-model timing.

Layers that pass a screen still go on to the whole-model timing, which decides, unless
their gain alone is under the objective's margin of the model's time (small_gains.py):
in the model it is at most that.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import ops
from ..compiler.pipeline import Result
from ..config import Options
from ..measure.shape_probe import tensor_values
from ..passes.sparse_conv import unpack
from ..passes.zeros import zero_writers

# Alone, a sparse conv must beat the dense one by this much to be worth a whole-model timing.
ALONE_MARGIN = 0.0
# Timing feeds the layer inputs are captured on: enough for a median of a small model.
SCREEN_FEEDS = 2
# This many early-exit layers left for whole-model timings, or more, are first timed together.
GROUP_FIRST = 4


@dataclass(frozen=True)
class SparseConsumer:
    """What the objective reads of a consumer the compiler made read its input sparsely
    (passes/sparse_input.py's SparseRewrite), without the compiler's graph around it."""
    layer: str
    op: str  # the op it became
    node: str  # that node's name
    x: str  # the tensor it reads sparsely
    weight_size: int
    after_relu: bool

    @classmethod
    def of(cls, s) -> SparseConsumer:
        node = s.op_node
        return cls(s.layer, node.op, node.name, node.inputs[0].name, int(np.prod(node.inputs[1].shape)), s.after_relu)


def prunes_nothing(options: Options, layer: str) -> bool:
    """Whether the layer's early-exit op can never skip anything (threshold -inf)."""
    s = options.setting(layer)
    if s.rule != "threshold":
        return False
    values = s.thresholds if s.thresholds is not None else (s.threshold,)
    return all(v == -math.inf for v in values)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _single(nodes, x_name, x_shape, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "alone", [helper.make_tensor_value_info(x_name, onnx.TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None] * len(x_shape))],
                              inits)
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                 helper.make_opsetid(ops.DOMAIN, ops.VERSION)])


def alone_pair(model: onnx.ModelProto, node_name: str, x_shape) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The sparse conv ``node_name`` of ``model`` alone, and the dense Conv (+ activation)
    it stands for; both without the residual (an Add either way)."""
    node = next(n for n in model.graph.node if n.name == node_name)
    inits = {t.name: t for t in model.graph.initializer}
    a = _attrs(node)
    w = numpy_helper.to_array(inits[node.input[1]])
    bias = [inits[node.input[2]]] if len(node.input) > 2 and node.input[2] else []
    x = node.input[0]
    sparse = helper.make_node(ops.SPARSE_CONV, [x, node.input[1]] + [b.name for b in bias], ["y"], name=node.name,
                              domain=ops.DOMAIN, **a)
    conv_attrs = {k: v for k, v in a.items() if k not in ("activation", "clip_max")}
    big = numpy_helper.from_array(unpack(w, int(a.get("group", 1))), "W_dense")
    act = a.get("activation", b"none")
    dense = [helper.make_node("Conv", [x, "W_dense"] + [b.name for b in bias], ["c" if act != b"none" else "y"],
                              **conv_attrs)]
    extra = []
    if act != b"none":
        cap = float(a.get("clip_max", math.inf))
        if math.isinf(cap):
            dense.append(helper.make_node("Relu", ["c"], ["y"]))
        else:
            extra = [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                     numpy_helper.from_array(np.array(cap, np.float32), "hi")]
            dense.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    return (_single([sparse], x, x_shape, [inits[node.input[1]], *bias]),
            _single(dense, x, x_shape, [big, *bias, *extra]))


def subgraph(model: onnx.ModelProto, inputs: list[str], output: str) -> onnx.ModelProto | None:
    """The nodes of ``model``'s main graph between ``inputs`` and ``output`` as a model,
    or None when ``output`` also depends on something else computed (it would pull in
    the graph above)."""
    producer = {name: node for node in model.graph.node for name in node.output}
    constants = {t.name for t in model.graph.initializer}
    picked, stack, seen = [], [output], set(inputs)
    while stack:
        name = stack.pop()
        if name in seen or name in constants or not name:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None:  # a graph input the layer reads besides its own
            return None
        if node.op_type in ("Loop", "If", "Scan"):
            return None
        picked.append(node)
        stack.extend(node.input)
    order = {id(node): i for i, node in enumerate(model.graph.node)}
    nodes = sorted({id(n): n for n in picked}.values(), key=lambda n: order[id(n)])
    used = {name for node in nodes for name in node.input}
    graph = onnx.helper.make_graph(
        nodes, "layer", [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in inputs],
        [onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)],
        [t for t in model.graph.initializer if t.name in used])
    out = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    out.ir_version = max(model.ir_version, 4)  # initializers need not be graph inputs
    return out


def screenable(result: Result) -> list:
    """The rewritten layers of ``result`` that can be judged alone (module docstring)."""
    read = set()
    for s in result.sparse:  # the tensors whose zeros a sparse op reads, through a pool or a Flatten too
        if s.op_node.inputs:
            writers = zero_writers(s.op_node.inputs[0])
            read |= {s.op_node.inputs[0].name} | {w.outputs[0].name for w in writers if w is not None}
    return [rw for rw in result.rewritten if rw.candidate.output.name not in read]


def screen_early_exit(original: onnx.ModelProto, result: Result, feeds: list[dict], threads: int,
                      log, layers: set[str] | None = None) -> dict[str, tuple[float, float]]:
    """Layer -> (ms rewritten, ms dense), each layer timed alone; layers that cannot be
    cut out alone are left out (the objective times them in the whole model)."""
    from . import objective  # its timing functions, looked up when called

    pairs = []
    for rw in screenable(result):
        c = rw.candidate
        if layers is not None and c.layer not in layers:
            continue
        ins = [c.x.name] + ([c.residual.name] if c.residual is not None else [])
        fast, dense = subgraph(result.model, ins, c.output.name), subgraph(original, ins, c.output.name)
        if fast is not None and dense is not None:
            pairs.append((c.layer, ins, fast, dense))
    if not pairs:
        return {}
    names = sorted({n for _l, ins, _f, _d in pairs for n in ins})
    captured = tensor_values(original, names, feeds[:SCREEN_FEEDS])
    found = {}
    for i, (layer, ins, fast, dense) in enumerate(pairs):
        log(f"screening layers alone: {layer}", i, len(pairs))
        layer_feeds = [{n: values[n] for n in ins} for values in captured]
        try:
            sess = objective.timing_session(dense, threads)
            sess.run(None, layer_feeds[0])
            t0 = time.perf_counter()
            sess.run(None, layer_feeds[0])
            passes = objective.passes_for((time.perf_counter() - t0) * len(layer_feeds) / objective.FEEDS)
            found[layer] = objective.time_pair(fast, dense, layer_feeds, threads, passes,
                                               give_up=objective.clearly_slower)
        except Exception:  # noqa: BLE001 - a layer that does not run alone is timed in the model
            continue
    return found


def screen_sparse_convs(model: onnx.ModelProto, sparse: list[SparseConsumer], feeds: list[dict], threads: int,
                        passes: int, time_pair) -> dict[str, tuple[float, float]]:
    """Layer -> (ms alone sparse, ms alone dense) for each sparse conv among ``sparse``
    (rewrites of ``model``); ``time_pair`` is objective.time_pair."""
    outer = {n.name for n in model.graph.node}
    convs = [s for s in sparse if s.op == ops.SPARSE_CONV and s.node in outer]
    if not convs:
        return {}
    captured = tensor_values(model, sorted({s.x for s in convs}), feeds[:SCREEN_FEEDS], threads)
    out = {}
    for s in convs:
        xs = [{s.x: values[s.x]} for values in captured]
        fast, slow = alone_pair(model, s.node, list(xs[0][s.x].shape))
        out[s.layer] = time_pair(fast, slow, xs, threads, passes)
    return out


def slower_together(group: list[str], others: list[str], build, feeds: list[dict], threads: int, passes: int,
                    time_pair, give_up, log) -> str:
    """Why every early-exit layer of ``group`` is dropped untimed one by one: the model
    with all of them rewritten, ``others`` dense, was ``give_up`` slower than with none
    (module docstring); "" when the group is too small to try, or was not that slow.
    ``build(dense)`` compiles the model with the layers ``dense`` left dense."""
    if len(group) < GROUP_FIRST:
        return ""
    log("timing the early-exit layers together")
    with_ms, without_ms = time_pair(build(others).model, build(others + group).model, feeds, threads, passes,
                                    give_up=give_up)
    if not give_up(with_ms, without_ms):
        return ""
    return (f"the model took {with_ms:.3f} ms with all {len(group)} early-exit layers left after the screen "
            f"rewritten and {without_ms:.3f} ms with none, so none was timed on its own")
