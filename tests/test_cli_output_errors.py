"""Output paths through the command line (io/outputs.py, io/modelio.py): an output never
overwrites an input or another output, a path that cannot be written stops the command
before any work, and a failed write leaves no partial file (exit 5, one line)."""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_calls import assert_one_line_error, invoke
from click.testing import CliRunner

from exprune_onnx.cli import main
from exprune_onnx.io import modelio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "models" / "fashion_cnn.onnx"


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
    np.save(npy_dir / "x.npy", np.load(good_data)["input"])
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

    def dying_writer(proto, path, *args, **kwargs):  # (the model, or the bytes of one written unchanged)
        Path(path).write_bytes((proto if isinstance(proto, bytes) else proto.SerializeToString())[:100])
        if kwargs.get("save_as_external_data"):
            (Path(path).parent / kwargs["location"]).write_bytes(b"\0" * 64)
        if failure == "KeyboardInterrupt":
            raise KeyboardInterrupt
        raise OSError(getattr(errno, failure), os.strerror(getattr(errno, failure)))

    monkeypatch.setattr(modelio.onnx, "save_model", dying_writer)
    monkeypatch.setattr(modelio, "_write_raw", dying_writer)
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


def test_a_folder_where_the_weights_file_goes_stops_the_command_before_the_work(tmp_path):
    a = tmp_path / "a.onnx"
    onnx.save_model(onnx.load(EXAMPLE), a, save_as_external_data=True, location="a.onnx.data", size_threshold=0)
    (tmp_path / "b.onnx.data").mkdir()
    assert_one_line_error(invoke("optimize", a, "-o", tmp_path / "b.onnx", "--no-check"), 5, "b.onnx.data",
                          "is a directory")
    assert not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize(("option", "suffix"), [("-o", ".onnx"), ("--report", ".json")])
def test_a_legal_name_is_written_though_its_data_name_would_be_too_long(option, suffix, example, tmp_path):
    """A legal 255-character output name failed as 'internal error: OSError' (exit 1) when the
    command looked for its .data file (trial AH), then was refused (exit 5), for a model that
    writes no .data at all (a review)."""
    name = tmp_path / ("a" * 250 + suffix)
    args = ("-o", name) if option == "-o" else ("-o", tmp_path / "o.onnx", option, name)
    r = invoke("optimize", example, *args, "--no-check")
    assert r.exit_code == 0 and name.is_file(), r.output


@pytest.mark.parametrize("given", ["default", "-o 256", "-o 255 external"])
def test_a_name_too_long_is_named_with_its_parameters_exit_code(given, example, external_example, tmp_path):
    """The default output of a model named 'a' * 250 + '.onnx', an -o name over 255
    characters, and the .data of a 255-character -o name whose model keeps external data."""
    if given == "default":  # optimize writes <model>.exprune.onnx beside the model
        model = tmp_path / ("a" * 250 + ".onnx")
        model.write_bytes(example.read_bytes())
        args, too_long = (model,), f"{model.name.removesuffix('.onnx')}.exprune.onnx"
    elif given == "-o 256":
        too_long = "a" * 251 + ".onnx"
        args = (example, "-o", tmp_path / too_long)
    else:
        out = tmp_path / ("a" * 250 + ".onnx")
        args, too_long = (external_example, "-o", out), out.name + ".data"
    before = sorted(tmp_path.rglob("*"))
    assert_one_line_error(invoke("optimize", *args, "--no-check"), 5, "cannot use", too_long,
                          os.strerror(errno.ENAMETOOLONG))
    assert sorted(tmp_path.rglob("*")) == before


def test_a_path_error_is_named_after_the_parameter_that_gave_the_path(tmp_path):
    from exprune_onnx.cli_boundary import failure

    def code(filename, **params):
        head, text, code = failure(PermissionError(errno.EACCES, "Permission denied", str(filename)), params)
        return code if head == "error:" and "cannot use" in text else head

    assert code("o.onnx.data", output="o.onnx") == 5 and code("m.onnx", model="m.onnx", output="o.onnx") == 3
    # An output named after the model is the output's (the model's name was matched first, exit 3).
    assert code("m.onnx.x.onnx", model="m.onnx", output="m.onnx.x.onnx") == 5
    assert code("m.exprune.onnx", model="m.onnx") == 5  # optimize's output when -o is not given
    # ... and its .data, though that name starts with a model's not called *.onnx (it got the model's 3).
    assert code("m.pb.exprune.onnx.data", model="m.pb") == 5 and code("m.pb.data", model="m.pb") == 3
    link = tmp_path / "link.onnx"
    link.symlink_to(tmp_path / "target.onnx")
    assert code(tmp_path / "target.onnx.data", output=str(link)) == 5
    # A path no parameter gave is the program's own: still an internal error, with --debug's hint.
    assert code("/x/y", output="o.onnx") == "internal error:"
