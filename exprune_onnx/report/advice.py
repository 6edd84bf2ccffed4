"""The warnings `optimize` prints under its tables: what the run's figures say to change."""

from __future__ import annotations

import math
import os

import onnx
from rich.markup import escape

from ..measure.counters import body_ops
from ..ops import PRUNE_OPS, pruning_layers
from ..rules.common import K_OUTSIDE
from ..tuning.metrics import EXACT_TOLERANCE, rounding_tolerance
from ..tuning.other_batch import slower_text
from .latency import same_model_times

# A budget this large is most likely one point written as 1 (a budget of 100 points).
LARGE_BUDGET = 0.2

# An output compared by value only (a map, a regression) that moved by more than this share of
# its largest |value| is worth a warning, as a top-1 agreement under 99% is.
MOVED = 0.05


def changed_values(checked) -> list:
    """The outputs of ``checked`` compared by value only that moved by over ``MOVED``, those
    compared run by run (no batch axis: a scalar, a detection list) over the runs whose
    shapes agree."""
    # (Not the outputs whose runs all disagree in shape: their inf says no figure was had. An
    # infinity that became a number, which an input of inf can make, is a real inf.)
    return [d for d in checked.outputs if d.top1_agreement is None and not d.index and d.max_rel > MOVED
            and not (d.runs is not None and d.runs[0] == d.runs[1])]


def costlier_layers(result, counts: dict | None) -> list[str]:
    """Rewritten layers whose FLOPs counted on the data are not below their dense FLOPs: the
    rule pruned too little to pay for its partial product's decision (StatsTest's second
    partial product, or any rule at T = -inf)."""
    from .tables import layer_rows

    return [row["layer"] for row in layer_rows(result, counts)
            if row["measured_flops"] is not None and row["dense_flops"]
            and row["measured_flops"] >= row["dense_flops"]]


def pruning_nothing(result) -> set[str]:
    """The rewritten layers whose rule can prune nothing: the threshold rule at -inf."""
    return {rw.candidate.layer for rw in result.rewritten
            if rw.rule == "threshold" and rw.threshold == float("-inf")
            and all(t == float("-inf") for t in rw.thresholds or ())}


def warnings(done, argmax_only: tuple = ()) -> list[str]:
    """The warnings for a workflow.Optimized, in rich markup, without their prefix."""
    result, checked, outcome = done.result, done.checked, done.calibrated
    out = []
    out += [escape(note) for note in getattr(done, "notes", ())]  # the sizes taken for open dims, first
    spread = same_model_times(done.timed) if getattr(done, "timed", None) is not None else None
    if spread:
        out.append(f"the latency objective timed one model at {spread[0]:.3f} and {spread[1]:.3f} ms: the machine "
                   "was busy, and its choices may be off; run it again when the machine is quieter (pinned with "
                   "taskset, or with --latency-threads below the free cores)")
    crowded = crowded_threads(done.timed) if getattr(done, "timed", None) is not None else ""
    if crowded:
        out.append(crowded)
    other = slower_text(getattr(done, "timed", None))
    if other:
        out.append(other)
    if getattr(done, "objective", "latency") == "flops" and pruning_layers(done.model):
        out.append("--objective flops keeps the rewrites that save FLOPs and times none: on a CPU an early exit "
                   "often runs slower than the dense layer it replaces (docs/latency.md); the default latency "
                   "objective keeps only what runs faster, and `exprune-onnx evaluate ORIGINAL OPTIMIZED --data "
                   "DATA` times both")
    if outcome is not None and not outcome.met:
        out.append("the held-out part exceeds the budget: calibrate on more data or lower --max-drop")
    else:  # (without --check-data the check runs on that part: said once)
        out += over_budget_on_check(checked, done.model)
    out += [escape(note) for note in (outcome.notes if outcome is not None else [])]
    if checked is None and not result.changed:  # (a check refuses such a model: the original answers NaN)
        out += broken_weights_note(done.model)  # (the input's copy)
    counts = checked.pruned if checked is not None else (outcome.counts_holdout or None if outcome else None)
    costlier = costlier_layers(result, counts) if counts else []
    idle = pruning_nothing(result)
    if costlier and set(costlier) <= idle:  # the lossless mode under --objective flops: no knob to raise
        out.append(f"{len(costlier)} early-exit layer(s) at threshold -inf prune nothing and cost their partial "
                   "products: the default latency objective drops them (and keeps only exact rewrites that pay); "
                   "--threshold or --calibration makes them prune")
    elif costlier:
        # Under calibration the thresholds are the search's, not the user's to raise.
        knob = "use --rule threshold" if outcome is not None else "raise --threshold or --alpha"
        out.append(f"{len(costlier)} rewritten layer(s) cost as many FLOPs as dense or more on the data, as their "
                   f"rule pruned too little ({escape(', '.join(costlier[:3]))}{', ...' if len(costlier) > 3 else ''}):"
                   f" {knob}, leave them out with --config, or keep the default latency objective, which keeps only "
                   "what runs faster")
    # (A model that prunes nothing has no threshold to lower: moved_while_exact speaks for it.)
    plain = checked is not None and outcome is None and not model_is_exact(done.model)
    low = [d for d in (checked.outputs if plain else [])
           if d.top1_agreement is not None and d.top1_agreement < 0.99 and d.runs is None]
    if low:
        out.append(f"{low[0].answer_kind} agreement is below 99%: use a more negative --threshold, per-layer "
                   "thresholds with --config, or --calibration")
    moved = changed_values(checked) if plain else []
    if moved:
        d = max(moved, key=lambda d: d.max_rel)
        out.append(f"output '{escape(d.name)}' moved by up to {100 * d.max_rel:.0f}% of its largest |value| (no "
                   "top-1 answer to check there): use a more negative --threshold, or --calibration with --metric "
                   "relerr")
    out += unbounded_outputs(checked, outcome)
    out += moved_while_exact(checked, done.model)
    still_scores = [o.name for o in done.model.graph.output
                    if o.name in argmax_only and o.type.tensor_type.elem_type != onnx.TensorProto.INT64]
    if still_scores:
        out.append(f"--argmax-only {escape(', '.join(still_scores))}: not rewritten as an arg-max head, the output "
                   "stays the scores (--explain says why)")
    uncounted = body_ops(done.model)
    if uncounted and (checked is not None or outcome is not None):
        out.append(f"{uncounted} ExPrune op(s) inside If/Loop/Scan bodies have no counters (only the main "
                   "graph's ops can output theirs), so their prune rates or inputs skipped show '?' and the FLOPs "
                   "measured on the data are not given")
    k_outside = sum(K_OUTSIDE in r.reason for r in result.rejected)
    if k_outside and not result.rewritten:
        out.append(f"k is n or more in {k_outside} layer(s), and none was rewritten: give a smaller --k (`inspect` "
                   "lists each layer's n)")
    return out


def over_budget_on_check(checked, model: onnx.ModelProto) -> list[str]:
    """The warning for a check that measures the calibrated budget exceeded, which `verify`
    on the same data fails (a trial's 3.1 points on 128 samples, under a budget of 1 met on
    the held-out part, shown in the table with no word)."""
    from ..verify.agreement import budget_verdict, read_budget

    budget = read_budget(model) if checked is not None else None
    judged = budget_verdict(budget, checked) if budget is not None else None
    if judged is None or judged[0]:
        return []
    certify = "" if budget.get("confidence") else ", or certify the budget (--confidence 0.9, the default)"
    return [f"the check exceeds the budget: {escape(judged[1])}; `exprune-onnx verify` fails the model on these "
            f"data: calibrate on more (or more representative) data{certify}"]


def moved_while_exact(checked, model: onnx.ModelProto) -> list[str]:
    """Warnings for the outputs of a model that prunes nothing which the check saw move by more
    than float rounding: a QuantizeLinear rounded a rewritten layer's float difference to a
    whole step, or onnxruntime runs part of the two models differently (a QDQ model's float
    layer it quantizes in the original, rewritten in float: a trial's 0.8% on its logits, in a
    run that called itself lossless)."""
    if checked is None or not model_is_exact(model):
        return []
    kinds = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    return [f"nothing is pruned, yet output '{escape(d.name)}' differs from the original's by {d.max_rel:.2g} of its "
            "largest |value| on the check, more than float rounding: an op after a rewritten layer can magnify its "
            "rounding (a Div by values near 0, a QuantizeLinear rounding it to a whole step), or onnxruntime runs "
            "part of the original differently from its rewrite (it quantizes a QDQ model's float layers between "
            "Q/DQ pairs); --explain lists the rewrites: "
            "--config leaves out an early-exit layer, --sparse-relu off the zero-input reads"
            for d in checked.outputs if not d.index and d.runs is None
            and rounding_tolerance(kinds.get(d.name, 0), EXACT_TOLERANCE) < d.max_rel < math.inf]


def model_is_exact(model: onnx.ModelProto) -> bool:
    """Whether every early-exit op of ``model`` runs the threshold rule at -inf (or it has none)."""
    from ..io.modelio import all_nodes
    from ..ops import DOMAIN

    for node in all_nodes(model.graph):
        if node.domain != DOMAIN or node.op_type not in PRUNE_OPS:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (attrs.get("rule", b"threshold") != b"threshold" or attrs.get("threshold") != -math.inf
                or any(t != -math.inf for t in attrs.get("thresholds", ()))):
            return False
    return True


def crowded_threads(timed) -> str:
    """A warning when the latency objective timed more threads than this process may run on
    (taskset, a container's CPU set): they then take turns on the cores, and the times say
    little of a machine that gives each its own (a trial's 2 threads on one pinned core ran
    both models 2-3 times slower)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux: nothing to compare with
        return ""
    if timed.threads <= cpus:
        return ""
    return (f"the latency objective timed {timed.threads} threads on the {cpus} CPU(s) this process may use, so they "
            "took turns, and its choices may not hold where each has a core of its own: time with as many CPUs as "
            "--latency-threads asks for, or fewer threads")


def unbounded_outputs(checked, outcome) -> list[str]:
    """Warnings for the value outputs (no top-1 answer) a calibration's budget does not bound,
    as it scores one output, that the check saw move: a two-output model's regression head
    moved by 32% of its range while the budget held on its class scores."""
    if checked is None or outcome is None:
        return []
    # (A budget scores one output: --score-output names which, once.)
    out = [f"output '{escape(d.name)}' moved by up to {100 * d.max_rel:.0f}% of its largest |value|, and the "
           f"budget bounds only '{escape(outcome.output)}' (it scores one output): to bound this one instead, "
           f"--score-output {escape(d.name)} --metric relerr; or check it with your own measure"
           for d in changed_values(checked) if d.name != outcome.output]
    # Likewise class scores the budget does not bound (an embedding scored, the logits not).
    return out + [f"output '{escape(d.name)}' has {d.answer_kind} agreement {100 * d.top1_agreement:.2f}% on the "
                  f"check, and the budget bounds only '{escape(outcome.output)}' (it scores one output): to bound "
                  f"this one instead, --score-output {escape(d.name)}; or check it with your own measure"
                  for d in checked.outputs if d.name != outcome.output and d.top1_agreement is not None
                  and d.top1_agreement < 0.99 and d.runs is None]


def budget_warning(max_drop: float) -> str | None:
    """The warning for a --max-drop that reads as points rather than a fraction, or None."""
    if max_drop < LARGE_BUDGET:
        return None
    return (f"--max-drop {max_drop:g} is a fraction: it allows a drop of {100 * max_drop:g} points (0.01 is one "
            f"point), or a relative error of {max_drop:g}")


def budget_fraction_hint(value: float) -> str:
    """For a budget over 1, most likely meant in points or percent: what to give instead."""
    if not 1 < value <= 100:
        return ""
    return f": the budget is a fraction (0.01 is one point), so a drop of {value:g} points is {value / 100:g}"


def plain_warnings(done, argmax_only: tuple = (), max_drop: float | None = None) -> list[str]:
    """The warnings of a workflow.Optimized as plain text, the budget's first: what the
    Python API and --report give, where the command line prints them."""
    from rich.text import Text

    first = budget_warning(max_drop) if max_drop is not None and done.calibrated is not None else None
    return ([first] if first else []) + [Text.from_markup(line).plain for line in warnings(done, argmax_only)]


def lossless_note(original: onnx.ModelProto) -> str:
    """What the command did when nothing asked it to prune: exact rewrites only, unless the
    model given prunes already (an optimised model given again), whose early-exit layers
    go on pruning as they were set."""
    pruning = pruning_layers(original)
    how = "--calibration DATA --max-drop D prunes within a budget, --threshold T as you set it"
    if pruning:
        return (f"nothing more is pruned (exact rewrites only), but the model given has {pruning} early-exit "
                f"layer(s) of its own, which prune as they were set; {how}")
    # Worded for both ways here: --threshold=-inf typed, and no threshold given at all.
    return f"lossless: no threshold above -inf and no calibration, so no output is pruned (exact rewrites only); {how}"


def ours_note(model: onnx.ModelProto, path: str) -> str | None:
    """inspect on a model this compiler wrote: the ops of ours it holds, which no table lists
    (its tables are of the layers still to rewrite); ``path`` as typed, for the command to
    paste."""
    import shlex
    from collections import Counter

    from ..io.modelio import all_nodes
    from ..ops import DOMAIN

    counts = Counter(n.op_type for n in all_nodes(model.graph) if n.domain == DOMAIN)
    if not counts:
        return None
    held = ", ".join(f"{c} {op}" for op, c in sorted(counts.items()))
    return f"the model holds {held} (optimised already); exprune-onnx verify ORIGINAL {shlex.quote(path)} checks them"


def earlier_layers_note(original: onnx.ModelProto) -> str | None:
    """With --threshold or --config on a model optimised before: its own early-exit layers
    keep their settings, which the options given do not reach."""
    pruning = pruning_layers(original)
    if not pruning:
        return None
    return (f"the model given has {pruning} early-exit layer(s) of its own, which keep the thresholds they were "
            "written with: --threshold and --config set only the layers rewritten now (optimise the original "
            "model to set them all)")


def uncalibrated_note(result) -> str:
    """Why the calibration data calibrated nothing."""
    inside = body_ops(result.model, PRUNE_OPS)
    if inside:
        return (f"--calibration calibrated nothing: the {inside} early-exit layer(s) are inside If/Loop/Scan bodies, "
                "whose counters calibration cannot read; they keep the threshold given (-inf without --threshold, "
                "exact), and the data served the check and the timing only")
    return ("--calibration calibrated nothing: no layer of this model has an early exit (`exprune-onnx inspect` "
            "says why); the data served the check and the timing only")


# Config layers not rewritten that the warnings name one by one; --explain lists the rest.
NAMED_CONFIG_LAYERS = 3


def config_notes(layers: dict, result, calibrated: bool, default_threshold: bool = False) -> list[str]:
    """What a config's layers asked that the run did not do: a layer it sets that is not
    rewritten (not a candidate, or a k out of its range), as the setting would otherwise be
    dropped without a word; and, with calibration, that the calibration chose each layer's
    threshold and rule, where the config set one for a layer or in its default
    (``default_threshold``). Layers the config skips, or that the latency objective dropped,
    are not named (the latency table lists the latter)."""
    named = {name for name, s in layers.items() if not s.skip}
    why: dict[str, str] = {}
    for r in result.rejected:
        if r.layer in named and not r.skipped:
            why.setdefault(r.layer, r.reason)
    out = [f"the config sets layer '{name}', which is not rewritten: {reason}"
           for name, reason in list(why.items())[:NAMED_CONFIG_LAYERS]]
    if len(why) > NAMED_CONFIG_LAYERS:
        out.append(f"{len(why) - NAMED_CONFIG_LAYERS} more layer(s) the config sets are not rewritten "
                   "(--explain lists why)")
    if calibrated and (named or default_threshold):
        out.append("--calibration chose every layer's threshold and rule: of the config, only its k and skip "
                   "were used")
    return out


def left_behind_note(stale) -> str:
    """What the files a killed run staged beside the output (io/outputs.left_behind) are."""
    names = ", ".join(p.name for p in stale[:3]) + (" ..." if len(stale) > 3 else "")
    return (f"{names} beside it: left by a run that was killed while writing; delete "
            f"{'it' if len(stale) == 1 else 'them'}")


def broken_weights_note(model) -> list[str]:
    """A model written unchanged whose own weights hold NaN or +Inf: no check ran to refuse it
    (a trial's was written back with no word; under --objective flops the check refused it)."""
    from ..measure.nan_outputs import nonfinite_weights

    broken = nonfinite_weights(model) if model is not None else ""
    return [escape(f"the model's own weights hold NaN or Inf ({broken}): it was written unchanged, and may answer "
                   "NaN whatever its inputs; export it again")] if broken else []
