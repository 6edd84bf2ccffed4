"""The compile pipeline on real exporter quirks (issue 7, item 1), continued: what a graph
holds besides its layers survives the rewrite (value infos, ZipMap outputs, initializers
listed as inputs, output dim names, notes, sequence outputs, names reused in branches).
Which layers count as first layers is in test_rules_common.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import NEG_INF, assert_equivalent, init, make_model, node_types, run_exprune, run_plain, vi
from onnx import TensorProto, helper, numpy_helper
from quirk_models import sweep_feeds, sweep_model

import exprune_onnx
from exprune_onnx import optimize_model
from exprune_onnx.cli import main


def test_stale_value_info_in_the_input_does_not_break_the_output():
    """A graph editor left a wrong shape hint on an intermediate: onnxruntime ignores it, so must we."""
    rng = np.random.default_rng(12)
    w1 = rng.normal(size=(8, 40)).astype(np.float32)
    w2 = (rng.normal(size=(40, 40)) / 6).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["m"], name="fc"), helper.make_node("Relu", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "stale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 40])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
                              value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 7, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    res = optimize_model(model, threshold=float("-inf"))
    assert res.changed
    onnx.checker.check_model(res.model)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(run_exprune(res.model, {"x": x})[0], run_plain(model, {"x": x})[0], rtol=1e-4,
                               atol=1e-5)


def test_a_zipmap_output_keeps_its_type_and_is_left_out_of_the_comparisons(tmp_path):
    """skl2onnx's default classifier: the labels, and a ZipMap's sequence of maps of the
    probabilities. graphsurgeon wrote the latter back untyped (onnxruntime refused the
    model: exit 7, or written with --no-check), and every comparison took its Python
    lists for arrays (calibration, evaluate and verify failed): they are read as
    [N, classes] now."""
    rng = np.random.default_rng(15)
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m0"]), helper.make_node("Relu", ["m0"], ["h0"]),
             helper.make_node("MatMul", ["h0", "w1"], ["m1"], name="hidden"), helper.make_node("Relu", ["m1"], ["h1"]),
             helper.make_node("MatMul", ["h1", "w2"], ["logits"]), helper.make_node("Softmax", ["logits"], ["p"]),
             helper.make_node("ArgMax", ["p"], ["label"], axis=1, keepdims=0),
             helper.make_node("ZipMap", ["p"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64,
                                                                      helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
               helper.make_value_info("probabilities", maps)]
    inits = [init("w0", rng.normal(size=(16, 48)).astype(np.float32)),
             init("w1", rng.normal(size=(48, 48)).astype(np.float32) / 7),
             init("w2", rng.normal(size=(48, 3)).astype(np.float32))]
    model = make_model(nodes, [vi("x", ["N", 16])], outputs, inits, domains=["ai.onnx.ml"])
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(300, 16)).astype(np.float32), labels=rng.integers(0, 3, 300))
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--threshold=-inf", "--objective", "flops",
                                  "--check-data", str(tmp_path / "d.npz")])
    assert r.exit_code == 0 and "check 'label'" in r.output and "check 'probabilities'" in r.output, r.output
    assert "[W]" not in r.output  # graphsurgeon's warning on the map type, between the tables
    written = onnx.load(out)
    assert written.graph.output[1].type == model.graph.output[1].type
    onnx.checker.check_model(written)
    r = CliRunner().invoke(main, ["verify", str(path), str(out), "--data", str(tmp_path / "d.npz")])
    assert r.exit_code == 0 and "not compared" not in r.output, r.output
    assert "'label' top-1 agreement" in r.output and "'label' max abs diff" not in r.output  # of class indices
    del written.graph.output[1].type.sequence_type.elem_type.map_type.value_type.tensor_type.shape.dim[:]
    written.graph.output[1].type.sequence_type.elem_type.Clear()  # the type graphsurgeon wrote back
    onnx.save(written, tmp_path / "untyped.onnx")
    r = CliRunner().invoke(main, ["verify", str(path), str(tmp_path / "untyped.onnx"), "--data", str(tmp_path / "d.npz")])
    assert r.exit_code == 8 and "graph outputs" in " ".join(r.output.split()), r.output
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "c.onnx"), "--objective", "flops",
                                  "--calibration", str(tmp_path / "d.npz"), "--max-drop", "0.05", "--confidence", "0"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "c.onnx"), "--calibration",
                                  str(tmp_path / "d.npz"), "--score-output", "probabilities", "--confidence", "0",
                                  "--objective", "flops", "--max-drop", "0.05"])
    said = " ".join(r.output.split())
    assert r.exit_code == 0 and "accuracy drop <= 5 points on output 'probabilities'" in said, r.output
    # A sequence of tensors alone: nothing a metric reads (it was an IndexError).
    model.graph.node[-1].CopyFrom(helper.make_node("SequenceConstruct", ["p", "p"], ["probabilities"]))
    del model.graph.output[0]
    model.graph.output[0].CopyFrom(helper.make_tensor_sequence_value_info("probabilities", TensorProto.FLOAT, None))
    onnx.save(model, path)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "c.onnx"), "--calibration",
                                  str(tmp_path / "d.npz"), "--confidence", "0"])
    assert r.exit_code == 4 and "no tensor output for a metric" in " ".join(r.output.split()), r.output


def test_initializers_listed_as_inputs_stay_inputs():
    """keep_initializers_as_inputs exports (IR >= 4): the written model takes the same inputs,
    except the weights a rewrite replaced; timing copies drop them (measure/timing.py)."""
    model = sweep_model(13)
    data_input = onnx.ValueInfoProto.FromString(model.graph.input[0].SerializeToString())
    del model.graph.input[:]  # weights first, as some exporters list them
    model.graph.input.extend([*(vi(t.name, list(t.dims)) for t in model.graph.initializer), data_input])
    onnx.checker.check_model(model)
    res = optimize_model(model, threshold=NEG_INF, sparse_relu="on")
    assert res.changed and res.sparse
    inits = {t.name for t in res.model.graph.initializer}
    names = [i.name for i in res.model.graph.input]
    assert set(names) - {"inp"} == inits & {t.name for t in model.graph.initializer}
    # conv and fc1 became early-exit ops on new weights; fc2's sparse op reads G2 and C2 as
    # stored. The order is the original's: a caller may feed inputs by position.
    assert names == ["G2", "C2", "inp"]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, sweep_feeds)


def test_output_dims_keep_the_originals_names():
    """Shape inference names a concatenated dim "past_len + 1"; the written model keeps the
    original's "total_len" (a KV-cache step graph's logits)."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Concat", ["past", "x"], ["cat"], axis=1),
             helper.make_node("MatMul", ["cat", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="h2"), helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("MatMul", ["r2", "w3"], ["y"])]
    model = make_model(nodes, [vi("past", [1, "past_len", 32]), vi("x", [1, 1, 32])], [vi("y", [1, "total_len", 10])],
                       [init(n, rng.standard_normal(s).astype(np.float32))
                        for n, s in (("w1", (32, 64)), ("w2", (64, 64)), ("w3", (64, 10)))])
    # (The first layer reads a Concat of graph inputs: a first layer unless asked.)
    assert node_types(optimize_model(model, threshold=NEG_INF, min_units=32).model).count("ExPruneDenseRelu") == 1
    res = optimize_model(model, threshold=NEG_INF, min_units=32, include_first_layer=True)
    assert node_types(res.model).count("ExPruneDenseRelu") == 2
    assert res.model.graph.output[0] == model.graph.output[0]
    # An output declared without a shape is not given an empty one (which declares a scalar).
    # At the door (API and CLI) it takes the rank-3 shape inference gives it; the compiler
    # is asked directly too.
    from exprune_onnx.compiler.pipeline import optimize as compile_model
    from exprune_onnx.config import Options

    unshaped = onnx.ModelProto()
    unshaped.CopyFrom(model)
    unshaped.graph.output[0].type.tensor_type.ClearField("shape")
    assert len(optimize_model(unshaped, threshold=NEG_INF).model.graph.output[0].type.tensor_type.shape.dim) == 3
    for shapes in ({}, {"past": (1, 3, 32)}):
        options = Options(threshold=NEG_INF, min_units=32, input_shapes=shapes, include_first_layer=True)
        out = compile_model(unshaped, options).model.graph.output[0]
        assert not out.type.tensor_type.HasField("shape") or len(out.type.tensor_type.shape.dim) == 3
    assert res.model.graph.value_info  # without fixed input dims, the inferred shapes stay
    onnx.checker.check_model(res.model)
    feeds = {"past": rng.standard_normal((1, 3, 32)).astype(np.float32),
             "x": rng.standard_normal((1, 1, 32)).astype(np.float32)}
    np.testing.assert_allclose(run_exprune(res.model, feeds)[0], run_plain(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_given_shapes_still_prove_a_residual_inside_a_branch():
    """Proof shapes (pipeline.analysis_graph) come from If bodies too: with --input-shape,
    a residual block in each branch is rewritten as without it."""
    rng = np.random.default_rng(6)

    def block(side):
        p = side[0] + "_"
        ws = [init(p + w, (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)) for w in ("w1", "w2")]
        nodes = [helper.make_node("Conv", ["x1", p + "w1"], [p + "c1"], pads=[1, 1, 1, 1], name=p + "conv1"),
                 helper.make_node("Relu", [p + "c1"], [p + "r1"]),
                 helper.make_node("Conv", [p + "r1", p + "w2"], [p + "c2"], pads=[1, 1, 1, 1], name=p + "conv2"),
                 helper.make_node("Add", [p + "c2", "x1"], [p + "s"]), helper.make_node("Relu", [p + "s"], [p + "out"])]
        return helper.make_graph(nodes, side, [], [vi(p + "out", ["N", 16, 8, 8])], ws)

    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["x1"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=block("then"), else_branch=block("else"))]
    model = make_model(nodes, [vi("x", ["N", 1, 8, 8]), vi("cond", [], TensorProto.BOOL)], [vi("y", ["N", 16, 8, 8])],
                       [init("w0", (rng.standard_normal((16, 1, 3, 3)) * 0.1).astype(np.float32))])
    want = sorted(rw.candidate.layer for rw in optimize_model(model, threshold=NEG_INF, min_units=8).rewritten)
    assert want == ["e_conv1", "e_conv2", "t_conv1", "t_conv2"]
    for shapes in ({"x": (4, 1, 8, 8)}, {"x": ("N", 1, 8, 8)}):
        res = optimize_model(model, threshold=NEG_INF, min_units=8, input_shapes=shapes)
        assert sorted(rw.candidate.layer for rw in res.rewritten) == want


def test_a_sequence_output_keeps_its_type_when_shapes_are_given():
    """keep_open_dims touches tensor outputs only: clearing a sequence's "shape" turned it
    into a tensor of type 0, which onnxruntime refuses."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="h2"), helper.make_node("Relu", ["h2"], ["y"]),
             helper.make_node("SequenceConstruct", ["y", "y"], ["seq"])]
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    model = make_model(nodes, [vi("x", ["N", 64])], [vi("y", ["N", 64]), seq],
                       [init(n, rng.standard_normal((64, 64)).astype(np.float32)) for n in ("w1", "w2")])
    res = optimize_model(model, threshold=NEG_INF, min_units=32, input_shapes={"x": (4, 64)})
    assert res.changed and res.model.graph.output[1] == seq
    feeds = {"x": rng.standard_normal((2, 64)).astype(np.float32)}
    np.testing.assert_allclose(run_exprune(res.model, feeds)[0], run_plain(model, feeds)[0], rtol=1e-5, atol=1e-4)


def test_graph_and_node_notes_survive_the_rewrite():
    """torch's dynamo exporter keeps its export signature in the graph's metadata and a
    stack trace in each node's: kept on the graph and on every node left as it was."""
    rng = np.random.default_rng(15)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="first", doc_string="the first layer"),
             helper.make_node("Relu", ["h1"], ["r1"], name="act1"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc"), helper.make_node("Relu", ["h2"], ["y"])]
    helper.set_metadata_props(nodes[0], {"pkg.torch.onnx.stack_trace": "model.py:12"})
    model = make_model(nodes, [vi("x", ["N", 32])], [vi("y", ["N", 64])],
                       [init("w1", rng.standard_normal((32, 64)).astype(np.float32)),
                        init("w2", rng.standard_normal((64, 64)).astype(np.float32))], opset=18, ir_version=10)
    helper.set_metadata_props(model.graph, {"pkg.torch.export.ExportedProgram.graph_signature": "sig"})
    res = optimize_model(model, threshold=NEG_INF, min_units=32)
    assert [r.candidate.layer for r in res.rewritten] == ["fc"]
    assert {p.key: p.value for p in res.model.graph.metadata_props} == {
        "pkg.torch.export.ExportedProgram.graph_signature": "sig"}
    first = next(n for n in res.model.graph.node if n.name == "first")
    assert first.doc_string == "the first layer"
    assert {p.key: p.value for p in first.metadata_props} == {"pkg.torch.onnx.stack_trace": "model.py:12"}
    onnx.checker.check_model(res.model)


def test_the_notes_of_graph_inputs_and_outputs_survive_the_rewrite():
    """An output's doc string and denotation went whenever anything was rewritten (the
    input's stayed: a trial's); an --argmax-only output, now the class index, keeps only its
    metadata, as its doc string and denotations spoke of the scores."""
    rng = np.random.default_rng(15)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["y"], name="head")]
    model = make_model(nodes, [vi("x", ["N", 32])], [vi("y", ["N", 10])],
                       [init("w1", rng.standard_normal((32, 64)).astype(np.float32)),
                        init("w2", rng.standard_normal((64, 10)).astype(np.float32))], opset=18, ir_version=10)
    for v, doc in ((model.graph.input[0], "normalised features"), (model.graph.output[0], "class logits")):
        v.doc_string, v.type.denotation = doc, "TENSOR"
        v.type.tensor_type.shape.dim[0].denotation = "DATA_BATCH"
        v.type.tensor_type.shape.dim[1].denotation = "DATA_FEATURE"
        helper.set_metadata_props(v, {"unit": doc})
    full = ("TENSOR", ["DATA_BATCH", "DATA_FEATURE"])
    for argmax_only, output in (((), ("class logits",) + full), (("y",), ("", "", ["DATA_BATCH"]))):
        res = optimize_model(model, threshold=NEG_INF, include_first_layer=True, argmax_only=argmax_only)
        assert res.changed
        ends = (res.model.graph.input[0], res.model.graph.output[0])
        for v, want in zip(ends, (("normalised features",) + full, output)):
            got = (v.doc_string, v.type.denotation, [d.denotation for d in v.type.tensor_type.shape.dim])
            assert got == want, argmax_only
        assert [{p.key: p.value for p in v.metadata_props} for v in ends] == [{"unit": "normalised features"},
                                                                             {"unit": "class logits"}]
        onnx.checker.check_model(res.model)


def shared_branches(rng):
    """x -> If(cond): both branches run the same two-conv block on the main graph's weights
    (as a merged decoder's cache and no-cache branches share theirs), scaled differently."""
    weights = [init(w, (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)) for w in ("w1", "w2")]

    def block(side, scale):
        p = side[0] + "_"
        nodes = [helper.make_node("Conv", ["x1", "w1"], [p + "c1"], pads=[1, 1, 1, 1], name=p + "conv1"),
                 helper.make_node("Relu", [p + "c1"], [p + "r1"]),
                 helper.make_node("Conv", [p + "r1", "w2"], [p + "c2"], pads=[1, 1, 1, 1], name=p + "conv2"),
                 helper.make_node("Relu", [p + "c2"], [p + "r2"]),
                 helper.make_node("Mul", [p + "r2", p + "scale"], [p + "out"])]
        return helper.make_graph(nodes, side, [], [vi(p + "out", ["N", 16, 8, 8])],
                                 [init(p + "scale", np.float32(scale))])

    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["x1"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=block("then", 1.0), else_branch=block("else", 2.0))]
    return make_model(nodes, [vi("x", ["N", 1, 8, 8]), vi("cond", [], TensorProto.BOOL)], [vi("y", ["N", 16, 8, 8])],
                      [init("w0", (rng.standard_normal((16, 1, 3, 3)) * 0.1).astype(np.float32)), *weights])


@pytest.mark.parametrize("threshold", [NEG_INF, -1.0])
def test_weights_both_branches_share_are_written_once(threshold):
    """graphsurgeon writes an outer weight into each body that reads it, and each branch's
    rewrite of a shared layer makes its own copy of the new weights: the model came out
    twice its size. One copy of each, in the main graph, serves both."""
    rng = np.random.default_rng(9)
    model = shared_branches(rng)
    res = optimize_model(model, threshold=threshold, min_units=8, sparse_input=False)
    assert sorted(rw.candidate.layer for rw in res.rewritten) == ["e_conv1", "e_conv2", "t_conv1", "t_conv2"]
    onnx.checker.check_model(res.model, full_check=True)
    branches = [a.g for a in next(n for n in res.model.graph.node if n.op_type == "If").attribute]
    assert all(len(t.raw_data) < 1024 for b in branches for t in b.initializer)

    def weight_bytes(m):
        return sum(len(t.raw_data) for g in [m.graph, *(a.g for n in m.graph.node for a in n.attribute if a.g.name)]
                   for t in g.initializer)

    assert weight_bytes(res.model) < 1.1 * weight_bytes(model)  # twice the weights before
    # IR 3 lists every main-graph weight as a graph input too: no new weight is moved there.
    old = onnx.ModelProto()
    old.CopyFrom(model)
    old.ir_version = 3
    for t in old.graph.initializer:
        old.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for body in (a.g for a in old.graph.node[2].attribute):  # an IR 3 body holds Constant nodes
        body.node.insert(0, helper.make_node("Constant", [], [body.initializer[0].name], value=body.initializer[0]))
        del body.initializer[:]
    written = optimize_model(old, threshold=threshold, min_units=8, sparse_input=False).model
    assert {i.name for i in written.graph.input} <= {i.name for i in old.graph.input}
    feeds = {"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32)}
    for cond in (True, False):
        feeds["cond"] = np.array(cond)
        got, want = run_exprune(res.model, feeds)[0], run_plain(model, feeds)[0]
        if threshold == NEG_INF:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert got.shape == want.shape


def test_branches_that_reuse_their_names_get_layer_names_of_their_own():
    """Sibling bodies may reuse node and tensor names (each is its own scope): their layers
    are told apart by the body's path, so a config entry or a latency decision is one's."""
    rng = np.random.default_rng(10)

    def branch(side):
        w = init("w", (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32))
        nodes = [helper.make_node("Conv", ["x1", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                 helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Identity", ["r"], [side + "_out"])]
        return helper.make_graph(nodes, side, [], [vi(side + "_out", ["N", 16, 8, 8])], [w])

    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["x1"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"),
                              name="if0")]
    model = make_model(nodes, [vi("x", ["N", 1, 8, 8]), vi("cond", [], TensorProto.BOOL)], [vi("y", ["N", 16, 8, 8])],
                       [init("w0", (rng.standard_normal((16, 1, 3, 3)) * 0.1).astype(np.float32))])
    shown = exprune_onnx.inspect_model(model, min_units=8)
    names = sorted(rw.candidate.layer for rw in shown.rewritten)
    assert names == ["if0.else_branch/Conv:c", "if0.then_branch/Conv:c"]
    # Two If nodes of one name: each body's path goes by op and output, as a layer's would.
    twice = onnx.ModelProto()
    twice.CopyFrom(model)
    second = twice.graph.node.add()
    second.CopyFrom(twice.graph.node[2])
    second.output[0] = "y2"
    twice.graph.output.add().CopyFrom(vi("y2", ["N", 16, 8, 8]))
    names = sorted(rw.candidate.layer for rw in exprune_onnx.inspect_model(twice, min_units=8).rewritten)
    assert names == ["If:y.else_branch/Conv:c", "If:y.then_branch/Conv:c", "If:y2.else_branch/Conv:c",
                     "If:y2.then_branch/Conv:c"]
    res = optimize_model(model, threshold=NEG_INF, min_units=8, sparse_input=False,
                         layers={"if0.then_branch/Conv:c": exprune_onnx.config.LayerSetting(NEG_INF, skip=True)})
    assert [rw.candidate.layer for rw in res.rewritten] == ["if0.else_branch/Conv:c"]
    feeds = {"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32), "cond": np.array(False)}
    np.testing.assert_allclose(run_exprune(res.model, feeds)[0], run_plain(model, feeds)[0], rtol=1e-5, atol=1e-5)
    # verify traces each op to its own branch's layer (both write 'c').
    from exprune_onnx.io.data import random_dataset
    from exprune_onnx.verify import verify

    both = optimize_model(model, threshold=-1.0, min_units=8, sparse_input=False).model
    rows = verify(model, both, random_dataset(model, 4, 0), min_agreement=0.0)
    assert all(r.ok for r in rows), rows
    assert "2 ExPruneConvRelu" in rows[0].detail


def test_unnamed_twins_in_the_main_graph_and_a_body_are_both_rewritten():
    """An unnamed Conv -> Relu in an If branch reads the same outer input and weight as one
    in the main graph: the graph surgeon's clean-up told the two old Convs apart by
    equality (same name '', op, attributes and inputs) and stopped with "list.remove(x): x
    not in list" (exit 1). Both are rewritten now, exact at -inf on either branch."""
    w = (np.random.default_rng(3).standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)
    body = helper.make_graph([helper.make_node("Conv", ["r", "w"], ["bc"], pads=[1, 1, 1, 1]),
                              helper.make_node("Relu", ["bc"], ["br"]), helper.make_node("ReduceMax", ["br"], ["b"])],
                             "else", [], [vi("b", None)])
    then = helper.make_graph([helper.make_node("ReduceMin", ["r"], ["t"])], "then", [], [vi("t", None)])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"]),
             helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=body)]
    model = make_model(nodes, [vi("x", [1, 16, 6, 6]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                       [vi("y", [1, 16, 6, 6]), vi("z", None)], [init("w", w)])
    res = optimize_model(model, threshold=NEG_INF, min_units=8, include_first_layer=True, sparse_input=False)
    onnx.checker.check_model(res.model, full_check=True)
    assert node_types(res.model) == ["Relu", "If", "Gather", "Slice", "Conv", "ExPruneConvRelu"]
    branch = next(a.g for a in res.model.graph.node[1].attribute if a.name == "else_branch")
    assert [n.op_type for n in branch.node] == ["Gather", "Slice", "Conv", "ExPruneConvRelu", "ReduceMax"]
    for cond in (False, True):
        assert_equivalent(model, res.model, lambda rng, c=cond: {
            "x": rng.standard_normal((1, 16, 6, 6)).astype(np.float32), "cond": np.array(c)})
    assert not optimize_model(res.model, threshold=NEG_INF, min_units=8, include_first_layer=True,
                              sparse_input=False).changed


def test_a_layer_skipped_outside_the_chosen_ones_is_still_a_candidate():
    """A certified rung's choice leaves out the layers the search's timing dropped; one of
    them was counted among those that "cannot be rewritten" (a trial's recommender MLP)."""
    from helpers import three_layer_mlp

    from exprune_onnx.config import LayerSetting, Options

    options = Options(threshold=0.0, sparse_relu="off", chosen=frozenset({"h1"}),
                      layers={"h2": LayerSetting(0.0, skip=True, skip_reason="timed slower")})
    result = optimize_model(three_layer_mlp(), options)
    assert [r.candidate.layer for r in result.rewritten] == ["h1"]
    assert {r.layer: (r.reason, r.skipped) for r in result.rejected if r.layer in ("h0", "h2")} == {
        "h0": (result.rejected[0].reason, False), "h2": ("timed slower", True)}
