"""verify's agreement row (exprune_onnx/verify/agreement.py): a calibrated model is held to
the budget stamped on it where the data can measure it, values and maps are read as the
calibration read them, and a bar no output answers is not judged."""

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_calls import error_text, invoke
from model_edits import tampered
from onnx import helper, numpy_helper

import exprune_onnx
from exprune_onnx.verify.agreement import read_budget

MODELS = Path(__file__).resolve().parent.parent / "models"
EXAMPLE = MODELS / "fashion_cnn.onnx"
SLICE = MODELS / "fashion_test_slice.npz"
FAILED = 8


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    """Calibrated to an accuracy drop of 2 points: its answers change both ways."""
    path = tmp_path_factory.mktemp("budget") / "calibrated.onnx"
    with np.load(SLICE) as data:
        arrays = {"input": data["input"][:256], "labels": data["labels"][:256]}
    done = exprune_onnx.optimize(EXAMPLE, calibration=arrays, max_drop=0.02, objective="flops", confidence=0.0)
    assert done.changed
    onnx.save(done.model, path)
    return path


def test_a_calibrated_model_is_verified_against_its_budget(calibrated, tmp_path):
    budget = read_budget(onnx.load(calibrated))
    assert budget == {"metric": "accuracy", "max_drop": 0.02, "output": "logits", "confidence": 0.0}
    r = invoke("verify", EXAMPLE, calibrated, "--data", SLICE)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert re.search(r"accuracy drop -?\d+\.\d\d points <= 2 points, the budget it was calibrated to \(an estimate on its "
                     r"held-out part; measured on these data", text), text
    # A bar asked for is the bar: agreement, as for any model.
    r = invoke("verify", EXAMPLE, calibrated, "--data", SLICE, "--min-agreement", "1")
    assert r.exit_code == FAILED and "< 100.00%" in error_text(r)
    # Without labels the data cannot judge an accuracy budget: the agreement bar, and why it may fail.
    no_labels = tmp_path / "inputs.npz"
    with np.load(SLICE) as data:
        np.savez(no_labels, input=data["input"])
    r = invoke("verify", EXAMPLE, calibrated, "--data", no_labels, "--min-agreement", "0.999")
    assert "budget" not in r.output
    assert r.exit_code == FAILED and "< 99.90%" in error_text(r)
    # Without such a bar, no verdict on the agreement: the model may change more answers than
    # the 99% bar allows and still keep the accuracy it was calibrated to keep.
    for data in (["--data", no_labels], []):  # no labels; random inputs
        r = invoke("verify", EXAMPLE, calibrated, *data)
        assert r.exit_code == 0, r.output
        text = " ".join(r.output.split())
        assert "verified: 3 of 4 checks of" in text and "agreement not judged: the model was calibrated to a budget, " \
            "accuracy drop <= 2 points (an estimate), which needs labels" in text, text
        assert "< 99.00%" not in text and re.search(r"agreement\s*│\s*not judged\s*│", r.output), r.output


def test_a_budget_the_data_contradicts_fails(calibrated, tmp_path):
    """The same model stamped with a budget of no lost answer at all."""
    def strict(model):
        entry = next(p for p in model.metadata_props if p.key == "exprune_onnx.budget")
        entry.value = '{"metric": "lost", "max_drop": 0.0, "output": "logits", "confidence": 0.9}'

    r = invoke("verify", EXAMPLE, tampered(calibrated, tmp_path, strict), "--data", SLICE)
    assert r.exit_code == FAILED
    assert re.search(r"right answers lost \d+\.\d\d% > 0%, the budget it was calibrated to \(at confidence 0.9;",
                     error_text(r)), error_text(r)


def test_a_budget_is_not_carried_into_a_model_compiled_again(calibrated):
    """A model the compiler rewrites anew keeps none of its original's budget (an
    unchanged one is the same model, and keeps it)."""
    original = onnx.load(EXAMPLE)
    original.metadata_props.extend(p for p in onnx.load(calibrated).metadata_props if p.key == "exprune_onnx.budget")
    assert read_budget(original) is not None
    again = exprune_onnx.optimize_model(original, threshold=-1.0)
    assert again.changed and read_budget(again.model) is None


def test_a_certified_accuracy_budget_is_stamped_as_the_right_answers_it_bounds():
    """The certificate bounds right answers lost (an accuracy drop is at most that), at its
    confidence; a budget without a certificate is the held-out part's estimate."""
    from types import SimpleNamespace

    from exprune_onnx.verify.agreement import stamp_budget

    for cert, want in ((SimpleNamespace(confidence=0.9), ("lost", 0.9)), (None, ("accuracy", 0.0))):
        model = onnx.load(EXAMPLE)
        stamp_budget(model, SimpleNamespace(metric="accuracy", max_drop=0.01, output="logits", certificate=cert))
        budget = read_budget(model)
        assert (budget["metric"], budget["confidence"]) == want and budget["max_drop"] == 0.01


def test_a_budget_entry_this_version_cannot_read_is_no_budget():
    """A hand-edited or foreign entry: verify keeps its agreement bar rather than failing on it."""
    for value in ("not json", '{"metric": "accuracy"}', '{"max_drop": 0.01}', "[1, 2]"):
        model = onnx.load(EXAMPLE)
        entry = model.metadata_props.add()
        entry.key, entry.value = "exprune_onnx.budget", value
        assert read_budget(model) is None, value


@pytest.fixture(scope="module")
def embedding(tmp_path_factory) -> tuple[Path, Path]:
    """An MLP whose output holds values (an embedding), pruned at threshold 0."""
    from helpers import calibration_mlp

    model = calibration_mlp()
    model.graph.output[0].name = model.graph.node[-1].output[0] = "embedding"
    folder = tmp_path_factory.mktemp("values")
    onnx.save(model, folder / "m.onnx")
    onnx.save(exprune_onnx.optimize_model(model, threshold=0.0, min_units=8).model, folder / "o.onnx")
    return folder / "m.onnx", folder / "o.onnx"


def test_values_with_no_bar_are_said_to_be_unjudged(embedding):
    r = invoke("verify", *embedding)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "'embedding' max abs diff" in text and "of its largest |value|, mean relative error" in text
    assert "passed; not judged: output(s) 'embedding', values no check has a bar for (only a budget calibrated on " \
        "them with --metric relerr gives one)" in text


@pytest.mark.parametrize(("confidence", "max_drop", "what"), [
    (0.0, 1e-6, "'embedding': mean relative error"),
    (0.9, 1e-6, "'embedding': samples whose relative error is over 1e-06"),
    (0.0, 1.0, None),
])
def test_a_relerr_budget_is_measured_on_the_data(embedding, tmp_path, confidence, max_drop, what):
    original, optimized = embedding

    def stamp(model):
        entry = model.metadata_props.add()
        entry.key, entry.value = "exprune_onnx.budget", (f'{{"metric": "relerr", "max_drop": {max_drop}, '
                                                          f'"output": "embedding", "confidence": {confidence}}}')

    r = invoke("verify", original, tampered(optimized, tmp_path, stamp))
    if what is None:
        assert r.exit_code == 0 and "not judged" not in r.output, r.output
        assert "mean relative error" in " ".join(r.output.split())
    else:
        assert r.exit_code == FAILED and what in error_text(r), r.output


def test_a_report_names_no_answer_kind_for_values(embedding, tmp_path):
    import json

    original, _ = embedding
    report = tmp_path / "r.json"
    r = invoke("optimize", original, "-o", tmp_path / "o.onnx", "--threshold", "0", "--min-units", "8",
               "--report", report)
    assert r.exit_code == 0, r.output
    (output,) = json.loads(report.read_text())["check"]["outputs"]
    assert output["name"] == "embedding" and output["answer_kind"] is None and output["top1_agreement"] is None
    assert output["mean_rel"] > 0 and "sample_rel" not in output


def test_random_inputs_that_the_original_answers_with_one_class_are_said_to_say_little():
    """A random-weight ResNet gave every random input class 8 and its pruned copy class 4:
    'top-1 agreement 0.00%' looked like a wrecked model (a trial's). The row says why."""
    from helpers import init, make_model, vi

    from exprune_onnx.io.data import random_dataset
    from exprune_onnx.verify.agreement import agreement_row

    def head(winner: int) -> onnx.ModelProto:
        bias = np.zeros(10, np.float32)
        bias[winner] = 50.0
        w = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32) * 0.1
        return make_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], [vi("x", ["N", 4])],
                          [vi("y", ["N", 10])], [init("w", w), init("b", bias)])

    row = agreement_row(head(8), head(4), random_dataset(head(8), 16, 0), 0.99)
    assert not row.ok and "top-1 agreement 0.00%" in row.detail
    assert "(the original gives all 16 random inputs one class, so agreement on them says little: give --data)" \
        in row.detail, row.detail
    varied = head(8)
    varied.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros(10, np.float32), "b"))
    assert "says little" not in agreement_row(varied, varied, random_dataset(varied, 16, 0), 0.99).detail


def _class_map(shift: float) -> onnx.ModelProto:
    """A 1x1 conv writing 3 class scores per position, [N, 3, 5, 5]; ``shift`` moves class 0's."""
    from helpers import init, make_model, vi

    w = np.random.default_rng(1).standard_normal((3, 4, 1, 1)).astype(np.float32)
    return make_model([helper.make_node("Conv", ["x", "w", "b"], ["scores"])], [vi("x", ["N", 4, 5, 5])],
                      [vi("scores", ["N", 3, 5, 5])],
                      [init("w", w), init("b", np.array([shift, 0.0, 0.0], np.float32))])


def test_a_map_calibrated_with_labels_is_answered_per_position_without_them():
    """A segmentation model calibrated on per-pixel labels: verify without labels showed
    its map as values, and --min-agreement 0.999 then passed with 99.50% of the pixels
    agreeing (a trial's). The budget keeps the class axis the labels gave."""
    from types import SimpleNamespace

    from exprune_onnx.io.data import random_dataset
    from exprune_onnx.verify.agreement import agreement_row, stamp_budget

    original, moved = _class_map(0.0), _class_map(0.3)
    stamped = onnx.ModelProto()
    stamped.CopyFrom(moved)
    stamp_budget(stamped, SimpleNamespace(metric="accuracy", max_drop=0.01, output="scores", certificate=None,
                                          class_axis=1))
    budget = read_budget(stamped)
    assert budget["class_axis"] == 1
    data = random_dataset(original, 16, 0)
    row = agreement_row(original, moved, data, 0.999, budget=budget, bar_asked=True)
    agree = re.search(r"top-1 agreement ([\d.]+)%", row.detail)
    assert agree is not None and float(agree.group(1)) < 99.9 and not row.ok, row.detail
    # The promise itself needs labels: not judged, with the per-position agreement shown.
    row = agreement_row(original, moved, data, 0.999, budget=budget)
    assert row.ok and "needs labels" in row.not_judged and "top-1 agreement" in row.detail


def test_a_bar_asked_for_that_no_output_answers_is_not_judged():
    """--min-agreement on a model whose outputs are all values passed as if it had judged them."""
    from exprune_onnx.io.data import random_dataset
    from exprune_onnx.verify.agreement import agreement_row

    original, moved = _class_map(0.0), _class_map(0.3)
    data = random_dataset(original, 16, 0)
    row = agreement_row(original, moved, data, 0.999, bar_asked=True)
    assert row.ok and row.not_judged.startswith("--min-agreement judges answers"), row
    assert agreement_row(original, moved, data, 0.999).not_judged == ""  # no bar asked for: values, as before


def test_a_budget_of_100_points_bounds_nothing_and_the_agreement_bar_judges(calibrated, tmp_path):
    """--max-drop 1 (meant as one point) stamped a budget of 100 points, and verify passed a
    model that changed 9.5% of answers against it (trial AI)."""
    def everything(model):
        entry = next(p for p in model.metadata_props if p.key == "exprune_onnx.budget")
        entry.value = '{"metric": "accuracy", "max_drop": 1.0, "output": "logits", "confidence": 0.9}'

    model = tampered(calibrated, tmp_path, everything)
    r = invoke("verify", EXAMPLE, model, "--data", SLICE, "--min-agreement", "1")
    assert r.exit_code == FAILED and "< 100.00%" in error_text(r)
    r = invoke("verify", EXAMPLE, model, "--data", SLICE)
    text = " ".join(r.output.split())
    assert "a drop of 100%, bounds nothing: held to 99.00% agreement instead" in text, text
    assert ("< 99.00%" in text) == (r.exit_code == FAILED)
