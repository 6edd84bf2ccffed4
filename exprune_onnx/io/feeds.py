"""What a model's inputs accept: their dims, a fixed batch, ``--input-shape``,
``--input-value`` and seeded random values for inputs nobody gave data for.

* An input's first axis is its batch axis (the sample axis of every data file) unless
  the input is a scalar (rank 0: a sample rate, a step count) or its first dim is a
  number that is not the batch (``batch_layout``: a per-channel scale [C, 1, 1] beside
  an image [1, 3, H, W]): those are fed as they are to every run, and a data file
  holds them whole.
* A **fixed batch** B (every batched input's first dim is the same number) means every
  run feeds exactly B samples; a symbolic first dim takes any number.
* ``--input-shape NAME:D1,D2,...`` names numbers for symbolic dims (a dim written as
  a name, e.g. ``N``, stays symbolic). It is used for random inputs, shape inference
  and FLOPs accounting; the written model keeps its symbolic dims.
* ``--input-value NAME:VALUE`` (a number: every element is VALUE) or
  ``NAME:LOW..HIGH`` (seeded random values: integers in [LOW, HIGH], floats in
  [LOW, HIGH)) says what random values an input takes.

Without ``--input-value``: floats are uniform in [0, 1); integers that are the
indices of a Gather on a constant table (token ids into an embedding) are uniform
over the table's rows; booleans, and integers named as a mask (``attention_mask``), are
all True or 1 (a mask that keeps everything; io/data.py flips them where that makes the
model answer NaN: a padding mask); any other integer input (a sample rate, a length) has
no sensible random value, so the error asks for ``--input-value``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import DataError
from .id_inputs import is_mask, table_rows
from .memory_room import available_bytes, size_text

# Random values are drawn in 64 bits this many at a time, then stored in the input's type.
_RANDOM_CHUNK = 1 << 20
_NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8, onnx.TensorProto.BOOL: np.bool_,
}


@dataclass
class InputSpec:
    """What the user said about the inputs: ``shapes`` name -> dims (an int, or a str
    that stays symbolic), ``values`` name -> (low, high) (low == high: a constant)."""

    shapes: dict[str, tuple] = field(default_factory=dict)
    values: dict[str, tuple[float, float]] = field(default_factory=dict)


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim]


def input_dtype(vi: onnx.ValueInfoProto):
    return _NP_TYPES.get(vi.type.tensor_type.elem_type)


_MAX_DIM = 2**63 - 1


def parse_input_shape(text: str) -> tuple[str, tuple]:
    """``NAME:D1,D2,...`` -> (NAME, dims); a dim that is not a number stays symbolic."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise ValueError(f"expected NAME:D1,D2,... (e.g. x:1,3,224,224), got {text!r}")
    if not dims.strip():
        raise ValueError(f"expected NAME:D1,D2,... (e.g. x:1,3,224,224), got {text!r}: no dims")
    parts = [d.strip() for d in dims.split(",")]
    out = []
    for i, d in enumerate(parts):
        if d.isdigit() and int(d) > _MAX_DIM:  # ONNX dims are int64; any such tensor is past any memory
            raise ValueError(f"{text!r}: the dim {d} is too large (an ONNX dim is at most {_MAX_DIM})")
        if d.isdigit() and int(d) >= (i == 0):  # 0 past the first: an empty cache, say
            out.append(int(d))
        elif d and (d[0].isalpha() or d[0] == "_"):
            out.append(d)
        else:
            raise ValueError(f"{text!r}: each dim must be a number (>= 1 for the first) or a name, got {d!r}")
    return name, tuple(out)


def parse_input_value(text: str) -> tuple[str, tuple[float, float]]:
    """``NAME:VALUE`` or ``NAME:LOW..HIGH`` -> (NAME, (low, high))."""
    name, sep, value = text.rpartition(":")
    low, dots, high = value.partition("..")
    try:
        bounds = (float(low), float(high if dots else low))
    except ValueError:
        bounds = None
    if not sep or not name or bounds is None or not all(np.isfinite(bounds)):
        raise ValueError(f"expected NAME:VALUE or NAME:LOW..HIGH (e.g. sample_rate:16000, ids:0..999), got {text!r}")
    if bounds[0] > bounds[1]:
        raise ValueError(f"{text!r}: LOW ({low}) is above HIGH ({high}); give NAME:LOW..HIGH")
    return name, bounds


def check_spec(model: onnx.ModelProto, spec: InputSpec) -> None:
    """Every named input exists and every given shape agrees with the model's fixed dims."""
    inputs = {vi.name: vi for vi in model_inputs(model)}
    for name in [*spec.shapes, *spec.values]:
        if name not in inputs:
            raise DataError(f"--input-shape/--input-value names '{name}', which is not a model input "
                            f"(its inputs: {', '.join(inputs) or 'none'})")
    for name, (low, high) in spec.values.items():
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inputs[name].type.tensor_type.elem_type)
        if dtype.kind == "b" and not {low, high} <= {0, 1}:  # (0.5 raised numpy's 'low >= high'; 5 became True)
            raise DataError(f"--input-value {name}: the input is bool: give 0, 1 or 0..1, not {low:g}..{high:g}")
        if dtype.kind in "iu" and np.ceil(low) > np.floor(high):
            raise DataError(f"--input-value {name}: {low:g}..{high:g} holds no whole number, and the input is {dtype}")
        if dtype.kind in "iu" and (low < np.iinfo(dtype).min or high > np.iinfo(dtype).max):
            raise DataError(f"--input-value {name}: the input is {dtype}, whose values run from "
                            f"{np.iinfo(dtype).min} to {np.iinfo(dtype).max}; {low:g}..{high:g} goes past them")
        if dtype.kind == "f" and max(abs(low), abs(high)) > float(np.finfo(dtype).max):  # it would become inf
            raise DataError(f"--input-value {name}: the input is {dtype}, whose largest value is "
                            f"{float(np.finfo(dtype).max):g}; {low:g}..{high:g} goes past it")
    for name, dims in spec.shapes.items():
        model_dims = input_dims(inputs[name])
        if len(dims) != len(model_dims):
            raise DataError(f"--input-shape {name}: gives {len(dims)} dims, the input has {len(model_dims)} "
                            f"({_show(model_dims)})")
        for i, (want, got) in enumerate(zip(model_dims, dims)):
            if isinstance(want, int) and want > 0 and isinstance(got, int) and got != want:
                raise DataError(f"--input-shape {name}: dim {i} is {got}, the model fixes it at {want} "
                                f"({_show(model_dims)})")


def resolved_dims(vi: onnx.ValueInfoProto, spec: InputSpec | None) -> list:
    """The input's dims with the numbers ``spec`` gives for its symbolic ones."""
    dims = input_dims(vi)
    given = spec.shapes.get(vi.name) if spec else None
    if not given:
        return dims
    return [d if isinstance(d, int) and d > 0 or not isinstance(g, int) else g for d, g in zip(dims, given)]


def state_axes(model: onnx.ModelProto) -> dict[str, int]:
    """Inputs whose first dim is a number and a later one the batch's name (a recurrent
    state [layers, N, H]): name -> the axis their samples run along. They are fed whole
    (batch_layout), each run taking its samples' states along that axis."""
    symbols = {input_dims(vi)[0] for vi in model_inputs(model) if input_dims(vi) and isinstance(input_dims(vi)[0], str)}
    if len(symbols) != 1:  # (a graph's nodes and edges, two batches: no one batch to read states along)
        return {}
    out = {}
    for vi in model_inputs(model):
        dims = input_dims(vi)
        axis = next((i for i, d in enumerate(dims[1:], 1) if isinstance(d, str) and d in symbols), None)
        if dims and _number(dims[0]) and axis is not None:
            out[vi.name] = axis
    return out


def batch_layout(model: onnx.ModelProto, spec: InputSpec | None = None,
                 rows: dict[str, int] | None = None) -> tuple[int | None, frozenset[str]]:
    """The batch every run must have (None: any), and the inputs of rank >= 1 that have no
    batch axis, fed whole to every run (a per-channel scale [C, 1, 1], a table).

    An input's first axis is its batch axis unless the inputs disagree, judged on the
    model's own dims (``--input-shape`` only gives the batch a size). Beside a symbolic
    batch, a first dim fixed at 1 is a batch of 1 (but a [1] is a flag, fed whole) and one
    fixed above 1 is not a batch; but where the batch is given another size, by
    ``--input-shape`` or by the data's sample counts (``rows``, input -> first dim), the
    inputs fixed at 1 broadcast over it and are fed whole (a per-channel [1, C, 1, 1]
    beside an image [N, C, H, W]: a fuzzer's run at x:3 fed it 32 rows).
    When every first dim is a number, the one most inputs share is the batch (on a tie,
    1, else the first input's; a [1] votes only when all inputs are flags: dynamo fixes
    the example's batch of 2 beside a [1] temperature), and an input with another is fed
    whole."""
    firsts = _firsts(model, spec)
    # A [1] is a flag (optimum's use_cache_branch, a temperature), not a batch of 1.
    flags = {vi.name for vi in model_inputs(model) if input_dims(vi) == [1]}
    if any(not _number(d) for _name, d, _given in firsts):
        # A first 1 before the batch's own name counts something else: a one-layer LSTM's h0
        # [1, N, H] is fed whole, as a two-layer one's [2, N, H] is (it was a batch of 1).
        stacked = state_axes(model)
        whole = frozenset(name for name, d, _given in firsts
                          if _number(d) and (d != 1 or name in flags or name in stacked))
        whole |= _broadcast_ones(firsts, whole, rows or {})
    else:
        voters = [f for f in firsts if f[0] not in flags] or firsts
        counts = Counter(d for _name, d, _given in voters)
        common = [d for d, c in counts.items() if c == max(counts.values(), default=0)]
        batch = 1 if 1 in common else next((d for _name, d, _given in voters if d in common), None)
        whole = frozenset(name for name, d, _given in firsts if d != batch)
    sizes = {given for name, _d, given in firsts if name not in whole and _number(given)}
    return (sizes.pop() if len(sizes) == 1 else None), whole


def _firsts(model: onnx.ModelProto, spec: InputSpec | None) -> list[tuple]:
    """(name, the model's first dim, that dim as --input-shape resolves it) of each input of rank >= 1."""
    return [(vi.name, input_dims(vi)[0], resolved_dims(vi, spec)[0]) for vi in model_inputs(model) if input_dims(vi)]


def _broadcast_ones(firsts: list, whole: frozenset[str], rows: dict[str, int]) -> frozenset[str]:
    """The inputs fixed at a first dim of 1 beside a symbolic batch that is given another
    size (``batch_layout``); not one the data gives a row a sample (a review: data of 3
    samples and 3 rows of r was refused)."""
    ones = {name for name, d, _given in firsts if name not in whole and d == 1}
    others = [(name, given) for name, _d, given in firsts if name not in whole | ones]
    if any(_number(given) and given > 1 for _name, given in others):  # --input-shape: it must broadcast
        return frozenset(ones)
    if any(rows.get(name, 0) > 1 for name, _given in others):
        return frozenset(name for name in ones if rows.get(name, 1) == 1)
    return frozenset()


def may_broadcast(model: onnx.ModelProto, spec: InputSpec | None = None) -> bool:
    """Whether data could free the batch the model's inputs fix (``_broadcast_ones``): an
    input fixed at 1 beside a symbolic batch, which data of more samples makes whole."""
    firsts = _firsts(model, spec)
    if all(_number(d) for _name, d, _given in firsts):
        return False
    layout = batch_layout(model, spec)
    return layout[0] == 1 and any(d == 1 and name not in layout[1] for name, d, _given in firsts)


def check_batch_first(model: onnx.ModelProto) -> None:
    """Refuse an input whose batch axis is not its first: a first dim fixed above 1 or named
    otherwise before a dim named as a batch ([30, N, 12] or [seq, batch, 12], a
    sequence-first RNN or nn.Transformer). Samples run along the first axis, so samples
    would be fed along the time axis: every check and score on scrambled inputs. Inputs
    fed whole (batch_layout) keep their layout."""
    whole = batch_layout(model)[1]  # an LSTM's h0 [layers, N, H], GPT-2's past [2, N, ...]: fed whole
    for vi in model_inputs(model):
        dims = input_dims(vi)
        first = dims[0] if dims else None
        # A later dim named as a batch, after a fixed first one or a named one that is no batch.
        # "N" or "b" alone says batch only after a sequence's name ([T, N, C]): a batch-first
        # export may name its dims [a, b] too.
        named = [d for d in dims[1:] if isinstance(d, str) and _batch_name(d)
                 and ("batch" in d.lower() or _number(first) or isinstance(first, str) and _sequence_name(first))]
        if named and vi.name not in whole and ((_number(first) and first > 1) or
                                              (isinstance(first, str) and not _batch_name(first))):
            raise DataError(f"input '{vi.name}' is {_show(dims)}: its batch axis '{named[0]}' is not the first (a "
                            f"sequence-first model); exprune-onnx runs samples along the first axis: export it "
                            f"batch-first (batch_first=True, or a Transpose at the inputs and outputs)")


def _batch_name(dim: str) -> bool:
    return dim.lower() in ("n", "b", "bs") or "batch" in dim.lower()


def _sequence_name(dim: str) -> bool:
    d = dim.lower()
    return d in ("t", "s", "l") or d.startswith(("seq", "len", "time", "step", "src", "tgt", "token"))


def _number(d) -> bool:
    return isinstance(d, int) and d > 0


def fixed_batch(model: onnx.ModelProto, spec: InputSpec | None = None) -> int | None:
    """The batch every run must have (batch_layout), or None."""
    return batch_layout(model, spec)[0]


def check_batch(model: onnx.ModelProto, batch: int | None, what: str, spec: InputSpec | None = None,
                data_batch: int | None | str = "model") -> int:
    """``batch`` (the user's, or None for the default), checked against a fixed batch: the
    model's, or ``data_batch``, the batch the data's layout fixes (Dataset.batch), where the
    runs are on data (an input fixed at 1 that the data gives whole fixes none)."""
    fixed = fixed_batch(model, spec) if data_batch == "model" else data_batch
    if batch is None:
        return fixed or 1
    if fixed is not None and batch != fixed:
        whole = batch_layout(model, spec)[1]
        first = next(vi for vi in model_inputs(model) if input_dims(vi) and vi.name not in whole)
        if fixed_batch(model) is None:  # the model's batch is open: --input-shape gave it a number
            raise DataError(f"{what} {batch} is impossible: --input-shape fixes the batch at {fixed} ('{first.name}' "
                            f"is {_show(input_dims(first))}); write the batch dim as a name to keep it open "
                            f"(--input-shape {first.name}:{input_dims(first)[0] or 'N'},...) or use {what} {fixed}")
        # The input whose own dim fixes it (r [1, 64] beside x [N, 64], not x: a review)
        first = next((vi for vi in model_inputs(model) if input_dims(vi) and vi.name not in whole
                      and input_dims(vi)[0] == fixed), first)
        raise DataError(f"{what} {batch} is impossible: the model's inputs fix the batch at {fixed} "
                        f"('{first.name}' is {_show(input_dims(first))}); use {what} {fixed} or leave it out")
    return batch


def random_arrays(model: onnx.ModelProto, samples: int, seed: int, spec: InputSpec | None = None,
                  only: set[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Seeded values for the inputs (or those in ``only``): (batched, whole) arrays, the
    batched ones with ``samples`` on the first axis, the whole ones (scalars, inputs
    without a batch axis: batch_layout) as the model takes them."""
    spec = spec or InputSpec()
    rng = np.random.default_rng(seed)
    whole_names = batch_layout(model, spec)[1]
    batched, whole = {}, {}
    wanted = [vi for vi in model_inputs(model) if only is None or vi.name in only]
    _check_random_size(wanted, samples, spec, whole_names, model)
    states = state_axes(model)
    for vi in wanted:
        dims = resolved_dims(vi, spec)
        if vi.name in states:  # one state a sample, along its batch axis
            dims[states[vi.name]] = samples
        if 0 in dims[1:]:  # not unknown: no --input-shape may change a fixed dim
            raise DataError(f"input '{vi.name}' has a dimension fixed at 0 {_show(input_dims(vi))}: it holds no values, "
                            "so no random sample can be drawn: give sample data")
        if not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise DataError(f"input '{vi.name}' has unknown dimensions {_show(input_dims(vi))}: give sample data "
                            f"or fix them, e.g. {_shape_example(model, spec)}")
        dtype = input_dtype(vi)
        if dtype is None:
            raise DataError(f"input '{vi.name}' has an element type random inputs cannot fill: give sample data")
        fed_whole = not dims or vi.name in whole_names
        shape = tuple(dims) if fed_whole else (samples, *dims[1:])
        values = _random_values(model, vi.name, np.dtype(dtype), shape, rng, spec.values.get(vi.name))
        (whole if fed_whole else batched)[vi.name] = values
    return batched, whole


def _check_random_size(inputs: list[onnx.ValueInfoProto], samples: int, spec: InputSpec, whole: frozenset,
                       model: onnx.ModelProto) -> None:
    """Refuse random samples that would not fit in memory: drawing them touches every page,
    so on Linux an oversized draw ends in the OOM killer, not in a MemoryError."""
    total = 0
    states = state_axes(model)
    for vi in inputs:
        dims, dtype = resolved_dims(vi, spec), input_dtype(vi)
        if vi.name in states:  # drawn a sample each along that axis (a GPT-2 past: 9 MB a sample went uncounted)
            dims[states[vi.name]] = samples
        if dtype is None or not all(isinstance(d, int) and d >= 0 for d in dims[1:]):
            continue  # refused below, with its own message
        fed_whole = not dims or vi.name in whole
        count = math.prod(d if isinstance(d, int) else 1 for d in dims) if fed_whole else samples * math.prod(dims[1:])
        total += count * np.dtype(dtype).itemsize
    if total <= _RANDOM_CHUNK:
        return
    need = total + 8 * _RANDOM_CHUNK  # and one chunk of the draw, in 64-bit values
    available = available_bytes()
    if available is not None and need > available:
        names = ", ".join(f"'{vi.name}'" for vi in inputs)
        raise DataError(f"{samples} random samples of input(s) {names} need {size_text(need)} of memory and "
                        f"{size_text(available)} is available: ask for fewer (optimize --check-samples, verify "
                        "--samples), or give sample data")


def _random_values(model, name: str, dtype: np.dtype, shape: tuple, rng, bounds) -> np.ndarray:
    if bounds is None:
        if dtype.kind == "f":
            return _in_chunks(rng.random, dtype, shape)
        if is_mask(model, name, dtype):
            return np.ones(shape, dtype)
        rows = table_rows(model, name)
        if rows is None:
            raise DataError(f"input '{name}' is {dtype} and nothing says which values it takes: give sample data "
                            f"or --input-value {name}:VALUE (a number, or LOW..HIGH for random values)")
        bounds = (0, rows - 1)
    low, high = bounds
    if dtype.kind == "f":
        return _in_chunks(lambda n: rng.uniform(low, high, n), dtype, shape) if high > low \
            else np.full(shape, low, dtype)
    return _in_chunks(lambda n: rng.integers(int(np.ceil(low)), int(np.floor(high)) + 1, n), dtype, shape)


def _in_chunks(draw, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """``draw(n)``'s values (float64 or int64) in ``dtype``, drawn a chunk at a time so that
    the 64-bit copy never holds more than a chunk: the same values as one draw of the whole
    shape, since the generator fills in order."""
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _RANDOM_CHUNK):
        flat[start:start + _RANDOM_CHUNK] = draw(min(_RANDOM_CHUNK, flat.size - start))
    return out


def with_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple]) -> onnx.ModelProto:
    """A copy whose graph inputs carry the numbers ``shapes`` gives for their open dims
    (for shape inference), or ``model`` itself when there are none."""
    if not shapes:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in out.graph.input:
        for d, value in zip(vi.type.tensor_type.shape.dim, shapes.get(vi.name, ())):
            if isinstance(value, int) and not d.HasField("dim_value"):
                d.dim_value = value
    return out


def keep_open_dims(out: onnx.ModelProto, original: onnx.ModelProto, fixed: bool) -> None:
    """Give ``out`` the original's graph-input and output dims back: shape inference may
    have put numbers there (``fixed``: compiled with --input-shape or the data's shapes)
    or renamed a symbolic dim (``-past + past + 1``). (The intermediate shapes inferred
    at those sizes are inferred again at the open dims: op_shapes.open_value_info.)"""
    inputs = {vi.name: vi for vi in original.graph.input}
    outputs = {vi.name: vi for vi in original.graph.output}
    for vi in out.graph.input:
        if vi.name in inputs:
            vi.CopyFrom(inputs[vi.name])
    for vi in out.graph.output:
        was = outputs.get(vi.name)
        if was is None or not vi.type.HasField("tensor_type"):  # an --emit-stats output; a sequence, a map
            continue
        declared = was.type.tensor_type.HasField("shape")  # an empty one declares a scalar
        dims, rank = was.type.tensor_type.shape.dim, len(vi.type.tensor_type.shape.dim)
        if declared and len(dims) in (rank, rank + 1):  # rank + 1: an --argmax-only output lost its class axis
            shape = onnx.TensorShapeProto()
            shape.dim.extend(dims[:rank])
            vi.type.tensor_type.shape.CopyFrom(shape)
        elif fixed:  # none declared: leave it to inference
            vi.type.tensor_type.ClearField("shape")


def _shape_example(model: onnx.ModelProto, spec: InputSpec) -> str:
    from .open_dims import shape_example  # (it reads this module's dims)

    return shape_example(model, spec)


def _show(dims: list) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]"
