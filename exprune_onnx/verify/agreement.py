"""The agreement check: the model as shipped agrees with the original on the data."""

from __future__ import annotations

import onnx

from ..errors import error_message
from ..io.data import Dataset
from ..progress import quiet
from .base import Row


def agreement_row(original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, min_agreement: float,
                  batch: int = 64, log=quiet) -> Row:
    from ..measure.compare import compare

    name = "agreement"
    try:
        checked = compare(original, optimized, data, batch=batch, log=log)
    except Exception as exc:  # noqa: BLE001 - e.g. outputs of another shape: the models do not correspond
        return Row(name, False, error_message(exc))
    parts, ok = [], True
    for d in checked.outputs:
        text = f"'{d.name}' max abs diff {d.max_abs:.3g}"
        if d.top1_agreement is not None:
            text += f", top-1 agreement {d.top1_agreement:.2%}"
            if d.top1_agreement < min_agreement:
                ok = False
                text += f" < {min_agreement:.2%}"
        parts.append(text)
    if checked.accuracy is not None:
        parts.append(f"accuracy {checked.accuracy[0]:.2%} -> {checked.accuracy[1]:.2%}")
    pruned = sum(p for p, _t in checked.pruned.values())
    total = sum(t for _p, t in checked.pruned.values())
    if total:
        parts.append(f"{pruned / total:.1%} of outputs pruned")
    return Row(name, ok, "; ".join(parts) + f" on {checked.samples} samples of '{checked.source}'")
