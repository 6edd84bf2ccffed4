"""onnxruntime's own fused ops that stay fused: never rewritten, but reported one row a layer.

A model saved after onnxruntime's graph optimisations (``optimized_model_filepath``)
holds ``FusedConv`` (a Conv with its activation inside), ``FusedGemm``, ``FusedMatMul``
and, at the highest level, convolutions in its blocked layout (``com.microsoft.nchwc``).
The compiler splits a FusedConv or FusedGemm back into its ops first (``compiler/unfuse.py``)
where its activation is a standard op; what is left here hides its Conv -> Relu or its
layout from the rules, and the model as exported is what to give. (The summary's warning
says so for the whole model; ``--explain`` and ``inspect`` name each layer.)
"""

from __future__ import annotations

from . import common
from .base import Context, NoMatch, reporting_rule

NAME = "runtime_fused"
FUSED = {("com.microsoft", "FusedConv"), ("com.microsoft", "FusedGemm"), ("com.microsoft", "FusedMatMul"),
         ("com.microsoft", "NhwcConv"), ("com.microsoft", "NhwcFusedConv"), ("com.microsoft.nchwc", "Conv")}
REASON = ("onnxruntime's own fused op (the model was saved after its graph optimisations): give the model as "
          "exported")


def match(node, ctx: Context) -> NoMatch | None:
    if (node.domain, node.op) in FUSED:
        return NoMatch(NAME, common.layer_name(node, ctx), node.op, REASON)
    return None


RULE = reporting_rule(NAME, match, "onnxruntime's fused ops are not rewritten")
