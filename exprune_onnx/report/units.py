"""How FLOPs figures are shown: in the largest unit that leaves them at least 1, and
what the dense count covers."""

from __future__ import annotations

import onnx

from .. import ops
from ..io.modelio import all_nodes
from ..measure.flops import LESS_COMMON, RUNTIME_FUSED, uncovered, uncovered_names

# FLOPs are shown in the largest of these units that leaves the figure at least 1: a small
# model's were "0.00 MFLOPs".
_UNITS = ((1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs"))


def flops_unit(value: float | None, largest: float = 1e9) -> tuple[float, str]:
    """The scale and name of the unit ``value`` is shown in, at most ``largest``."""
    for scale, name in _UNITS:
        if scale <= largest and value is not None and abs(value) >= scale:
            return scale, name
    return 1.0, "FLOPs"


def scaled(value, scale: float) -> str:
    """``value`` (None: '?') divided by ``scale``, without its unit."""
    return "?" if value is None else f"{value / scale:.2f}" if scale > 1 else f"{value:.0f}"


def flops_text(value, like=None) -> str:
    """``value`` with its unit ('44.24 MFLOPs'), in the unit that suits ``like`` where given,
    so that figures set side by side share one."""
    scale, name = flops_unit(value if like is None else like)
    return f"{scaled(value, scale)} {name}"


def shape_hint(model: onnx.ModelProto, given: dict | None = None) -> str:
    """Why shapes may be unknown: symbolic input dims past the batch axis (FLOPs are per
    sample) that ``given`` (--input-shape) does not fix, or ops shape inference cannot see
    through, or shapes computed at run time (a Reshape to a shape taken from a tensor)."""
    from ..io.feeds import input_dims, model_inputs

    given = given or {}
    if any(not (isinstance(d, int) and d > 0) for vi in model_inputs(model) if vi.name not in given
           for d in input_dims(vi)[1:]):
        return "--input-shape fixes symbolic input dims"
    from ..compiler.unfuse import splits

    foreign = sorted({f"{n.domain}.{n.op_type}" for n in all_nodes(model.graph)  # (split ones are inferred as Convs)
                      if n.domain not in ("", "ai.onnx", "ai.onnx.ml", ops.DOMAIN) and not splits(n)})
    if foreign:
        return f"shape inference does not pass {', '.join(foreign[:3])}"
    return "shape inference cannot size them, e.g. after a Reshape to a shape computed at run time"


def counted_ops(model: onnx.ModelProto) -> str:
    """The op types the dense FLOPs count, the less common ones only where the model has them."""
    present = {n.op_type for n in all_nodes(model.graph)}
    fused = {n.op_type for n in all_nodes(model.graph) if (n.domain, n.op_type) in RUNTIME_FUSED}
    return "/".join(["Conv", "Gemm", "MatMul", *[op for op in LESS_COMMON if op in present], *sorted(fused)])


def dense_flops_text(result) -> str:
    """A compiler Result's dense FLOPs per sample, saying what is left uncounted (shapes
    unknown, or products the count does not cover: flops.UNCOVERED)."""
    hint = shape_hint(result.model, result.input_shapes)
    nodes = list(all_nodes(result.model.graph))
    others = sum(uncovered(n) for n in nodes)
    unsized = max(result.uncounted_nodes - others, 0)
    foreign = f"{uncovered_names(nodes)} (integer or onnxruntime-internal products this count does not cover)"
    if not result.dense_flops:
        if unsized > 0:
            return f"unknown: no shape of the {unsized} {counted_ops(result.model)} nodes is known ({hint})" + \
                (f"; not counted: {foreign}" if others else "")
        return f"none counted: {foreign}" if others else "none counted: the model has no float Conv, Gemm or MatMul"
    dense = f"{flops_text(result.dense_flops)} per sample ({counted_ops(result.model)})"
    if unsized > 0:
        dense += f", {unsized} node(s) with unknown shapes not counted ({hint})"
    return dense + (f", not counted: {foreign}" if others else "")
