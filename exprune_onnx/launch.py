"""The `exprune-onnx` command's entry point. Importing the CLI loads numpy, onnx and
onnxruntime, which takes half a second to a few: a Ctrl-C in that time would otherwise end
in Python's traceback instead of the CLI's one line and exit code 130, and a SIGTERM in
silence."""

from __future__ import annotations

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


def _terminated(_signum, _frame) -> None:
    sys.stderr.write("terminated: stopped by SIGTERM; no file is left half-written\n")
    sys.exit(143)


def main() -> None:
    # SIGTERM too (a scheduler's stop, `timeout`), where nothing else handles it; the CLI's
    # own handler (cli_boundary.py) takes over once the libraries are loaded.
    ours = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, _terminated)
    try:
        # numpy and onnxruntime too: the group's callback imports onnxruntime.
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401

        from .cli import main as cli
    except BaseException as exc:
        if not _interrupted(exc):
            raise
        sys.stderr.write("interrupted: stopped by Ctrl-C; no file is left half-written\n")
        sys.exit(130)
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cli()
