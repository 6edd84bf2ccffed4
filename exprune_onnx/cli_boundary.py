"""The command line's boundary: every failure becomes one line and an exit code, and a
SIGTERM (a scheduler's stop, `timeout`) cleans up as Ctrl-C does, leaving no staged file."""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import threading
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from .cli_options import HUMAN_OUTPUT, default_output
from .compiler import quiet_graphsurgeon
from .errors import ExPruneError, OutputError, error_message
from .report.markup import visible
from .workflow import UsageProblem


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that staged outputs are removed on the way out
    (a BaseException, as KeyboardInterrupt is: no ``except Exception`` swallows it)."""


def _on_sigterm(_signum, _frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
    raise Terminated


def pipe_closed() -> None:
    """The reader stopped reading (`| head`): end as a tool that SIGPIPE stopped, with no
    second error when the interpreter flushes stdout on the way out."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(141)


# Set by launch.py: the command is this process's whole program, not a call within one
# (a test's CliRunner, a notebook), so that nothing after it needs the caller's handlers.
PROGRAM = {"alone": False}
_COMMITTED = threading.Event()  # written() was called in this command


def written() -> None:
    """The outputs are going into place (called just before the first rename): from here a
    Ctrl-C or SIGTERM would end in 130 or 143 with the files written, which those codes say
    are not, so the rest (renames, printing) runs to the end, and so does the program."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        _COMMITTED.set()


class _Console(Console):
    def on_broken_pipe(self) -> None:  # rich's own exits 1, our "internal error"
        pipe_closed()


def make_console(stderr: bool = False) -> Console:
    stderr = stderr or HUMAN_OUTPUT["stderr"]
    # Logs and CI are not terminals: do not wrap layer names at 80 columns there, nor break a
    # warning's sentence across lines (a grep for '^warning' finds it whole).
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return _Console(stderr=stderr, width=None if tty else 200, soft_wrap=not tty)


def show(console: Console, text: str) -> None:
    """Write what ``console`` captured to its stream, now: a device that is full says so
    here, as exit 5, and not after the output it would have announced is in place."""
    try:
        console.file.write(text)
        console.file.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        name = "standard error" if console.stderr else "standard output"
        raise OutputError(f"cannot write to {name} ({exc.strerror or exc}); the model was not written") from exc


def fail(console: Console, exc: BaseException, debug: bool, params: dict | None = None) -> None:
    if isinstance(exc, BrokenPipeError):
        pipe_closed()
    head, text, code = failure(exc, params)
    try:
        if debug:
            console.print_exception()
        # Messages quote shapes and names: print them as plain text, never as rich markup, and
        # on one line: soft_wrap stops rich from breaking long paths at the console width.
        console.print(Text.assemble((head, "bold red"), visible(text)), highlight=False, soft_wrap=True)
    except OSError:  # stderr closed or full: the exit code still says what happened
        pass
    sys.exit(code)


# A command's path parameters and the exit code a file of theirs that cannot be used gets;
# the outputs first: a file written beside one (its .data) is named after it.
_PATH_CODES = {"output": 5, "report_path": 5, "plot_path": 5, "json_path": 5, "model": 3, "original": 3,
               "optimized": 3, "config": 4, "check_data": 6, "calibration": 6, "labels": 6, "data_path": 6}
# Errors of a path itself (its name too long, a folder not searchable, a loop of links),
# not of the command: the file named cannot be used as given.
_PATH_ERRORS = (errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENOTDIR, errno.EROFS)


def _path_code(filename, params: dict) -> int | None:
    """The exit code of the parameter that names ``filename``, or the file written beside it
    (its .data; the output optimize names after the model); None where none does."""
    name = os.path.realpath(filename)
    given = {key: os.path.realpath(str(params[key])) for key in _PATH_CODES
             if params.get(key) is not None and str(params[key]) not in ("", "-")}
    model = params.get("model")
    if model is not None and "output" not in given:  # -o not given: <model>.exprune.onnx beside it,
        # first, as an -o is: its .data starts with the name of a model not called *.onnx too
        given = {"output": os.path.realpath(default_output(Path(model))), **given}
    for beside in (False, True):
        for key, path in given.items():
            if name == path or beside and name.startswith(path + "."):
                return _PATH_CODES[key]
    return None


def failure(exc: BaseException, params: dict | None = None) -> tuple[str, str, int]:
    """What the command says of a failure, and its exit code; ``params``: the command's
    parameters, which say what a path that cannot be used was for."""
    if isinstance(exc, ExPruneError):
        return "error:", f" {error_message(exc, limit=None)}", exc.exit_code
    if isinstance(exc, Terminated):
        return "terminated", ": stopped by SIGTERM; no file is left half-written", 143
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", ": stopped by Ctrl-C; no file is left half-written", 130
    if isinstance(exc, MemoryError):  # numpy's says how many bytes it wanted, nothing of what to do
        return "error:", (f" out of memory ({error_message(exc) or 'MemoryError'}): give the command fewer samples "
                          "at once (a smaller data file, fewer random samples, a smaller batch)"), 1
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EIO, errno.EBADF):
        # A file names itself; a write with no file name was to the command's stdout.
        where = f"'{exc.filename}'" if exc.filename else "to standard output"
        return "error:", f" cannot write {where} ({exc.strerror})", 5
    code = _path_code(exc.filename, params or {}) if isinstance(exc, OSError) and exc.errno in _PATH_ERRORS \
        and exc.filename else None
    if code is not None:  # (a path of no parameter's is the program's own: an internal error)
        return "error:", f" cannot use '{exc.filename}' ({exc.strerror})", code
    return "internal error:", f" {type(exc).__name__}: {error_message(exc)} (run with --debug for the traceback)", 1


def guarded(fn):
    """Turn every failure into a one-line message and an exit code; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = ctx.find_root().params.get("debug", False)
        for name in ("stdout", "stderr"):
            if getattr(sys, name) is None:  # closed when we started (`>&-`): written to nowhere
                setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - for the rest of the process
        err = make_console(stderr=True)
        # Only where SIGTERM would kill at once: not in a thread (handlers are set in the main
        # one only), not where it is ignored or a program embedding us handles it itself.
        main = threading.current_thread() is threading.main_thread()
        ours = main and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        # What a caller in the same process (tests, a notebook) gets back: ours and written()'s
        # handlers are the command's alone. (None: a handler not set from Python.)
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        if ours:
            signal.signal(signal.SIGTERM, _on_sigterm)
        _COMMITTED.clear()
        try:
            done = quiet_graphsurgeon(fn)(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, not in click's own handler (exit 1)
            return done
        except click.ClickException:
            raise
        except UsageProblem as exc:
            raise click.UsageError(str(exc)) from None
        except (Exception, KeyboardInterrupt, Terminated) as exc:  # noqa: BLE001 - the CLI boundary
            fail(err, exc, debug, kwargs)
        finally:
            # Once written, the program stays deaf to signals to its end: a Ctrl-C between
            # here and exit killed it with SIGINT (exit 130) over complete files.
            keep_deaf = _COMMITTED.is_set() and PROGRAM["alone"]
            for sig, handler in previous.items():
                if handler is not None and not keep_deaf:
                    signal.signal(sig, handler)

    return wrapper
