"""Graphs whose nodes are out of topological order, which onnxruntime runs and the ONNX
checker refuses ("Nodes in a graph must be topologically sorted"). onnxruntime's own
float16 converter (``keep_io_types``) writes such graphs: its input Casts come last. The
compiler reads them in order, as onnxruntime would run them."""

from __future__ import annotations

import heapq

import onnx


def in_order(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` with its main graph's nodes in topological order, each as early
    as it can be (the order kept where it already holds); None when they are in order
    already, or when no order exists (a cycle, a name nothing writes), which the checker
    then refuses as it is."""
    graph = model.graph
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    known |= {t.values.name for t in graph.sparse_initializer}
    order = _order(list(graph.node), known)
    if order is None or order == list(range(len(graph.node))):
        return None
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.node[:]
    fixed.graph.node.extend(graph.node[i] for i in order)
    return fixed


def _order(nodes: list, known: set[str]) -> list[int] | None:
    """Kahn's order of ``nodes``, the lowest index first among those ready."""
    writer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    waits = [0] * len(nodes)
    readers: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for name in _reads(node) - known:
            if name not in writer:
                return None
            waits[i] += 1
            readers[writer[name]].append(i)
    ready = [i for i, w in enumerate(waits) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in readers[i]:
            waits[j] -= 1
            if waits[j] == 0:
                heapq.heappush(ready, j)
    return order if len(order) == len(nodes) else None


def _reads(node: onnx.NodeProto) -> set[str]:
    """The names ``node`` reads: its inputs, and what its bodies (If, Loop, Scan) read from
    the graph around them."""
    names = set(node.input)
    for attr in node.attribute:
        for body in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            names |= _outer_reads(body)
    return names


def _outer_reads(graph: onnx.GraphProto) -> set[str]:
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {name for node in graph.node for name in node.output}
    return {name for node in graph.node for name in _reads(node)} - defined
