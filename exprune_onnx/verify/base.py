"""What the checks share: a row of the verdict, and an early-exit op traced back to its layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .. import ops
from ..rules.base import Candidate

SPARSE_OPS = (ops.SPARSE_MATMUL, ops.SPARSE_CONV)  # traced by verify/sparse_matmul.py and verify/sparse_conv.py


@dataclass
class Row:
    check: str
    ok: bool
    detail: str
    unjudged: tuple[str, ...] = ()  # outputs the check measured but had no bar for (values, without a budget)
    not_judged: str = ""  # why the check gave no verdict, and what would give one (it then passes)

    @property
    def verdict(self) -> str:
        """The row's result as the table and the JSON give it."""
        return "fail" if not self.ok else "not judged" if self.not_judged else "pass"


@dataclass
class Layer:
    """One early-exit op of the optimised model, traced back to its group and its original layer."""

    op: gs.Node
    candidate: Candidate | None = None
    nodes: list[gs.Node] = field(default_factory=list)  # every node of the rewritten group
    problems: list[str] = field(default_factory=list)
    k: int | None = None
    perm: np.ndarray | None = None
    gather: gs.Node | None = None
    w_head: gs.Tensor | None = None
    w_tail: gs.Tensor | None = None
    bias: gs.Tensor | None = None
    w_head_sq: gs.Tensor | None = None
    key: str = ""  # its body's path and its output's name: the original layer's key (structure.analyse_original)

    @property
    def name(self) -> str:
        if self.candidate is not None:
            return self.candidate.layer
        return self.op.name or (self.op.outputs[0].name if self.op.outputs else self.op.op)


def summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more
