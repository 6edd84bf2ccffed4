"""Small models around a Conv that reads a ReLU's zeros, and what the ExPruneSparseConv
tests check them with (test_sparse_conv_pass.py, test_verify_sparse_conv.py,
test_sparse_conv_latency.py)."""

from __future__ import annotations

import math

import numpy as np
import onnx
from helpers import NEG_INF, assert_close, init, make_model, run_exprune, run_plain, vi
from onnx import helper, numpy_helper

from exprune_onnx import ops

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


def text_cnn(rng):
    """A 1-D CNN as text and audio models have: x [N, 8, 20] -> Conv1d 'c0' -> BatchNorm -> Relu
    'r0' -> Conv1d 'c1' (k5) -> BatchNorm -> Add(r0) -> Relu -> MaxPool -> Conv1d 'c2' (k3,
    stride 2, uneven pads) -> Relu."""
    bn = [init_array(rng, 16, 0.3) + 1, init_array(rng, 16, 0.3), init_array(rng, 16, 0.2),
          np.abs(init_array(rng, 16, 1)) + 0.5]
    inits = [init("W0", init_array(rng, (16, 8, 3), 0.2)), init("b0", init_array(rng, 16, 0.5)),
             init("W1", init_array(rng, (16, 16, 5), 0.1)), init("W2", init_array(rng, (12, 16, 3), 0.15)),
             init("b2", init_array(rng, 12, 0.5))]
    inits += [init(f"bn{i}_{j}", v) for i in (0, 1) for j, v in enumerate(bn)]
    nodes = [conv("c0", "x", "W0", "a0", "b0", pads=[1, 1]),
             helper.make_node("BatchNormalization", ["a0"] + [f"bn0_{j}" for j in range(4)], ["n0"], name="bn0"),
             helper.make_node("Relu", ["n0"], ["r0"], name="act0"),
             conv("c1", "r0", "W1", "a1", pads=[2, 2]),
             helper.make_node("BatchNormalization", ["a1"] + [f"bn1_{j}" for j in range(4)], ["n1"], name="bn1"),
             helper.make_node("Add", ["n1", "r0"], ["s1"], name="join"),
             helper.make_node("Relu", ["s1"], ["r1"], name="act1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2], strides=[2]),
             conv("c2", "p1", "W2", "a2", "b2", pads=[1, 0], strides=[2]),
             helper.make_node("Relu", ["a2"], ["y"], name="act2")]
    return make_model(nodes, [vi("x", ["N", 8, 20])], [vi("y", None)], inits)


def feeds(rng, n=2, shape=(3, 10, 10)):
    return {"x": rng.standard_normal((n, *shape)).astype(np.float32)}


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
        c, *kernel, mg = w.shape  # [C, *K, M/group] -> W[M, C/group, *K]
        cg = c // group
        order = (0, 2 + len(kernel), 1, *range(2, 2 + len(kernel)))
        big = w.reshape(group, cg, *kernel, mg).transpose(order).reshape(group * mg, cg, *kernel)
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


def assert_same_outputs(original, optimized, rng, with_op=True, shape=(3, 10, 10)):
    f = feeds(rng, shape=shape)
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
