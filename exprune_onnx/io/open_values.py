"""A value for an integer input named as a length (``lengths``, ``seq_len``, ``x_lens``)
when no data and no ``--input-value`` gives one: every sample at full length.

A text or speech model exported with its padded batch's lengths beside the tokens or the
waveform ([N] int64, read by a mask or pack_padded_sequence) has no default a random draw
could give: a length past the sequence fails, and any other integer input is a value only
its author knows (a sample rate, a step count). A length is a size of another input, so
without data it is taken as the sequence's size: that of the token ids where there are
any, else of the other batched inputs (not states or flags), the smallest past the batch
axis of the dims they leave open, else of their fixed ones; the same for every sample.
The plain command's rewrites are exact whatever the values, so only what the latency
objective keeps (and the check's inputs) depends on it; the command says what it took.
"""

from __future__ import annotations

import re

import numpy as np
import onnx

from .feeds import InputSpec, batch_layout, input_dims, input_dtype, model_inputs, resolved_dims
from .id_inputs import is_mask, table_rows

# Words of a length's name, split at non-letters and camel case: 'x_lens', 'seqLen',
# 'input_lengths' are lengths; 'calendar_month', 'blend_mode', 'silence' are not (a review).
_LENGTH_WORDS = {"len", "lens", "length", "lengths", "seqlen", "seqlens"}


def _named_as_length(name: str) -> bool:
    """A length's name, not a bound's (a beam search's max_length must pass the sequence)."""
    words = [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", name)]
    return any(w in _LENGTH_WORDS for w in words) and not any(w in ("max", "min") for w in words)


def _scalar_per_sample(dims: list) -> bool:
    """[], [N] or [N, 1]: one value a sample."""
    return len(dims) <= 1 or len(dims) == 2 and dims[1] == 1


def assumed_values(model: onnx.ModelProto, spec: InputSpec) -> dict[str, tuple[int, int]]:
    """``--input-value`` entries (name -> (value, value)) for the length inputs (module
    docstring) that ``spec`` gives no values, at the sizes ``spec`` gives the others."""
    inputs = model_inputs(model)
    whole = batch_layout(model, spec)[1]  # flags and states: no length of one sample
    out = {}
    for vi in inputs:
        dtype = input_dtype(vi)
        dims = resolved_dims(vi, spec)
        if (dtype is None or np.dtype(dtype).kind not in "iu" or vi.name in spec.values or vi.name in whole
                or not _named_as_length(vi.name) or not _scalar_per_sample(dims)
                or is_mask(model, vi.name, np.dtype(dtype)) or table_rows(model, vi.name) is not None):
            continue
        size = _sequence_size(model, [other for other in inputs if other is not vi and other.name not in whole], spec)
        if size is not None:
            size = min(size, int(np.iinfo(dtype).max))  # (an int8 length of 128 was refused as the user's value)
            out[vi.name] = (size, size)
    return out


def _sequence_size(model: onnx.ModelProto, others: list[onnx.ValueInfoProto], spec: InputSpec) -> int | None:
    """The sequence a length measures: token ids where there are any (a speaker embedding's 4
    beside them was taken), else the other batched inputs; of those, the smallest size past
    the batch axis among the dims the model leaves open (a sequence is what exporters leave
    open), else among its fixed ones. Sizes of 1 are no sequence."""
    ids = [vi for vi in others if table_rows(model, vi.name) is not None]
    open_sizes, fixed_sizes = [], []
    for vi in ids or others:
        for own, size in list(zip(input_dims(vi), resolved_dims(vi, spec)))[1:]:
            if isinstance(size, int) and size > 1:
                (fixed_sizes if isinstance(own, int) and own > 0 else open_sizes).append(size)
    sizes = open_sizes or fixed_sizes
    return min(sizes) if sizes else None


def values_note(values: dict[str, tuple[int, int]], data_flag: str = "--check-data") -> str:
    taken = ", ".join(f"'{name}' as {low}" for name, (low, _high) in values.items())
    return (f"no data for integer input(s) named as lengths: took {taken} for every sample (full length, the "
            f"sequence's size); --input-value NAME:VALUE or {data_flag} gives the values "
            "they take")


def taken_text(shapes: str, values: dict[str, tuple[int, int]], data_flag: str) -> str:
    """What a model that failed to run without data was run with: ``shapes``, the sizes
    taken for open dims as open_dims.assumed_text says them ('' for none), and ``values``."""
    taken = ([f"open dims were taken as {shapes}"] if shapes else []) + \
        [f"'{name}' was taken as {low}" for name, (low, _high) in values.items()]
    flags = (["--input-shape"] if shapes else []) + (["--input-value"] if values else []) + [data_flag]
    what = "what" if shapes and values else "the sizes" if shapes else "the values"
    return f"{', '.join(taken)}: {', '.join(flags[:-1])} or {flags[-1]} gives {what} it takes"
