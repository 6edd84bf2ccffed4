"""The output shapes of this compiler's own ops, which onnx's shape inference cannot see.

An optimised model given again (to `inspect`, `optimize`, `evaluate`) had its shapes
stop at the first ai.exprune op: every Conv/Gemm/MatMul after it went uncounted in the
FLOPs, with advice (--input-shape) that could not help. Each op's output shape follows
from its inputs' (docs/custom_ops.md), so ``through_our_ops`` gives them and infers again.
The same goes for the ai.onnx.ml Scaler and Normalizer, float outputs of their input's
shape (an sklearn Pipeline's StandardScaler is a Scaler before its MLP), which onnx's
inference leaves without one, and for onnxruntime's FusedConv and FusedGemm in a model saved after its
graph optimisations: shapes stopped there, and a Conv -> Add -> Relu after a MaxPool of
one was refused, its residual "not provably of the output's shape".
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .. import ops

# ai.onnx.ml ops whose output is float and has their input's shape (onnx gives them none).
_ML_SAME_SHAPE = {"Scaler", "Normalizer"}


def _known(graph: onnx.GraphProto) -> dict[str, list]:
    """Tensor name -> dims (ints, or names for symbolic ones) where the rank is known."""
    dims = {t.name: list(t.dims) for t in graph.initializer}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.tensor_type.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                             for d in vi.type.tensor_type.shape.dim]
    return dims


def _conv_size(size, kernel: int, stride: int, dilation: int, begin: int, end: int, auto_pad: str):
    if not isinstance(size, int) or not size:
        return None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return -(-size // stride)
    if auto_pad == "VALID":
        begin = end = 0
    return (size + begin + end - dilation * (kernel - 1) - 1) // stride + 1


def _sparse_conv_shape(node: onnx.NodeProto, x: list, w: list) -> list | None:
    """ExPruneSparseConv's output: w is [C, *K, M/group]."""
    spatial = len(x) - 2
    if spatial < 1 or len(w) != 2 + spatial:
        return None
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return _conv_shape(node, x, w[1:1 + spatial], w[-1] * group if isinstance(w[-1], int) else None)


def _fused_conv_shape(node: onnx.NodeProto, x: list, w: list) -> list | None:
    """onnxruntime's FusedConv (a Conv and its activation): W is Conv's [M, C/group, *K]."""
    if len(x) < 3 or len(w) != len(x):
        return None
    return _conv_shape(node, x, w[2:], w[0] if isinstance(w[0], int) else None)


def _fused_gemm_shape(node: onnx.NodeProto, a: list, b: list) -> list | None:
    """onnxruntime's FusedGemm (a Gemm and its activation): [M, N] of A and B, transposed or not."""
    if len(a) != 2 or len(b) != 2:
        return None
    attrs = {x.name: x.i for x in node.attribute if x.name in ("transA", "transB")}
    return [a[1] if attrs.get("transA") else a[0], b[0] if attrs.get("transB") else b[1]]


def _conv_shape(node: onnx.NodeProto, x: list, kernel: list, outs: int | None) -> list:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    spatial = len(x) - 2
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    sizes = [_conv_size(x[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[spatial + i], auto_pad)
             for i in range(spatial)]
    return [x[0], outs, *sizes]


def _output_shape(node: onnx.NodeProto, dims: dict, types: dict) -> tuple[int, list] | None:
    """(element type, dims) of ``node``'s first output, or None when its inputs' are unknown."""
    first = dims.get(node.input[0]) if node.input else None
    if first is None:
        return None
    if node.domain == "com.microsoft":  # FusedConv, FusedGemm: their input's type
        weight = dims.get(node.input[1]) if len(node.input) > 1 else None
        fused_shape = _fused_conv_shape if node.op_type == "FusedConv" else _fused_gemm_shape
        shape = fused_shape(node, first, weight) if weight is not None else None
        return None if shape is None or node.input[0] not in types else (types[node.input[0]], shape)
    if node.domain == "ai.onnx.ml":
        return TensorProto.FLOAT, first
    if node.op_type in (ops.DENSE_RELU, ops.CONV_RELU):
        return TensorProto.FLOAT, first  # the partial product has every output already
    if node.op_type == ops.ARGMAX_HEAD:
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 0)
        return TensorProto.INT64, first[:-1] + ([1] if keep else [])
    weight = dims.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None:
        return None
    if node.op_type == ops.SPARSE_MATMUL:
        return TensorProto.FLOAT, first[:-1] + weight[-1:]
    if node.op_type == ops.SPARSE_CONV:
        residual = dims.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        shape = residual or _sparse_conv_shape(node, first, weight)
        return None if shape is None else (TensorProto.FLOAT, shape)
    return None


def missing(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Shapes for the first outputs of our ops (and ``_ML_SAME_SHAPE``'s, and onnxruntime's
    FusedConv and FusedGemm) that have none yet and whose inputs have."""
    dims = _known(graph)
    types = _types(graph)
    found = []
    for node in graph.node:
        if not _shaped_here(node) or not node.output or node.output[0] in dims:
            continue
        shape = _output_shape(node, dims, types)
        if shape is not None:
            found.append(helper.make_tensor_value_info(node.output[0], *shape))
    return found


def _types(graph: onnx.GraphProto) -> dict[str, int]:
    """Tensor name -> element type, where known."""
    found = {t.name: t.data_type for t in graph.initializer}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.tensor_type.elem_type:
            found[vi.name] = vi.type.tensor_type.elem_type
    return found


def _shaped_here(node: onnx.NodeProto) -> bool:
    return (node.domain == ops.DOMAIN or (node.domain == "ai.onnx.ml" and node.op_type in _ML_SAME_SHAPE)
            or (node.domain == "com.microsoft" and node.op_type in ("FusedConv", "FusedGemm")))


def through_our_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (shapes inferred) with its ai.exprune ops' output shapes added and the
    shapes after them inferred, op after op (each pass reaches the next of our ops), on a
    copy whose weights are dims only: one inference per op over a model's weights took
    seconds."""
    from ..io.bigmodel import SHAPES_STUB_BYTES, skeleton

    passes = sum(_shaped_here(n) for n in model.graph.node)
    if not passes or not missing(model.graph):
        return model
    light = skeleton(model, stub_from=SHAPES_STUB_BYTES)
    for _ in range(passes):
        shapes = missing(light.graph)
        if not shapes:
            break
        light.graph.value_info.extend(shapes)
        try:
            light = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
        except Exception:  # shapes only refine what is counted and checked
            break
    found = {v.name: v for v in light.graph.value_info if v.type.tensor_type.HasField("shape")}
    # An entry onnx gave a type but no shape (after an op it cannot see) gives way.
    shapeless = [v for v in model.graph.value_info if v.name in found and not v.type.tensor_type.HasField("shape")]
    for v in shapeless:
        model.graph.value_info.remove(v)
    known = {v.name for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    model.graph.value_info.extend(v for v in found.values() if v.name not in known)
    return model


def open_value_info(out: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Replace ``out``'s value_info, inferred at the sizes it was compiled at, with one
    inferred at its own input dims (an open H stays open) and through our ops. Tools that
    read a tensor's type from the file and cannot see past our ops (onnxconverter-common's
    float16 conversion, quantize_dynamic, onnx.utils.extract_model) failed on a model of
    open H/W written with no entries at all. The original's own entries stay as declared."""
    from ..io.bigmodel import SHAPES_STUB_BYTES, skeleton

    _open_bodies(out, original)
    own = {v.name: v for v in original.graph.value_info}
    kept = [v for v in out.graph.value_info if own.get(v.name) == v]
    light = skeleton(out, stub_from=SHAPES_STUB_BYTES)
    del light.graph.value_info[:]
    light.graph.value_info.extend(kept)
    try:
        found = through_our_ops(onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True))
    except Exception:  # without entries onnxruntime still infers every shape itself
        # (pipeline.infer_shapes would also try onnxruntime's symbolic inference, which
        # knows none of our ops: seconds lost on every compile for nothing)
        found = onnx.ModelProto()
    skip = {v.name for v in [*kept, *out.graph.input, *out.graph.output]}
    fresh = [v for v in found.graph.value_info if v.name not in skip and v.type.tensor_type.elem_type]
    for v in fresh:  # onnx's names for dims it could not compute relate nothing: left unnamed
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param.startswith("unk__"):
                d.ClearField("dim_param")
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept + fresh)


def _open_bodies(out: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """If/Loop/Scan bodies as the original declared them: their value_info and outputs had
    the dims inferred at the compiled sizes, and onnxruntime held an If branch's output to
    [1, 32, 15, 15] where the model ran at 9x11. An entry the original did not declare is
    dropped; an output it did not shape keeps its type alone."""
    from ..io.modelio import all_graphs

    declared = {}
    for g in list(all_graphs(original.graph))[1:]:
        declared.update((v.name, v) for v in [*g.value_info, *g.output])
    for g in list(all_graphs(out.graph))[1:]:
        kept = [v for v in g.value_info if declared.get(v.name) == v]
        del g.value_info[:]
        g.value_info.extend(kept)
        for v in g.output:
            if v.name in declared:
                v.type.CopyFrom(declared[v.name].type)
            elif v.type.HasField("tensor_type"):
                v.type.tensor_type.ClearField("shape")
