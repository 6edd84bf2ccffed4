"""Whether a batch the user asked for fits in memory, checked before anything is allocated.

``--latency-batch 100000`` is one slip away from ``1000``. numpy and onnxruntime take
their memory lazily, so on Linux such a batch does not raise a MemoryError: the kernel's
OOM killer ends the process (exit 137, no message) once the pages are touched. So the
commands that take a batch add up what the run must hold at the least, the feeds it keeps
and the largest tensor the model makes at that batch (shape inference at a symbolic
batch), and refuse it when that exceeds the memory available. Tensors whose size shape
inference cannot tell are left out, so the check may let a batch through that will not
fit; it never refuses one that does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import onnx

from ..errors import DataError
from ..ops import DOMAIN
from .data import Dataset
from .feeds import model_inputs

_BATCH = "exprune_batch"  # the symbolic batch that shape inference carries through the graph
# Ops that hold their inputs and their output at once however onnxruntime fuses them (a
# Transpose or Pad may be folded into its consumer, and never exist).
_NEW_OUTPUT = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MatMul", "MatMulInteger", "Gemm",
                         "MaxPool", "AveragePool", "LpPool", "Concat", "Resize"})
_SMALL = 4096  # initializer elements kept for shape inference (Reshape's shapes); larger ones lose their data


def check_batch_memory(models: Sequence[onnx.ModelProto], data: Dataset, batch: int, what: str, feeds: int = 1,
                       available: int | None = None) -> None:
    """Refuse ``batch`` (the option ``what``) when ``feeds`` batches of ``data``'s inputs,
    and a session of each of ``models`` at that batch holding the tensors of its largest
    step (onnxruntime's arena keeps a session's memory between runs), exceed the memory
    available (measured unless given). Inputs that fix the batch are not checked: the
    model runs at that one."""
    available = available_bytes() if available is None else available
    if data.batch is not None or available is None or batch <= 1:
        return
    per_input = sum(v[:1].nbytes for v in data.inputs.values())
    steps = [largest_step(m, data) for m in models]
    per_sample = feeds * per_input + sum(size for size, _ in steps)
    if batch * per_sample <= available:
        return
    held = f"{size_text(batch * feeds * per_input)} for {feeds} batch{'es' if feeds > 1 else ''} of inputs"
    size, where = max(steps, default=(0, ""))
    if size:
        held += f", {size_text(batch * (per_sample - feeds * per_input))} for {len(models)} session" \
                f"{'s' if len(models) > 1 else ''} (the largest step: {where}, {size_text(batch * size)})"
    raise DataError(f"{what} {batch} needs at least {size_text(batch * per_sample)} of memory ({held}), and "
                    f"{size_text(available)} is available: use a smaller {what} (more than {available // per_sample} "
                    "cannot fit)")


def largest_step(model: onnx.ModelProto, data: Dataset) -> tuple[int, str]:
    """Bytes per sample that the model's largest step holds at once, and which step: a
    node that writes a new tensor holds its inputs and outputs; any other may write over
    an input (onnxruntime runs Relu or Add in place), so it counts as its largest tensor.
    Only tensors whose size shape inference gives as a number times the batch count;
    (0, "") when there are none."""
    from ..compiler.pipeline import infer_shapes

    sizes = _sample_bytes(infer_shapes(_symbolic_batch(model, data)))
    best = (0, "")
    for node in model.graph.node:
        held = {n: sizes[n] for n in list(node.input) + list(node.output) if n in sizes}
        if not held:
            continue
        total = sum(held.values()) if node.op_type in _NEW_OUTPUT or node.domain == DOMAIN else max(held.values())
        best = max(best, (total, f"{node.op_type} '{node.name or node.output[0]}'"))
    return best


def _sample_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Per tensor of the [_BATCH, ...] kind with every other dim known, its bytes per sample."""
    g = model.graph
    sizes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if not t.HasField("shape") or t.elem_type in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING):
            continue
        dims = list(t.shape.dim)
        known = all(d.dim_param == _BATCH or (d.HasField("dim_value") and d.dim_value >= 0) for d in dims)
        if known and sum(d.dim_param == _BATCH for d in dims) == 1:
            count = math.prod(d.dim_value for d in dims if d.dim_param != _BATCH)
            sizes[vi.name] = count * onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
    return sizes


def _symbolic_batch(model: onnx.ModelProto, data: Dataset) -> onnx.ModelProto:
    """A light copy of the model, whose large initializers keep their shapes but not their
    values (shape inference reads only small ones, such as Reshape's shapes), with its
    batched inputs [_BATCH, the data's sample shape] and its other inputs at the data's shape."""
    light = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import, functions=model.functions)
    g = light.graph
    for name in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(g, name).extend(getattr(model.graph, name))
    for init in model.graph.initializer:
        small = math.prod(init.dims) <= _SMALL and init.data_location != onnx.TensorProto.EXTERNAL
        g.initializer.append(init if small else onnx.TensorProto(name=init.name, dims=init.dims,
                                                                 data_type=init.data_type))
    arrays = {**data.inputs, **data.shared}
    for vi in model_inputs(light):
        a = arrays.get(vi.name)
        if a is None or not vi.type.tensor_type.HasField("shape") or len(vi.type.tensor_type.shape.dim) != a.ndim:
            continue
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if i == 0 and vi.name in data.inputs:
                d.Clear()
                d.dim_param = _BATCH
            elif not d.HasField("dim_value"):
                d.dim_value = int(a.shape[i])
    return light


def available_bytes(meminfo: str = "/proc/meminfo", proc_cgroup: str = "/proc/self/cgroup",
                    cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """Memory this process can still take: the system's MemAvailable, or less where a
    cgroup (v2) above the process caps it; None where neither can be read (not Linux)."""
    found = []
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    room = _cgroup_room(proc_cgroup, cgroup_root)
    if room is not None:
        found.append(room)
    return min(found) if found else None


def _cgroup_room(proc_cgroup: str, cgroup_root: str) -> int | None:
    """The least of limit - usage over the process's cgroup and its parents that set a limit."""
    try:
        path = next(line[3:] for line in Path(proc_cgroup).read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        return None
    rooms = []
    parts = [p for p in path.strip().split("/") if p]
    for depth in range(len(parts), -1, -1):
        folder = Path(cgroup_root, *parts[:depth])
        try:
            limit = (folder / "memory.max").read_text().strip()
            used = int((folder / "memory.current").read_text().strip())
        except (OSError, ValueError):
            continue
        if limit != "max":
            rooms.append(max(int(limit) - used, 0))
    return min(rooms) if rooms else None


def size_text(n: float) -> str:
    """Bytes for a message: GiB to one decimal, else whole MiB, else whole KiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if unit == "GiB" else f"{n / size:.0f} {unit}"
    return f"{max(n / 1024, 1):.0f} KiB"
