"""The `exprune-onnx` command's entry point. Importing the CLI loads numpy, onnx and
onnxruntime, which takes half a second to a few: a Ctrl-C in that time would otherwise end
in Python's traceback instead of the CLI's one line and exit code 130, and a SIGTERM in
silence."""

from __future__ import annotations

import contextlib
import signal
import sys


def _interrupted(exc: BaseException | None) -> bool:
    """Whether exc is a KeyboardInterrupt or was raised while handling one (onnxruntime
    turns one during its import of numpy into an ImportError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


# SIGINTs received while the libraries load: numpy's C import turns a KeyboardInterrupt
# into an ImportError with no trace of it ("PyCapsule_Import could not import module
# datetime"), and one raised inside a destructor is printed and dropped.
_CTRL_C: list[int] = []


def _on_ctrl_c(signum, _frame) -> None:
    _CTRL_C.append(signum)
    raise KeyboardInterrupt


def _stopped() -> None:
    sys.stderr.write("interrupted: stopped by Ctrl-C; no file is left half-written\n")
    sys.exit(130)


def _terminated(_signum, _frame) -> None:
    sys.stderr.write("terminated: stopped by SIGTERM; no file is left half-written\n")
    sys.exit(143)


def main() -> None:
    # SIGTERM too (a scheduler's stop, `timeout`), where nothing else handles it; the CLI's
    # own handler (cli_boundary.py) takes over once the libraries are loaded.
    ours = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, _terminated)
    counting = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if counting:
        signal.signal(signal.SIGINT, _on_ctrl_c)
    try:
        cli = _load()
    except BaseException as exc:
        if not (_CTRL_C or _interrupted(exc)):
            raise
        _stopped()
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if counting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if _CTRL_C:  # raised where it was dropped: the command was still asked to stop
        _stopped()
    from .cli_boundary import PROGRAM

    PROGRAM["alone"] = True
    for stream in (sys.stdout, sys.stderr):
        # A name the stream's encoding cannot spell (PYTHONIOENCODING=ascii, a C locale) is
        # printed escaped: an encoding error there ended the command as an internal error.
        with contextlib.suppress(AttributeError, ValueError, OSError):  # not a text file (closed, replaced)
            stream.reconfigure(errors="backslashreplace")
    cli()


def _load():
    """The CLI, after numpy and onnxruntime (the group's callback imports onnxruntime)."""
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401

    from .cli import main as cli

    return cli
