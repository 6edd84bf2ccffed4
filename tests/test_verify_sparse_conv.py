"""verify on ExPruneSparseConv (exprune_onnx/verify/sparse_conv.py): it traces the op back to
its Conv and fused group, accepts the compiler's rewrite and catches each kind of tampering."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from sparse_conv_models import (
    SPARSE,
    residual_block,
    sparse_node,
    text_cnn,
)

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.io.data import random_dataset
from exprune_onnx.runtime import cpu_has_tiles
from exprune_onnx.verify import verify


def test_verify_accepts_and_catches_tampering():
    rng = np.random.default_rng(8)
    model = residual_block(rng)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    data = random_dataset(model, 4, 0)
    rows = verify(model, res.model, data)
    assert all(r.ok for r in rows), rows
    # No early exit: the weights row names only what there is ("0 layer(s): head, tail ..." read
    # as if nothing had been checked, a trial's).
    assert rows[1].detail.startswith("1 sparse-input layer(s) carry the original's weight and bias"), rows[1]
    # It skips inputs, it prunes no output.
    assert "of sparse inputs skipped" in rows[3].detail and "outputs pruned" not in rows[3].detail
    # 0% skipped on a CPU with tiles is their dense path, not a fault: said where it may be so.
    assert ("AMX tiles skips none" in rows[3].detail) == cpu_has_tiles()
    for tamper, words in (("weight", "weight"), ("bias", "bias"), ("bias-type", "the original's (one per output "
                                                                              "channel) float32"), ("stride", "attribute"),
                          ("activation", "activation"), ("residual", "residual"),
                          ("unread", "attribute(s) alpha, which ExPruneSparseConv does not take")):
        bad = onnx.ModelProto()
        bad.CopyFrom(res.model)
        node = sparse_node(bad)
        if tamper == "weight":
            w = next(t for t in bad.graph.initializer if t.name == node.input[1])
            v = numpy_helper.to_array(w).copy()
            v[1, 1, 1, 0] += 0.5
            w.CopyFrom(numpy_helper.from_array(v, w.name))
        elif tamper == "bias":
            b = next(t for t in bad.graph.initializer if t.name == node.input[2])
            b.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(b) + 1, b.name))
        elif tamper == "bias-type":
            b = next(t for t in bad.graph.initializer if t.name == node.input[2])
            b.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(b).astype(np.float64), b.name))
        elif tamper == "stride":
            node.attribute.append(helper.make_attribute("strides", [2, 2]))
        elif tamper == "unread":
            node.attribute.append(helper.make_attribute("alpha", 0.5))
        elif tamper == "activation":
            keep = [a for a in node.attribute if a.name != "activation"]
            del node.attribute[:]
            node.attribute.extend(keep)
        else:
            del node.input[3]
        rows = verify(model, bad, data)
        failed = [r for r in rows if not r.ok and r.check in ("structure", "weights")]
        assert failed and any(words in r.detail for r in failed), (tamper, rows)


@pytest.mark.parametrize("opset", [9, 10, 11, 13])
def test_verify_reads_the_original_at_its_own_opset(opset):
    """Before opset 11 Clip's bounds are attributes, and before 13 Unsqueeze's axes: verify
    reads the original group (Conv -> BN -> Clip(0, 6)) and a weight Unsqueeze makes at
    the model's opset, as the compiler does (it read both at 13 and failed them)."""
    from helpers import conv_model

    act = "clip_attrs" if opset < 11 else "clip_inputs"
    model = conv_model(act=act, opset=opset, bn=False)  # a BatchNorm folded into W would hide the Unsqueeze
    if opset < 13:  # the weight as a 2-D matrix unsqueezed, as a 1x1 conv's sometimes is
        w = next(t for t in model.graph.initializer if t.name == "W")
        flat = numpy_helper.to_array(w)[:, :, 1, 1].copy()
        w.CopyFrom(numpy_helper.from_array(flat, "W2d"))
        model.graph.node.insert(0, helper.make_node("Unsqueeze", ["W2d"], ["W"], axes=[2, 3]))
        conv_node = next(n for n in model.graph.node if n.op_type == "Conv")
        conv_node.ClearField("attribute")
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert [s.layer for s in res.sparse] == ["conv"]
    rows = verify(model, res.model, random_dataset(model, 4, 0))
    assert all(r.ok for r in rows), rows


@pytest.mark.parametrize("tamper,words", [("weight", "weight"), ("stride", "attribute strides"),
                                          ("kernel", "kernel_shape")])
def test_verify_traces_1d_convs(tamper, words):
    """A Conv1d's op is traced back to it as a 2-D one's is (weight [C, K, M], 1-D attributes)."""
    model = text_cnn(np.random.default_rng(31))
    res = exprune_onnx.optimize_model(model, **SPARSE)
    data = random_dataset(model, 4, 0)
    assert all(r.ok for r in verify(model, res.model, data))
    bad = onnx.ModelProto()
    bad.CopyFrom(res.model)
    node = [n for n in bad.graph.node if n.op_type == ops.SPARSE_CONV][-1]
    if tamper == "weight":
        w = next(t for t in bad.graph.initializer if t.name == node.input[1])
        v = numpy_helper.to_array(w).copy()
        v[3, 1, 2] += 0.5
        w.CopyFrom(numpy_helper.from_array(v, w.name))
    else:
        name, value = ("strides", [1]) if tamper == "stride" else ("kernel_shape", [1, 3])
        keep = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(keep + [helper.make_attribute(name, value)])
    failed = [r for r in verify(model, bad, data) if not r.ok and r.check in ("structure", "weights")]
    assert failed and any(words in r.detail for r in failed), failed


def test_a_tampered_weight_of_an_unnamed_conv_is_reported_not_raised():
    """The structure check detaches the original's nodes from their outputs; the layer's name
    is taken before (an unnamed Conv's, from its output, raised IndexError in the weights row)."""
    model = text_cnn(np.random.default_rng(32))
    for node in model.graph.node:
        node.name = ""
    res = exprune_onnx.optimize_model(model, **SPARSE)
    bad = onnx.ModelProto()
    bad.CopyFrom(res.model)
    node = next(n for n in bad.graph.node if n.op_type == ops.SPARSE_CONV)
    w = next(t for t in bad.graph.initializer if t.name == node.input[1])
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.5, w.name))
    rows = verify(model, bad, random_dataset(model, 4, 0))
    weights = next(r for r in rows if r.check == "weights")
    assert not weights.ok and "layer 'Conv:n1': the weight" in weights.detail, weights  # BN folded: it writes n1


def test_a_caffe2_affine_of_unsqueezed_parameters_goes_with_its_group():
    """Caffe2 writes BatchNorm's scale and shift as Mul and Add of Unsqueezed parameters:
    folded into the op, the Unsqueezes went with the group, and verify's structure row said
    "missing Unsqueeze x56" of a correct Inception v2 (a trial's)."""
    rng = np.random.default_rng(9)

    def init(name, value):
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    inits = [init("w1", rng.normal(0, 0.3, (16, 4, 3, 3))), init("w2", rng.normal(0, 0.1, (16, 16, 3, 3))),
             init("s", rng.uniform(0.8, 1.2, 16)), init("b", rng.normal(0, 0.05, 16))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1] * 4), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c"], pads=[1] * 4, name="conv2"),
             helper.make_node("Unsqueeze", ["s"], ["su"], axes=[1, 2]), helper.make_node("Mul", ["c", "su"], ["m"]),
             helper.make_node("Unsqueeze", ["b"], ["bu"], axes=[1, 2]), helper.make_node("Add", ["m", "bu"], ["t"]),
             helper.make_node("Relu", ["t"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert [n.op_type for n in res.model.graph.node] == ["Conv", "Relu", ops.SPARSE_CONV]
    rows = verify(model, res.model, random_dataset(model, 4, 0))
    assert all(r.ok for r in rows), rows
