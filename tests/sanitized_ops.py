"""Builds the custom-op library with AddressSanitizer + UBSan and runs the op tests on it.

    python tests/sanitized_ops.py [--build-dir DIR] [pytest args...]

builds (``-DEXPRUNE_SANITIZE=ON``, RelWithDebInfo) into DIR (default: a fresh temporary
directory), then runs ``tests/test_custom_op.py tests/test_custom_op_rules.py
tests/test_custom_op_concurrency.py`` (or the pytest arguments given) in a subprocess that loads
that library, and exits non-zero if pytest failed or a sanitizer reported anything.
tests/test_sanitizers.py does the same under ``pytest -m sanitize``.

Practical points, each of which otherwise hides reports or stops the run:

* Python is not instrumented, so the ASan runtime must be loaded first:
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``; the library itself pulls in
  libubsan. ``verify_asan_link_order=0`` quiets the check that would still complain
  about the interpreter.
* The interpreter does not link libstdc++ either, so when ASan starts it finds no
  ``__cxa_throw`` to wrap and aborts at the ops' first (caught) C++ exception:
  libstdc++ is preloaded too, right after libasan.
* Python and numpy leak by design: ``detect_leaks=0``.
* onnxruntime serves tensors from its own arena and, for fixed shapes, from one
  pre-planned block, so an op writing past its output would land in a neighbour and
  go unseen. Loaded as a pytest plugin (``-p sanitized_ops``), this module turns both
  off in every ``SessionOptions`` the tests create, so each tensor is its own malloc
  with ASan's red zones around it.
* pytest's default capture takes over fd 2, and a sanitizer that halts the process
  loses what was captured with it: ``--capture=sys`` captures Python's output only,
  so reports reach the subprocess's real stderr. (GCC's libubsan, loaded beside
  libasan, ignores ``log_path``, so log files are no way round this.)
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OP_TESTS = ["tests/test_custom_op.py", "tests/test_custom_op_errors.py", "tests/test_custom_op_rules.py", "tests/test_custom_op_rules_conv.py",
            "tests/test_argmax_head.py", "tests/test_custom_op_concurrency.py", "tests/test_sparse_matmul_op.py",
            "tests/test_sparse_input.py", "tests/test_sparse_conv_op.py"]
REPORT_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "UndefinedBehaviorSanitizer", "ERROR: LeakSanitizer")


class Unavailable(RuntimeError):
    """No toolchain to build a sanitized library with (a reason to skip, not a failure)."""


def _compiler_runtime(name: str) -> str | None:
    """Path of a gcc sanitizer runtime (libasan.so, ...), or None."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("gcc")
    if cxx is None:
        return None
    try:
        out = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = out.strip()
    # gcc echoes the bare name back when it has no such file.
    return str(Path(path).resolve()) if os.path.isabs(path) and Path(path).exists() else None


def ort_headers() -> str | None:
    """onnxruntime headers a normal build already found or fetched, so the sanitized
    build does not download them again; None lets CMake's own search run
    (custom_ops/cmake/OrtHeaders.cmake)."""
    if os.environ.get("ONNXRUNTIME_INCLUDE_DIR"):
        return None  # CMake reads it itself
    found = sorted(glob.glob(str(ROOT / "build" / "*" / "onnxruntime_headers" / "include" / "onnxruntime_cxx_api.h")))
    return str(Path(found[0]).parent) if found else None


def build(build_dir: Path) -> Path:
    """Configures and builds the sanitized library in build_dir; returns its path."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise Unavailable("cmake is not installed")
    if _compiler_runtime("libasan.so") is None:
        raise Unavailable("no C++ compiler with an AddressSanitizer runtime (g++ -print-file-name=libasan.so)")
    build_dir.mkdir(parents=True, exist_ok=True)
    args = [cmake, "-S", str(ROOT / "custom_ops"), "-B", str(build_dir),
            "-DEXPRUNE_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo", f"-DPython_EXECUTABLE={sys.executable}"]
    if shutil.which("ninja") and not (build_dir / "Makefile").exists():
        args += ["-G", "Ninja"]
    headers = ort_headers()
    if headers:
        args.append(f"-DONNXRUNTIME_INCLUDE_DIR={headers}")
    for step in (args, [cmake, "--build", str(build_dir), "--parallel", "2"]):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed ({done.returncode}):\n"
                               f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    library = build_dir / "libexprune_ops.so"
    if not library.is_file():
        raise RuntimeError(f"the build finished but {library} is missing")
    return library


def sanitizer_env(library: Path) -> dict:
    """The environment that runs Python with the sanitized library."""
    asan = _compiler_runtime("libasan.so")
    if asan is None:
        raise Unavailable("no AddressSanitizer runtime (g++ -print-file-name=libasan.so)")
    preload = [asan]
    cxx_runtime = _compiler_runtime("libstdc++.so")
    if cxx_runtime is not None:
        preload.append(cxx_runtime)
    env = dict(os.environ)
    env.update({
        "EXPRUNE_ONNX_LIBRARY": str(library),
        "LD_PRELOAD": " ".join(preload),
        "ASAN_OPTIONS": "detect_leaks=0:verify_asan_link_order=0:abort_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")) if p),
        # Also for the pytest runs some tests start themselves (the kernel-set reruns).
        "PYTEST_ADDOPTS": " ".join(p for p in ("-p sanitized_ops --capture=sys", env.get("PYTEST_ADDOPTS")) if p),
    })
    return env


def reports(stderr: str) -> list[str]:
    """The lines of stderr that open a sanitizer report."""
    return [line for line in stderr.splitlines() if any(marker in line for marker in REPORT_MARKERS)]


def run_tests(library: Path, pytest_args: list[str] | None = None,
              timeout: float = 1800) -> subprocess.CompletedProcess:
    """pytest in a subprocess on the sanitized library, fast tests only."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "not slow", *(pytest_args or OP_TESTS)]
    return subprocess.run(cmd, cwd=ROOT, env=sanitizer_env(library), capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ pytest plugin


def unpool_sessions() -> None:
    """Every onnxruntime.SessionOptions made from now on has the CPU arena and the
    memory pattern off, so each tensor is its own allocation that a memory checker
    can watch (module docstring)."""
    import onnxruntime as ort

    if getattr(ort.SessionOptions, "unpooled", False):
        return
    base = ort.SessionOptions

    class UnpooledSessionOptions(base):
        unpooled = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.enable_cpu_mem_arena = False
            self.enable_mem_pattern = False

    ort.SessionOptions = UnpooledSessionOptions


def pytest_configure(config):
    """As a plugin (-p sanitized_ops): sessions without arena or memory pattern."""
    unpool_sessions()


# ------------------------------------------------------------------ command line


def main(argv: list[str]) -> int:
    build_dir = None
    if argv[:1] == ["--build-dir"] and len(argv) >= 2:
        build_dir, argv = Path(argv[1]), argv[2:]
    with tempfile.TemporaryDirectory(prefix="exprune_asan_") as work:
        try:
            library = build(build_dir or Path(work))
        except Unavailable as e:
            print(f"cannot build a sanitized library: {e}", file=sys.stderr)
            return 2
        except RuntimeError as e:
            print(str(e), file=sys.stderr)
            return 1
        print(f"sanitized library: {library}", flush=True)
        done = run_tests(library, argv or None)
    print(done.stdout[-6000:])
    found = reports(done.stderr)
    if found or done.returncode != 0:
        print(done.stderr[-20000:], file=sys.stderr)
    print(f"pytest exit {done.returncode}; sanitizer report lines: {len(found)}")
    return 0 if done.returncode == 0 and not found else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
