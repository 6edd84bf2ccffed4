"""The compiler proper: canonicalise the graph, match the rules, rewrite (pipeline.py is the order)."""

import functools

import onnx_graphsurgeon as gs


def quiet_graphsurgeon(fn):
    """``fn`` with onnx-graphsurgeon's warnings off for its duration (the caller's level is
    back after it). They print on stdout, between the command's tables: that the 'colored'
    module is missing; that a ZipMap's map type has no NumPy type, on every skl2onnx
    classifier. Only the entry points (api.py, the commands) wear it, so that importing
    this package leaves a program's own use of onnx-graphsurgeon as it was."""
    logger = gs.logger.G_LOGGER

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with logger.suppress(max(logger.severity, logger.ERROR)):
            return fn(*args, **kwargs)

    return wrapper
