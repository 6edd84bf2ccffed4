"""The compiler proper: canonicalise the graph, match the rules, rewrite (pipeline.py is the order)."""

import onnx_graphsurgeon as gs

# onnx-graphsurgeon prints its warnings on stdout, between the command's tables (that the
# 'colored' module is missing; that a ZipMap's map type has no NumPy type, on every
# skl2onnx classifier): only its errors are shown. Every module that reads a graph imports
# this package first.
gs.logger.G_LOGGER.severity = max(gs.logger.G_LOGGER.severity, gs.logger.G_LOGGER.ERROR)
