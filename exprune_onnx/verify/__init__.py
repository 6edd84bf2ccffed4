"""Checking that an optimised model is what the compiler claims it is.

``verify(original, optimized, data)`` answers four questions, one row each:

1. structure: every ``ai.exprune`` node is a known op of the known version with only the
   attributes it reads (``ops.ATTRIBUTES``), and each
   is fed the way ``rules/common.py emit()`` wires it (a Conv/MatMul partial product
   over a Slice of the very tensor the op reads as ``x``, possibly after a Gather that
   permutes units, or over a Gather of the op's ``x`` that picks the head units when
   the op names its tail units in ``tail_units``) in place of a layer that the
   compiler's own matching finds in the original; everything else in the graph is
   unchanged;
2. weights: head, tail and the unit permutation put back together give the original
   layer's weight after canonicalisation (BatchNorm folding and so on), and the bias
   is the original's;
3. exact at -inf: with every op's threshold at ``-inf`` (nothing pruned) the model
   computes what the original computes, up to float summation order;
4. agreement: the model as shipped agrees with the original on the data.

An ``ExPruneSparseMatMul`` (the layer after an early-exit op, reading only its non-zero
inputs) must stand for a MatMul [+ Add] or Gemm of the original and carry its weight and
bias (``verify/sparse_matmul.py``).

The original is analysed by the compiler itself (canonicalisation and rule matching,
with options that accept every supported layer), so the verifier and the compiler
cannot disagree about what a layer's canonical weight is.
"""

from __future__ import annotations

from collections import Counter

import onnx
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.canonicalize import constants_to_initializers
from ..compiler.pipeline import scoped_nodes
from ..errors import error_message
from ..io.data import Dataset
from ..io.modelio import all_nodes
from ..progress import quiet
from ..tuning.metrics import EXACT_TOLERANCE
from . import sparse_matmul as verify_sparse
from .agreement import agreement_row
from .base import SPARSE_OPS, Layer, Row, summary
from .exactness import exact_copy, exactness_row
from .sparse_conv import trace_conv
from .structure import analyse_original, attribute_problems, header_problems, rest_problems, traced
from .weights import weights_row


def verify(original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, *,
           min_agreement: float = 0.99, tolerance: float = EXACT_TOLERANCE, input_shapes: dict | None = None,
           log=quiet, budget: dict | None = None, bar_asked: bool = False) -> list[Row]:
    """The four rows; verification passes when every row is ok. ``input_shapes`` as the
    compiler had them (--input-shape); ``log`` is a progress hook (progress.py);
    ``budget`` (agreement.read_budget): checked in place of ``min_agreement`` where the data
    can, unless ``bar_asked`` (--min-agreement typed)."""
    structure, weights = static_rows(original, optimized, input_shapes)
    # A fixed batch is honoured by data.batches whatever the size asked for.
    return [structure, weights, exactness_row(original, optimized, data, tolerance, log=log),
            agreement_row(original, optimized, data, min_agreement, log=log, budget=budget, bar_asked=bar_asked)]


def static_rows(original: onnx.ModelProto, optimized: onnx.ModelProto,
                input_shapes: dict | None = None) -> tuple[Row, Row]:
    try:
        canonical, candidates = analyse_original(original, input_shapes)
    except Exception as exc:  # noqa: BLE001 - a model the compiler cannot analyse is a failed check
        reason = f"the compiler cannot analyse the original ({error_message(exc)})"
        return Row("structure", False, reason), Row("weights", False, "not checked: " + reason)
    graph = gs.import_onnx(optimized)
    # As the original was read: an IR 3 model's body weights are Constant nodes (the
    # compiler writes them back so, export._list_initializers_as_inputs).
    constants_to_initializers(graph)
    # Ops the original holds already (a model this compiler wrote, given again) are the
    # original's nodes, compared as the rest is.
    prior = {(n.name, n.op_type) for n in all_nodes(original.graph) if n.domain == ops.DOMAIN}
    found = [(scope, node) for scope, node in scoped_nodes(graph)
             if node.domain == ops.DOMAIN and (node.name, node.op) not in prior]
    ours = [node for _, node in found]
    layers = [traced(node, candidates, scope) for scope, node in found if node.op not in SPARSE_OPS]
    by_name = verify_sparse.tensors_by_name(canonical)
    sparse = [verify_sparse.trace(node, by_name, int(canonical.opset)) if node.op == ops.SPARSE_MATMUL
              else trace_conv(node, canonical)
              for node in ours if node.op in SPARSE_OPS]
    problems = header_problems(original, optimized, layers + sparse) + attribute_problems(ours)
    seen: dict[str, Layer] = {}
    for layer in layers:
        problems += [f"layer '{layer.name}': {p}" for p in layer.problems]
        if layer.candidate is not None:
            other = seen.setdefault(layer.key, layer)
            if other is not layer:
                problems.append(f"layer '{layer.name}' is rewritten twice")
    problems += [f"layer '{s.name}': {p}" for s in sparse for p in s.problems]
    problems += rest_problems(original, canonical, candidates, graph, layers, sparse)
    if problems:
        structure = Row("structure", False, summary(problems))
    elif not ours:
        # An original this compiler wrote holds ops of its own, which are the original's nodes here.
        none = "no early-exit op beyond the original's" if prior else "no early-exit ops"
        structure = Row("structure", True, f"{none}: the graph is the original's, unchanged")
    else:
        counts = Counter(node.op for node in ours)
        ops_text = ", ".join(f"{c} {op}" for op, c in sorted(counts.items()))
        extra = len(optimized.graph.output) - len(original.graph.output)  # the ops' counters (--emit-stats)
        outputs = f"outputs as in the original, plus {extra} counter output(s)" if extra > 0 else \
            "outputs as in the original"
        structure = Row("structure", True, f"{ops_text}, each replacing a supported layer; the rest of the "
                                           f"graph, its inputs and {outputs}")
    return structure, weights_row(layers, sparse)


__all__ = ["Row", "agreement_row", "exact_copy", "exactness_row", "static_rows", "verify"]
