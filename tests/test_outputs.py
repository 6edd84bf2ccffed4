"""io/outputs.py and the output checks of io/modelio.py: nothing the command writes
replaces a device or an input, and a failure on the way leaves nothing behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import calibration_args

from exprune_onnx.cli import main
from exprune_onnx.io import outputs

EXAMPLE = Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx"


@pytest.fixture
def example(tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copyfile(EXAMPLE, path)
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_an_output_that_is_a_pipe_or_device_is_refused_and_left_alone(example, tmp_path):
    """A rename over it would replace the node itself: as root, `-o /dev/null` deleted /dev/null."""
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(fifo), "--no-check", "--objective", "flops"])
    assert r.exit_code == 5 and "is not a regular file" in r.stderr, r.output
    assert fifo.is_fifo()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_the_report_goes_to_a_pipe_as_evaluate_s_json_does(example, tmp_path):
    """A pipe (as /dev/stdout in a shell pipeline) cannot be renamed over: the report is
    written into it once the model is written, and nothing is left beside it."""
    import json
    import threading

    fifo, out = tmp_path / "report.pipe", tmp_path / "o.onnx"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(out), "--threshold", "-1", "--no-check",
                                  "--objective", "flops", "--report", str(fifo)])
    reader.join(timeout=60)
    assert r.exit_code == 0, r.output
    assert json.loads(got[0])["output"] == str(out) and out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "o.onnx", "report.pipe"]


def test_a_report_on_standard_output_is_json_alone(example, tmp_path):
    """`--report -`: the tables go to standard error, so that what a pipe reads is the JSON
    (a trial's `--report - | python -m json.tool` met the tables after it: 'Extra data')."""
    import json
    import subprocess
    import sys

    out = tmp_path / "o.onnx"
    done = subprocess.run([sys.executable, "-m", "exprune_onnx", "optimize", str(example), "-o", str(out),
                           "--threshold", "-1", "--no-check", "--objective", "flops", "--report", "-"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == str(out) and "Rewritten layers" in done.stderr
    assert f"wrote {out}" in done.stderr and not (tmp_path / "-").exists()


def test_a_report_that_cannot_be_written_leaves_no_model_behind(example, tmp_path, monkeypatch):
    """The report and the plot are staged beside their paths before the model is saved."""
    out = tmp_path / "o.onnx"

    def refuse(staged, path, write):
        raise outputs.OutputError(f"{path}: cannot write (No space left on device)")

    monkeypatch.setattr(outputs, "stage", refuse)
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(out), "--no-check", "--objective", "flops",
                                  "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 5 and "No space left" in r.stderr, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_staged_file_is_listed_from_the_moment_it_exists(tmp_path):
    """An interrupt while a report is written (or right after its file is made) leaves it
    listed, so the caller's discard removes it: 3 of 25 interrupted runs left one before."""
    staged = []

    def interrupted(tmp):
        tmp.write_text("{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        outputs.stage(staged, tmp_path / "r.json", interrupted)
    assert len(staged) == 1 and staged[0][0].exists() and staged[0][0].name.startswith(".exprune-")
    outputs.discard(staged)
    assert not list(tmp_path.iterdir())
    outputs.stage(staged, tmp_path / "r.json", lambda tmp: tmp.write_text("{}"))
    outputs.move_into_place(staged)
    assert not staged and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_model_that_cannot_be_saved_leaves_no_report_behind(example, tmp_path, monkeypatch):
    from exprune_onnx.io import modelio

    def fail(model, out, **kw):
        raise modelio.OutputError(f"{out}: cannot write (No space left on device)")

    monkeypatch.setattr(modelio, "save_model", fail)
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), *calibration_args(tmp_path),
                                  "--report", str(tmp_path / "r.json"), "--plot", str(tmp_path / "p")])
    assert r.exit_code == 5, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "m.onnx"]


@pytest.mark.parametrize("args", [["inspect", str(EXAMPLE)], ["--help"], ["--version"], ["optimize", "--help"]])
def test_a_reader_that_stops_reading_ends_the_command_as_sigpipe_would(args):
    """`inspect | head -n1`: 141, not our "internal error" 1 (rich's own handling, and
    click's for --help and --version). The reader is gone before the first write, so
    that no output fits in the pipe first."""
    import subprocess
    import sys

    code = "import sys; from exprune_onnx.cli import main; sys.argv[0] = 'exprune-onnx'; main()"
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-c", code, *args], stdout=write, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 141 and b"Traceback" not in proc.stderr, proc.stderr


CLI = "import sys; from exprune_onnx.cli import main; sys.argv[0] = 'exprune-onnx'; main()"


def test_a_closed_or_full_stdout_or_stderr_is_no_internal_error(tmp_path):
    """`>&-` (Python then has no sys.stdout), `> /dev/full` and `2> /dev/full`: they gave
    "internal error" and exit 1, with the model written."""
    import subprocess
    import sys

    def run(*args, **streams):
        return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], timeout=300, **streams)

    out = tmp_path / "o.onnx"
    closed = run("optimize", EXAMPLE, "-o", out, "--threshold", "-2", "--objective", "flops", "--no-check",
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True,
                 preexec_fn=lambda: os.close(1))
    assert closed.returncode == 0 and closed.stderr == b"" and out.exists()
    with open("/dev/full", "wb") as full:
        proc = run("inspect", EXAMPLE, stdout=full, stderr=subprocess.PIPE)
        assert proc.returncode == 5 and proc.stderr.decode().startswith(
            "error: cannot write to standard output (No space left on device)"), proc.stderr
        proc = run("inspect", tmp_path / "missing.onnx", stdout=subprocess.PIPE, stderr=full)
        assert proc.returncode == 3  # the message is lost, not the exit code
    # A stream takes the report just before the model's rename: its failure leaves no model
    # (it left one, saying so: a trial wanted all or nothing).
    fresh = tmp_path / "fresh.onnx"
    r = CliRunner().invoke(main, ["optimize", str(EXAMPLE), "-o", str(fresh), "--threshold", "-2", "--objective",
                                  "flops", "--no-check", "--report", "/dev/full"])
    assert r.exit_code == 5 and "/dev/full: cannot write the report (No space left on device)" in r.output, r.output
    assert not fresh.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".exprune-")]


def test_a_sigterm_while_the_outputs_are_staged_leaves_none_of_them(example, tmp_path):
    """A scheduler's stop or `timeout` sends SIGTERM: the command cleans up as on Ctrl-C
    (143, one line, no staged .exprune-* file left). The process sends it to itself while
    its report is being staged, so the signal lands there every time."""
    import subprocess
    import sys

    code = ("import os, signal, sys; from exprune_onnx.io import outputs; from exprune_onnx.cli import main\n"
            "def text(payload):\n    os.kill(os.getpid(), signal.SIGTERM)\n    return '{}'\n"
            "outputs.json_text = text; sys.argv[0] = 'exprune-onnx'; main()")
    args = ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), "--no-check", "--objective", "flops",
            "--threshold", "-1", "--report", str(tmp_path / "r.json")]
    before = example.read_bytes()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, timeout=300)
    assert proc.returncode == 143 and b"terminated: stopped by SIGTERM" in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and example.read_bytes() == before
    # Started with SIGTERM ignored (as a parent may hand it down), it stays ignored
    ignored = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + code
    proc = subprocess.run([sys.executable, "-c", ignored, *args], capture_output=True, timeout=300)
    assert proc.returncode == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "o.onnx", "r.json"]


def test_a_ctrl_c_just_after_the_model_is_in_place_lets_the_command_finish(example, tmp_path, monkeypatch):
    """A trial's Ctrl-C sweep: once in 225 runs the signal fell between the model's rename and
    the point where the command stopped taking signals, and it ended in 130 ("no file is left
    half-written") over a complete model. Signals now stop before the first rename."""
    import signal

    from exprune_onnx.io import modelio

    replace = os.replace

    def interrupted(src, dst):
        replace(src, dst)
        if Path(dst).name == "o.onnx":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(modelio.os, "replace", interrupted)
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), "--no-check",
                                  "--objective", "flops", "--threshold", "-1", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0 and "wrote" in r.output, r.output
    assert (tmp_path / "o.onnx").exists() and (tmp_path / "r.json").exists()


def test_the_command_ignores_signals_to_its_end_once_written(example, tmp_path):
    """After the command's own code returned, a Ctrl-C still killed the process by SIGINT
    (exit 130) over complete files (a trial's sweep): as a program, it stays deaf to the end."""
    import subprocess
    import sys

    code = ("import atexit, signal, sys\n"
            "atexit.register(lambda: print('deaf', signal.getsignal(signal.SIGINT) == signal.SIG_IGN))\n"
            "sys.argv = ['exprune-onnx', *sys.argv[1:]]\n"
            "from exprune_onnx import launch\n"
            "launch.main()\n")
    args = ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), "--no-check", "--objective", "flops",
            "--threshold", "-1"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("deaf True"), (proc.stdout, proc.stderr)


def test_a_report_under_proc_is_refused_before_any_work(example, tmp_path):
    """/proc takes no new file, even from root: the report failed after the model was written."""
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), "--no-check",
                                  "--report", "/proc/exprune-report.json"])
    assert r.exit_code == 5 and "no new file can be made under proc" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_an_output_path_ending_in_a_separator_names_a_directory(example, tmp_path):
    """pathlib drops the trailing separator: `-o out/new/` wrote a file named `new`. Refused
    with the exit code of `-o out` where out is a directory (it was click's usage error, 2)."""
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", f"{tmp_path}/new/", "--no-check"])
    assert r.exit_code == 5 and "new/: names a directory" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_plain_write_may_go_to_a_pipe(example, tmp_path):
    """evaluate --json writes its file directly, so `--json /dev/stdout` or a pipe is fine;
    only what is renamed into place must not land on one."""
    fifo = tmp_path / "j"
    os.mkfifo(fifo)
    outputs.refuse_overwriting([fifo], [example], (), replaced=False)
    with pytest.raises(outputs.OutputError, match="is not a regular file"):
        outputs.refuse_overwriting([fifo], [example], ())


def test_a_report_that_fails_half_written_leaves_the_old_one(tmp_path, monkeypatch):
    """evaluate --json on a full disk: the old report stays whole, and nothing is left beside it."""
    import errno

    report = tmp_path / "r.json"
    report.write_text('{"old": true}\n')
    real = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(outputs.OutputError, match="No space left"):
        outputs.write_json(report, {"new": list(range(100))})
    monkeypatch.undo()
    assert report.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_report_through_a_link_replaces_the_file_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}\n")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    outputs.write_json(link, {"a": 1})
    assert link.is_symlink() and '"a": 1' in target.read_text()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_report_to_a_pipe_is_written_into_it(tmp_path):
    import threading

    fifo = tmp_path / "j"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    outputs.write_json(fifo, {"a": 1})
    reader.join(10)
    assert got and '"a": 1' in got[0] and fifo.exists() and not fifo.is_file()


def test_a_model_written_through_a_link_replaces_the_file_and_keeps_the_link(example, tmp_path):
    target = tmp_path / "real.onnx"
    target.write_bytes(b"old")
    link = tmp_path / "out.onnx"
    link.symlink_to(target)
    result = CliRunner().invoke(main, ["optimize", str(example), "-o", str(link), "--threshold", "-2", "--no-check"])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_bytes() != b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx", "real.onnx"]


def test_a_staged_report_through_a_link_replaces_the_file_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "report.json"
    link.symlink_to(target)
    staged = []
    outputs.stage(staged, link, lambda tmp: tmp.write_text("new"))
    outputs.move_into_place(staged)
    assert link.is_symlink() and target.read_text() == "new"


@pytest.mark.parametrize("redirect", ["pipe", "file"])
def test_a_report_to_dev_stdout_goes_to_whatever_stdout_is(tmp_path, redirect):
    """`evaluate --json /dev/stdout | jq`: /dev/stdout names a pipe (or the file the shell
    opened), written in place, not a path beside which to stage a file; what the command
    printed before it stays (opened anew, a redirected file would be truncated)."""
    import subprocess
    import sys

    script = ("from pathlib import Path; from exprune_onnx.io.outputs import write_json; print('the tables'); "
              "write_json(Path('/dev/stdout'), {'a': 1}); print('after')")
    root = str(Path(__file__).resolve().parent.parent)
    if redirect == "pipe":
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root)
        got = done.stdout
    else:
        out = tmp_path / "out.json"
        with out.open("w") as f:
            done = subprocess.run([sys.executable, "-c", script], stdout=f, stderr=subprocess.PIPE, text=True, cwd=root)
        got = out.read_text()
    assert done.returncode == 0, done.stderr[-2000:]
    assert got.startswith("the tables\n{") and '"a": 1' in got and got.endswith("}\nafter\n"), got


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK), reason="no /dev/shm here")
def test_a_regular_file_under_dev_is_replaced_not_appended_to():
    """/dev/shm holds ordinary files: a report written there twice is the last one."""
    import json

    path = Path("/dev/shm") / f"exprune_test_{os.getpid()}.json"
    try:
        outputs.write_json(path, {"run": 1})
        outputs.write_json(path, {"run": 2})
        assert json.loads(path.read_text()) == {"schema": outputs.JSON_SCHEMA, "run": 2}
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("external", [False, True])
def test_a_file_replaced_keeps_its_permissions(tmp_path, external):
    """A pipeline made its model (and report) private; a rewrite renamed a new file over
    them, 0644 (a trial's). The new ones take the old ones' mode; new files the umask's."""
    import onnx
    from helpers import three_layer_mlp

    from exprune_onnx.io import modelio

    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    modelio.save_model(three_layer_mlp(), out, external_data=external)
    fresh = out.stat().st_mode & 0o777
    for path in [out, report] + ([tmp_path / "o.onnx.data"] if external else []):
        path.touch()
        path.chmod(0o600)
    modelio.save_model(three_layer_mlp(), out, external_data=external)
    staged = []
    outputs.stage(staged, report, lambda p: Path(p).write_text("{}"))
    outputs.move_into_place(staged)
    assert out.stat().st_mode & 0o777 == 0o600 and report.stat().st_mode & 0o777 == 0o600
    if external:
        assert (tmp_path / "o.onnx.data").stat().st_mode & 0o777 == 0o600
    onnx.checker.check_model(str(out))
    other = tmp_path / "new.onnx"
    modelio.save_model(three_layer_mlp(), other)
    assert other.stat().st_mode & 0o777 == fresh


def test_the_json_files_start_with_their_layouts_version():
    """A pipeline reads the version before the keys (docs/json.md); the payload's own keys
    follow in their order."""
    import json

    text = outputs.json_text({"b": 1, "a": 2})
    assert list(json.loads(text)) == ["schema", "b", "a"] and json.loads(text)["schema"] == outputs.JSON_SCHEMA
    documented = (Path(__file__).resolve().parent.parent / "docs" / "json.md").read_text()
    assert documented.count(f"| `schema` | {outputs.JSON_SCHEMA} |") == 4  # optimize, evaluate, verify, inspect


def test_staged_files_a_killed_run_left_are_named_after_the_write(example, tmp_path):
    """kill -9 during the write left an 87 MB '.exprune-*' folder that later runs neither
    removed nor named (trial AH). An hour old, it is named; a fresh one may be a run writing now."""
    from exprune_onnx.io.outputs import STALE_SECONDS

    old, fresh = tmp_path / ".exprune-0a1b2c", tmp_path / ".exprune-3d4e5f.onnx"
    old.mkdir()
    fresh.write_bytes(b"")
    then = os.path.getmtime(old) - STALE_SECONDS - 60
    os.utime(old, (then, then))
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), "--no-check"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "note: .exprune-0a1b2c beside it: left by a run that was killed while writing" in text
    assert ".exprune-3d4e5f" not in text and old.exists() and fresh.exists()


def test_a_staged_file_gone_before_its_age_is_read_hides_only_itself(tmp_path, monkeypatch):
    """Another run's staged file removed between the listing and its lstat emptied the whole list."""
    from exprune_onnx.io.outputs import STALE_SECONDS, left_behind

    old, gone = tmp_path / ".exprune-0a1b2c", tmp_path / ".exprune-3d4e5f.onnx"
    old.mkdir()
    then = os.path.getmtime(old) - STALE_SECONDS - 60
    os.utime(old, (then, then))
    listed = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: [*listed(self, pattern), gone])
    assert left_behind(tmp_path / "o.onnx") == [old]
