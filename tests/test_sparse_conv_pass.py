"""The pass that emits ExPruneSparseConv (exprune_onnx/passes/sparse_conv.py): a Conv reading a
ReLU's zeros, with the group after it fused. The op itself has its own tests (test_sparse_conv_op)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import NEG_INF, assert_close, init, make_model, node_types, run_exprune, run_plain, vi
from onnx import helper, numpy_helper
from sparse_conv_case import inputs_read
from sparse_conv_models import (
    SPARSE,
    assert_same_outputs,
    attrs_of,
    build,
    chain3,
    conv,
    feeds,
    init_array,
    relu_conv,
    residual_block,
    sparse_node,
    stem,
    text_cnn,
    weight,
)

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.cli import main
from exprune_onnx.io.data import random_dataset
from exprune_onnx.passes.sparse_conv import repack
from exprune_onnx.verify import verify

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


def conv3d(rng):
    inits = [init("W1", init_array(rng, (4, 3, 3, 3, 3), 0.3))]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act0"), conv("c1", "r", "W1", "y", pads=[1] * 6)]
    return make_model(nodes, [vi("x", ["N", 3, 6, 6, 6])], [vi("y", None)], inits)


def test_1d_convs_are_rewritten():
    """Text and audio CNNs: a Conv1d's group (BatchNorm, the residual Add, the Relu) fuses as a
    2-D one's does, and one after a MaxPool of the Relu is read sparsely too."""
    rng = np.random.default_rng(30)
    model = text_cnn(rng)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert node_types(res.model) == ["Conv", "Relu", ops.SPARSE_CONV, "MaxPool", ops.SPARSE_CONV]
    assert [(s.layer, s.op_types) for s in res.sparse] == [("c1", ["Conv", "Add", "Relu"]),
                                                           ("c2", ["Conv", "Relu"])]
    c1, c2 = [n for n in res.model.graph.node if n.op_type == ops.SPARSE_CONV]
    weights = {t.name: t.dims for t in res.model.graph.initializer}
    assert list(weights[c1.input[1]]) == [16, 5, 16] and list(weights[c2.input[1]]) == [16, 3, 12]
    assert c1.input[3] == "r0" and attrs_of(c1)["kernel_shape"] == [5] and attrs_of(c1)["pads"] == [2, 2]
    assert attrs_of(c2)["strides"] == [2] and attrs_of(c2)["pads"] == [1, 0]
    # Dense FLOPs stay the Convs' (c2 writes 5 of 10 positions); a skipped input feeds M * K / stride.
    assert res.dense_flops == 2 * 20 * 16 * 8 * 3 + 2 * 20 * 16 * 16 * 5 + 2 * 5 * 12 * 16 * 3
    from exprune_onnx.measure.counters import flops_saved
    assert flops_saved(res.model, {c1.name: (10, 20), c2.name: (10, 20)}) == 10 * 2 * 16 * 5 + 10 * 2 * 12 * 3 / 2
    onnx.checker.check_model(res.model)
    assert_same_outputs(model, res.model, rng, shape=(8, 20))
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 4, 0)))
    again = exprune_onnx.optimize_model(res.model, **SPARSE)
    assert not again.changed and again.model.SerializeToString() == res.model.SerializeToString()


@pytest.mark.parametrize("make,reason", [
    (lambda rng: build([conv("c0", "x", "W0", "y")], [init("W0", weight(rng, 4, 3))]), None),  # the image
    (sigmoid_conv, None),
    (weight_input, "is not a constant"),
    (nan_weight, "NaN or Inf"),
    (conv3d, "only 1-D and 2-D convolutions"),
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
    ({}, "only with sparse_relu on"),
    ({"sparse_relu": "off"}, "only with sparse_relu on"),
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


def test_a_weight_that_is_also_a_graph_output_is_not_copied():
    """A fuzzer's model output its conv's weight: the op's repacked copy stored it twice."""
    rng = np.random.default_rng(6)
    nodes, inits = stem(rng)
    inits.append(init("W1", weight(rng, 8, 8)))
    nodes += [conv("c1", "r0", "W1", "a1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a1"], ["y"], name="act1")]
    model = build(nodes, inits)
    model.graph.output.append(vi("W1", [8, 8, 3, 3]))
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert not res.sparse and [r.reason for r in res.sparse_rejected] == [
        "the weight 'W1' also feeds other nodes or is an output; the repacked copy would store it twice"]
    model.graph.output.pop()  # (and without the output, it is read sparsely)
    assert len(exprune_onnx.optimize_model(model, **SPARSE).sparse) == 1


def test_a_weight_an_if_branch_reads_that_the_model_outputs_is_not_copied():
    rng = np.random.default_rng(15)
    nodes, inits = stem(rng)
    inits.append(init("Wb", weight(rng, 4, 8)))
    branch = helper.make_graph([conv("cb", "r0", "Wb", "yb", pads=[1, 1, 1, 1])], "b", [], [vi("yb", None)])
    other = helper.make_graph([helper.make_node("Identity", ["r0"], ["yo"])], "o", [], [vi("yo", None)])
    nodes.append(helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other))
    model = make_model(nodes, [vi("x", ["N", 3, 10, 10]), vi("c", [], onnx.TensorProto.BOOL)],
                       [vi("y", None), vi("Wb", [4, 8, 3, 3])], inits)
    res = exprune_onnx.optimize_model(model, **SPARSE)
    assert not res.sparse and [r.layer for r in res.sparse_rejected] == ["cb"]


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


def expose_r0(model):
    """``model`` with the first ReLU's output 'r0' (what the sparse conv reads) as an output too."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(vi("r0", None))
    return out


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
    assert not res.zero_input_candidates and "NaN" in res.sparse_rejected[0].reason
