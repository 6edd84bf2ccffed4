"""Checks and graph emission shared by the ReLU rules.

Every rewrite produces the same shape of graph::

    x -> [Gather(unit order)] -> xo -> Slice(first k units) -> Conv|MatMul(W_head) -> partial
    partial, xo, W_tail, bias[, residual] -> ExPrune*Relu -> y

where ``y`` is the original activation's output tensor, so consumers and graph
outputs see the same name, dtype and shape as before. With ``unit_order="weight"``
the units are reordered (input and weights alike) so that those whose weights carry
the most energy form the partial sum; the Gather is left out when that order is the
stored one. A reordered Gemm/MatMul layer gathers only its k head units, and
ExPruneDenseRelu reads x in its own order, the tail's units named by its attribute
``tail_units``::

    x -> Gather(head units) -> MatMul(W_head) -> partial
    partial, x, W_tail, bias[, residual] -> ExPruneDenseRelu(tail_units) -> y
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.graphutil import body_input_source, describe, is_graph_input, other_than_float32, unique_name
from ..config import choose_k
from ..errors import ConfigError
from .base import Candidate, Context, Rewritten

MIN_OPSET = 9

# Ops that only move raw features around; a layer reading the graph input through
# them still sees raw, non-exchangeable features.
_LAYOUT_OPS = {"Reshape", "Flatten", "Transpose", "Identity", "Cast", "Squeeze", "Unsqueeze", "Slice", "Split"}
# So do a normalisation by constants ((x - mean) / std) and sklearn's preprocessing
# (a Pipeline's StandardScaler is an ai.onnx.ml Scaler).
_AFFINE_OPS = {"Add", "Sub", "Mul", "Div"}
_ML_FEATURE_OPS = {"Scaler", "Normalizer", "Imputer", "Binarizer"}

# Why a layer whose k leaves no tail is refused (the report warns when nothing else was rewritten).
K_OUTSIDE = "is not between 1 and n - 1"


def layer_name(node: gs.Node, ctx: Context) -> str:
    """A name stable across runs: the node's own, or op and output when that is ambiguous,
    after the body's path when that is ambiguous too (branches that reuse their names)."""
    if node.name and node.name not in ctx.duplicate_node_names:
        return node.name
    name = f"{node.op}:{node.outputs[0].name}"
    return ctx.scope + name if name in ctx.duplicate_outputs else name


def same_pad_problem(attrs: dict, kernel) -> str | None:
    """Why a Conv with auto_pad SAME cannot become one of our ops, or None. Where a stride
    passes the dilated kernel by 2 or more, the padding SAME asks for can come out
    negative: onnxruntime's Conv then skips leading inputs, while ONNX's definition, which
    our ops follow, pads 0, and the two read different inputs."""
    auto_pad = attrs.get("auto_pad", "NOTSET")  # a graphsurgeon node's: already str
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    strides = attrs.get("strides", [1] * len(kernel))
    dilations = attrs.get("dilations", [1] * len(kernel))
    for axis, (k, stride, dilation) in enumerate(zip(kernel, strides, dilations)):
        extent = (int(k) - 1) * int(dilation) + 1
        if int(stride) >= extent + 2:
            return (f"auto_pad = {auto_pad} with stride {stride} past the kernel's extent {extent} "
                    f"(spatial axis {axis}): onnxruntime's Conv pads negatively there, ONNX's definition does not")
    return None


def reads_raw_input(x: gs.Tensor, ctx: Context) -> bool:
    """Whether ``x`` is the model's input, through layout ops and into the Loop/Scan
    bodies it is fed to (a Scan's body reads it one step at a time), or a Concat that holds
    it beside computed features (a tabular model's numbers beside an embedding)."""
    return _reads_raw(x, ctx.graph, ctx, 16)


def _reads_raw(t: gs.Tensor, graph: gs.Graph, ctx: Context, steps: int) -> bool:
    while steps > 0:
        steps -= 1  # (what is left is handed on to a Concat's inputs)
        if is_graph_input(t, ctx.model_graph):
            return True
        if graph is not ctx.model_graph and is_graph_input(t, graph):
            outer = body_input_source(t, graph, ctx.model_graph)
            if outer is None:
                return False
            t, graph = outer
            continue
        node = t.inputs[0] if t.inputs else None
        if node is not None and node.op == "Concat" and (node.domain or "") in ("", "ai.onnx"):
            return any(_reads_raw(i, graph, ctx, steps) for i in node.inputs if not isinstance(i, gs.Constant))
        t = _raw_source(node) if node is not None else None
        if t is None:
            return False
    return False


def _raw_source(node: gs.Node) -> gs.Tensor | None:
    """The input ``node`` passes raw features on from, or None when it computes new ones:
    x + c, x - c, x * c, x / c keep them, where c makes no new axis or entries of x (not
    1 / x, nor a [N, 1] input times a [1, 64] table)."""
    if node.op in _LAYOUT_OPS or (node.domain == "ai.onnx.ml" and node.op in _ML_FEATURE_OPS):
        return node.inputs[0] if node.inputs else None
    if node.op not in _AFFINE_OPS or len(node.inputs) != 2:
        return None
    x, c = node.inputs
    if isinstance(x, gs.Constant) and node.op in ("Add", "Mul"):
        x, c = c, x
    if isinstance(x, gs.Constant) or not isinstance(c, gs.Constant) or x.shape is None:
        return None
    shape, dims = list(x.shape), list(np.shape(c.values))
    fits = len(dims) <= len(shape) and all(d == 1 or d == s for d, s in zip(reversed(dims), reversed(shape)))
    return x if fits else None


def matrix_problem(tensor: gs.Tensor, value: np.ndarray | None, what: str = "weight") -> str | None:
    """Why ``value``, the constant value of ``tensor`` (None: it has none), is no weight matrix, or None."""
    if value is None:
        return f"the {what} '{tensor.name}' is not a constant"
    return None if value.ndim == 2 else f"the {what} '{tensor.name}' has shape {list(value.shape)}, not a matrix"


def precision_problem(weight: np.ndarray | None, x: gs.Tensor) -> str | None:
    """Why a layer of this weight (None: not a constant) and input is not float32, or None."""
    if weight is not None and weight.dtype != np.float32:
        return f"the weight is {weight.dtype}, only float32 layers are rewritten"
    other = other_than_float32(x)
    return f"the input '{x.name}' is {other}, only float32 layers are rewritten" if other else None


def check(c: Candidate, ctx: Context) -> str | None:
    """The first reason ``c`` must not be rewritten, or None."""
    opts = ctx.options
    if ctx.opset < MIN_OPSET:
        return f"opset {ctx.opset} is older than the oldest the early-exit rewrite supports ({MIN_OPSET})"
    if c.problems:
        return c.problems[0]
    if c.weight is None:
        return f"the weight of {describe(c.reduction)} is not a constant"
    precision = precision_problem(c.weight, c.x)
    if precision:
        return precision
    if c.bias is None:
        return f"the bias of {describe(c.reduction)} is not a constant"
    conflict = _shape_conflict(c)
    if conflict:
        return conflict
    setting = opts.setting(c.layer)
    if setting.skip:
        return setting.skip_reason or "skipped by the config file"
    if not opts.include_first_layer and reads_raw_input(c.x, ctx):
        return ("its input is (or holds) a graph input (raw features are not exchangeable; --include-first-layer "
                "overrides)")
    if c.n < opts.min_units:
        return f"n = {c.n} input units, fewer than --min-units {opts.min_units}: a partial sum says too little"
    k = choose_k(setting.k, c.n)
    if not 1 <= k < c.n:
        return f"k = {k} {K_OUTSIDE} = {c.n - 1}"
    if setting.thresholds is not None and len(setting.thresholds) != c.outputs:
        # The user's own numbers, not a model the rule does not fit: stop, as for a bad value.
        raise ConfigError(f"layer {c.layer!r}: the config gives {len(setting.thresholds)} thresholds for its "
                          f"{c.outputs} output channels")
    if setting.rule == "certified" and not is_nonnegative(c.x):
        return f"the certified rule needs a non-negative input, and '{c.x.name}' is not known to be one"
    if setting.rule == "certified" and np.isnan(c.weight).any():
        # Its bound sums the positive tail weights; the op refuses a NaN sum.
        return "the certified rule needs weights without NaN"
    if opts.chosen is not None and c.layer not in opts.chosen:
        # A ResNet's shortcut conv shares its block's Add -> Relu with the main conv and
        # matches only once that conv is left alone: it was never calibrated or timed.
        return ("not among the layers the calibration or the latency objective chose: it shares its activation "
                "with another layer and matched only once that layer was left alone, after they had chosen, so it "
                "was not calibrated or timed as an early exit")
    return None


def _shape_conflict(c: Candidate) -> str | None:
    """A declared input shape (value_info) that cannot be the layer's: rewriting on it would fail."""
    shape = c.x.shape
    if shape is None:
        return None
    if c.kind == "conv":
        rank_ok, unit_axis = len(shape) == c.weight.ndim, 1
    else:
        rank_ok, unit_axis = len(shape) >= 2, (0 if c.reduction.attrs.get("transA", 0) else -1)
    if rank_ok and not (isinstance(shape[unit_axis], int) and shape[unit_axis] != c.n):
        return None
    return f"the input '{c.x.name}' is declared with shape {list(shape)}, which does not fit {c.n} input units"


# Ops whose output is >= 0 when their data inputs are (or always, for the first group).
_ALWAYS_NONNEGATIVE = {"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus"}
_KEEPS_SIGN = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose",
               "Identity", "Squeeze", "Unsqueeze", "Slice", "Concat", "Resize", "Upsample", "Pad", "Split",
               "MaxUnpool", "Dropout", "Gather"}


def is_nonnegative(t: gs.Tensor, depth: int = 0) -> bool:
    """Whether the graph guarantees ``t >= 0`` (it comes out of a ReLU-like op)."""
    if depth > 32 or not t.inputs:
        return False
    node = t.inputs[0]
    if node.domain == ops.DOMAIN:
        if node.op == ops.SPARSE_CONV:  # >= 0 only where it fuses the activation
            return node.attrs.get("activation", "none") in ("relu", b"relu")
        return node.op != ops.SPARSE_MATMUL  # an early-exit op's activation; a matmul's output has any sign
    if (node.domain or "") not in ("", "ai.onnx"):
        return False
    if node.op in _ALWAYS_NONNEGATIVE:
        return True
    if node.op == "Clip":
        low = node.attrs.get("min") if len(node.inputs) < 2 else _scalar(node.inputs[1])
        return low is not None and low >= 0
    if node.op in _KEEPS_SIGN:
        data = [node.inputs[0]] if node.op != "Concat" else list(node.inputs)
        return all(is_nonnegative(d, depth + 1) for d in data)
    return False


def _scalar(t: gs.Tensor) -> float | None:
    if isinstance(t, gs.Constant) and t.values.size == 1:
        return float(np.asarray(t.values).reshape(-1)[0])
    return None


def _slice(x: gs.Tensor, k: int, axis: int, ctx: Context, base: str) -> gs.Variable:
    shape = None
    if x.shape is not None:
        shape = list(x.shape)
        shape[axis] = k
    head = gs.Variable(unique_name(base + "_head_in", ctx.names), dtype=np.float32, shape=shape)
    name = unique_name(base + "_slice", ctx.names)
    if ctx.opset < 10:
        node = gs.Node("Slice", name=name, attrs={"starts": [0], "ends": [k], "axes": [axis]},
                       inputs=[x], outputs=[head])
    else:
        consts = [
            gs.Constant(unique_name(f"{base}_slice_{what}", ctx.names), np.array([v], dtype=np.int64))
            for what, v in (("starts", 0), ("ends", k), ("axes", axis))
        ]
        node = gs.Node("Slice", name=name, inputs=[x, *consts], outputs=[head])
    ctx.graph.nodes.append(node)
    return head


def unit_order(c: Candidate, order: str) -> np.ndarray:
    """The permutation of input units: stored order, or descending squared weight norm."""
    if order == "stored":
        return np.arange(c.n)
    w = c.weight.astype(np.float64)
    # Sum over everything but the unit axis: outputs, and kernel taps for Conv.
    energy = (w * w).sum(axis=1) if c.kind == "dense" else (w * w).sum(axis=tuple(i for i in range(w.ndim) if i != 1))
    return np.argsort(-energy, kind="stable")


def _gather(x: gs.Tensor, perm: np.ndarray, axis: int, ctx: Context, base: str,
            suffix: str = "_ordered") -> gs.Variable:
    shape = None
    if x.shape is not None:
        shape = list(x.shape)
        shape[axis] = len(perm)
    out = gs.Variable(unique_name(base + suffix, ctx.names), dtype=np.float32, shape=shape)
    index = gs.Constant(unique_name(base + "_unit_order", ctx.names), perm.astype(np.int64))
    ctx.graph.nodes.append(gs.Node("Gather", name=unique_name(base + "_reorder", ctx.names), attrs={"axis": axis},
                                   inputs=[x, index], outputs=[out]))
    return out


def _const(ctx: Context, base: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(unique_name(base, ctx.names), np.ascontiguousarray(value, dtype=np.float32))


def _product(c: Candidate, ctx: Context, head: gs.Tensor, w_head: np.ndarray, name: str) -> gs.Variable:
    """The ordinary op over the first k units: Conv with the layer's attributes, or MatMul."""
    # A head's output is the class index; its partial product has the logits' shape.
    shape = c.output.shape if c.head_keepdims is None else c.head_logits_shape
    result = gs.Variable(unique_name(name, ctx.names), dtype=np.float32, shape=shape)
    if c.kind == "conv":
        attrs = {a: v for a, v in c.conv_attrs.items() if a != "group"}
        node = gs.Node("Conv", name=unique_name(name + "_conv", ctx.names), attrs=attrs,
                       inputs=[head, _const(ctx, name + "_w", w_head)], outputs=[result])
    else:
        node = gs.Node("MatMul", name=unique_name(name + "_matmul", ctx.names),
                       inputs=[head, _const(ctx, name + "_w", w_head)], outputs=[result])
    ctx.graph.nodes.append(node)
    return result


def _squared(x: gs.Tensor, ctx: Context, base: str) -> gs.Variable:
    sq = gs.Variable(unique_name(base + "_sq", ctx.names), dtype=np.float32, shape=x.shape)
    ctx.graph.nodes.append(gs.Node("Mul", name=unique_name(base + "_square", ctx.names), inputs=[x, x], outputs=[sq]))
    return sq


def emit(c: Candidate, ctx: Context, op_type: str | None = None, extra_attrs: dict | None = None) -> Rewritten:
    """Replace the group by partial compute plus the early-exit op (the ReLU op of its kind,
    or ``op_type`` with ``extra_attrs`` for the arg-max head, whose output is an int64 index)."""
    setting = ctx.options.setting(c.layer)
    k = choose_k(setting.k, c.n)
    base = c.layer.replace(":", "_").strip("/") or "layer"
    axis = 1 if c.kind == "conv" else -1
    perm = unit_order(c, ctx.options.unit_order)
    x = c.x
    tail_units = None
    if not np.any(perm != np.arange(c.n)):
        head = _slice(x, k, axis, ctx, base)
    elif c.kind == "dense" and (op_type or ops.DENSE_RELU) == ops.DENSE_RELU:
        # The op gathers its tail itself (attribute tail_units): onnxruntime's Gather on
        # the last axis copies element by element, far slower than the op's loop.
        head = _gather(c.x, perm[:k], axis, ctx, base, "_head_in")
        tail_units = perm[k:]
    else:
        x = _gather(c.x, perm, axis, ctx, base)
        head = _slice(x, k, axis, ctx, base)
    if c.kind == "conv":
        weight = c.weight[:, perm]
        w_head, w_tail = weight[:, :k], weight[:, k:]
        op_type_default, op_attrs = ops.CONV_RELU, _conv_op_attrs(c)
    else:
        weight = c.weight[perm, :]
        w_head, w_tail = weight[:k, :], weight[k:, :].T
        op_type_default, op_attrs = ops.DENSE_RELU, {}
    op_type = op_type or op_type_default
    op_attrs.update(k=k, threshold=float(setting.threshold), **(extra_attrs or {}))
    if op_type != ops.ARGMAX_HEAD:
        op_attrs["clip_max"] = float(c.clip_max)
    if setting.rule == "threshold" and setting.thresholds is not None:
        op_attrs["thresholds"] = [float(t) for t in setting.thresholds]
    if tail_units is not None:
        op_attrs["tail_units"] = [int(u) for u in tail_units]
    inputs = [_product(c, ctx, head, w_head, base + "_partial"), x, _const(ctx, base + "_w_tail", w_tail),
              _const(ctx, base + "_bias", c.bias), c.residual or gs.Variable.empty()]
    if setting.rule == "statstest":
        op_attrs.update(rule="statstest", z_crit=float(setting.z_crit))
        inputs.append(_product(c, ctx, _squared(head, ctx, base), w_head * w_head, base + "_partial_sq"))
    elif setting.rule == "certified":
        positive = np.maximum(w_tail, 0).reshape(w_tail.shape[0], -1).astype(np.float64)
        op_attrs.update(rule="certified")
        inputs += [gs.Variable.empty(), _const(ctx, base + "_w_pos_sum", positive.sum(1)),
                   _const(ctx, base + "_w_pos_norm", np.sqrt((positive * positive).sum(1)))]
    while inputs[-1].name == "":
        inputs.pop()
    for node in [c.reduction, *c.chain]:
        node.outputs.clear()
    c.output.dtype = np.int64 if op_type == ops.ARGMAX_HEAD else np.float32
    outputs = [c.output]
    stats = None
    # Only the outermost graph can expose the counters as graph outputs.
    if ctx.options.emit_stats and ctx.graph is ctx.model_graph:
        stats = gs.Variable(unique_name(base + "_exprune_stats", ctx.names), dtype=np.int64, shape=[2])
        outputs.append(stats)
    node = gs.Node(op_type, name=unique_name(base + "_exprune", ctx.names), domain=ops.DOMAIN,
                   attrs=op_attrs, inputs=inputs, outputs=outputs)
    ctx.graph.nodes.append(node)
    return Rewritten(c, k, float(setting.threshold), node, stats, setting.rule, setting.z_crit, setting.thresholds)


def _conv_op_attrs(c: Candidate) -> dict:
    spatial = c.weight.ndim - 2
    a = c.conv_attrs
    auto_pad = a.get("auto_pad", "NOTSET")
    attrs = {
        "strides": list(a.get("strides", [1] * spatial)),
        "dilations": list(a.get("dilations", [1] * spatial)),
        "auto_pad": auto_pad,
    }
    # As on ONNX Conv, explicit pads only mean something without auto_pad.
    if auto_pad == "NOTSET":
        attrs["pads"] = list(a.get("pads", [0] * (2 * spatial)))
    return attrs
