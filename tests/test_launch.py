"""The command's entry point (exprune_onnx/launch.py) and the package's lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)


def test_the_command_is_the_launcher():
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is new in 3.11; the project supports 3.10)
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert [line for line in scripts.splitlines() if line.strip()] == ['exprune-onnx = "exprune_onnx.launch:main"']


def test_python_dash_m_is_the_same_launcher():
    done = subprocess.run([sys.executable, "-m", "exprune_onnx", "--version"], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("exprune-onnx, version "), done.stderr
    assert (ROOT / "exprune_onnx" / "__main__.py").read_text().count("from .launch import main") == 1


def test_ctrl_c_while_the_cli_loads_is_one_line_and_130():
    """The import of the CLI (about half a second of numpy, onnx and onnxruntime) stopped
    by Ctrl-C, here raised by an import hook."""
    done = _python(
        "import sys\n"
        "class Stop:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'exprune_onnx.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Stop())\n"
        "from exprune_onnx.launch import main\n"
        "sys.argv = ['exprune-onnx', '--version']\n"
        "main()\n")
    assert done.returncode == 130, done.stderr
    assert done.stderr == "interrupted: stopped by Ctrl-C; no file is left half-written\n"


def test_ctrl_c_that_a_library_turned_into_an_import_error_is_still_one():
    """onnxruntime's import catches everything numpy's raises, a KeyboardInterrupt too, and
    raises ImportError('import numpy failed') from it."""
    done = _python(
        "import sys\n"
        "class Stop:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'exprune_onnx.cli':\n"
        "            try:\n"
        "                raise KeyboardInterrupt\n"
        "            except KeyboardInterrupt:\n"
        "                raise ImportError('import numpy failed')\n"
        "sys.meta_path.insert(0, Stop())\n"
        "from exprune_onnx.launch import main\n"
        "main()\n")
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr


def test_sigterm_while_the_cli_loads_is_one_line_and_143():
    """A SIGTERM sent before the CLI's own handler is in place (here, from an import hook
    while the CLI loads), then the default back for the CLI to take over."""
    done = _python(
        "import os, signal, sys\n"
        "class Stop:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'exprune_onnx.cli':\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "sys.meta_path.insert(0, Stop())\n"
        "from exprune_onnx.launch import main\n"
        "main()\n")
    assert done.returncode == 143, done.stderr
    assert done.stderr == "terminated: stopped by SIGTERM; no file is left half-written\n"
    done = _python("import signal, sys\n"
                   "from exprune_onnx import launch\n"
                   "sys.argv = ['exprune-onnx', '--version']\n"
                   "try:\n"
                   "    launch.main()\n"
                   "except SystemExit:\n"
                   "    pass\n"
                   "print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)\n")
    assert done.returncode == 0 and done.stdout.endswith("True\n"), done.stderr


def test_other_import_failures_are_not_taken_for_ctrl_c():
    from exprune_onnx.launch import _interrupted

    try:
        raise ImportError("no module named onnxruntime")
    except ImportError as exc:
        assert not _interrupted(exc)
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as inner:
            raise ImportError("import numpy failed") from inner
    except ImportError as exc:
        assert _interrupted(exc)


def test_the_launcher_runs_the_cli():
    done = _python("import sys\nfrom exprune_onnx.launch import main\nsys.argv = ['exprune-onnx', '--version']\nmain()\n")
    assert done.returncode == 0 and "exprune-onnx" in done.stdout, done.stderr


def test_importing_the_package_loads_nothing_heavy():
    done = _python("import sys, exprune_onnx\nprint(sorted({'onnx', 'onnxruntime', 'numpy'} & set(sys.modules)))")
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_public_names_and_submodules_load_on_first_use():
    import exprune_onnx

    assert exprune_onnx.DOMAIN == exprune_onnx.ops.DOMAIN == "ai.exprune"
    assert callable(exprune_onnx.optimize_model) and "optimize_model" in dir(exprune_onnx)
    assert set(exprune_onnx.__all__) >= {"optimize", "Options", "get_library_path"}
    try:
        exprune_onnx.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_ctrl_c_that_left_no_trace_in_the_error_or_was_dropped_is_still_one():
    """numpy's C import turns a Ctrl-C into an ImportError with no KeyboardInterrupt behind
    it (a trial's 40-line traceback, exit 1); one raised in a destructor is printed and
    dropped, and the command ran on (exit 0). Both end in the one line and 130. The child
    starts with Python's own SIGINT handler, as from a terminal: run in the background of a
    shell, it would inherit SIGINT ignored, and the Ctrl-C would never come."""
    for how in ("raise ImportError('PyCapsule_Import could not import module datetime')", "return lambda: None"):
        done = _python(
            "import os, signal, time\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from exprune_onnx import launch\n"
            "def load():\n"
            "    try:\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        time.sleep(5)\n"
            "    except KeyboardInterrupt:\n"
            "        pass\n"
            f"    {how}\n"
            "launch._load = load\n"
            "launch.main()\n")
        assert done.returncode == 130, (how, done.stderr)
        assert done.stderr == "interrupted: stopped by Ctrl-C; no file is left half-written\n", done.stderr
