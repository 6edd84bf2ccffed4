"""The structure check: each early-exit op is wired as ``rules/common.py emit()`` wires it, in
place of a layer the compiler's own matching finds in the original, and the rest of the graph is
the original's."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .. import ops
from ..compiler.canonicalize import canonicalize, constants_to_initializers
from ..compiler.graphutil import cleanup, const_value, describe
from ..compiler.pipeline import analysis_graph, find_candidates, scoped_nodes
from ..config import DECISION_RULES, Options
from ..errors import error_message
from ..io.data import model_inputs
from ..io.modelio import all_nodes
from ..rules.base import Candidate
from . import sparse_matmul as verify_sparse
from .base import Layer

_GROUP = "__exprune_group__"  # placeholder op for a rewritten layer in the original
_ARGMAX_HEAD = getattr(ops, "ARGMAX_HEAD", None)  # its output is an int64 class index



def analyse_original(original: onnx.ModelProto, input_shapes: dict | None = None):
    """The canonical original graph and its rewritable layers keyed by activation output."""
    graph, proof = analysis_graph(original, input_shapes or {})
    canonicalize(graph)
    # Options that accept every layer some command line could have rewritten.
    permissive = Options(k=1, min_units=2, include_first_layer=True)
    if hasattr(permissive, "argmax_only"):
        # Any output may have been declared --argmax-only; only layers the ops point at are used.
        permissive.argmax_only = tuple(o.name for o in original.graph.output)
    accepted, _rejected = find_candidates(graph, permissive, proof=proof)
    # Keyed by body path and output: sibling bodies may reuse their tensor names.
    return graph, {ctx.scope + c.output.name: (c, ctx) for _rule, c, ctx in accepted}


def _producer(t: gs.Tensor | None) -> gs.Node | None:
    return t.inputs[0] if t is not None and t.inputs else None


def _is(node: gs.Node | None, op: str) -> bool:
    return node is not None and node.op == op and (node.domain or "") in ("", "ai.onnx")


def _what(node: gs.Node | None, t: gs.Tensor) -> str:
    if node is None:
        return "a constant" if isinstance(t, gs.Constant) else f"'{t.name}' (not computed by a node)"
    return describe(node)


def traced(op: gs.Node, candidates: dict, scope: str = "") -> Layer:
    """``op`` (in the body at path ``scope``) traced back to its group and original layer."""
    try:
        return _trace(op, candidates, scope)
    except Exception as exc:  # noqa: BLE001 - a graph too odd to follow is a failed check, not a crash
        return Layer(op, nodes=[op], problems=[f"{describe(op)} cannot be traced ({error_message(exc)})"])


def _trace(op: gs.Node, candidates: dict, scope: str) -> Layer:
    layer = Layer(op, nodes=[op])
    bad = layer.problems.append
    if op.op not in ops.ALL_OPS:
        bad(f"unknown op {op.op} in domain {ops.DOMAIN} (version {ops.VERSION} has {', '.join(ops.ALL_OPS)})")
        return layer
    kind = "conv" if op.op == ops.CONV_RELU else "dense"
    is_head = op.op == _ARGMAX_HEAD
    out = op.outputs[0].name if op.outputs else ""
    layer.key = scope + out
    found = candidates.get(layer.key)
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
            has = f"adds '{got}'" if got else "adds no residual"
            bad(f"the op {has}, the original layer " + (f"adds '{want}'" if want else "adds none"))
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
        main = _producer(op.inputs[0])
        if main is not None and _geometry(product) != _geometry(main):
            bad(f"{describe(product)} (the partial product of squares) has attributes {_geometry(product)}, "
                f"the head's {describe(main)} {_geometry(main)}")
        layer.nodes += [product, square]
        layer.w_head_sq = product.inputs[1]
    elif rule == "certified" and (len(op.inputs) < 8 or not all(isinstance(t, gs.Constant) for t in op.inputs[6:8])):
        bad("rule certified without constant w_pos_sum and w_pos_norm (inputs 6 and 7)")


def _geometry(node: gs.Node) -> tuple:
    return tuple(sorted((k, _value_key(v)) for k, v in node.attrs.items()))


def _type_key(t: onnx.TypeProto) -> str:
    """``t`` without its shapes (a sequence's element shape may be inferred or not), as text."""
    bare = onnx.TypeProto()
    bare.CopyFrom(t)
    stack = [bare]
    while stack:
        cur = stack.pop()
        kind = cur.WhichOneof("value")
        if kind == "tensor_type":
            cur.tensor_type.ClearField("shape")
        elif kind in ("sequence_type", "optional_type"):
            stack.append(getattr(cur, kind).elem_type)
        elif kind == "map_type":
            stack.append(cur.map_type.value_type)
    return str(bare).replace("\n", " ")


def header_problems(original: onnx.ModelProto, optimized: onnx.ModelProto, layers: list[Layer]) -> list[str]:
    problems = []
    stats = {o.name for layer in layers for o in layer.op.outputs[1:]}
    # An --argmax-only output turns from scores into the class index.
    heads = {layer.op.outputs[0].name for layer in layers if layer.op.op == _ARGMAX_HEAD and layer.op.outputs}

    def typed(values, index_ok=False):
        out = []
        for v in values:
            if not v.type.HasField("tensor_type"):  # a sequence of maps (skl2onnx's ZipMap): the whole type
                out.append((v.name, _type_key(v.type)))
                continue
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
    want.pop(ops.DOMAIN, None)  # an original this compiler wrote
    # onnxruntime's saved graphs import domains that none of their nodes use: no change of the graph.
    used = {n.domain or "" for n in all_nodes(optimized.graph)}
    used |= {n.domain or "" for f in optimized.functions for n in f.node} | {f.domain for f in optimized.functions}
    got = {domain: version for domain, version in got.items() if domain in want or domain in used}
    if got != want:
        problems.append(f"opset imports {got} differ from the original's {want}")
    return problems


def attribute_problems(ops_found: list[gs.Node]) -> list[str]:
    """Attributes that no op of ours reads (onnxruntime would pass them over in silence)."""
    problems = []
    for op in ops_found:
        unknown = sorted(set(op.attrs) - ops.ATTRIBUTES.get(op.op, set(op.attrs)))
        if unknown:
            problems.append(f"{describe(op)} has attribute(s) {', '.join(unknown)}, which {op.op} does not "
                            f"take (it reads {', '.join(sorted(ops.ATTRIBUTES[op.op])) or 'none'})")
    return problems


def rest_problems(original, canonical: gs.Graph, candidates: dict, graph: gs.Graph, layers: list[Layer],
                   sparse: list = ()) -> list[str]:
    """Compare every node outside the rewritten groups with the original's."""
    in_groups = {id(n) for layer in layers for n in layer.nodes} | {id(s.op) for s in sparse}
    rest = [(scope, n) for scope, n in scoped_nodes(graph) if id(n) not in in_groups]
    if not layers and not sparse:
        # The compiler returns an untouched model when it rewrites nothing; read as the
        # optimised one is (verify.static_rows).
        reference = gs.import_onnx(original)
        constants_to_initializers(reference)
    else:
        reference = canonical
        for layer in layers:
            c = layer.candidate
            if c is None or layer.key not in candidates:
                continue
            ctx = candidates[layer.key][1]
            for node in [c.reduction, *c.chain]:
                node.outputs.clear()
            inputs = [c.x] + ([c.residual] if c.residual is not None else [])
            ctx.graph.nodes.append(gs.Node(_GROUP, inputs=inputs, outputs=[c.output]))
        for s in sparse:
            if s.original:
                verify_sparse.replace_in_reference(s, reference, _GROUP)
        # Weights only the rewritten layers used (a Transpose of an initializer, say) go too.
        cleanup(reference)
    ref = [(scope, n) for scope, n in scoped_nodes(reference) if n.op != _GROUP]
    got_types = Counter(_op_key(n) for _, n in rest)
    want_types = Counter(_op_key(n) for _, n in ref)
    if got_types != want_types:
        extra = ", ".join(f"{k} x{v}" for k, v in sorted((got_types - want_types).items()))
        missing = ", ".join(f"{k} x{v}" for k, v in sorted((want_types - got_types).items()))
        text = "outside the rewritten layers the graph differs from the original:"
        return [text + (f" extra {extra}" if extra else "") + (";" if extra and missing else "")
                + (f" missing {missing}" if missing else "")]
    by_outputs = {(scope, *(o.name for o in n.outputs)): n for scope, n in ref}
    for scope, node in rest:
        twin = by_outputs.get((scope, *(o.name for o in node.outputs)))
        if twin is None or _signature(twin) != _signature(node):
            return [f"{describe(node)} differs from the original's node (inputs, attributes or constants)"]
    return []


def _op_key(node: gs.Node) -> str:
    return f"{node.domain}:{node.op}" if node.domain and node.domain != "ai.onnx" else node.op


def _signature(node: gs.Node) -> tuple:
    return (_op_key(node), tuple(_tensor_key(t) for t in node.inputs),
            tuple(sorted((k, _value_key(v)) for k, v in node.attrs.items())))


def _tensor_key(t: gs.Tensor):
    # A constant by its value alone: the export keeps one copy of a weight that If/Loop
    # bodies hold alike, under one body's name (export._share_body_weights).
    if isinstance(t, gs.Constant):
        return ("constant", _value_key(np.asarray(t.values)))
    return t.name


def _value_key(v):
    if isinstance(v, gs.Graph):
        # Bodies are compared node by node; here, what goes in and what comes out of each.
        return ("graph", tuple(t.name for t in v.inputs), tuple(t.name for t in v.outputs))
    if isinstance(v, gs.Constant):
        v = np.asarray(v.values)
    if isinstance(v, np.ndarray):
        # A digest, not the bytes: big models hold hundreds of MB of weights.
        return (str(v.dtype), v.shape, hashlib.sha256(np.ascontiguousarray(v).view(np.uint8)).hexdigest())
    if isinstance(v, (list, tuple)):
        return tuple(_value_key(x) for x in v)
    return repr(v)
