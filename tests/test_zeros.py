"""passes/zeros.py: the zero-input passes find a ReLU's zeros through the ops that keep them.

A VGG's first classifier layer reads its last pool's zeros through Flatten (PyTorch:
MaxPool -> 1x1 AveragePool -> Flatten -> Gemm; tf2onnx: MaxPool -> Transpose -> Reshape ->
MatMul). Each case: the exact node list after the rewrite, agreement with onnxruntime at
optimisations off, the checker, verify, a second run with nothing to do, and the chains
that must not be looked through."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from head_chains import CHAINS, HW, LOOKED_THROUGH, C, head_model
from helpers import NEG_INF, assert_equivalent, init, make_model, node_types, vi
from onnx import helper

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.io.data import random_dataset
from exprune_onnx.verify import verify


def feeds(model):
    return lambda rng: {"x": rng.normal(size=(2, 3, HW, HW)).astype(np.float32)}


@pytest.mark.parametrize("chain", LOOKED_THROUGH)
@pytest.mark.parametrize("matmul", [False, True], ids=["gemm", "matmul"])
def test_first_classifier_layer_reads_the_pool_sparsely(chain, matmul):
    model = head_model(chain, matmul)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on", min_units=128)
    by_layer = {s.layer: s for s in res.sparse}
    assert set(by_layer) == {"conv2", "fc1", "fc2"}
    # conv2's zeros, read through the chain: a plain ReLU's (timed under the latency objective).
    assert by_layer["fc1"].after_relu and by_layer["fc1"].op_node.inputs[0].name == "flat"
    kept = [n.op_type for n in CHAINS[chain]()]
    assert node_types(res.model) == ["Conv", "Relu", ops.SPARSE_CONV, *kept, ops.SPARSE_MATMUL, "Relu",
                                     ops.SPARSE_MATMUL]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, feeds(model))
    rows = verify(model, res.model, random_dataset(model, 4, 0))
    assert all(r.ok for r in rows), rows
    again = exprune_onnx.optimize_model(res.model, threshold=NEG_INF, sparse_relu="on", min_units=128)
    assert not again.changed and not again.sparse


def test_early_exit_zeros_reach_the_head_without_sparse_relu():
    """conv2 as an early-exit op: its zeros are read sparsely through the pool untimed, as
    an ExPruneDenseRelu's are."""
    model = head_model("torch_vgg", head_relu=False)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, min_units=4)
    assert [rw.candidate.layer for rw in res.rewritten] == ["conv2"]
    fc1 = next(s for s in res.sparse if s.op_node.inputs[0].name == "flat")
    assert fc1.source == ops.CONV_RELU and not fc1.after_relu
    assert_equivalent(model, res.model, feeds(model))


@pytest.mark.parametrize("chain", ["global_pool", "avg_pool_2x2", "shifted"])
def test_chains_that_mix_values_are_not_looked_through(chain):
    model = head_model(chain)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on", min_units=128)
    assert "fc1" not in {s.layer for s in res.sparse}
    assert "fc1" not in {r.layer for r in res.sparse_rejected}  # not a reader of zeros at all
    assert "Gemm" in node_types(res.model)
    assert_equivalent(model, res.model, feeds(model))


def test_plain_relu_zeros_through_the_chain_wait_for_the_objective():
    """Without --sparse-relu on, fc1 reading a plain ReLU's zeros is named, with the reason."""
    res = exprune_onnx.optimize_model(head_model("tf2onnx", matmul=True), threshold=0.0, sparse_relu="off",
                                      min_units=128)
    reasons = {r.layer: r.reason for r in res.sparse_rejected}
    assert "was not rewritten into an early-exit op" in reasons["fc1"]
    assert ops.SPARSE_MATMUL not in node_types(res.model)


def conv_after(chain_ops: list[str]) -> onnx.ModelProto:
    """x -> conv1 -> Relu -> <chain_ops, each keeping the shape> -> conv2 -> out."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "W0"], ["c0"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["t0"])]
    for i, op in enumerate(chain_ops):
        attrs = {"kernel_shape": [1, 1]} if op in ("AveragePool", "MaxPool") else {"perm": [0, 1, 3, 2]} \
            if op == "Transpose" else {"size": 3} if op == "LRN" else {"blocksize": 2} if "Depth" in op else {}
        nodes.append(helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], **attrs))
    nodes.append(helper.make_node("Conv", [f"t{len(chain_ops)}", "W1"], ["out"], name="conv2", pads=[1, 1, 1, 1]))
    inits = [init("W0", rng.normal(size=(C, 3, 3, 3)).astype(np.float32)),
             init("W1", rng.normal(size=(C, C, 3, 3)).astype(np.float32))]
    return make_model(nodes, [vi("x", ["N", 3, HW, HW])], [vi("out", None)], inits)


@pytest.mark.parametrize("chain_ops", [["Dropout", "AveragePool", "Identity"], ["Transpose"], ["LRN", "MaxPool"],
                                       ["DepthToSpace", "SpaceToDepth"]],
                         ids=["pool", "transpose", "lrn", "pixel_shuffle"])
def test_conv_reads_zeros_through_dropout_a_1x1_pool_or_a_transpose(chain_ops):
    """A Transpose, or a DepthToSpace (PyTorch's PixelShuffle, a super-resolution net's
    up-path) moves each zero with its value: the conv skips it where it lands. An LRN
    (Caffe's AlexNet) divides each value by a positive number: a zero stays one."""
    model = conv_after(chain_ops)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on")
    assert node_types(res.model) == ["Conv", "Relu", *chain_ops, ops.SPARSE_CONV]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, feeds(model))
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 4, 0)))
    again = exprune_onnx.optimize_model(res.model, threshold=NEG_INF, sparse_relu="on")
    assert not again.changed and not again.sparse


def shuffle_block(select: str, branch: str = "Relu") -> onnx.ModelProto:
    """ShuffleNet v2's unit between two branches: Concat(Relu, <branch>) -> channel shuffle
    (Reshape -> Transpose -> Reshape) -> the second half (Split, or a Slice as older exports
    write it) -> conv2."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "W0"], ["c0"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["a"]), helper.make_node(branch, ["c0"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
             helper.make_node("Reshape", ["cat", "grouped"], ["g"]),
             helper.make_node("Transpose", ["g"], ["gt"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["gt", "flat"], ["shuffled"])]
    if select == "Split":
        nodes.append(helper.make_node("Split", ["shuffled", "halves"], ["s0", "s1"], axis=1))
    else:
        nodes.append(helper.make_node("Slice", ["shuffled", "starts", "ends", "axes"], ["s1"]))
    nodes.append(helper.make_node("Conv", ["s1", "W1"], ["out"], name="conv2", pads=[1, 1, 1, 1]))
    inits = [init("W0", rng.normal(size=(C, 3, 3, 3)).astype(np.float32)),
             init("W1", rng.normal(size=(C, C, 3, 3)).astype(np.float32)),
             init("grouped", np.array([0, 2, C, HW, HW], np.int64)),
             init("flat", np.array([0, 2 * C, HW, HW], np.int64)), init("halves", np.array([C, C], np.int64)),
             init("starts", np.array([C], np.int64)), init("ends", np.array([2 * C], np.int64)),
             init("axes", np.array([1], np.int64))]
    outputs = [vi("out", None)] + ([vi("s0", None)] if select == "Split" else [])
    return make_model(nodes, [vi("x", ["N", 3, HW, HW])], outputs, inits)


@pytest.mark.parametrize("select", ["Split", "Slice"])
def test_conv_reads_zeros_after_a_channel_shuffle_and_split(select):
    model = shuffle_block(select)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on")
    assert [s.layer for s in res.sparse] == ["conv2"]
    assert node_types(res.model) == ["Conv", "Relu", "Relu", "Concat", "Reshape", "Transpose", "Reshape", select,
                                     ops.SPARSE_CONV]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, feeds(model))
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 4, 0)))
    again = exprune_onnx.optimize_model(res.model, threshold=NEG_INF, sparse_relu="on")
    assert not again.changed and not again.sparse


def test_the_reason_names_every_relu_a_shuffle_reads():
    """It named one ReLU of the Concat, three units upstream (a trial's ShuffleNet)."""
    res = exprune_onnx.optimize_model(shuffle_block("Split"), threshold=NEG_INF, sparse_relu="off")
    reason = " ".join(r.reason for r in res.sparse_rejected if r.layer == "conv2")
    assert "comes from Relu" in reason and "and 1 more through a Concat, which were not rewritten" in reason, reason


def test_a_shuffle_of_a_part_without_zeros_is_not_read_sparsely():
    """Half of the shuffled channels come from a Sigmoid: the conv reads no ReLU's zeros."""
    res = exprune_onnx.optimize_model(shuffle_block("Split", branch="Sigmoid"), threshold=NEG_INF, sparse_relu="on")
    assert not res.sparse and ops.SPARSE_CONV not in node_types(res.model)


def test_an_lrn_of_bias_0_is_not_looked_through():
    """At bias 0 a window of zeros gives 0 / 0: NaN, not a zero to skip."""
    model = conv_after(["LRN"])
    lrn = next(n for n in model.graph.node if n.op_type == "LRN")
    lrn.attribute.append(helper.make_attribute("bias", 0.0))
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on")
    assert not res.sparse and ops.SPARSE_CONV not in node_types(res.model)


def _padded_conv(mid: str) -> onnx.ModelProto:
    """x -> conv1 -> Relu -> <a Pad or a Resize> -> conv2 -> out."""
    rng = np.random.default_rng(4)
    extra = [init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), init("one", np.array(1.0, np.float32)),
             init("zero", np.array(0.0, np.float32)), init("scales", np.array([1, 1, 2, 2], np.float32))]
    node = {"pad_reflect": helper.make_node("Pad", ["t0", "pads"], ["t1"], mode="reflect"),
            "pad_edge": helper.make_node("Pad", ["t0", "pads"], ["t1"], mode="edge"),
            "pad_zeros": helper.make_node("Pad", ["t0", "pads"], ["t1"]),
            "pad_zero_value": helper.make_node("Pad", ["t0", "pads", "zero"], ["t1"]),
            "pad_ones": helper.make_node("Pad", ["t0", "pads", "one"], ["t1"]),
            "resize_nearest": helper.make_node("Resize", ["t0", "", "scales"], ["t1"], mode="nearest"),
            "resize_linear": helper.make_node("Resize", ["t0", "", "scales"], ["t1"], mode="linear")}[mid]
    nodes = [helper.make_node("Conv", ["x", "W0"], ["c0"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["t0"]), node,
             helper.make_node("Conv", ["t1", "W1"], ["out"], name="conv2")]
    inits = [init("W0", rng.normal(size=(C, 3, 3, 3)).astype(np.float32)),
             init("W1", rng.normal(size=(C, C, 3, 3)).astype(np.float32)), *extra]
    return make_model(nodes, [vi("x", ["N", 3, HW, HW])], [vi("out", None)], inits)


@pytest.mark.parametrize("mid", ["pad_reflect", "pad_edge", "pad_zeros", "pad_zero_value", "resize_nearest"])
def test_conv_reads_zeros_through_a_copying_pad_or_a_nearest_resize(mid):
    """torch's padding_mode reflect/replicate, F.pad, and a UNet's nearest upsampling copy
    the ReLU's values (or add zeros): the conv after them reads the zeros sparsely."""
    model = _padded_conv(mid)
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on")
    assert node_types(res.model) == ["Conv", "Relu", "Resize" if mid.startswith("resize") else "Pad", ops.SPARSE_CONV]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, feeds(model))
    assert all(r.ok for r in verify(model, res.model, random_dataset(model, 4, 0)))
    again = exprune_onnx.optimize_model(res.model, threshold=NEG_INF, sparse_relu="on")
    assert node_types(again.model) == node_types(res.model)


@pytest.mark.parametrize("mid", ["pad_ones", "resize_linear"])
def test_a_pad_of_another_value_or_a_linear_resize_is_not_looked_through(mid):
    res = exprune_onnx.optimize_model(_padded_conv(mid), threshold=NEG_INF, sparse_relu="on")
    assert not res.sparse and ops.SPARSE_CONV not in node_types(res.model)


def test_a_concat_is_followed_into_each_part_for_a_conv_as_deep_as_the_limit():
    """zero_writers: the writers of each part of a Concat (through nested ones, as DenseNet
    nests them); past the limit the Concat itself, which is no ReLU."""
    import onnx_graphsurgeon as gs

    from exprune_onnx.passes.zeros import _LIMIT, zero_writers

    def nested(depth):
        nodes = [helper.make_node("Relu", ["x"], ["r0"], name="relu0")]
        for i in range(1, depth + 1):
            nodes += [helper.make_node("Relu", ["x"], [f"r{i}"], name=f"relu{i}"),
                      helper.make_node("Concat", [f"r{i - 1}" if i == 1 else f"c{i - 1}", f"r{i}"], [f"c{i}"],
                                       axis=1)]
        nodes.append(helper.make_node("MaxPool", [f"c{depth}"], ["y"], kernel_shape=[1, 1]))
        graph = gs.import_onnx(make_model(nodes, [vi("x", ["N", 2, 4, 4])], [vi("y", None)], []))
        return zero_writers(graph.outputs[0])

    assert [w.name for w in nested(3)] == ["relu0", "relu1", "relu2", "relu3"]
    assert [w.op for w in nested(_LIMIT + 1)][:1] == ["Concat"]  # a part past the limit: no ReLU found
