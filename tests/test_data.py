"""Sample data in every accepted layout, the errors for data that does not fit, and seeded random samples
(their values, and the memory they would take)."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import make_model, vi
from onnx import TensorProto, helper, numpy_helper

from exprune_onnx import workflow
from exprune_onnx.cli import main
from exprune_onnx.errors import DataError
from exprune_onnx.io.data import load_dataset, quoted_source, random_dataset
from exprune_onnx.io.feeds import InputSpec


@pytest.fixture
def model():
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    return make_model(nodes, [vi("a", ["N", 3]), vi("b", ["N", 3])], [vi("y", ["N", 3])])


def arrays(n=5):
    rng = np.random.default_rng(0)
    return {"a": rng.random((n, 3), dtype=np.float32), "b": rng.random((n, 3), dtype=np.float32)}


def test_npz_with_labels(tmp_path, model):
    a = arrays()
    np.savez(tmp_path / "d.npz", **a, labels=np.arange(5))
    d = load_dataset(tmp_path / "d.npz", model)
    assert len(d) == 5 and list(d.labels) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(d.inputs["a"], a["a"])
    chunks = list(d.batches(2))
    assert [c["a"].shape[0] for c in chunks] == [2, 2, 1]
    picked = list(d.batches(2, np.array([4, 0, 2])))
    np.testing.assert_array_equal(np.concatenate([c["b"] for c in picked]), a["b"][[4, 0, 2]])
    # One feed of exactly the batch asked for: the samples repeat in order past the fifth.
    np.testing.assert_array_equal(d.first(12)["a"], a["a"][[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]])
    assert d.first(3)["b"].shape == (3, 3)


@pytest.mark.parametrize("key", ["label", "y", "Targets"])
def test_labels_under_another_key_are_refused_not_ignored(tmp_path, model, key):
    """Labels saved as 'label' or 'y' were left unread: no accuracy, and no word why. Other
    extra arrays (file names, metadata) are still ignored."""
    np.savez(tmp_path / "d.npz", **arrays(), **{key: np.arange(5)})
    with pytest.raises(DataError, match=f"'{key}' is no model input; labels go under the key 'labels'") as info:
        load_dataset(tmp_path / "d.npz", model)
    # --check-data takes no --labels: the advice names where --labels goes (a trial followed it into an error)
    assert "(--calibration, evaluate and verify also take them apart: --labels)" in str(info.value)
    np.savez(tmp_path / "e.npz", **arrays(), names=np.arange(5))
    assert load_dataset(tmp_path / "e.npz", model).labels is None
    np.save(tmp_path / "l.npy", np.arange(5))  # labels given besides: the array is the user's business
    assert list(load_dataset(tmp_path / "d.npz", model, tmp_path / "l.npy").labels) == [0, 1, 2, 3, 4]


def test_npy_directory_is_memory_mapped(tmp_path, model):
    for name, value in arrays().items():
        np.save(tmp_path / f"{name}.npy", value)
    np.save(tmp_path / "labels.npy", np.zeros(5, np.int64))
    d = load_dataset(tmp_path, model)
    assert isinstance(d.inputs["a"], np.memmap) and d.labels.shape == (5,)


def test_onnx_test_data_layout(tmp_path, model):
    for s in range(2):
        folder = tmp_path / f"test_data_set_{s}"
        folder.mkdir()
        for i, value in enumerate(arrays(2 + s).values()):
            (folder / f"input_{i}.pb").write_bytes(numpy_helper.from_array(value).SerializeToString())
    assert len(load_dataset(tmp_path, model)) == 5
    flat = tmp_path / "test_data_set_0"
    assert len(load_dataset(flat, model)) == 2


def test_onnx_test_data_that_cannot_be_lined_up_is_bad_data(tmp_path, model):
    """A .pb not named by its input's place, and sets whose samples differ in shape."""
    folder = tmp_path / "test_data_set_0"
    folder.mkdir()
    for i, value in enumerate(arrays(2).values()):
        (folder / f"input_{'a' if i else 0}.pb").write_bytes(numpy_helper.from_array(value).SerializeToString())
    with pytest.raises(DataError, match="input_a.pb is not named input_<number>.pb"):
        load_dataset(tmp_path, model)
    (folder / "input_a.pb").rename(folder / "input_1.pb")
    other = tmp_path / "test_data_set_1"
    other.mkdir()
    for i, value in enumerate(arrays(2).values()):
        value = np.concatenate([value, value], axis=-1) if i == 0 else value
        (other / f"input_{i}.pb").write_bytes(numpy_helper.from_array(value).SerializeToString())
    with pytest.raises(DataError, match="other shapes past the sample axis in different test_data_set_"):
        load_dataset(tmp_path, model)


def test_onnx_test_data_sets_with_an_input_fed_whole(tmp_path):
    """x [1, 3] and a scale [3] without a batch axis: the sets' x rows add up, the scale is
    taken once, and sets that disagree on it are an error."""
    nodes = [helper.make_node("Mul", ["x", "scale"], ["y"])]
    model = make_model(nodes, [vi("x", [1, 3]), vi("scale", [3])], [vi("y", [1, 3])])
    scales = [np.arange(3, dtype=np.float32)] * 2
    for s, scale in enumerate(scales):
        folder = tmp_path / f"test_data_set_{s}"
        folder.mkdir(exist_ok=True)
        for i, value in enumerate([np.full((1, 3), s, np.float32), scale]):
            (folder / f"input_{i}.pb").write_bytes(numpy_helper.from_array(value).SerializeToString())
    d = load_dataset(tmp_path, model)
    assert len(d) == 2 and d.shared["scale"].shape == (3,)
    other = numpy_helper.from_array(np.ones(3, np.float32)).SerializeToString()
    (tmp_path / "test_data_set_1" / "input_1.pb").write_bytes(other)
    with pytest.raises(DataError, match="'scale' has no batch axis"):
        load_dataset(tmp_path, model)


def test_separate_labels_file(tmp_path, model):
    np.savez(tmp_path / "d.npz", **arrays())
    np.save(tmp_path / "l.npy", np.ones(5, np.int64))
    assert load_dataset(tmp_path / "d.npz", model, labels=tmp_path / "l.npy").labels.sum() == 5
    np.save(tmp_path / "l.npy", np.ones(4, np.int64))
    with pytest.raises(DataError, match=r"l\.npy: 4 labels for the 5 samples of .*d\.npz"):
        load_dataset(tmp_path / "d.npz", model, labels=tmp_path / "l.npy")


def test_labels_given_apart_and_in_the_npz_must_agree(tmp_path, model):
    """--labels beside an .npz that holds 'labels' too: the same labels are fine, others
    are refused rather than one of the two silently dropped (file and Python API alike)."""
    np.savez(tmp_path / "d.npz", **arrays(), labels=np.arange(5))
    np.save(tmp_path / "same.npy", np.arange(5))
    np.save(tmp_path / "other.npy", np.arange(5)[::-1])
    assert list(load_dataset(tmp_path / "d.npz", model, tmp_path / "same.npy").labels) == [0, 1, 2, 3, 4]
    assert list(load_dataset(tmp_path / "d.npz", model, tmp_path / "d.npz").labels) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match=r"other\.npy: these labels differ from the 'labels' in d\.npz"):
        load_dataset(tmp_path / "d.npz", model, tmp_path / "other.npy")
    with pytest.raises(DataError, match="labels: these labels differ from the 'labels' in the arrays"):
        workflow._dataset({**arrays(), "labels": np.arange(5)}, model, InputSpec(), 0, labels=np.zeros(5))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: a.pop("b"), "no array for model input 'b'"),
        (lambda a: a.update(b=a["b"].astype(np.float64)), "is float64, the model wants float32"),
        (lambda a: a.update(b=a["b"][:, :2]), "has shape [5, 2]"),
        (lambda a: a.update(b=a["b"][:4]), "share a non-zero first"),
        (lambda a: a["b"].__setitem__((0, 0), np.nan), "contains NaN"),
    ],
)
def test_mismatches_are_named(tmp_path, model, change, message):
    a = arrays()
    change(a)
    np.savez(tmp_path / "d.npz", **a)
    with pytest.raises(DataError, match=message.replace("[", r"\[")):
        load_dataset(tmp_path / "d.npz", model)


def test_an_input_of_inf_is_taken_and_nan_refused(tmp_path, model):
    """-inf is a float mask's value and a model may answer finite values on it (whether it
    does is the check's to see: NaN outputs are refused there); NaN never means anything."""
    a = arrays()
    a["b"][0, 0], a["a"][1, 2] = -np.inf, np.inf
    np.savez(tmp_path / "d.npz", **a)
    data = load_dataset(tmp_path / "d.npz", model)
    assert len(data) == 5
    a["b"][2, 2] = np.nan
    np.savez(tmp_path / "d.npz", **a)
    with pytest.raises(DataError, match="input 'b' contains NaN"):
        load_dataset(tmp_path / "d.npz", model)


def test_unreadable_inputs(tmp_path, model):
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"bad.npz: not an .npz file \(a zip of .npy arrays keyed by input name\)$"):
        load_dataset(tmp_path / "bad.npz", model)  # not numpy's word about pickles
    (tmp_path / "input_0.pb").write_bytes(b"\x08\x01")
    with pytest.raises(DataError, match="an input_<i>.pb goes in a directory, given as the data"):
        load_dataset(tmp_path / "input_0.pb", model)
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(DataError, match="cut.npz: not a readable .npz file"):
        load_dataset(tmp_path / "cut.npz", model)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing.npz", model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no"):
        load_dataset(tmp_path / "empty", model)


def test_unreadable_labels_in_a_directory(tmp_path, model):
    for name, value in arrays().items():
        np.save(tmp_path / f"{name}.npy", value)
    np.save(tmp_path / "labels.npy", np.array(["a"] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="labels.npy: not a readable labels file"):
        load_dataset(tmp_path, model)


def test_random_dataset_needs_known_dims():
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", "T"])], [vi("y", ["N", "T"])])
    with pytest.raises(DataError, match="unknown dimensions"):
        random_dataset(m, 2, 0)
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", 4])], [vi("y", ["N", 4])])
    d = random_dataset(m, 3, 0)
    assert d.inputs["x"].shape == (3, 4) and d.inputs["x"].dtype == np.float32


def masked_softmax(mask_marks: str, dtype=TensorProto.BOOL, name: str = "mask"):
    """x [N, 4] softmaxed over the positions a mask [N, 4] keeps: True (or 1) marks the ones
    to keep, or (as PyTorch's key_padding_mask) the padding to drop."""
    keep, drop = ("x", "minus_inf") if mask_marks == "keep" else ("minus_inf", "x")
    nodes = [helper.make_node("Cast", [name], ["b"], to=TensorProto.BOOL),
             helper.make_node("Where", ["b", keep, drop], ["s"]), helper.make_node("Softmax", ["s"], ["y"])]
    inits = [numpy_helper.from_array(np.array(-np.inf, np.float32), "minus_inf")]
    return make_model(nodes, [vi("x", ["N", 4]), vi(name, ["N", 4], dtype)], [vi("y", ["N", 4])], inits)


@pytest.mark.parametrize("dtype", [TensorProto.BOOL, TensorProto.INT64])
@pytest.mark.parametrize("marks, kept", [("keep", 1), ("padding", 0)])
def test_a_random_mask_keeps_what_the_model_can_answer_on(marks, kept, dtype):
    """All True (an integer named as a mask: 1), unless the original answers NaN on that and
    not on all False (a padding mask)."""
    name = "mask" if dtype == TensorProto.BOOL else "attention_mask"
    d = random_dataset(masked_softmax(marks, dtype, name), 3, 0)
    assert d.inputs[name].dtype == helper.tensor_dtype_to_np_dtype(dtype) and (d.inputs[name] == kept).all()
    assert np.array_equal(d.inputs["x"], random_dataset(masked_softmax("keep"), 3, 0).inputs["x"])


def test_an_integer_is_a_mask_by_its_name_unless_it_indexes_a_table():
    ids = make_model([helper.make_node("Gather", ["table", "mask_ids"], ["y"])], [vi("mask_ids", ["N", 3],
                     TensorProto.INT64)], [vi("y", ["N", 3, 2])], [numpy_helper.from_array(np.ones((7, 2), np.float32),
                     "table")])
    drawn = random_dataset(ids, 50, 0).inputs["mask_ids"]
    assert drawn.min() >= 0 and drawn.max() == 6  # token ids over the table's rows
    with pytest.raises(DataError, match="input 'length' is int64 and nothing says which values it takes"):
        random_dataset(masked_softmax("keep", TensorProto.INT64, "length"), 3, 0)


def test_a_mask_given_a_value_or_nan_either_way_stays_as_it_was():
    given = random_dataset(masked_softmax("padding"), 3, 0, InputSpec(values={"mask": (1.0, 1.0)}))
    assert given.inputs["mask"].all()
    nodes = [helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT), helper.make_node("Sub", ["x", "x"], ["z"]),
             helper.make_node("Div", ["z", "zero"], ["q"]), helper.make_node("Mul", ["q", "m"], ["y"])]  # 0/0 always
    inits = [numpy_helper.from_array(np.zeros(4, np.float32), "zero")]
    always = make_model(nodes, [vi("x", ["N", 4]), vi("mask", ["N", 4], TensorProto.BOOL)], [vi("y", ["N", 4])], inits)
    assert random_dataset(always, 2, 0).inputs["mask"].all()


def test_a_model_input_named_labels_takes_the_key_and_the_labels_come_from_their_own_file(tmp_path):
    """A model whose input is called 'labels': the array under that key (or labels.npy in a
    directory) is the input, not the labels, which --labels gives."""
    model = make_model([helper.make_node("Add", ["labels", "b"], ["y"])], [vi("labels", ["N", 3]), vi("b", ["N", 3])],
                       [vi("y", ["N", 3])])
    a = arrays()
    np.savez(tmp_path / "d.npz", labels=a["a"], b=a["b"])
    d = load_dataset(tmp_path / "d.npz", model)
    assert d.labels is None
    np.testing.assert_array_equal(d.inputs["labels"], a["a"])
    np.save(tmp_path / "y.npy", np.arange(5))
    assert list(load_dataset(tmp_path / "d.npz", model, labels=tmp_path / "y.npy").labels) == [0, 1, 2, 3, 4]
    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "labels.npy", a["a"])
    np.save(tmp_path / "dir" / "b.npy", a["b"])
    d = load_dataset(tmp_path / "dir", model)
    assert d.labels is None
    np.testing.assert_array_equal(d.inputs["labels"], a["a"])
    from exprune_onnx.io.feeds import InputSpec
    from exprune_onnx.workflow import _dataset

    d = _dataset({"labels": a["a"], "b": a["b"]}, model, InputSpec(), 0)  # the Python API's arrays
    assert d.labels is None
    np.testing.assert_array_equal(d.inputs["labels"], a["a"])


def test_labels_in_a_text_file_are_named_as_such(tmp_path, model):
    np.savez(tmp_path / "d.npz", **arrays())
    (tmp_path / "labels.txt").write_text("1\n0\n2\n1\n0\n")
    with pytest.raises(DataError, match=r"labels.txt: not a .npy or .npz file; save the labels with numpy.save"):
        load_dataset(tmp_path / "d.npz", model, tmp_path / "labels.txt")


def test_a_labels_file_that_cannot_be_opened_is_bad_data(tmp_path, model, monkeypatch):
    import exprune_onnx.io.data as data_module

    np.savez(tmp_path / "d.npz", **arrays())
    np.save(tmp_path / "labels.npy", np.arange(5))

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data_module, "open", refuse, raising=False)
    with pytest.raises(DataError, match="labels.npy: cannot be read"):
        data_module.read_labels(tmp_path / "labels.npy")


# ------------------------------------------------------------------ random samples: size and values


def _wide_input_model(width: int, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    return make_model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", ["N", width], dtype)],
                      [vi("y", ["N", width], dtype)])


@pytest.mark.parametrize("dtype, bounds", [(TensorProto.FLOAT, None), (TensorProto.FLOAT, (-2.0, 3.0)),
                                           (TensorProto.FLOAT16, None), (TensorProto.DOUBLE, (1.0, 2.0)),
                                           (TensorProto.INT8, (-100, 100)), (TensorProto.INT64, (0, 2**40))])
def test_random_values_drawn_in_chunks_are_one_draws_values(dtype, bounds):
    from exprune_onnx.io.feeds import random_arrays

    model = _wide_input_model(700_001, dtype)  # two samples: more than one chunk, not a multiple of it
    spec = InputSpec({}, {} if bounds is None else {"x": bounds})
    got = random_arrays(model, 2, 7, spec)[0]["x"]
    rng = np.random.default_rng(7)
    if bounds is None:
        want = rng.random((2, 700_001))
    elif dtype in (TensorProto.INT8, TensorProto.INT64):
        want = rng.integers(bounds[0], bounds[1] + 1, (2, 700_001))
    else:
        want = rng.uniform(*bounds, (2, 700_001))
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    assert got.dtype == np_type and np.array_equal(got, want.astype(np_type))


def test_random_samples_that_cannot_fit_are_refused_before_drawing(monkeypatch):
    import exprune_onnx.io.feeds as feeds

    monkeypatch.setattr(feeds, "available_bytes", lambda: 64 << 20)
    model = _wide_input_model(1000)
    random_dataset(model, 10_000, 0)  # 38 MiB, and 8 MiB to draw in
    with pytest.raises(DataError, match="^100000 random samples of input.s. 'x' need 389 MiB of memory and 64 MiB "
                                        "is available: ask for fewer .optimize --check-samples, verify --samples., or "
                                        "give sample data$"):
        random_dataset(model, 100_000, 0)


def test_the_check_refuses_random_samples_the_machine_cannot_hold(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_wide_input_model(1000), path)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--check-samples",
                                  str(10**12)])
    assert r.exit_code == 6 and "Traceback" not in r.output, r.output
    assert f"{10**12} random samples of input(s) 'x' need" in r.stderr
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("source, text", [
    ("calib.npz", "'calib.npz'"),
    ("calib.npz, held out", "'calib.npz' (its held-out part)"),
    ("my, data.npz, calibrated on", "'my, data.npz' (the part calibrated on)"),
    ("a, b.npz", "'a, b.npz'"),  # a comma in a name is no part
    ("random", "seeded random inputs"),  # no file: not quoted as though it were one
])
def test_a_part_of_the_data_is_named_outside_the_quotes(source, text):
    assert quoted_source(source) == text


def test_a_labels_file_holding_a_data_array_is_refused(tmp_path):
    """--labels given the data .npz (one array, 'input') took the images as labels, and the
    error then spoke of labels of shape [N, 1, 28, 28] (a trial's)."""
    from exprune_onnx.io.data import read_labels

    np.savez(tmp_path / "data.npz", input=np.zeros((4, 2), np.float32))
    with pytest.raises(DataError, match="holds no 'labels' array, only 'input' \\(a data file\\?\\)"):
        read_labels(tmp_path / "data.npz")
    np.savez(tmp_path / "plain.npz", np.arange(4))  # numpy.savez's own name, arr_0
    np.savez(tmp_path / "y.npz", y=np.arange(4))
    assert read_labels(tmp_path / "plain.npz").tolist() == read_labels(tmp_path / "y.npz").tolist() == [0, 1, 2, 3]


def test_a_data_error_names_its_file_once():
    from exprune_onnx.errors import OriginalRunFailed
    from exprune_onnx.io.data import named

    assert str(named(DataError("label 109 is not a class"), "d.npz", "--data")) == "--data 'd.npz': label 109 is not a class"
    assert str(named(DataError("label 9 is not a class"), "d.npz", "--calibration", "y.npy")) == \
        "--calibration 'd.npz' with --labels 'y.npy': label 9 is not a class"
    said = DataError("d.npz: no array for model input 'x'")
    assert named(said, "d.npz", "--data") is said  # named already
    failed = OriginalRunFailed("onnxruntime cannot run the original model")
    assert named(failed, "d.npz", "--data") is failed  # a subclass says its own
