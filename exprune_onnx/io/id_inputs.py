"""Which values an integer input takes, read off the graph: the rows of the tables it
indexes (token ids, a categorical model's fields), or a mask that keeps everything."""

from __future__ import annotations

import numpy as np
import onnx


def is_mask(model: onnx.ModelProto, name: str, dtype: np.dtype) -> bool:
    """Whether random values of input ``name`` are a mask that keeps everything (all True
    or all 1): a boolean, or an integer named as a mask (Hugging Face's ``attention_mask``)
    that indexes no table."""
    return dtype.kind == "b" or dtype.kind in "iu" and "mask" in name.lower() and table_rows(model, name) is None


# Ops that pass index values through unchanged when the index tensor is their first input:
# a categorical model's ids [N, fields] go to each field's table through Gather(ids, i, axis=1).
_ID_PASSING = ("Gather", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Identity", "Transpose", "Split")


def table_rows(model: onnx.ModelProto, name: str) -> int | None:
    """The rows of the constant tables that ``name`` indexes through Gather (token ids), the
    fewest where it indexes several (each field's table of a categorical model), if every
    use of it is one; None otherwise."""
    tables = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            tables[node.output[0]] = list(node.attribute[0].t.dims)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in dict.fromkeys(node.input):
            users.setdefault(i, []).append(node)

    def rows(tensor: str, depth: int) -> int | None:
        # A Shape or Size reads only the dims (torch's exporter takes the sequence length so).
        found = []
        for n in users.get(tensor, []):
            if n.op_type in ("Shape", "Size"):
                continue
            if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == tensor and n.input[0] in tables:
                found.append(tables[n.input[0]][next((a.i for a in n.attribute if a.name == "axis"), 0)])
            elif n.op_type in _ID_PASSING and n.input[0] == tensor and tensor not in n.input[1:] and depth < 8:
                below = [rows(out, depth + 1) for out in n.output]
                if any(r is None for r in below):
                    return None
                found += below
            else:
                return None
        return min(found) if found else None

    return rows(name, 0)
