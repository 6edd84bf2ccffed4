"""`exprune-onnx evaluate` (cli_checks.py): the two models side by side, the savings set
only against a model the other was compiled from, and two models that take different
inputs refused; `verify --json`. verify's checks have their own files (test_verify*.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_calls import invoke

MODELS = Path(__file__).resolve().parent.parent / "models"
EXAMPLE = MODELS / "fashion_cnn.onnx"
SLICE = MODELS / "fashion_test_slice.npz"


def test_evaluate_side_by_side(example, tmp_path, small_set):
    out = tmp_path / "o.onnx"
    assert invoke("optimize", example, "-o", out, "--threshold", "-2", "--no-check").exit_code == 0
    rep = tmp_path / "e.json"
    # More than the 160 samples: timed at the batch asked for, samples repeated.
    r = invoke("evaluate", example, out, "--data", small_set, "--runs", "3", "--batch", "200", "--json", rep)
    assert r.exit_code == 0, r.output
    result = json.loads(rep.read_text())
    assert result["samples"] == 160 and result["latency"]["batch"] == 200 and result["latency"]["threads"] == 1
    assert len(result["latency"]["pair_ratios"]) == 3  # three pairs of sessions, each its own ratio
    assert 0 < result["flops_saved_per_sample"] < result["dense_flops_per_sample"]
    assert "latency" in r.output and "ratio" in r.output
    size, rss = result["memory"]["size_mb"], result["memory"]["peak_rss_mib"]
    assert size[0] == pytest.approx(example.stat().st_size / 1e6, rel=0.05)
    assert size[1] == pytest.approx(out.stat().st_size / 1e6, rel=0.05)
    # Weights are stored once: head and tail slices instead of the dense weight.
    assert abs(size[1] - size[0]) < 0.02 * size[0]
    assert all(50 < m < 4096 for m in rss) and "peak memory" in r.output
    assert invoke("evaluate", example, tmp_path / "missing.onnx", "--data", small_set).exit_code == 3
    # Swapped, it printed a gain of 54 points (a trial's); two rewrites may still be compared.
    r = invoke("evaluate", out, example, "--data", small_set, "--runs", "3")
    assert r.exit_code == 2 and "the original goes first (evaluate ORIGINAL OPTIMIZED)" in r.output, r.output
    r = invoke("evaluate", out, out, "--data", small_set, "--runs", "3", "--json", rep)
    assert r.exit_code == 0, r.output
    # The original's own ops skip as much: no saving of the second's (a trial's: "39.1% saved").
    again = json.loads(rep.read_text())
    assert again["original_flops_saved_per_sample"] == pytest.approx(again["flops_saved_per_sample"])
    assert again["flops_saved_per_sample"] == pytest.approx(result["flops_saved_per_sample"])
    assert "(as many as the original's)" in " ".join(r.output.replace("│", " ").split())
    # One graph twice: the ratio is said to be noise (optimize writes the original back where it keeps nothing).
    assert again["same_graph"] and not result["same_graph"]
    assert "the measurement's noise" in " ".join(r.output.split())
    # '-' is standard output (it wrote a file named '-'), and holds the JSON alone, the table
    # going to standard error (a trial's `--json - | python -m json.tool` met the table first).
    done = subprocess.run([sys.executable, "-m", "exprune_onnx", "evaluate", str(example), str(out), "--data",
                           str(small_set), "--runs", "3", "--json", "-"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env={**os.environ, "PYTHONPATH": str(MODELS.parent)})
    assert done.returncode == 0 and not (tmp_path / "-").exists(), done.stderr
    assert json.loads(done.stdout)["samples"] == 160 and "accuracy" in done.stderr


def test_evaluate_sets_no_savings_against_a_model_the_other_was_not_compiled_from(example, tmp_path, small_set):
    """Two models with the same inputs, the second compiled from another: their ops' savings
    are no share of the first's FLOPs (it printed -5.94 MFLOPs executed, 1089.8% saved)."""
    other = tmp_path / "other.onnx"
    vgg = MODELS / "fashion_vgg.onnx"
    assert invoke("optimize", vgg, "-o", other, "--threshold", "-1", "--no-check").exit_code == 0
    rep = tmp_path / "e.json"
    r = invoke("evaluate", example, other, "--data", small_set, "--runs", "2", "--json", rep)
    assert r.exit_code == 0, r.output
    assert "so it was not compiled from it" in " ".join(r.output.split()) and "% saved" not in r.output
    result = json.loads(rep.read_text())
    assert result["flops_saved_per_sample"] is None and result["dense_flops_per_sample"] > 0


def test_evaluate_refuses_two_models_with_different_inputs(example, small_set):
    """Not onnxruntime failing on the 'optimised' model: the pair takes different inputs."""
    r = invoke("evaluate", example, MODELS / "digits_mlp.onnx", "--data", small_set)
    assert r.exit_code == 2, r.output
    assert "the two models take different inputs: ORIGINAL 'input', OPTIMIZED 'X'" in " ".join(r.output.split())


def test_evaluate_names_the_file_whose_labels_fit_no_output(example, tmp_path):
    """A label error said nothing of which file held the labels (a trial's)."""
    import numpy as np

    with np.load(SLICE) as f:
        np.savez(tmp_path / "d.npz", input=f["input"][:16], labels=f["labels"][:16] + 100)
    r = invoke("evaluate", example, example, "--data", tmp_path / "d.npz", "--runs", "1")
    assert r.exit_code == 6 and "--data 'd.npz': label 1" in r.output and "is not a class" in r.output, r.output


@pytest.mark.parametrize("command", ["evaluate", "verify"])
def test_a_label_error_names_both_files_when_the_labels_come_apart(example, tmp_path, command):
    import numpy as np

    with np.load(SLICE) as f:
        np.savez(tmp_path / "d.npz", input=f["input"][:16])
        np.save(tmp_path / "y.npy", f["labels"][:16] + 100)
    r = invoke(command, example, example, "--data", tmp_path / "d.npz", "--labels", tmp_path / "y.npy")
    assert r.exit_code == 6, r.output
    assert "--data 'd.npz' with --labels 'y.npy': label 1" in r.output and "Traceback" not in r.output, r.output


def test_verify_json_holds_each_row_and_is_written_before_a_failure(example, tmp_path, small_set):
    out, rep = tmp_path / "o.onnx", tmp_path / "v.json"
    assert invoke("optimize", example, "-o", out, "--threshold", "-2", "--no-check").exit_code == 0
    r = invoke("verify", example, out, "--data", small_set, "--min-agreement", "0.9", "--json", rep)
    assert r.exit_code == 0, r.output
    got = json.loads(rep.read_text())
    assert got["schema"] == 1 and got["passed"] and got["samples"] == 160 and got["source"] == small_set.name
    assert [(c["check"], c["result"]) for c in got["checks"]] == [
        ("structure", "pass"), ("weights", "pass"), ("exact at -inf", "pass"), ("agreement", "pass")]
    # A bar the pruned model cannot meet: exit 8, and the JSON says which row failed.
    r = invoke("verify", example, out, "--data", small_set, "--min-agreement", "1", "--json", rep)
    assert r.exit_code == 8, r.output
    got = json.loads(rep.read_text())
    assert not got["passed"] and got["checks"][3]["result"] == "fail" and "< 100.00%" in got["checks"][3]["detail"]
    assert [c["result"] for c in got["checks"][:3]] == ["pass"] * 3
    # '-': standard output holds the JSON alone, the table going to standard error.
    done = subprocess.run([sys.executable, "-m", "exprune_onnx", "verify", str(example), str(out), "--samples", "4",
                           "--json", "-"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(MODELS.parent)})
    assert done.returncode in (0, 8) and not (tmp_path / "-").exists(), done.stderr
    got = json.loads(done.stdout)
    assert got["source"] == "random" and got["samples"] == 4 and "Verification of" in done.stderr
    assert invoke("verify", example, out, "--json", out).exit_code == 5  # not over a model it reads
