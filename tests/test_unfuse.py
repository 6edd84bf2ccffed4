"""compiler/unfuse.py: onnxruntime's FusedConv and FusedGemm split into the ops they fuse,
exactly, so that a model saved after onnxruntime's graph optimisations has its layers read;
an activation with no standard op here leaves the op fused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from cli_calls import cli, invoke
from helpers import assert_close, init, make_model, run_exprune, run_plain, scaled_normal, vi
from onnx import helper

from exprune_onnx.compiler.unfuse import unfuse_model
from exprune_onnx.io.modelio import all_nodes

C, M, HW = 4, 8, 6
MS = "com.microsoft"


def _conv(attrs: dict, z: bool = False, bias: bool = True, opset: int = 17) -> onnx.ModelProto:
    """x -> FusedConv(attrs) [+ z] -> y, a 3x3 conv padded to keep the size."""
    inputs = ["x", "W", "B" if bias else ""] + (["z"] if z else [])
    node = helper.make_node("FusedConv", inputs, ["y"], name="fc", domain=MS, pads=[1, 1, 1, 1], **attrs)
    feeds = [vi("x", [1, C, HW, HW])] + ([vi("z", [1, M, HW, HW])] if z else [])
    inits = [init("W", scaled_normal(M, C, 3, 3)), init("B", scaled_normal(M))]
    return make_model([node], feeds, [vi("y", [1, M, HW, HW])], inits, opset=opset, domains=[MS])


def _gemm(attrs: dict) -> onnx.ModelProto:
    node = helper.make_node("FusedGemm", ["a", "B", "C"], ["y"], name="fg", domain=MS, transB=1, **attrs)
    inits = [init("B", scaled_normal(M, 16)), init("C", scaled_normal(M))]
    return make_model([node], [vi("a", [3, 16])], [vi("y", [3, M])], inits, domains=[MS])


def _split(model: onnx.ModelProto) -> tuple[int, onnx.ModelProto]:
    """How many fused ops were split, and the model after."""
    before = model.SerializeToString()
    out = unfuse_model(model)
    assert model.SerializeToString() == before  # the model given is left as it was
    onnx.checker.check_model(out)
    return _fused(model) - _fused(out), out


def _fused(model: onnx.ModelProto) -> int:
    return sum(n.domain == MS for n in all_nodes(model.graph))


def _feeds(model: onnx.ModelProto, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
            for v in model.graph.input}


CASES = [
    (_conv({"activation": "Relu"}), ["Conv", "Relu"]),
    (_conv({}), ["Conv"]),
    (_conv({"activation": "Relu"}, z=True), ["Conv", "Add", "Relu"]),
    (_conv({}, z=True, bias=False), ["Conv", "Add"]),
    (_conv({"activation": "Clip", "activation_params": [0.0, 0.5]}), ["Conv", "Clip"]),
    (_conv({"activation": "Clip", "activation_params": [0.0, 0.5]}, opset=10), ["Conv", "Clip"]),
    (_conv({"activation": "LeakyRelu", "activation_params": [0.2]}), ["Conv", "LeakyRelu"]),
    (_conv({"activation": "HardSigmoid", "activation_params": [0.3, 0.4]}), ["Conv", "HardSigmoid"]),
    (_conv({"activation": "Tanh"}), ["Conv", "Tanh"]),
    (_conv({"activation": "Sigmoid"}), ["Conv", "Sigmoid"]),
    (_gemm({"activation": "Relu"}), ["Gemm", "Relu"]),
    (_gemm({"activation": "LeakyRelu", "activation_alpha": 0.3, "alpha": 0.5, "beta": 2.0}), ["Gemm", "LeakyRelu"]),
    (_gemm({"activation": "Selu", "activation_alpha": 1.5, "activation_gamma": 0.7}), ["Gemm", "Selu"]),
]


@pytest.mark.parametrize(("model", "ops"), CASES)
def test_each_fused_op_becomes_the_ops_it_fuses_and_computes_the_same(model, ops):
    count, out = _split(model)
    assert count == 1
    assert [n.op_type for n in out.graph.node] == ops
    assert all(n.domain == "" for n in out.graph.node)
    assert out.graph.node[0].name == model.graph.node[0].name  # the layer keeps its name
    assert [o.name for o in out.graph.output] == ["y"] and out.graph.node[-1].output[0] == "y"
    for seed in range(2):
        feeds = _feeds(model, seed)
        assert_close(run_plain(model, feeds)[0], run_plain(out, feeds)[0], rel=1e-5)
    assert _split(out)[0] == 0  # nothing more to split


def test_the_split_keeps_the_activation_s_parameters():
    _count, out = _split(_conv({"activation": "Clip", "activation_params": [0.0, 0.5]}, opset=10))
    assert {a.name: a.f for a in out.graph.node[1].attribute} == {"min": 0.0, "max": 0.5}
    _count, out = _split(_conv({"activation": "Clip", "activation_params": [0.0, 0.5]}))
    bounds = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    assert [(bounds[name].shape, float(bounds[name])) for name in out.graph.node[1].input[1:]] == [((), 0.0), ((), 0.5)]
    # The bounds take the weight's type (a review: an untyped output gave float64 bounds, and
    # onnxruntime refused the Clip "bound to different types").
    half = _conv({"activation": "Clip", "activation_params": [0.0, 6.0]})
    for t in half.graph.initializer:
        t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype(np.float16), t.name))
    clip = unfuse_model(half).graph
    bounds = clip.node[1].input[1:]
    assert {t.name: t.data_type for t in clip.initializer if t.name in bounds} == dict.fromkeys(
        bounds, onnx.TensorProto.FLOAT16)
    _count, out = _split(_gemm({"activation": "Selu", "activation_alpha": 1.5, "activation_gamma": 0.7}))
    gemm, selu = out.graph.node
    assert {a.name for a in gemm.attribute} == {"transB"}
    assert {a.name: round(a.f, 6) for a in selu.attribute} == {"alpha": 1.5, "gamma": 0.7}


@pytest.mark.parametrize("model", [
    _conv({"activation": "Silu"}),  # no standard op
    _conv({"activation": "LeakyRelu", "activation_params": [0.1, 0.2]}),  # its parameters do not fit
    _conv({"activation": "Clip"}),
    _gemm({"activation": "Gelu"}),
    _gemm({}),  # onnxruntime runs no FusedGemm without one ("unknown kernel type")
])
def test_an_activation_with_no_standard_op_here_leaves_the_op_fused(model):
    count, out = _split(model)
    assert count == 0 and [(n.domain, n.op_type) for n in out.graph.node] == [(MS, model.graph.node[0].op_type)]


def test_an_op_of_that_name_in_another_domain_is_not_split():
    model = _conv({"activation": "Relu"})
    model.graph.node[0].domain = "my.ops"
    model.opset_import.append(helper.make_opsetid("my.ops", 1))
    assert _split(model)[0] == 0


def test_the_fused_ops_of_an_if_s_branches_are_split():
    def branch(side, act):
        node = helper.make_node("FusedGemm", ["a", f"{side}_B"], [f"{side}_y"], name=f"{side}_fg", domain=MS,
                                transB=1, activation=act, **({"activation_alpha": 0.1} if act == "LeakyRelu" else {}))
        return helper.make_graph([node], side, [], [vi(f"{side}_y", [3, M])], [init(f"{side}_B", scaled_normal(M, 16))])

    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch("t", "Relu"),
                              else_branch=branch("e", "LeakyRelu"))]
    model = make_model(nodes, [vi("a", [3, 16]), vi("cond", [], onnx.TensorProto.BOOL)], [vi("y", [3, M])],
                       domains=[MS])
    count, out = _split(model)
    branches = {a.name: [n.op_type for n in a.g.node] for a in out.graph.node[0].attribute}
    assert count == 2 and branches == {"then_branch": ["Gemm", "Relu"], "else_branch": ["Gemm", "LeakyRelu"]}
    for cond in (True, False):
        feeds = {**_feeds(model), "cond": np.array(cond)}
        assert_close(run_plain(model, feeds)[0], run_plain(out, feeds)[0], rel=1e-5)


def test_a_body_s_clip_bounds_take_the_type_of_an_outer_weight():
    """A float16 FusedConv(Clip) in an If branch reading the outer graph's weight: its bounds
    were float, and onnxruntime refused the Clip "bound to different types" (a review)."""
    f16 = onnx.TensorProto.FLOAT16
    fused = helper.make_node("FusedConv", ["x", "W"], ["t_y"], name="fc", domain=MS, pads=[1, 1, 1, 1],
                             activation="Clip", activation_params=[0.0, 6.0])
    branch = helper.make_graph([fused], "t", [], [vi("t_y", [1, M, HW, HW], f16)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e_y"])], "e", [], [vi("e_y", None, f16)])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)]
    model = make_model(nodes, [vi("x", [1, C, HW, HW], f16), vi("cond", [], onnx.TensorProto.BOOL)], [vi("y", None, f16)],
                       [init("W", scaled_normal(M, C, 3, 3).astype(np.float16))], domains=[MS])
    body = next(a.g for a in unfuse_model(model).graph.node[0].attribute if a.name == "then_branch")
    assert {t.name: t.data_type for t in body.initializer} == dict.fromkeys(body.node[1].input[1:], f16)


def _saved_cnn(hw=(10, 10)) -> onnx.ModelProto:
    """Relu -> FusedConv(Relu) -> FusedConv(Relu, + the first Relu's output as Z), as
    onnxruntime's extended level saves a residual block."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("FusedConv", ["r", "W1", "B1"], ["a"], name="c1", domain=MS, pads=[1, 1, 1, 1],
                              activation="Relu"),
             helper.make_node("FusedConv", ["a", "W2", "B2", "r"], ["y"], name="c2", domain=MS,
                              pads=[1, 1, 1, 1], activation="Relu")]
    inits = [init("W1", scaled_normal(C, C, 3, 3)), init("B1", scaled_normal(C)),
             init("W2", scaled_normal(C, C, 3, 3)), init("B2", scaled_normal(C))]
    return make_model(nodes, [vi("x", [1, C, *hw])], [vi("y", [1, C, *hw])], inits, domains=[MS])


def test_a_model_saved_by_onnxruntime_has_its_convs_read_sparsely_and_stays_exact(tmp_path):
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    model = _saved_cnn()
    onnx.save(model, path)
    zeros_only = ["--threshold=-inf", "--min-units", "100", "--sparse-relu", "on"]  # no early exits
    r = invoke("optimize", path, "-o", out, *zeros_only)
    assert r.exit_code == 0, r.output
    assert "own fused ops" not in r.output  # nothing is left hidden: no warning, but a note
    assert "its fused ops (2 FusedConv) are read as the ops they fuse" in " ".join(r.output.split())
    written = onnx.load(out)
    onnx.checker.check_model(written)
    assert [n.op_type for n in written.graph.node] == ["Relu", "ExPruneSparseConv", "ExPruneSparseConv"]
    for seed in range(3):
        feeds = _feeds(model, seed)
        assert_close(run_plain(model, feeds)[0], run_exprune(written, feeds)[0])
    again = tmp_path / "o2.onnx"
    r = invoke("optimize", out, "-o", again, *zeros_only)
    assert r.exit_code == 0 and onnx.load(again) == written, r.output
    r = cli("inspect", path)
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "its fused ops (2 FusedConv) are read as the ops they fuse" in text, text
    assert "own fused ops" not in text


def test_a_residual_after_a_fused_conv_over_open_sizes_is_proven_of_the_output_s_shape():
    """A trial's ResNet of open H/W, saved by onnxruntime: the split came after shape
    inference, the FusedConv's H/W stayed unknown, and every Conv -> Add -> Relu was refused
    ("does not provably have the output's shape"). Split first, they are read as exported."""
    from exprune_onnx import optimize_model

    result = optimize_model(_saved_cnn(("H", "W")), threshold=float("-inf"), min_units=2)
    assert [r.candidate.layer for r in result.rewritten] == ["c1", "c2"], [r.reason for r in result.rejected]
    assert not any("provably" in r.reason for r in [*result.rejected, *result.sparse_rejected])
    # The names made read as an exporter's: the conv's output, the activation after its output.
    split = unfuse_model(_saved_cnn())
    assert [(n.name, list(n.output)) for n in split.graph.node] == [
        ("", ["r"]), ("c1", ["c1_output_0"]), ("c1/Relu", ["a"]), ("c2", ["c2_output_0"]),
        ("c2_add", ["c2_add_output_0"]), ("c2/Relu", ["y"])]
