"""A value for an integer input named as a length (``lengths``, ``seq_len``, ``x_lens``)
when no data and no ``--input-value`` gives one: every sample at full length.

A text or speech model exported with its padded batch's lengths beside the tokens or the
waveform ([N] int64, read by a mask or pack_padded_sequence) has no default a random draw
could give: a length past the sequence fails, and any other integer input is a value only
its author knows (a sample rate, a step count). A length is a size of another input, so
without data it is taken as the smallest size past the batch axis among the others' dims:
the sequence's own length, or less (a spectrogram's 80 bands), never more, the same for
every sample. The plain command's rewrites are exact whatever the values, so only what the
latency objective keeps (and the check's inputs) depends on it; the command says what it
took.
"""

from __future__ import annotations

import re

import numpy as np
import onnx

from .feeds import InputSpec, _table_rows, input_dtype, is_mask, model_inputs, resolved_dims

# Words of a length's name, split at non-letters and camel case: 'x_lens', 'seqLen',
# 'input_lengths' are lengths; 'calendar_month', 'blend_mode', 'silence' are not (a review).
_LENGTH_WORDS = {"len", "lens", "length", "lengths", "seqlen", "seqlens"}


def _named_as_length(name: str) -> bool:
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", name)
    return any(word.lower() in _LENGTH_WORDS for word in words)


def _scalar_per_sample(dims: list) -> bool:
    """[], [N] or [N, 1]: one value a sample."""
    return len(dims) <= 1 or len(dims) == 2 and dims[1] == 1


def assumed_values(model: onnx.ModelProto, spec: InputSpec) -> dict[str, tuple[int, int]]:
    """``--input-value`` entries (name -> (value, value)) for the length inputs (module
    docstring) that ``spec`` gives no values, at the sizes ``spec`` gives the others."""
    inputs = model_inputs(model)
    out = {}
    for vi in inputs:
        dtype = input_dtype(vi)
        dims = resolved_dims(vi, spec)
        if (dtype is None or np.dtype(dtype).kind not in "iu" or vi.name in spec.values
                or not _named_as_length(vi.name) or not _scalar_per_sample(dims)
                or is_mask(model, vi.name, np.dtype(dtype)) or _table_rows(model, vi.name) is not None):
            continue
        size = _sequence_size([other for other in inputs if other is not vi], spec)
        if size is not None:
            size = min(size, int(np.iinfo(dtype).max))  # (an int8 length of 128 was refused as the user's value)
            out[vi.name] = (size, size)
    return out


def _sequence_size(others: list[onnx.ValueInfoProto], spec: InputSpec) -> int | None:
    """The smallest size past the batch axis among the others' dims, so never past the
    sequence's own, whichever input holds it; sizes of 1 are no sequence."""
    sizes = [size for vi in others for size in resolved_dims(vi, spec)[1:] if isinstance(size, int) and size > 1]
    return min(sizes) if sizes else None


def values_note(values: dict[str, tuple[int, int]], data_flag: str = "--check-data") -> str:
    taken = ", ".join(f"'{name}' as {low}" for name, (low, _high) in values.items())
    return (f"no data for integer input(s) named as lengths: took {taken} for every sample (full length, the "
            f"smallest size of the other inputs); --input-value NAME:VALUE or {data_flag} gives the values "
            "they take")


def taken_text(shapes: str, values: dict[str, tuple[int, int]], data_flag: str) -> str:
    """What a model that failed to run without data was run with: ``shapes``, the sizes
    taken for open dims as open_dims.assumed_text says them ('' for none), and ``values``."""
    taken = ([f"open dims were taken as {shapes}"] if shapes else []) + \
        [f"'{name}' was taken as {low}" for name, (low, _high) in values.items()]
    flags = (["--input-shape"] if shapes else []) + (["--input-value"] if values else []) + [data_flag]
    what = "what" if shapes and values else "the sizes" if shapes else "the values"
    return f"{', '.join(taken)}: {', '.join(flags[:-1])} or {flags[-1]} gives {what} it takes"
