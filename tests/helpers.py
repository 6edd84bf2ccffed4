"""Tiny models and references shared by the rule tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import exprune_onnx

NEG_INF = float("-inf")


def init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def make_model(nodes, inputs, outputs, initializers=(), opset=17, ir_version=8, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = ir_version
    _fill_output_shapes(model)
    onnx.checker.check_model(model)
    return model


def _fill_output_shapes(model: onnx.ModelProto) -> None:
    """Outputs declared without a shape get the inferred one (the checker wants a shape)."""
    if all(o.type.tensor_type.HasField("shape") for o in model.graph.output):
        return
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in known:
            out.type.CopyFrom(known[out.name].type)


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def node_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def run_plain(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_exprune(model: onnx.ModelProto, feeds: dict, threads: int | None = None) -> list[np.ndarray]:
    return exprune_onnx.inference_session(model, optimize=False, threads=threads).run(None, feeds)


def assert_close(ref: np.ndarray, got: np.ndarray, rel: float = 1e-4) -> None:
    """Max error relative to the output's range, as the issue states the tolerance."""
    assert ref.shape == got.shape
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(ref.astype(np.float64) - got).max())
    assert err <= rel * scale, f"max abs error {err} exceeds {rel} x range {scale}"


def assert_equivalent(original, optimized, make_feeds, draws: int = 3) -> None:
    for seed in range(draws):
        feeds = make_feeds(np.random.default_rng(100 + seed))
        for ref, got in zip(run_plain(original, feeds), run_exprune(optimized, feeds)):
            assert_close(ref, got)


def normal_feeds(model: onnx.ModelProto):
    """A feeds maker for assert_equivalent: standard normal inputs, symbolic dims as 3."""
    def make(rng):
        feeds = {}
        for v in model.graph.input:
            dims = [d.dim_value or 3 for d in v.type.tensor_type.shape.dim]
            feeds[v.name] = rng.normal(size=dims).astype(np.float32)
        return feeds

    return make


def expose(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy with extra float intermediates as graph outputs (to read the partial sums)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name in names:
        out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return out


def conv_reference(x, w, strides, pads, dilations):
    """Plain numpy Conv (group 1, 1-D or 2-D), for full-computation references."""
    spatial = w.ndim - 2
    pad_width = [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)]
    xp = np.pad(x.astype(np.float64), pad_width)
    out_dims = [
        (xp.shape[2 + i] - dilations[i] * (w.shape[2 + i] - 1) - 1) // strides[i] + 1 for i in range(spatial)
    ]
    y = np.zeros((x.shape[0], w.shape[0], *out_dims))
    for taps in np.ndindex(*w.shape[2:]):
        index = [slice(None), slice(None)]
        for i, t in enumerate(taps):
            start = t * dilations[i]
            index.append(slice(start, start + strides[i] * (out_dims[i] - 1) + 1, strides[i]))
        patch = xp[tuple(index)]
        y += np.einsum("nc...,oc->no...", patch, w[(slice(None), slice(None), *taps)])
    return y


def threshold_of(optimized: onnx.ModelProto) -> dict:
    """Attributes of the (single) early-exit node."""
    node = next(n for n in optimized.graph.node if n.domain == exprune_onnx.DOMAIN)
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def onnx_pads(in_sizes, kernel, strides, dilations, pads, auto_pad):
    """(begin, end) pads per axis and the output sizes, following the ONNX Conv spec."""
    begins, ends, outs = [], [], []
    r = len(in_sizes)
    for d, size in enumerate(in_sizes):
        span = (kernel[d] - 1) * dilations[d] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // strides[d])
            total = max(0, (out - 1) * strides[d] + span - size)
            small, big = total // 2, total - total // 2
            b, e = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        elif auto_pad == "VALID":
            b = e = 0
            out = (size - span) // strides[d] + 1
        else:
            b, e = pads[d], pads[r + d]
            out = (size + b + e - span) // strides[d] + 1
        begins.append(b)
        ends.append(e)
        outs.append(out)
    return begins, ends, outs


OP_INPUTS = ("partial", "x", "w_tail", "bias", "residual", "partial_sq", "w_pos_sum", "w_pos_norm")
_OP_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


def single_op_model(op, arrays, attrs, *, name, stats=False, min_inputs=0) -> onnx.ModelProto:
    """One early-exit node whose inputs are graph inputs carrying ``arrays``.

    An absent optional input before a present one is the empty name; ``min_inputs``
    pads with empty names to that count (an optional input skipped the ONNX way).
    """
    present = [n for n in OP_INPUTS if arrays.get(n) is not None]
    last = max(max(OP_INPUTS.index(n) for n in present) + 1, min_inputs)
    node_inputs = [n if arrays.get(n) is not None else "" for n in OP_INPUTS[:last]]
    outputs = ["y", "stats"] if stats else ["y"]
    node = helper.make_node(op, node_inputs, outputs, name=name, domain=exprune_onnx.DOMAIN, **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, _OP_TYPES[arrays[n].dtype], list(arrays[n].shape))
                    for n in present]
    rank = arrays["partial"].ndim
    if op == exprune_onnx.ops.ARGMAX_HEAD:  # the class index: the class axis dropped unless keepdims
        y = helper.make_tensor_value_info("y", TensorProto.INT64, [None] * (rank - 1 + attrs.get("keepdims", 0)))
    else:
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * rank)
    graph_outputs = [y]
    if stats:
        graph_outputs.append(helper.make_tensor_value_info("stats", TensorProto.INT64, [2]))
    graph = helper.make_graph([node], "single_op", graph_inputs, graph_outputs)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(exprune_onnx.DOMAIN, exprune_onnx.VERSION)],
        ir_version=8,
    )


def run_single_op(op, arrays, attrs, *, name, stats=False, threads=None, min_inputs=0) -> list[np.ndarray]:
    model = single_op_model(op, arrays, attrs, name=name, stats=stats, min_inputs=min_inputs)
    sess = exprune_onnx.inference_session(model, optimize=False, threads=threads)
    return sess.run(None, {n: a for n, a in arrays.items() if a is not None})


def shuffled_units(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """``x`` (last axis in the op's unit order: head 0..k-1, then the tail) with its units
    shuffled, and the ``tail_units`` attribute that names where the tail now lies."""
    perm = rng.permutation(x.shape[-1])
    shuffled = np.empty_like(x)
    shuffled[..., perm] = x
    return shuffled, [int(u) for u in perm[k:]]
