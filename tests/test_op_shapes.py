"""compiler/op_shapes.py: shapes through this compiler's own ops, for a model it wrote given again."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import expose, init, make_model, node_types, run_exprune, scaled_normal
from onnx import TensorProto, helper

import exprune_onnx
from exprune_onnx.compiler import op_shapes
from exprune_onnx.compiler.pipeline import infer_shapes
from exprune_onnx.config import Options


def _cnn(stride: int, auto_pad: str | None) -> onnx.ModelProto:
    """x [N, 3, H, W] -> conv1 -> Relu -> conv2 -> Relu -> conv3 (strided, no activation: a
    sparse-input conv) -> pool -> fc1 -> Relu -> fc2 (reads fc1's zeros)."""
    pad = {"auto_pad": auto_pad} if auto_pad else {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c"], ["d"]),
             helper.make_node("Conv", ["d", "w3"], ["e"], strides=[stride, stride], name="conv3", **pad),
             helper.make_node("GlobalAveragePool", ["e"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("Gemm", ["f", "wf"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "wo"], ["y"], name="fc2")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                      [init("w1", scaled_normal(32, 3, 3, 3)), init("w2", scaled_normal(32, 32, 3, 3)),
                       init("w3", scaled_normal(32, 32, 3, 3)), init("wf", scaled_normal(32, 64)),
                       init("wo", scaled_normal(64, 10))])


@pytest.mark.parametrize(("stride", "auto_pad"), [(1, None), (2, None), (2, "SAME_UPPER"), (2, "VALID")])
def test_a_model_optimised_again_counts_every_layer_after_our_ops(stride, auto_pad):
    model = _cnn(stride, auto_pad)
    options = Options(threshold=-2.0, min_units=8, input_shapes={"x": (1, 3, 15, 15)}, sparse_relu="on")
    first = exprune_onnx.optimize_model(model, options)
    assert {"ExPruneConvRelu", "ExPruneSparseConv", "ExPruneDenseRelu", "ExPruneSparseMatMul"} <= set(
        node_types(first.model))
    again = exprune_onnx.optimize_model(first.model, options)
    assert again.uncounted_nodes == 0 and again.dense_flops == first.dense_flops > 0
    assert node_types(again.model) == node_types(first.model)
    assert all(r.reason.startswith("already rewritten") for r in again.rejected if r.layer.endswith("_partial_conv"))


@pytest.mark.parametrize(("stride", "auto_pad"), [(1, None), (2, None), (2, "SAME_UPPER"), (2, "VALID")])
def test_our_ops_output_shapes_are_the_ones_onnxruntime_gives(stride, auto_pad):
    model = _cnn(stride, auto_pad)
    first = exprune_onnx.optimize_model(model, Options(threshold=-2.0, min_units=8, sparse_relu="on"))
    x = np.random.default_rng(0).standard_normal((2, 3, 15, 15)).astype(np.float32)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(first.model)
    fixed.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 15, 15]))
    inferred = infer_shapes(fixed)
    outputs = {o.name for o in inferred.graph.output}  # declared: [N, 10] whatever the batch
    ours = [n for n in inferred.graph.node if n.domain and n.output[0] not in outputs]
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inferred.graph.value_info}
    got = run_exprune(expose(first.model, [n.output[0] for n in ours]), {"x": x})[1:]
    assert [shapes[n.output[0]] for n in ours] == [list(g.shape) for g in got]
    assert not op_shapes.missing(inferred.graph)


def _fused_then_residual(stride: int) -> onnx.ModelProto:
    """onnxruntime's FusedConv (Conv + Relu, a model saved after its optimisations) ->
    MaxPool 'p' -> Conv 'c2' -> Add(p) -> Relu: the residual's shape needs FusedConv's."""
    nodes = [helper.make_node("FusedConv", ["x", "w1", "b1"], ["a"], domain="com.microsoft", activation="Relu",
                              pads=[1, 1, 1, 1], strides=[stride, stride], name="c1"),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w2"], ["c"], pads=[1, 1, 1, 1], name="c2"),
             helper.make_node("Add", ["c", "p"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32, 8 // stride, 8 // stride])],
                       [init("w1", scaled_normal(32, 3, 3, 3)), init("b1", scaled_normal(32)),
                        init("w2", scaled_normal(32, 32, 3, 3))], domains=("com.microsoft",))
    return model


@pytest.mark.parametrize("stride", [1, 2])
def test_shapes_go_on_through_onnxruntime_s_fused_conv(stride):
    """A trial's model saved after onnxruntime's EXTENDED optimisations: its one plain
    Conv -> Add -> Relu was refused, the residual 'not provably of the output's shape'."""
    model = _fused_then_residual(stride)
    inferred = infer_shapes(model)
    shapes = {vi.name: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
              for vi in inferred.graph.value_info}
    side = 16 // stride // 2
    assert shapes["a"] == ["N", 32, 16 // stride, 16 // stride] and shapes["p"] == ["N", 32, side, side]
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert list(run_exprune(expose(model, ["a"]), {"x": x})[1].shape) == [2, 32, 16 // stride, 16 // stride]
    result = exprune_onnx.optimize_model(model, Options(threshold=float("-inf"), min_units=8))
    assert [r.candidate.layer for r in result.rewritten] == ["c2"]


@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_shapes_go_on_through_onnxruntime_s_fused_gemm(trans_a, trans_b):
    """A digits MLP saved after onnxruntime's optimisations had two Gemms uncounted after
    its FusedGemm ("shape inference does not pass com.microsoft.FusedGemm")."""
    a, b = ([5, "N"] if trans_a else ["N", 5]), ([7, 5] if trans_b else [5, 7])
    nodes = [helper.make_node("FusedGemm", ["a", "b"], ["h"], domain="com.microsoft", activation="Relu",
                              transA=trans_a, transB=trans_b),
             helper.make_node("Gemm", ["h", "w"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, a)],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                       [init("b", scaled_normal(*b)), init("w", scaled_normal(7, 3))], domains=("com.microsoft",))
    shapes = {vi.name: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
              for vi in infer_shapes(model).graph.value_info}
    assert shapes["h"] == ["N", 7]
    x = np.random.default_rng(1).standard_normal([2 if d == "N" else d for d in a]).astype(np.float32)
    assert list(run_exprune(expose(model, ["h"]), {"a": x})[1].shape) == [2, 7]


def test_a_model_of_open_dims_compiled_at_fixed_sizes_is_written_with_a_type_for_every_tensor(tmp_path):
    """Every tensor the graph computes has a value_info at the model's own open dims: tools
    that cannot see past our ops read types from the file (a trial's float16 conversion,
    quantize_dynamic and onnx.utils.extract_model failed on a file written with none)."""
    model = _cnn(2, None)
    options = Options(threshold=-2.0, min_units=8, input_shapes={"x": (1, 3, 15, 15)}, sparse_relu="on")
    out = exprune_onnx.optimize_model(model, options).model
    onnx.checker.check_model(out, full_check=True)
    made = {o for n in out.graph.node for o in n.output if o} - {v.name for v in out.graph.output}
    info = {v.name: v.type.tensor_type for v in out.graph.value_info}
    assert made <= set(info), made - set(info)
    assert all(t.elem_type for t in info.values())
    # The sizes compiled at are not written: H is open, the batch is the input's own N, channels stay.
    conv = next(n for n in out.graph.node if n.op_type == "ExPruneSparseConv")
    dims = info[conv.output[0]].shape.dim
    assert [d.dim_param or d.dim_value or None for d in dims] == ["N", 32, None, None]
    # onnx.utils.extract_model needs the tensor it cuts at to be typed.
    path, cut = tmp_path / "o.onnx", tmp_path / "cut.onnx"
    onnx.save(out, path)
    onnx.utils.extract_model(str(path), str(cut), ["x"], [conv.output[0]])
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 9, 11)).astype(np.float32)}
    assert np.array_equal(run_exprune(onnx.load(cut), feeds)[0], run_exprune(expose(out, [conv.output[0]]),
                                                                              feeds)[-1])


def test_if_bodies_compiled_at_fixed_sizes_run_at_other_sizes():
    """An If's branches keep the dims their original declared: with the compiled sizes in
    their outputs, onnxruntime refused the model at any other size."""
    branch = {name: helper.make_graph([helper.make_node(op, ["d"], [f"{name}_out"])], name, [],
                                      [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])
              for name, op in (("then", "Relu"), ("other", "Identity"))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c"], ["d"]),
             helper.make_node("If", ["cond"], ["dd"], then_branch=branch["then"], else_branch=branch["other"]),
             helper.make_node("Conv", ["dd", "w3"], ["e"], pads=[1, 1, 1, 1], name="conv3"),
             helper.make_node("GlobalAveragePool", ["e"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"]),
                               helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32, 1, 1])],
                       [init("w1", scaled_normal(32, 3, 3, 3)), init("w2", scaled_normal(32, 32, 3, 3)),
                        init("w3", scaled_normal(32, 32, 3, 3))])
    options = Options(threshold=float("-inf"), min_units=8, input_shapes={"x": (1, 3, 15, 15), "cond": ()},
                      sparse_relu="on")
    out = exprune_onnx.optimize_model(model, options).model
    assert "ExPruneConvRelu" in node_types(out)
    rng = np.random.default_rng(0)
    for cond in (True, False):
        feeds = {"x": rng.standard_normal((2, 3, 9, 11)).astype(np.float32), "cond": np.array(cond)}
        want = run_exprune(model, feeds)[0]
        np.testing.assert_allclose(run_exprune(out, feeds)[0], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
