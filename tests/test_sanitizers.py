"""The custom ops under AddressSanitizer + UBSan and under valgrind (``pytest -m sanitize``).

Slow (a sanitized build, then a few minutes of tests), so marked ``slow`` and
``sanitize``; the default run skips them. They skip, saying why, where cmake, a
compiler with ASan or valgrind is missing.

* ASan/UBSan: tests/sanitized_ops.py builds the library with ``-DEXPRUNE_SANITIZE=ON``
  and reruns the op tests on it (test_custom_op.py, test_custom_op_rules.py,
  test_custom_op_concurrency.py); any sanitizer report or failure fails the test.
  ``EXPRUNE_SANITIZE_BUILD_DIR`` keeps the build there between runs (default: a
  temporary directory).
* valgrind: tests/exercise_ops.py runs both ops, valid and invalid inputs, on the
  normal library under memcheck; tests/valgrind.supp silences the interpreter's and
  onnxruntime's own reports. Registering the library loses no more memory than not
  registering it (the same script run both ways), and sessions of both big ops, made, run
  on a thread and destroyed until the library is unloaded, lose none that its frames made.

Each harness is first shown to catch a deliberate error, so that a pass means something.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sanitized_ops

import exprune_onnx

pytestmark = [pytest.mark.slow, pytest.mark.sanitize]

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sanitized_library(tmp_path_factory):
    kept = os.environ.get("EXPRUNE_SANITIZE_BUILD_DIR")
    build_dir = Path(kept) if kept else tmp_path_factory.mktemp("asan_build")
    try:
        return sanitized_ops.build(build_dir)
    except sanitized_ops.Unavailable as e:
        pytest.skip(f"no sanitized build: {e}")


def _tail(text: str, limit: int = 12000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


# ------------------------------------------------------------------ ASan + UBSan


def test_sanitizer_harness_reports_errors(tmp_path, sanitized_library):
    """A tiny library with a heap overflow and a signed overflow, called from Python in
    the same environment: both must come back as reports and a failed process."""
    source = tmp_path / "bad.cc"
    source.write_text(textwrap.dedent("""
        #include <cstdlib>
        extern "C" int heap_overflow(int n) {
          int* p = static_cast<int*>(std::malloc(n * sizeof(int)));
          p[n] = 1;
          int v = p[0];
          std::free(p);
          return v;
        }
        extern "C" int signed_overflow(int n) { return n + 2147483647; }
    """))
    library = tmp_path / "libbad.so"
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        pytest.skip("no C++ compiler")
    subprocess.run([cxx, "-shared", "-fPIC", "-g", "-fsanitize=address,undefined", str(source), "-o", str(library)],
                   check=True, capture_output=True)
    env = sanitized_ops.sanitizer_env(sanitized_library)
    cases = (("heap_overflow(4)", "heap-buffer-overflow"), ("signed_overflow(5)", "signed integer overflow"))
    for call, words in cases:
        done = subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(library)!r}).{call}"],
                              env=env, capture_output=True, text=True, timeout=120)
        found = sanitized_ops.reports(done.stderr)
        assert done.returncode != 0 and found, f"{call} went unreported:\n{done.stderr[-3000:]}"
        assert words in done.stderr, done.stderr[-3000:]


def test_ops_under_asan_and_ubsan(sanitized_library):
    done = sanitized_ops.run_tests(sanitized_library)
    found = sanitized_ops.reports(done.stderr)
    assert not found, "sanitizer reports:\n" + _tail(done.stderr)
    assert done.returncode == 0, \
        f"op tests failed on the sanitized library:\n{_tail(done.stdout)}\n{_tail(done.stderr, 4000)}"
    assert " passed" in done.stdout and " failed" not in done.stdout, done.stdout[-2000:]


# ------------------------------------------------------------------ valgrind


def _valgrind(script_args, env_extra=None, timeout=900, script_first=None):
    """``script_args`` are valgrind's own options when ``script_first`` gives the script and
    its arguments."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed (Debian: apt-get install valgrind)")
    env = dict(os.environ)
    env.update({
        "EXPRUNE_ONNX_LIBRARY": exprune_onnx.get_library_path(),
        # pymalloc's arenas confuse memcheck; plain malloc lets it see every object.
        "PYTHONMALLOC": "malloc",
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE.parent), str(HERE), env.get("PYTHONPATH")) if p),
        **(env_extra or {}),
    })
    # sys.executable, not a launcher script: valgrind would check the script's shell.
    tool = [valgrind, "--error-exitcode=99", f"--suppressions={HERE / 'valgrind.supp'}"]
    cmd = ([*tool, *script_args, sys.executable, *script_first] if script_first
           else [*tool, sys.executable, *script_args])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_valgrind_harness_reports_errors(tmp_path):
    """An uninitialised read and a heap overflow through numpy/ctypes are not hidden by
    the suppressions."""
    script = tmp_path / "bad.py"
    script.write_text(textwrap.dedent("""
        import ctypes, numpy as np
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        p = libc.malloc(16)
        a = np.ctypeslib.as_array(ctypes.cast(p, ctypes.POINTER(ctypes.c_float)), shape=(4,))
        print(bool(np.all(a >= 0)))       # never written
        ctypes.memset(p + 16, 0, 4)       # past the end
    """))
    done = _valgrind([str(script)], timeout=300)
    assert done.returncode == 99, done.stderr[-3000:]
    assert "uninitialised value" in done.stderr and "Invalid write" in done.stderr, done.stderr[-3000:]


def test_ops_under_valgrind():
    done = _valgrind([str(HERE / "exercise_ops.py")])
    assert done.returncode == 0, f"exit {done.returncode}:\n{_tail(done.stdout, 2000)}\n{_tail(done.stderr)}"
    assert done.stdout.strip().endswith("ok"), done.stdout[-2000:]
    assert "ERROR SUMMARY: 0 errors" in done.stderr, done.stderr[-3000:]


def test_registrations_leave_no_leak_of_ours(tmp_path):
    """The op domain, made once and shared by every registration, is released with the
    library: never released, a domain made per registration was 56 bytes lost a registration
    (with what it held, 120) that LeakSanitizer and valgrind reported (a C++ deployment
    trial's). The same script, registering or not, loses the
    same: the interpreter's and onnxruntime's own losses cancel, and the library's frames
    are unnamed once it is unloaded."""
    script = tmp_path / "register.py"
    script.write_text(textwrap.dedent("""
        import sys
        import onnxruntime as ort
        import exprune_onnx
        for _ in range(5):
            opts = ort.SessionOptions()
            if sys.argv[1] == "register":
                opts.register_custom_ops_library(exprune_onnx.get_library_path())
            del opts
        print("ok")
    """))
    lost = {}
    for mode in ("plain", "register"):
        done = _valgrind(["--leak-check=full", "--show-leak-kinds=definite"], script_first=[str(script), mode],
                         timeout=600)
        assert done.stdout.strip().endswith("ok"), done.stderr[-3000:]
        found = re.search(r"definitely lost: ([\d,]+) bytes in ([\d,]+) blocks", done.stderr)
        lost[mode] = found.group(0) if found else "none"
    assert lost["register"] == lost["plain"], lost


def test_sessions_leave_no_leak_of_ours(tmp_path):
    """The ops' scratch pools (custom_ops/src/scratch.h) and their state are freed when the
    library is unloaded: left to the process, they were reported lost at every unload (a
    review's, under valgrind). The library unloads here once its sessions are gone and no
    thread that ran it is left; valgrind keeps its symbols, so a loss it made is named."""
    script = tmp_path / "sessions.py"
    script.write_text(textwrap.dedent("""
        import gc, threading
        import onnxruntime as ort
        from scratch_layers import conv_relu_layer, sparse_conv_layer
        import exprune_onnx

        for model, feeds in [sparse_conv_layer(64, 16), conv_relu_layer(8, 32, 16, 1)] * 2:
            opts = ort.SessionOptions()
            opts.register_custom_ops_library(exprune_onnx.get_library_path())
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            worker = threading.Thread(target=sess.run, args=(None, feeds))
            worker.start()
            worker.join()
            del sess, opts
            gc.collect()
        unloaded = not any("libexprune_ops" in line for line in open("/proc/self/maps"))
        print("unloaded" if unloaded else "still loaded")
    """))
    done = _valgrind(["--keep-debuginfo=yes", "--leak-check=full", "--show-leak-kinds=definite"],
                     script_first=[str(script)], timeout=900)
    assert done.stdout.strip().endswith("unloaded"), f"{done.stdout[-2000:]}\n{_tail(done.stderr, 3000)}"
    records = re.split(r"\n==\d+== \n", done.stderr)
    ours = [r for r in records if "definitely lost in loss record" in r and "libexprune_ops" in r]
    assert not ours, "\n\n".join(ours)[-4000:]
