"""docs/benchmarks.md and its plots from bench/results.json, or all three in the `--out` directory."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

from .certified import certified_section
from .models import ROOT


def decode_results(model: str) -> Path:
    """Where ``python -m bench.decode --model MODEL --save`` keeps its results."""
    return ROOT / "bench" / f"decode_{model}.json"


def out_paths(out: Path | None) -> tuple[Path, Path]:
    """(results.json, benchmarks.md) of a run; the plots go beside the markdown, in benchmarks/."""
    if out is None:
        return ROOT / "bench" / "results.json", ROOT / "docs" / "benchmarks.md"
    return out / "results.json", out / "benchmarks.md"


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def commit() -> str:
    """The repository's short commit hash, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    import numpy
    import onnx
    import onnxruntime

    import exprune_onnx

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "system": platform.platform(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "numpy": numpy.__version__,
            "exprune_onnx": exprune_onnx.__version__, "commit": commit(), "library": exprune_onnx.get_library_path(),
            "load_average": load_average(), "affinity": affinity()}


def affinity() -> list[int] | None:
    """The CPUs this process may run on: a run pinned with taskset names its core."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform
        return None


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows): kernel ratios
    move with the microarchitecture, not only with the load."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages: above the core count, other work shared the CPUs."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load_text(mc: dict) -> str:
    start, end = mc.get("load_average"), mc.get("load_average_end")
    if not start:
        return ""
    text = f" Load average (1/5/15 min) {'/'.join(f'{x:g}' for x in start)} at the start"
    return text + (f", {'/'.join(f'{x:g}' for x in end)} at the end." if end else ".")


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def metric(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def ratio(row: dict, batch: int, threads: int) -> str:
    for t in row.get("latency", []):
        if t["batch"] == batch and t["threads"] == threads:
            return f"{t['ratio']:.2f}"
    return "-"


def saved_text(model: dict, row: dict) -> str:
    if "sparse_saved" in row:
        return f"{pct(row['sparse_saved'])} (zero weights skipped in both)"
    return pct(row["saved"])


def latency_text(row: dict) -> str:
    """'kept/candidates layers, ratio' of the latency objective's model."""
    lo = row.get("latency_objective")
    if lo is None:
        return "-"
    if lo["unchanged"]:
        return f"0/{lo['candidates']}, 1.00 (unchanged)"
    return f"{kept_text(lo, '/')}, {lo['ratio']:.2f}"


def kept_text(lo: dict, sep: str) -> str:
    """Early-exit layers kept of those timed, plus any plain-ReLU consumer read sparsely."""
    text = f"{len(lo['kept'])}{sep}{lo['candidates']}"
    relu = len([x for x in lo.get("kept_zero_inputs", []) if not group_row(x, lo)])
    return text + (f" + {relu} zero-input" if relu else "")


def group_row(layer: str, lo: dict) -> bool:
    """Whether ``layer`` names a row of small gains timed together, no layer of its own:
    marked so since the rows carry ``group``, named "a + b" of kept layers before."""
    kept = set(lo.get("kept_zero_inputs", []))
    marked = any(t["layer"] == layer and t.get("group") for t in lo["layers"])
    return marked or (" + " in layer and all(part in kept for part in layer.split(" + ")))


def headline(results: dict) -> list[str]:
    """The README's table: FLOPs saved at both budgets beside the paper's, and the latency ratios."""
    lines = ["| model | stands in for | metric (original) | FLOPs saved, <= 0.1 pt (paper) | metric reached "
             "| FLOPs saved, <= 1 pt (paper) | metric reached | time ratio, FLOPs objective (0.1 / 1 pt) "
             "| latency objective: layers kept, time ratio (0.1 pt; 1 pt) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in results["models"]:
        low, high = m["budgets"]
        lines.append(f"| {m['name']} | {m['paper_row']} | {metric(m['baseline_metric'])} "
                     f"| {saved_text(m, low)} ({m['paper'][0]}) | {metric(low.get('test_metric'))} "
                     f"| {saved_text(m, high)} ({m['paper'][1]}) | {metric(high.get('test_metric'))} "
                     f"| {ratio(low, 1, 1)} / {ratio(high, 1, 1)} | {latency_text(low)}; {latency_text(high)} |")
    return lines


def latency_objective_section(m: dict) -> list[str]:
    rows = [(r, r["latency_objective"]) for r in m["budgets"] if r.get("latency_objective")]
    if not rows:
        return []
    out = ["", "Latency objective (`--objective latency`, batch 1, 1 thread): each rewrite of the budget's choice "
           "timed in the whole model on the calibration file, kept only if the model is at least 1% faster with "
           "it; then the kept model on the test split (an unchanged model is the original file):", "",
           "| budget | layers kept | time ratio | test metric | FLOPs saved | timing took |",
           "|---|---|---|---|---|---|"]
    for row, lo in rows:
        kept = kept_text(lo, " of ") + (" (rest not faster than the original)" if lo["reverted_all"] else "")
        reached = metric(m["baseline_metric"]) if lo["unchanged"] else metric(lo.get("test_metric"))
        out.append(f"| {100 * row['budget']:g} pt | {kept} | {lo['ratio']:.2f}{' (unchanged)' if lo['unchanged'] else ''} "
                   f"| {reached} | {pct(lo['saved'])} | {lo['timing_seconds']:.0f} s |")
    out += ["", "| budget | layer | rewrite | model ms with the rewrite | without | kept |",
            "|---|---|---|---|---|---|"]
    for row, lo in rows:
        for t in lo["layers"]:
            out.append(f"| {100 * row['budget']:g} pt | {t['layer']} | {t.get('rewrite', 'early exit')} "
                       f"| {ms(t['with_ms'])} | {ms(t['without_ms'])} | {'yes' if t['kept'] else 'no'} |")
    return out


def ms(value: float | None) -> str:
    """A latency row's time; none for a rewrite dropped untimed (it prunes nothing)."""
    return "-" if value is None else f"{value:.3f}"


def rounds(t: dict) -> str:
    """A timing's ratio and, when it had several rounds, their range."""
    r = t.get("round_ratios")
    return f"{t['ratio']:.2f}" + (f" ({min(r):.2f}-{max(r):.2f})" if r else "")


def decode_section(m: dict, step: str = "models/kjv_lm_step.onnx") -> list[str]:
    rows = [r for r in m["budgets"] if r.get("decode")]
    if not rows:
        return []
    d0 = rows[0]["decode"]
    prof = d0["profile"]
    top = ", ".join(f"{op} {100 * share:.0f}%" for op, share in list(prof.items())[:5] if not op.startswith("("))
    out = ["", f"One-token decode step (`{step}`, batch 1, 1 thread; bench/decode.py): the "
           f"budget's settings applied to the step graph, timed on {len(d0['positions'])} real decode states, "
           f"each graph running {d0.get('block', 1)} consecutive steps in turn as a decode loop would (the ms columns and "
           "the first ratio) and alternating every step (the last ratio: two graphs that do not both fit in the "
           "cache then evict each other's weights); each ratio is the median of three rounds, their range in "
           "brackets; "
           f"accuracy from decoding {d0['windows']} held-out windows position by position from each graph's own "
           f"caches (original: {metric(d0['original_accuracy'])}). Kernel time of the original step: {top}; "
           f"the FFN (fc1, ReLU, fc2) is {100 * prof['(FFN: fc1, relu, fc2)']:.0f}% of it, which bounds what "
           "rewriting it can save.", "",
           "| budget | variant | custom ops | decode accuracy | original ms | optimised ms | ratio "
           "| ratio, alternating every step |",
           "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for name, v in row["decode"]["variants"].items():
            if v.get("unchanged"):
                out.append(f"| {100 * row['budget']:g} pt | {name} | 0 | {metric(v['accuracy'])} | - | - "
                           "| 1.00 (unchanged) | 1.00 |")
                continue
            if "alternating" not in v:  # a run from before block timing: it alternated every step
                out.append(f"| {100 * row['budget']:g} pt | {name} | {v['custom_ops']} | {metric(v['accuracy'])} "
                           f"| - | - | - | {v['ratio']:.2f} |")
                continue
            out.append(f"| {100 * row['budget']:g} pt | {name} | {v['custom_ops']} | {metric(v['accuracy'])} "
                       f"| {v['original_ms']:.3f} | {v['optimized_ms']:.3f} | {rounds(v)} | {rounds(v['alternating'])} |")
    return out


def model_section(m: dict) -> list[str]:
    out = [f"### {m['name']}: {m['title']}", "",
           f"Stands in for the paper's {m['paper_row']}. Built by `{m['build']}`. Calibration on "
           f"{m['calibration_samples']} training samples (half held out by the search), test on "
           f"{m['test_samples']} test samples. Original test metric {metric(m['baseline_metric'])}.", "",
           "| budget | layers rewritten | test metric | FLOPs saved, whole model | FLOPs saved, rewritten layers "
           "| paper (whole model) | search time | held-out backoffs |",
           "|---|---|---|---|---|---|---|---|"]
    for row, paper in zip(m["budgets"], m["paper"]):
        over = " (over budget)" if row.get("over_budget_on_test") else ""
        out.append(f"| {100 * row['budget']:g} pt | {row['rewritten']} | {metric(row.get('test_metric'))}{over} "
                   f"| {saved_text(m, row)} | {pct(row.get('saved_layers'))} | {paper} "
                   f"| {row['search_seconds']:.0f} s | {row['backoffs']} |")
    out += ["", "Latency of the FLOPs objective's model, optimised / original (median of alternating runs; "
            "quartiles in ms):", "",
            "| budget | batch | threads | original ms | optimised ms | ratio |", "|---|---|---|---|---|---|"]
    for row in m["budgets"]:
        for t in row.get("latency", []):
            o, p = t["original_ms"], t["optimized_ms"]
            out.append(f"| {100 * row['budget']:g} pt | {t['batch']} | {t['threads']} | {o[1]:.3f} [{o[0]:.3f}-{o[2]:.3f}] "
                       f"| {p[1]:.3f} [{p[0]:.3f}-{p[2]:.3f}] | {t['ratio']:.2f} |")
    out += ["", "| budget | model size original -> optimised | peak memory original -> optimised (batch 32) |",
            "|---|---|---|"]
    for row in m["budgets"]:
        if "size_bytes" in row:
            s, r = row["size_bytes"], row["memory_mb"]
            out.append(f"| {100 * row['budget']:g} pt | {s['original'] / 1e6:.2f} MB -> {s['optimized'] / 1e6:.2f} MB "
                       f"| {r['original']:.0f} MB -> {r['optimized']:.0f} MB |")
    out += latency_objective_section(m)
    out += decode_section(m)
    out += ["", f"![trade-off and prune rates](benchmarks/{m['name']}.png)", ""]
    return out


def decode_only_section(path: Path) -> list[str]:
    """A saved run of ``python -m bench.decode --save`` (bench/decode.py)."""
    r = json.loads(path.read_text())
    mc = r["machine"]
    out = [f"## Decode step of {r['model']}", "",
           f"Generated by `{r.get('command', 'python -m bench.decode --model ' + r['model'] + ' --save')}` into "
           f"`{shown(path)}` at commit "
           f"{mc['commit']} ({mc['cpu']}, {mc['cores']} cores). The model is built by `{r['build']}`. "
           f"For each budget the search calibrates the full-sequence graph on {r['calib_samples']} training "
           "windows (half held out by the search); the first table scores the calibrated full-sequence graph on "
           "held-out text.", "",
           "| budget | layers rewritten | search time | calibration drop | held-out windows | test accuracy "
           "original -> optimised |", "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        t = row.get("test")
        test = f"{t['windows']} | {metric(t['original'])} -> {metric(t['optimized'])}" if t else "- | -"
        out.append(f"| {100 * row['budget']:g} pt | {row['rewritten']} | {row['search_seconds']:.0f} s "
                   f"| {100 * row['calibration_drop']:.2f} pt | {test} |")
    out += decode_section({"budgets": r["rows"]}, f"models/{r['model']}_step.onnx")
    out += ["", "The latency objective on the step graph, per rewrite (ms per step with and without it):", "",
            "| budget | layer | rewrite | with ms | without ms | kept |", "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        for t in row["decode"]["latency_objective_layers"]:
            out.append(f"| {100 * row['budget']:g} pt | {t['layer']} | {t['rewrite']} | {t['with_ms']:.3f} "
                       f"| {t['without_ms']:.3f} | {'yes' if t['kept'] else 'no'} |")
    return out + [""]


def plot(m: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for row, colour in zip(m["budgets"], ("tab:blue", "tab:orange")):
        trials = row["trials"]
        axes[0].scatter([100 * t["saved"] for t in trials], [100 * t["drop"] for t in trials], s=12, color=colour,
                        label=f"search at {100 * row['budget']:g} pt (calibration part)")
        axes[0].axhline(100 * row["budget"], color=colour, lw=0.8, ls="--")
    axes[0].set_xlabel("FLOPs saved (%)")
    axes[0].set_ylabel("metric drop (points)")
    axes[0].legend(fontsize=7)
    axes[0].set_title("trade-off the search explored")
    row = m["budgets"][-1]
    names = [layer["layer"][-18:] for layer in row.get("layers", [])]
    axes[1].barh(names, [100 * (layer["pruned"] or 0) for layer in row.get("layers", [])])
    axes[1].set_xlabel("outputs pruned on test (%), 1 pt budget")
    axes[1].tick_params(axis="y", labelsize=7)
    cases = [(t["batch"], t["threads"]) for t in m["budgets"][0].get("latency", [])]
    for i, row in enumerate(m["budgets"]):
        axes[2].bar([j + 0.4 * i for j in range(len(cases))], [t["ratio"] for t in row.get("latency", [])],
                    width=0.4, label=f"{100 * row['budget']:g} pt")
    axes[2].axhline(1.0, color="k", lw=0.8)
    axes[2].set_xticks(range(len(cases)), [f"b{b} t{t}" for b, t in cases])
    axes[2].set_ylabel("time optimised / original")
    axes[2].legend(fontsize=7)
    axes[2].set_title("latency ratio")
    fig.suptitle(m["name"])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def write_markdown(results: dict, out: Path, source: Path | None = None) -> None:
    mc = results["machine"]
    source = ROOT / "bench" / "results.json" if source is None else source
    lines = ["# Benchmarks", "",
             f"Generated by `python -m bench` from `{shown(source)}`; do not edit by hand.", "",
             f"Machine: {mc['cpu']}, {mc['cores']} cores, {mc['system']}; Python {mc['python']}, onnxruntime "
             f"{mc['onnxruntime']}, onnx {mc['onnx']}, numpy {mc['numpy']}; exprune-onnx {mc['exprune_onnx']} at "
             f"commit {mc['commit']}." + load_text(mc) + (" **Quick run** (1,000 test samples, 5 timed runs)." if results["quick"]
                                         else ""), "",
             "The paper's figures (its section 4, as summarised in the project brief's method notes) are ranges "
             "over its CNN, GCN and OPT models; it does not "
             "give one figure per model, so each row shows the range. Its models are much larger than ours "
             "(ResNet18 at 1.1 GFLOPs, OPT at 1.3 B parameters): read the comparison as a sanity check, not a "
             "match.", "", "## Headline", ""]
    lines += headline(results)
    lines += certified_section(results)
    if results["missing"]:
        lines += ["", "Not run (files missing): " + ", ".join(f"{x['name']} (`{x['build']}`)"
                                                              for x in results["missing"]) + "."]
    lines += ["", "## Per model", ""]
    figures = out.parent / "benchmarks"
    figures.mkdir(parents=True, exist_ok=True)
    for m in results["models"]:
        lines += model_section(m)
        if not plot(m, figures / f"{m['name']}.png"):
            lines[-2] = "(plots need matplotlib: `pip install '.[plot]'`)"
    for saved in sorted((ROOT / "bench").glob("decode_*.json")):
        lines += decode_only_section(saved)
    lossless = ROOT / "bench" / "lossless.json"
    if lossless.is_file():  # python -m bench.lossless --save
        from .lossless import section

        lines += section(json.loads(lossless.read_text()))
    out.write_text("\n".join(lines) + "\n")


def refresh() -> None:
    """Rewrite docs/benchmarks.md from the committed results files (after bench.decode)."""
    results, markdown = out_paths(None)
    if results.is_file():
        write_markdown(json.loads(results.read_text()), markdown, results)
        print(f"refreshed {shown(markdown)}")
