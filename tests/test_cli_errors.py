"""Bad command-line input (cli.py, modelio.py; issue 7, item 2): one line on stderr naming the problem, and
the documented exit code (3 model, 5 output, 6 data, 1 internal; 130 interrupted).

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
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_calls import invoke
from click.testing import CliRunner

from exprune_onnx import errors
from exprune_onnx.cli import main
from exprune_onnx.io import modelio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "models" / "fashion_cnn.onnx"
GOOD_INPUT = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)


def assert_one_line_error(r, code: int, *words: str) -> str:
    """Exit ``code``, nothing on stdout, and exactly one stderr line holding ``words``."""
    assert r.exit_code == code, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output and r.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def example(tmp_path):
    path = tmp_path / "fashion_cnn.onnx"
    shutil.copyfile(EXAMPLE, path)
    return path


@pytest.fixture
def good_data(tmp_path):
    path = tmp_path / "good.npz"
    np.savez(path, input=GOOD_INPUT)
    return path


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
    x = GOOD_INPUT.copy()
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
    "nan": "contains NaN or Inf",
    "inf": "contains NaN or Inf",
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


# ------------------------------------------------------------------ output paths (exit 5)


def _same_file_spellings(example: Path, tmp_path: Path) -> list[Path]:
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.onnx"
    link.symlink_to(example)
    hard = tmp_path / "hard.onnx"
    os.link(example, hard)
    return [tmp_path / "sub" / ".." / example.name, link, hard]


def test_output_that_is_the_input_by_another_name(example, tmp_path):
    before = example.read_bytes()
    for out in _same_file_spellings(example, tmp_path):
        assert_one_line_error(invoke("optimize", example, "-o", out, "--no-check"), 5, "overwrite the input")
    assert example.read_bytes() == before


# a.onnx keeps its weights in <data>. "data_file_of_output": writing b.onnx with external
# data (as the input has) would replace b.onnx.data and leave a.onnx pointing at the wrong
# bytes; "output": -o names the very file.
@pytest.mark.parametrize(("data", "out"), [("b.onnx.data", "b.onnx"), ("a.onnx.data", "a.onnx.data")],
                         ids=["data_file_of_output", "output"])
def test_output_that_would_replace_the_inputs_external_data(data, out, tmp_path):
    a = tmp_path / "a.onnx"
    onnx.save_model(onnx.load(EXAMPLE), a, save_as_external_data=True, location=data, size_threshold=0)
    before = _snapshot(tmp_path)
    assert_one_line_error(invoke("optimize", a, "-o", tmp_path / out, "--no-check"), 5, data, "external data")
    assert _snapshot(tmp_path) == before
    onnx.checker.check_model(onnx.load(a))


def test_a_model_with_external_data_optimized_again_from_its_directory(tmp_path, monkeypatch):
    """onnx.save_model refuses a data file name that exists relative to the working
    directory: the second run here, or an -o of the same name elsewhere, used to fail."""
    monkeypatch.chdir(tmp_path)
    onnx.save_model(onnx.load(EXAMPLE), "a.onnx", save_as_external_data=True, location="a.onnx.data")
    (tmp_path / "out").mkdir()
    for out in ("a.exprune.onnx", "a.exprune.onnx", "out/a.onnx"):
        r = invoke("optimize", "a.onnx", "-o", out, "--no-check")
        assert r.exit_code == 0, r.output
        data = Path(out + ".data")
        assert data.is_file() and data.stat().st_mode == Path(out).stat().st_mode  # not onnx's private 0600
        onnx.checker.check_model(onnx.load(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.exprune.onnx", "a.exprune.onnx.data", "a.onnx",
                                                          "a.onnx.data", "out"]


CALIBRATE = ("--calibration", "{data}", "--max-drop", "0.5", "--no-check")


@pytest.mark.parametrize(("args", "clobbered"), [
    (("-o", "{data}", "--check-data", "{data}"), "{data}"),
    (("-o", "{config}", "--config", "{config}"), "{config}"),
    (("-o", "{dir}/x.npy", "--check-data", "{dir}"), "{dir}"),
    (CALIBRATE + ("-o", "{data}"), "{data}"),
    (CALIBRATE + ("--report", "{model}"), "input model"),
    (CALIBRATE + ("--report", "{data}"), "{data}"),
    (CALIBRATE + ("--plot", "{svg_config}", "--config", "{svg_config}"), "{svg_config}"),
    (CALIBRATE + ("-o", "{tmp}/out.onnx", "--report", "{tmp}/out.onnx"), "same path"),
    (CALIBRATE + ("--report", "{tmp}/r.png", "--plot", "{tmp}/r"), "same path"),  # matplotlib adds .png
    (CALIBRATE + ("-o", "{tmp}/a.png", "--plot", "{tmp}/a"), "same path"),
    (CALIBRATE + ("-o", "{tmp}/out.onnx", "--report", "{tmp}/out.onnx.data"), "weights may be written there"),
    (("-o", "{tmp}/e.onnx", "--check-data", "{sidecar}"), "data file e.onnx.data would overwrite the input"),
    (("-o", "{tmp}/e.onnx", "--config", "{sidecar_config}"), "data file e.onnx.data would overwrite the input"),
], ids=["output_is_check_data", "output_is_config", "output_is_a_file_of_a_data_dir", "output_is_calibration",
        "report_is_model", "report_is_calibration", "plot_is_config", "report_is_output", "plot_is_report",
        "plot_without_suffix_is_output", "report_is_output_weights", "output_weights_are_check_data",
        "output_weights_are_config"])
def test_an_output_never_overwrites_an_input_or_another_output(args, clobbered, example, good_data, tmp_path):
    config = tmp_path / "layers.json"
    config.write_text("{}")
    sidecar = tmp_path / "e.onnx.data"  # what -o e.onnx writes its weights to, when they go beside it
    sidecar_config = tmp_path / "c" / "e.onnx.data"
    if "{sidecar_config}" in args:
        sidecar_config.parent.mkdir()
        sidecar_config.write_text("{}")
        args = tuple(a.replace("{tmp}/e.onnx", "{tmp}/c/e.onnx") for a in args)
    elif "{sidecar}" in args:
        shutil.copyfile(good_data, sidecar)
    npy_dir = tmp_path / "npy"
    npy_dir.mkdir()
    np.save(npy_dir / "x.npy", GOOD_INPUT)
    svg_config = tmp_path / "layers.svg"  # a name --plot may draw to
    svg_config.write_text("{}")
    names = {"model": example, "data": good_data, "config": config, "dir": npy_dir, "tmp": tmp_path,
             "sidecar": sidecar, "sidecar_config": sidecar_config, "svg_config": svg_config}
    before = _snapshot(tmp_path)
    r = invoke("optimize", example, *[a.format(**names) for a in args])
    assert_one_line_error(r, 5, clobbered.format(**names))
    assert _snapshot(tmp_path) == before


def test_evaluate_json_never_overwrites_a_model(example, good_data, tmp_path):
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(main, ["evaluate", str(example), str(example), "--data", str(good_data), "--json",
                                  str(example)])
    assert_one_line_error(r, 5, "overwrite the input model")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["existing_directory", "parent_is_a_file"])
def test_output_path_that_cannot_be_a_file(kind, example, tmp_path):
    if kind == "existing_directory":
        out, words = tmp_path / "taken", "is a directory"
        out.mkdir()
    else:
        out, words = example.parent / "notes.txt" / "o.onnx", "is not a directory"
        out.parent.write_text("a file, not a directory")
    assert_one_line_error(invoke("optimize", example, "-o", out, "--no-check"), 5, words)
    assert not out.is_file()


@pytest.mark.parametrize("option", ["-o", "--report", "--plot"])
@pytest.mark.parametrize("kind", ["missing_directory", "existing_directory"])
def test_an_output_that_cannot_be_written_stops_before_any_work(option, kind, example, good_data, tmp_path,
                                                                 monkeypatch):
    from exprune_onnx import workflow

    monkeypatch.setattr(workflow, "run", lambda *a, **k: pytest.fail("the work started"))
    out = tmp_path / "nope" / ("o.png" if option == "--plot" else "o.onnx") if kind == "missing_directory" \
        else tmp_path
    args = ["-o", out] if option == "-o" else [option, out, *CALIBRATE[:4]]
    args = [str(a).format(data=good_data) for a in args]
    assert_one_line_error(invoke("optimize", example, *args), 5, str(out))


def _unwritable_dir(tmp_path: Path) -> Path:
    if sys.platform == "win32" or os.geteuid() == 0:
        pytest.skip("root (or Windows) ignores directory permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


def test_output_directory_read_only(example, tmp_path):
    ro = _unwritable_dir(tmp_path)
    try:
        assert_one_line_error(invoke("optimize", example, "-o", ro / "o.onnx", "--no-check"), 5, "not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_output_on_a_file_system_nobody_may_write(example):
    """/proc refuses new files even to root, so this runs where the chmod test skips."""
    proc = Path("/proc")
    if not sys.platform.startswith("linux") or not proc.is_dir():
        pytest.skip("needs Linux /proc")
    try:
        (proc / "exprune-probe").mkdir()
    except OSError:
        pass
    else:
        (proc / "exprune-probe").rmdir()
        pytest.skip("/proc is writable here")
    assert_one_line_error(invoke("optimize", example, "-o", proc / "o.onnx", "--no-check"), 5, "/proc/o.onnx")


# ------------------------------------------------------------------ failed and interrupted writes


@pytest.fixture
def external_example(tmp_path):
    """The example with its weights as external data, so the output is written as two files."""
    folder = tmp_path / "ext"
    folder.mkdir()
    model = onnx.load(EXAMPLE)
    path = folder / "m.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external_data"])
@pytest.mark.parametrize("failure", ["ENOSPC", "EIO", "KeyboardInterrupt"])
def test_failed_write_leaves_no_partial_output(failure, external, example, external_example, monkeypatch):
    """The writer dies halfway (disk full, I/O error, Ctrl-C) after writing part of the
    model (and of its data file): the input and an earlier output survive byte for
    byte, no partial file or temporary directory is left, and the message is one line."""
    model = external_example if external else example
    folder = model.parent
    out = folder / "out.onnx"
    out.write_bytes(b"an earlier, complete output")
    if external:
        (folder / "out.onnx.data").write_bytes(b"its data")
    before = _snapshot(folder)

    def dying_writer(proto, path, *args, **kwargs):
        Path(path).write_bytes(proto.SerializeToString()[:100])
        if kwargs.get("save_as_external_data"):
            (Path(path).parent / kwargs["location"]).write_bytes(b"\0" * 64)
        if failure == "KeyboardInterrupt":
            raise KeyboardInterrupt
        raise OSError(getattr(errno, failure), os.strerror(getattr(errno, failure)))

    monkeypatch.setattr(modelio.onnx, "save_model", dying_writer)
    r = invoke("optimize", model, "-o", out, "--no-check")
    if failure == "KeyboardInterrupt":
        assert r.exit_code == 130 and r.stderr.strip().startswith("interrupted: stopped by Ctrl-C"), r.output
    else:
        assert_one_line_error(r, 5, "out.onnx", "cannot write", os.strerror(getattr(errno, failure)))
    assert _snapshot(folder) == before
    assert [p.name for p in folder.iterdir() if p.name.startswith(".exprune-")] == []


def test_long_paths_stay_on_one_line(example, tmp_path):
    """Rich wraps at the console width (200 off a terminal): error lines must not wrap."""
    deep = tmp_path / ("d" * 120) / ("e" * 120)
    r = invoke("optimize", example, "-o", deep / "o.onnx", "--no-check")
    line = assert_one_line_error(r, 5, "does not exist")
    assert str(deep / "o.onnx") in line and len(line) > 250


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
