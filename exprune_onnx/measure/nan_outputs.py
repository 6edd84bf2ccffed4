"""Refusing data on which the original model itself answers NaN: no comparison against
NaN means anything."""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import DataError
from .runs import PerRun, as_array


class NaNOutput(DataError):
    """The original itself answers NaN on the data."""


def refuse_nan(name: str, values, source: str, model: onnx.ModelProto | None = None,
               samples: int | None = None) -> None:
    """Refuse data on which the original's output ``name`` holds NaN (inputs that overflow
    it, often data not scaled as in training, or whose every position is masked): NaN
    equals nothing and has no arg-max, so every comparison against it would pass or mean
    nothing. (-inf is a masked logit.) Where ``model``'s own weights hold NaN or +Inf, the
    message blames them, not the data."""
    if not has_nan(values):
        return
    runs = [as_array(a) for a in (values if isinstance(values, PerRun) else [values]) if _floats(as_array(a))]
    # Per sample where every run has the batch first, and they join (else values only).
    batched = getattr(values, "batched", True) and all(a.ndim for a in runs) and \
        len({a.shape[1:] for a in runs}) == 1
    if batched and runs:  # the samples asked for, not a fixed batch's padding of its last run
        runs = [np.concatenate(runs)[:samples]]
    share = sum(int(np.isnan(a).sum()) for a in runs) / max(sum(a.size for a in runs), 1)
    where = f"on {share:.1%} of its values"
    if batched and runs and len(runs[0]):
        rows = np.isnan(runs[0].reshape(len(runs[0]), -1)).any(axis=1)
        where = f"on {int(rows.sum())} of {rows.size} samples ({share:.1%} of its values)"
    data = "seeded random inputs" if source == "random" else source
    broken = nonfinite_weights(model) if model is not None else ""
    if broken:
        raise NaNOutput(f"the original model's output '{name}' is NaN {where} on {data}, and its own weights hold "
                        f"NaN or Inf ({broken}): the model is broken whatever its inputs; export it again")
    if source == "random":  # no data of the user's: what the random values could not stand for
        raise NaNOutput(f"the original model's output '{name}' is NaN {where} on seeded random inputs: give real "
                        "inputs (--check-data; verify and evaluate: --data), or --input-value NAME:VALUE for an "
                        "input that takes particular values")
    raise NaNOutput(f"the original model's output '{name}' is NaN {where} on {data}: inputs that overflow it, not "
                    "scaled as in training, or whose every position is masked (attention over nothing is NaN)? "
                    "Leave such samples out of the data")


def nonfinite_weights(model: onnx.ModelProto) -> str:
    """The float weights of ``model`` (initializers and Constant values, in bodies and
    functions too) that hold NaN or +Inf, said in a few words, or ""."""
    from onnx import numpy_helper

    from ..io.modelio import all_tensors

    found = []
    for tensor in all_tensors(model):
        try:
            values = numpy_helper.to_array(tensor)
        except Exception:  # noqa: BLE001 - data this check cannot read is not what it looks for
            continue
        # (-inf is an attention mask's fill, Where(mask, -inf, x): no sign of a broken model.)
        bad = int(np.count_nonzero(np.isnan(values) | np.isposinf(values))) if values.dtype.kind == "f" else 0
        if bad:
            found.append(f"'{tensor.name or '(a Constant)'}': {bad} of {values.size} values")
    more = f", and {len(found) - 2} more tensor(s)" if len(found) > 2 else ""
    return "; ".join(found[:2]) + more


def _floats(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def has_nan(values) -> bool:
    runs = values if isinstance(values, PerRun) else [values]
    return any(_floats(a) and np.isnan(a).any() for a in map(as_array, runs))
