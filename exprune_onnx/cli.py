"""The ``exprune-onnx`` command line."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from ._version import __version__
from .cli_boundary import guarded, make_console, pipe_closed, show, written
from .cli_checks import evaluate, verify
from .cli_options import (
    HUMAN_OUTPUT,
    OnceCommand,
    a_number,
    calibration_only,
    common_options,
    dash_is_stdout,
    default_output,
    file_path,
    input_options,
    typed_with,
)
from .config import (
    DEFAULT_CONFIDENCE,
    OBJECTIVES,
    SPARSE_RELU,
    Options,
    load_config,
    parse_k,
    prunes,
)
from .report import tables as report
from .report.markup import escape
from .report.units import dense_flops_text
from .runtime import MAX_THREADS
from .tuning.metrics import METRICS

RAW_BYTES = 1 << 28  # an unchanged model file up to this size is copied byte for byte (optimize)

_EPILOG_OPTIMIZE = """\b
Examples:
  exprune-onnx optimize model.onnx                      # lossless, writes model.exprune.onnx
  exprune-onnx optimize model.onnx --check-data photos.npz
                                   # lossless: only the zero-input skipping that is faster stays
  exprune-onnx optimize model.onnx --calibration calib.npz --max-drop 0.01   # prune within 1 point
  exprune-onnx optimize model.onnx --config layers.json -o fast.onnx
  exprune-onnx optimize model.onnx --check-data inputs.npz --explain
"""

_EPILOG_INSPECT = """\b
Examples:
  exprune-onnx inspect model.onnx
  exprune-onnx inspect model.onnx --k 0.25 --include-first-layer
"""

def _budget(_ctx, _param, value):
    from .report.advice import budget_fraction_hint

    if not 0 <= a_number(value) <= 1:
        raise click.BadParameter(f"{value:g} is not in the range 0<=x<=1{budget_fraction_hint(value)}")
    return value


def _options(threshold, config, k, min_units, include_first_layer, unit_order, argmax_only=(),
             emit_stats=False) -> Options:
    if threshold is not None and config is not None:
        raise click.UsageError("give --threshold or --config, not both")
    options = Options(k=parse_k(k), min_units=min_units, include_first_layer=include_first_layer,
                      emit_stats=emit_stats)
    if threshold is not None:
        if math.isnan(threshold) or threshold == math.inf:
            raise click.UsageError(f"--threshold must be a finite number or -inf (prunes nothing), not {threshold}: "
                                   "+inf would prune every output")
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
    command_class = OnceCommand

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
    HUMAN_OUTPUT["stderr"] = False  # until a JSON output is '-' (a CliRunner runs many commands)
    if not debug:
        import onnxruntime as ort

        # Each onnxruntime failure becomes the command's one error line; its own log would
        # print it again, coloured, before that.
        ort.set_default_logger_severity(4)


@main.command(epilog=_EPILOG_OPTIMIZE)
@click.argument("model", type=click.Path(path_type=Path, readable=False))
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
@click.option("--check-data", type=click.Path(path_type=Path, readable=False),
              help="Inputs (.npz keyed by input name with optional 'labels', a directory of .npy, or "
                   "ONNX test-data .pb files); default: seeded random inputs.")
@click.option("--check-samples", type=click.IntRange(min=1), default=32, show_default=True, help="Random inputs to check on.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random check inputs and of the calibration split.")
@click.option("--calibration", type=click.Path(path_type=Path, readable=False),
              help="Choose per-layer thresholds on this data (same layouts as --check-data) under --max-drop.")
@click.option("--labels", type=click.Path(path_type=Path, readable=False),
              help="Labels for --calibration (.npy, or .npz with 'labels'); the metric becomes accuracy.")
@click.option("--max-drop", type=float, callback=_budget,
              default=0.001, show_default=True,
              help="Budget: the largest metric drop allowed, a fraction in [0, 1] (0.001 = 0.1 point of accuracy), "
                   "promised for data drawn as the calibration data were (independent samples, the same mix).")
@click.option("--metric", type=click.Choice(METRICS), default="auto", show_default=True,
              help="accuracy (needs labels), lost (right answers turned wrong, needs labels), agreement "
                   "(top-1 class, or a Sigmoid's yes/no answers, unchanged) or relerr (mean relative error).")
@click.option("--score-output", default="", metavar="OUTPUT",
              help="With --calibration: the one output the metric scores (default: the first the labels fit, "
                   "else the model's first), e.g. a detector's class scores rather than its boxes.")
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Share of the calibration data kept aside to check (with --confidence > 0: to certify) the "
                   "result on.")
@click.option("--confidence", type=float, default=DEFAULT_CONFIDENCE, show_default=True,
              help="With --calibration: the probability, over the draw of the data, that the written model's "
                   "risk (right answers lost, per sample) on data drawn like it is at most --max-drop "
                   "(Learn-then-Test on the held-out part); "
                   "0 keeps the point estimate on the calibration data.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, readable=False), callback=dash_is_stdout,
              help="Write the report as JSON: layers, latency decisions, the check, calibration ('-': stdout).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, readable=False),
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
    from .io.modelio import check_writable, read_model, save_model
    from .io.outputs import (
        discard,
        is_stream,
        json_text,
        left_behind,
        move_into_place,
        refuse_overwriting,
        stage,
        write_json,
    )
    from .progress import for_terminal
    from .report.advice import budget_warning, earlier_layers_note, left_behind_note, lossless_note, ours_note
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
    output = output or default_output(model)
    plot_path = plot_path if plot_path is None else plot_path_of(plot_path)
    streamed = report_path is not None and is_stream(report_path)  # /dev/stdout: written after the model
    refuse_overwriting([output, None if streamed else report_path, plot_path], [model],
                       (config, check_data, calibration, labels))
    if streamed:
        check_writable(report_path, replaced=False)  # a name under /proc is no stream to write
    warning = budget_warning(max_drop) if calibration is not None else None
    if warning:  # before the work it would waste
        make_console().print(f"[yellow]warning:[/] {escape(warning)}")
    original, external = read_model(model)
    if external:  # its weights go beside the output: a folder of that name would stop the write at the end
        check_writable(output.with_name(output.name + ".data"))
    with for_terminal() as log:
        done = run(original, options, settings, log)
    payload = {**done.report, "model": str(model), "output": str(output)}
    staged = []  # the report and the plot are written beside their paths first: all or nothing
    console = make_console()
    with console.capture() as shown:  # printed before the rename (commit)
        report.print_optimized(console, done, original, model.name, explain, options.argmax_only)
        earlier = earlier_layers_note(original) if calibration is None else None
        if not prunes(options) and calibration is None and rule in (None, "threshold"):
            console.print(lossless_note(original))
        elif earlier:
            console.print(f"note: {earlier}")
        ours = ours_note(original, str(model)) if not done.result.changed else None
        if ours:  # a model optimised before, given again: "nothing to rewrite" alone hid what it holds
            console.print(f"note: {escape(ours)}")
        split = report.split_note(original)
        if split:  # (the op counts alone showed FusedConv 6->0)
            console.print(f"note: {escape(split)}")
        console.print(f"wrote {escape(str(output))}", soft_wrap=True)
        stale = left_behind(output)
        if stale:
            console.print(f"note: {escape(left_behind_note(stale))}", soft_wrap=True)
        if plot_path is not None:  # (a suffix may have been added)
            console.print(f"wrote the plot to {escape(str(plot_path))}", soft_wrap=True)

    def commit() -> None:
        """Just before the model's rename: no more signals, and what goes to a stream (a
        report to /dev/stdout, the tables) goes first, so that its failure (a full device,
        a closed pipe) leaves no model behind, as its exit code says."""
        written()
        try:
            if streamed:
                write_json(report_path, payload)
            show(console, shown.get())
        except BrokenPipeError:  # the reader stopped reading: exit 141, as for the tables
            pipe_closed()
    try:
        if report_path is not None and not streamed:
            stage(staged, report_path, lambda tmp: tmp.write_text(json_text(payload)))
        if plot_path is not None:
            rows = report.layer_rows(done.result, done.calibrated.counts_holdout or None)
            stage(staged, plot_path, lambda tmp: calibration_plot(done.calibrated, rows, tmp))
        raw = None if done.result.changed or external else _own_bytes(model, done.model)
        save_model(done.model, output, external_data=external, before_commit=commit, raw=raw)
        move_into_place(staged)
    finally:
        discard(staged)


def _own_bytes(path: Path, model) -> bytes | None:
    """The bytes of the file ``model`` was read from, for a model written unchanged, where
    they hold it as read (not where reading fixed it: nodes out of order are sorted) and the
    file is small enough that parsing it again costs little; None otherwise."""
    try:
        if Path(path).stat().st_size > RAW_BYTES:
            return None
        raw = Path(path).read_bytes()
        return raw if type(model).FromString(raw) == model else None
    except Exception:  # noqa: BLE001 - changed or gone since it was read: the model is written as usual
        return None


@main.command(epilog=_EPILOG_INSPECT)
@click.argument("model", type=click.Path(path_type=Path, readable=False))
@common_options
@input_options(values=False)
@click.option("--explain", is_flag=True, help="Taken as optimize takes it: inspect always lists why the layers it "
                                              "leaves alone are left.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, readable=False), callback=dash_is_stdout,
              help="Also write the tables as JSON ('-': stdout).")
@guarded
def inspect(model, threshold, config, k, min_units, include_first_layer, unit_order, argmax_only, input_shapes,
            explain, json_path):
    """List MODEL's candidate layers (n, k, FLOPs) and why the others are left alone."""
    from .compiler.pipeline import inspect as run_inspect
    from .io.feeds import InputSpec, check_spec
    from .io.modelio import load_model
    from .io.open_dims import assumed_shapes, assumed_text
    from .io.outputs import refuse_overwriting, write_json
    from .measure.shape_probe import count_as_inspect
    from .report.advice import ours_note
    from .report.run_report import inspect_report

    refuse_overwriting([json_path], [model], (config,), replaced=False)
    console = make_console()
    options = _options(threshold, config, k, min_units, include_first_layer, unit_order, argmax_only)
    original = load_model(model)
    check_spec(original, InputSpec(input_shapes))
    options.input_shapes = dict(input_shapes)
    tried = assumed_shapes(original, InputSpec(dict(input_shapes)))
    assumed = count_as_inspect(original, options)  # FLOPs at the sizes optimize would take
    result = run_inspect(original, options)
    if result.rewritten:
        console.print(report.layers_table(result, None, f"Candidate layers ({escape(model.name)})"))
    else:  # not an empty table's frame
        console.print(f"Candidate layers ({escape(model.name)}): none")
    if result.zero_input_candidates:
        console.print(report.zero_input_candidates_table(result))
    if result.rejected or result.sparse_rejected:
        console.print(report.rejected_table(result))
    console.print(f"dense FLOPs: {dense_flops_text(result)}" + (
        f", with {escape(assumed_text(original, assumed))}: sizes taken for open dims as optimize takes them "
        "without data (--input-shape sets them)" if assumed else ""))
    notes = []
    if tried and not assumed and result.uncounted_nodes:  # (a trial's 7.49 MFLOP model read as 34 kFLOPs)
        notes.append(f"the model did not run at {assumed_text(original, tried)}, the sizes optimize takes for its "
                     "open dims without data, so only shape inference counted: --input-shape gives the sizes it takes")
    notes.append(ours_note(original, str(model)))
    notes.append(report.split_note(original))
    notes = [n for n in notes if n]
    for note in notes:
        console.print(f"note: {escape(note)}")
    fused = report.fused_warning(original)
    if fused:
        console.print(f"[yellow]warning:[/] {escape(fused)}")
    if json_path is not None:
        write_json(json_path, {"model": str(model), **inspect_report(result, assumed, [*notes, fused] if fused else notes)})


main.add_command(evaluate)
main.add_command(verify)

if __name__ == "__main__":
    main()
