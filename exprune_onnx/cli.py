"""The ``exprune-onnx`` command line."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.text import Text

from ._version import __version__
from .cli_boundary import guarded, make_console, pipe_closed, written
from .cli_options import a_number, calibration_only, common_options, file_path, input_options, typed_with
from .config import (
    DEFAULT_CONFIDENCE,
    OBJECTIVES,
    SPARSE_RELU,
    Options,
    load_config,
    parse_k,
)
from .report import tables as report
from .report.units import dense_flops_text, shape_hint
from .runtime import MAX_THREADS
from .tuning.metrics import METRICS

_EPILOG_OPTIMIZE = """\b
Examples:
  exprune-onnx optimize model.onnx                      # lossless, writes model.exprune.onnx
  exprune-onnx optimize model.onnx --check-data photos.npz
                                   # lossless: only the zero-input skipping that is faster stays
  exprune-onnx optimize model.onnx --calibration calib.npz --max-drop 0.01   # prune within 1 point
  exprune-onnx optimize model.onnx --config layers.json -o fast.onnx
  exprune-onnx optimize model.onnx --check-data inputs.npz --explain
"""

_EPILOG_EVALUATE = """\b
Examples:
  exprune-onnx evaluate model.onnx model.exprune.onnx --data test.npz
  exprune-onnx evaluate model.onnx model.exprune.onnx --data test.npz --batch 32 --threads 2
"""

_EPILOG_INSPECT = """\b
Examples:
  exprune-onnx inspect model.onnx
  exprune-onnx inspect model.onnx --k 0.25 --include-first-layer
"""

_EPILOG_VERIFY = """\b
Checks, one row each (exit code 8 when any fails):
  structure      every ai.exprune op is known and wired as the compiler emits it,
                 in place of a supported layer; the rest of the graph is unchanged
  weights        head + tail + unit order give the original's (BatchNorm-folded) weights
  exact at -inf  with nothing pruned, outputs equal the original's (within --tolerance)
  agreement      as shipped, top-1 (a Sigmoid's: yes/no) agreement >= --min-agreement
                 on classifier outputs

\b
Examples:
  exprune-onnx verify model.onnx model.exprune.onnx                 # 32 seeded random inputs
  exprune-onnx verify model.onnx model.exprune.onnx --data test.npz --min-agreement 0.98
"""


def _no_nan(_ctx, _param, value):
    return a_number(value)  # click's FloatRange lets nan through: every comparison with it is false


def _budget(_ctx, _param, value):
    from .report.advice import budget_fraction_hint

    if not 0 <= a_number(value) <= 1:
        raise click.BadParameter(f"{value:g} is not in the range 0<=x<=1{budget_fraction_hint(value)}")
    return value


def _dash_is_stdout(_ctx, _param, value: Path | None) -> Path | None:
    """'-' for a JSON output is standard output, as tools read it (it wrote a file named '-')."""
    return Path("/dev/stdout") if value is not None and str(value) == "-" else value


def _options(threshold, config, k, min_units, include_first_layer, unit_order, argmax_only=(),
             emit_stats=False) -> Options:
    if threshold is not None and config is not None:
        raise click.UsageError("give --threshold or --config, not both")
    options = Options(k=parse_k(k), min_units=min_units, include_first_layer=include_first_layer,
                      emit_stats=emit_stats)
    if threshold is not None:
        if math.isnan(threshold):
            raise click.UsageError("--threshold must be a number or -inf, not nan")
        options.threshold = threshold
    if unit_order is not None:
        options.unit_order = unit_order
    if config is not None:
        ctx = click.get_current_context()
        typed = [name for name in ("k", "unit_order")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        load_config(config, options, typed)
    options.argmax_only = tuple(argmax_only)
    return options


class _Group(click.Group):
    def main(self, *args, **kwargs):
        try:
            return super().main(*args, **kwargs)
        except SystemExit as exc:
            # click ends a closed pipe in its own output (--help, --version) with 1, after
            # wrapping stdout so that the exit's flush stays quiet.
            if exc.code == 1 and isinstance(sys.stdout, click.utils.PacifyFlushWrapper):
                pipe_closed()
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exprune-onnx")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors, and onnxruntime's own log.")
def main(debug: bool) -> None:
    """Make exported ONNX models cheaper per input: ReLU layers finish only the outputs
    that a partial sum predicts will be non-zero.

    Exit codes: 0 ok, 1 internal error, 2 usage, 3 unreadable model, 4 bad config,
    5 cannot write output, 6 bad check data, 7 onnxruntime failed on the result,
    8 verification failed; 130 interrupted, 143 terminated, 141 output pipe closed.
    """
    if not debug:
        import onnxruntime as ort

        # Each onnxruntime failure becomes the command's one error line; its own log would
        # print it again, coloured, before that.
        ort.set_default_logger_severity(4)


@main.command(epilog=_EPILOG_OPTIMIZE)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(), callback=lambda _c, _p, v: file_path(v),
              help="Where to write (default <model>.exprune.onnx).")
@common_options
@click.option("--explain", is_flag=True, help="List every layer that was not rewritten, with the reason.")
@click.option("--emit-stats", is_flag=True,
              help="Expose each early-exit op's [pruned, total] counters as extra graph outputs.")
@click.option("--sparse-input/--no-sparse-input", default=True, show_default=True,
              help="A MatMul/Gemm or Conv reading an early-exit layer's output skips its zero inputs "
                   "(ExPruneSparseMatMul, ExPruneSparseConv).")
@click.option("--sparse-relu", type=click.Choice(SPARSE_RELU), default="auto", show_default=True,
              help="The same for a MatMul/Gemm or a Conv reading a plain ReLU's (or Clip(0, c)'s, or a MaxPool "
                   "of one) output (exact; fast only where many inputs are zero): auto times each one under "
                   "--objective latency and keeps it if faster, and leaves them alone under flops; on rewrites "
                   "them all (under latency, still timed); off never. With --threshold=-inf this is the lossless "
                   "mode (docs/sparse_conv.md).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run original and optimised model in onnxruntime and compare outputs.")
@click.option("--check-data", type=click.Path(path_type=Path),
              help="Inputs (.npz keyed by input name with optional 'labels', a directory of .npy, or "
                   "ONNX test-data .pb files); default: seeded random inputs.")
@click.option("--check-samples", type=click.IntRange(min=1), default=32, show_default=True, help="Random inputs to check on.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random check inputs and of the calibration split.")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Choose per-layer thresholds on this data (same layouts as --check-data) under --max-drop.")
@click.option("--labels", type=click.Path(path_type=Path),
              help="Labels for --calibration (.npy, or .npz with 'labels'); the metric becomes accuracy.")
@click.option("--max-drop", type=float, callback=_budget,
              default=0.001, show_default=True,
              help="Budget: the largest metric drop allowed, a fraction in [0, 1] (0.001 = 0.1 point of accuracy).")
@click.option("--metric", type=click.Choice(METRICS), default="auto", show_default=True,
              help="accuracy (needs labels), lost (right answers turned wrong, needs labels), agreement "
                   "(top-1 class, or a Sigmoid's yes/no answers, unchanged) or relerr (mean relative error).")
@click.option("--score-output", default="", metavar="OUTPUT",
              help="With --calibration: the output the metric scores (default: the first the labels fit, "
                   "else the model's first), e.g. a detector's class scores rather than its boxes.")
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Share of the calibration data kept aside to check (with --confidence > 0: to certify) the "
                   "result on.")
@click.option("--confidence", type=float, default=DEFAULT_CONFIDENCE, show_default=True,
              help="With --calibration: the probability, over the draw of the data, that the written model's "
                   "expected drop on data like it is at most --max-drop (Learn-then-Test on the held-out part); "
                   "0 keeps the point estimate on the calibration data.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), callback=_dash_is_stdout,
              help="Write the report as JSON: layers, latency decisions, the check, calibration ('-': stdout).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path),
              help="Draw the search's trade-off and per-layer prune rates to a PNG (needs matplotlib).")
@click.option("--rule", type=click.Choice(["threshold", "statstest", "certified", "auto"]), default="threshold",
              show_default=True,
              help="Decision rule: threshold (T), statstest (alpha), certified (lossless, needs inputs >= 0), "
                   "or auto (per layer, with --calibration).")
@click.option("--alpha", type=click.FloatRange(0, 0.5, max_open=True), default=0.01, show_default=True,
              help="StatsTest's level without --calibration: prune when the test rejects 'mean term >= 0'.")
@click.option("--granularity", type=click.Choice(["output", "layer"]), default="output", show_default=True,
              help="Threshold rule under --calibration: one threshold per output channel, or one per layer "
                   "(the paper's choice).")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="latency", show_default=True,
              help="latency: keep a rewrite only if the whole model runs faster with it in onnxruntime, timed "
                   "on the calibration (or --check-data) inputs; flops: keep every rewrite the rule chose, "
                   "counting FLOPs (the paper's objective).")
@click.option("--latency-batch", type=click.IntRange(min=1),
              help="Batch size the latency objective times at: the one you deploy with. Default: the batch "
                   "the model's inputs fix, else 1.")
@click.option("--latency-threads", type=click.IntRange(1, MAX_THREADS), default=1, show_default=True,
              help="onnxruntime intra-op threads the latency objective times with.")
@input_options
@guarded
def optimize(model, output, threshold, config, k, min_units, include_first_layer, unit_order, argmax_only, explain,
             emit_stats, check, check_data, check_samples, seed, calibration, labels, max_drop, metric, score_output,
             holdout,
             confidence, report_path, plot_path, rule, alpha, granularity, objective, latency_batch,
             latency_threads, sparse_input, sparse_relu, input_shapes, input_values):
    """Rewrite MODEL's ReLU layers into partial compute plus an ExPrune early-exit op."""
    from .io.modelio import read_model, save_model
    from .io.outputs import discard, is_stream, json_text, move_into_place, refuse_overwriting, stage, write_json
    from .progress import for_terminal
    from .report.advice import budget_warning, earlier_layers_note, lossless_note
    from .report.plot import calibration_plot
    from .report.plot import plot_path as plot_path_of
    from .workflow import CALIBRATION_ONLY, Settings, run

    if calibration is not None and threshold is not None:
        raise click.UsageError("--calibration chooses the thresholds: drop --threshold")
    if calibration is None and plot_path is not None:
        raise click.UsageError("--plot goes with --calibration")
    if calibration is None and score_output:
        raise click.UsageError("--score-output goes with --calibration")
    if calibration is None and check_data is not None and labels is not None:  # the check takes them from the .npz
        raise click.UsageError("--labels goes with --calibration; the check reads labels from --check-data itself "
                               "(a 'labels' array in the .npz, or labels.npy in a directory)")
    calibration_only(calibration, (*CALIBRATION_ONLY, "confidence"))
    if objective == "flops":
        typed_with("--objective flops", ("latency_batch", "latency_threads"), "it times nothing (they set how the "
                   "latency objective times)")
    if calibration is not None:
        typed_with("--calibration", ("alpha",), "calibration chooses each layer's level")
    elif rule != "statstest" and config is None:  # (a config may name statstest for its layers)
        typed_with(f"--rule {rule}", ("alpha",), "it is the StatsTest rule's level (--rule statstest)")
    # With no --threshold, --config or --calibration the threshold stays unset: the lossless
    # mode (exact rewrites only). Threshold 0, the paper's, took the bundled CNN from 91.8% to
    # 51.8% where the objective kept its rewrites.
    options = _options(threshold, config, k, min_units, include_first_layer, unit_order, argmax_only, emit_stats)
    options.alpha, options.sparse_input, options.sparse_relu = alpha, sparse_input, sparse_relu
    options.input_shapes = input_shapes
    settings = Settings(check=check, check_data=check_data, check_samples=check_samples, seed=seed,
                        calibration=calibration, labels=labels, max_drop=max_drop, metric=metric,
                        score_output=score_output, holdout=holdout,
                        rule=rule, granularity=granularity, objective=objective, latency_batch=latency_batch,
                        latency_threads=latency_threads, input_values=input_values)
    options.confidence = confidence
    output = output or model.with_name(model.name.removesuffix(".onnx") + ".exprune.onnx")
    plot_path = plot_path if plot_path is None else plot_path_of(plot_path)
    streamed = report_path is not None and is_stream(report_path)  # /dev/stdout: written after the model
    refuse_overwriting([output, None if streamed else report_path, plot_path], [model],
                       (config, check_data, calibration, labels))
    warning = budget_warning(max_drop) if calibration is not None else None
    if warning:  # before the work it would waste
        make_console().print(f"[yellow]warning:[/] {escape(warning)}")
    original, external = read_model(model)
    with for_terminal() as log:
        done = run(original, options, settings, log)
    payload = {**done.report, "model": str(model), "output": str(output)}
    staged = []  # the report and the plot are written beside their paths first: all or nothing
    try:
        if report_path is not None and not streamed:
            stage(staged, report_path, lambda tmp: tmp.write_text(json_text(payload)))
        if plot_path is not None:
            rows = report.layer_rows(done.result, done.calibrated.counts_holdout or None)
            stage(staged, plot_path, lambda tmp: calibration_plot(done.calibrated, rows, tmp))
        save_model(done.model, output, external_data=external)
        move_into_place(staged)
        if not streamed:
            written()
    finally:
        discard(staged)
    if streamed:
        from .errors import OutputError, error_message

        try:
            write_json(report_path, payload)
        except OutputError as exc:  # a stream takes the report after the model: say the model is there
            raise OutputError(f"{error_message(exc)}; the model was written: {output}") from exc
        written()
    report.print_optimized(make_console(), done, original, model.name, explain, options.argmax_only)
    earlier = earlier_layers_note(original) if calibration is None else None
    if options.threshold is None and calibration is None and rule in (None, "threshold"):
        make_console().print(lossless_note(original))
    elif earlier:
        make_console().print(f"note: {earlier}")
    make_console().print(f"wrote {output}")


def _refuse_unpaired(ref, opt) -> None:
    """Two models that take different inputs are no original and its rewrite (which keeps
    the original's inputs): the same data cannot feed both."""
    from .io.data import model_inputs

    def inputs(model):
        return {v.name: v.type.tensor_type.elem_type for v in model_inputs(model)}

    def names(model):
        return ", ".join(f"'{name}'" for name in inputs(model)) or "none"

    if inputs(ref) != inputs(opt):
        raise click.UsageError(f"the two models take different inputs: ORIGINAL {names(ref)}, OPTIMIZED {names(opt)} "
                               "(or of other types); evaluate compares a model with its optimised version, which "
                               "keeps the original's inputs")


@main.command(epilog=_EPILOG_EVALUATE)
@click.argument("original", type=click.Path(path_type=Path))
@click.argument("optimized", type=click.Path(path_type=Path))
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True,
              help="Inputs (same layouts as --check-data); 'labels' in the .npz or --labels add accuracy.")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels (.npy, or .npz with 'labels').")
@click.option("--batch", type=click.IntRange(min=1),
              help="Batch size of the latency runs. Default: the batch the model's inputs fix, else 1.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=1, show_default=True,
              help="Intra-op threads of both sessions in the latency runs.")
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True, help="Timed runs of each model.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), callback=_dash_is_stdout,
              help="Also write the results as JSON ('-': stdout).")
@input_options
@guarded
def evaluate(original, optimized, data_path, labels, batch, threads, runs, json_path, input_shapes, input_values):
    """Compare OPTIMIZED with ORIGINAL: outputs, metric, FLOPs the ops skipped, latency side by side."""
    import platform

    import onnxruntime as ort

    from .io.batch_memory import check_batch_memory
    from .io.bigmodel import model_bytes
    from .io.data import load_dataset
    from .io.feeds import InputSpec, check_batch
    from .io.modelio import all_nodes, load_model
    from .io.outputs import refuse_overwriting, write_json
    from .measure.compare import compare
    from .measure.counters import executed_flops
    from .measure.memory import peak_rss_mb
    from .measure.timing import measure
    from .ops import SPARSE_CONV
    from .progress import for_terminal
    from .runtime import cpu_has_tiles
    from .tuning.pairs import FEEDS, timing_feeds

    refuse_overwriting([json_path], [original, optimized], (data_path, labels), replaced=False)  # a plain write
    console = make_console()
    ref, opt = load_model(original), load_model(optimized)
    _refuse_unpaired(ref, opt)
    spec = InputSpec(input_shapes, input_values)
    data = load_dataset(data_path, ref, labels, spec)
    batch = check_batch(ref, batch, "--batch", spec)
    check_batch_memory([("original", ref), ("optimised", opt)], data, batch, "--batch", feeds=FEEDS)
    with for_terminal() as log:
        checked = compare(ref, opt, data, log=log)
        feeds = timing_feeds(data, batch)  # the latency objective's seeded batches, taken in turn
        timing = measure(ref, opt, feeds, threads=threads, runs=runs, log=log)
    known = data.input_shapes(ref, input_shapes)  # the data's dims, and --input-shape's
    dense, saved, why = executed_flops(ref, opt, known, checked.pruned, checked.rows, data.first(1))
    if dense is None:  # the ops' savings would be set against a partial count
        why += f" ({shape_hint(ref, known)})"
    memory = {"size_mb": (model_bytes(ref) / 1e6, model_bytes(opt) / 1e6),
              "peak_rss_mib": (peak_rss_mb(ref, feeds[0]), peak_rss_mb(opt, feeds[0]))}
    tiles = cpu_has_tiles() and any(n.op_type == SPARSE_CONV for n in all_nodes(opt.graph))
    console.print(report.evaluation_table(checked, dense, saved, timing,
                                          f"{platform.machine()}, onnxruntime {ort.__version__}", memory, why, tiles))
    rough = timing.spread_note()
    if rough:
        console.print(f"[yellow]warning:[/] {rough}")
    if json_path is not None:
        write_json(json_path, report.jsonable({
            "original": str(original), "optimized": str(optimized), "samples": checked.samples,
            "accuracy": checked.accuracy, "outputs": [d.as_json() for d in checked.outputs],
            "dense_flops_per_sample": dense, "flops_saved_per_sample": saved,
            "latency": vars(timing) | {"ratio": timing.ratio}, "memory": memory, "machine": platform.machine(),
            "onnxruntime": ort.__version__,
        }))


@main.command(epilog=_EPILOG_INSPECT)
@click.argument("model", type=click.Path(path_type=Path))
@common_options
@input_options(values=False)
@click.option("--explain", is_flag=True, help="Taken as optimize takes it: inspect always lists why the layers it "
                                              "leaves alone are left.")
@guarded
def inspect(model, threshold, config, k, min_units, include_first_layer, unit_order, argmax_only, input_shapes,
            explain):
    """List MODEL's candidate layers (n, k, FLOPs) and why the others are left alone."""
    from .compiler.pipeline import inspect as run_inspect
    from .io.feeds import InputSpec, check_spec
    from .io.modelio import load_model
    from .io.open_dims import assumed_text
    from .measure.shape_probe import count_as_inspect

    console = make_console()
    options = _options(threshold, config, k, min_units, include_first_layer, unit_order, argmax_only)
    original = load_model(model)
    check_spec(original, InputSpec(input_shapes))
    options.input_shapes = dict(input_shapes)
    assumed = count_as_inspect(original, options)  # FLOPs at the sizes optimize would take
    result = run_inspect(original, options)
    console.print(report.layers_table(result, None, f"Candidate layers ({model.name})"))
    if result.conv_candidates:
        console.print(report.conv_candidates_table(result))
    if result.rejected or result.sparse_rejected:
        console.print(report.rejected_table(result))
    console.print(f"dense FLOPs: {dense_flops_text(result)}" + (
        f", with {escape(assumed_text(original, assumed))}: sizes taken for open dims as optimize takes them "
        "without data (--input-shape sets them)" if assumed else ""))
    report.print_fused_warning(console, original)


@main.command(epilog=_EPILOG_VERIFY)
@click.argument("original", type=click.Path(path_type=Path))
@click.argument("optimized", type=click.Path(path_type=Path))
@click.option("--data", "data_path", type=click.Path(path_type=Path),
              help="Inputs (same layouts as --check-data); default: seeded random inputs.")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels (.npy, or .npz with 'labels') for accuracy.")
@click.option("--samples", type=click.IntRange(min=1), default=32, show_default=True,
              help="Random inputs to run on when no --data is given.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.99, show_default=True, callback=_no_nan,
              help="Least top-1 (a Sigmoid's: yes/no) agreement with the original, for classifier outputs; a "
                   "calibrated model is held to its budget instead unless this is given.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-4, show_default=True, callback=_no_nan,
              help="Largest output difference at threshold -inf, relative to the output's largest magnitude.")
@input_options
@guarded
def verify(original, optimized, data_path, labels, samples, seed, min_agreement, tolerance, input_shapes,
           input_values):
    """Check that OPTIMIZED is ORIGINAL rewritten by this compiler: structure, weights, exactness, agreement."""
    from rich.table import Table

    from .errors import OriginalRunFailed, VerificationFailed, error_message
    from .io.data import load_dataset, random_dataset
    from .io.feeds import InputSpec
    from .io.modelio import load_model
    from .io.open_dims import assumed_shapes, assumed_text
    from .ops import DOMAIN
    from .progress import for_terminal
    from .runtime import uses_library
    from .verify import verify as run_verify
    from .verify.agreement import read_budget

    if labels is not None and data_path is None:
        raise click.UsageError("--labels goes with --data")
    console = make_console()
    ref, opt = load_model(original), load_model(optimized)
    if uses_library(ref) and not uses_library(opt):
        raise click.UsageError(f"{original} has {DOMAIN} ops and {optimized} has none: the original goes first "
                               "(verify ORIGINAL OPTIMIZED)")
    spec = InputSpec(input_shapes, input_values)
    assumed = assumed_shapes(ref, spec) if data_path is None else {}  # as optimize takes them without data
    spec.shapes.update(assumed)
    input_shapes = {**(input_shapes or {}), **assumed}
    taken = escape(assumed_text(ref, assumed))
    if assumed:
        console.print(f"[yellow]note:[/] no --data and no --input-shape for open dims: took {taken} (a size most "
                      "such models take): --input-shape or --data checks at the size you run at")
    # A calibrated model's budget stands in for the agreement bar unless one is asked for.
    typed = click.get_current_context().get_parameter_source("min_agreement") == click.core.ParameterSource.COMMANDLINE
    try:
        data = (load_dataset(data_path, ref, labels, spec, seed) if data_path is not None
                else random_dataset(ref, samples, seed, spec))
        with for_terminal() as log:
            rows = run_verify(ref, opt, data, min_agreement=min_agreement, tolerance=tolerance,
                              input_shapes=input_shapes, log=log, budget=None if typed else read_budget(opt))
    except OriginalRunFailed as exc:
        if not assumed:
            raise
        raise OriginalRunFailed(f"{error_message(exc)} (open dims were taken as {assumed_text(ref, assumed)}: "
                                "--input-shape or --data gives the sizes it takes)") from exc
    table = Table(title=f"Verification of {optimized.name} against {original.name}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for row in rows:
        result = Text("FAIL", "bold red") if not row.ok else \
            Text("not judged", "yellow") if row.not_judged else Text("pass", "green")
        table.add_row(row.check, result, Text(row.detail))
    console.print(table)
    failed = [row for row in rows if not row.ok]
    if failed:
        raise VerificationFailed(f"verification failed ({len(failed)} of {len(rows)} checks): "
                                 f"{failed[0].check}: {failed[0].detail}")
    console.print(_verified_text(rows, original, optimized))


def _verified_text(rows, original: Path, optimized: Path) -> str:
    """The verdict of a verification that failed no check."""
    open_rows = [row for row in rows if row.not_judged]
    passed = len(rows) - len(open_rows)
    text = (f"verified: all {len(rows)} checks" if not open_rows else f"verified: {passed} of {len(rows)} checks") + \
        f" of {optimized} against {original} passed"
    text += "".join(f"; {row.check} not judged: {row.not_judged}" for row in open_rows)
    unjudged = [name for row in rows for name in row.unjudged]
    if unjudged:
        text += (f"; not judged: output(s) {', '.join(repr(n) for n in unjudged)}, values no check has a bar for "
                 "(only a budget calibrated on them with --metric relerr gives one): the agreement row shows how "
                 "much they moved")
    return text


if __name__ == "__main__":
    main()
