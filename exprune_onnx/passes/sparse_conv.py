"""Zero-input skipping for convolutions: a Conv reading a ReLU's zeros visits only the non-zero inputs.

    Relu | Clip(0, .) | early-exit op [-> MaxPool, 1x1 AveragePool, Identity, Dropout, Pad, nearest Resize,
                                        Reshape, Transpose, Split, Slice, ...] -> x
      (or a Concat of such, each part from one of them);
    Conv(x, W[, b]) [-> Add(bias) | Mul(scale)]* [-> Add(residual)] [-> Add(bias)]* [-> Relu | Clip(0, c)]
      =>  ExPruneSparseConv(x, w, bias[, residual]; activation, clip_max)

``w`` is ``W`` repacked once, here, as ``[C, KH, KW, M / group]`` (input channel first, so
that one non-zero input reads one contiguous block of weights):
``w[c, ky, kx, j] = W[(c // (C / group)) * (M / group) + j, c % (C / group), ky, kx]``.
A 1-D conv (text and audio CNNs) is the same without ``ky``: ``w[C, KW, M / group]``.
BatchNormalization was folded into ``W`` and ``b`` by canonicalisation; the constant Adds
and Muls of the canonical group fold into the bias and the weights
(``rules/chain.py``). Where the Conv's output does not end in a ReLU-family activation
(or the group cannot be fused: an intermediate used twice, a residual of another shape)
the op computes the Conv and its own bias alone and the rest of the graph stays as it was.

Skipping a zero input drops ``0 * w``, which is exact for finite weights, so the result
is the Conv's up to float summation order whatever the zero fraction; whether it is
faster depends on how many zeros there are (docs/sparse_conv.md). So, as for
MatMul/Gemm (passes/sparse_input.py), a Conv after a plain Relu/Clip, a MaxPool of one, or
an ``ExPruneSparseConv`` that ends in a ReLU is rewritten only with ``sparse_relu = "on"``
(``sparse_relu_layers`` names the ones the latency objective kept); one after an
early-exit op (``ExPruneConvRelu``, ``ExPruneDenseRelu``) with ``sparse_input`` alone.

Exporters: PyTorch (Conv2d [+ BatchNorm] [+ ReLU/ReLU6], ResNet's skip Add before the
last ReLU, ShuffleNet's channel shuffle and split before a conv), tf2onnx (NHWC models
keep their Transposes at the model's edges after tf2onnx's optimiser; a Conv reading one
reads the zeros it moved), Caffe2 (BatchNorm as Mul + Add, Sum joins).
Convs inside If/Loop/Scan bodies are matched like the outer graph's (pipeline contexts).

Like passes/sparse_input.py this is a pass after the early-exit rewrites, not one of
``rules.RULES``; its output reads as a ReLU's only when it fuses one, and a second run
finds no Conv left to rewrite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.graphutil import const_value, other_than_float32, unique_name
from ..rules import chain, common
from ..rules.base import Context, NoMatch
from . import sparse_input, zeros
from .sparse_input import EARLY_EXIT, SparseRewrite, _private, _zero_floor, match_all, relu_sparse_conv

NAME = "sparse_conv"
# Fewer output channels per group fill under half of an AVX-512 vector per listed input:
# `python -m bench.sparse_conv_groups` (docs/sparse_conv.md has its table) puts the op at
# 19-51x onnxruntime's time for depthwise, 1.6-4.4x for 2 and 4 outputs a group, at 50-90%
# zeros; 0.7-1.2x for 8 and 16.
MIN_GROUP_OUTPUTS = 8
_CONV_ATTRS = ("strides", "pads", "dilations", "auto_pad", "group")


@dataclass
class ConvConsumer:
    """A Conv that reads zeros, and the group after it that the op computes too."""

    layer: str
    conv: gs.Node
    source: str  # the op type that writes the zeros (through a MaxPool or not: passes/zeros.py)
    x: gs.Tensor
    w: np.ndarray  # [M, C/group, *K] float32, scale folded in
    bias: np.ndarray | None  # [M] float32
    group: chain.Chain | None  # the fused group after the Conv, or None for the Conv alone
    output: gs.Tensor

    @property
    def nodes(self) -> list[gs.Node]:
        return [self.conv] + (self.group.nodes if self.group is not None else [])


def zero_source(x: gs.Tensor, ctx: Context) -> gs.Node | None:
    """The node whose exact zeros ``x`` carries (through a MaxPool or other ops that keep
    them, passes/zeros.py), or None. Through a Concat every input must carry some: the
    source named is then a plain ReLU if any is (it sets the --sparse-relu gate), else the
    first early-exit op."""
    sources = zero_sources(x, ctx)
    if not sources or any(s is None for s in sources):
        return None
    return next((s for s in sources if s.domain != ops.DOMAIN), sources[0])


def zero_sources(x: gs.Tensor, ctx: Context) -> list[gs.Node | None]:
    """Each op whose zeros ``x`` carries (one a part of a Concat), None for a part with none."""
    return [_source(w, ctx) for w in zeros.zero_writers(x)]


def _source(producer: gs.Node | None, ctx: Context) -> gs.Node | None:
    """``producer`` if its outputs floor at exact zeros, else None."""
    if producer is None:
        return None
    if producer.domain == ops.DOMAIN:
        return producer if producer.op in EARLY_EXIT or relu_sparse_conv(producer) else None
    return producer if chain.is_default_domain(producer) and _zero_floor(producer, ctx) else None


def _gate(x: gs.Tensor, source: gs.Node, layer: str, ctx: Context) -> str | None:
    """Why a Conv after this source may not be rewritten under the options, or None."""
    if source.op in EARLY_EXIT and source.domain == ops.DOMAIN:
        return None
    others = len({id(s) for s in zero_sources(x, ctx)} - {id(source)})
    return sparse_input.plain_relu_gate(x, source, layer, ctx, others)


def match(node: gs.Node, ctx: Context) -> ConvConsumer | NoMatch | None:
    """Read-only: the consumer in the op's terms, why it cannot be one, or None if unrelated."""
    if node.op != "Conv" or not chain.is_default_domain(node) or not node.outputs or len(node.inputs) < 2:
        return None
    x = node.inputs[0]
    source = zero_source(x, ctx)
    if source is None or sparse_input.partial_product(node):
        return None
    layer = common.layer_name(node, ctx)

    def no(reason: str) -> NoMatch:
        return NoMatch(NAME, layer, node.op, reason)

    other = other_than_float32(x)
    if other:  # before the gate: no switch would change it
        return no(f"the input '{x.name}' is {other}, only float32 is read sparsely")
    stored = node.inputs[1]
    w = const_value(stored, ctx.opset)
    rank = w.ndim if w is not None and w.ndim in (3, 4) else 4
    why = sparse_input.weight_problem(stored, w, rank, "but only 1-D and 2-D convolutions are read sparsely")
    if why:
        return no(why)
    if not np.isfinite(w).all():
        return no(f"the weight '{stored.name}' holds NaN or Inf: skipping a zero input would drop 0 * Inf = NaN")
    why = common.same_pad_problem(node.attrs, w.shape[2:])
    if why:
        return no(why)
    m, cg = int(w.shape[0]), int(w.shape[1])
    group = int(node.attrs.get("group", 1))
    if group < 1 or m % group:
        return no(f"group = {group} does not divide the {m} output channels")
    if group > 1 and m // group < MIN_GROUP_OUTPUTS:
        return no(f"{m // group} output channel(s) per group ({'depthwise' if cg == 1 else f'group = {group}'}): "
                  f"the op's vectors of outputs run nearly empty, and onnxruntime's grouped Conv is faster")
    shape = x.shape
    if shape is not None and (len(shape) != rank or (isinstance(shape[1], int) and shape[1] != cg * group)):
        return no(f"the input '{x.name}' has shape {list(shape)}, not [N, {cg * group}, {'H, W' if rank == 4 else 'L'}]")
    if not _private(stored, w.size, ctx):
        return no(f"the weight '{stored.name}' also feeds other nodes or is an output; the repacked copy would store "
                  "it twice")
    if len(node.inputs) > 2 and node.inputs[2].name:
        b = const_value(node.inputs[2], ctx.opset)
        if b is None or b.size != m or b.dtype.kind != "f":
            return no(f"the bias '{node.inputs[2].name}' is not a constant with one value per output channel")
    # After the layer's own problems, which no switch would change (they are the reason to give).
    why = _gate(x, source, layer, ctx)
    if why:
        return no(why)
    w, bias = _conv_alone(node, ctx)
    fused = _fusable(node, ctx, m, rank)
    if fused is not None:
        fw = w * per_output(fused.scale, rank).astype(np.float32) if not np.all(fused.scale == 1) else w
        fb = (fused.bias + fused.scale * (bias if bias is not None else 0.0)).astype(np.float32)
        if np.isfinite(fw).all() and np.isfinite(fb).all():  # else the group stays after the op
            w, bias = fw, fb
        else:
            fused = None
    output = fused.output if fused is not None else node.outputs[0]
    return ConvConsumer(layer, node, source.op, x, np.ascontiguousarray(w, dtype=np.float32), bias, fused, output)


def per_output(values: np.ndarray, rank: int) -> np.ndarray:
    """One value per output channel, shaped to scale a Conv weight of ``rank`` dims."""
    return values.reshape((-1,) + (1,) * (rank - 1))


def _fusable(conv: gs.Node, ctx: Context, m: int, rank: int) -> chain.Chain | None:
    """The canonical group after the Conv when the op can compute it whole, else None."""
    found = chain.follow(conv.outputs[0], ctx, m, 1, rank)  # a string too where a rewrite took the group
    if isinstance(found, str) or found.problems:
        return None
    residual = found.residual
    if residual is not None and residual.dtype is not None and np.dtype(residual.dtype) != np.float32:
        return None
    return found


def repack(w: np.ndarray, group: int) -> np.ndarray:
    """``W[M, C/group, *K]`` as the op's ``[C, *K, M/group]`` float32 (module docstring)."""
    return np.ascontiguousarray(ops.sparse_conv_weights(w, group), dtype=np.float32)


def op_attrs(conv: gs.Node, w_shape, clip_max: float | None) -> dict:
    """The op's attributes: the Conv's own, the kernel shape, and the fused activation."""
    attrs = {a: conv.attrs[a] for a in _CONV_ATTRS if a in conv.attrs}
    attrs["kernel_shape"] = [int(d) for d in w_shape[2:]]
    if clip_max is not None:
        attrs["activation"] = "relu"
        if math.isfinite(clip_max):
            attrs["clip_max"] = float(clip_max)
    return attrs


def rewrite(c: ConvConsumer, ctx: Context) -> SparseRewrite:
    base = c.layer.replace(":", "_").strip("/") or "layer"
    group = int(c.conv.attrs.get("group", 1))
    inputs = [c.x, gs.Constant(unique_name(base + "_w_sparse", ctx.names), repack(c.w, group))]
    residual = c.group.residual if c.group is not None else None
    if c.bias is not None:
        inputs.append(gs.Constant(unique_name(base + "_bias_sparse", ctx.names), c.bias))
    elif residual is not None:
        inputs.append(gs.Variable.empty())
    if residual is not None:
        inputs.append(residual)
    attrs = op_attrs(c.conv, c.w.shape, c.group.clip_max if c.group is not None else None)
    op_types = [n.op for n in c.nodes]
    for node in c.nodes:
        node.outputs.clear()
    c.output.dtype = np.float32
    outputs = [c.output]
    if ctx.options.emit_stats and ctx.graph is ctx.model_graph:
        outputs.append(gs.Variable(unique_name(base + "_sparse_stats", ctx.names), dtype=np.int64, shape=[2]))
    node = gs.Node(ops.SPARSE_CONV, name=unique_name(base + "_sparse", ctx.names), domain=ops.DOMAIN,
                   attrs=attrs, inputs=inputs, outputs=outputs)
    ctx.graph.nodes.append(node)
    return SparseRewrite(c.layer, op_types, node, c.source)


def apply(contexts: list[Context]) -> tuple[list[SparseRewrite], list[NoMatch]]:
    """Match every Conv of every graph, then rewrite the ones that qualify.

    Two Convs may end in the same Add -> Relu (a ResNet block's main and shortcut
    convs); the larger one fuses the group and the other is rewritten alone, its output
    becoming the residual."""
    found, rejected = match_all(contexts, match)
    found.sort(key=lambda item: -item[0].w.size)
    claimed: set[int] = set()
    for c, ctx in found:
        if c.group is not None and any(id(n) in claimed for n in c.group.nodes):
            _unfuse(c, ctx)
        claimed.update(id(n) for n in c.nodes)
    return [rewrite(c, ctx) for c, ctx in found], rejected


def _conv_alone(conv: gs.Node, ctx: Context) -> tuple[np.ndarray, np.ndarray | None]:
    """The Conv's own weight and bias as float32 (both checked constant by ``match``)."""
    w = np.ascontiguousarray(const_value(conv.inputs[1], ctx.opset), dtype=np.float32)
    bias = None
    if len(conv.inputs) > 2 and conv.inputs[2].name:
        bias = const_value(conv.inputs[2], ctx.opset).reshape(-1).astype(np.float32)
    return w, bias


def _unfuse(c: ConvConsumer, ctx: Context) -> None:
    """Make ``c`` the Conv alone: another consumer fuses the group it shares."""
    c.group, c.output = None, c.conv.outputs[0]
    c.w, c.bias = _conv_alone(c.conv, ctx)


def unpack(w: np.ndarray, group: int) -> np.ndarray:
    """The op's ``[C, *K, M/group]`` weight back as Conv's ``W[M, C/group, *K]``."""
    c, *kernel, mg = w.shape
    cg = c // group
    order = (0, 2 + len(kernel), 1, *range(2, 2 + len(kernel)))
    return np.ascontiguousarray(w.reshape(group, cg, *kernel, mg).transpose(order).reshape(group * mg, cg, *kernel))
