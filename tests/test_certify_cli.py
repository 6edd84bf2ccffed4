"""--confidence through the command line (certify.py, cli.py): a certificate end to end, at a
fixed batch, with too little data, and the usage and data errors around it."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import calibration_dataset, calibration_mlp

from exprune_onnx.cli import main
from exprune_onnx.tuning.risk import RiskTest
from exprune_onnx.tuning.search import split_indices


@pytest.fixture
def tiny(tmp_path):
    model = calibration_mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    data = calibration_dataset(model, count=1200)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=data.inputs["x"], labels=data.labels)
    return path, npz


def test_cli_end_to_end_with_a_certificate(tiny, tmp_path):
    path, npz = tiny
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--calibration", str(npz), "--max-drop",
                                  "0.05", "--objective", "flops", "--report", str(rep)])
    assert r.exit_code == 0, r.output
    cert = json.loads(rep.read_text())["certificate"]
    assert cert["confidence"] == 0.9 and cert["testing_samples"] == 600 and cert["samples_needed"] == 45
    assert cert["certified_rung"] >= 1 and cert["certified_bound"] <= 0.05 and cert["enough_samples"]
    assert cert["loss"] == "right answers lost" and cert["observed_losses"] <= RiskTest(600, 0.05, 0.9).limit()
    assert "certified" in r.output and "risk <=" in r.output and "600 samples the search never saw" in r.output
    # The table names the testing part as the summary does (held out), not with a word of its own.
    assert "testing part, held out" in " ".join(r.output.split())
    onnx.checker.check_model(onnx.load(out))


def test_cli_certifies_a_model_with_a_fixed_batch(tiny, tmp_path):
    """torch.onnx.export fixes the batch at 1 by default: the ladder's and the testing
    part's runs must feed it one sample at a time too."""
    path, npz = tiny
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, path)
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--calibration", str(npz), "--max-drop",
                                  "0.05", "--objective", "flops", "--report", str(rep)])
    assert r.exit_code == 0, r.output
    cert = json.loads(rep.read_text())["certificate"]
    assert cert["testing_samples"] == 600 and cert["certified_rung"] >= 1
    assert onnx.load(out).graph.input[0] == model.graph.input[0]


def test_cli_says_plainly_when_the_data_is_too_small(tiny, tmp_path):
    """Known from the counts alone: refused before the search (it ran for minutes, then
    wrote the original), nothing written; the search itself, as the benchmarks call it,
    still writes the original and says so in its table (above)."""
    path, npz = tiny
    out = tmp_path / "o.onnx"
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--calibration", str(npz), "--max-drop",
                                  "0.001", "--objective", "flops"])
    text = " ".join(r.output.split())
    assert r.exit_code == 6 and "Traceback" not in text, r.output
    assert ("the calibration data is too small: certifying 0.1% at confidence 0.9 needs at least 2302 testing "
            "samples with no loss, there are 600; give 4603 or more calibration samples, a larger --max-drop or a "
            "lower --confidence") in text, text
    assert "search" not in text and not out.exists()
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--calibration", str(npz), "--max-drop",
                                  "0.001", "--objective", "flops", "--confidence", "0"])
    assert r.exit_code == 0 and out.exists(), r.output


@pytest.mark.parametrize("value", ["1.5", "-0.1", "1", "nan"])
def test_bad_confidence_is_a_usage_error(tiny, tmp_path, value):
    path, npz = tiny
    out = tmp_path / "o.onnx"
    before = path.read_bytes()
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(out), "--calibration", str(npz),
                                  f"--confidence={value}"])
    assert r.exit_code == 2 and "confidence must be a number in [0, 1)" in r.output
    assert "Traceback" not in r.output and not out.exists() and path.read_bytes() == before


@pytest.mark.parametrize("value", ["0.01", "0.49"])
def test_a_confidence_under_even_odds_is_a_usage_error(tiny, tmp_path, value):
    path, npz = tiny
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(npz),
                                  f"--confidence={value}"])
    assert r.exit_code == 2 and f"confidence {value} promises less than even odds" in r.output, r.output
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "inf"])
def test_bad_budget_is_a_usage_error(tiny, tmp_path, value):
    path, npz = tiny
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(npz),
                                  f"--max-drop={value}"])
    assert r.exit_code == 2 and "--max-drop" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(("labels", "message"), [
    (lambda y: y - 1, "label -1 is not a class"),
    (lambda y: y + 10, "its classes are 0 to 9"),
    (lambda y: np.eye(10, dtype=np.int64)[y],
     "labels have shape [N, 10], the model's predictions [N] (N samples): give one class index per prediction"),
], ids=["negative", "beyond_the_classes", "one_hot"])
def test_labels_that_name_no_class_are_refused(tiny, tmp_path, labels, message):
    """Such labels are wrong before and after pruning: no answer could be lost, and the
    most aggressive rung would be certified."""
    path, npz = tiny
    with np.load(npz) as f:
        x, y = f["x"], f["labels"]
    np.savez(npz, x=x, labels=labels(y))
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(npz),
                                  "--max-drop", "0.05", "--objective", "flops"])
    assert r.exit_code == 6 and message in r.output and "Traceback" not in r.output
    assert f"--calibration '{npz.name}'" in r.output, r.output  # which file held them
    assert not (tmp_path / "o.onnx").exists()


def test_a_label_error_names_the_labels_file_given_apart(tiny, tmp_path):
    path, npz = tiny
    with np.load(npz) as f:
        x, y = f["x"], f["labels"]
    np.savez(npz, x=x)
    np.save(tmp_path / "y.npy", y + 10)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(npz),
                                  "--labels", str(tmp_path / "y.npy"), "--max-drop", "0.05", "--objective", "flops"])
    assert r.exit_code == 6, r.output
    assert f"--calibration '{npz.name}' with --labels 'y.npy': label" in r.output, r.output


@pytest.mark.parametrize("confidence", ["0.9", "0"])
def test_a_bad_label_in_the_part_the_search_never_sees_is_refused(tiny, tmp_path, confidence):
    """The search sees one part (the ladder part, or the calibration part); the label of a
    sample it never runs is checked all the same (it was counted as a wrong answer)."""
    path, npz = tiny
    with np.load(npz) as f:
        x, y = f["x"], f["labels"].copy()
    _seen, unseen = split_indices(len(y), 0.5, 0)  # the CLI's default --holdout and --seed
    y[unseen[0]] = 10
    np.savez(npz, x=x, labels=y)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(npz),
                                  "--max-drop", "0.05", "--objective", "flops", "--confidence", confidence])
    assert r.exit_code == 6 and "label 10 is not a class" in r.output, r.output
    assert not (tmp_path / "o.onnx").exists()


def test_samples_without_any_label_are_left_out_of_the_certificate(tiny, tmp_path):
    """Hugging Face's -100 on whole samples: they cannot lose a right answer, so they are
    not counted as loss-free testing samples (which would let a larger drop pass)."""
    path, npz = tiny
    with np.load(npz) as f:
        x, y = f["x"], f["labels"].copy()
    _ladder, test = split_indices(len(y), 0.5, 0)
    y[test[::2]] = -100
    np.savez(npz, x=x, labels=y)
    report = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(npz),
                                  "--max-drop", "0.05", "--objective", "flops", "--report", str(report)])
    assert r.exit_code == 0, r.output
    cert = json.loads(report.read_text())["certificate"]
    assert cert["testing_samples"] == len(test) - len(test[::2])


@pytest.mark.parametrize("metric", ["accuracy", "lost"])
def test_a_metric_that_needs_labels_is_refused_before_any_work(tiny, tmp_path, metric, monkeypatch):
    from exprune_onnx.tuning import search as search_module

    monkeypatch.setattr(search_module, "gather", lambda *a, **k: pytest.fail("the work started"))
    path, npz = tiny
    with np.load(npz) as f:
        np.savez(npz, x=f["x"])
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(npz),
                                  "--metric", metric, "--objective", "flops", "--max-drop", "0.05"])
    assert r.exit_code == 6 and f"the {metric} metric needs labels" in r.output


def test_a_zero_budget_cannot_be_certified(tiny, tmp_path):
    path, npz = tiny
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(npz),
                                  "--max-drop", "0"])
    assert r.exit_code == 2 and "--max-drop 0 cannot be certified" in r.output
    assert not (tmp_path / "o.onnx").exists()


def test_confidence_needs_a_testing_part(tiny, tmp_path):
    path, npz = tiny
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration", str(npz),
                                  "--holdout", "0", "--objective", "flops"])
    assert r.exit_code == 2 and "--holdout must be > 0" in r.output
    assert not (tmp_path / "o.onnx").exists()
