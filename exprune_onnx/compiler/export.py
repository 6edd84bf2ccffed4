"""The pipeline's last step: the rewritten graph back to a model that loads where the
original did (its IR version, opsets, metadata, notes and listed initializers kept)."""

from __future__ import annotations

import hashlib
from collections import Counter

import onnx
import onnx_graphsurgeon as gs

from .. import ops
from .._version import __version__
from ..io import bigmodel
from ..io.ir_version import runtime_ir_version
from ..io.modelio import all_graphs as graph_protos
from ..io.modelio import all_nodes
from . import functions


def export(graph: gs.Graph, original: onnx.ModelProto) -> onnx.ModelProto:
    out = bigmodel.export(graph, do_type_check=False)
    # graphsurgeon keeps tensor types only: a sequence of maps (skl2onnx's ZipMap) came back
    # a sequence of no element type, which onnxruntime refuses to load.
    kinds = {o.name: o.type for o in original.graph.output if not o.type.HasField("tensor_type")}
    for o in out.graph.output:
        if o.name in kinds and _untyped(o.type):
            o.type.CopyFrom(kinds[o.name])
    out.ir_version = runtime_ir_version(original.ir_version)
    for key in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, key, getattr(original, key))
    del out.opset_import[:]
    out.opset_import.extend(o for o in original.opset_import if o.domain != ops.DOMAIN)
    out.opset_import.append(onnx.helper.make_opsetid(ops.DOMAIN, ops.VERSION))
    del out.metadata_props[:]
    # An original this compiler wrote has our keys already: the checker refuses a key twice,
    # and a budget it was calibrated to is no promise of this model's.
    out.metadata_props.extend(p for p in original.metadata_props if not p.key.startswith("exprune_onnx."))
    entry = out.metadata_props.add()
    entry.key, entry.value = "exprune_onnx.version", __version__
    del out.functions[:]
    out.functions.extend(functions.still_called(out.graph, original.functions))  # the inlined ones are gone
    _keep_notes(out.graph, original.graph)
    _keep_value_info(out.graph, original.graph)
    if out.ir_version < 4:  # every main-graph initializer is a graph input too: no body weight is moved there
        _list_initializers_as_inputs(out.graph)
    else:
        _share_body_weights(out.graph)
        _merge_new_copies(out.graph, original.graph)
        _keep_listed_initializers(out.graph, original.graph)
    return out


def _merge_new_copies(graph: onnx.GraphProto, original: onnx.GraphProto) -> None:
    """One copy of the weights the rewrites made the same: a Siamese model's two towers
    share their convs' weights, but after BatchNorm folding each tower's rewrite repacks
    its own copy (a dynamo export came out 1.6 times its size). Only new weights are
    renamed: the original's names stay as the original had them, for verify and for
    whoever reads the model; a new copy of an original weight is merged into it."""
    known = {name for g in graph_protos(original) for name in _defined(g)}
    defined = Counter(name for g in graph_protos(graph) for name in _defined(g))
    outputs = {o.name for o in graph.output}
    groups: dict[tuple, list] = {}
    for t in graph.initializer:
        # Defined once: a weight also listed as an input (which may be fed another value) is not.
        if t.data_location == onnx.TensorProto.EXTERNAL or t.name in outputs or defined[t.name] != 1:
            continue
        key = _content_key(t)
        if key is not None:
            groups.setdefault(key, []).append(t)
    for found in groups.values():
        kept = next((t for t in found if t.name in known), found[0])
        for t in found:
            if t is not kept and t.name not in known:
                graph.initializer.remove(t)
                _rename_uses(graph, t.name, kept.name)


def _content_key(t: onnx.TensorProto) -> tuple | None:
    """What two equal weights share whatever their names, or None for one too small to share."""
    if t.raw_data:
        content = t.raw_data
    else:  # values in typed fields: the tensor less its name
        unnamed = onnx.TensorProto()
        unnamed.CopyFrom(t)
        unnamed.name = ""
        content = unnamed.SerializeToString()
    if len(content) < _SHARED_MIN_BYTES:
        return None
    return t.data_type, tuple(t.dims), hashlib.sha256(content).digest()


def _share_body_weights(graph: onnx.GraphProto) -> None:
    """One copy, in the main graph, of a weight that several If/Loop/Scan bodies hold the
    same: graphsurgeon writes an outer weight into every body that reads it, and each
    body's rewrite of a shared layer makes its own copies of the new weights, so a merged
    decoder whose two branches share their weights came out twice its size. A copy is
    renamed only where its name is defined once in the whole model and is no body output."""
    bodies = list(graph_protos(graph))[1:]
    defined = Counter(name for g in graph_protos(graph) for name in _defined(g))
    groups: dict[tuple, list] = {}
    for body in bodies:
        outputs = {o.name for o in body.output}
        for t in body.initializer:
            key = _content_key(t)
            if key is not None and t.name not in outputs:
                groups.setdefault(key, []).append((body, t))
    for found in groups.values():
        if len({id(body) for body, _ in found}) < 2:
            continue
        first = found[0][1]
        names = {t.name for _, t in found}
        if any(defined[n] != sum(t.name == n for _, t in found) for n in names):
            continue  # a name defined elsewhere too: renaming or hoisting could change what it means
        kept = onnx.TensorProto()
        kept.CopyFrom(first)
        for body, t in found:
            body.initializer.remove(t)
            if t.name != first.name:
                _rename_uses(body, t.name, first.name)
        graph.initializer.append(kept)


_SHARED_MIN_BYTES = 1024  # smaller constants (a Slice's bounds) are not worth the renaming


def _defined(g: onnx.GraphProto):
    yield from (t.name for t in g.initializer)
    yield from (v.name for v in g.input)
    yield from (o for n in g.node for o in n.output if o)


def _rename_uses(body: onnx.GraphProto, old: str, new: str) -> None:
    for g in graph_protos(body):
        for node in g.node:
            node.input[:] = [new if name == old else name for name in node.input]


def _untyped(t: onnx.TypeProto) -> bool:
    """Whether ``t`` lacks its element type (a tensor's, or a sequence's elements')."""
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return t.tensor_type.elem_type == onnx.TensorProto.UNDEFINED
    return kind is None or (kind == "sequence_type" and _untyped(t.sequence_type.elem_type))


def _keep_notes(graph: onnx.GraphProto, original: onnx.GraphProto) -> None:
    """The doc strings and metadata the graphsurgeon round trip drops: the graph's
    (torch's dynamo exporter keeps its export signature there) and those of every node
    the rewrite left as it was (same name and op; names shared by two nodes are skipped)."""
    del graph.metadata_props[:]
    graph.metadata_props.extend(original.metadata_props)
    nodes = Counter((n.name, n.op_type) for n in all_nodes(original))
    notes = {(n.name, n.op_type): n for n in all_nodes(original)
             if n.name and nodes[(n.name, n.op_type)] == 1 and (n.doc_string or n.metadata_props)}
    for node in all_nodes(graph):
        was = notes.get((node.name, node.op_type))
        if was is not None:
            node.doc_string = was.doc_string
            del node.metadata_props[:]
            node.metadata_props.extend(was.metadata_props)
    ends = {v.name: v for v in [*original.input, *original.output]}
    for v in [*graph.input, *graph.output]:
        if v.name in ends:
            _keep_end_notes(v, ends[v.name])


def _keep_end_notes(v: onnx.ValueInfoProto, was: onnx.ValueInfoProto) -> None:
    """A graph input's or output's doc string, metadata and denotations (an output's went
    whenever anything was rewritten, a trial found); an --argmax-only output, now the class
    index, keeps only the metadata: its doc string and denotations were the scores'."""
    if getattr(was, "metadata_props", None):  # (a field since onnx 1.16)
        del v.metadata_props[:]
        v.metadata_props.extend(was.metadata_props)
    if v.type.tensor_type.elem_type != was.type.tensor_type.elem_type:
        return
    if was.doc_string:
        v.doc_string = was.doc_string
    if was.type.denotation:
        v.type.denotation = was.type.denotation
    if v.type.HasField("tensor_type") and was.type.HasField("tensor_type"):
        dims, old = v.type.tensor_type.shape.dim, was.type.tensor_type.shape.dim
        for d, o in zip(dims, old) if len(dims) == len(old) else ():
            if o.denotation:
                d.denotation = o.denotation


def _keep_value_info(graph: onnx.GraphProto, original: onnx.GraphProto) -> None:
    """The original's declared shapes (value_info) of its weights still there and of the
    tensors that nodes left as they were still compute, in place of those inferred while
    compiling. onnxruntime plans with them: a dynamo-exported transformer ran 1.28 times as
    long with its 178 entries as without them, so a model written without them timed
    faster for a rewrite that saved nothing (a trial's), and the latency objective kept
    it. A tensor a rewrite now computes keeps no entry of the original's: its producer is new."""
    def unchanged(n: onnx.NodeProto) -> tuple:
        return n.op_type, n.domain, tuple(n.input)

    def weight(t: onnx.TensorProto) -> tuple:
        return "weight", t.data_type, tuple(t.dims)

    was = {out: unchanged(n) for n in original.node for out in n.output if out}
    was.update((t.name, weight(t)) for t in original.initializer)
    now = {out: unchanged(n) for n in graph.node for out in n.output if out}
    now.update((t.name, weight(t)) for t in graph.initializer)
    ends = {v.name for v in [*graph.input, *graph.output]}
    inferred_as = {v.name: v for v in graph.value_info}
    own = [v for v in original.value_info if v.name not in ends and v.name in now and now[v.name] == was.get(v.name)
           and _agrees(v, inferred_as.get(v.name))]
    taken = {v.name for v in own}
    inferred = [v for v in graph.value_info if v.name not in taken]
    del graph.value_info[:]
    graph.value_info.extend([*own, *inferred])


def _agrees(declared: onnx.ValueInfoProto, inferred: onnx.ValueInfoProto | None) -> bool:
    """Whether an original entry fits what inference found (none: it could not reach the
    tensor, as after an op of another domain): the same element type and rank, and the
    same size wherever both give a number. A wrong rank made onnxruntime refuse the model."""
    if inferred is None:
        return True
    a, b = declared.type, inferred.type
    if not (a.HasField("tensor_type") and b.HasField("tensor_type")):
        return a == b
    if a.tensor_type.elem_type != b.tensor_type.elem_type:
        return False
    if not (a.tensor_type.HasField("shape") and b.tensor_type.HasField("shape")):
        return True
    da, db = a.tensor_type.shape.dim, b.tensor_type.shape.dim
    return len(da) == len(db) and all(not (x.HasField("dim_value") and y.HasField("dim_value"))
                                      or x.dim_value == y.dim_value for x, y in zip(da, db))


def _keep_listed_initializers(graph: onnx.GraphProto, original: onnx.GraphProto) -> None:
    """The original's initializers that it also lists as graph inputs (defaults a caller may
    override; exporters' keep_initializers_as_inputs) stay listed where they are still
    initializers: the written model takes the same inputs, in the same order. A weight a
    rewrite replaced is gone from both."""
    kept = {t.name for t in graph.initializer}
    current = {i.name: i for i in graph.input}
    known = {i.name for i in original.input}
    # In the original's order: a caller may feed inputs by position.
    inputs = [current.get(i.name, i) for i in original.input if i.name in current or i.name in kept]
    inputs += [i for i in graph.input if i.name not in known]
    copies = [onnx.ValueInfoProto.FromString(i.SerializeToString()) for i in inputs]
    del graph.input[:]
    graph.input.extend(copies)


def _list_initializers_as_inputs(graph: onnx.GraphProto, body: bool = False) -> None:
    """IR 3 requires every initializer to be a graph input too (Caffe2-era models). An
    If/Loop/Scan body cannot take extra inputs: its initializers become Constant nodes."""
    if body:
        nodes = [onnx.helper.make_node("Constant", [], [t.name], value=t) for t in graph.initializer]
        nodes += list(graph.node)
        del graph.initializer[:]
        del graph.node[:]
        graph.node.extend(nodes)
    else:
        listed = {i.name for i in graph.input}
        for t in graph.initializer:
            if t.name not in listed:
                graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _list_initializers_as_inputs(sub, body=True)

