"""What the command prints, as a program whose streams a pipeline sets up (cli.py, launch.py,
cli_boundary.py): the tables go out before the model is renamed into place, so a stream
that cannot take them leaves no new model behind a non-zero exit; a name the stream's
encoding cannot spell is escaped; -o never writes to a stream; a Ctrl-C before the tables
print writes nothing, and one after lets the command finish."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_calls import assert_one_line_error, invoke
from click.testing import CliRunner

from exprune_onnx.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "models" / "fashion_cnn.onnx"
_FAST = ("--no-check", "--objective", "flops")  # nothing timed, nothing run


def _command(*args, stdout=subprocess.PIPE, env=None, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}  # this tree's package, from any folder
    return subprocess.run([sys.executable, "-m", "exprune_onnx", *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, cwd=cwd, env=env, timeout=300)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_standard_output_leaves_no_model(tmp_path):
    out = tmp_path / "out.onnx"
    with open("/dev/full", "w") as full:
        done = _command("optimize", EXAMPLE, "-o", out, *_FAST, stdout=full)
    assert done.returncode == 5, done.stderr
    assert b"cannot write to standard output" in done.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_standard_output_leaves_the_previous_model_as_it_was(tmp_path):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous")
    with open("/dev/full", "w") as full:
        assert _command("optimize", EXAMPLE, "-o", out, *_FAST, stdout=full).returncode == 5
    assert out.read_bytes() == b"previous"


def test_a_reader_gone_before_the_tables_leaves_no_model(tmp_path):
    out = tmp_path / "out.onnx"
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write is EPIPE
    try:
        done = _command("optimize", EXAMPLE, "-o", out, *_FAST, stdout=write)
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert not out.exists()


def test_a_name_the_encoding_cannot_spell_is_escaped_not_an_internal_error(tmp_path):
    folder = tmp_path / "dïr ☃"
    folder.mkdir()
    model = folder / "mödel.onnx"
    shutil.copy(EXAMPLE, model)
    done = _command("optimize", model, "-o", folder / "öut.onnx", *_FAST, env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout.decode("ascii") and "\\xf6ut.onnx" in done.stdout.decode("ascii")
    assert (folder / "öut.onnx").exists()


def test_a_path_of_undecodable_bytes_is_named_as_such(tmp_path):
    model = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xffname.onnx"))
    shutil.copy(EXAMPLE, model)
    done = invoke("optimize", model, "-o", tmp_path / "out.onnx", "--no-check")
    assert_one_line_error(done, 3, "not text in this system's encoding", "LANG=C.UTF-8")
    assert "checker" not in done.output


@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_an_output_that_names_an_open_stream_is_refused(name, tmp_path):
    log = tmp_path / "ci.log"
    log.write_text("earlier lines\n")
    with open(log, "a") as f:
        done = _command("optimize", EXAMPLE, "-o", name, *_FAST, stdout=f)
    assert done.returncode == 5
    assert b"names an open stream" in done.stderr
    assert log.read_text() == "earlier lines\n"


@pytest.mark.parametrize(("value", "words"), [("-", "not to standard output"), ("", "is empty")])
def test_an_output_of_dash_or_nothing_is_a_usage_error(value, words, tmp_path):
    done = _command("optimize", EXAMPLE, "-o", value, "--no-check", cwd=tmp_path)
    assert done.returncode == 2
    assert words in done.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_a_ctrl_c_while_the_tables_are_made_writes_nothing(example, tmp_path, monkeypatch):
    """The tables are made before anything is put in place (they print just before the
    rename, so that a stream that cannot take them leaves no model): a Ctrl-C while they
    are made is 130 with nothing written."""
    import signal

    from exprune_onnx.report import tables

    printed = tables.print_optimized

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # lands at once: the interpreter checks between steps
        printed(*args, **kwargs)

    monkeypatch.setattr(tables, "print_optimized", interrupted)
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), "--no-check",
                                  "--objective", "flops", "--threshold", "-1", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 130, r.output
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "r.json").exists()


def test_a_ctrl_c_while_the_tables_print_lets_the_command_finish(example, tmp_path, monkeypatch):
    """130 says nothing was written: once the tables print, the model goes into place next,
    so a Ctrl-C there lets the command finish. Handlers are the caller's again after."""
    import signal

    from exprune_onnx import cli

    show = cli.show

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        show(*args, **kwargs)

    monkeypatch.setattr(cli, "show", interrupted)
    before = signal.getsignal(signal.SIGINT)
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), "--no-check",
                                  "--objective", "flops", "--threshold", "-1", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0 and "wrote" in r.output, r.output
    assert (tmp_path / "o.onnx").exists() and (tmp_path / "r.json").exists()
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.skipif(not Path("/dev/stdout").exists(), reason="needs /dev/stdout")
@pytest.mark.parametrize("into_file", [False, True])
def test_json_to_standard_output_by_any_name_holds_the_json_alone(into_file, tmp_path):
    """/dev/stdout is '-' by another name: the tables go to standard error, whether standard
    output is a pipe or a file it is redirected to (they came first, and jq refused them)."""
    if into_file:
        with open(tmp_path / "out.json", "w") as f:
            done = _command("inspect", EXAMPLE, "--json", "/dev/stdout", stdout=f)
        text = (tmp_path / "out.json").read_text()
    else:
        done = _command("inspect", EXAMPLE, "--json", "/dev/stdout")
        text = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert json.loads(text)["schema"] == 1 and b"Candidate layers" in done.stderr


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_json_to_dev_null_with_standard_output_there_too_keeps_the_tables_off_standard_error():
    """cron and CI send both to /dev/null: no reader's JSON to keep clean, and the tables
    would land in the log that standard error goes to."""
    done = _command("inspect", EXAMPLE, "--json", "/dev/null", stdout=subprocess.DEVNULL)
    assert done.returncode == 0 and b"Candidate layers" not in done.stderr, done.stderr
