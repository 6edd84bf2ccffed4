"""The weights check: head, tail and unit order put back together give the original layer's
canonical weight, and the bias is the original's."""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from ..compiler.graphutil import describe
from . import sparse_matmul as verify_sparse
from .base import Layer, Row, summary

# Weights are copied, not recomputed, by the compiler: anything beyond float noise is a change.
WEIGHT_RTOL = 1e-5





def weights_row(layers: list[Layer], sparse: list = ()) -> Row:
    problems = []
    checked = 0
    worst = 0.0
    for s in sparse:
        if s.problems or s.weight is None:
            problems.append(f"layer '{s.name}': not checked: see structure")
            continue
        found, err = verify_sparse.weight_problems(s, WEIGHT_RTOL)
        worst = max(worst, err)
        problems += [f"layer '{s.name}': {p}" for p in found]
    for layer in layers:
        if layer.problems or layer.candidate is None:
            continue
        found, err = _layer_weights(layer)
        worst = max(worst, err)
        problems += [f"layer '{layer.name}': {p}" for p in found]
        checked += 1
    unchecked = sum(1 for layer in layers if layer.problems or layer.candidate is None)
    if unchecked:
        problems.append(f"{unchecked} layer(s) not checked: see structure")
    if problems:
        return Row("weights", False, summary(problems))
    if not layers and not sparse:
        return Row("weights", True, "no rewritten layers")
    # Each kind named only where there is one (a lossless CNN has no early exit: "0 layer(s): head,
    # tail ..." read as if nothing was checked, a trial's).
    parts = [f"{checked} early-exit layer(s): head, tail, unit order and bias give the original's canonical "
             "weights"] if checked else []
    parts += [f"{len(sparse)} sparse-input layer(s) carry the original's weight and bias"] if sparse else []
    return Row("weights", True, f"{'; '.join(parts)} (largest relative difference {worst:.1e})")


def _constant(t: gs.Tensor | None) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    scale = max(float(np.abs(want).max()) if want.size else 0.0, 1e-30)
    return float(np.abs(got.astype(np.float64) - want).max()) / scale if want.size else 0.0


def _layer_weights(layer: Layer) -> tuple[list[str], float]:
    c, k = layer.candidate, layer.k
    w = np.asarray(c.weight)
    head, tail, bias = _constant(layer.w_head), _constant(layer.w_tail), _constant(layer.bias)
    names = {"head": layer.w_head.name, "tail": layer.w_tail.name, "bias": layer.bias.name}
    for part, value in (("head", head), ("tail", tail), ("bias", bias)):
        if value is None or value.dtype != np.float32:
            return [f"the {part} weight '{names[part]}' is not a float32 initializer"], 0.0
    n = c.n
    perm = layer.perm if layer.perm is not None else np.arange(n)
    if layer.gather is not None and layer.perm is None:
        return ["the unit order could not be read"], 0.0
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
        return [f"the unit order of {describe(layer.gather)} is not a permutation of the original's {n} units"], 0.0
    # In the op's unit order, unit axis first: conv [n, O, *K], dense [n, O].
    want = np.moveaxis(w, 1, 0)[perm] if c.kind == "conv" else w[perm]
    got_head = np.moveaxis(head, 1, 0) if c.kind == "conv" else head
    got_tail = np.moveaxis(tail, 1, 0) if c.kind == "conv" else tail.T
    if got_head.shape != (k, *want.shape[1:]) or got_tail.shape != (n - k, *want.shape[1:]):
        return [f"head weight {list(head.shape)} and tail weight {list(tail.shape)} do not split the original's "
                f"{list(w.shape)} weight at k = {k}"], 0.0
    got = np.concatenate([got_head, got_tail])
    err = _rel_diff(got, want)
    problems = []
    if err > WEIGHT_RTOL:
        problems.append(_weight_problem(layer, got, want, np.moveaxis(w, 1, 0) if c.kind == "conv" else w, k, names))
    bias_err = _rel_diff(bias.reshape(-1), np.asarray(c.bias, np.float64)) if bias.size == c.outputs else math.inf
    if bias_err > WEIGHT_RTOL:
        problems.append(f"the bias '{names['bias']}' differs from the original's folded bias "
                        f"(relative difference {bias_err:.2g})")
    problems += _rule_weight_problems(layer, head, tail)
    return problems, max(err, bias_err if math.isfinite(bias_err) else 0.0)


def _weight_problem(layer: Layer, got: np.ndarray, want: np.ndarray, stored: np.ndarray, k: int, names) -> str:
    """Name what changed: the permutation, the head or the tail."""
    scale = max(float(np.abs(want).max()), 1e-30)
    wrong = np.flatnonzero(np.abs(got.astype(np.float64) - want).reshape(len(got), -1).max(1) > WEIGHT_RTOL * scale)
    # Units whose weights are intact but sit where the Gather does not put them mean a changed permutation.
    where = {}
    for j in range(len(stored)):
        where.setdefault(stored[j].tobytes(), set()).add(j)
    moved = [int(i) for i in wrong if where.get(got[i].tobytes())]
    if layer.gather is not None and moved and len(moved) == len(wrong):
        return (f"the unit order of {describe(layer.gather)} does not match the weights at positions "
                f"{moved[:8]}{' ...' if len(moved) > 8 else ''}")
    parts = []
    if (wrong < k).any():
        parts.append(f"head weight '{names['head']}'")
    if (wrong >= k).any():
        parts.append(f"tail weight '{names['tail']}'")
    unit = int(layer.perm[wrong[0]]) if layer.perm is not None else int(wrong[0])
    verb = "do" if len(parts) > 1 else "does"
    return (f"the {' and '.join(parts)} {verb} not match the original's weight (input unit {unit} first, "
            f"relative difference {_rel_diff(got, want):.2g})")


def _rule_weight_problems(layer: Layer, head: np.ndarray, tail: np.ndarray) -> list[str]:
    op = layer.op
    if layer.w_head_sq is not None:
        sq = _constant(layer.w_head_sq)
        if sq is None or sq.shape != head.shape or _rel_diff(sq, head * head) > WEIGHT_RTOL:
            return [f"the squared head weight '{layer.w_head_sq.name}' is not the head weight squared"]
    if op.attrs.get("rule") in ("certified", b"certified"):
        positive = np.maximum(tail, 0).reshape(tail.shape[0], -1).astype(np.float64)
        for t, want in zip(op.inputs[6:8], (positive.sum(1), np.sqrt((positive * positive).sum(1)))):
            got = _constant(t)
            if got is None or got.size != want.size or _rel_diff(got.reshape(-1), want) > WEIGHT_RTOL:
                return [f"'{t.name}' does not match the tail weight's positive part"]
    return []
