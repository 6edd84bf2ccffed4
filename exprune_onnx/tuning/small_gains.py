"""Rewrites that save less than the latency objective's margin one by one (objective.py, step 3).

A whole-model timing cannot tell a gain under ``MARGIN`` from noise, so such a rewrite is
never kept alone. Three things still give it a chance:

* timed alone (screen.py), one whose gain is under ``MARGIN`` of the model's time skips
  its own whole-model timing: alone, the dense conv pays the layout conversions to and
  from onnxruntime's blocked format that the sparse op does not, where in the model the
  sparse op pays them. Its gain in the model is at most its gain alone, so its own
  timing could not keep it (on the light-zoo ResNet-50 at ca0de61, 13 such timings took
  75 of the 117 s the command took, and kept nothing);
* one that made the model faster before a later one was kept is timed again beside the
  kept ones (``time_again``);
* those still short of the margin are timed together (``time_together``), then those too
  small alone together on top of what is kept; a group is kept whole if it clears it.
"""

from __future__ import annotations

# objective.py imports this module; its names (MARGIN, LayerTiming, time_pair) are looked
# up when called, so that tests that replace objective.time_pair reach these timings too.


def too_small(sparse_ms: float, dense_ms: float, model_ms: float) -> str:
    """Why a rewrite that takes ``sparse_ms`` alone against ``dense_ms`` dense needs no
    whole-model timing of its own in a model of ``model_ms``; "" if it does."""
    from .objective import MARGIN

    saved = dense_ms - sparse_ms
    if saved >= MARGIN * model_ms:
        return ""
    return f"saves {saved:.3f} ms alone, under {MARGIN:.0%} of the model's {model_ms:.3f} ms"


def model_ms(choice, original_ms: float) -> float:
    """The model's time as now kept: the latest whole-model row of ``choice``, at most
    ``original_ms``. An early-exit row's model still has the layers not yet decided,
    which may all be dropped later; the lower figure sets the lower bar."""
    whole = [t for t in choice.layers if not t.note]
    if not whole:
        return original_ms
    return min(original_ms, whole[-1].with_ms if whole[-1].kept else whole[-1].without_ms)


def time_again(choice, model_with, kept: list[str], feeds, threads: int, passes: int, log, forget) -> list[str]:
    """The zero-input rewrites that made the model faster, but by less than ``MARGIN``,
    before a later one was kept, timed again one by one (in their first order) in the
    model as now kept. Updates their rows; returns the layers that cleared the margin this
    time. ``model_with(relu)`` builds the model with the ReLU consumers ``relu`` read
    sparsely; ``forget(relu)`` drops every compiled model but that one, after each timing
    (a large model is not held once per retry)."""
    from . import objective

    rows = [t for t in choice.layers if t.kind == objective.ZERO_INPUTS and not t.note and not t.group]
    again = [t for i, t in enumerate(rows)
             if not t.kept and t.with_ms < t.without_ms and any(later.kept for later in rows[i + 1:])]
    added: list[str] = []
    for i, t in enumerate(again):
        log(f"timing zero-input skipping again: {t.layer}", i, len(again))
        t.with_ms, t.without_ms = objective.time_pair(model_with(kept + added + [t.layer]), model_with(kept + added),
                                                      feeds, threads, passes, give_up=objective.clearly_slower,
                                                      settle_at=(1.0 - objective.MARGIN, 1.0))
        t.kept, t.again = t.with_ms <= t.without_ms * (1.0 - objective.MARGIN), True
        if t.kept:
            added.append(t.layer)
        forget(kept + added)
    return added


def time_together(choice, model_with, kept: list[str], feeds, threads: int, passes: int, log) -> list[str]:
    """The zero-input rewrites short of ``MARGIN`` timed in groups: several small gains (a
    deep CNN's convs, each under 1% of its time) may clear the margin that noise sets for
    one. First those the model was timed faster with; then, on top of what is kept, those
    too small alone to be timed in the model (with the first if they were alone), which
    may be slower in the model and so are not let drag the first group down. Each group
    is kept whole or not at all; returns the layers kept."""
    from . import objective

    rows = [t for t in choice.layers if t.kind == objective.ZERO_INPUTS and not t.kept and not t.group]
    faster = [t for t in rows if not t.note and t.with_ms < t.without_ms]
    untimed = [t for t in rows if t.small]
    added: list[str] = []
    if len(faster) >= 2:
        added += _group(choice, faster, model_with, kept, feeds, threads, passes, log)
        faster = []
    if len(faster + untimed) >= 2:
        added += _group(choice, faster + untimed, model_with, kept + added, feeds, threads, passes, log)
    return added


def _group(choice, members, model_with, kept: list[str], feeds, threads: int, passes: int, log) -> list[str]:
    """Time ``members`` together on top of ``kept``; add the group's row; their layers if kept."""
    from . import objective

    names = [t.layer for t in members]
    log("timing the small zero-input gains together")
    with_ms, without_ms = objective.time_pair(model_with(kept + names), model_with(kept), feeds, threads, passes,
                                              give_up=objective.clearly_slower, settle_at=(1.0 - objective.MARGIN,))
    together = with_ms <= without_ms * (1.0 - objective.MARGIN)
    choice.layers.append(objective.LayerTiming(" + ".join(names), with_ms, without_ms, together,
                                               objective.ZERO_INPUTS, group=tuple(names)))
    for t in members:
        t.kept = together
    return names if together else []
