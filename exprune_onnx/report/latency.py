"""The latency objective's table and JSON rows (tuning/objective.py)."""

from __future__ import annotations

from rich.table import Table

from ..tuning import exact_read
from ..tuning.objective import EARLY_EXIT, MARGIN
from .markup import escape
from .tables import jsonable


def _not_enough(lt) -> str:
    """Why a layer timed in the whole model was dropped: slower, or faster by under the margin
    (a trial read "not faster" beside +0.8%)."""
    return f"dropped: under {MARGIN:.0%} faster" if lt.gain > 0 else "dropped: not faster"


def latency_table(choice) -> Table:
    """The latency objective's per-layer decisions (objective.py)."""
    t = Table(title=f"Latency objective: whole model timed with and without each rewrite (batch {choice.batch}, "
                    f"{choice.threads} thread(s), on {escape(choice.source)})", title_justify="left")
    for col, just in (("layer", "left"), ("rewrite", "left"), ("with (ms)", "right"), ("without (ms)", "right"),
                      ("model time saved", "right"), ("decision", "left")):
        t.add_column(col, justify=just)
    for lt in choice.layers:
        kept = choice.kept(lt.layer, lt.kind)
        decision = (f"kept ({lt.note})" if kept and lt.note else "kept" if kept
                    else "dropped: the rest was not faster than the original" if lt.kept
                    else f"dropped: {lt.note}" if lt.note else _not_enough(lt))
        if lt.again and not choice.in_group(lt):
            decision += ", timed again after later layers were kept"
        if choice.in_group(lt):  # one of the small gains timed together (the group's own row follows)
            decision = "kept with the group below" if kept else "dropped: too small, alone or together"
        if lt.versus_early_exit and not choice.reverted_all:
            decision = exact_read.decision(lt)
        elif lt.kind == EARLY_EXIT and choice.read_exactly(lt.layer):
            decision = "dropped: read exactly instead (next row)"
        elif lt.kind == EARLY_EXIT and lt.group:  # the certified rung's, timed as a whole (rung_or_exact.py)
            decision = "dropped with the rung's other early exits: the exact model was faster"
        # A row decided without a whole-model timing shows the layer's own times, or none.
        times = ([f"{lt.with_ms:.3f}", f"{lt.without_ms:.3f}", f"{100 * lt.gain:+.1f}%"] if not lt.note else
                 [f"{lt.with_ms:.3f} alone", f"{lt.without_ms:.3f} alone", "-"] if lt.without_ms else ["-"] * 3)
        t.add_row(escape(lt.layer), lt.kind + (" vs early exit" if lt.versus_early_exit else ""), *times, decision)
    if choice.reverted_all:
        # (1.096 against 1.103 ms read as faster, and a trial asked why it was not kept)
        t.caption = (f"left unchanged: the kept rewrites ran in {choice.attempt_ms:.3f} ms against the original's "
                     f"{choice.original_ms:.3f} ms, not the {MARGIN:.0%} faster the result must be")
    elif not choice.result.changed:
        t.caption = (f"no rewrite made the model faster: the original is written unchanged ({choice.original_ms:.3f} "
                     f"ms); timing took {choice.seconds:.1f} s")
    else:
        t.caption = (f"original {choice.original_ms:.3f} ms -> optimised {choice.optimized_ms:.3f} ms "
                     f"(ratio {choice.ratio:.3f}, medians of alternating runs); timing took {choice.seconds:.1f} s")
        if choice.other_batch is not None:  # the written model timed again at a batch it also takes
            batch, original_ms, optimized_ms = choice.other_batch
            t.caption += (f"; at batch {batch}: {original_ms:.3f} ms -> {optimized_ms:.3f} ms (ratio "
                          f"{optimized_ms / original_ms:.3f}, timed once more, not chosen at)")
    t.caption_justify = "left"
    return t


def same_model_times(choice) -> tuple[float, float] | None:
    """The two timings of one model furthest apart, where they differ by over NOISY: a
    row's model as kept (its "without" for a dropped early exit, else its "with") is the
    next row's "with" (early exits) or "without" (zero inputs). A busy host moves them
    apart, and then the decisions with them."""
    from ..measure.timing import NOISY

    def timed(lt) -> bool:
        return not lt.note and not lt.group and not lt.again and not lt.versus_early_exit

    pairs = []
    for a, b in zip(choice.layers, choice.layers[1:]):
        if a.kind != b.kind or not timed(a) or not timed(b):
            continue
        early = a.kind == EARLY_EXIT
        pairs.append((a.with_ms if a.kept else a.without_ms, b.with_ms if early else b.without_ms))
    # Before any row is kept, the first zero-input row's "without" is the original, which
    # step 4 times again (a trial's busy VGG: 13.7 ms there, 11.5 ms at the end).
    first = next((i for i, lt in enumerate(choice.layers) if lt.kind != EARLY_EXIT), None)
    if first is not None and choice.original_ms > 0 and timed(choice.layers[first]) \
            and not any(lt.kept for lt in choice.layers[:first]):
        pairs.append((choice.layers[first].without_ms, choice.original_ms))
    # The last row's model as kept is the one step 4 times against the original (a trial's busy
    # VGG-style CNN: 0.247 ms in the row, 0.386 ms there, and no warning).
    # Reverted, that model's time there is the attempt's (a trial's busy run wrote the original
    # with no warning, where a rerun kept rewrites at 0.81 of its time).
    last = choice.layers[-1] if choice.layers else None
    final = choice.attempt_ms if choice.reverted_all else choice.optimized_ms
    if last is not None and timed(last) and final > 0:
        pairs.append((last.with_ms if last.kept else last.without_ms, final))
    worst = None
    for pair in (sorted(p) for p in pairs):
        if pair[0] > 0 and pair[1] / pair[0] > 1 + NOISY and (worst is None or pair[1] / pair[0] > worst[1] / worst[0]):
            worst = (pair[0], pair[1])
    return worst


def _times(lt) -> dict:
    timed = bool(lt.without_ms) or not lt.note
    return {"with_ms": lt.with_ms if timed else None, "without_ms": lt.without_ms if timed else None}


def _unquoted(text: str) -> str:
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] == "'" else text


def latency_json(choice) -> dict | None:
    if choice is None:
        return None
    return jsonable({
        # The table quotes a file's name; the JSON gives the name.
        "batch": choice.batch, "threads": choice.threads, "source": _unquoted(choice.source),
        "original_ms": choice.original_ms, "optimized_ms": choice.optimized_ms, "ratio": choice.ratio,
        "reverted_all": choice.reverted_all, "seconds": choice.seconds,
        "other_batch": None if choice.other_batch is None else dict(zip(("batch", "original_ms", "optimized_ms"),
                                                                        choice.other_batch)),
        # A layer dropped untimed (it prunes nothing) has no times: null, as the table's "-".
        "layers": [{"layer": lt.layer, "rewrite": lt.kind, **_times(lt),
                    "kept": choice.kept(lt.layer, lt.kind), "note": lt.note, "again": lt.again,
                    "versus_early_exit": lt.versus_early_exit,
                    "group": list(lt.group), "in_group": choice.in_group(lt)}
                   for lt in choice.layers],
    })
