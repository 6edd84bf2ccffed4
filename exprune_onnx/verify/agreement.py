"""The agreement check: the model as shipped agrees with the original on the data."""

from __future__ import annotations

import onnx

from .. import ops
from ..errors import DataError, error_message
from ..io.data import Dataset
from ..progress import quiet
from .base import Row


def agreement_row(original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, min_agreement: float,
                  batch: int = 64, log=quiet) -> Row:
    from ..measure.compare import compare

    name = "agreement"
    try:
        checked = compare(original, optimized, data, batch=batch, log=log)
    except DataError:
        raise  # the data's fault (labels that are no class indices): exit 6, as evaluate says
    except Exception as exc:  # noqa: BLE001 - e.g. outputs of another shape: the models do not correspond
        return Row(name, False, error_message(exc))
    parts, ok = [], True
    for d in checked.outputs:
        text = f"'{d.name}' max abs diff {d.max_abs:.3g}"
        if d.runs is not None:  # no batch axis: a changed detection count is a change, not a mismatch
            text = f"'{d.name}' another shape on {d.runs[0]} of {d.runs[1]} runs"
        elif d.top1_agreement is not None:
            text += f", {d.answer_kind} agreement {d.top1_agreement:.2%}"
            if d.top1_agreement < min_agreement:
                ok = False
                text += f" < {min_agreement:.2%}"
        parts.append(text)
    if checked.accuracy is not None:
        parts.append(f"accuracy {checked.accuracy[0]:.2%} -> {checked.accuracy[1]:.2%}")
    kinds = {n.name: n.op_type for n in optimized.graph.node}
    early = [c for node, c in checked.pruned.items() if kinds.get(node) != ops.SPARSE_CONV]
    read = [c for node, c in checked.pruned.items() if kinds.get(node) == ops.SPARSE_CONV]
    if sum(t for _p, t in early):
        parts.append(f"{sum(p for p, _t in early) / sum(t for _p, t in early):.1%} of outputs pruned")
    if sum(t for _r, t in read):  # a sparse conv counts the inputs it read, not outputs it pruned
        parts.append(f"{1 - sum(r for r, _t in read) / sum(t for _r, t in read):.1%} of sparse conv inputs skipped")
    return Row(name, ok, "; ".join(parts) + f" on {checked.samples} samples of '{checked.source}'")
