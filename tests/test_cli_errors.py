"""Bad command-line input (cli.py, modelio.py; issue 7, item 2): one line on stderr naming the problem, and
the documented exit code (3 model, 5 output, 6 data, 1 internal; 130 interrupted). Output paths
(exit 5) are in test_cli_output_errors.py.

Already in test_cli.py and not repeated here: missing, empty, garbage and truncated
model files for ``optimize``; output = input by the same path; a missing output
directory; bad config files and options; check data with a wrong name, shape or dtype;
calibration data of a wrong shape and labels of a wrong count; ops of an unknown domain
in ``optimize``.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_calls import assert_one_line_error, invoke
from click.testing import CliRunner

from exprune_onnx import errors
from exprune_onnx.cli import main
from exprune_onnx.io import modelio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "models" / "fashion_cnn.onnx"


# ------------------------------------------------------------------ model files (exit 3)


def _dangling_input(p: Path) -> None:
    model = onnx.load(p)
    model.graph.node[3].input[0] = "nowhere"
    onnx.save(model, p)


def _ir_from_the_future(p: Path) -> None:
    model = onnx.load(p)
    model.ir_version = 99
    onnx.save(model, p)


def _unknown_default_op(p: Path) -> None:
    model = onnx.load(p)
    model.graph.node[3].op_type = "NoSuchOp"
    onnx.save(model, p)


def _no_outputs(p: Path) -> None:
    model = onnx.load(p)
    del model.graph.output[:]
    onnx.save(model, p)


def _directory(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _fifo(p: Path) -> None:
    p.unlink()
    os.mkfifo(p)  # read as "empty"; as data, it would block until a writer came


# kind -> (how to spoil the file, words the message must hold)
BAD_MODELS = {
    "missing": (lambda p: p.unlink(), "no such file"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:1000]), "not a readable ONNX model"),
    "garbage": (lambda p: p.write_bytes(b"\x08\x07not protobuf at all" * 10), "not"),
    "directory": (_directory, "is a directory"),
    "fifo": (_fifo, "not an ONNX file (a device or pipe)"),
    "checker": (_dangling_input, "fails the ONNX checker"),
    "ir_99": (_ir_from_the_future, "ir_version 99"),
    "unknown_default_op": (_unknown_default_op, "NoSuchOp"),
    "no_outputs": (_no_outputs, "the graph has no outputs"),
}
# test_cli.py covers these four for `optimize`.
COVERED = {("optimize", k) for k in ("missing", "empty", "truncated", "garbage")}


@pytest.mark.parametrize("kind,command", [
    (kind, command) for kind in BAD_MODELS
    for command in ("optimize", "inspect", "evaluate-original", "evaluate-optimized") if (command, kind) not in COVERED
])
def test_bad_model_file(command, kind, example, good_data, tmp_path):
    spoil, words = BAD_MODELS[kind]
    bad = tmp_path / "bad.onnx"
    shutil.copyfile(EXAMPLE, bad)
    spoil(bad)
    args = {
        "optimize": ["optimize", bad, "-o", tmp_path / "o.onnx"],
        "inspect": ["inspect", bad],
        "evaluate-original": ["evaluate", bad, example, "--data", good_data],
        "evaluate-optimized": ["evaluate", example, bad, "--data", good_data],
    }[command]
    line = assert_one_line_error(invoke(*args), 3, words)
    assert "bad.onnx" in line, "the message names the file"
    assert not (tmp_path / "o.onnx").exists()


def test_unknown_domain_op_is_fine_for_inspect(tmp_path):
    """Ops of a domain the compiler does not know are not an error (optimize: test_cli.py)."""
    model = onnx.load(EXAMPLE)
    model.graph.node[-1].op_type, model.graph.node[-1].domain = "Mystery", "com.example"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    r = invoke("inspect", path)
    assert r.exit_code == 0, r.output
    assert "/conv2/conv/Conv" in r.stdout


# ------------------------------------------------------------------ data (exit 6)


def _write_data(kind: str, path: Path) -> Path:
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    if kind == "name":
        np.savez(path, image=x)
    elif kind == "dtype":
        np.savez(path, input=x.astype(np.float16))
    elif kind == "shape":
        np.savez(path, input=x[:, :, :27])
    elif kind == "nan":
        x[2, 0, 3, 3] = np.nan
        np.savez(path, input=x)
    elif kind == "inf":
        x[0, 0, 0, 0] = -np.inf
        np.savez(path, input=x)
    elif kind == "missing":
        pass
    elif kind == "not_npz":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif kind == "empty_dir":
        path = path.with_suffix("")
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    return path


DATA = {
    "name": "no array for model input 'input'",
    "dtype": "is float16, the model wants float32",
    "shape": "has shape [4, 1, 27, 28]",
    "nan": "contains NaN",
    "inf": "is NaN on",  # an input of Inf is taken: the original answers NaN on it here
    "missing": "no such file",
    "not_npz": "not a readable .npz",
    "empty_dir": "holds no",
    "fifo": "not a data file or directory (a device or pipe)",
}
DATA_COVERED = {("--check-data", k) for k in ("name", "shape", "dtype")} | {("--calibration", "shape")}


@pytest.mark.parametrize("kind,option", [
    (kind, option) for kind in DATA
    for option in ("--calibration", "--check-data", "evaluate --data") if (option, kind) not in DATA_COVERED
])
def test_bad_data(option, kind, example, tmp_path):
    data = _write_data(kind, tmp_path / "d.npz")
    out = tmp_path / "o.onnx"
    if option == "evaluate --data":
        args = ["evaluate", example, example, "--data", data]
    else:
        args = ["optimize", example, "-o", out, option, data]
    line = assert_one_line_error(invoke(*args), 6, DATA[kind])
    assert data.name in line
    assert not out.exists()


# ------------------------------------------------------------------ --debug, internal errors, codes


def test_debug_shows_the_traceback(example, tmp_path, monkeypatch):
    missing = tmp_path / "missing.onnx"
    r = invoke("--debug", "optimize", missing)
    assert r.exit_code == 3 and "Traceback" in r.stderr and "ModelLoadError" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1] == f"error: {missing}: no such file"
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(modelio.onnx, "save_model", full_disk)
    r = invoke("--debug", "optimize", example, "-o", tmp_path / "o.onnx", "--no-check")
    assert r.exit_code == 5 and "Traceback" in r.stderr and "OSError" in r.stderr


def test_internal_error_is_one_line_and_points_at_debug(example, tmp_path, monkeypatch):
    import exprune_onnx.compiler.pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("something the compiler did not expect\nsecond line of detail")

    monkeypatch.setattr(exprune_onnx.compiler.pipeline, "optimize", broken)
    line = assert_one_line_error(invoke("optimize", example, "-o", tmp_path / "o.onnx"), 1, "internal error",
                                 "RuntimeError", "second line of detail", "--debug")
    assert not line.startswith("error:")
    assert "Traceback" in invoke("--debug", "optimize", example, "-o", tmp_path / "o.onnx").stderr


def test_exit_codes_are_distinct_and_documented():
    classes = [errors.ExPruneError, *errors.ExPruneError.__subclasses__()]
    codes = {cls.__name__: cls.exit_code for cls in classes}
    specific = [c for name, c in codes.items() if name != "ExPruneError"]
    assert len(set(specific)) == len(specific), codes
    assert not {0, 1, 2} & set(specific), "0, 1 and 2 are success, internal error and usage"
    cli_doc = (ROOT / "docs" / "cli.md").read_text()
    documented = cli_doc[cli_doc.index("Exit codes:"):].split("\n\n")[0]
    listed = {int(n) for n in re.findall(r"\b(\d+) [a-z`]", documented)}
    assert {0, 1, 2, *specific} <= listed, f"docs/cli.md lists {sorted(listed)}, the code uses {sorted(specific)}"
    help_text = " ".join(invoke("--help").output.split())
    help_codes = help_text[help_text.index("Exit codes:"):]
    assert all(re.search(rf"\b{c} [a-z]", help_codes) for c in specific), help_codes


@pytest.mark.parametrize("command", ["optimize", "optimize-latency", "calibrate", "verify"])
def test_an_original_onnxruntime_cannot_load_is_a_model_problem(command, tmp_path, good_data):
    """An op of a domain onnxruntime has no kernel for: exit 3 naming the original, not 7
    ("failed on the optimised model") or 8 ("verification failed")."""
    model = onnx.load(EXAMPLE)
    model.graph.node[-1].op_type, model.graph.node[-1].domain = "Mystery", "com.example"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    if command == "verify":
        r = CliRunner().invoke(main, ["verify", str(path), str(path)])
    elif command == "calibrate":
        r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--calibration",
                                      str(good_data), "--objective", "flops", "--no-check"])
    else:
        objective = ["--objective", "flops", "--threshold=-inf"] if command == "optimize" else []
        r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx"), *objective])
    assert_one_line_error(r, 3, "onnxruntime cannot load the original model", "Mystery")
    assert not (tmp_path / "o.onnx").exists()


def test_running_out_of_memory_says_what_to_do(monkeypatch):
    """`verify --samples 100000000` asked numpy for 584 GiB: one line that names the options
    that shrink the run, not "internal error: MemoryError"."""
    from exprune_onnx.io import data

    def too_big(*_args, **_kwargs):
        raise MemoryError("Unable to allocate 584. GiB for an array with shape (100000000, 1, 28, 28)")

    monkeypatch.setattr(data, "random_arrays", too_big)
    r = invoke("verify", str(EXAMPLE), str(EXAMPLE), "--samples", "100000000")
    assert r.exit_code == 1 and "out of memory (Unable to allocate 584. GiB" in r.output and "fewer samples" in r.output
    assert "internal error" not in r.output


@pytest.mark.parametrize("args", [["evaluate", EXAMPLE, EXAMPLE, "--data", "d.npz", "--threads", "100000"],
                                  ["optimize", EXAMPLE, "--latency-threads", "100000"]])
def test_more_threads_than_help_are_a_usage_error(args):
    """`evaluate --threads 100000` started 32,000 onnxruntime threads before the system
    refused more, and every other command on the machine with it."""
    r = invoke(*args)
    assert r.exit_code == 2 and "threads" in r.output and "is not in the range" in r.output, r.output


@pytest.mark.parametrize(("value", "words"), [
    ("5", "5 is not in the range 0<=x<=1: the budget is a fraction (0.01 is one point), so a drop of 5 points is 0.05"),
    ("-1", "-1 is not in the range 0<=x<=1"),
    ("nan", "nan is not a number"),
])
def test_a_budget_out_of_range_is_a_usage_error_that_says_what_to_give(example, tmp_path, value, words):
    r = invoke("optimize", str(example), "-o", str(tmp_path / "o.onnx"), "--calibration", str(tmp_path / "d.npz"),
               "--max-drop", value)
    assert r.exit_code == 2 and words in " ".join(r.output.split()), r.output
    assert "Traceback" not in r.output and not (tmp_path / "o.onnx").exists()
    if value == "-1":
        assert "fraction" not in r.output


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root, to drop its right to read any file with setpriv")
@pytest.mark.parametrize(("option", "code"), [("model", 3), ("--check-data", 6), ("--config", 4)])
def test_an_unreadable_input_gets_its_own_exit_code(option, code, tmp_path):
    """click refused a file it could not read as a usage error (exit 2, with the usage text),
    where the docs give the model 3, data 6 and a config 4 (trial AH)."""
    import subprocess
    import sys

    models = Path(__file__).resolve().parent.parent / "models"
    sources = {"model": "fashion_cnn.onnx", "--check-data": "fashion_test_slice.npz", "--config": None}
    unread = tmp_path / f"unread{Path(sources[option] or 'c.json').suffix}"
    if sources[option]:
        shutil.copyfile(models / sources[option], unread)
    else:
        unread.write_text("{}")
    unread.chmod(0)
    args = [str(unread)] if option == "model" else [str(models / "fashion_cnn.onnx"), option, str(unread)]
    r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
                        "exprune_onnx", "optimize", *args, "-o", str(tmp_path / "o.onnx")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == code, r.stderr
    assert "Usage:" not in r.stderr and "Permission denied" in r.stderr and "Traceback" not in r.stderr
