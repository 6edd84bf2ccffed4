"""Zero-input skipping: the layer after an early-exit layer reads only the non-zero inputs.

    ExPruneDenseRelu -> y;  MatMul(y, W) [-> Add(b)]          =>  ExPruneSparseMatMul(y, W[, b])
    ExPruneDenseRelu -> y;  Gemm(y, B[, C]; alpha, beta, transB)  =>  ExPruneSparseMatMul(y, alpha * op(B), beta * C)
    Relu | Clip(0, .) -> y; the same, with ``Options.sparse_relu = "on"``
    ... -> MaxPool -> [AveragePool 1x1] -> Flatten | Reshape | Transpose -> y; the same as for
        the ReLU or early-exit op above them (passes/zeros.py: a VGG's or AlexNet's first
        classifier layer, the largest weight of the model, reads its last pool's zeros)

where ``op(B)`` is ``B^T`` when ``transB = 1`` (transposed once, here, at compile time).
``y`` holds exact zeros for every pruned output and every natural ReLU zero, so a
consumer that multiplies it by a constant matrix can skip those rows of the matrix
(docs/custom_ops.md, "ExPruneSparseMatMul"). The result is the consumer's result up to
float summation order; no FLOPs saving is claimed for it (measure/flops.py counts it as the
MatMul it replaces).

Exporters: PyTorch (nn.Linear after an activation: Gemm with transB = 1 on 2-D inputs,
MatMul of a transposed weight plus Add on 3-D ones), skl2onnx's MLPClassifier (MatMul +
Add), tf2onnx (MatMul + Add), transformer FFNs (the second matrix of fc1 -> ReLU -> fc2).

This is a pass over the graph after the ENP rewrites, not one of ``rules.RULES``: it
matches early-exit ops emitted in this run as well as ones already in the model, and its
own output is not an early-exit op's, so a second run finds nothing more to do.

Conditions (a failure is a reason that ``--explain`` lists, for consumers of an
early-exit op or of a ReLU left in place; any other MatMul or Gemm is not this pass's
concern):

* the input is the output of an early-exit op (``ExPruneDenseRelu``, ``ExPruneConvRelu``),
  or, with ``sparse_relu="on"``, of a plain ``Relu``, a ``Clip`` with a constant minimum
  of 0 or an ``ExPruneSparseConv`` ending in a ReLU (``sparse_relu_layers``, when set,
  names the consumers allowed); directly or through ops that keep its zeros
  (passes/zeros.py). Skipping exact zeros is exact whatever made
  them, but it is faster than onnxruntime's MatMul only where most inputs are zero
  and the batch is small, which an ENP layer's output usually is and a plain ReLU's
  often is not: the latency objective times each such consumer (objective.py);
* the weight is a float32 constant, 2-D, free of NaN and Inf (skipping a zero input
  drops ``0 * w``, which is NaN for an infinite ``w``), with as many rows as the input
  has units; Gemm has ``transA = 0``. A weight computed from initializers (PyTorch
  exports ``nn.Linear`` on 3-D inputs as MatMul of ``Transpose(weight)``) is folded;
* a weight that has to change (folded, or Gemm's ``transB = 1`` or ``alpha != 1``)
  is used by nothing else, so that the model keeps one copy of it; an initializer
  used as is may be shared;
* a folded bias is constant with one value per output (or one for all), so the
  consumer's output shape is the op's ``[*, m]``. A MatMul's Add that does not fit is
  simply left after the op.

``y`` may have other consumers (a residual Add, a graph output): the op only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.graphutil import const_value, describe, is_graph_output, unique_name
from ..rules import chain, common
from ..rules.base import Context, NoMatch
from . import zeros

NAME = "sparse_input"
OP_TYPES = ("MatMul", "Gemm")
EARLY_EXIT = (ops.CONV_RELU, ops.DENSE_RELU)  # the early-exit ops, whose zeros are read sparsely untimed


@dataclass
class Consumer:
    """A MatMul or Gemm reading an early-exit op's output, in the op's terms."""

    layer: str
    nodes: list[gs.Node]  # the MatMul [and its Add], or the Gemm
    source: str  # the op type that writes x: ExPruneDenseRelu, Relu or Clip
    x: gs.Tensor
    weight: gs.Tensor  # the weight as the consumer reads it
    w: np.ndarray  # [n, m] float32, what the op multiplies by
    reuse_weight: bool  # w is the stored weight itself: feed it, do not copy it
    bias: np.ndarray | None  # [m] float32
    bias_tensor: gs.Constant | None  # a stored bias that is already the op's, reused
    output: gs.Tensor


@dataclass
class SparseRewrite:
    layer: str
    op_types: list[str]
    op_node: gs.Node
    source: str  # the op type that writes its input

    @property
    def after_relu(self) -> bool:
        """Whether it reads a plain Relu/Clip's output (or a sparse conv's ReLU) rather than an early-exit op's."""
        return self.source not in EARLY_EXIT


def match(node: gs.Node, ctx: Context) -> Consumer | NoMatch | None:
    """Read-only: the consumer in the op's terms, why it cannot be one, or None if unrelated."""
    if node.op not in OP_TYPES or not chain.is_default_domain(node) or not node.outputs or len(node.inputs) < 2:
        return None
    x = node.inputs[0]
    producer = zeros.zero_writer(x)
    if producer is None or partial_product(node):
        return None
    layer = common.layer_name(node, ctx)

    def no(reason: str) -> NoMatch:
        return NoMatch(NAME, layer, node.op, reason)

    if producer.domain == ops.DOMAIN:
        if producer.op not in EARLY_EXIT and not relu_sparse_conv(producer):
            return None
        gated = producer.op == ops.SPARSE_CONV
    elif chain.is_default_domain(producer) and _zero_floor(producer, ctx):
        gated = True
    else:
        return None
    gemm = node.op == "Gemm"
    if gemm and node.attrs.get("transA", 0):
        return no("Gemm has transA = 1; the sparse op reads its input as [rows, n]")
    stored = node.inputs[1]
    values = const_value(stored, ctx.opset)
    why = weight_problem(stored, values, 2, "not a matrix")
    if why:  # before the plain ReLU's gate: no switch would change it
        return no(why)
    why = plain_relu_gate(x, producer, layer, ctx) if gated else None
    if why:
        return no(why)
    trans_b = gemm and bool(node.attrs.get("transB", 0))
    alpha = float(node.attrs.get("alpha", 1.0)) if gemm else 1.0
    w = values.T if trans_b else values
    if alpha != 1.0:
        w = w * np.float32(alpha)
    reuse = isinstance(stored, gs.Constant) and not trans_b and alpha == 1.0
    if not reuse and not _private(stored, values.size, ctx):
        return no(f"the weight '{stored.name}' (or what it is computed from) also feeds other nodes or is an output; a folded, "
                  "transposed or scaled copy for the sparse op would store it twice")
    n_units, m = (int(d) for d in w.shape)
    shape = x.shape
    if shape is not None:
        if len(shape) < 2 or (gemm and len(shape) != 2):
            return no(f"the input '{x.name}' has shape {list(shape)}, not [*, n]" + (" (Gemm: 2-D)" if gemm else ""))
        if isinstance(shape[-1], int) and shape[-1] != n_units:
            return no(f"the input '{x.name}' has {shape[-1]} units, the weight {n_units} rows")
    if not np.isfinite(w).all():
        return no(f"the weight '{stored.name}' holds NaN or Inf: skipping a zero input would drop 0 * Inf = NaN")
    w = np.ascontiguousarray(w, dtype=np.float32)
    out = node.outputs[0]
    nodes, bias, bias_tensor = [node], None, None
    if gemm:
        if len(node.inputs) > 2 and node.inputs[2].name:
            bias = _bias(const_value(node.inputs[2], ctx.opset), m, 2)
            if bias is None:
                return no(f"C '{node.inputs[2].name}' is not a constant with one value per output (or one for all)")
            beta = float(node.attrs.get("beta", 1.0))
            if beta != 1.0:
                bias = (np.float32(beta) * bias).astype(np.float32)
            elif _is_exact(node.inputs[2], bias):
                bias_tensor = node.inputs[2]
    else:
        add, bias = _folded_add(out, ctx, m, len(shape) if shape is not None else None)
        if add is not None:
            nodes.append(add)
            out = add.outputs[0]
            constant = next(t for t in add.inputs if t is not node.outputs[0])
            if _is_exact(constant, bias):
                bias_tensor = constant
    return Consumer(layer, nodes, producer.op, x, stored, w, reuse, bias, bias_tensor, out)


def plain_relu_gate(x: gs.Tensor, producer: gs.Node, layer: str, ctx: Context, others: int = 0) -> str | None:
    """Why ``layer``, reading the zeros of a plain ReLU (no early-exit op), may not be read
    sparsely under the options (``--sparse-relu``, the latency objective's choice), or None.
    ``others``: how many more ops' zeros it reads through a Concat."""
    options = ctx.options
    source = describe(producer) + (f" and {others} more through a Concat" if others else "")
    if options.sparse_relu != "on":
        return (f"its input '{x.name}' comes from {source}, which {'were' if others else 'was'} not rewritten "
                "into an early-exit op; a plain ReLU's output is read sparsely only with --sparse-relu on, or when "
                "the latency objective finds it faster")
    if options.sparse_relu_layers is not None and layer not in options.sparse_relu_layers:
        return (f"its input '{x.name}' comes from {source}; the latency objective found the model no faster with "
                "it read sparsely")
    return None


def partial_product(node: gs.Node) -> bool:
    """Whether ``node`` computes an early-exit op's first k units (its input 0, or 5 under
    the statstest rule): it reads a Slice of the layer's input, which keeps the zeros, but
    the op's group is the compiler's own, not a layer of the original to read sparsely."""
    y = node.outputs[0]
    return any(r.domain == ops.DOMAIN and r.op in ops.PRUNE_OPS and any(r.inputs[i] is y for i in (0, 5)
                                                                         if i < len(r.inputs))
               for r in y.outputs)


def relu_sparse_conv(node: gs.Node) -> bool:
    """Whether ``node`` is an ExPruneSparseConv that ends in a ReLU (its output floors at zero)."""
    if node.op != ops.SPARSE_CONV or node.domain != ops.DOMAIN:
        return False
    act = node.attrs.get("activation", "none")
    return (act.decode() if isinstance(act, bytes) else str(act)) == "relu"


def _zero_floor(node: gs.Node, ctx: Context) -> bool:
    """A Relu, or a Clip whose minimum is the constant 0: outputs it floors are exact zeros."""
    if node.op == "Relu":
        return True
    if node.op != "Clip":
        return False
    if "min" in node.attrs:  # opset < 11
        return float(node.attrs["min"]) == 0.0
    if len(node.inputs) < 2 or not node.inputs[1].name:
        return False
    low = const_value(node.inputs[1], ctx.opset)
    return low is not None and low.size == 1 and float(low.reshape(-1)[0]) == 0.0


def _live_uses(t: gs.Tensor) -> int:
    return sum(1 for n in t.outputs if n.outputs)  # rewritten nodes linger without outputs until cleanup


def _private(t: gs.Tensor, size: int, ctx: Context, depth: int = 0) -> bool:
    """Whether replacing ``t`` frees the weight-sized constants it is computed from (one
    that the graph or the model's graph also outputs stays: a fuzzer's weight, a graph
    output too, was kept beside its repacked copy)."""
    outputs = (*ctx.graph.outputs, *ctx.model_graph.outputs)
    if _live_uses(t) > 1 or depth > 8 or any(o is t for o in outputs):
        return False
    if isinstance(t, gs.Constant) or not t.inputs:
        return True
    return all(_private(i, size, ctx, depth + 1) for i in t.inputs[0].inputs
               if i.name and (not isinstance(i, gs.Constant) or np.asarray(i.values).size * 2 >= size))


def _is_exact(t: gs.Tensor, bias: np.ndarray) -> bool:
    """Whether a stored bias is already the op's [m] float32 input (then it is reused, not copied)."""
    return isinstance(t, gs.Constant) and np.asarray(t.values).dtype == np.float32 and tuple(t.shape) == bias.shape


def weight_problem(stored: gs.Tensor, values: np.ndarray | None, ndim: int, wrong_rank: str) -> str | None:
    """Why the weight ``values`` (stored as ``stored``) cannot be read by a sparse-input op, or None."""
    if values is None:
        return f"the weight '{stored.name}' is not a constant"
    if values.dtype != np.float32:
        return f"the weight '{stored.name}' is {values.dtype}, only float32 is read sparsely"
    if values.ndim != ndim:
        return f"the weight '{stored.name}' has shape {list(values.shape)}, {wrong_rank}"
    return None


def _bias(c: np.ndarray | None, m: int, rank: int) -> np.ndarray | None:
    """A float bias added to a [*, m] result of rank ``rank`` without changing its shape, as the
    op's [m] float32 input; else None."""
    if c is None or c.dtype.kind != "f":
        return None
    bias = chain.per_output(c, m, -1, rank)
    return None if bias is None else bias.astype(np.float32)


def _folded_add(mm: gs.Tensor, ctx: Context, m: int, rank: int | None):
    """The MatMul's Add of a constant bias, when it is its only consumer and keeps the shape."""
    if len(mm.outputs) != 1 or is_graph_output(mm, ctx.graph):
        return None, None
    add = mm.outputs[0]
    if add.op != "Add" or not chain.is_default_domain(add) or len(add.inputs) != 2 or not add.outputs:
        return None, None
    other = add.inputs[1] if add.inputs[0] is mm else add.inputs[0]
    if other is mm:  # Add(mm, mm)
        return None, None
    c = const_value(other, ctx.opset)
    if c is None or c.dtype != np.float32:
        return None, None
    bias = _bias(c, m, rank if rank is not None else 1)
    return (add, bias) if bias is not None else (None, None)


def rewrite(c: Consumer, ctx: Context) -> SparseRewrite:
    base = c.layer.replace(":", "_").strip("/") or "layer"
    weight = c.weight if c.reuse_weight else gs.Constant(unique_name(base + "_w_sparse", ctx.names), c.w)
    inputs = [c.x, weight]
    if c.bias is not None:
        inputs.append(c.bias_tensor if c.bias_tensor is not None
                      else gs.Constant(unique_name(base + "_bias_sparse", ctx.names), c.bias))
    op_types = [n.op for n in c.nodes]
    for node in c.nodes:
        node.outputs.clear()
    c.output.dtype = np.float32
    node = gs.Node(ops.SPARSE_MATMUL, name=unique_name(base + "_sparse", ctx.names), domain=ops.DOMAIN,
                   inputs=inputs, outputs=[c.output])
    ctx.graph.nodes.append(node)
    return SparseRewrite(c.layer, op_types, node, c.source)


def match_all(contexts: list[Context], match_one) -> tuple[list, list[NoMatch]]:
    """``match_one`` over every node of every graph: (consumers with their context, reasons)."""
    found: list = []
    rejected: list[NoMatch] = []
    for ctx in contexts:
        for node in list(ctx.graph.nodes):
            result = match_one(node, ctx)
            if isinstance(result, NoMatch):
                rejected.append(result)
            elif result is not None:
                found.append((result, ctx))
    return found, rejected


def apply(contexts: list[Context]) -> tuple[list[SparseRewrite], list[NoMatch]]:
    """Match every MatMul/Gemm of every graph, then rewrite the ones that qualify."""
    found, rejected = match_all(contexts, match)
    return [rewrite(c, ctx) for c, ctx in found], rejected
