"""The calibration's table and its part of the JSON report: what the budget search
achieved, on the calibration and the held-out part."""

from __future__ import annotations

from rich.table import Table

from ..compiler.pipeline import Result
from ..tuning.metrics import budget_words
from .markup import escape
from .tables import jsonable, layer_rows, percent, samples_text
from .units import dense_flops_text


def calibration_table(outcome) -> Table:
    """What the budget search achieved, on the calibration and the held-out part."""
    t = Table(title="Calibration", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    n_cal, n_hold = outcome.split
    cert = getattr(outcome, "certificate", None)
    scored = f" on output '{escape(outcome.output)}'" if outcome.output else ""
    t.add_row("budget", f"{budget_words(outcome.metric, outcome.max_drop, cert is not None)}{scored}, "
                        f"rule {outcome.rule}")
    if outcome.labelled and outcome.metric not in ("accuracy", "lost"):
        asked = outcome.asked or outcome.metric == "agreement"  # (chosen alone, it never takes labels)
        t.add_row("labels", f"not used by the {outcome.metric} metric (asked for)" if asked else
                  f"not used: the {outcome.metric} metric scores this output, which is not class scores the labels "
                  "could name")
    t.add_row("search", f"{len(outcome.trials)} compiled trials, {outcome.passes:.1f} passes over the data, "
                        f"in {outcome.seconds:.1f} s")
    before = getattr(outcome, "before_latency", None)
    if before is not None:
        t.add_row("search's choice", _score_text(*before, n_cal, outcome.result)
                  + " (its early exits; exact zero-input reads of plain ReLUs are timed after); the latency "
                  "objective then dropped the rewrites that were not faster, or no faster than an exact zero-input "
                  "read, and kept the reads that were (its table)")
    part = "ladder part" if cert else "calibration part"
    # With a certificate, the rung written may be gentler than the search's choice: this row is the choice's.
    t.add_row(f"{part} (search's choice, after the latency objective)" if before is not None and cert
              else f"{part} (after the latency objective)" if before is not None
              else "ladder part (search's choice)" if cert else part,
              _score_text(outcome.calibration, outcome.saved_calibration, n_cal, outcome.result))
    if outcome.holdout is not None:
        t.add_row("testing part, held out (written model)" if cert else "held-out part",
                  _score_text(outcome.holdout, outcome.saved_holdout, n_hold, outcome.result))
    if cert is not None:
        from .certificate import certificate_rows

        for what, value in certificate_rows(cert):
            t.add_row(what, value)
        return t
    verdict = "met" if outcome.met else "NOT met on the held-out part"
    # (--confidence 0: the held-out figure is all there is, no bound on new data.)
    verdict += f" on the {n_hold} held-out samples (a point estimate, not certified)" if outcome.met and n_hold else ""
    if outcome.backoffs:
        parts = " and ".join(outcome.backoff_parts) or "a part"
        verdict += f" after backing off {outcome.backoffs} rung(s): the first choice was over budget on {parts}"
        if "the held-out part" in outcome.backoff_parts:
            verdict += ", which therefore took part in the final choice"
    t.add_row("budget", verdict)
    return t


def _score_text(score, saved: float, samples: int, result: Result) -> str:
    if score.metric in ("accuracy", "lost"):
        text = f"accuracy {100 * score.original:.2f}% -> {100 * score.optimized:.2f}%"
        if score.metric == "lost":
            text += f", right answers lost {100 * score.drop:.2f}%"
    elif score.metric == "agreement":
        text = f"{score.answer_kind} agreement {100 * score.optimized:.2f}%"
    elif score.over is not None:  # a certified budget's measure (metrics.score)
        text = f"relative error over {score.over:g} on {100 * score.drop:.2f}% of samples"
    else:
        text = f"relative error {score.drop:.3g}"
    if result.uncounted_nodes:  # the share would be of a partial count
        return f"{text} on {samples_text(samples)}; FLOPs saved unknown ({dense_flops_text(result)})"
    return f"{text}; {percent(saved)} of FLOPs saved (measured by the ops) on {samples_text(samples)}"


def _score_json(score, saved: float | None) -> dict:
    # A drop is a difference of two shares: 0.871 - 0.861 is 0.010000000000000009 in floats,
    # which a script would read as over a budget of 0.01 that the table calls met.
    return vars(score) | {"drop": round(score.drop, 12), "flops_saved": saved}


def calibration_json(outcome, original_path: str, output_path: str) -> dict:
    from .certificate import certificate_json
    from .latency import latency_json

    rows = layer_rows(outcome.result, outcome.counts_holdout or None, outcome.stats)
    unknown = outcome.result.uncounted_nodes
    return jsonable({
        "model": original_path,
        "output": output_path,
        "metric": outcome.metric,
        "scored_output": outcome.output,
        "max_drop": outcome.max_drop,
        "rule": outcome.rule,
        "split": {"calibration": outcome.split[0], "held_out": outcome.split[1]},
        "dense_flops_per_sample": outcome.result.dense_flops,
        # A share of a partial count is no share (dense_flops_text says what is uncounted).
        "calibration": _score_json(outcome.calibration, None if unknown else outcome.saved_calibration),
        "held_out": None if outcome.holdout is None else
        _score_json(outcome.holdout, None if unknown else outcome.saved_holdout),
        # The search's own choice, when the latency objective then dropped some of its rewrites.
        "before_latency": None if getattr(outcome, "before_latency", None) is None else
        _score_json(outcome.before_latency[0], None if unknown else outcome.before_latency[1]),
        "budget_met": outcome.met,
        "held_out_backoffs": outcome.backoffs,
        "backoff_parts": list(outcome.backoff_parts),
        "seconds": outcome.seconds,
        "passes": outcome.passes,
        "certificate": certificate_json(getattr(outcome, "certificate", None)),
        "layers": rows,
        "left_alone": [layer for layer, share in outcome.shares.items() if share is None],
        "trials": [vars(tr) for tr in outcome.trials],
        "objective": "flops" if outcome.latency is None else "latency",
        "latency": latency_json(outcome.latency),
    })
