"""The compiler's passes, in order.

1. shape inference (so residual shapes, ranks and FLOPs are known);
2. canonicalisation: Constant nodes -> initializers, BatchNormalization folded (onnxruntime's
   FusedConv/FusedGemm are split before step 1: ``unfuse.py``);
3. matching: every rule of the rule set (``rules.RULES`` unless another is given) looks at
   every node of every graph (If/Loop/Scan bodies included), in the set's order; the first
   rule that answers owns the node; nothing is changed;
4. checking: each candidate is accepted or gets a reason;
5. rewriting: accepted candidates become partial compute + early-exit op;
6. sparse inputs (``passes/sparse_input.py``, off with ``Options.sparse_input = False``):
   a MatMul or Gemm reading an ``ExPruneDenseRelu``'s output, new or already in the
   model, becomes ``ExPruneSparseMatMul``, which skips the zero inputs; so does one
   reading a plain Relu's with ``Options.sparse_relu = "on"``; then a Conv reading the
   zeros of an early-exit op or (``sparse_relu``) of a Relu/Clip, through a MaxPool or
   not, becomes ``ExPruneSparseConv`` with the group after it fused (``passes/sparse_conv.py``);
7. export (``export.py``): dead nodes removed, topological order, IR version and metadata kept.

When nothing is rewritten the input model is returned as it was, so a second run
over an optimised model changes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import onnx
import onnx_graphsurgeon as gs

from ..config import SPARSE_RELU, Options, check_options, choose_k
from ..errors import ConfigError, ExPruneError
from ..io import bigmodel
from ..io.feeds import input_dims, keep_open_dims, with_input_shapes
from ..io.modelio import all_graphs as graph_protos
from ..measure.flops import batch_of, model_flops
from ..passes import sparse_conv, sparse_input
from ..rules import RULES, Rule, RuleSet
from ..rules.base import Candidate, Context, NoMatch, Rewritten
from . import functions, op_shapes
from .canonicalize import canonicalize, dense_initializers
from .export import export
from .graphutil import all_graphs, cleanup, model_names, opset_of
from .symbolic_shapes import symbolic_shapes
from .unfuse import unfuse_model


@dataclass
class Rejected:
    layer: str
    op: str
    rule: str
    reason: str
    skipped: bool = False  # rewritable, but its setting skips it (the config, calibration, the latency objective)


@dataclass
class Result:
    model: onnx.ModelProto
    rewritten: list[Rewritten] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    dense_flops: int = 0  # whole model, per sample
    uncounted_nodes: int = 0
    folded_constants: int = 0
    folded_batchnorms: int = 0
    sparse: list[sparse_input.SparseRewrite] = field(default_factory=list)  # consumers now reading sparsely
    sparse_rejected: list[Rejected] = field(default_factory=list)  # and why others do not
    # inspect only: convs, MatMuls and Gemms that could read a ReLU's zeros sparsely, as
    # (layer, source op, fused pattern)
    zero_input_candidates: list[tuple[str, str, list[str]]] = field(default_factory=list)
    input_shapes: dict = field(default_factory=dict)  # the --input-shape dims shapes were inferred with

    @property
    def changed(self) -> bool:
        return bool(self.rewritten or self.sparse)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    # The model's own value_info may be stale (graph editors leave it behind), so shapes
    # are inferred afresh for the compiler; an old entry is kept only for a tensor inference
    # cannot reach (after an op of an unknown domain). (The written model keeps the
    # original's entries: export.py.)
    fresh = onnx.ModelProto()
    fresh.CopyFrom(model)
    del fresh.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(fresh, strict_mode=False, data_prop=True)
    except Exception:
        # Shapes only refine the checks; without them fewer groups qualify.
        return model
    inferred = op_shapes.through_our_ops(inferred)  # a model this compiler wrote, given again
    g = inferred.graph
    known = {v.name for v in list(g.value_info) + list(g.input) + list(g.output)}
    inferred.graph.value_info.extend(v for v in model.graph.value_info if v.name not in known)
    if _has_anonymous_dims(inferred.graph) or _has_rankless_outputs(inferred.graph):
        return symbolic_shapes(inferred) or inferred
    return inferred


def _has_anonymous_dims(graph: onnx.GraphProto) -> bool:
    """onnx names a dim it cannot compute 'unk__N' (a Conv's output over a symbolic H, say)."""
    return any(d.dim_param.startswith("unk__") for v in graph.value_info for d in v.type.tensor_type.shape.dim)


# Ops whose output rank comes from a computed shape, which onnx does not follow through
# Shape -> Slice -> Concat and onnxruntime's symbolic inference does.
_SHAPED_BY_A_TENSOR = {"Reshape", "Expand", "ConstantOfShape", "Tile", "Range"}


def _has_rankless_outputs(graph: onnx.GraphProto) -> bool:
    """An op of ``_SHAPED_BY_A_TENSOR`` whose output onnx gave no rank (a Reshape after
    torch's flatten(2) at opsets 11-13), in a graph of standard ops only (onnxruntime's
    inference knows no other domain: it would give up, after importing its tools)."""
    if any(n.domain not in ("", "ai.onnx") for n in graph.node):
        return False
    shaped = {v.name for v in [*graph.value_info, *graph.output] if v.type.tensor_type.HasField("shape")}
    return any(n.op_type in _SHAPED_BY_A_TENSOR and n.output and n.output[0] not in shaped for n in graph.node)


def analysis_graph(model: onnx.ModelProto, shapes: dict) -> tuple[gs.Graph, dict | None]:
    """The graph to match on, with the shapes inference finds at ``shapes`` (--input-shape,
    the data's), and the proof shapes (rules/base.Context.proof_shapes): the tensors'
    dims under the model's own input dims (If/Loop/Scan bodies too), or None when no
    shapes are given."""
    model = unfuse_model(functions.inline(model))
    graph = bigmodel.import_graph(dense_initializers(model), lambda m: infer_shapes(with_input_shapes(m, shapes)))
    if not shapes:
        return graph, None
    proof = {}
    for g in graph_protos(infer_shapes(bigmodel.skeleton(model) or model).graph):
        proof.update((vi.name, input_dims(vi)) for vi in [*g.input, *g.value_info, *g.output]
                     if vi.type.tensor_type.HasField("shape"))
    return graph, proof


def _contexts(graph: gs.Graph, options: Options, proof: dict | None = None) -> list[Context]:
    names = model_names(graph)
    dups = _duplicate_names(graph)
    outputs = Counter(f"{n.op}:{n.outputs[0].name}" for g in all_graphs(graph) for n in g.nodes if n.outputs)
    dup_outputs = {name for name, c in outputs.items() if c > 1}
    scopes = _scopes(graph, dups)
    return [
        Context(graph, g, opset_of(g, graph), options, names, dups, proof, dup_outputs, scopes.get(id(g), ""))
        for g in all_graphs(graph)
    ]


def _duplicate_names(graph: gs.Graph) -> set[str]:
    counts = Counter(n.name for g in all_graphs(graph) for n in g.nodes if n.name)
    return {name for name, c in counts.items() if c > 1}


def scoped_nodes(graph: gs.Graph) -> list[tuple[str, gs.Node]]:
    """Every node of ``graph`` and of its bodies, after its body's path ("If_0.then_branch/"),
    as layer names carry it."""
    scopes = _scopes(graph, _duplicate_names(graph))
    return [(scopes.get(id(g), ""), node) for g in all_graphs(graph) for node in g.nodes]


def _scopes(graph: gs.Graph, duplicate_names: set[str], prefix: str = "") -> dict[int, str]:
    """Each body's path from the main graph: the owning node's name (its op and output when
    the name is empty or not unique, as layer names go) and attribute, per level
    ("If_0.then_branch/")."""
    out: dict[int, str] = {}
    for node in graph.nodes:
        owner = node.name if node.name and node.name not in duplicate_names else \
            f"{node.op}:{node.outputs[0].name if node.outputs else ''}"
        for attr, value in node.attrs.items():
            for body in value if isinstance(value, list) else [value]:
                if isinstance(body, gs.Graph):
                    path = f"{prefix}{owner}.{attr}/"
                    out[id(body)] = path
                    out.update(_scopes(body, duplicate_names, path))
    return out


def find_candidates(graph: gs.Graph, options: Options, rules: RuleSet = RULES, proof: dict | None = None):
    """Match and check every rule on every node; returns (accepted, rejected). No mutation.
    ``proof``: analysis_graph's proof shapes."""
    accepted: list[tuple[Rule, Candidate, Context]] = []
    rejected: list[Rejected] = []
    claimed: dict[int, str] = {}
    batch = batch_of(graph)  # for the candidates' FLOPs per sample (measure/flops.py)
    for ctx in _contexts(graph, options, proof):
        for node in list(ctx.graph.nodes):
            for rule in rules:
                found = rule.match(node, ctx)
                if found is None:
                    continue
                if isinstance(found, NoMatch):
                    rejected.append(Rejected(found.layer, found.op, found.rule, found.reason))
                    break
                reason = rule.check(found, ctx)
                owner = next((claimed[id(n)] for n in found.chain if id(n) in claimed), None)
                if reason is None and owner is not None:
                    reason = f"shares its activation with layer '{owner}', which takes it (one early exit per activation)"
                if reason is not None:
                    skipped = ctx.options.setting(found.layer).skip and _rewritable(rule, found, ctx)
                    rejected.append(Rejected(found.layer, node.op, rule.name, reason, skipped))
                else:
                    for n in found.chain:
                        claimed[id(n)] = found.layer
                    found.batch = batch
                    if ctx.graph is graph and found.reduction.outputs:  # probed in the main graph only
                        found.seen_flops = (options.runtime_flops or {}).get(found.reduction.outputs[0].name)
                    accepted.append((rule, found, ctx))
                break
    return accepted, rejected


def _rewritable(rule: Rule, found: Candidate, ctx: Context) -> bool:
    """Whether a layer its setting skips could be rewritten at all (a candidate, as inspect
    counts them): the rule's check under the same options with no layer skipped, and no
    per-output thresholds of a skipped entry, which nothing reads. Nor only the layers
    chosen: a certified rung leaves out of its choice the layers the search's timing dropped."""
    layers = {name: replace(s, skip=False, thresholds=None) for name, s in ctx.options.layers.items()}
    try:
        return rule.check(found, replace(ctx, options=replace(ctx.options, layers=layers, chosen=None))) is None
    except ExPruneError:
        return False


def _analyse(model: onnx.ModelProto, options: Options, rules: RuleSet):
    check_options(options)
    if options.sparse_relu not in SPARSE_RELU:
        raise ConfigError(f"sparse_relu must be one of {', '.join(SPARSE_RELU)}, got {options.sparse_relu!r}")
    outputs = {o.name for o in model.graph.output}
    missing = [name for name in options.argmax_only if name not in outputs]
    if missing:
        raise ConfigError(f"--argmax-only names {', '.join(missing)}, which the model does not output "
                          f"(its outputs: {', '.join(sorted(outputs))})")
    graph, proof = analysis_graph(model, options.input_shapes)
    folded_c, folded_bn = canonicalize(graph)
    accepted, rejected = find_candidates(graph, options, rules, proof)
    rejected += _unmatched_heads(graph, options, accepted)
    rejected += [Rejected(name, "function", "-", reason) for name, reason in functions.plan(model)[1].items()]
    known = {c.layer for _r, c, _x in accepted} | {r.layer for r in rejected}
    unknown_layers = sorted(set(options.layers) - known)
    if unknown_layers:  # for inspect too: a misspelt name would otherwise say nothing
        raise ConfigError(
            f"the config names layers the model does not have: {', '.join(unknown_layers)} "
            "(`exprune-onnx inspect` lists the names)"
        )
    return graph, proof, accepted, rejected, folded_c, folded_bn


def _unmatched_heads(graph: gs.Graph, options: Options, accepted) -> list[Rejected]:
    """An --argmax-only output that no Gemm/MatMul head makes, with why: otherwise it would
    stay float scores with nothing said (a Conv detection head's [N, anchors, classes]).
    One a head makes but the rule refused has that rule's own row."""
    headed = {c.output.name for _r, c, _x in accepted}
    out = []
    for name in options.argmax_only:
        producer = next((t.inputs[0] for t in graph.outputs if t.name == name and t.inputs), None)
        # Back through what the head rule takes after a Gemm/MatMul: a bias, a softmax.
        head = producer
        while head is not None and head.op in ("Add", "Softmax", "LogSoftmax") and head.inputs[0].inputs:
            head = head.inputs[0].inputs[0]
        if name in headed or (head is not None and head.op in ("Gemm", "MatMul")):
            continue
        made_by = f"{producer.op} '{producer.name}'" if producer is not None else "no node"
        out.append(Rejected(name, producer.op if producer is not None else "-", "argmax_head",
                            f"--argmax-only names it, but it is made by {made_by}, not by a Gemm or MatMul "
                            "(+ bias) head: it stays the scores"))
    return out


def inspect(model: onnx.ModelProto, options: Options, rules: RuleSet = RULES) -> Result:
    """What ``optimize`` would do, without doing it."""
    graph, proof, accepted, rejected, folded_c, folded_bn = _analyse(model, options, rules)
    total, unknown = model_flops(graph, options.runtime_flops)
    rewritten = []
    for _rule, c, _ctx in accepted:
        setting = options.setting(c.layer)
        rewritten.append(Rewritten(c, choose_k(setting.k, c.n), setting.threshold, None, None, setting.rule,
                                   setting.z_crit, setting.thresholds))
    result = Result(model, rewritten, rejected, total, unknown, folded_c, folded_bn)
    result.input_shapes = dict(options.input_shapes)
    if options.sparse_input and options.sparse_relu != "off":
        def match(node, ctx):  # MatMul/Gemm and Conv consumers alike (each matcher passes the other's)
            return sparse_input.match(node, ctx) or sparse_conv.match(node, ctx)

        found, skipped = sparse_input.match_all(_contexts(graph, replace(options, sparse_relu="on"), proof), match)
        result.zero_input_candidates = [(c.layer, c.source, [n.op for n in c.nodes]) for c, _ in found]
        result.sparse_rejected = [Rejected(s.layer, s.op, s.rule, s.reason) for s in skipped]
    return result


def optimize(model: onnx.ModelProto, options: Options, rules: RuleSet = RULES) -> Result:
    """Rewrite every accepted layer (``rules``, tried in order), then run the sparse-input passes."""
    result = _rewrite(model, options, rules)
    result.input_shapes = dict(options.input_shapes)
    return result


def _rewrite(model: onnx.ModelProto, options: Options, rules: RuleSet) -> Result:
    graph, proof, accepted, rejected, folded_c, folded_bn = _analyse(model, options, rules)
    total, unknown = model_flops(graph, options.runtime_flops)
    if not accepted and not options.sparse_input:
        return Result(model, [], rejected, total, unknown, folded_c, folded_bn)
    rewritten = [rule.rewrite(c, ctx) for rule, c, ctx in accepted]
    sparse, skipped = sparse_input.apply(_contexts(graph, options, proof)) if options.sparse_input else ([], [])
    if options.sparse_input:  # after the MatMuls: they look for the Relu the convs may fuse
        convs, conv_skipped = sparse_conv.apply(_contexts(graph, options, proof))
        sparse, skipped = sparse + convs, skipped + conv_skipped
    sparse_rejected = [Rejected(s.layer, s.op, s.rule, s.reason) for s in skipped]
    if not rewritten and not sparse:
        return Result(model, [], rejected, total, unknown, folded_c, folded_bn, [], sparse_rejected)
    graph.outputs.extend(r.stats for r in rewritten if r.stats is not None)
    cleanup(graph).toposort(recurse_subgraphs=True)
    out = export(graph, model)
    keep_open_dims(out, model, fixed=bool(options.input_shapes))
    if options.input_shapes:  # the written model runs at any size the original ran at
        op_shapes.open_value_info(out, model)
    return Result(out, rewritten, rejected, total, unknown, folded_c, folded_bn, sparse, sparse_rejected)
