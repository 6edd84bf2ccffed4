"""Equivalence-preserving clean-ups that run before matching.

* ``Constant`` nodes become initializers (Paddle2ONNX and some tf2onnx exports
  keep every weight in a Constant node).
* ``Conv | Gemm | MatMul [-> Add(bias)] -> BatchNormalization`` with constant
  parameters is folded into the weights and bias (PyTorch exports BatchNorm in eval
  mode as its own node; ResNet-style blocks always have it).
* ``Max(x, 0)`` with a constant float zero is a ``Relu`` (the dynamo exporter writes
  ``torch.clamp(x, min=0)`` so).
* ``Gemm | MatMul [-> Add] -> Reshape -> Relu`` becomes ``... -> Relu -> Reshape``: an
  activation applies element by element, so it commutes with a Reshape, and onnxsim
  writes a Linear on 3-D input as Reshape -> Gemm -> Reshape, which hid the Relu from
  the layer.

Both walk every If/Loop/Scan body too. New tensors get new names: a weight shared
with another node is never changed in place. Sparse initializers become dense ones
first (``dense_initializers``): graphsurgeon would read them as float64 zeros.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .graphutil import all_graphs, cleanup, const_value, is_graph_output, model_names, opset_of, unique_name


def dense_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy whose outer graph's sparse initializers are ordinary ones."""
    if not model.graph.sparse_initializer:
        return model
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for sparse in out.graph.sparse_initializer:
        dims = list(sparse.dims)
        values = numpy_helper.to_array(sparse.values).reshape(-1)
        index = numpy_helper.to_array(sparse.indices)
        if index.ndim == 2:  # one row of coordinates per value, not linear positions
            index = np.ravel_multi_index(tuple(index.T), dims)
        dense = np.zeros(math.prod(dims), values.dtype)
        dense[index.reshape(-1)] = values
        out.graph.initializer.append(numpy_helper.from_array(dense.reshape(dims), sparse.values.name))
    del out.graph.sparse_initializer[:]
    return out


def constants_to_initializers(graph: gs.Graph) -> int:
    count = 0
    for g in all_graphs(graph):
        for node in g.nodes:
            if node.op != "Constant" or len(node.outputs) != 1:
                continue
            out = node.outputs[0]
            if is_graph_output(out, g) or not isinstance(out, gs.Variable):
                continue
            value = const_value(out, opset_of(g, graph))
            if value is None:
                continue
            node.outputs.clear()
            out.to_constant(np.asarray(value))
            count += 1
    if count:
        cleanup(graph)
    return count


def canonicalize(graph: gs.Graph) -> tuple[int, int]:
    """Every clean-up above, in place, as the compiler and verify both see the original;
    returns the Constants made initializers and the BatchNorms folded."""
    folded_c = constants_to_initializers(graph)
    max_zero_to_relu(graph)
    relu_before_reshape(graph)
    return folded_c, fold_batchnorm(graph)


def max_zero_to_relu(graph: gs.Graph) -> int:
    count = 0
    for g in all_graphs(graph):
        for node in g.nodes:
            if node.op != "Max" or (node.domain or "") not in ("", "ai.onnx") or len(node.inputs) != 2:
                continue
            zero = [t for t in node.inputs if isinstance(t, gs.Constant)]
            live = [t for t in node.inputs if not isinstance(t, gs.Constant)]
            if len(zero) != 1 or len(live) != 1:
                continue
            value = zero[0].values
            # A zero of more axes than x would broadcast x up to them: not the same shape.
            rank = len(live[0].shape) if live[0].shape is not None else 1
            if value.size != 1 or value.dtype.kind != "f" or value.reshape(-1)[0] != 0 or value.ndim > rank:
                continue
            node.op, node.inputs, node.attrs = "Relu", [live[0]], {}
            count += 1
    if count:
        cleanup(graph)
    return count


def relu_before_reshape(graph: gs.Graph) -> int:
    """Moves a Relu above the Reshape it reads, where the Reshape's input comes from a Gemm
    or MatMul (or its bias Add) and the Reshape feeds the Relu alone: the Relu keeps its
    output's name, so its readers and the graph's outputs see the same tensor."""
    count = 0
    names = model_names(graph)
    for g in all_graphs(graph):
        for relu in list(g.nodes):
            if relu.op != "Relu" or (relu.domain or "") not in ("", "ai.onnx") or not relu.inputs:
                continue
            shaped = relu.inputs[0]
            reshape = shaped.inputs[0] if len(shaped.inputs) == 1 else None
            if reshape is None or reshape.op != "Reshape" or (reshape.domain or "") not in ("", "ai.onnx") \
                    or len(shaped.outputs) != 1 or is_graph_output(shaped, g) or not reshape.inputs:
                continue
            source = reshape.inputs[0]
            maker = source.inputs[0] if len(source.inputs) == 1 else None
            if maker is None or maker.op not in ("Gemm", "MatMul", "Add") or len(source.outputs) != 1 \
                    or is_graph_output(source, g):
                continue
            activated = gs.Variable(unique_name(f"{source.name}_relu", names), dtype=source.dtype, shape=source.shape)
            out, rest = relu.outputs[0], list(reshape.inputs[1:])
            relu.outputs.clear()
            reshape.outputs.clear()
            relu.inputs.clear()
            reshape.inputs.clear()
            relu.inputs.append(source)
            relu.outputs.append(activated)
            reshape.inputs.extend([activated, *rest])
            reshape.outputs.append(out)
            count += 1
    if count:
        cleanup(graph)
    return count


def fold_batchnorm(graph: gs.Graph) -> int:
    names = model_names(graph)
    count = 0
    for g in all_graphs(graph):
        opset = opset_of(g, graph)
        for bn in [n for n in g.nodes if n.op == "BatchNormalization"]:
            if _fold_one(g, bn, opset, names):
                count += 1
    if count:
        cleanup(graph)
    return count


def _bn_scale_shift(bn: gs.Node, opset: int):
    if bn.attrs.get("training_mode", 0):
        return None
    if any(o.outputs for o in bn.outputs[1:]):
        return None
    params = [const_value(t, opset) for t in bn.inputs[1:5]]
    if any(p is None for p in params):
        return None
    scale, beta, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)
    if not scale.size == beta.size == mean.size == var.size:
        return None  # not per-channel parameters: onnxruntime will refuse the model
    eps = float(bn.attrs.get("epsilon", 1e-5))
    with np.errstate(all="ignore"):  # (numpy's warnings went to the user's screen)
        s = scale / np.sqrt(var + eps)
        shift = beta - mean * s
    if not (np.isfinite(s).all() and np.isfinite(shift).all()):
        return None  # a variance below -eps, or overflow: left as the model has it, NaN and all
    return s, shift


def _sole_use(t: gs.Tensor, g: gs.Graph) -> bool:
    return len(t.outputs) == 1 and not is_graph_output(t, g)


def _fold_one(g: gs.Graph, bn: gs.Node, opset: int, names: set[str]) -> bool:
    x = bn.inputs[0]
    if not x.inputs or not _sole_use(x, g):
        return False
    folded = _bn_scale_shift(bn, opset)
    if folded is None:
        return False
    s, shift = folded
    prod = x.inputs[0]
    if prod.op == "Conv":
        producer = _fold_conv(prod, s, shift, opset, names)
    elif prod.op == "Gemm":
        producer = _fold_gemm(prod, s, shift, opset, names)
    elif prod.op in ("MatMul", "Add"):
        producer = _fold_matmul(g, prod, s, shift, opset, names)
    else:
        producer = None
    if producer is None:
        return False
    producer.outputs[producer.outputs.index(x)] = bn.outputs[0]
    bn.outputs.clear()
    return True


def _replace_inputs(node: gs.Node, start: int, new: list) -> None:
    # graphsurgeon's input lists keep consumer links in sync but take no slices.
    while len(node.inputs) > start:
        node.inputs.pop()
    node.inputs.extend(new)


def _new_const(names: set[str], base: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(unique_name(base, names), np.ascontiguousarray(value.astype(np.float32)))


def _fold_conv(conv: gs.Node, s, shift, opset: int, names):
    w = const_value(conv.inputs[1], opset)
    if w is None or w.dtype != np.float32 or w.ndim < 3 or w.shape[0] != s.size:
        return None
    b = const_value(conv.inputs[2], opset) if len(conv.inputs) > 2 else np.zeros(w.shape[0])
    if b is None or b.size != w.shape[0]:
        return None
    b = b.reshape(-1)
    w2 = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    b2 = b * s + shift
    base = conv.inputs[1].name
    _replace_inputs(conv, 1, [_new_const(names, base + "_bnfold", w2), _new_const(names, base + "_bnfold_bias", b2)])
    return conv


def _fold_gemm(gemm: gs.Node, s, shift, opset: int, names):
    if gemm.attrs.get("transA", 0):
        return None
    w = const_value(gemm.inputs[1], opset)
    if w is None or w.dtype != np.float32 or w.ndim != 2:
        return None
    trans_b = bool(gemm.attrs.get("transB", 0))
    out_dim = w.shape[0] if trans_b else w.shape[1]
    if out_dim != s.size:
        return None
    beta = float(gemm.attrs.get("beta", 1.0))
    c = const_value(gemm.inputs[2], opset) if len(gemm.inputs) > 2 and gemm.inputs[2].name else np.zeros(1)
    if c is None or c.size not in (1, out_dim):
        return None
    c = np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (out_dim,)) * beta
    w2 = w * (s[:, None] if trans_b else s[None, :])
    base = gemm.inputs[1].name
    bias = _new_const(names, base + "_bnfold_bias", c * s + shift)
    _replace_inputs(gemm, 1, [_new_const(names, base + "_bnfold", w2), bias])
    gemm.attrs["beta"] = 1.0
    return gemm


def _fold_matmul(g: gs.Graph, prod: gs.Node, s, shift, opset: int, names):
    bias = np.zeros(s.size)
    if prod.op == "Add":
        mm_out, b_t = _matmul_and_const(prod, opset)
        if mm_out is None or not _sole_use(mm_out, g):
            return None
        b = const_value(b_t, opset)
        if b.size not in (1, s.size):
            return None
        bias = np.broadcast_to(b.reshape(-1), (s.size,))
        mm = mm_out.inputs[0]
    else:
        mm = prod
    # BatchNormalization normalises axis 1, which is the feature axis only for 2-D.
    out = mm.outputs[0]
    if out.shape is None or len(out.shape) != 2:
        return None
    w = const_value(mm.inputs[1], opset)
    if w is None or w.dtype != np.float32 or w.ndim != 2 or w.shape[1] != s.size:
        return None
    base = mm.inputs[1].name
    mm.inputs[1] = _new_const(names, base + "_bnfold", w * s[None, :])
    new_bias = _new_const(names, base + "_bnfold_bias", bias * s + shift)
    if prod.op == "Add":
        _replace_inputs(prod, 0, [mm.outputs[0], new_bias])
        return prod
    # A bare MatMul gets an Add for the folded shift; that Add now produces ``out``.
    tmp = gs.Variable(unique_name(out.name + "_prebias", names), dtype=out.dtype, shape=out.shape)
    mm.outputs[0] = tmp
    add = gs.Node("Add", name=unique_name((mm.name or base) + "_bnfold_add", names),
                  inputs=[tmp, new_bias], outputs=[out])
    g.nodes.append(add)
    return add


def _matmul_and_const(add: gs.Node, opset: int):
    for i, t in enumerate(add.inputs):
        other = add.inputs[1 - i]
        if t.inputs and t.inputs[0].op == "MatMul" and const_value(other, opset) is not None:
            return t, other
    return None, None
