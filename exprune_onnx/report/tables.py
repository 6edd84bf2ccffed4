"""Tables the CLI prints (rich) and the JSON report, built from compiler results."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
from rich.table import Table

from ..compiler.pipeline import Result
from ..io.data import quoted_source
from ..io.modelio import all_nodes
from ..measure.compare import CheckResult
from ..measure.counters import flops_saved, original_saved, skipping_saved
from ..measure.flops import dense_flops, exprune_flops
from ..runtime import TILES_NOTE, cpu_has_tiles
from .markup import escape, visible
from .units import dense_flops_text, flops_text, flops_unit, scaled


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in all_nodes(model.graph))


def percent(share: float) -> str:
    """A share as a percentage to one decimal, never "-0.0%"."""
    value = 100 * share
    return f"{0.0 if abs(value) < 0.05 else value:.1f}%"


def samples_text(count: int) -> str:
    return f"{count} sample" + ("" if count == 1 else "s")


def kept_fraction(rewritten, counts: dict | None) -> float | None:
    if counts is None or rewritten.op_node is None:
        return None
    c = counts.get(rewritten.op_node.name)
    if not c or c[1] == 0:
        return None
    return 1.0 - c[0] / c[1]


def layer_rows(result: Result, counts: dict | None, stats: dict | None = None) -> list[dict]:
    """One record per rewritten layer: what the tables and the JSON report show."""
    rows = []
    for rw in result.rewritten:
        c = rw.candidate
        kept = kept_fraction(rw, counts)
        row = {
            "layer": c.layer, "pattern": c.op_types, "rule": rw.rule, "n": c.n, "k": rw.k,
            "outputs": c.outputs, "parameter": _parameter(rw), "dense_flops": dense_flops(c),
            "floor_flops": exprune_flops(c, rw.k, 0.0, rw.rule),
            "pruned": None if kept is None else 1.0 - kept,
            "measured_flops": None if kept is None else exprune_flops(c, rw.k, kept, rw.rule),
        }
        if rw.thresholds is not None:
            row["thresholds"] = list(rw.thresholds)
        if stats is not None and (rw.rule, rw.k) in stats.get(c.layer, {}):
            s = stats[c.layer][(rw.rule, rw.k)]
            param = row["parameter"] if rw.thresholds is None else np.asarray(rw.thresholds)
            row["calibration_pruned"] = s.prune_rate(param)
            # A head's loss is the share of answers it changes, a ReLU layer's the output mass.
            key = "calibration_changed_answers" if c.rule == "argmax_head" else "calibration_lost_mass"
            row[key] = s.loss(param)
        rows.append(row)
    return rows


def _parameter(rw) -> float | None:
    """The rule's knob: T for threshold, the critical z for statstest, none for certified."""
    return {"threshold": rw.threshold, "statstest": rw.z_crit}.get(rw.rule)


def layers_table(result: Result, counts: dict | None, title: str, stats: dict | None = None) -> Table:
    t = Table(title=title, title_justify="left")
    rows = layer_rows(result, counts, stats)
    # One unit for the column, MFLOPs from a layer of 1 MFLOP up (a tiny model's in kFLOPs).
    scale, unit = flops_unit(max([r["dense_flops"] or 0 for r in rows], default=0), largest=1e6)
    cols = ["layer", "pattern", "n", "k", "outputs", "rule", "parameter", f"dense {unit}", f"floor {unit}"]
    if counts is not None:
        cols += ["pruned", f"measured {unit}"]
    if stats is not None:
        cols += ["lost mass (calib.)"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("layer", "pattern") else "right")
    for row in rows:
        param = "-" if row["parameter"] is None else f"{row['parameter']:.4g}"
        if "thresholds" in row:  # an output never pruned is at -inf: counted apart, as --report's median leaves it
            ths = np.asarray(row["thresholds"], dtype=np.float64)
            never, finite = int(np.isneginf(ths).sum()), ths[np.isfinite(ths)]
            median = f"median {float(np.median(finite)):.4g}" if finite.size else "none finite"
            param = f"per output, {median}" + (f", {never} at -inf" if never else "")
        cells = [escape(row["layer"]), " -> ".join(row["pattern"]), str(row["n"]), str(row["k"]), str(row["outputs"]),
                 row["rule"], param, scaled(row["dense_flops"], scale), scaled(row["floor_flops"], scale)]
        if counts is not None:
            cells += ["?" if row["pruned"] is None else f"{100 * row['pruned']:.1f}%",
                      scaled(row["measured_flops"], scale)]
        if stats is not None:
            lost = row.get("calibration_lost_mass")
            changed = row.get("calibration_changed_answers")
            cells += [f"{100 * changed:.3f}% answers" if changed is not None else
                      "-" if lost is None else f"{100 * lost:.3f}%"]
        t.add_row(*cells)
    return t


def sparse_rows(result: Result, counts: dict | None) -> list[dict]:
    """One record per consumer that reads its input sparsely (ExPruneSparseMatMul/Conv)."""
    rows = []
    for s in result.sparse:
        c = (counts or {}).get(s.op_node.name)
        rows.append({"layer": s.layer, "op": s.op_node.op, "pattern": s.op_types, "reads": s.source,
                     "skipped_inputs": None if not c or not c[1] else 1.0 - c[0] / c[1]})
    return rows


def sparse_table(result: Result, counts: dict | None) -> Table:
    # The ops count the inputs they multiply: on a CPU with AMX tiles an image that is
    # mostly non-zero runs densely on them and skips none, whatever its zeros.
    caption = TILES_NOTE if cpu_has_tiles() else None
    t = Table(title="Zero inputs skipped (exact)", title_justify="left", caption_justify="left", caption=caption)
    for col in ("layer", "op", "pattern", "reads zeros of", "inputs skipped (measured)"):
        t.add_column(col, justify="right" if col.startswith("inputs") else "left")
    for row in sparse_rows(result, counts):
        skipped = row["skipped_inputs"]
        t.add_row(escape(row["layer"]), row["op"], " -> ".join(row["pattern"]), row["reads"],
                  "-" if skipped is None else f"{100 * skipped:.1f}%")
    return t


def zero_input_candidates_table(result: Result) -> Table:
    """inspect: the convs, MatMuls and Gemms that may read a ReLU's zeros sparsely (exact; kept
    under --objective latency where faster, and behind an early exit that optimize keeps)."""
    t = Table(title="Zero-input candidates (exact; kept where the whole model is timed faster)",
              title_justify="left")
    for col in ("layer", "reads zeros of", "fused pattern"):
        t.add_column(col)
    for layer, source, pattern in result.zero_input_candidates:
        t.add_row(escape(layer), source, " -> ".join(pattern))
    return t


def rejected_table(result: Result) -> Table:
    t = Table(title="Not rewritten", title_justify="left")
    for col in ("layer", "op", "rule", "reason"):
        t.add_column(col)
    for r in result.rejected + result.sparse_rejected:
        t.add_row(escape(r.layer), r.op, r.rule, escape(r.reason))
    return t


def measured_total(result: Result, counts: dict | None, samples: int) -> float | None:
    """Whole-model FLOPs per sample after pruning, as counted by the ops."""
    if not counts or not (result.rewritten or result.sparse) or samples <= 0 or result.uncounted_nodes:
        return None  # a partial dense count cannot take every op's savings
    return result.dense_flops - flops_saved(result.model, counts) / samples


def input_executed(original, result: Result, check) -> float | None:
    """FLOPs per sample the input model executes, counted by its own ops, where it was
    rewritten before (a model optimised again): the summary's "measured FLOPs" would
    otherwise pass its savings off as this run's."""
    if check is None or not check.pruned_original or measured_total(result, check.pruned, 1) is None:
        return None
    return result.dense_flops - original_saved(original, check)


def saved_text(saved: float, skipped: float) -> str:
    """The share of dense FLOPs saved, split where zero inputs skipped (exact) are part of it:
    a lossless model saves FLOPs too, none of them by pruning."""
    if percent(skipped) == "0.0%":  # too little to show apart (a small layer's skipped inputs)
        return f"{percent(saved)} saved"
    if abs(saved - skipped) <= 1e-9:
        return f"{percent(saved)} saved, all by exact zero-input skipping"
    rest = "under 0.05%" if percent(abs(saved - skipped)) == "0.0%" else percent(abs(saved - skipped))
    if saved < skipped:  # early exits that prune less than their partial products cost (none at -inf)
        return (f"{percent(saved)} saved: {percent(skipped)} by exact zero-input skipping, less {rest} the early "
                "exits add")
    return f"{percent(saved)} saved: {percent(skipped)} by exact zero-input skipping, {rest} by pruning"


def runtime_fused(model: onnx.ModelProto) -> list[str]:
    """onnxruntime's own fused ops in ``model`` that stay fused: it was saved after
    onnxruntime's graph optimisations (optimized_model_filepath), and these hide their
    Conv -> Relu (the FusedConv and FusedGemm compiler/unfuse.py splits do not)."""
    from ..compiler.unfuse import splits
    from ..rules.runtime_fused import FUSED

    return sorted({f"{n.domain}.{n.op_type}" for n in all_nodes(model.graph)
                   if n.domain == "com.microsoft.nchwc" or ((n.domain, n.op_type) in FUSED and not splits(n))})


def split_note(model: onnx.ModelProto) -> str | None:
    """What inspect and optimize say of the FusedConv and FusedGemm the compiler splits."""
    from ..compiler.unfuse import splits

    split = Counter(n.op_type for n in all_nodes(model.graph) if splits(n))
    if not split:
        return None
    ops = ", ".join(f"{count} {op}" for op, count in sorted(split.items()))
    return (f"the model was saved after onnxruntime's graph optimisations: its fused ops ({ops}) are read as the "
            "ops they fuse (exact; onnxruntime fuses again at load time the layers left as they were)")


def fused_warning(model: onnx.ModelProto) -> str | None:
    """The warning of onnxruntime's fused ops (``runtime_fused``), `optimize`'s (and its
    report's and the Python API's) and `inspect`'s alike."""
    fused = runtime_fused(model)
    if not fused:
        return None
    return (f"the model holds onnxruntime's own fused ops ({', '.join(fused)}): it was saved after onnxruntime's "
            "graph optimisations, which hide the layers this compiler rewrites; give it the model as exported")


def summary_table(result: Result, original: onnx.ModelProto, check: CheckResult | None,
                  sizes: tuple[int, int] | None) -> Table:
    t = Table(title="Summary", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    # Candidates as inspect lists them: the layers the rules could rewrite, skipped ones too.
    candidates = len(result.rewritten) + sum(r.skipped for r in result.rejected)
    others = len(result.rejected) - (candidates - len(result.rewritten))
    # (the exact zero-input reads are no early-exit layers, but are rewrites all the same)
    reads = len(result.sparse)
    t.add_row("layers rewritten", f"{len(result.rewritten)} of {candidates} early-exit candidates"
              + (f" ({others} more layer(s) match a pattern but cannot be rewritten)" if others else "")
              + (f"; {reads} layer(s) read their inputs' zeros (exact)" if reads else ""))
    before, after = op_counts(original), op_counts(result.model)
    ops = sorted(set(before) | set(after))
    changed = [f"{op} {before[op]}->{after[op]}" for op in ops if before[op] != after[op]]
    t.add_row("op counts", ", ".join(changed) or "unchanged")
    t.add_row("dense FLOPs", dense_flops_text(result))
    measured = measured_total(result, check.pruned if check else None, (check.rows or check.samples) if check else 0)
    if measured is not None and result.dense_flops:
        saved = 1 - measured / result.dense_flops
        skipped = skipping_saved(result.model, check.pruned) / (check.rows or check.samples) / result.dense_flops
        carried = input_executed(original, result, check)
        before = "" if carried is None else \
            f"; the input, itself rewritten before, executes {flops_text(carried, result.dense_flops)}"
        t.add_row("measured FLOPs", f"{flops_text(measured, result.dense_flops)} per sample ({saved_text(saved, skipped)}"
                  f", counted by the ops on {samples_text(check.samples)} of {quoted_source(check.source)}{before})")
    if sizes is not None:
        t.add_row("model size", f"{sizes[0] / 1e6:.2f} MB -> {sizes[1] / 1e6:.2f} MB")
    if check is not None:
        for d in check.outputs:
            t.add_row(f"check '{escape(d.name)}'", output_text(d))
        if accuracy_text(check):
            t.add_row("accuracy", accuracy_text(check))
    return t


def accuracy_text(check) -> str | None:
    """The accuracy row of a check: the change, or why labels given were not used."""
    if check.accuracy is not None:
        # The change is taken between the rounded figures, so that it reads as their difference.
        a, b = (round(100 * v, 2) for v in check.accuracy)
        return f"{a:.2f}% -> {b:.2f}% ({b - a + 0.0:+.2f} points)"
    if check.labelled:
        return ("not measured: no output is class scores the labels could name ([N, C] or [N, T, C], or a class "
                "index); the labels were not used")
    return None


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def jsonable(value):
    """Plain JSON types; infinities as strings, which JSON cannot hold."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    return _finite(value)


def output_text(d) -> str:
    runs = d.runs
    if runs is not None:  # no batch axis (a detection count): compared run by run
        head = f"no batch axis, compared per run: another shape on {runs[0]} of {runs[1]} runs"
        if runs[0] == runs[1]:
            return head
        rest = (f"same value on {100 * d.top1_agreement:.2f}% of entries" if d.index
                else f"max abs diff {d.max_abs:.3g} ({d.max_rel:.3g} of the largest |output|)")
        return f"{head}; on the others {rest}"
    if d.index:  # an [N, T] arg-max has one per position, not per sample
        return f"same value on {100 * d.top1_agreement:.2f}% of predictions"
    text = f"max abs diff {d.max_abs:.3g} ({d.max_rel:.3g} of the largest |output|)"
    if d.top1_agreement is not None:
        text += f", {d.answer_kind} agreement {100 * d.top1_agreement:.2f}%"
    return text


def evaluation_table(check: CheckResult, dense: int, saved: float | None, timing, machine: str,
                     memory: dict | None = None, unknown_why: str = "", tiles: bool = False,
                     original_saved: float = 0.0) -> Table:
    """``saved`` is None when the ops' savings cannot be set against the dense count
    (``unknown_why``: shapes unknown, or a pair not compiled one from the other); ``tiles``:
    sparse convs on a CPU with AMX tiles, whose dense images save no FLOPs;
    ``original_saved``: what the original's own ops skip, where it was rewritten before."""
    t = Table(title=f"Evaluation on {samples_text(check.samples)} of {escape(quoted_source(check.source))}", title_justify="left",
              show_header=False, caption=TILES_NOTE if tiles else None, caption_justify="left")
    t.add_column("what")
    t.add_column("value")
    if accuracy_text(check):
        t.add_row("accuracy", accuracy_text(check))
    for d in check.outputs:
        t.add_row(f"output '{escape(d.name)}'", output_text(d))
    if saved is None:
        known = f"{flops_text(dense)} dense; executed " if dense else ""
        t.add_row("FLOPs per sample", f"{known}unknown: {unknown_why}")
    elif original_saved and dense:  # both skip work: the change is between what each executes
        before, after = dense - original_saved, dense - saved
        share = abs(after - before) / before if before > 0 else 0.0
        change = "as many as" if percent(share) == "0.0%" else \
            f"{percent(share)} {'more' if after > before else 'fewer'} than"
        t.add_row("FLOPs per sample", f"{flops_text(dense)} dense; executed: original {flops_text(before, dense)}, "
                  f"optimised {flops_text(after, dense)} ({change} the original's), counted by the ops of both")
    else:
        share = f" ({percent(saved / dense)} saved)" if dense else ""
        t.add_row("FLOPs per sample", f"{flops_text(dense)} dense -> {flops_text(dense - saved, dense)} "
                  f"executed{share}, counted by the ops")
    o, p = timing.original_ms, timing.optimized_ms
    t.add_row("latency", f"original {o[1]:.3f} ms [{o[0]:.3f}-{o[2]:.3f}], optimised {p[1]:.3f} ms "
              f"[{p[0]:.3f}-{p[2]:.3f}]: ratio {timing.ratio:.3f} (median of {timing.runs} alternating runs, "
              f"25th-75th percentile in brackets; batch {timing.batch}, {timing.threads} thread(s), {machine})")
    if memory is not None:
        a, b = memory["size_mb"]
        t.add_row("model size", f"{a:.2f} MB -> {b:.2f} MB")
        a, b = memory["peak_rss_mib"]
        t.add_row("peak memory", f"{a:.1f} MiB -> {b:.1f} MiB (resident, a fresh process loading the model and "
                  f"running it at batch {timing.batch})")
    return t


def print_optimized(console, done, original: onnx.ModelProto, name: str, explain: bool,
                    argmax_only: tuple = ()) -> None:
    """What `optimize` prints: the tables of a workflow.Optimized and its warnings."""
    from ..io.bigmodel import model_bytes
    from .advice import warnings
    from .calibration_tables import calibration_table
    from .latency import latency_table

    result, checked, outcome, timed = done.result, done.checked, done.calibrated, done.timed
    if result.rewritten:  # (a model whose only rewrites read zeros has no early exit to list)
        counts = checked.pruned if checked is not None else (outcome.counts_holdout or None if outcome else None)
        console.print(layers_table(result, counts, f"Rewritten layers ({escape(name)})", outcome.stats if outcome else None))
    if result.sparse:
        console.print(sparse_table(result, checked.pruned if checked is not None else None))
    if timed is not None and timed.layers:
        console.print(latency_table(timed))
    if explain and (result.rejected or result.sparse_rejected):
        console.print(rejected_table(result))
    console.print(summary_table(result, original, checked, (model_bytes(original), model_bytes(done.model))))
    if outcome is not None:
        console.print(calibration_table(outcome))
    for line in warnings(done, argmax_only):
        console.print(f"[yellow]warning:[/] {visible(line)}")  # (markup escaped, for the JSON too)
    if not result.changed:
        # Candidates the latency objective timed and dropped, or that no certificate let through,
        # were not "nothing to rewrite".
        cert = getattr(outcome, "certificate", None)
        dropped = timed is not None and any(not t.note.startswith("prunes nothing") for t in timed.layers) \
            or cert is not None and cert.chosen < 0 or any(r.skipped for r in result.rejected)
        console.print(("no rewrite kept" if dropped else "nothing to rewrite") + ": the model was written unchanged"
                      + ("" if explain else " (--explain says why)"))
    elif result.rejected and not explain:
        console.print(f"{len(result.rejected)} layer(s) not rewritten: --explain lists why")
