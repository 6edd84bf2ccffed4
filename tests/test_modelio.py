"""Writing models (exprune_onnx/io/modelio.py): what ``save_model`` leaves behind."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exprune_onnx.io.modelio import save_model

EXAMPLE = Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx"


@pytest.mark.parametrize("source", ["inline", "external"])
@pytest.mark.parametrize("external_data", [False, True], ids=["to_inline", "to_external_data"])
def test_save_model_leaves_the_model_in_memory_as_it_was(external_data, source, tmp_path):
    if source == "external":  # onnx.load then sets every tensor's data location explicitly
        onnx.save_model(onnx.load(EXAMPLE), tmp_path / "in.onnx", save_as_external_data=True, location="in.data")
        model = onnx.load(tmp_path / "in.onnx")
        tmp_path = tmp_path / "out"
        tmp_path.mkdir()
    else:
        model = onnx.load(EXAMPLE)
    before = model.SerializeToString()
    save_model(model, tmp_path / "m.onnx", external_data=external_data)
    assert model.SerializeToString() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] + (["m.onnx.data"] if external_data else [])
    if external_data:
        assert (tmp_path / "m.onnx").stat().st_size < 0.1 * EXAMPLE.stat().st_size
    written = onnx.load(tmp_path / "m.onnx")
    assert written.graph.node == model.graph.node
    for got, want in zip(written.graph.initializer, model.graph.initializer, strict=True):
        assert got.name == want.name
        np.testing.assert_array_equal(numpy_helper.to_array(got), numpy_helper.to_array(want))


def test_an_inline_output_removes_the_data_file_of_the_output_it_replaces(tmp_path):
    model = onnx.load(EXAMPLE)
    save_model(model, tmp_path / "m.onnx", external_data=True)
    (tmp_path / "other.onnx.data").write_bytes(b"not ours")
    save_model(model, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "other.onnx.data"]
    assert onnx.load(tmp_path / "m.onnx").graph.initializer == model.graph.initializer
    # A data file the replaced output did not use is not ours to remove.
    (tmp_path / "m.onnx.data").write_bytes(b"someone's")
    save_model(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").read_bytes() == b"someone's"


def test_a_model_whose_weights_file_is_missing_or_short_says_so(tmp_path):
    from exprune_onnx.errors import ModelLoadError
    from exprune_onnx.io.modelio import read_model

    save_model(onnx.load(EXAMPLE), tmp_path / "m.onnx", external_data=True)
    (tmp_path / "m.onnx.data").rename(tmp_path / "elsewhere.data")
    with pytest.raises(ModelLoadError, match=r"its weights are stored apart, in 'm.onnx.data', which is not beside it"):
        read_model(tmp_path / "m.onnx")
    (tmp_path / "m.onnx.data").write_bytes(b"short")
    with pytest.raises(ModelLoadError, match="m.onnx: not a readable ONNX model"):
        read_model(tmp_path / "m.onnx")


def _cache_layout(tmp_path: Path, location: str = "m.onnx.data") -> Path:
    """A Hugging Face cache's snapshot: the model and its data file are links to blobs."""
    (tmp_path / "blobs").mkdir()
    (tmp_path / "snap").mkdir()
    onnx.save_model(onnx.load(EXAMPLE), tmp_path / "blobs" / "m.onnx", save_as_external_data=True,
                    location=location, size_threshold=0)
    (tmp_path / "snap" / "m.onnx").symlink_to("../blobs/m.onnx")
    if location == "m.onnx.data":
        (tmp_path / "blobs" / "m.onnx.data").rename(tmp_path / "blobs" / "hash")
        (tmp_path / "snap" / "m.onnx.data").symlink_to("../blobs/hash")
    return tmp_path / "snap" / "m.onnx"


def test_a_data_file_that_is_a_link_is_read_as_onnxruntime_reads_it(tmp_path):
    from exprune_onnx.io.modelio import read_model

    model, external = read_model(_cache_layout(tmp_path))
    assert external
    want = {t.name: numpy_helper.to_array(t) for t in onnx.load(EXAMPLE).graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert not any(t.external_data for t in model.graph.initializer)


def test_a_linked_data_file_outside_the_models_folder_is_refused(tmp_path):
    from exprune_onnx.errors import ModelLoadError
    from exprune_onnx.io.modelio import read_model

    path = _cache_layout(tmp_path)
    model = onnx.load(path, load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../snap/m.onnx.data"
    onnx.save_model(model, tmp_path / "snap" / "up.onnx")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        read_model(tmp_path / "snap" / "up.onnx")


def _external_in_a_branch(folder: Path) -> Path:
    """x -> Conv -> Relu -> If(cond: Conv -> Relu in each branch); only the branches'
    weights are large enough to go to sub.data."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)

    def branch(p):
        w = numpy_helper.from_array((rng.standard_normal((32, 32, 3, 3)) * 0.1).astype(np.float32), p + "w")
        nodes = [helper.make_node("Conv", ["r1", p + "w"], [p + "c"], pads=[1] * 4),
                 helper.make_node("Relu", [p + "c"], [p + "y"])]
        return helper.make_graph(nodes, p, [], [helper.make_tensor_value_info(p + "y", TensorProto.FLOAT, ["N", 32, 8, 8])],
                                 [w])

    w1 = numpy_helper.from_array((rng.standard_normal((32, 3, 3, 3)) * 0.1).astype(np.float32), "w1")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1] * 4), helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=branch("t"), else_branch=branch("e"))], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32, 8, 8])], [w1])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "m.onnx", save_as_external_data=True, location="sub.data", size_threshold=5000)
    return folder / "m.onnx"


def test_external_data_only_inside_a_branch_is_read_and_its_file_protected(tmp_path, monkeypatch):
    """The branches' weights were not loaded (read later from the working directory: an
    internal error elsewhere), and `-o sub.data` from the model's folder overwrote them."""
    from click.testing import CliRunner

    from exprune_onnx.cli import main
    from exprune_onnx.io.modelio import external_data_files, read_model

    path = _external_in_a_branch(tmp_path)
    before = (tmp_path / "sub.data").read_bytes()
    monkeypatch.chdir(tmp_path.parent)
    model, external = read_model(path)
    assert external and external_data_files(path) == [tmp_path / "sub.data"]
    branch = next(a.g for a in model.graph.node[2].attribute if a.name == "then_branch")
    assert numpy_helper.to_array(branch.initializer[0]).shape == (32, 32, 3, 3)
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 0, r.output
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["optimize", "m.onnx", "-o", "sub.data", "--objective", "flops", "--no-check"])
    assert r.exit_code == 5 and "would overwrite the input model's external data" in r.output, r.output
    assert (tmp_path / "sub.data").read_bytes() == before
    r = CliRunner().invoke(main, ["optimize", "m.onnx", "-o", "out.onnx", "--objective", "flops", "--no-check"])
    assert r.exit_code == 0 and (tmp_path / "out.onnx.data").exists(), r.output  # external in, external out


def test_external_data_in_a_branch_inside_a_local_function_is_found(tmp_path, monkeypatch):
    """onnx's loader walks a function's If branches too; so must the reading and the check
    of what -o may overwrite (a Constant there kept its data in w.data unseen)."""
    from onnx import TensorProto, helper

    from exprune_onnx.io.modelio import all_tensors, external_data_files, read_model

    weight = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "wc")
    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=weight),
                                helper.make_node("Identity", ["c"], ["bo"])], "b", [],
                               [helper.make_tensor_value_info("bo", TensorProto.FLOAT, [64, 64])])
    body = [helper.make_node("If", ["cond"], ["c2"], then_branch=branch, else_branch=branch),
            helper.make_node("MatMul", ["x", "c2"], ["y"])]
    fn = helper.make_function("local", "F", ["x", "cond"], ["y"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("F", ["x", "cond"], ["out"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64]),
                               helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              functions=[fn])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.data", size_threshold=1024,
              convert_attribute=True)
    stored = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    assert sum(t.data_location == TensorProto.EXTERNAL for t in all_tensors(stored)) == 2  # both branches
    monkeypatch.chdir(tmp_path.parent)
    loaded, external = read_model(tmp_path / "m.onnx")
    assert external and external_data_files(tmp_path / "m.onnx") == [tmp_path / "w.data"]
    assert not any(t.data_location == TensorProto.EXTERNAL for t in all_tensors(loaded))


@pytest.mark.parametrize("kind", ["map", "optional"])
def test_a_map_input_or_an_optional_output_is_refused_with_a_reason(kind):
    """The graph library cannot carry them through: an internal error (UnboundLocalError)."""
    from onnx import TensorProto, helper

    from exprune_onnx.errors import ModelLoadError
    from exprune_onnx.io.modelio import check_model

    if kind == "map":
        value = helper.make_value_info("d", helper.make_map_type_proto(TensorProto.STRING,
                                                                        helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
        graph = helper.make_graph([helper.make_node("DictVectorizer", ["d"], ["y"], domain="ai.onnx.ml",
                                                    string_vocabulary=["a", "b"])], "g", [value],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    else:
        value = helper.make_value_info("o", helper.make_optional_type_proto(
            helper.make_tensor_type_proto(TensorProto.FLOAT, ["N", 2])))
        graph = helper.make_graph([helper.make_node("Optional", ["x"], ["o"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])], [value])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    with pytest.raises(ModelLoadError, match=f"is an? {kind}, which this compiler cannot carry through"):
        check_model(model)


def test_a_model_path_that_cannot_be_looked_at_says_why(tmp_path):
    """A loop of links read 'no such file', and a name too long raised a plain OSError
    from inspect_model (trial AH)."""
    import exprune_onnx
    from exprune_onnx.errors import ModelLoadError

    (tmp_path / "a.onnx").symlink_to(tmp_path / "b.onnx")
    (tmp_path / "b.onnx").symlink_to(tmp_path / "a.onnx")
    with pytest.raises(ModelLoadError, match="a link to no file"):
        exprune_onnx.inspect_model(tmp_path / "a.onnx")
    with pytest.raises(ModelLoadError, match="cannot be read \\(File name too long\\)"):
        exprune_onnx.inspect_model(tmp_path / ("a" * 300 + ".onnx"))


def test_a_model_written_unchanged_is_its_file_s_own_bytes(tmp_path):
    """Serialised again, a model whose file holds its fields in another order (a trial's
    dynamo export) was "written unchanged" in other bytes."""
    from click.testing import CliRunner
    from helpers import make_model, vi
    from onnx import helper

    from exprune_onnx.cli import main

    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", 4])], [vi("y", ["N", 4])])
    head, body = onnx.ModelProto(), onnx.ModelProto()
    head.ir_version, head.producer_name = model.ir_version, "other"
    head.opset_import.extend(model.opset_import)
    body.graph.CopyFrom(model.graph)
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    path.write_bytes(body.SerializeToString() + head.SerializeToString())  # the graph before the header
    assert onnx.load(path).SerializeToString() != path.read_bytes()
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out)])
    assert r.exit_code == 0 and "written unchanged" in r.output, r.output
    assert out.read_bytes() == path.read_bytes()


def test_a_file_whose_reading_fixed_the_model_is_not_copied(tmp_path):
    """Nodes out of order are sorted on reading (onnxruntime runs them; the checker refuses
    them): the file's bytes are not the model written "unchanged" (a fuzzer's seed 79)."""
    from click.testing import CliRunner
    from helpers import make_model, vi
    from onnx import helper

    from exprune_onnx.cli import main

    model = make_model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])],
                       [vi("x", ["N", 4])], [vi("y", ["N", 4])])
    model.graph.node.reverse()
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    path.write_bytes(model.SerializeToString())
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out)])
    assert r.exit_code == 0 and "written unchanged" in r.output, r.output
    onnx.checker.check_model(str(out))
