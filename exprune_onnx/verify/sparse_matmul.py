"""Verification of ExPruneSparseMatMul nodes (passes/sparse_input.py), for verify.py.

Each sparse node must read the output of an early-exit op, a Relu or a Clip, directly or
through ops that keep its zeros (passes/zeros.py; skipping exact zeros is exact whatever
wrote them, only these are expected) and write the output of a
MatMul [+ Add] or Gemm of the canonical original that read that same tensor; its weight
must be the original's ``W`` (MatMul) or ``alpha * op(B)`` (Gemm, ``B^T`` for
``transB = 1``), and its bias the original's folded Add or ``beta * C``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.graphutil import all_graphs, const_value, describe
from ..passes.sparse_input import EARLY_EXIT, relu_sparse_conv
from ..passes.zeros import zero_writer


@dataclass
class SparseLayer:
    op: gs.Node
    original: list[gs.Node] = field(default_factory=list)  # MatMul [, Add] or Gemm, in the canonical original
    problems: list[str] = field(default_factory=list)
    weight: np.ndarray | None = None  # what the op's weight must be, [n, m]
    bias: np.ndarray | None = None  # what the op's bias must be, [m], or None for none
    # The original layer's name, taken when it is traced: the structure check later
    # detaches the original nodes from their outputs (replace_in_reference).
    label: str = ""

    def stands_for(self, nodes: list[gs.Node]) -> None:
        self.original = nodes
        first = nodes[0]
        self.label = first.name or f"{first.op}:{first.outputs[0].name}"

    @property
    def name(self) -> str:
        return self.label or self.op.name or (self.op.outputs[0].name if self.op.outputs else self.op.op)


def tensors_by_name(canonical: gs.Graph) -> dict[str, gs.Tensor]:
    found: dict[str, gs.Tensor] = {}
    for g in all_graphs(canonical):
        found.update(g.tensors())
    return found


def writes_zeros(node: gs.Node | None) -> bool:
    """Whether ``node`` is one a sparse op may read the zeros of: an early-exit op, a sparse
    conv ending in a ReLU, a Relu or a Clip (passes/zeros.py finds it through pools)."""
    if node is not None and node.domain == ops.DOMAIN:
        return node.op in EARLY_EXIT or relu_sparse_conv(node)
    return _default(node, "Relu") or _default(node, "Clip")


def _default(node: gs.Node | None, op: str) -> bool:
    return node is not None and node.op == op and (node.domain or "") in ("", "ai.onnx")


def trace(op: gs.Node, original_tensors: dict[str, gs.Tensor], opset: int) -> SparseLayer:
    """The original layer ``op`` stands for, and what its weight and bias must be."""
    layer = SparseLayer(op)
    bad = layer.problems.append
    if len(op.inputs) not in (2, 3) or len(op.outputs) != 1:
        bad(f"{describe(op)} has {len(op.inputs)} inputs and {len(op.outputs)} outputs: it takes x, w and an "
            "optional bias and gives y")
        return layer
    x = op.inputs[0]
    producer = zero_writer(x)
    if not writes_zeros(producer):
        what = describe(producer) if producer is not None else "no node"
        bad(f"its input '{x.name}' comes from {what}, not an early-exit op, Relu or Clip (or a pool or reshape "
            "of one)")
    out = original_tensors.get(op.outputs[0].name)
    last = out.inputs[0] if out is not None and out.inputs else None
    if _default(last, "Add"):
        mm = next((t.inputs[0] for t in last.inputs if t.inputs and _default(t.inputs[0], "MatMul")), None)
        group = [mm, last] if mm is not None else []
    elif _default(last, "MatMul") or _default(last, "Gemm"):
        group = [last]
    else:
        group = []
    if not group:
        bad(f"it writes '{op.outputs[0].name}', which the original does not compute with a MatMul [+ Add] or Gemm")
        return layer
    layer.stands_for(group)
    reduction = group[0]
    if reduction.inputs[0].name != x.name:
        bad(f"it reads '{x.name}', the original {describe(reduction)} reads '{reduction.inputs[0].name}'")
    stored = const_value(reduction.inputs[1], opset)
    if stored is None or stored.ndim != 2:
        bad(f"the original {describe(reduction)} has no constant weight matrix")
        return layer
    bias = None
    if reduction.op == "Gemm":
        a = reduction.attrs
        if a.get("transA", 0):
            bad(f"the original {describe(reduction)} has transA = 1, which the sparse op does not take")
        w = stored.T if a.get("transB", 0) else stored
        layer.weight = w.astype(np.float64) * float(a.get("alpha", 1.0))
        if len(reduction.inputs) > 2 and reduction.inputs[2].name:
            bias = const_value(reduction.inputs[2], opset)
            bias = None if bias is None else bias.astype(np.float64) * float(a.get("beta", 1.0))
            if bias is None:
                bad(f"the original {describe(reduction)} has a C that is not constant")
                return layer
    else:
        layer.weight = stored.astype(np.float64)
        if len(group) == 2:
            add = group[1]
            other = add.inputs[1] if add.inputs[0] is reduction.outputs[0] else add.inputs[0]
            bias = const_value(other, opset)
            if bias is None:
                bad(f"the original {describe(add)} does not add a constant")
                return layer
    if bias is not None:
        m = layer.weight.shape[1]
        if bias.size not in (1, m):
            bad(f"the original bias has shape {list(bias.shape)}, not one value per output")
            return layer
        layer.bias = np.broadcast_to(bias.reshape(-1), (m,))
    has_bias = len(op.inputs) == 3 and bool(op.inputs[2].name)
    if has_bias != (layer.bias is not None):
        bad(f"it {'adds' if has_bias else 'has no'} bias, the original layer {'has none' if has_bias else 'adds one'}")
    return layer


def replace_in_reference(layer: SparseLayer, reference: gs.Graph, placeholder: str) -> None:
    """Stand a placeholder op for the original nodes, as verify.py does for rewritten layers."""
    x, out = layer.original[0].inputs[0], layer.original[-1].outputs[0]
    # A fused conv group also reads its residual: keep it read, so that its producer stays.
    # Not a scale or a shift computed from constants (Caffe2's Unsqueeze of a BatchNorm's
    # parameters): the op holds them folded, and their nodes go with the group.
    made = {id(o) for n in layer.original for o in n.outputs}
    extra = [t for n in layer.original[1:] for t in n.inputs
             if id(t) not in made and not _from_constants(t) and t is not x]
    # A node does not know its graph: look for the last one among the graphs' nodes.
    graph = next((g for g in all_graphs(reference) if any(n is layer.original[-1] for n in g.nodes)), None)
    for node in layer.original:
        node.outputs.clear()
    if graph is not None:
        graph.nodes.append(gs.Node(placeholder, inputs=[x, *extra], outputs=[out]))


def _from_constants(t: gs.Tensor, depth: int = 0) -> bool:
    """Whether ``t`` is a constant, or computed by nodes from constants alone."""
    if isinstance(t, gs.Constant):
        return True
    producer = t.inputs[0] if t.inputs else None
    if producer is None or depth > 8 or producer.op in ("If", "Loop", "Scan"):
        return False
    return all(not i.name or _from_constants(i, depth + 1) for i in producer.inputs)


def weight_problems(layer: SparseLayer, rtol: float) -> tuple[list[str], float]:
    """The op's weight and bias against the original's; also the largest relative difference."""
    w_t = layer.op.inputs[1]
    got = np.asarray(w_t.values) if isinstance(w_t, gs.Constant) else None
    if got is None or got.dtype != np.float32:
        return [f"the weight '{w_t.name}' is not a float32 initializer"], 0.0
    want = layer.weight
    if got.shape != want.shape:
        return [f"the weight '{w_t.name}' has shape {list(got.shape)}, the original's (as [n, m]) "
                f"{list(want.shape)}"], 0.0
    err = _rel_diff(got, want)
    problems = []
    if err > rtol:
        problems.append(f"the weight '{w_t.name}' differs from the original's (relative difference {err:.2g})")
    if layer.bias is not None:
        b_t = layer.op.inputs[2]
        b = np.asarray(b_t.values) if isinstance(b_t, gs.Constant) else None
        if b is None:
            problems.append(f"the bias '{b_t.name}' is not a constant, where the original's is")
        elif b.dtype != np.float32 or b.shape != layer.bias.shape:
            problems.append(f"the bias '{b_t.name}' is {b.dtype} {list(b.shape)}, the original's (one per output "
                            f"channel) float32 {list(layer.bias.shape)}")
        elif (b_err := _rel_diff(b, layer.bias)) > rtol:
            problems.append(f"the bias '{b_t.name}' differs from the original's (relative difference {b_err:.2g})")
        else:
            err = max(err, b_err)
    return problems, err


def _rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    if not want.size:
        return 0.0
    scale = max(float(np.abs(want).max()), 1e-30)
    return float(np.abs(got.astype(np.float64) - want).max()) / scale
