"""An early-exit layer the latency objective keeps, timed against the same layer read exactly
(objective.py, step 2).

An early-exit conv or matmul that makes the model faster is kept. But where its input is
a plain ReLU's output, the same layer left dense can read that input's zeros instead
(``ExPruneSparseConv``, ``ExPruneSparseMatMul``): exact, where the early exit prunes. The
two were never compared before: an audio trial's CRNN (Conv -> ReLU -> Conv -> ReLU -> GRU)
kept its second conv as an early exit worth 2% of the model's time and lost 1.3 points of
accuracy, where the lossless run read the same conv's zero inputs for 16%.

So each kept early-exit layer that could read its input sparsely is timed once more, side
by side: the model with the layer as an early exit against the model with the layer dense
and reading its zeros. The exact read is kept unless the early exit is faster by over
``MARGIN``: within the noise of a whole-model timing, the rewrite that loses nothing wins.

Consumers that read the early exit's output sparsely (no timing of their own: an early
exit's zeros are free to read) read the dense layer's ReLU in the exact model too, so
that the pair differs only in the layer itself. Once the exact read is kept, they read a
plain ReLU, and like every such consumer are timed on their own (objective.py, step 3).
"""

from __future__ import annotations


def readable_if_dense(build, layers: list[str]) -> set[str]:
    """The early-exit ``layers`` that could read a plain ReLU's zeros with every one of them
    dense: a superset of those that can with only some dense (a producer kept as an early
    exit gives its consumers its own zeros, read untimed). One compilation, so that a
    layer without a ReLU before it (a transformer's fc1, after a LayerNorm) costs none."""
    return {s.layer for s in build(layers, "all").sparse if s.after_relu}


def exact_instead(choice, build, dropped: list[str], reads: list[str], layer: str, feeds, threads: int,
                  passes: int, log) -> list[str] | None:
    """Time the kept early-exit ``layer`` against the same layer dense, reading its input's
    zeros; add the row. Returns the zero-input reads of the model to go on with when the
    exact read wins, None when the early exit stays (or the layer cannot read its input
    sparsely: not after a plain ReLU, or the sparse pass refuses it). ``build(dense,
    reads)`` compiles the model with the early-exit layers ``dense`` left dense and the
    ReLU consumers ``reads`` reading sparsely; ``reads`` is what is kept so far."""
    from . import objective

    early = build(dropped, reads)
    # Consumers of early-exit outputs read them sparsely untimed; with ``layer`` dense, its
    # own consumers read a plain ReLU, which only the ones named may.
    untimed = [s.layer for s in early.sparse if not s.after_relu and s.layer not in reads]
    exact = build(dropped + [layer], reads + [layer] + untimed)
    if not any(s.layer == layer and s.after_relu for s in exact.sparse):
        return None
    log(f"timing an exact read instead of the early exit: {layer}")
    exact_ms, early_ms = objective.time_pair(exact.model, early.model, feeds, threads, passes,
                                             give_up=objective.clearly_slower, settle_at=(1.0, 1.0 + objective.MARGIN))
    wins = exact_ms <= early_ms * (1.0 + objective.MARGIN)
    choice.layers.append(objective.LayerTiming(layer, exact_ms, early_ms, wins, objective.ZERO_INPUTS,
                                               versus_early_exit=True))
    return reads + [layer] if wins else None


def decision(row) -> str:
    """The table's decision on a row of ``exact_instead``, kept or not."""
    from .objective import MARGIN

    if not row.kept:
        return f"dropped: the early exit was faster by over {MARGIN:.0%}"
    return "kept instead of the early exit: exact, and " + (
        "faster" if row.with_ms < row.without_ms else f"within {MARGIN:.0%} of its time")


def reason(row) -> str:
    """Why the early-exit layer of a won ``exact_instead`` row was not written as one."""
    return (f"it reads its input's zeros instead (exact): the model took {row.with_ms:.3f} ms that way and "
            f"{row.without_ms:.3f} ms with the early exit")
