"""compiler/functions.py: layers inside model-local functions (onnxscript models, torch's
export_modules_as_functions) are inlined and rewritten; other functions stay."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
from helpers import NEG_INF, assert_equivalent, init, node_types
from onnx import TensorProto, helper

import exprune_onnx
from exprune_onnx.io.data import random_dataset
from exprune_onnx.report.units import flops_text
from exprune_onnx.verify import verify

OPTIONS = {"threshold": NEG_INF, "min_units": 8}


def _weights(rng) -> list:
    return [init("w0", (rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32)),
            init("w1", (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)),
            init("b1", (rng.standard_normal(16) * 0.1).astype(np.float32)),
            init("w2", (rng.standard_normal((4, 16, 3, 3)) * 0.1).astype(np.float32))]


def model_with(functions: list, call: str, opset: int = 17) -> onnx.ModelProto:
    """x -> Conv -> Relu -> <call>(h0, w1, b1) (a local function) -> Swish (another) -> Conv -> y."""
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a0"], pads=[1, 1, 1, 1], name="stem"),
             helper.make_node("Relu", ["a0"], ["h0"]),
             helper.make_node(call, ["h0", "w1", "b1"], ["h1"], domain="local", name="block"),
             helper.make_node("Swish", ["h1"], ["s1"], domain="local", name="swish"),
             helper.make_node("Conv", ["s1", "w2"], ["y"], pads=[1, 1, 1, 1], name="head")]
    swish = helper.make_function("local", "Swish", ["x"], ["y"],
                                 [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
                                 [helper.make_opsetid("", opset)])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
                              _weights(np.random.default_rng(0)))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              functions=[*functions, swish], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_relu(name: str = "ConvRelu", opset: int = 17) -> onnx.FunctionProto:
    return helper.make_function("local", name, ["x", "w", "b"], ["y"],
                                [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                                 helper.make_node("Relu", ["c"], ["r"], name="act"),
                                 helper.make_node("Identity", ["r"], ["y"])], [helper.make_opsetid("", opset)])


def feeds(rng):
    return {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}


def test_a_layer_inside_a_function_is_rewritten_and_other_functions_stay():
    model = model_with([conv_relu()], "ConvRelu")
    res = exprune_onnx.optimize_model(model, **OPTIONS)
    assert len(res.rewritten) == 1 and res.rewritten[0].candidate.reduction.op == "Conv"
    assert node_types(res.model) == ["Conv", "Relu", "Gather", "Slice", "Conv", "ExPruneConvRelu", "Identity", "Swish",
                                     "Conv"]
    assert [f.name for f in res.model.functions] == ["Swish"]  # ConvRelu inlined, Swish still called
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, feeds)
    flat = onnx.inliner.inline_local_functions(model)
    assert res.dense_flops == exprune_onnx.optimize_model(flat, **OPTIONS).dense_flops > 0
    rows = verify(model, res.model, random_dataset(model, 4, 0))
    assert all(r.ok for r in rows), rows
    again = exprune_onnx.optimize_model(res.model, **OPTIONS)
    assert not again.rewritten


def test_a_function_calling_one_that_holds_a_layer_is_inlined_too():
    outer = helper.make_function("local", "Block", ["x", "w", "b"], ["y"],
                                 [helper.make_node("ConvRelu", ["x", "w", "b"], ["y"], domain="local")],
                                 [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    model = model_with([conv_relu(), outer], "Block")
    res = exprune_onnx.optimize_model(model, **OPTIONS)
    assert "ExPruneConvRelu" in node_types(res.model) and [f.name for f in res.model.functions] == ["Swish"]
    assert_equivalent(model, res.model, feeds)


def test_a_function_in_a_model_over_2gb_is_left_with_the_reason(monkeypatch):
    from exprune_onnx.compiler import functions

    monkeypatch.setattr(functions, "serializable", lambda model: False)
    model = model_with([conv_relu()], "ConvRelu")
    res = exprune_onnx.optimize_model(model, **OPTIONS)
    assert not res.rewritten and res.model is model
    reasons = {r.layer: r.reason for r in res.rejected}
    assert reasons["ConvRelu"] == ("its layers are not rewritten: local function 'ConvRelu' is in a model over 2 GB, "
                                   "which the inliner cannot read")


def test_nothing_to_rewrite_writes_the_functions_as_they_were():
    model = model_with([conv_relu()], "ConvRelu")
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, min_units=10**6, sparse_input=False)
    assert not res.changed and res.model is model
    assert any(r.layer.startswith("conv") for r in res.rejected)  # the inlined layer has a reason like any other


def test_evaluate_counts_the_layers_inside_functions(tmp_path):
    from click.testing import CliRunner

    from exprune_onnx.cli import main

    model = model_with([conv_relu()], "ConvRelu")
    res = exprune_onnx.optimize_model(model, **OPTIONS)
    onnx.save(model, tmp_path / "m.onnx")
    onnx.save(res.model, tmp_path / "o.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32))
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "m.onnx"), str(tmp_path / "o.onnx"), "--data",
                                  str(tmp_path / "d.npz"), "--runs", "2"])
    assert r.exit_code == 0, r.output
    assert f"{flops_text(res.dense_flops)} dense" in r.output


def test_overloads_are_told_apart():
    """IR 10 overloads share a name: the one the graph calls is the one looked into,
    whichever order the model lists them in."""
    for order in (1, -1):
        with_layer, plain = conv_relu(), conv_relu()
        with_layer.overload, plain.overload = "layer", "plain"
        del plain.node[:2]
        plain.node[0].input[0] = "x"  # the plain overload only passes x on
        model = model_with([with_layer, plain][::order], "ConvRelu")
        model.ir_version = 10
        next(n for n in model.graph.node if n.op_type == "ConvRelu").overload = "layer"
        onnx.checker.check_model(model)
        res = exprune_onnx.optimize_model(model, **OPTIONS)
        assert "ExPruneConvRelu" in node_types(res.model), order
        assert_equivalent(model, res.model, feeds)
