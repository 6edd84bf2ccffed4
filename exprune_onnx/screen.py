"""Cheap verdicts the latency objective reaches before timing a whole model.

Timing a rewrite in the whole model is the objective's rule (objective.py), but a real
CNN has a dozen or more convolutions and one whole-model pair costs seconds to minutes
there. Two shortcuts keep the number of whole-model timings down without changing what
is kept:

* an early-exit layer whose rule can prune nothing (the threshold rule at T = -inf,
  the lossless setting) only adds work: it is dropped untimed;
* a sparse-input convolution (rules/sparse_conv.py) is first timed alone, on the very
  input it reads in the model, against the Conv (+ activation) it replaces. One that is
  not faster alone cannot make the model faster (it saves nothing elsewhere), so it is
  dropped without a whole-model timing; the others go on to the whole-model timing.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import ops
from .config import Options
from .rules.sparse_conv import unpack

# Alone, a sparse conv must beat the dense one by this much to be worth a whole-model timing.
ALONE_MARGIN = 0.0


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
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None] * 4)], inits)
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
    sparse = helper.make_node(ops.SPARSE_CONV, [x, node.input[1]] + [b.name for b in bias], ["y"],
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


def layer_inputs(model: onnx.ModelProto, names: list[str], feeds: list[dict], threads: int) -> dict[str, list]:
    """The values of tensors ``names`` of ``model`` on each of ``feeds``."""
    from .timing import session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    exposed = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in exposed)
    sess = session(probe, threads)
    got: dict[str, list] = {n: [] for n in names}
    for f in feeds:
        for n, v in zip(names, sess.run(names, f)):
            got[n].append(v)
    return got


def screen(model: onnx.ModelProto, sparse, feeds: list[dict], threads: int, passes: int, time_pair
           ) -> dict[str, tuple[float, float]]:
    """Layer -> (ms alone sparse, ms alone dense) for each sparse conv among ``sparse``
    (rewrites of ``model``); ``time_pair`` is objective.time_pair."""
    outer = {n.name for n in model.graph.node}
    convs = [s for s in sparse if s.op_node.op == ops.SPARSE_CONV and s.op_node.name in outer]
    if not convs:
        return {}
    names = sorted({s.op_node.inputs[0].name for s in convs})
    values = layer_inputs(model, names, feeds[:2], threads)
    out = {}
    for s in convs:
        x = s.op_node.inputs[0].name
        xs = [{x: v} for v in values[x]]
        fast, slow = alone_pair(model, s.op_node.name, list(xs[0][x].shape))
        out[s.layer] = time_pair(fast, slow, xs, threads, passes)
    return out
