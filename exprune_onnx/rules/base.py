"""What a rewrite rule is, and what it returns: a candidate group, or a reason it does not apply.

A rule is a ``Rule`` object (each rule module defines one, ``RULE``) holding three
functions kept apart:

* ``match(node, ctx) -> Candidate | NoMatch | None``: reads the graph, never mutates.
  ``None`` means the node is not the rule's concern at all (silently ignored);
  ``NoMatch`` means it looked like one but the pattern is incomplete (shown by
  ``--explain``).
* ``check(candidate, ctx) -> str | None``: the first reason the candidate must not be
  rewritten, or None.
* ``rewrite(candidate, ctx) -> Rewritten``: mutates the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..config import Options


@dataclass
class Context:
    """What matching and rewriting need beyond the node itself."""

    model_graph: gs.Graph  # the outermost graph
    graph: gs.Graph  # the graph (or If/Loop/Scan body) the node lives in
    opset: int
    options: Options
    names: set[str]  # every name in the model, for fresh ones
    duplicate_node_names: set[str] = field(default_factory=set)
    # Tensor -> dims under the model's own input dims, when numbers were given for some
    # (graphutil.same_shape); None: the graph's shapes are the model's own.
    proof_shapes: dict | None = None
    # "op:output" names that more than one graph of the model holds (sibling branches may
    # reuse their names), and the path of this graph's body ("If_0.then_branch/") that
    # tells those apart.
    duplicate_outputs: set[str] = field(default_factory=set)
    scope: str = ""


@dataclass
class NoMatch:
    rule: str
    layer: str
    op: str
    reason: str


@dataclass
class Candidate:
    """A reduction followed by a ReLU-family activation, in canonical form.

    ``weight`` is ``[n, O]`` for dense layers and ``[O, n, *kernel]`` for Conv;
    ``bias`` is ``[O]`` with every constant offset folded in.
    """

    rule: str
    kind: str  # "dense" | "conv"
    layer: str
    reduction: gs.Node
    x: gs.Tensor
    weight: np.ndarray | None
    bias: np.ndarray | None
    residual: gs.Tensor | None
    chain: list[gs.Node]  # nodes after the reduction, ending with the activation
    output: gs.Tensor  # the activation's output: the group's only result
    clip_max: float
    conv_attrs: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # found while matching
    head_keepdims: bool | None = None  # arg-max heads: whether the index keeps the class axis
    head_logits_shape: list | None = None  # arg-max heads: the logits' shape ([*, classes])
    batch: int | str | None = None  # the graph's batch size or symbol (measure/flops.batch_of), set on acceptance
    seen_flops: int | None = None  # the reduction's FLOPs per sample at the data's shapes (measure/shape_probe.py)

    @property
    def n(self) -> int:
        return int(self.weight.shape[0] if self.kind == "dense" else self.weight.shape[1])

    @property
    def outputs(self) -> int:
        return int(self.weight.shape[1] if self.kind == "dense" else self.weight.shape[0])

    @property
    def taps(self) -> int:
        """Multiply-accumulates per input unit per output element (kernel size)."""
        return 1 if self.kind == "dense" else int(np.prod(self.weight.shape[2:]))

    @property
    def op_types(self) -> list[str]:
        return [self.reduction.op] + [n.op for n in self.chain]


@dataclass
class Rewritten:
    candidate: Candidate
    k: int
    threshold: float
    op_node: gs.Node
    stats: gs.Tensor | None
    rule: str = "threshold"
    z_crit: float = float("-inf")
    thresholds: tuple[float, ...] | None = None  # per output channel, when calibrated so


@dataclass(frozen=True)
class Rule:
    """A rewrite rule: its pattern (``match``), its conditions (``check``) and its rewrite."""

    name: str
    match: Callable[[gs.Node, Context], Candidate | NoMatch | None]
    check: Callable[[Candidate, Context], str | None]
    rewrite: Callable[[Candidate, Context], Rewritten]


def reporting_rule(name: str, match: Callable[[gs.Node, Context], NoMatch | None], why: str) -> Rule:
    """A rule that never rewrites: its ``match`` only ever returns a NoMatch, so that the
    layers it owns are listed with their reason (``--explain``, ``inspect``) and no other
    rule takes them."""
    def check(c: Candidate, ctx: Context) -> str:
        return why

    def rewrite(c: Candidate, ctx: Context) -> Rewritten:
        raise AssertionError(f"{why}: never rewritten")

    return Rule(name, match, check, rewrite)


class RuleSet:
    """Rules in the order the pipeline tries them on each node: the first that matches owns it."""

    def __init__(self, rules: Iterable[Rule]):
        self._rules = tuple(rules)
        names = [r.name for r in self._rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"two rules are named {', '.join(repeated)}")

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._rules]

    def with_rule(self, rule: Rule, *, before: str | None = None) -> RuleSet:
        """A new set with ``rule`` added last, or just before the rule named ``before``."""
        rules = list(self._rules)
        if before is None:
            return RuleSet([*rules, rule])
        if before not in self.names:
            raise ValueError(f"no rule named {before!r} (rules: {', '.join(self.names)})")
        at = self.names.index(before)
        return RuleSet([*rules[:at], rule, *rules[at:]])
