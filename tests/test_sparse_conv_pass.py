"""The pass that emits ExPruneSparseConv (exprune_onnx/passes/sparse_conv.py): a Conv reading a
ReLU's zeros, with the group after it fused. The op itself has its own tests (test_sparse_conv_op)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import NEG_INF, assert_close, init, make_model, node_types, run_exprune, run_plain, vi
from onnx import helper, numpy_helper
from sparse_conv_case import inputs_read

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.cli import main
from exprune_onnx.io.data import random_dataset
from exprune_onnx.passes.sparse_conv import repack
from exprune_onnx.runtime import cpu_has_tiles
from exprune_onnx.verify import verify

SPARSE = {"threshold": NEG_INF, "sparse_relu": "on", "min_units": 10**6}  # zero-input skipping alone


def weight(rng, m, c, k=3):
    return init_array(rng, (m, c, k, k), 1.0 / math.sqrt(c * k * k))


def init_array(rng, shape, scale):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def conv(name, x, w, y, b=None, **attrs):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], name=name, **attrs)


def stem(rng, c_out=8, clip=False):
    """x [N, 3, 10, 10] -> Conv 'c0' -> Relu | Clip(0, 6) -> 'r0' (the first conv reads the image)."""
    inits = [init("W0", weight(rng, c_out, 3)), init("b0", init_array(rng, c_out, 0.5))]
    nodes = [conv("c0", "x", "W0", "a0", "b0", pads=[1, 1, 1, 1])]
    if clip:
        inits += [init("lo", np.array(0.0, np.float32)), init("hi", np.array(6.0, np.float32))]
        nodes.append(helper.make_node("Clip", ["a0", "lo", "hi"], ["r0"], name="act0"))
    else:
        nodes.append(helper.make_node("Relu", ["a0"], ["r0"], name="act0"))
    return nodes, inits


def build(nodes, inits, opset=17):
    return make_model(nodes, [vi("x", ["N", 3, 10, 10])], [vi("y", None)], inits, opset=opset)


def relu_conv(rng, *, c1=8, m=6, k=3, stride=1, group=1, pool=False, clip=False, tail=True, bias=True):
    nodes, inits = stem(rng, c1, clip)
    src = "r0"
    if pool:
        nodes.append(helper.make_node("MaxPool", ["r0"], ["p0"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
        src = "p0"
    inits.append(init("W1", weight(rng, m, c1 // group, k)))
    if bias:
        inits.append(init("b1", init_array(rng, m, 0.5)))
    pad = k // 2
    out = "a1" if tail else "y"
    nodes.append(conv("c1", src, "W1", out, "b1" if bias else None, pads=[pad] * 4, strides=[stride] * 2,
                      group=group))
    if tail and clip:
        nodes.append(helper.make_node("Clip", ["a1", "lo", "hi"], ["y"], name="act1"))
    elif tail:
        nodes.append(helper.make_node("Relu", ["a1"], ["y"], name="act1"))
    return build(nodes, inits)


def residual_block(rng):
    """r0 -> Conv c1 -> BatchNormalization -> Add(r0) -> Relu: ResNet's second conv of a block."""
    nodes, inits = stem(rng, 8)
    inits += [init("W1", weight(rng, 8, 8)), init("s", init_array(rng, 8, 0.3) + 1), init("t", init_array(rng, 8, 0.3)),
              init("mu", init_array(rng, 8, 0.2)), init("var", np.abs(init_array(rng, 8, 1)) + 0.5)]
    nodes += [conv("c1", "r0", "W1", "a1", pads=[1, 1, 1, 1]),
              helper.make_node("BatchNormalization", ["a1", "s", "t", "mu", "var"], ["n1"], name="bn1"),
              helper.make_node("Add", ["n1", "r0"], ["s1"], name="join"),
              helper.make_node("Relu", ["s1"], ["y"], name="act1")]
    return build(nodes, inits)


def chain3(rng, n=16):
    """Three convs: c1 wide enough for an early-exit rewrite, c2 after it."""
    nodes, inits = stem(rng, n)
    inits += [init("W1", weight(rng, n, n)), init("W2", weight(rng, 5, n))]
    nodes += [conv("c1", "r0", "W1", "a1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a1"], ["r1"], name="act1"),
              conv("c2", "r1", "W2", "y", pads=[1, 1, 1, 1])]
    return build(nodes, inits)


def feeds(rng, n=2):
    return {"x": rng.standard_normal((n, 3, 10, 10)).astype(np.float32)}


def lowered(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each ExPruneSparseConv written back as standard ops from the op's stated
    semantics (docs/sparse_conv.md): unpacked weight, Conv, residual Add, Relu or Clip. Checks
    the compiler against the interface, independently of the kernel."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    nodes = []
    for node in out.graph.node:
        if node.op_type != ops.SPARSE_CONV:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = numpy_helper.to_array(inits[node.input[1]])
        group = attrs.get("group", 1)
        c, kh, kw, mg = w.shape
        cg = c // group
        big = w.reshape(group, cg, kh, kw, mg).transpose(0, 4, 1, 2, 3).reshape(group * mg, cg, kh, kw)
        out.graph.initializer.append(numpy_helper.from_array(big, node.name + "_W"))
        conv_attrs = {k: v for k, v in attrs.items() if k not in ("activation", "clip_max")}
        ins = [node.input[0], node.name + "_W"] + ([node.input[2]] if len(node.input) > 2 and node.input[2] else [])
        act = attrs.get("activation", b"none")
        last = node.output[0]
        t = node.name + "_conv"
        nodes.append(helper.make_node("Conv", ins, [t], **conv_attrs))
        if len(node.input) > 3:
            nodes.append(helper.make_node("Add", [t, node.input[3]], [t + "_res"]))
            t = t + "_res"
        if act in (b"relu", "relu"):
            cap = attrs.get("clip_max", math.inf)
            out.graph.initializer.extend([numpy_helper.from_array(np.array(0, np.float32), node.name + "_lo"),
                                          numpy_helper.from_array(np.array(cap, np.float32), node.name + "_hi")])
            nodes.append(helper.make_node("Clip", [t, node.name + "_lo", node.name + "_hi"], [last]))
        else:
            nodes.append(helper.make_node("Identity", [t], [last]))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    del out.opset_import[:]
    out.opset_import.extend(o for o in model.opset_import if o.domain != ops.DOMAIN)
    return out


def assert_same_outputs(original, optimized, rng, with_op=True):
    f = feeds(rng)
    want = run_plain(original, f)
    for ref, got in zip(want, run_plain(lowered(optimized), f)):
        assert_close(ref, got)
    if with_op:
        for ref, got in zip(want, run_exprune(optimized, f)):
            assert_close(ref, got)


def sparse_node(model):
    return next(n for n in model.graph.node if n.op_type == ops.SPARSE_CONV)


def attrs_of(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


CASES = {
    "relu": (dict(), ["Conv", "Relu", ops.SPARSE_CONV], ["Conv", "Relu"]),
    "clip6": (dict(clip=True), ["Conv", "Clip", ops.SPARSE_CONV], ["Conv", "Clip"]),
    "maxpool": (dict(pool=True), ["Conv", "Relu", "MaxPool", ops.SPARSE_CONV], ["Conv", "Relu"]),
    "stride2": (dict(stride=2), ["Conv", "Relu", ops.SPARSE_CONV], ["Conv", "Relu"]),
    "1x1": (dict(k=1, m=12), ["Conv", "Relu", ops.SPARSE_CONV], ["Conv", "Relu"]),
    "grouped": (dict(group=2, m=16), ["Conv", "Relu", ops.SPARSE_CONV], ["Conv", "Relu"]),
    "no-tail": (dict(tail=False), ["Conv", "Relu", ops.SPARSE_CONV], ["Conv"]),
    "no-bias": (dict(bias=False), ["Conv", "Relu", ops.SPARSE_CONV], ["Conv", "Relu"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conv_after_zeros_is_rewritten(name):
    kwargs, want_nodes, fused = CASES[name]
    rng = np.random.default_rng(len(name))
    model = relu_conv(rng, **kwargs)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert node_types(res.model) == want_nodes
    assert [(s.layer, s.op_types, s.after_relu) for s in res.sparse] == [("c1", fused, True)]
    node = sparse_node(res.model)
    a = attrs_of(node)
    assert a.get("activation", b"none") == (b"relu" if len(fused) > 1 else b"none")
    assert a.get("clip_max", math.inf) == (6.0 if "clip" in name else math.inf)
    assert a["kernel_shape"] == [kwargs.get("k", 3)] * 2 and a.get("group", 1) == kwargs.get("group", 1)
    onnx.checker.check_model(res.model)
    assert_same_outputs(model, res.model, rng)
    again = exprune_onnx.optimize_model(res.model, **SPARSE)
    assert not again.changed and again.model.SerializeToString() == res.model.SerializeToString()


def concat_of_relus(rng, *, pool=False, sigmoid=False):
    """SqueezeNet's fire module: r0 -> 1x1 conv 'ca' -> Relu and 3x3 conv 'cb' -> Relu (or a
    Sigmoid, which writes no zeros) -> Concat [-> MaxPool] -> conv 'c2' -> Relu."""
    nodes, inits = stem(rng)
    inits += [init("Wa", weight(rng, 4, 8, 1)), init("Wb", weight(rng, 4, 8)), init("W2", weight(rng, 6, 8))]
    nodes += [conv("ca", "r0", "Wa", "aa"), helper.make_node("Relu", ["aa"], ["ra"]),
              conv("cb", "r0", "Wb", "ab", pads=[1] * 4),
              helper.make_node("Sigmoid" if sigmoid else "Relu", ["ab"], ["rb"]),
              helper.make_node("Concat", ["ra", "rb"], ["cat"], axis=1)]
    if pool:
        nodes.append(helper.make_node("MaxPool", ["cat"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes += [conv("c2", "p" if pool else "cat", "W2", "a2", pads=[1] * 4), helper.make_node("Relu", ["a2"], ["y"])]
    return build(nodes, inits)


@pytest.mark.parametrize("pool", [False, True])
def test_a_conv_reading_a_concat_of_relus_reads_it_sparsely(pool):
    """Each part of the Concat carries a ReLU's zeros: SqueezeNet's and Inception's convs
    read their modules so (5 of a SqueezeNet's 15 were no candidates, with no reason)."""
    rng = np.random.default_rng(31)
    model = concat_of_relus(rng, pool=pool)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert node_types(res.model) == ["Conv", "Relu", ops.SPARSE_CONV, ops.SPARSE_CONV, "Concat"] + \
        (["MaxPool"] if pool else []) + [ops.SPARSE_CONV]
    assert [(s.layer, s.source) for s in res.sparse] == [("c2", "Relu"), ("cb", "Relu"), ("ca", "Relu")]
    onnx.checker.check_model(res.model)
    assert_same_outputs(model, res.model, rng)
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 4, 0)))
    assert not exprune_onnx.optimize_model(res.model, **SPARSE).changed
    # A part with no zeros of its own (a Sigmoid's) makes the Concat no ReLU's output.
    res = exprune_onnx.optimize_model(concat_of_relus(rng, pool=pool, sigmoid=True), **SPARSE)
    assert sorted(s.layer for s in res.sparse) == ["ca", "cb"]


def test_repacked_weight_layout():
    """w[c, ky, kx, j] = W[(c // Cg) * Mg + j, c % Cg, ky, kx], as the op's interface states."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 2, 3, 1)).astype(np.float32)  # M 6, C/group 2, group 3
    packed = repack(w, 3)
    assert packed.shape == (6, 3, 1, 2)
    for c in range(6):
        for j in range(2):
            np.testing.assert_array_equal(packed[c, :, :, j], w[(c // 2) * 2 + j, c % 2])


def test_residual_block_fuses_folded_batchnorm_add_and_relu():
    rng = np.random.default_rng(1)
    model = residual_block(rng)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert node_types(res.model) == ["Conv", "Relu", ops.SPARSE_CONV]
    node = sparse_node(res.model)
    assert list(node.input)[0] == "r0" and list(node.input)[3] == "r0" and list(node.output) == ["y"]
    assert res.sparse[0].op_types == ["Conv", "Add", "Relu"]  # the BatchNormalization was folded into the Conv
    onnx.checker.check_model(res.model)
    assert_same_outputs(model, res.model, rng)


def test_conv_after_an_early_exit_op():
    """c1 becomes an early-exit layer at threshold -inf; c2 reads its zeros without --sparse-relu."""
    rng = np.random.default_rng(2)
    model = chain3(rng)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, min_units=8, k=4, unit_order="stored")
    assert [rw.candidate.layer for rw in res.rewritten] == ["c1"]
    assert [(s.layer, s.source, s.after_relu) for s in res.sparse] == [("c2", ops.CONV_RELU, False)]
    types = node_types(res.model)
    assert types.count(ops.CONV_RELU) == 1 and types[-1] == ops.SPARSE_CONV
    onnx.checker.check_model(res.model)
    f = feeds(rng)
    for ref, got in zip(run_plain(model, f), run_exprune(res.model, f)):
        assert_close(ref, got)


def test_chain_of_sparse_convs():
    """c1 after the stem's Relu fuses its own Relu; c2 then reads the sparse op's output."""
    rng = np.random.default_rng(3)
    model = chain3(rng)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert node_types(res.model) == ["Conv", "Relu", ops.SPARSE_CONV, ops.SPARSE_CONV]
    assert [s.layer for s in res.sparse] == ["c1", "c2"]
    assert_same_outputs(model, res.model, rng)


def sigmoid_conv(rng):
    nodes, inits = stem(rng)
    nodes[1] = helper.make_node("Sigmoid", ["a0"], ["r0"], name="act0")
    inits.append(init("W1", weight(rng, 4, 8)))
    nodes.append(conv("c1", "r0", "W1", "y", pads=[1, 1, 1, 1]))
    return build(nodes, inits)


def weight_input(rng):
    nodes, inits = stem(rng)
    nodes.append(conv("c1", "r0", "Wx", "y", pads=[1, 1, 1, 1]))
    return make_model(nodes, [vi("x", ["N", 3, 10, 10]), vi("Wx", [4, 8, 3, 3])], [vi("y", None)], inits)


def nan_weight(rng):
    model = relu_conv(rng)
    w = next(t for t in model.graph.initializer if t.name == "W1")
    values = numpy_helper.to_array(w).copy()
    values[0, 0, 0, 0] = np.nan
    w.CopyFrom(numpy_helper.from_array(values, "W1"))
    return model


def same_pad_conv(rng, stride):
    """r0 [N, 8, 10, 10] -> 1x1 Conv, auto_pad SAME_UPPER: at stride 3, 12 columns would want
    a padding of -2, which onnxruntime applies (skipping the first column) and ONNX's
    definition clamps to 0."""
    nodes, inits = stem(rng)
    inits.append(init("W1", weight(rng, 4, 8, 1)))
    nodes.append(conv("c1", "r0", "W1", "y", auto_pad="SAME_UPPER", strides=[stride, stride]))
    return build(nodes, inits)


def test_same_padding_fires_where_onnxruntime_pads_as_onnx_does():
    """Stride 2 on a 1x1 kernel wants a padding of at most -1, which onnxruntime leaves at
    the end: the op reads the same inputs, and agrees with the original."""
    model = same_pad_conv(np.random.default_rng(7), 2)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert [n.op_type for n in res.model.graph.node] == ["Conv", "Relu", ops.SPARSE_CONV]
    x = np.random.default_rng(8).standard_normal((2, 3, 10, 10)).astype(np.float32)
    assert_close(run_plain(model, {"x": x})[0], run_exprune(res.model, {"x": x})[0])


def conv1d(rng):
    inits = [init("W1", init_array(rng, (4, 3, 3), 0.3))]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act0"), conv("c1", "r", "W1", "y", pads=[1, 1])]
    return make_model(nodes, [vi("x", ["N", 3, 10])], [vi("y", None)], inits)


@pytest.mark.parametrize("make,reason", [
    (lambda rng: build([conv("c0", "x", "W0", "y")], [init("W0", weight(rng, 4, 3))]), None),  # the image
    (sigmoid_conv, None),
    (weight_input, "is not a constant"),
    (nan_weight, "NaN or Inf"),
    (conv1d, "only 2-D convolutions"),
    # Under 8 outputs a group the op lost to onnxruntime 1.6-51x (bench.sparse_conv_groups)
    (lambda rng: relu_conv(rng, group=8, m=8), "1 output channel(s) per group (depthwise)"),
    (lambda rng: relu_conv(rng, group=2, m=8), "4 output channel(s) per group (group = 2)"),
    (lambda rng: same_pad_conv(rng, 3), "onnxruntime's Conv pads negatively"),
])
def test_must_not_fire(make, reason):
    model = make(np.random.default_rng(4))
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert not res.sparse
    reasons = [r.reason for r in res.sparse_rejected]
    if reason is None:
        assert not reasons
    else:
        assert len(reasons) == 1 and reason in reasons[0], reasons
        # The layer's own problem is the reason whatever the switch says: no switch changes it.
        auto = exprune_onnx.optimize_model(model, **(SPARSE | {"sparse_relu": "auto"}))
        assert [r.reason for r in auto.sparse_rejected] == reasons


@pytest.mark.parametrize("options,reason", [
    ({}, "only with --sparse-relu on"),
    ({"sparse_relu": "off"}, "only with --sparse-relu on"),
    ({"sparse_relu": "on", "sparse_relu_layers": frozenset()}, "the latency objective found the model"),
    ({"sparse_relu": "on", "sparse_input": False}, None),
])
def test_switches(options, reason):
    model = relu_conv(np.random.default_rng(5))
    res = exprune_onnx.optimize_model(model, **(SPARSE | {"sparse_relu": "auto"} | options))
    assert not res.changed and res.model is model
    if reason is not None:
        assert reason in {r.layer: r.reason for r in res.sparse_rejected}["c1"]


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_a_conv_of_another_float_type_says_so_before_the_switch(dtype):
    """Not "only with --sparse-relu on": no switch would read a float16 input sparsely."""
    from helpers import conv_model

    res = exprune_onnx.optimize_model(conv_model(dtype=dtype, bn=False), threshold=NEG_INF)
    reasons = [r.reason for r in res.sparse_rejected]
    assert len(reasons) == 1 and f"is {np.dtype(dtype)}, only float32 is read sparsely" in reasons[0], reasons


def test_shared_weight_is_not_copied():
    rng = np.random.default_rng(6)
    nodes, inits = stem(rng)
    inits.append(init("W1", weight(rng, 8, 8)))
    nodes += [conv("c1", "r0", "W1", "a1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a1"], ["r1"], name="act1"),
              conv("c2", "r1", "W1", "y", pads=[1, 1, 1, 1])]
    res = exprune_onnx.optimize_model(build(nodes, inits), **SPARSE)
    assert not res.sparse and all("feeds other nodes" in r.reason for r in res.sparse_rejected)


def test_shared_activation_is_fused_once():
    """Two convs ending in one Add -> Relu (a block's main and shortcut convs): the larger fuses it."""
    rng = np.random.default_rng(7)
    nodes, inits = stem(rng)
    inits += [init("W1", weight(rng, 8, 8)), init("W2", weight(rng, 8, 8, 1))]
    nodes += [conv("c1", "r0", "W1", "a1", pads=[1, 1, 1, 1]), conv("c2", "r0", "W2", "a2"),
              helper.make_node("Add", ["a1", "a2"], ["s"], name="join"), helper.make_node("Relu", ["s"], ["y"])]
    model = build(nodes, inits)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert sorted((s.layer, tuple(s.op_types)) for s in res.sparse) == [("c1", ("Conv", "Add", "Relu")),
                                                                        ("c2", ("Conv",))]
    onnx.checker.check_model(res.model)
    assert_same_outputs(model, res.model, rng)


def test_verify_accepts_and_catches_tampering():
    rng = np.random.default_rng(8)
    model = residual_block(rng)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    data = random_dataset(model, 4, 0)
    rows = verify(model, res.model, data)
    assert all(r.ok for r in rows), rows
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


def test_flops_count_the_inputs_read():
    """The dense count is the Conv's; the op's stats [non-zero read, total] give the skipped share."""
    from exprune_onnx.measure.compare import compare
    from exprune_onnx.measure.counters import flops_saved

    rng = np.random.default_rng(9)
    model = relu_conv(rng)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    node = sparse_node(res.model)
    assert res.dense_flops == 2 * 3 * 9 * 8 * 100 + 2 * 8 * 9 * 6 * 100
    # Each skipped input feeds M * KH * KW = 54 multiply-adds (stride 1, "same" padding).
    assert flops_saved(res.model, {node.name: (300, 800)}) == 500 * 2 * 6 * 9
    data = random_dataset(model, 4, 0)
    checked = compare(model, res.model, data)
    r0 = run_plain(expose_r0(model), {"x": data.inputs["x"]})[1]
    assert checked.pruned[node.name] == (inputs_read(r0), r0.size)


def expose_r0(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(vi("r0", None))
    return out


def test_cli_explain_names_the_rewrite(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(relu_conv(np.random.default_rng(10)), src)
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops", "--no-check",
                                  "--explain", "--threshold", "-inf"])
    assert r.exit_code == 0, r.output
    assert "sparse_conv" in r.output and "--sparse-relu on" in r.output
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops", "--no-check",
                                  "--sparse-relu", "on", "--threshold", "-inf"])
    assert r.exit_code == 0, r.output
    assert node_types(onnx.load(out))[-1] == ops.SPARSE_CONV


@pytest.mark.parametrize("bias_add, types", [
    (False, ["Conv", "Relu", "Slice", "ExPruneSparseConv", "Conv", "ExPruneConvRelu"]),
    (True, ["Conv", "Relu", "ExPruneSparseConv", "Slice", "Add", "Conv", "ExPruneConvRelu"]),
], ids=["direct", "through_a_bias_add"])
def test_shortcut_conv_is_rewritten_alone_beside_an_early_exit_block(bias_add, types):
    """c1 becomes an early-exit layer that takes the block's Add -> Relu; the shortcut c2 reads
    the stem's Relu and is rewritten alone, its output the early-exit op's residual. With
    c2 -> Add(bias) before the join, following c2's group reaches the join the early-exit
    rewrite has emptied (it lingers as a consumer until cleanup): c2 is still rewritten
    alone and its bias Add stays (the graph fuzzer found a crash there, seed 1005909)."""
    rng = np.random.default_rng(11)
    nodes, inits = stem(rng)
    inits += [init("W1", weight(rng, 8, 8)), init("W2", weight(rng, 8, 8, 1)),
              init("b2", init_array(rng, (1, 8, 1, 1), 0.5))]
    nodes += [conv("c1", "r0", "W1", "a1", pads=[1, 1, 1, 1]), conv("c2", "r0", "W2", "a2")]
    if bias_add:
        nodes.append(helper.make_node("Add", ["a2", "b2"], ["a2b"], name="bias2"))
    nodes += [helper.make_node("Add", ["a1", "a2b" if bias_add else "a2"], ["s"], name="join"),
              helper.make_node("Relu", ["s"], ["y"])]
    model = build(nodes, inits if bias_add else inits[:-1])
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on", min_units=4, k=4,
                                      unit_order="stored")
    assert [rw.candidate.layer for rw in res.rewritten] == ["c1"]
    assert [(s.layer, s.op_types) for s in res.sparse] == [("c2", ["Conv"])]
    assert node_types(res.model) == types
    onnx.checker.check_model(res.model)
    f = feeds(rng)
    for ref, got in zip(run_plain(model, f), run_exprune(res.model, f)):
        assert_close(ref, got)
    rows = verify(model, res.model, random_dataset(model, 4, 0))
    assert all(r.ok for r in rows), rows


def test_a_later_run_reads_a_sparse_convs_relu():
    """A first run keeps only c1 sparse; a second run finds c2 behind c1's fused Relu."""
    rng = np.random.default_rng(12)
    model = chain3(rng)
    first = exprune_onnx.optimize_model(model, **SPARSE, sparse_relu_layers=frozenset({"c1"}))
    assert [s.layer for s in first.sparse] == ["c1"]
    second = exprune_onnx.optimize_model(first.model, **SPARSE)
    assert [(s.layer, s.source) for s in second.sparse] == [("c2", ops.SPARSE_CONV)]
    assert_same_outputs(model, second.model, rng)


def test_screen_pairs_compute_the_same_layer():
    """The objective's layer-alone pair (screen.py): the op and the dense Conv it stands for agree."""
    from exprune_onnx.tuning.screen import alone_pair

    rng = np.random.default_rng(13)
    res = exprune_onnx.optimize_model(relu_conv(rng, clip=True, group=2, m=16, stride=2), **SPARSE)
    node = sparse_node(res.model)
    x = np.maximum(rng.standard_normal((2, 8, 10, 10)), 0).astype(np.float32)
    sparse, dense = alone_pair(res.model, node.name, list(x.shape))
    onnx.checker.check_model(dense)
    (want,) = run_plain(dense, {"r0": x})
    (got,) = run_exprune(sparse, {"r0": x})
    assert_close(want, got)


def test_objective_drops_prune_nothing_layers_untimed(monkeypatch):
    """At -inf the early-exit layers are dropped without a whole-model timing; the sparse
    convs that are not faster alone are never timed in the whole model either."""
    from exprune_onnx.tuning import objective

    calls = []

    def fake(a, b, feeds, threads, passes):
        calls.append(len(a.graph.node))
        return 2.0, 1.0  # the rewritten side always slower

    monkeypatch.setattr(objective, "time_pair", fake)
    model = chain3(np.random.default_rng(14))
    options = exprune_onnx.Options(threshold=NEG_INF, min_units=8)
    result = exprune_onnx.optimize_model(model, options)
    assert [rw.candidate.layer for rw in result.rewritten] == ["c1"]
    choice = objective.choose(model, options, result, random_dataset(model, 8, 0))
    assert not choice.result.changed and choice.result.model is model
    notes = {(t.layer, t.kind): t.note for t in choice.layers}
    assert notes == {("c1", objective.EARLY_EXIT): "prunes nothing at threshold -inf",
                     ("c1", objective.ZERO_INPUTS): "not faster alone",
                     ("c2", objective.ZERO_INPUTS): "not faster alone"}
    assert calls == [1, 1]  # two layer-alone pairs, no whole model
    from exprune_onnx.report.latency import latency_json

    rows = {(r["layer"], r["rewrite"]): r for r in latency_json(choice)["layers"]}
    untimed = rows[("c1", objective.EARLY_EXIT)]
    assert untimed["with_ms"] is None and untimed["without_ms"] is None  # the table's "-", not 0 ms
    assert rows[("c1", objective.ZERO_INPUTS)]["with_ms"] == 2.0  # its times alone


@pytest.mark.parametrize(("gains", "whole", "kept"), [
    # Both save half the margin alone: neither is timed in the model alone; together they clear it.
    ({"zero:c1": 0.5, "zero:c2": 0.5}, [("c1", "c2")], {"c1", "c2"}),
    # Together they do not clear it: nothing is written, so nothing is timed against the original.
    ({"zero:c1": 0.4, "zero:c2": 0.4}, [("c1", "c2")], set()),
    # c1 clears it alone and is timed in the model; c2 alone is too small and has no group.
    ({"zero:c1": 2.0, "zero:c2": 0.5}, [("c1",)], {"c1"}),
], ids=["small_pair_kept_together", "small_pair_dropped", "one_large_one_small"])
def test_sparse_convs_too_small_alone_are_timed_only_in_a_group(scripted_clock, gains, whole, kept):
    """A conv whose gain alone is under the margin of the model's time cannot clear the
    margin in the model (small_gains.py): it gets no whole-model timing of its own."""
    from rich.console import Console

    from exprune_onnx.report.latency import latency_table
    from exprune_onnx.tuning import objective

    calls = scripted_clock({k: g * objective.MARGIN for k, g in gains.items()})
    model = chain3(np.random.default_rng(14))
    options = exprune_onnx.Options(threshold=NEG_INF, min_units=8)
    choice = objective.choose(model, options, exprune_onnx.optimize_model(model, options),
                              random_dataset(model, 8, 0))

    def sparse_in(m):
        return tuple(sorted(n.name[:-len("_sparse")] for n in m.graph.node if n.op_type == ops.SPARSE_CONV))

    # Whole-model pairs only (a layer alone is one node): each (with, without) as the convs read sparsely.
    timed = [(sparse_in(a), sparse_in(b)) for a, b in calls if len(a.graph.node) > 1]
    assert timed == [(names, ()) for names in whole] + ([((), tuple(sorted(kept)))] if kept else [])
    assert {t.layer for t in choice.layers if t.kind == objective.ZERO_INPUTS and t.kept and not t.group} == kept
    assert sparse_in(choice.result.model) == tuple(sorted(kept))
    small = {t.layer: t for t in choice.layers if t.small}
    assert {f"zero:{layer}" for layer in small} == {k for k, g in gains.items() if g < 1}
    console = Console(width=400, record=True)
    console.print(latency_table(choice))
    text = console.export_text()
    if len(small) == 1:  # no group: its row says why it was not timed in the model
        (row,) = small.values()
        assert row.note.startswith("saves ") and "under 1% of the model's 1.000 ms" in row.note
        assert f"dropped: {row.note}" in text
    else:
        assert ("kept with the group below" if kept else "dropped: too small, alone or together") in text


def test_conv_inside_an_if_branch():
    """The Relu outside, the Conv in a branch: matched like the outer graph's (as every rule is)."""
    rng = np.random.default_rng(15)
    branches = []
    for i in (1, 2):
        w = init(f"Wb{i}", weight(rng, 4, 8))
        body = helper.make_graph([conv(f"cb{i}", "r0", f"Wb{i}", f"y{i}", pads=[1, 1, 1, 1])], f"b{i}", [],
                                 [vi(f"y{i}", None)], [w])
        branches.append(body)
    nodes, inits = stem(rng)
    nodes.append(helper.make_node("If", ["c"], ["y"], name="branch", then_branch=branches[0],
                                  else_branch=branches[1]))
    model = make_model(nodes, [vi("x", ["N", 3, 10, 10]), vi("c", [], onnx.TensorProto.BOOL)], [vi("y", None)],
                       inits)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert sorted(s.layer for s in res.sparse) == ["cb1", "cb2"]
    onnx.checker.check_model(res.model)
    x = feeds(rng)["x"]
    for c in (True, False):
        f = {"x": x, "c": np.array(c)}
        assert_close(run_plain(model, f)[0], run_exprune(res.model, f)[0])


def test_inspect_lists_conv_candidates(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(residual_block(np.random.default_rng(16)), src)
    r = CliRunner().invoke(main, ["inspect", str(src), "--min-units", "1000"])
    assert r.exit_code == 0, r.output
    assert "Zero-input candidates" in r.output and "Conv -> Add -> Relu" in r.output
    res = exprune_onnx.inspect_model(nan_weight(np.random.default_rng(17)))
    assert not res.conv_candidates and "NaN" in res.sparse_rejected[0].reason


@pytest.mark.parametrize(("in_model", "groups", "kept"), [
    # c3 (too small alone, untimed) would be slower in the model: it has no group of its own.
    ({"c1": 0.6, "c2": 0.6, "c3": -0.4}, [("c1", "c2")], {"c1", "c2"}),
    # c1 alone is timed faster but short: it joins the untimed c3, on top of nothing kept.
    ({"c1": 0.6, "c2": -2.0, "c3": 0.6}, [("c1", "c3")], {"c1", "c3"}),
    # Two of each: the untimed pair is timed on top of the first group, and dropped alone.
    ({"c1": 0.6, "c2": 0.6, "c3": -0.4, "c4": -0.4}, [("c1", "c2"), ("c3", "c4")], {"c1", "c2"}),
], ids=["timed_pair_kept_untimed_left", "one_timed_joins_the_untimed", "untimed_pair_dropped_on_top"])
def test_untimed_small_convs_never_sink_a_group_timed_faster(monkeypatch, in_model, groups, kept):
    """c1, c2 save 2% of the model alone and are timed in it; c3, c4 save 0.5% alone, so
    they are not (small_gains.py). Gains in the model are in units of the 1% margin."""
    from exprune_onnx.tuning import objective

    alone = {"c1": 0.02, "c2": 0.02, "c3": 0.005, "c4": 0.005}
    rng = np.random.default_rng(15)
    nodes, inits = stem(rng, 16)
    prev, last = "r0", sorted(in_model)[-1]
    for c in sorted(in_model):
        inits.append(init(f"W{c}", weight(rng, 16, 16)))
        out = "y" if c == last else f"r{c}"
        nodes += [conv(c, prev, f"W{c}", f"a{c}", pads=[1, 1, 1, 1]), helper.make_node("Relu", [f"a{c}"], [out])]
        prev = out
    model = build(nodes, inits)

    def cost(m):
        sparse = {n.name[:-len("_sparse")] for n in m.graph.node if n.op_type == ops.SPARSE_CONV}
        return 1.0 - sum(in_model[c] * objective.MARGIN for c in sparse)

    timed = []

    def fake(a, b, feeds, threads, passes, **_):
        if len(a.graph.node) == 1:  # a conv alone (screen.alone_pair): 0.1 ms dense
            return 0.1 - alone[a.graph.node[0].name[:-len("_sparse")]], 0.1
        timed.append((a, b))
        return cost(a), cost(b)

    monkeypatch.setattr(objective, "time_pair", fake)
    monkeypatch.setattr(objective, "_seconds_per_run", lambda model, feeds, threads, source: 1e-3)
    options = exprune_onnx.Options(threshold=NEG_INF, min_units=10**6)
    choice = objective.choose(model, options, exprune_onnx.optimize_model(model, options), random_dataset(model, 8, 0))
    assert [t.group for t in choice.layers if t.group] == groups
    assert {n.name[:-len("_sparse")] for n in choice.result.model.graph.node if n.op_type == ops.SPARSE_CONV} == kept
    # No conv too small alone is ever the one difference of a whole-model pair.
    untimed = {c for c, g in alone.items() if c in in_model and g < 0.01}

    def sparse(m):
        return {n.name[:-len("_sparse")] for n in m.graph.node if n.op_type == ops.SPARSE_CONV}

    assert not any(len(sparse(a) ^ sparse(b)) == 1 and sparse(a) ^ sparse(b) <= untimed for a, b in timed)


def test_cli_report_of_zero_input_rewrites_alone(tmp_path):
    """Lossless mode: no early-exit layer, so no table of them (it would be empty); the zero-input
    table counts the inputs the op skipped, which on a CPU with AMX tiles may be none."""
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(relu_conv(np.random.default_rng(10)), src)
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops",
                                  "--sparse-relu", "on", "--threshold", "-inf", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert [t for t in node_types(onnx.load(out)) if t.startswith("ExPrune")] == [ops.SPARSE_CONV]
    check = json.loads((tmp_path / "r.json").read_text())["check"]
    (node, (read, total)), = check["inputs_read"].items()  # the inputs it read, apart from any pruned outputs
    assert check["pruned"] == {} and node.endswith("_sparse") and 0 < read <= total
    assert "Rewritten layers" not in r.output
    assert "Zero inputs skipped" in r.output and "inputs skipped (measured)" in r.output
    assert ("AMX tiles skips none" in r.output) == cpu_has_tiles()
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).random((4, 3, 10, 10), dtype=np.float32))
    r = CliRunner().invoke(main, ["evaluate", str(src), str(out), "--data", str(tmp_path / "d.npz"), "--runs", "2"])
    assert r.exit_code == 0 and ("AMX tiles skips none" in r.output) == cpu_has_tiles(), r.output  # as optimize
