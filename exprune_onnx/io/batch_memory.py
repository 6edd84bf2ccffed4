"""Whether a batch the user asked for fits in memory, checked before it is timed.

``--latency-batch 100000`` is one slip away from ``1000``. numpy and onnxruntime take
their memory lazily, so on Linux such a batch does not raise a MemoryError: the kernel's
OOM killer ends the process (exit 137, no message) once the pages are touched. So the
commands that time at a batch add up what the run must hold at the least and refuse the
batch when that exceeds the memory available (memory_room.py): the input batches they
keep, which onnxruntime reads in place, and per session the tensors of the model's largest
step at that batch (shape inference at a symbolic batch), as onnxruntime's arena keeps a
session's memory from one run to the next. Tensors whose size shape inference cannot
tell are left out, so the check may let through a batch that will not fit; it does not
refuse one that does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import onnx

from ..errors import DataError
from ..ops import DOMAIN
from .bigmodel import SHAPES_STUB_BYTES, elements_nbytes, skeleton
from .feeds import fixed_batch, model_inputs
from .memory_room import available_bytes, size_text

if TYPE_CHECKING:
    from .data import Dataset

_BATCH = "exprune_batch"  # the symbolic batch that shape inference carries through the graph
# ONNX ops that hold their inputs and their output at once however onnxruntime fuses them
# (a Transpose or Pad may be folded into its consumer and never exist; Relu, Add and the
# like may write over their input).
_NEW_OUTPUT = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MatMul", "MatMulInteger", "Gemm",
                         "MaxPool", "AveragePool", "LpPool", "Concat", "Resize"})


def feedable(model: onnx.ModelProto, data: Dataset) -> Dataset:
    """``data``, unless the batch its runs must have (--input-shape fixing the batch dim)
    cannot be fed in memory: refused before any run tries (it ran out of memory 30 s into
    allocating 292 GiB)."""
    if data.batch is not None and data.batch > 1:
        check_batch_memory([("original", model)], data, data.batch, "--input-shape batch")
    return data


def check_batch_memory(sessions: Sequence[tuple[str, onnx.ModelProto]], data: Dataset, batch: int, what: str,
                       feeds: int = 1, available: int | None = None) -> None:
    """Refuse ``batch`` (the option ``what``) when ``feeds`` batches of ``data``'s inputs
    and, for each (name, model) of ``sessions``, a session holding its largest step at that
    batch exceed the memory available (measured unless given). A model whose own inputs fix
    the batch runs at that one and is not checked (unless the data free it: an input
    fixed at 1 that they give whole)."""
    if batch <= 1 or (fixed_batch(sessions[0][1]) is not None and data.batch is not None):
        return
    available = available_bytes() if available is None else available
    if available is None:
        return
    per_input = sum(v[:1].nbytes for v in data.inputs.values()) + \
        sum(data.shared[k].nbytes // max(data.shared[k].shape[axis], 1) for k, axis in data.shared_axes.items())
    steps = {}  # per model: the same model twice is inferred once
    for _, model in sessions:
        if id(model) not in steps:
            steps[id(model)] = largest_step(model, data)
    held = sum(steps[id(m)][0] for _, m in sessions)
    if batch * (feeds * per_input + held) <= available:
        return
    raise DataError(_refusal(what, batch, feeds * per_input, held, sessions, steps, available))


def _refusal(what, batch, inputs, held, sessions, steps, available) -> str:
    need = batch * (inputs + held)
    parts = [f"{size_text(batch * inputs)} of input batches"]
    if held:
        name, model = max(sessions, key=lambda s: steps[id(s[1])][0])
        size, where = steps[id(model)]
        parts.append(f"{size_text(batch * held)} for {len(sessions)} onnxruntime session(s), the largest step "
                     f"being {where} of the {name} model at {size_text(batch * size)}")
    fits = available // (inputs + held)
    return (f"{what} {batch} needs at least {size_text(need)} of memory ({'; '.join(parts)}) and "
            f"{size_text(available)} is available: use a smaller {what}"
            + (f"; at most {fits} can fit" if fits > 1 else ""))


def largest_step(model: onnx.ModelProto, data: Dataset) -> tuple[int, str]:
    """Bytes per sample that the model's largest step allocates, and which step it is: an
    ONNX op that writes a new tensor holds its inputs and its output at once, any other may
    write over an input (onnxruntime runs Relu or Add in place) and counts as its largest
    tensor. The graph's inputs are the caller's (counted with the input batches). Only
    tensors whose size shape inference gives as a number times the batch count; (0, "")
    when there are none."""
    from ..compiler.pipeline import infer_shapes

    sizes = _sample_bytes(infer_shapes(_symbolic_batch(model, data)))
    for vi in model.graph.input:
        sizes.pop(vi.name, None)
    best = (0, "")
    for node in model.graph.node:
        # (Gemm may write Y over C.)
        reads = node.input[:2] if node.op_type == "Gemm" else node.input
        held = {n: sizes[n] for n in list(reads) + list(node.output) if n in sizes}
        if not held:
            continue
        new_output = (node.domain in ("", "ai.onnx") and node.op_type in _NEW_OUTPUT) or node.domain == DOMAIN
        total = sum(held.values()) if new_output else max(held.values())
        if total > best[0]:
            label = node.name or (node.output[0] if node.output else "")
            best = (total, f"{node.op_type} '{label}'" if label else node.op_type)
    return best


def _sample_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Per tensor of the [.., _BATCH, ..] kind with every other dim known, its bytes per sample."""
    g = model.graph
    sizes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if not t.HasField("shape") or t.elem_type in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING):
            continue
        dims = list(t.shape.dim)
        known = all(d.dim_param == _BATCH or (d.HasField("dim_value") and d.dim_value >= 0) for d in dims)
        if known and sum(d.dim_param == _BATCH for d in dims) == 1:
            sizes[vi.name] = elements_nbytes(math.prod(d.dim_value for d in dims if d.dim_param != _BATCH),
                                             t.elem_type)
    return sizes


def _symbolic_batch(model: onnx.ModelProto, data: Dataset) -> onnx.ModelProto:
    """A light copy of the model (bigmodel.skeleton) with its batched inputs [_BATCH, the
    data's sample shape], its other inputs at the data's shape, and the batch's own name in
    its declared outputs replaced by _BATCH too."""
    light = skeleton(model, stub_from=SHAPES_STUB_BYTES)
    g = light.graph
    arrays = {**data.inputs, **data.shared}
    names = set()  # the batch's own names (dim_param) in the model
    for vi in model_inputs(light):
        a = arrays.get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        if a is None or not vi.type.tensor_type.HasField("shape") or len(dims) != a.ndim:
            continue
        batch_axis = 0 if vi.name in data.inputs else data.shared_axes.get(vi.name)  # (a state's: its own)
        for i, d in enumerate(dims):
            if i == batch_axis:
                if d.dim_param:
                    names.add(d.dim_param)
                d.Clear()
                d.dim_param = _BATCH
            elif not d.HasField("dim_value"):
                d.dim_value = int(a.shape[i])
    for vi in g.output:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in names:
                d.dim_param = _BATCH
    return light
