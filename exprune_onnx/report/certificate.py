"""The calibration table's rows for a certified run and the report's certificate object
(tuning/certify.py makes the Certificate)."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..tuning.certify import Certificate


def certificate_rows(cert: Certificate) -> list[tuple[str, str]]:
    """The calibration table's rows for a certified run: what the data supports."""
    pct = f"{100 * cert.budget:g}%"
    # With no rung written nothing is pruned, and there is no risk to bound.
    holds = ("the budget holds on data like the calibration data with probability >= "
             f"{cert.confidence:g} over its draw" if cert.chosen >= 0 else "asked for; nothing pruned, so nothing to bound")
    rows = [("confidence", f"{cert.confidence:g}: {holds}"),
            ("risk test", f"on {cert.samples} samples the search never saw{' (but for repeats)' if cert.repeats else ''}; "
                          f"loss = {cert.loss}; {cert.test}"),
            ("ladder", f"{cert.rungs} rung(s), conservative first; tested {len(cert.steps)}, "
                       f"passed {sum(s.passed for s in cert.steps)}")]
    if cert.repeats:
        rows.insert(1, ("repeats", f"{cert.repeats} sample(s) repeat earlier ones, each counted as a draw (an input "
                                   "that recurs in use); copies made in preparing the data overstate the promise"))
    if cert.chosen >= 0:
        seen = f"{cert.losses:g} loss(es) in {cert.samples}"
        if not cert.test.startswith("exact binomial"):  # a sample's loss is its share of positions
            seen = f"losses summing to {cert.losses:.4g} over {cert.samples} samples (each its share of positions)"
        if cert.positions is not None:
            seen = f"{cert.positions[0]} of {cert.positions[1]} labelled positions lost"
        exact = ("; the exact model timed faster than it and is written instead, changing no output (the latency "
                 "table)" if cert.exact_written else "")
        rows.append(("certified", f"rung {cert.chosen + 1} of {cert.rungs}: {seen}; risk <= the budget, {pct}, at "
                                  f"confidence {cert.confidence:g} (this rung's own bound, {100 * cert.bound:.3g}%, "
                                  f"is not adjusted for the walk that chose it){exact}"))
    else:
        # Exact rewrites (zero inputs skipped) may still be written: they change no output.
        rows.append(("certified", "no rung: no pruning layer was written"))
    if not cert.enough:
        rows.append(("data", too_small(cert.budget, cert.confidence, cert.needed, cert.samples, _total_needed(cert))))
    elif cert.needed == 0:  # a budget of every answer: nothing to measure
        rows.append(("data", f"any: a budget of {pct} holds whatever the model answers"))
    else:
        rows.append(("data", f"enough: {cert.needed} testing samples with no loss would certify {pct}"))
    return rows


def too_small(budget: float, confidence: float, needed: int, samples: int, total: int) -> str:
    """Why data of ``samples`` testing samples cannot certify ``budget``, and what would."""
    return (f"too small: certifying {100 * budget:g}% at confidence {confidence:g} needs at least {count_text(needed)} "
            f"testing samples with no loss, there are {samples}; give {count_text(total)} or more calibration "
            "samples, a larger --max-drop or a lower --confidence")


def count_text(n: int) -> str:
    """A sample count as a person reads it: a tiny budget's may have hundreds of digits."""
    return str(n) if n < 10**15 else "about " + f"{Decimal(n):.2e}".replace("e+", "e")


def _total_needed(cert: Certificate) -> int:
    # The testing samples are the --holdout share of the data, less those with no label (a
    # like share of any more data given): scale the need up by it.
    # (needed may pass floats' integers; the share is a ratio of counts, so no 1/3 is read as 0.333...)
    return cert.needed if cert.share <= 0 else math.ceil(cert.needed / Fraction(cert.share).limit_denominator(10**9))


def certificate_json(cert: Certificate | None) -> dict | None:
    if cert is None:
        return None
    return {"confidence": cert.confidence, "budget": cert.budget, "loss": cert.loss, "test": cert.test,
            "testing_samples": cert.samples, "samples_needed": cert.needed, "enough_samples": cert.enough,
            "repeated_samples": cert.repeats, "rungs": cert.rungs, "certified_rung": None if cert.chosen < 0 else cert.chosen + 1,
            # No rung certified: the original is written, and there is no bound to state.
            "observed_losses": cert.losses if cert.chosen >= 0 else None,
            # Pooled positions: observed_losses is then the total of the test's statistic.
            "positions_lost": None if cert.positions is None else cert.positions[0],
            "positions_labelled": None if cert.positions is None else cert.positions[1],
            "certified_bound": cert.bound if cert.chosen >= 0 else None,
            "exact_written": cert.exact_written,
            "steps": [{"losses": s.losses, "p_value": s.p_value, "passed": s.passed} for s in cert.steps]}
