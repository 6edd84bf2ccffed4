"""Options that several ``exprune-onnx`` commands share, and checks of options (cli.py)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import click

from .config import DEFAULT_MIN_UNITS, UNIT_ORDERS
from .errors import OutputError
from .report.markup import visible


class OnceCommand(click.Command):
    """A command whose single-valued options may be given once: click keeps the last of
    several silently, so `--threshold=-inf --threshold 0` pruned at 0 and a second
    --score-output replaced the first, which the user took for both being scored."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            try:
                _opts, _rest, order = self.make_parser(ctx).parse_args(args=list(args))
            except click.UsageError:
                order = []  # the parse below says what is wrong
            repeated = _repeated(order)
            if repeated:
                raise click.UsageError(f"{repeated} given more than once: give it once", ctx)
        return super().parse_args(ctx, args)


def _repeated(order: list) -> str:
    """The first single-valued option in ``order`` (the parser's, one entry a use) used
    twice, by all its names; "" when none is, or when a --help asks for help anyway. A
    plain flag given twice means what it means once."""
    if any(p.is_eager for p in order):
        return ""
    seen = set()
    for p in order:
        single = isinstance(p, click.Option) and not p.multiple and not p.count
        if single and (not p.is_flag or p.secondary_opts):
            if p.name in seen:
                return "/".join(p.opts + p.secondary_opts)
            seen.add(p.name)
    return ""


def common_options(fn):
    """The compiler's options that optimize and inspect share."""
    fn = click.option("--include-first-layer", is_flag=True,
                      help="Also rewrite layers that read a graph input (raw features; off by default).")(fn)
    fn = click.option("--min-units", type=click.IntRange(min=2), default=DEFAULT_MIN_UNITS, show_default=True,
                      help="Skip layers with fewer input units (channels or features).")(fn)
    fn = click.option("--argmax-only", "argmax_only", multiple=True, metavar="OUTPUT",
                      help="Declare that only the arg-max of graph output OUTPUT (logits or probabilities) "
                           "matters: its head is rewritten and OUTPUT becomes an int64 class index without "
                           "the class axis. Repeatable.")(fn)
    fn = click.option("--unit-order", type=click.Choice(UNIT_ORDERS),
                      help="Units in the partial sum: the k with the largest weight norms ('weight', the default) "
                           "or the first k as stored ('stored', the paper's choice).")(fn)
    fn = click.option("--k", "k", default="auto", show_default=True, callback=_k_value,
                      help="Units in the partial product: a count (16), a fraction of n (0.25) or "
                           "'auto' = min(32, n/4), rounded down to a multiple of 8 where that is 8 or more.")(fn)
    fn = click.option("--config", type=click.Path(path_type=Path, readable=False),
                      help="Per-layer JSON (thresholds, k, skip) keyed by the names `inspect` prints.")(fn)
    fn = click.option("--threshold", type=float,
                      help="Prune an output when bias + residual + (n/k) * partial < T; -inf prunes nothing. "
                           "Without it (or --config, --calibration) nothing is pruned: the lossless mode.")(fn)
    return fn


def _k_value(ctx, param, value):
    """--k as given, once it reads as one (a usage error otherwise, as any malformed value)."""
    from .config import parse_k
    from .errors import ConfigError

    try:
        parse_k(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


def parsed(parse):
    """A click callback: each repeated NAME:... value through ``parse`` into one dict."""

    def callback(ctx, param, values):
        out = {}
        for text in values:
            try:
                name, value = parse(text)
            except ValueError as exc:
                raise click.BadParameter(str(exc), ctx, param) from None
            if name in out and out[name] != value:  # the last one won, silently
                raise click.BadParameter(f"{name!r} is given twice, differently", ctx, param)
            out[name] = value
        return out

    return callback


def input_options(fn=None, *, values: bool = True):
    """--input-shape (and --input-value): what random inputs, shape inference and FLOPs use (feeds.py)."""
    from .io.feeds import parse_input_shape, parse_input_value

    def add(fn):
        if values:
            fn = click.option("--input-value", "input_values", multiple=True, metavar="NAME:VALUE",
                              callback=parsed(parse_input_value),
                              help="Values of random inputs for NAME: a number (e.g. sample_rate:16000) or LOW..HIGH "
                                   "(e.g. ids:0..999). Needed for integer inputs that are not token ids. "
                                   "Repeatable.")(fn)
        return click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,...",
                            callback=parsed(parse_input_shape),
                            help="Sizes for NAME's symbolic dims (e.g. x:1,3,224,224; a name keeps a dim open), "
                                 "for random inputs, shape inference and FLOPs. Given data must agree. "
                                 "Repeatable.")(fn)

    return add(fn) if fn is not None else add


def _typed(names: tuple[str, ...]) -> list[str]:
    ctx = click.get_current_context()
    return [n for n in names if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]


def calibration_only(calibration, names: tuple[str, ...]) -> None:
    """Refuse a calibration option typed without --calibration: it would do nothing."""
    typed = _typed(names)
    if calibration is None and typed:
        raise click.UsageError(f"--{typed[0].replace('_', '-')} goes with --calibration")


def typed_with(given: str, names: tuple[str, ...], why: str) -> None:
    """Refuse options typed beside ``given``, which leaves them nothing to do."""
    typed = _typed(names)
    if typed:
        raise click.UsageError(f"--{typed[0].replace('_', '-')} does nothing with {given}: {why}")


def a_number(value: float) -> float:
    if value != value:  # NaN passes click's range check
        raise click.BadParameter("nan is not a number")
    return value


def default_output(model: Path) -> Path:
    """Where optimize writes when -o is not given: <model>.exprune.onnx beside the model."""
    return model.with_name(model.name.removesuffix(".onnx") + ".exprune.onnx")


class _OutputPathError(click.ClickException):
    """An output path refused while click parses the command line, where our own errors would
    escape as a traceback: said as the command's other output errors are, with their code."""

    exit_code = OutputError.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {visible(self.format_message())}", file=file or sys.stderr)


def file_path(value: str | None) -> Path | None:
    """The output model's path; one ending in a separator names a directory (pathlib drops
    the separator, and a file named after the directory would be written). That is refused
    as an existing directory is, with the output's exit code: both say where the file goes."""
    if value is None:
        return None
    if value == "":
        raise click.BadParameter("is empty: give the file's path")
    if value == "-":  # it wrote a file named '-'
        raise click.BadParameter("a model is written to a file, not to standard output: give a file path "
                                 "('-' is standard output for --json and --report)")
    if value.endswith(("/", "\\")):
        raise _OutputPathError(f"{value}: names a directory: give the file's path in it")
    return Path(value)


def no_nan(_ctx, _param, value):
    """A callback: click's FloatRange lets nan through, and every comparison with it is false."""
    return a_number(value)


# Where the tables and notes go: standard error while a JSON output is standard output, so
# that `--json - | jq` reads JSON alone (the tables came first, and jq refused them).
HUMAN_OUTPUT = {"stderr": False}


def dash_is_stdout(_ctx, _param, value: Path | None) -> Path | None:
    """A callback: '-' for a JSON output is standard output, as tools read it (it wrote a
    file named '-'); the tables then go to standard error, as they do for any other name of
    standard output (/dev/stdout, /proc/self/fd/1, the file it is redirected to)."""
    if value is None:
        return value
    if str(value) == "-" or _is_stdout(value):
        HUMAN_OUTPUT["stderr"] = True
    return Path("/dev/stdout") if str(value) == "-" else value


def _is_stdout(path: Path) -> bool:
    try:
        out = os.fstat(sys.stdout.fileno())
        # /dev/null for both (cron, CI) is no reader of JSON that the tables would spoil
        if stat.S_ISCHR(out.st_mode) and not sys.stdout.isatty():
            return False
        return os.path.samestat(os.stat(path), out)
    except (OSError, ValueError, AttributeError):  # no such file; no descriptor (a test's captured stream)
        return False
