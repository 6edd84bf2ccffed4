"""`exprune-onnx inspect` (cli.py): the candidate layers and why the others are left alone,
the ops a model this compiler wrote holds, and the same as JSON (docs/json.md)."""

import json
from collections import Counter

import onnx
from cli_calls import invoke

from exprune_onnx import ops


def test_inspect_lists_candidates_and_reasons(example):
    r = invoke("inspect", example)
    assert r.exit_code == 0, r.output
    for name in ("/conv2/conv/Conv", "/block/conv2/Conv", "/fc1/Gemm", "graph input"):
        assert name in r.output


def test_inspect_names_the_ops_an_optimised_model_holds(example, tmp_path):
    r = invoke("inspect", example)
    assert r.exit_code == 0 and "optimised already" not in r.output, r.output
    done = invoke("optimize", example, "-o", tmp_path / "o.onnx", "--threshold", "-2", "--objective", "flops")
    assert done.exit_code == 0, done.output
    held = Counter(n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node if n.domain == ops.DOMAIN)
    r = invoke("inspect", tmp_path / "o.onnx")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    listed = ", ".join(f"{c} {op}" for op, c in sorted(held.items()))
    command = f"exprune-onnx verify ORIGINAL {tmp_path / 'o.onnx'}"
    assert f"the model holds {listed} (optimised already); {command}" in text, text


def test_inspect_says_none_where_nothing_is_a_candidate(tmp_path):
    relu = onnx.helper.make_node("Relu", ["x"], ["y"])
    value = lambda name: onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 4])  # noqa: E731
    graph = onnx.helper.make_graph([relu], "g", [value("x")], [value("y")])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "r.onnx")
    r = invoke("inspect", tmp_path / "r.onnx")
    assert r.exit_code == 0, r.output
    assert "Candidate layers (r.onnx): none" in r.output and "┏" not in r.output, r.output


def test_inspect_json_holds_the_tables(example, tmp_path):
    out = tmp_path / "i.json"
    r = invoke("inspect", example, "--json", out)
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    assert got["schema"] == 1 and got["model"] == str(example)
    assert [row["layer"] for row in got["layers"]] == ["/conv2/conv/Conv", "/conv3/conv/Conv", "/block/conv1/Conv",
                                                      "/block/conv2/Conv", "/fc1/Gemm"]
    assert all(row["pruned"] is None and row["dense_flops"] > row["floor_flops"] > 0 for row in got["layers"])
    rejected = {row["layer"]: row for row in got["rejected"]}
    assert "graph input" in rejected["/conv1/conv/Conv"]["reason"] and rejected["/conv1/conv/Conv"]["rule"]
    reads = {row["layer"]: (row["reads"], row["pattern"]) for row in got["zero_input_candidates"]}
    assert reads["/block/conv2/Conv"] == ("Relu", ["Conv", "Add", "Relu"]) and reads["/fc2/Gemm"] == ("Relu", ["Gemm"])
    assert len(reads) == 5
    assert got["dense_flops_per_sample"] > 0 and got["uncounted_nodes"] == 0 and got["notes"] == []
    done = invoke("optimize", example, "-o", tmp_path / "o.onnx", "--threshold", "-2", "--no-check")
    assert done.exit_code == 0, done.output
    assert invoke("inspect", tmp_path / "o.onnx", "--json", out).exit_code == 0
    again = json.loads(out.read_text())
    assert not again["layers"] and "optimised already" in again["notes"][0]
    # The model itself is not a place to write it.
    r = invoke("inspect", example, "--json", example)
    assert r.exit_code == 5 and "would overwrite the input model" in r.output, r.output
