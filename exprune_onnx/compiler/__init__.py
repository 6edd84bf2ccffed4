"""The compiler proper: canonicalise the graph, match the rules, rewrite (pipeline.py is the order)."""

import functools
import threading

import onnx_graphsurgeon as gs


def quiet_graphsurgeon(fn):
    """``fn`` with onnx-graphsurgeon's warnings off for its duration (the caller's level is
    back after it). They print on stdout, between the command's tables: that the 'colored'
    module is missing; that a ZipMap's map type has no NumPy type, on every skl2onnx
    classifier. Only the entry points (api.py, the commands) wear it, so that importing
    this package leaves a program's own use of onnx-graphsurgeon as it was."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _quieten()
        try:
            return fn(*args, **kwargs)
        finally:
            _restore()

    return wrapper


# Calls that overlap (threads, or an entry point calling another) share one quiet spell: the
# first in keeps the caller's level and the last out gives it back. Each keeping its own
# left the level at ERROR after two calls from two threads overlapped (a trial's).
_lock = threading.Lock()
_spell = {"depth": 0, "level": None}


def _quieten() -> None:
    logger = gs.logger.G_LOGGER
    with _lock:
        if _spell["depth"] == 0:
            _spell["level"] = logger.severity
            logger.severity = max(logger.severity, logger.ERROR)
        _spell["depth"] += 1


def _restore() -> None:
    with _lock:
        _spell["depth"] -= 1
        if _spell["depth"] == 0:
            gs.logger.G_LOGGER.severity = _spell["level"]
