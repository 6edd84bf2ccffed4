"""Models over 2 GB: protobuf cannot serialize them, so two passes work around it.

Shape inference serializes the model, and onnx-graphsurgeon's export copies each
initializer through serialization; both fail for a model whose weights pass 2 GiB (an
embedding table, a wide classifier). Shapes only need the weights' dims, so inference
runs on a skeleton whose large tensors carry no data, and the imported graph's large
constants point back at the model's tensors; export runs with large constants swapped
for such stubs and copies their data into the exported tensors afterwards. Models
below 1 GiB of weights take neither path.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

# A tensor this large is handled apart; a model with this much in them is "big".
LARGE_TENSOR_BYTES = 1 << 26
BIG_MODEL_BYTES = 1 << 30
# For shape inference alone (skeleton's stub_from): initializers this size or more are
# weights, kept as dims; smaller ones may be shapes or axes, which inference reads.
SHAPES_STUB_BYTES = 4096
_HALF_BYTE = frozenset(getattr(onnx.TensorProto, t) for t in ("INT4", "UINT4", "FLOAT4E2M1")
                       if hasattr(onnx.TensorProto, t))


def tensor_nbytes(t: onnx.TensorProto) -> int:
    """The tensor's size from its dims and type, without touching (copying) its data."""
    return elements_nbytes(math.prod(t.dims), t.data_type)


def elements_nbytes(count: int, data_type: int) -> int:
    """Bytes of ``count`` elements of an ONNX element type (4-bit types two to a byte);
    0 for strings, whose size the type does not give."""
    if data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return 0
    if data_type in _HALF_BYTE:
        return (count + 1) // 2
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except Exception:  # a type numpy has no name for: assume the widest
        itemsize = 8
    return count * itemsize


def model_bytes(model: onnx.ModelProto) -> int:
    """Serialized size, or the weights' size where protobuf cannot count (over 2 GiB)."""
    weights = sum(tensor_nbytes(t) for t in model.graph.initializer)
    if weights < BIG_MODEL_BYTES:
        return model.ByteSize()
    return weights


def serializable(model: onnx.ModelProto) -> bool:
    """Whether protobuf can serialize the model (for onnxruntime from memory): under 2 GiB."""
    return sum(tensor_nbytes(t) for t in model.graph.initializer) < (1 << 31) - (1 << 24)


def _is_big(model: onnx.ModelProto) -> bool:
    return sum(tensor_nbytes(t) for t in model.graph.initializer) >= BIG_MODEL_BYTES


def _stub(name: str, dims, data_type: int) -> onnx.TensorProto:
    return onnx.TensorProto(name=name, dims=list(dims), data_type=data_type)


def skeleton(model: onnx.ModelProto, stub_from: int | None = None) -> onnx.ModelProto | None:
    """``model`` with its large initializers as dims-only stubs, or None when it is not big.
    With ``stub_from`` (bytes), always a copy, with every initializer of that size or
    more a stub: a light copy for shape inference alone."""
    if stub_from is None and not _is_big(model):
        return None
    limit = LARGE_TENSOR_BYTES if stub_from is None else stub_from
    out = onnx.ModelProto(ir_version=model.ir_version)
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    g, src = out.graph, model.graph
    g.name = src.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(g, field).extend(getattr(src, field))
    for t in src.initializer:
        g.initializer.append(_stub(t.name, t.dims, t.data_type) if tensor_nbytes(t) >= limit else t)
    return out


def import_graph(model: onnx.ModelProto, infer) -> gs.Graph:
    """The graph of ``model`` with the shapes ``infer`` finds.

    A big model is inferred as its skeleton, and the graph's large constants then point
    at the model's own tensors: nothing over 2 GB is serialized or copied.
    """
    stub = skeleton(model)
    if stub is None:
        return gs.import_onnx(infer(model))
    graph = gs.import_onnx(infer(stub))
    large = {t.name: t for t in model.graph.initializer if tensor_nbytes(t) >= LARGE_TENSOR_BYTES}
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant) and t.name in large:
            t._values = LazyValues(large[t.name])
    return graph


def export(graph: gs.Graph, **kwargs) -> onnx.ModelProto:
    """``gs.export_onnx`` that also copes with constants too large to serialize."""
    # Sparse initializers are exported as they are (their own message type, rarely large).
    large = [t for t in graph.tensors().values()
             if isinstance(t, gs.Constant) and not isinstance(t._values, SparseValues)
             and t._values.nbytes >= LARGE_TENSOR_BYTES]
    if sum(t._values.nbytes for t in large) < BIG_MODEL_BYTES:
        return gs.export_onnx(graph, **kwargs)
    held = {t.name: t._values for t in large}
    for t in large:
        lazy = isinstance(t._values, LazyValues)
        data_type = t._values.tensor.data_type if lazy else onnx.helper.np_dtype_to_tensor_dtype(t._values.dtype)
        t._values = LazyValues(_stub(t.name, t.shape, data_type))
    try:
        out = gs.export_onnx(graph, **kwargs)
    finally:
        for t in large:
            t._values = held[t.name]
    for tensor in out.graph.initializer:
        values = held.get(tensor.name)
        if values is None:
            continue
        if isinstance(values, LazyValues):
            name = tensor.name
            tensor.CopyFrom(values.tensor)
            tensor.name = name
        else:
            # raw_data is little-endian whatever the machine.
            tensor.raw_data = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    return out
