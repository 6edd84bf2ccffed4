"""Checking that an optimised model is what the compiler claims it is.

``verify(original, optimized, data)`` answers four questions, one row each:

1. structure: every ``ai.exprune`` node is a known op of the known version, and each
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
bias (``verify_sparse.py``).

The original is analysed by the compiler itself (canonicalisation and rule matching,
with options that accept every supported layer), so the verifier and the compiler
cannot disagree about what a layer's canonical weight is.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import ops, verify_sparse
from .canonicalize import constants_to_initializers, fold_batchnorm
from .config import DECISION_RULES, Options
from .data import Dataset, model_inputs
from .errors import error_message
from .feeds import with_input_shapes
from .graphutil import all_graphs, const_value, describe
from .pipeline import find_candidates, infer_shapes
from .progress import quiet
from .rules.base import Candidate
from .verify_sparse_conv import trace_conv

# Weights are copied, not recomputed, by the compiler: anything beyond float noise is a change.
WEIGHT_RTOL = 1e-5
_GROUP = "__exprune_group__"  # placeholder op for a rewritten layer in the original
_ARGMAX_HEAD = getattr(ops, "ARGMAX_HEAD", None)  # its output is an int64 class index
_SPARSE_OPS = (ops.SPARSE_MATMUL, ops.SPARSE_CONV)  # traced by verify_sparse(_conv).py


@dataclass
class Row:
    check: str
    ok: bool
    detail: str


@dataclass
class Layer:
    """One early-exit op of the optimised model, traced back to its group and its original layer."""

    op: gs.Node
    candidate: Candidate | None = None
    nodes: list[gs.Node] = field(default_factory=list)  # every node of the rewritten group
    problems: list[str] = field(default_factory=list)
    k: int | None = None
    perm: np.ndarray | None = None
    gather: gs.Node | None = None
    w_head: gs.Tensor | None = None
    w_tail: gs.Tensor | None = None
    bias: gs.Tensor | None = None
    w_head_sq: gs.Tensor | None = None

    @property
    def name(self) -> str:
        if self.candidate is not None:
            return self.candidate.layer
        return self.op.name or (self.op.outputs[0].name if self.op.outputs else self.op.op)


def verify(original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, *,
           min_agreement: float = 0.99, tolerance: float = 1e-4, input_shapes: dict | None = None,
           log=quiet) -> list[Row]:
    """The four rows; verification passes when every row is ok. ``input_shapes`` as the
    compiler had them (--input-shape); ``log`` is a progress hook (progress.py)."""
    structure, weights = static_rows(original, optimized, input_shapes)
    # A fixed batch is honoured by data.batches whatever the size asked for.
    return [structure, weights, exactness_row(original, optimized, data, tolerance, log=log),
            agreement_row(original, optimized, data, min_agreement, log=log)]


# --- structure and weights -------------------------------------------------------


def static_rows(original: onnx.ModelProto, optimized: onnx.ModelProto,
                input_shapes: dict | None = None) -> tuple[Row, Row]:
    try:
        canonical, candidates = _analyse_original(original, input_shapes)
    except Exception as exc:  # noqa: BLE001 - a model the compiler cannot analyse is a failed check
        reason = f"the compiler cannot analyse the original ({error_message(exc)})"
        return Row("structure", False, reason), Row("weights", False, "not checked: " + reason)
    graph = gs.import_onnx(optimized)
    ours = [node for g in all_graphs(graph) for node in g.nodes if node.domain == ops.DOMAIN]
    layers = [_traced(node, candidates) for node in ours if node.op not in _SPARSE_OPS]
    by_name = verify_sparse.tensors_by_name(canonical)
    sparse = [verify_sparse.trace(node, by_name) if node.op == ops.SPARSE_MATMUL else trace_conv(node, canonical)
              for node in ours if node.op in _SPARSE_OPS]
    problems = _header_problems(original, optimized, layers + sparse)
    seen: dict[str, Layer] = {}
    for layer in layers:
        problems += [f"layer '{layer.name}': {p}" for p in layer.problems]
        if layer.candidate is not None:
            other = seen.setdefault(layer.candidate.output.name, layer)
            if other is not layer:
                problems.append(f"layer '{layer.name}' is rewritten twice")
    problems += [f"layer '{s.name}': {p}" for s in sparse for p in s.problems]
    problems += _rest_problems(original, canonical, candidates, graph, layers, sparse)
    if problems:
        structure = Row("structure", False, _summary(problems))
    elif not ours:
        structure = Row("structure", True, "no early-exit ops: the graph is the original's, unchanged")
    else:
        counts = Counter(node.op for node in ours)
        ops_text = ", ".join(f"{c} {op}" for op, c in sorted(counts.items()))
        structure = Row("structure", True, f"{ops_text}, each replacing a supported layer; the rest of the "
                                           "graph, its inputs and outputs as in the original")
    return structure, _weights_row(layers, sparse)


def _analyse_original(original: onnx.ModelProto, input_shapes: dict | None = None):
    """The canonical original graph and its rewritable layers keyed by activation output."""
    graph = gs.import_onnx(infer_shapes(with_input_shapes(original, input_shapes or {})))
    constants_to_initializers(graph)
    fold_batchnorm(graph)
    # Options that accept every layer some command line could have rewritten.
    permissive = Options(k=1, min_units=2, include_first_layer=True)
    if hasattr(permissive, "argmax_only"):
        # Any output may have been declared --argmax-only; only layers the ops point at are used.
        permissive.argmax_only = tuple(o.name for o in original.graph.output)
    accepted, _rejected = find_candidates(graph, permissive)
    return graph, {c.output.name: (c, ctx) for _rule, c, ctx in accepted}


def _producer(t: gs.Tensor | None) -> gs.Node | None:
    return t.inputs[0] if t is not None and t.inputs else None


def _is(node: gs.Node | None, op: str) -> bool:
    return node is not None and node.op == op and (node.domain or "") in ("", "ai.onnx")


def _what(node: gs.Node | None, t: gs.Tensor) -> str:
    if node is None:
        return "a constant" if isinstance(t, gs.Constant) else f"'{t.name}' (not computed by a node)"
    return describe(node)


def _traced(op: gs.Node, candidates: dict) -> Layer:
    try:
        return _trace(op, candidates)
    except Exception as exc:  # noqa: BLE001 - a graph too odd to follow is a failed check, not a crash
        return Layer(op, nodes=[op], problems=[f"{describe(op)} cannot be traced ({error_message(exc)})"])


def _trace(op: gs.Node, candidates: dict) -> Layer:
    layer = Layer(op, nodes=[op])
    bad = layer.problems.append
    if op.op not in ops.ALL_OPS:
        bad(f"unknown op {op.op} in domain {ops.DOMAIN} (version {ops.VERSION} has {', '.join(ops.ALL_OPS)})")
        return layer
    kind = "conv" if op.op == ops.CONV_RELU else "dense"
    is_head = op.op == _ARGMAX_HEAD
    out = op.outputs[0].name if op.outputs else ""
    found = candidates.get(out)
    if found is None:
        bad(f"{op.op} '{op.name}' writes '{out}', which is not the result of a layer "
            "the compiler rewrites in the original")
    else:
        layer.candidate = found[0]
        if layer.candidate.kind != kind or (layer.candidate.rule == "argmax_head") != is_head:
            bad(f"{op.op} replaces a {' -> '.join(layer.candidate.op_types)} layer, which the compiler "
                f"rewrites with rule {layer.candidate.rule}")
    if len(op.inputs) < 4:
        bad(f"{op.op} has {len(op.inputs)} inputs, at least 4 are required")
        return layer
    partial, x = op.inputs[0], op.inputs[1]
    product_op = "Conv" if kind == "conv" else "MatMul"
    product = _producer(partial)
    if not _is(product, product_op) or len(product.inputs) != 2:
        bad(f"input 0 (partial) comes from {_what(product, partial)}, not a {product_op} partial product "
            "without bias")
        return layer
    layer.nodes.append(product)
    layer.w_head = product.inputs[1]
    head_in = product.inputs[0]
    layer.k = _attr_int(op, "k")
    if layer.k is None:
        bad("attribute k is missing or not an integer")
        return layer
    axis = 1 if kind == "conv" else -1
    c = layer.candidate
    if "tail_units" in op.attrs:
        source = _trace_tail_units(op, layer, head_in, x, axis, bad)
        if source is None:
            return layer
    else:
        slc = _producer(head_in)
        if not _is(slc, "Slice") or slc.inputs[0] is not x:
            bad(f"the partial product reads {_what(slc, head_in)}, not a Slice of the op's input x '{x.name}'")
            return layer
        layer.nodes.append(slc)
        slice_problem = _check_slice(slc, layer.k, axis, x)
        if slice_problem:
            bad(slice_problem)
        source = x
        gather = _producer(x)
        # A Gather the original already had in front of the layer is not the compiler's unit order.
        if _is(gather, "Gather") and (c is None or x.name != c.x.name):
            layer.nodes.append(gather)
            layer.gather = gather
            layer.perm = _unit_index(gather, axis, bad)
            source = gather.inputs[0]
    if c is not None and c.rule == "gemm_relu" and c.reduction.attrs.get("transA", 0):
        transpose = _producer(source)
        if not _is(transpose, "Transpose") or list(transpose.attrs.get("perm", [1, 0])) != [1, 0]:
            bad(f"the layer has transA = 1 but x comes from {_what(transpose, source)}, not a Transpose")
            return layer
        layer.nodes.append(transpose)
        source = transpose.inputs[0]
    if c is not None and source.name != c.x.name:
        bad(f"the op reads '{source.name}', the original layer reads '{c.x.name}'")
    layer.w_tail, layer.bias = op.inputs[2], op.inputs[3]
    residual = op.inputs[4] if len(op.inputs) > 4 and op.inputs[4].name else None
    if c is not None:
        want = c.residual.name if c.residual is not None else None
        got = residual.name if residual is not None else None
        if want != got:
            bad(f"the residual input is {got!r}, the original layer adds {want!r}")
        if is_head and int(op.attrs.get("keepdims", 0)) != int(bool(getattr(c, "head_keepdims", False))):
            bad(f"keepdims is {op.attrs.get('keepdims', 0)}, the original arg-max's is {int(bool(c.head_keepdims))}")
        if not is_head and not _same_float(op.attrs.get("clip_max", math.inf), c.clip_max):
            bad(f"clip_max is {op.attrs.get('clip_max', math.inf)}, the original activation caps at {c.clip_max}")
        if kind == "conv":
            bad_attrs = _conv_attr_problems(op, product, c)
            if bad_attrs:
                bad(bad_attrs)
    _check_rule(op, layer, head_in, bad)
    return layer


def _unit_index(gather: gs.Node, axis: int, bad) -> np.ndarray | None:
    """The constant unit index of a Gather over the unit axis, or None (a problem said)."""
    index = const_value(gather.inputs[1], 13)
    g_axis = int(gather.attrs.get("axis", 0))
    if index is None or index.ndim != 1 or index.dtype.kind not in "iu":
        bad(f"the unit order of {describe(gather)} is not a constant 1-D integer index")
    elif not _same_axis(g_axis, axis, gather.inputs[0]):
        bad(f"{describe(gather)} permutes axis {g_axis}, not the unit axis")
    else:
        return index.astype(np.int64)
    return None


def _trace_tail_units(op: gs.Node, layer: Layer, head_in: gs.Tensor, x: gs.Tensor, axis: int, bad):
    """The dense op that gathers its own tail: the partial product reads a Gather of the
    op's x over the head units, and head plus tail_units is the unit order. Returns x,
    or None when the group is not wired that way."""
    gather = _producer(head_in)
    if op.op != ops.DENSE_RELU or not _is(gather, "Gather") or gather.inputs[0] is not x:
        bad(f"{op.op} has attribute tail_units, but the partial product reads {_what(gather, head_in)}, "
            f"not a Gather of the op's input x '{x.name}'")
        return None
    layer.nodes.append(gather)
    layer.gather = gather
    head = _unit_index(gather, axis, bad)
    tail = np.asarray(op.attrs["tail_units"]).reshape(-1)
    if tail.dtype.kind not in "iu":
        bad("attribute tail_units is not a list of integers")
    elif head is not None:
        if len(head) != layer.k:
            bad(f"{describe(gather)} takes {len(head)} head units, attribute k is {layer.k}")
        layer.perm = np.concatenate([head, tail.astype(np.int64)])
    return x


def _attr_int(node: gs.Node, name: str) -> int | None:
    v = node.attrs.get(name)
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else None


def _same_axis(a: int, b: int, t: gs.Tensor) -> bool:
    if a == b:
        return True
    rank = len(t.shape) if t.shape is not None else None
    return rank is not None and a % rank == b % rank


def _same_float(a, b) -> bool:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-6 * max(abs(a), abs(b)))


def _slice_part(slc: gs.Node, index: int, attr: str):
    if attr in slc.attrs:
        return np.asarray(slc.attrs[attr]).reshape(-1).tolist()
    if len(slc.inputs) > index and slc.inputs[index].name:
        value = const_value(slc.inputs[index], 13)
        return None if value is None else value.reshape(-1).tolist()
    return "absent"


def _check_slice(slc: gs.Node, k: int, axis: int, x: gs.Tensor) -> str | None:
    starts, ends = _slice_part(slc, 1, "starts"), _slice_part(slc, 2, "ends")
    axes, steps = _slice_part(slc, 3, "axes"), _slice_part(slc, 4, "steps")
    if (starts != [0] or ends != [k] or axes == "absent" or axes is None or len(axes) != 1
            or not _same_axis(int(axes[0]), axis, x) or steps not in ("absent", [1])):
        return (f"{describe(slc)} takes starts {starts}, ends {ends}, axes {axes}, steps {steps}: "
                f"not the first k = {k} units of axis {axis}")
    return None


def _conv_attr_problems(op: gs.Node, product: gs.Node, c: Candidate) -> str | None:
    spatial = c.weight.ndim - 2
    want = _conv_geometry(c.conv_attrs, spatial)
    for node in (product, op):
        got = _conv_geometry(node.attrs, spatial)
        if got != want:
            return f"{describe(node)} has strides/pads/dilations/auto_pad {got}, the original Conv {want}"
    return None


def _conv_geometry(attrs: dict, spatial: int) -> tuple:
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = tuple(attrs.get("pads", [0] * 2 * spatial)) if auto_pad == "NOTSET" else None
    return (tuple(attrs.get("strides", [1] * spatial)), pads, tuple(attrs.get("dilations", [1] * spatial)), auto_pad)


def _check_rule(op: gs.Node, layer: Layer, head_in: gs.Tensor, bad) -> None:
    rule = op.attrs.get("rule", "threshold")
    rule = rule.decode() if isinstance(rule, bytes) else rule
    threshold = op.attrs.get("threshold")
    if not isinstance(threshold, (float, int)) or math.isnan(threshold):
        bad("attribute threshold is missing or NaN")
    if rule not in DECISION_RULES:
        bad(f"unknown rule {rule!r} (known: {', '.join(DECISION_RULES)})")
        return
    thresholds = op.attrs.get("thresholds")
    outputs = layer.candidate.outputs if layer.candidate is not None else None
    if thresholds is not None and (rule != "threshold" or (outputs is not None and len(thresholds) != outputs)):
        bad(f"thresholds ({len(thresholds)} values) do not fit rule {rule} with {outputs} output channels")
    if rule == "statstest":
        sq = op.inputs[5] if len(op.inputs) > 5 else None
        product = _producer(sq)
        square = _producer(product.inputs[0]) if product is not None and product.inputs else None
        if (product is None or product.op != op.inputs[0].inputs[0].op or len(product.inputs) != 2
                or not _is(square, "Mul") or any(i is not head_in for i in square.inputs)):
            bad("rule statstest without a partial product of squares of the same head (input 5)")
            return
        layer.nodes += [product, square]
        layer.w_head_sq = product.inputs[1]
    elif rule == "certified" and (len(op.inputs) < 8 or not all(isinstance(t, gs.Constant) for t in op.inputs[6:8])):
        bad("rule certified without constant w_pos_sum and w_pos_norm (inputs 6 and 7)")


def _header_problems(original: onnx.ModelProto, optimized: onnx.ModelProto, layers: list[Layer]) -> list[str]:
    problems = []
    stats = {o.name for layer in layers for o in layer.op.outputs[1:]}
    # An --argmax-only output turns from scores into the class index.
    heads = {layer.op.outputs[0].name for layer in layers if layer.op.op == _ARGMAX_HEAD and layer.op.outputs}

    def typed(values, index_ok=False):
        out = []
        for v in values:
            elem = v.type.tensor_type.elem_type
            if index_ok and v.name in heads and elem == onnx.TensorProto.INT64:
                elem = onnx.TensorProto.FLOAT  # the index stands for the scores
            out.append((v.name, onnx.TensorProto.DataType.Name(elem)))
        return out

    if typed(model_inputs(original)) != typed(model_inputs(optimized)):
        problems.append(f"graph inputs {typed(model_inputs(optimized))} differ from the original's "
                        f"{typed(model_inputs(original))}")
    outputs = [o for o in optimized.graph.output if o.name not in stats]
    if typed(original.graph.output, True) != typed(outputs, True):
        problems.append(f"graph outputs {typed(outputs)} differ from the original's {typed(original.graph.output)}")

    def imports(model):
        return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}

    got, want = imports(optimized), imports(original)
    if layers and got.get(ops.DOMAIN) != ops.VERSION:
        problems.append(f"the model imports {ops.DOMAIN} version {got.get(ops.DOMAIN)}, not {ops.VERSION}")
    got.pop(ops.DOMAIN, None)
    if got != want:
        problems.append(f"opset imports {got} differ from the original's {want}")
    return problems


def _rest_problems(original, canonical: gs.Graph, candidates: dict, graph: gs.Graph, layers: list[Layer],
                   sparse: list = ()) -> list[str]:
    """Compare every node outside the rewritten groups with the original's."""
    in_groups = {id(n) for layer in layers for n in layer.nodes} | {id(s.op) for s in sparse}
    rest = [n for g in all_graphs(graph) for n in g.nodes if id(n) not in in_groups]
    if not layers and not sparse:
        # The compiler returns an untouched model when it rewrites nothing.
        reference = gs.import_onnx(original)
    else:
        reference = canonical
        for layer in layers:
            c = layer.candidate
            if c is None or c.output.name not in candidates:
                continue
            ctx = candidates[c.output.name][1]
            for node in [c.reduction, *c.chain]:
                node.outputs.clear()
            inputs = [c.x] + ([c.residual] if c.residual is not None else [])
            ctx.graph.nodes.append(gs.Node(_GROUP, inputs=inputs, outputs=[c.output]))
        for s in sparse:
            if s.original:
                verify_sparse.replace_in_reference(s, reference, _GROUP)
        # Weights only the rewritten layers used (a Transpose of an initializer, say) go too.
        reference.cleanup(recurse_subgraphs=True)
    ref = [n for g in all_graphs(reference) for n in g.nodes if n.op != _GROUP]
    got_types = Counter(_op_key(n) for n in rest)
    want_types = Counter(_op_key(n) for n in ref)
    if got_types != want_types:
        extra = ", ".join(f"{k} x{v}" for k, v in sorted((got_types - want_types).items()))
        missing = ", ".join(f"{k} x{v}" for k, v in sorted((want_types - got_types).items()))
        text = "outside the rewritten layers the graph differs from the original:"
        return [text + (f" extra {extra}" if extra else "") + (";" if extra and missing else "")
                + (f" missing {missing}" if missing else "")]
    by_outputs = {tuple(o.name for o in n.outputs): n for n in ref}
    for node in rest:
        twin = by_outputs.get(tuple(o.name for o in node.outputs))
        if twin is None or _signature(twin) != _signature(node):
            return [f"{describe(node)} differs from the original's node (inputs, attributes or constants)"]
    return []


def _op_key(node: gs.Node) -> str:
    return f"{node.domain}:{node.op}" if node.domain and node.domain != "ai.onnx" else node.op


def _signature(node: gs.Node) -> tuple:
    return (_op_key(node), tuple(_tensor_key(t) for t in node.inputs),
            tuple(sorted((k, _value_key(v)) for k, v in node.attrs.items())))


def _tensor_key(t: gs.Tensor):
    if isinstance(t, gs.Constant):
        return (t.name, _value_key(np.asarray(t.values)))
    return t.name


def _value_key(v):
    if isinstance(v, gs.Graph):
        return "graph"  # bodies are compared node by node
    if isinstance(v, gs.Constant):
        v = np.asarray(v.values)
    if isinstance(v, np.ndarray):
        # A digest, not the bytes: big models hold hundreds of MB of weights.
        return (str(v.dtype), v.shape, hashlib.sha256(np.ascontiguousarray(v).view(np.uint8)).hexdigest())
    if isinstance(v, (list, tuple)):
        return tuple(_value_key(x) for x in v)
    return repr(v)


def _summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


# --- weights -------------------------------------------------------------------


def _weights_row(layers: list[Layer], sparse: list = ()) -> Row:
    problems = []
    checked = 0
    worst = 0.0
    for s in sparse:
        if s.problems or s.weight is None:
            problems.append(f"layer '{s.name}': not checked: see structure")
            continue
        found, err = verify_sparse.weight_problems(s, WEIGHT_RTOL)
        worst = max(worst, err)
        problems += [f"layer '{s.name}': {p}" for p in found]
    for layer in layers:
        if layer.problems or layer.candidate is None:
            continue
        found, err = _layer_weights(layer)
        worst = max(worst, err)
        problems += [f"layer '{layer.name}': {p}" for p in found]
        checked += 1
    unchecked = sum(1 for layer in layers if layer.problems or layer.candidate is None)
    if unchecked:
        problems.append(f"{unchecked} layer(s) not checked: see structure")
    if problems:
        return Row("weights", False, _summary(problems))
    if not layers and not sparse:
        return Row("weights", True, "no rewritten layers")
    also = f", {len(sparse)} sparse-input layer(s) carry the original's weight and bias" if sparse else ""
    return Row("weights", True, f"{checked} layer(s): head, tail, unit order and bias give the original's "
                                f"canonical weights{also} (largest relative difference {worst:.1e})")


def _constant(t: gs.Tensor | None) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    scale = max(float(np.abs(want).max()) if want.size else 0.0, 1e-30)
    return float(np.abs(got.astype(np.float64) - want).max()) / scale if want.size else 0.0


def _layer_weights(layer: Layer) -> tuple[list[str], float]:
    c, k = layer.candidate, layer.k
    w = np.asarray(c.weight)
    head, tail, bias = _constant(layer.w_head), _constant(layer.w_tail), _constant(layer.bias)
    names = {"head": layer.w_head.name, "tail": layer.w_tail.name, "bias": layer.bias.name}
    for part, value in (("head", head), ("tail", tail), ("bias", bias)):
        if value is None or value.dtype != np.float32:
            return [f"the {part} weight '{names[part]}' is not a float32 initializer"], 0.0
    n = c.n
    perm = layer.perm if layer.perm is not None else np.arange(n)
    if layer.gather is not None and layer.perm is None:
        return ["the unit order could not be read"], 0.0
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
        return [f"the unit order of {describe(layer.gather)} is not a permutation of the original's {n} units"], 0.0
    # In the op's unit order, unit axis first: conv [n, O, *K], dense [n, O].
    want = np.moveaxis(w, 1, 0)[perm] if c.kind == "conv" else w[perm]
    got_head = np.moveaxis(head, 1, 0) if c.kind == "conv" else head
    got_tail = np.moveaxis(tail, 1, 0) if c.kind == "conv" else tail.T
    if got_head.shape != (k, *want.shape[1:]) or got_tail.shape != (n - k, *want.shape[1:]):
        return [f"head weight {list(head.shape)} and tail weight {list(tail.shape)} do not split the original's "
                f"{list(w.shape)} weight at k = {k}"], 0.0
    got = np.concatenate([got_head, got_tail])
    err = _rel_diff(got, want)
    problems = []
    if err > WEIGHT_RTOL:
        problems.append(_weight_problem(layer, got, want, np.moveaxis(w, 1, 0) if c.kind == "conv" else w, k, names))
    bias_err = _rel_diff(bias.reshape(-1), np.asarray(c.bias, np.float64)) if bias.size == c.outputs else math.inf
    if bias_err > WEIGHT_RTOL:
        problems.append(f"the bias '{names['bias']}' differs from the original's folded bias "
                        f"(relative difference {bias_err:.2g})")
    problems += _rule_weight_problems(layer, head, tail)
    return problems, max(err, bias_err if math.isfinite(bias_err) else 0.0)


def _weight_problem(layer: Layer, got: np.ndarray, want: np.ndarray, stored: np.ndarray, k: int, names) -> str:
    """Name what changed: the permutation, the head or the tail."""
    scale = max(float(np.abs(want).max()), 1e-30)
    wrong = np.flatnonzero(np.abs(got.astype(np.float64) - want).reshape(len(got), -1).max(1) > WEIGHT_RTOL * scale)
    # Units whose weights are intact but sit where the Gather does not put them mean a changed permutation.
    where = {}
    for j in range(len(stored)):
        where.setdefault(stored[j].tobytes(), set()).add(j)
    moved = [int(i) for i in wrong if where.get(got[i].tobytes())]
    if layer.gather is not None and moved and len(moved) == len(wrong):
        return (f"the unit order of {describe(layer.gather)} does not match the weights at positions "
                f"{moved[:8]}{' ...' if len(moved) > 8 else ''}")
    parts = []
    if (wrong < k).any():
        parts.append(f"head weight '{names['head']}'")
    if (wrong >= k).any():
        parts.append(f"tail weight '{names['tail']}'")
    unit = int(layer.perm[wrong[0]]) if layer.perm is not None else int(wrong[0])
    return (f"the {' and '.join(parts)} do not match the original's weight (input unit {unit} first, "
            f"relative difference {_rel_diff(got, want):.2g})")


def _rule_weight_problems(layer: Layer, head: np.ndarray, tail: np.ndarray) -> list[str]:
    op = layer.op
    if layer.w_head_sq is not None:
        sq = _constant(layer.w_head_sq)
        if sq is None or sq.shape != head.shape or _rel_diff(sq, head * head) > WEIGHT_RTOL:
            return [f"the squared head weight '{layer.w_head_sq.name}' is not the head weight squared"]
    if op.attrs.get("rule") in ("certified", b"certified"):
        positive = np.maximum(tail, 0).reshape(tail.shape[0], -1).astype(np.float64)
        for t, want in zip(op.inputs[6:8], (positive.sum(1), np.sqrt((positive * positive).sum(1)))):
            got = _constant(t)
            if got is None or got.size != want.size or _rel_diff(got.reshape(-1), want) > WEIGHT_RTOL:
                return [f"'{t.name}' does not match the tail weight's positive part"]
    return []


# --- running the models ----------------------------------------------------------


def exact_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose early-exit ops prune nothing: threshold -inf, default rule, no per-output thresholds."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for graph in _proto_graphs(out.graph):
        for node in graph.node:
            if node.domain != ops.DOMAIN or node.op_type in _SPARSE_OPS:  # they prune nothing
                continue
            keep = [a for a in node.attribute if a.name not in ("threshold", "thresholds", "rule", "z_crit")]
            del node.attribute[:]
            node.attribute.extend(keep)
            node.attribute.append(onnx.helper.make_attribute("threshold", -math.inf))
    return out


def _proto_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _proto_graphs(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _proto_graphs(g)


def exactness_row(original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, tolerance: float,
                  batch: int = 64, log=quiet) -> Row:
    import onnxruntime as ort

    from .check import run_counting
    from .runtime import inference_session

    name = "exact at -inf"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ref = ort.InferenceSession(original.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        return Row(name, False, f"onnxruntime cannot load the original: {error_message(exc)}")
    try:
        opt = inference_session(exact_copy(optimized), optimize=False)
    except Exception as exc:  # noqa: BLE001
        return Row(name, False, f"onnxruntime cannot load the optimised model: {error_message(exc)}")
    names = [o.name for o in original.graph.output]
    try:
        want, _ = run_counting(ref, names, {}, data.batches(batch), len(data),
                               lambda done: log("exactness: the original", done, len(data)))
        got, _ = run_counting(opt, names, {}, data.batches(batch), len(data),
                              lambda done: log("exactness: the optimised model", done, len(data)))
    except Exception as exc:  # noqa: BLE001
        return Row(name, False, f"onnxruntime failed to run the models: {error_message(exc)}")
    worst = 0.0
    for n in names:
        a, b = want[n], got[n]
        if a.dtype.kind == "f" and b.dtype.kind in "iu" and b.shape == a.shape[:-1]:
            a = a.argmax(-1)  # an --argmax-only output: compare the class index
        if a.shape != b.shape or a.dtype != b.dtype:
            return Row(name, False, f"output '{n}' is {b.dtype} {list(b.shape)}, "
                                    f"the original's {a.dtype} {list(a.shape)}")
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return Row(name, False, f"output '{n}' differs from the original's on {np.mean(a != b):.2%} of entries")
            continue
        scale = max(float(np.abs(a).max()) if a.size else 0.0, 1e-6)
        err = float(np.abs(a.astype(np.float64) - b).max()) / scale if a.size else 0.0
        if not err <= tolerance:
            return Row(name, False, f"output '{n}' differs from the original's by {err:.2g} of its range "
                                    f"(tolerance {tolerance:g}) with nothing pruned")
        worst = max(worst, err)
    return Row(name, True, f"outputs equal the original's within {tolerance:g} of their range on {len(data)} "
                           f"samples of '{data.source}' (largest {worst:.1e})")


def agreement_row(original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, min_agreement: float,
                  batch: int = 64, log=quiet) -> Row:
    from .check import compare

    name = "agreement"
    try:
        checked = compare(original, optimized, data, batch=batch, log=log)
    except Exception as exc:  # noqa: BLE001 - e.g. outputs of another shape: the models do not correspond
        return Row(name, False, error_message(exc))
    parts, ok = [], True
    for d in checked.outputs:
        text = f"'{d.name}' max abs diff {d.max_abs:.3g}"
        if d.top1_agreement is not None:
            text += f", top-1 agreement {d.top1_agreement:.2%}"
            if d.top1_agreement < min_agreement:
                ok = False
                text += f" < {min_agreement:.2%}"
        parts.append(text)
    if checked.accuracy is not None:
        parts.append(f"accuracy {checked.accuracy[0]:.2%} -> {checked.accuracy[1]:.2%}")
    pruned = sum(p for p, _t in checked.pruned.values())
    total = sum(t for _p, t in checked.pruned.values())
    if total:
        parts.append(f"{pruned / total:.1%} of outputs pruned")
    return Row(name, ok, "; ".join(parts) + f" on {checked.samples} samples of '{checked.source}'")

