"""Progress of long work (the latency objective, calibration, evaluate, verify).

The long-running functions take a ``log`` hook called as ``log(text)`` or
``log(text, done, total)``; ``text`` names the step, ``done``/``total`` count its
units (layers timed, samples run). :func:`quiet` ignores it all. :class:`Bar` shows a
rich progress bar with counts and an ETA on a terminal; off a terminal (logs, CI,
tests) the command line uses :func:`quiet`, so nothing is printed.
"""

from __future__ import annotations

import sys

from .report.markup import escape


def quiet(text: str, done: int | None = None, total: int | None = None) -> None:
    """The hook that shows nothing."""


class HookRaised(BaseException):
    """A caller's hook raised ``error``: carried past the work's ``except Exception``, which
    would blame onnxruntime for it (a trial's hook's ZeroDivisionError read "onnxruntime
    cannot run the original model"), to the API's boundary (``hook_errors``), which raises
    ``error`` as it was."""

    def __init__(self, error: Exception):
        super().__init__(error)
        self.error = error


def hook(log):
    """``log`` as a hook the work can call either way: a ``logging.Logger`` logs each step at
    INFO, with its counts; a function of the text alone (``lambda text: ...``) gets the text
    alone. Anything else is taken as a hook as it is. What the hook raises is its own
    (HookRaised)."""
    import inspect
    import logging

    if isinstance(log, logging.Logger):
        def to_logger(text: str, done: int | None = None, total: int | None = None) -> None:
            log.info("%s", text if total is None else f"{text} ({done or 0}/{total})")
        return _owned(to_logger)
    try:
        params = inspect.signature(log).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin such as print): as it is
        return _owned(log)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        return _owned(lambda text, done=None, total=None: log(text))
    return _owned(log)


def _owned(log):
    def call(*args, **kwargs):
        try:
            return log(*args, **kwargs)
        except Exception as exc:
            raise HookRaised(exc) from exc
    return call


def hook_errors(fn):
    """Raise what a caller's hook raised inside ``fn`` as it was (HookRaised)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HookRaised as raised:
            error = raised.error
        # Raised out here, where HookRaised is no longer being handled: it would become the
        # error's __context__, and `from None` would erase a __cause__ the hook gave it.
        raise error
    return wrapper


class Bar:
    """A rich progress bar on stderr: one line per step, replaced when the step's name
    changes. Use as a context manager; it is the ``log`` hook itself."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self._task = None
        self._step = None

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def __call__(self, text: str, done: int | None = None, total: int | None = None) -> None:
        # The step is the text before its counts ("timing layer 3/48: conv2" -> "timing layer").
        step = text.split(":")[0].rstrip("0123456789/ ")
        # Layer names come from the model: as the tables do, show them as written, not as markup
        # (a name with '[/b]' stopped the run) nor as terminal controls.
        shown = escape(text)
        if self._task is None or step != self._step or (total is not None and done == 0):
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(shown, total=total)
            self._step = step
        self._progress.update(self._task, description=shown, completed=done or 0, total=total)


def for_terminal():
    """A :class:`Bar` when stderr is a terminal, else a context that gives :func:`quiet`."""
    import contextlib

    if sys.stderr.isatty():
        return Bar()
    return contextlib.nullcontext(quiet)
