"""`exprune-onnx verify`: honest models pass, each kind of tampering fails with exit 8 and says what."""

import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_calls import error_text, invoke
from model_edits import tampered
from onnx import helper, numpy_helper

import exprune_onnx
from exprune_onnx.verify import exact_copy

MODELS = Path(__file__).resolve().parent.parent / "models"
EXAMPLE = MODELS / "fashion_cnn.onnx"
SLICE = MODELS / "fashion_test_slice.npz"
FAILED = 8

# Far enough below 0 that the model agrees with the original on >= 99% of the slice
# (99.8%), yet it prunes: a finite threshold, not the exact -inf.
THRESHOLD = -8.0


@pytest.fixture(scope="module")
def optimized(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("verify") / "fashion_cnn.exprune.onnx"
    onnx.save(exprune_onnx.optimize_model(EXAMPLE, threshold=THRESHOLD).model, path)
    return path


def _ops(model, op_type):
    return [n for n in model.graph.node if n.op_type == op_type]


def _producer(model, name):
    return next(n for n in model.graph.node if name in n.output)


def _edit(model, name, fn):
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t).copy()), name))


def _bump(index):
    def fn(a):
        a[index] += 1.0
        return a
    return fn


def change_tail(model):
    op = _ops(model, "ExPruneConvRelu")[1]
    _edit(model, op.input[2], _bump((3, 7, 0, 1)))


def change_head(model):
    op = _ops(model, "ExPruneConvRelu")[0]
    _edit(model, _producer(model, op.input[0]).input[1], _bump((0, 0, 0, 0)))


def swap_units(model):
    op = _ops(model, "ExPruneConvRelu")[2]
    gather = _producer(model, op.input[1])
    assert gather.op_type == "Gather"
    _edit(model, gather.input[1], lambda a: a[[1, 0, *range(2, len(a))]])


def _tail_units(model):
    op = _ops(model, "ExPruneDenseRelu")[0]
    return next(a for a in op.attribute if a.name == "tail_units"), op


def swap_tail_units(model):
    attr, _ = _tail_units(model)
    attr.ints[0], attr.ints[1] = attr.ints[1], attr.ints[0]


def short_tail_units(model):
    attr, _ = _tail_units(model)
    del attr.ints[-1]


def drop_tail_units(model):
    attr, op = _tail_units(model)
    op.attribute.remove(attr)


def change_bias(model):
    op = _ops(model, "ExPruneDenseRelu")[0]
    _edit(model, op.input[3], _bump(0))


def insert_foreign_node(model):
    gemm = _ops(model, "Flatten")[-1]  # an untouched node (the last Gemm is now an ExPruneSparseMatMul)
    out = gemm.output[0]
    gemm.output[0] = out + "_before"
    model.graph.node.insert(list(model.graph.node).index(gemm) + 1,
                            helper.make_node("Identity", [out + "_before"], [out]))


def drop_residual(model):
    op = next(o for o in _ops(model, "ExPruneConvRelu") if len(o.input) > 4 and o.input[4])
    del op.input[4:]


def unknown_op(model):
    _ops(model, "ExPruneConvRelu")[0].op_type = "ExPruneFooRelu"


def unread_attribute(op_type, name, value):
    def change(model):
        _ops(model, op_type)[0].attribute.append(helper.make_attribute(name, value))
    return change


def other_conv_weights(model):
    # The same network with one rewritten layer retrained: the optimised model is not of it.
    _edit(model, "conv2.conv.weight", lambda a: a * np.float32(1.1))


def test_honest_model_verifies(optimized):
    r = invoke("verify", EXAMPLE, optimized)
    assert r.exit_code == 0, r.output
    assert r.output.count("│ pass ") == 4 and "FAIL" not in r.output
    assert "4 ExPruneConvRelu, 1 ExPruneDenseRelu" in r.output
    assert "verified: all 4 checks" in r.output


def test_imports_of_domains_no_node_uses_are_no_change(optimized, tmp_path):
    """onnxruntime's saved graph (optimized_model_filepath) imports eight domains none of its
    nodes use: verify failed it on them though its graph was unchanged (a trial's). An import
    of a domain in use that differs still fails."""
    def unused(model):
        model.opset_import.extend([helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("ai.onnx.ml", 5)])

    def other_default(model):
        next(o for o in model.opset_import if o.domain in ("", "ai.onnx")).version = 18

    assert invoke("verify", EXAMPLE, tampered(optimized, tmp_path, unused)).exit_code == 0
    r = invoke("verify", EXAMPLE, tampered(optimized, tmp_path, other_default))
    assert r.exit_code == FAILED and "opset imports" in r.output, r.output


def test_swapped_models_are_named(optimized):
    r = invoke("verify", optimized, EXAMPLE)
    assert r.exit_code == 2 and "the original goes first" in r.output
    # Both the same rewrite: its structure row said there were no early-exit ops (a trial's).
    r = invoke("verify", optimized, optimized)
    assert r.exit_code == 0 and "no early-exit ops" not in r.output, r.output
    assert "no early-exit op beyond the original's" in " ".join(r.output.split()), r.output


def test_honest_model_verifies_on_data(optimized):
    r = invoke("verify", EXAMPLE, optimized, "--data", SLICE)
    assert r.exit_code == 0, r.output
    assert "512 samples of 'fashion_test_slice.npz'" in r.output and "accuracy" in r.output


def test_agreement_below_the_bar_fails(optimized):
    # 99.8% top-1 agreement on the slice: below a bar of 100% (the model does prune).
    r = invoke("verify", EXAMPLE, optimized, "--data", SLICE, "--min-agreement", "1")
    assert r.exit_code == FAILED, r.output
    assert "agreement: 'logits'" in error_text(r) and "< 100.00%" in error_text(r)


@pytest.mark.parametrize("change,message", [
    (change_tail, "_w_tail' does not match the original's weight"),  # the tail weight alone
    (change_head, "the head weight"),
    (swap_units, "the unit order of Gather"),
    (change_bias, "the bias"),
    (swap_tail_units, "the unit order of Gather 'fc1/Gemm_reorder' does not match the weights"),
    (short_tail_units, "is not a permutation of the original's"),
    (drop_tail_units, "the partial product reads Gather 'fc1/Gemm_reorder', not a Slice of the op's input x"),
    (insert_foreign_node, "outside the rewritten layers the graph differs from the original: extra Identity x1"),
    (unknown_op, "unknown op ExPruneFooRelu in domain ai.exprune"),
    (drop_residual, "the op adds no residual, the original layer adds '"),
    # onnxruntime hands a custom op attributes it never reads without a word.
    (unread_attribute("ExPruneConvRelu", "alpha", 0.5), "has attribute(s) alpha, which ExPruneConvRelu does not take"),
    (unread_attribute("ExPruneDenseRelu", "keepdims", 1), "has attribute(s) keepdims, which ExPruneDenseRelu does not"),
    (unread_attribute("ExPruneSparseMatMul", "transB", 1), "(it reads none)"),
], ids=["tail", "head", "permutation", "bias", "tail-units-swapped", "tail-units-short", "tail-units-dropped",
        "foreign-node", "unknown-op", "residual-dropped", "unread-attr-conv", "unread-attr-dense",
        "unread-attr-sparse-matmul"])
def test_tampering_fails(optimized, tmp_path, change, message):
    r = invoke("verify", EXAMPLE, tampered(optimized, tmp_path, change))
    assert r.exit_code == FAILED, r.output
    assert message in error_text(r)


def test_a_model_onnxruntime_cannot_run_gives_one_line_on_stderr(optimized, tmp_path):
    """onnxruntime logs a failing op itself, straight to the process's stderr (so in a
    process of its own here): the command's error line must be the only one."""
    import os
    import subprocess
    import sys

    def bump_k(model):
        attr = next(a for a in _ops(model, "ExPruneConvRelu")[0].attribute if a.name == "k")
        attr.i += 1

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "exprune_onnx.cli", "verify", str(EXAMPLE),
                        str(tampered(optimized, tmp_path, bump_k))], capture_output=True, text=True, env=env)
    assert r.returncode == FAILED, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: verification failed"), r.stderr


def test_tampered_weights_also_break_exactness(optimized, tmp_path):
    r = invoke("verify", EXAMPLE, tampered(optimized, tmp_path, change_tail))
    assert r.exit_code == FAILED
    # weights and exact-at--inf both fail; structure and agreement need not.
    assert "(2 of 4 checks)" in error_text(r) or "(3 of 4 checks)" in error_text(r)
    assert "with nothing pruned" in " ".join(r.output.split())


def test_different_original_fails(optimized, tmp_path):
    other = tampered(EXAMPLE, tmp_path, other_conv_weights)
    r = invoke("verify", other, optimized)
    assert r.exit_code == FAILED, r.output
    assert "layer '/conv2/conv/Conv'" in error_text(r) and "do not match the original's weight" in error_text(r)


def test_unrelated_original_fails(optimized, tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "tiny",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 10])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 10])])
    tiny = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    tiny.ir_version = 8
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny, path)
    r = invoke("verify", path, optimized)
    assert r.exit_code == FAILED, r.output
    assert "which is not the result of a layer the compiler rewrites" in error_text(r)
    assert r.output.count("FAIL") == 4


@pytest.mark.parametrize("options", [
    {"emit_stats": True, "unit_order": "stored"},
    {"rule": "statstest", "alpha": 0.001},
    {"rule": "certified"},
], ids=["stats-stored", "statstest", "certified"])
def test_other_compiler_settings_verify(tmp_path, options):
    path = tmp_path / "o.onnx"
    onnx.save(exprune_onnx.optimize_model(EXAMPLE, threshold=THRESHOLD, **options).model, path)
    r = invoke("verify", EXAMPLE, path, "--min-agreement", "0.9")
    assert r.exit_code == 0, r.output
    stats = len(onnx.load(path).graph.output) - len(onnx.load(EXAMPLE).graph.output)
    assert (stats > 0) == bool(options.get("emit_stats"))
    counters = f", plus {stats} counter output(s)" if stats else ""  # (it said the outputs were the original's)
    assert f"its inputs and outputs as in the original{counters} " in re.sub(r"[│\s]+", " ", r.output), r.output


def test_unchanged_model_verifies():
    r = invoke("verify", EXAMPLE, EXAMPLE)
    assert r.exit_code == 0, r.output
    assert "no early-exit ops" in r.output


def test_bad_input_is_one_line(optimized, tmp_path):
    r = invoke("verify", EXAMPLE, tmp_path / "missing.onnx")
    assert r.exit_code == 3 and "no such file" in error_text(r)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model \x00\x01")
    r = invoke("verify", junk, optimized)
    assert r.exit_code == 3 and "junk.onnx" in error_text(r)
    bad = tmp_path / "d.npz"
    np.savez(bad, wrong=np.zeros((2, 1, 28, 28), np.float32))
    r = invoke("verify", EXAMPLE, optimized, "--data", bad)
    assert r.exit_code == 6 and "no array for model input 'input'" in error_text(r)
    assert invoke("verify", EXAMPLE, optimized, "--labels", bad).exit_code == 2
    words = tmp_path / "words.npy"  # labels that are no class indices: the data's fault, as evaluate says
    np.save(words, np.array(["9", "2"]))
    np.savez(bad, input=np.zeros((2, 1, 28, 28), np.float32))
    r = invoke("verify", EXAMPLE, optimized, "--data", bad, "--labels", words)
    assert r.exit_code == 6 and "whole class indices" in error_text(r)
    for option in ("--min-agreement", "--tolerance"):  # click's ranges let nan through
        r = invoke("verify", EXAMPLE, optimized, option, "nan")
        assert r.exit_code == 2 and "nan is not a number" in r.output


def test_exact_copy_prunes_nothing(tmp_path):
    model = exprune_onnx.optimize_model(EXAMPLE, rule="statstest").model
    exact = exact_copy(model)
    for node in exact.graph.node:
        if node.domain == exprune_onnx.DOMAIN and node.op_type in exprune_onnx.ops.PRUNE_OPS:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["threshold"] == -math.inf and "rule" not in attrs and "z_crit" not in attrs
    # The original is untouched.
    assert any(a.name == "rule" for n in model.graph.node for a in n.attribute)


def ir3_branch_model() -> onnx.ModelProto:
    """IR 3 (initializers listed as inputs) at opset 9, an If whose branches hold a
    Gemm -> Relu with its weights as Constant nodes, as IR 3 bodies must."""
    rng = np.random.default_rng(3)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    def branch(tag):
        w, b = weight(tag + "_w", 64, 64), weight(tag + "_b", 64)
        nodes = [helper.make_node("Constant", [], [w.name], value=w), helper.make_node("Constant", [], [b.name], value=b),
                 helper.make_node("Gemm", ["h0", w.name, b.name], [tag + "_a"], transB=1, name=tag + "_gemm"),
                 helper.make_node("Relu", [tag + "_a"], [tag + "_y"])]
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(tag + "_y", 1, ["N", 64])])

    inits = [weight("w0", 64, 32), weight("b0", 64), weight("w2", 10, 64), weight("b2", 10)]
    nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["a0"], transB=1), helper.make_node("Relu", ["a0"], ["h0"]),
             helper.make_node("If", ["cond"], ["hb"], then_branch=branch("t"), else_branch=branch("e")),
             helper.make_node("Gemm", ["hb", "w2", "b2"], ["y"], transB=1)]
    inputs = [helper.make_tensor_value_info("x", 1, ["N", 32]), helper.make_tensor_value_info("cond", 9, [])]
    graph = helper.make_graph(nodes, "g", inputs + [helper.make_tensor_value_info(t.name, 1, list(t.dims)) for t in inits],
                              [helper.make_tensor_value_info("y", 1, ["N", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    onnx.checker.check_model(model)
    return model


def test_verify_reads_an_ir3_models_branch_weights_as_the_compiler_wrote_them(tmp_path):
    """The compiler writes an IR 3 body's weights back as Constant nodes; verify reads them
    as it reads the original's, and still catches a changed one."""
    original = ir3_branch_model()
    res = exprune_onnx.optimize_model(original, threshold=float("-inf"))
    assert sorted(r.candidate.layer for r in res.rewritten) == ["e_gemm", "t_gemm"]
    onnx.save(original, tmp_path / "m.onnx")
    onnx.save(res.model, tmp_path / "o.onnx")
    r = invoke("verify", str(tmp_path / "m.onnx"), str(tmp_path / "o.onnx"))
    assert r.exit_code == 0, r.output
    branch = next(n for n in res.model.graph.node if n.op_type == "If").attribute[0].g
    tail = next(n for n in branch.node if n.op_type == "Constant" and "tail" in n.output[0])
    values = numpy_helper.to_array(tail.attribute[0].t).copy()
    values.flat[0] += 1.0
    tail.attribute[0].t.CopyFrom(numpy_helper.from_array(values, tail.attribute[0].t.name))
    onnx.save(res.model, tmp_path / "o.onnx")
    r = invoke("verify", str(tmp_path / "m.onnx"), str(tmp_path / "o.onnx"))
    assert r.exit_code != 0 and "weights" in r.output and "FAIL" in r.output, r.output


def constant_weight_mlp() -> onnx.ModelProto:
    """x -> MatMul -> Relu -> MatMul -> Relu -> MatMul -> y, each weight a Constant node
    (TorchScript exports, Paddle2ONNX)."""
    rng = np.random.default_rng(4)
    nodes, last = [], "x"
    for i, (n, m) in enumerate(((16, 48), (48, 48), (48, 10))):
        w = numpy_helper.from_array((rng.standard_normal((n, m)) / np.sqrt(n)).astype(np.float32), f"w{i}")
        nodes += [helper.make_node("Constant", [], [f"w{i}"], value=w),
                  helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"], name=f"fc{i}")]
        last = f"m{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 16])],
                              [helper.make_tensor_value_info("y", 1, ["N", 10])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_model_with_constant_nodes_written_unchanged_verifies(tmp_path):
    """verify reads Constant nodes as weights on both sides, also when nothing changed."""
    original = constant_weight_mlp()
    res = exprune_onnx.optimize_model(original, threshold=float("-inf"), min_units=10**6, sparse_input=False)
    assert not res.changed
    onnx.save(original, tmp_path / "m.onnx")
    r = invoke("verify", tmp_path / "m.onnx", tmp_path / "m.onnx")
    assert r.exit_code == 0, r.output


def test_a_model_this_compiler_wrote_verifies_as_an_original(tmp_path):
    """Given its own output again: unchanged, or with more rewritten (the first run's ops,
    at a finite threshold, are the original's nodes, run at -inf on both sides by the
    exactness check; the version key is not written twice)."""
    original = constant_weight_mlp()
    first = exprune_onnx.optimize_model(original, threshold=0.0, min_units=8)
    again = exprune_onnx.optimize_model(first.model, threshold=0.0, min_units=8)
    more = exprune_onnx.optimize_model(first.model, threshold=float("-inf"), min_units=8, include_first_layer=True)
    assert first.rewritten and not again.changed and more.rewritten
    onnx.checker.check_model(more.model)
    assert [p.key for p in more.model.metadata_props].count("exprune_onnx.version") == 1
    onnx.save(first.model, tmp_path / "o.onnx")
    for name, model in (("oo.onnx", again.model), ("more.onnx", more.model)):
        onnx.save(model, tmp_path / name)
        r = invoke("verify", tmp_path / "o.onnx", tmp_path / name, "--min-agreement", "0.9")
        assert r.exit_code == 0, (name, r.output)


def test_a_branch_output_pointed_elsewhere_fails_the_structure(tmp_path):
    """An If's else branch made to output another tensor: random inputs may never take
    that branch, so the structure check must see it."""
    original = ir3_branch_model()
    original.ir_version = 8
    res = exprune_onnx.optimize_model(original, threshold=float("-inf"))
    onnx.save(original, tmp_path / "m.onnx")
    branch = next(n for n in res.model.graph.node if n.op_type == "If").attribute[1].g
    partial = next(n.output[0] for n in branch.node if n.op_type in ("MatMul", "Gemm"))
    branch.output[0].name = partial
    onnx.save(res.model, tmp_path / "o.onnx")
    r = invoke("verify", tmp_path / "m.onnx", tmp_path / "o.onnx")
    assert r.exit_code == FAILED and "If -> 'hb' differs from the original's node" in error_text(r), r.output


def test_a_changed_partial_product_of_squares_fails(tmp_path):
    """statstest's second partial product must have the head's geometry: here dilated,
    with pads that keep its shape, so that it runs and prunes other outputs."""
    model = exprune_onnx.optimize_model(EXAMPLE, threshold=THRESHOLD, rule="statstest", alpha=0.001).model
    square = next(n for n in model.graph.node if n.op_type == "Conv" and "sq" in n.name)
    kept = [a for a in square.attribute if a.name not in ("dilations", "pads")]
    del square.attribute[:]
    square.attribute.extend([*kept, helper.make_attribute("dilations", [2, 2]),
                             helper.make_attribute("pads", [2, 2, 2, 2])])
    onnx.save(model, tmp_path / "o.onnx")
    r = invoke("verify", EXAMPLE, tmp_path / "o.onnx", "--min-agreement", "0")
    assert r.exit_code == FAILED and "(the partial product of squares) has attributes" in error_text(r), r.output


def test_weights_the_branches_share_after_export_still_verify(tmp_path):
    """The export keeps one copy, in the main graph, of a weight two If branches hold the
    same (a merged decoder's); a branch's untouched node then reads it under the other
    branch's name, and verify called the tool's own output tampered (a trial's report).
    A constant is compared by its value, not its name."""
    from helpers import if_mlp

    rng = np.random.default_rng(4)
    model = if_mlp(rng)
    path, out, data = tmp_path / "if.onnx", tmp_path / "o.onnx", tmp_path / "d.npz"
    onnx.save(model, path)
    np.savez(data, x=rng.standard_normal((32, 16)).astype(np.float32), cond=np.array(True))
    r = invoke("optimize", str(path), "-o", str(out), "--threshold", "-2", "--objective", "flops", "--min-units", "8",
               "--sparse-relu", "off", "--check-data", str(data))
    assert r.exit_code == 0, r.output
    written = onnx.load(out)
    assert [t.name for t in written.graph.initializer] == ["e_w1"]  # one copy, hoisted
    then_body = next(a.g for a in written.graph.node[0].attribute if a.name == "then_branch")
    else_body = next(a.g for a in written.graph.node[0].attribute if a.name == "else_branch")
    assert {n.op_type for n in else_body.node} >= {"ExPruneDenseRelu"} and "e_w1" in then_body.node[0].input
    r = invoke("verify", str(path), str(out), "--data", str(data), "--min-agreement", "0")
    assert r.exit_code == 0 and "structure │ pass" in " ".join(r.output.split()), r.output

