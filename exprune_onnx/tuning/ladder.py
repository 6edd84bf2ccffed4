"""The search's walk over loss shares (search.py, steps 3 and 4 of its docstring).

A trial is a callable taking ``{layer: share}`` (a share of LADDER, CERTIFIED, or None
for a layer left alone) and returning a search.Trial: the compiled model's drop, its
FLOPs saved, and whether it is within budget.
"""

from __future__ import annotations

import numpy as np

LADDER = tuple(float(x) for x in np.geomspace(1e-5, 0.3, 16))
CERTIFIED = "certified"  # a layer's share when it uses the lossless rule
REFINE_RUNGS = 2  # rungs a layer may climb above the common share, one layer at a time


def explore(trial, best, heads: list[str], layer_flops: dict[str, int], tunable: bool, certified: bool,
            leave_out=None):
    """The allocation that saves the most within budget, from ``best`` (every layer with
    statistics left alone). ``heads``: those layers that are arg-max heads; ``tunable``:
    some rule takes a share; ``certified``: the Certified rule may be tried per layer.
    ``leave_out(shares)``, given each layer at the most the rest of the walk could raise it
    to (``reach``) once the common share is known, names layers to leave alone from then on
    (reach.py: early exits that cannot pay on the clock)."""
    # Heads measure their share in answers changed, not in output mass, so they are left
    # out of the common ladder and get what the budget leaves at the end.
    common = [name for name in best.shares if name not in heads]
    order = everyone = sorted(common, key=lambda name: -layer_flops.get(name, 0))
    start = best
    if tunable:
        best = climb(trial, common, best)
        gone = leave_out(reach(best.shares, common)) if leave_out is not None else set()
        if gone:
            common = [name for name in common if name not in gone]
            order = [name for name in order if name not in gone]
            if any(best.shares[name] is not None for name in gone):
                t = trial({**best.shares, **dict.fromkeys(gone)})
                # Over budget without them (pruning one layer can win answers back): climb
                # the others again, rather than admit them one at a time from nothing.
                best = t if t.feasible else climb(trial, common, start)
        if all(share is None for share in best.shares.values()):
            # Not even the gentlest common share fits: admit layers one at a time.
            for layer in order:
                best = _better(trial({**best.shares, layer: LADDER[0]}), best)
        for layer in order:
            current = best.shares[layer]
            rung = -1 if current is None else LADDER.index(current)
            for nxt in LADDER[rung + 1:rung + 1 + REFINE_RUNGS]:
                t = trial({**best.shares, layer: nxt})
                if not (t.feasible and t.saved > best.saved):
                    break
                best = t
    if certified:
        # A layer whose input is not provably >= 0 is rejected by the compiler and saves nothing.
        # Layers left out are tried too: the Certified rule's op is not the one timed at reach.
        for layer in everyone:
            best = _better(trial({**best.shares, layer: CERTIFIED}), best)
    if tunable:
        for head in heads:
            best = climb(trial, [head], best)
    return best


def reach(shares: dict[str, float | str | None], layers: list[str]) -> dict[str, float]:
    """Each of ``layers`` at the highest share ``explore`` could still give it after the
    climb: REFINE_RUNGS above its share, or above the gentlest rung where the climb found
    none (each layer is then admitted alone at LADDER[0] first)."""
    out = {}
    for layer in layers:
        share = shares.get(layer)
        rung = LADDER.index(share) if isinstance(share, float) else 0
        out[layer] = LADDER[min(rung + REFINE_RUNGS, len(LADDER) - 1)]
    return out


def climb(trial, layers: list[str], best):
    """The highest common share of ``layers`` that saves the most within budget, the
    others as in ``best``; two infeasible rungs in a row end the climb."""
    misses = 0
    for share in LADDER:
        t = trial({**best.shares, **dict.fromkeys(layers, share)})
        if t.feasible and t.saved > best.saved:
            best, misses = t, 0
        elif not t.feasible:
            misses += 1
            if misses == 2:
                break
    return best


def step_down(shares: dict[str, float | str | None]) -> dict[str, float | str | None]:
    """Every tuned layer one rung gentler; a layer on the gentlest rung is left alone.
    Certified layers lose nothing and stay as they are."""
    out = {}
    for layer, share in shares.items():
        if isinstance(share, float):
            rung = LADDER.index(share)
            share = LADDER[rung - 1] if rung > 0 else None
        out[layer] = share
    return out


def _better(t, best):
    return t if t.feasible and t.saved > best.saved else best
