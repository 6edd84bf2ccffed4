"""A cheap first look at each early-exit rewrite before the latency objective times the
whole model with it.

Timing the whole model twice per layer is what makes the latency objective slow on a
large CNN (ResNet-50: 48 layers, ~0.1 s a run). Most convolution rewrites lose time
(method.md, section 6), and a rewrite that is slower than the dense layer *on its own*
does not become faster in the model: the model adds what the rewrite costs around it
(layout conversions, lost fusions), never a gain. So each layer is first timed alone,
its rewritten form against its dense form from the original, on the inputs it sees in
the original model on the timing feeds; a layer that is not ``MARGIN`` faster alone is
dropped without the whole-model timing.

A layer whose output a sparse-input consumer reads (``ExPruneSparseMatMul``) is not
screened: its gain shows in the consumer, which the layer alone does not contain.
"""

from __future__ import annotations

import onnx

from .pipeline import Result

# Timing feeds the layer inputs are captured on: enough for a median of a small model.
SCREEN_FEEDS = 2


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
    sparse_inputs = {s.op_node.inputs[0].name for s in result.sparse if s.op_node.inputs}
    return [rw for rw in result.rewritten if rw.candidate.output.name not in sparse_inputs]


def layer_inputs(original: onnx.ModelProto, names: list[str], feeds: list[dict]) -> list[dict]:
    """The values of tensors ``names`` when ``original`` runs on each of ``feeds``."""
    from .timing import session

    probe = onnx.ModelProto()
    probe.CopyFrom(original)
    exposed = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in exposed)
    sess = session(probe, 1)
    return [dict(zip(names, sess.run(names, f))) for f in feeds]


def screen(original: onnx.ModelProto, result: Result, feeds: list[dict], threads: int,
           log) -> dict[str, tuple[float, float]]:
    """Layer -> (ms rewritten, ms dense), each layer timed alone; layers that cannot be
    cut out alone are left out (the objective times them in the whole model)."""
    import time

    from . import objective  # its timing functions, looked up when called

    pairs = []
    for rw in screenable(result):
        c = rw.candidate
        ins = [c.x.name] + ([c.residual.name] if c.residual is not None else [])
        fast, dense = subgraph(result.model, ins, c.output.name), subgraph(original, ins, c.output.name)
        if fast is not None and dense is not None:
            pairs.append((c.layer, ins, fast, dense))
    if not pairs:
        return {}
    names = sorted({n for _l, ins, _f, _d in pairs for n in ins})
    captured = layer_inputs(original, names, feeds[:SCREEN_FEEDS])
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
