"""Tables the CLI prints (rich), built from a pipeline Result and a CheckResult."""

from __future__ import annotations

from collections import Counter

import onnx
from rich.console import Console
from rich.table import Table

from .accounting import dense_flops, exprune_flops
from .check import CheckResult
from .pipeline import Result


def _mflops(value) -> str:
    return "?" if value is None else f"{value / 1e6:.2f}"


def _op_counts(model: onnx.ModelProto) -> Counter:
    counts: Counter = Counter()

    def walk(graph):
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(g)

    walk(model.graph)
    return counts


def kept_fraction(result: Result, check: CheckResult | None, index: int) -> float | None:
    if check is None or result.rewritten[index].op_node is None:
        return None
    counts = check.pruned.get(result.rewritten[index].op_node.name)
    if not counts or counts[1] == 0:
        return None
    return 1.0 - counts[0] / counts[1]


def layers_table(result: Result, check: CheckResult | None, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("layer", "pattern", "n", "k", "outputs", "threshold", "dense MFLOPs", "floor MFLOPs"):
        t.add_column(col, justify="left" if col in ("layer", "pattern") else "right")
    if check is not None:
        t.add_column("pruned", justify="right")
        t.add_column("measured MFLOPs", justify="right")
    for i, rw in enumerate(result.rewritten):
        c = rw.candidate
        row = [c.layer, " -> ".join(c.op_types), str(c.n), str(rw.k), str(c.outputs), f"{rw.threshold:g}",
               _mflops(dense_flops(c)), _mflops(exprune_flops(c, rw.k, 0.0))]
        if check is not None:
            kept = kept_fraction(result, check, i)
            row += ["?" if kept is None else f"{100 * (1 - kept):.1f}%",
                    _mflops(None if kept is None else exprune_flops(c, rw.k, kept))]
        t.add_row(*row)
    return t


def rejected_table(result: Result) -> Table:
    t = Table(title="Not rewritten", title_justify="left")
    for col in ("layer", "op", "rule", "reason"):
        t.add_column(col)
    for r in result.rejected:
        t.add_row(r.layer, r.op, r.rule, r.reason)
    return t


def measured_total(result: Result, check: CheckResult | None) -> float | None:
    """Whole-model FLOPs per sample after pruning, as counted by the ops on the check data."""
    if check is None or not result.rewritten:
        return None
    total = float(result.dense_flops)
    for i, rw in enumerate(result.rewritten):
        kept = kept_fraction(result, check, i)
        before, after = dense_flops(rw.candidate), exprune_flops(rw.candidate, rw.k, kept or 0.0)
        if kept is None or before is None or after is None:
            return None
        total += after - before
    return total


def summary_table(result: Result, original: onnx.ModelProto, check: CheckResult | None,
                  sizes: tuple[int, int] | None) -> Table:
    t = Table(title="Summary", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    considered = len(result.rewritten) + len(result.rejected)
    t.add_row("layers rewritten", f"{len(result.rewritten)} of {considered} candidates")
    before, after = _op_counts(original), _op_counts(result.model)
    ops = sorted(set(before) | set(after))
    changed = [f"{op} {before[op]}->{after[op]}" for op in ops if before[op] != after[op]]
    t.add_row("op counts", ", ".join(changed) or "unchanged")
    dense = f"{_mflops(result.dense_flops)} MFLOPs per sample (Conv/Gemm/MatMul)"
    if result.uncounted_nodes:
        dense += f", {result.uncounted_nodes} node(s) with unknown shapes not counted"
    t.add_row("dense FLOPs", dense)
    measured = measured_total(result, check)
    if measured is not None and result.dense_flops:
        saved = 1 - measured / result.dense_flops
        t.add_row("measured FLOPs", f"{_mflops(measured)} MFLOPs per sample ({100 * saved:.1f}% saved, "
                  f"counted by the ops on {check.samples} samples of '{check.source}')")
    if sizes is not None:
        t.add_row("model size", f"{sizes[0] / 1e6:.2f} MB -> {sizes[1] / 1e6:.2f} MB")
    if check is not None:
        for d in check.outputs:
            text = f"max abs diff {d.max_abs:.3g} (relative to output range {d.max_rel:.3g})"
            if d.top1_agreement is not None:
                text += f", top-1 agreement {100 * d.top1_agreement:.2f}%"
            t.add_row(f"check '{d.name}'", text)
        if check.accuracy is not None:
            a, b = check.accuracy
            t.add_row("accuracy", f"{100 * a:.2f}% -> {100 * b:.2f}% ({100 * (b - a):+.2f} points)")
    return t


def print_tables(console: Console, *tables: Table) -> None:
    for table in tables:
        console.print(table)
