"""The ``exprune-onnx`` commands that check an optimised model against its original:
``evaluate`` (outputs, metric, FLOPs, latency side by side) and ``verify`` (that it is the
original rewritten by this compiler). cli.py adds them to the command group."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from .cli_boundary import guarded, make_console
from .cli_options import OnceCommand, dash_is_stdout, input_options, no_nan
from .report import tables as report
from .report.markup import escape, visible
from .runtime import MAX_THREADS
from .tuning.metrics import EXACT_TOLERANCE

_EPILOG_EVALUATE = """\b
Examples:
  exprune-onnx evaluate model.onnx model.exprune.onnx --data test.npz
  exprune-onnx evaluate model.onnx model.exprune.onnx --data test.npz --batch 32 --threads 2
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


def _refuse_swapped(original: Path, optimized: Path, ref, opt, command: str) -> None:
    """A pair given the wrong way round is a usage error (verify/run.py says when)."""
    from .verify.run import swapped

    why = swapped(str(original), str(optimized), ref, opt, f"{command} ORIGINAL OPTIMIZED")
    if why:
        raise click.UsageError(why)


def _refuse_unpaired(ref, opt) -> None:
    """Two models that take different inputs are a usage error (measure/evaluation.py)."""
    from .measure.evaluation import unpaired

    why = unpaired(ref, opt)
    if why:
        raise click.UsageError(why)


@click.command(cls=OnceCommand, epilog=_EPILOG_EVALUATE)
@click.argument("original", type=click.Path(path_type=Path, readable=False))
@click.argument("optimized", type=click.Path(path_type=Path, readable=False))
@click.option("--data", "data_path", type=click.Path(path_type=Path, readable=False), required=True,
              help="Inputs (same layouts as --check-data); 'labels' in the .npz or --labels add accuracy.")
@click.option("--labels", type=click.Path(path_type=Path, readable=False), help="Labels (.npy, or .npz with 'labels').")
@click.option("--batch", type=click.IntRange(min=1),
              help="Batch size of the latency runs. Default: the batch the model's inputs fix, else 1.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=1, show_default=True,
              help="Intra-op threads of both sessions in the latency runs.")
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Timed runs of each model (more until 1 s of timing).")
@click.option("--json", "json_path", type=click.Path(path_type=Path, readable=False), callback=dash_is_stdout,
              help="Also write the results as JSON ('-': stdout).")
@input_options
@guarded
def evaluate(original, optimized, data_path, labels, batch, threads, runs, json_path, input_shapes, input_values):
    """Compare OPTIMIZED with ORIGINAL: outputs, metric, FLOPs the ops skipped, latency side by side."""
    import platform

    import onnxruntime as ort

    from .io.data import load_dataset
    from .io.feeds import InputSpec, check_batch
    from .io.modelio import load_model
    from .io.outputs import refuse_overwriting, write_json
    from .measure.evaluation import evaluate_pair
    from .progress import for_terminal

    refuse_overwriting([json_path], [original, optimized], (data_path, labels), replaced=False)  # a plain write
    console = make_console()
    ref, opt = load_model(original), load_model(optimized)
    _refuse_swapped(original, optimized, ref, opt, "evaluate")
    _refuse_unpaired(ref, opt)
    spec = InputSpec(input_shapes, input_values)
    data = load_dataset(data_path, ref, labels, spec)
    batch = check_batch(ref, batch, "--batch", spec, data.batch)
    with for_terminal() as log:
        done = evaluate_pair(ref, opt, data, batch, threads=threads, runs=runs, input_shapes=input_shapes, log=log)
    console.print(report.evaluation_table(done.checked, done.dense_flops, done.flops_saved, done.latency,
                                          f"{platform.machine()}, onnxruntime {ort.__version__}", done.memory,
                                          done.flops_unknown, done.tiles, done.original_saved))
    rough = done.latency.spread_note()
    if rough:
        console.print(f"[yellow]warning:[/] {rough}")
    if done.same_graph:
        console.print(f"note: {done.same_graph_note()}")
    if json_path is not None:
        write_json(json_path, report.jsonable(done.as_json(str(original), str(optimized))))


@click.command(cls=OnceCommand, epilog=_EPILOG_VERIFY)
@click.argument("original", type=click.Path(path_type=Path, readable=False))
@click.argument("optimized", type=click.Path(path_type=Path, readable=False))
@click.option("--data", "data_path", type=click.Path(path_type=Path, readable=False),
              help="Inputs (same layouts as --check-data); default: seeded random inputs.")
@click.option("--labels", type=click.Path(path_type=Path, readable=False), help="Labels (.npy, or .npz with 'labels') for accuracy.")
@click.option("--samples", type=click.IntRange(min=1), default=32, show_default=True,
              help="Random inputs to run on when no --data is given.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.99, show_default=True, callback=no_nan,
              help="Least top-1 (a Sigmoid's: yes/no) agreement with the original, for classifier outputs; a "
                   "calibrated model is held to its budget instead unless this is given.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=EXACT_TOLERANCE, show_default=True, callback=no_nan,
              help="Largest output difference at threshold -inf, relative to the output's largest magnitude.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, readable=False), callback=dash_is_stdout,
              help="Also write the checks as JSON ('-': stdout), failed ones included.")
@input_options
@guarded
def verify(original, optimized, data_path, labels, samples, seed, min_agreement, tolerance, json_path, input_shapes,
           input_values):
    """Check that OPTIMIZED is ORIGINAL rewritten by this compiler: structure, weights, exactness, agreement."""
    from rich.table import Table

    from .errors import VerificationFailed
    from .io.data import load_dataset
    from .io.feeds import InputSpec
    from .io.modelio import load_model
    from .io.open_dims import assumed_note
    from .io.open_values import values_note
    from .io.outputs import refuse_overwriting, write_json
    from .progress import for_terminal
    from .verify.run import verify_pair

    if labels is not None and data_path is None:
        raise click.UsageError("--labels goes with --data")
    refuse_overwriting([json_path], [original, optimized], (data_path, labels), replaced=False)
    console = make_console()
    ref, opt = load_model(original), load_model(optimized)
    _refuse_swapped(original, optimized, ref, opt, "verify")
    spec = InputSpec(input_shapes, input_values)
    # A calibrated model's budget stands in for the agreement bar unless one is asked for.
    typed = click.get_current_context().get_parameter_source("min_agreement") == click.core.ParameterSource.COMMANDLINE
    data = load_dataset(data_path, ref, labels, spec, seed) if data_path is not None else None
    with for_terminal() as log:
        done = verify_pair(ref, opt, data, spec, samples=samples, seed=seed, min_agreement=min_agreement,
                           bar_asked=typed, tolerance=tolerance, log=log)
    if done.assumed:  # as optimize takes them without data
        console.print(f"[yellow]note:[/] {escape(assumed_note(ref, done.assumed, bool(input_shapes), '--data'))}: "
                      "--input-shape or --data checks at the size you run at")
    if done.values:
        console.print(f"[yellow]note:[/] {escape(values_note(done.values, '--data'))}")
    rows = done.rows
    table = Table(title=f"Verification of {escape(optimized.name)} against {escape(original.name)}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    look = {"fail": ("FAIL", "bold red"), "not judged": ("not judged", "yellow"), "pass": ("pass", "green")}
    for row in rows:
        table.add_row(row.check, Text(*look[row.verdict]), Text(visible(row.detail)))
    console.print(table)
    if json_path is not None:  # before a failure's exit: a pipeline reads which check failed
        write_json(json_path, report.jsonable(done.as_json(str(original), str(optimized))))
    failed = done.failed
    if failed:
        raise VerificationFailed(f"verification failed ({len(failed)} of {len(rows)} checks): "
                                 f"{failed[0].check}: {failed[0].detail}")
    console.print(escape(_verified_text(rows, original, optimized)))  # (paths and output names as written)


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
