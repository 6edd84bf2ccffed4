"""Model-local functions (onnxscript models, torch's ``export_modules_as_functions``).

A Conv/Gemm/MatMul -> Relu inside a function is invisible to matching, which walks the
graph and its If/Loop/Scan bodies: the compiler inlines the functions that hold one
(and those that call them) before matching, so their layers are rewritten like any
other. The rest stay functions. (A function may import another opset than the model's
only where its ops mean the same in both, which the onnx checker, run on every input
model, makes sure of: inlining it unconverted is safe.)
"""

from __future__ import annotations

import onnx
import onnx.inliner

from ..io.bigmodel import serializable

_REDUCTIONS = {"Conv", "Gemm", "MatMul"}


def _key(f) -> tuple[str, str, str]:
    """A function's identity, or the one a node calls: (domain, name, overload) since IR 10."""
    return (f.domain, f.name if isinstance(f, onnx.FunctionProto) else f.op_type, f.overload)


def _with_bodies(nodes):
    """``nodes`` and the nodes of their If/Loop/Scan bodies (a function's body is a node
    list, not a graph: io/modelio.all_nodes takes a graph)."""
    for node in nodes:
        yield node
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _with_bodies(sub.node)


def _called(nodes, functions: dict) -> set[tuple[str, str, str]]:
    """The local functions ``nodes`` call, their If/Loop/Scan bodies included."""
    return {_key(n) for n in _with_bodies(nodes) if _key(n) in functions}


def _has_reduction(nodes) -> bool:
    return any(n.domain in ("", "ai.onnx") and n.op_type in _REDUCTIONS for n in _with_bodies(nodes))


def plan(model: onnx.ModelProto) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(the functions to inline, as the inliner names them: (domain, name); {function:
    why it is not} for those holding a layer)."""
    functions = {_key(f): f for f in model.functions}
    if not functions:
        return [], {}
    calls = {key: _called(f.node, functions) for key, f in functions.items()}
    holding = {key for key, f in functions.items() if _has_reduction(f.node)}
    changed = True
    while changed:  # a function calling one that holds a layer must be inlined too
        changed = False
        for key, callees in calls.items():
            if key not in holding and callees & holding:
                holding.add(key)
                changed = True
    if not serializable(model):  # the inliner works on the serialized model
        return [], {key[1]: f"its layers are not rewritten: local function '{key[1]}' is in a model over 2 GB, "
                            "which the inliner cannot read" for key in sorted(holding)}
    # The inliner takes (domain, name): every overload of a chosen name is inlined.
    return sorted({key[:2] for key in holding}), {}


def inline(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the functions ``plan`` picks inlined (itself when there are none)."""
    chosen, _skipped = plan(model)
    return onnx.inliner.inline_selected_functions(model, chosen) if chosen else model


def still_called(graph: onnx.GraphProto, functions) -> list[onnx.FunctionProto]:
    """The ``functions`` that ``graph`` still calls, directly or through another."""
    by_key = {_key(f): f for f in functions}
    wanted, todo = set(), _called(graph.node, by_key)
    while todo:
        key = todo.pop()
        if key not in wanted:
            wanted.add(key)
            todo |= _called(by_key[key].node, by_key)
    return [f for f in functions if _key(f) in wanted]
