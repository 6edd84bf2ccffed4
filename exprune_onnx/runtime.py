"""Finding the custom-op library and registering it with onnxruntime, and what the CPU offers its kernels."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from .config import true_or_false, whole_number

LIBRARY_ENV = "EXPRUNE_ONNX_LIBRARY"


def _library_name() -> str:
    if sys.platform == "win32":
        return "exprune_ops.dll"
    if sys.platform == "darwin":
        return "libexprune_ops.dylib"
    return "libexprune_ops.so"


def get_library_path() -> str:
    """Path of the built ExPrune custom-op library.

    ``$EXPRUNE_ONNX_LIBRARY`` wins when set (for a library built outside the wheel);
    otherwise the one installed next to this package by ``pip install``.
    """
    override = os.environ.get(LIBRARY_ENV)
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"${LIBRARY_ENV} points to {override!r}, which does not exist")
        return str(Path(override).resolve())
    candidate = Path(__file__).resolve().parent / _library_name()
    if not candidate.is_file():
        # Imported from a source checkout (`python -m bench` at the repository root puts
        # it first on sys.path): use the library `pip install .` put next to the
        # installed copy of the package.
        installed = _installed_library()
        if installed is not None:
            return installed
    if not candidate.is_file():
        raise FileNotFoundError(
            f"the ExPrune custom-op library was not found at {candidate}. "
            "Install the package with `pip install .` (which builds it), or set "
            f"${LIBRARY_ENV} to a library you built."
        )
    return str(candidate)


def _installed_library() -> str | None:
    from importlib import metadata

    try:
        found = Path(metadata.distribution("exprune-onnx").locate_file(f"exprune_onnx/{_library_name()}"))
    except (metadata.PackageNotFoundError, OSError, TypeError):
        return None
    return str(found.resolve()) if found.is_file() else None


def uses_library(model) -> bool:
    """Whether any node of ``model`` (an onnx.ModelProto), in the main graph or in any
    If/Loop/Scan body, is one of the library's ops."""
    from .io.modelio import all_nodes
    from .ops import DOMAIN

    return any(node.domain == DOMAIN for node in all_nodes(model.graph))


# More intra-op threads than this only slow onnxruntime down, and each is a real thread:
# `--threads 100000` made 32,000 of them before the system refused more.
MAX_THREADS = max(256, 4 * (os.cpu_count() or 1))


# Marks options the library is registered on: onnxruntime accepts a second registration,
# then fails to create the session ("Domain already set in registry").
_REGISTERED = "exprune.library"


def check_threads(name: str, value) -> None:
    """ConfigError for a thread count that is not a whole number in [0, MAX_THREADS] (0:
    onnxruntime's default; None leaves it unset): a trial's 2,000 threads took a minute to
    start a session, and a million ran out of memory."""
    if value is not None:
        whole_number(name, value, 0, MAX_THREADS)


def session_options(base=None, *, threads: int | None = None, optimize: bool = True):
    """``onnxruntime.SessionOptions`` with the ExPrune library registered.

    ``base`` is updated in place when given; passing it again registers nothing more, but
    options on which the library was registered directly (register_custom_ops_library)
    must not be passed: onnxruntime cannot tell, and two registrations fail when the
    session is created ("Domain already set in registry"). ``threads`` sets the intra-op thread
    count (the pool the custom op runs on); ``optimize=False`` turns graph
    optimisations off, as the exactness tests do.
    """
    import onnxruntime as ort

    from .errors import ConfigError

    if base is not None and not isinstance(base, ort.SessionOptions):
        raise ConfigError(f"base must be an onnxruntime.SessionOptions, got {type(base).__name__}")
    check_threads("threads", threads)
    true_or_false("optimize", optimize)
    opts = base if base is not None else ort.SessionOptions()
    try:
        opts.get_session_config_entry(_REGISTERED)
    except RuntimeError:  # not registered on these options yet
        opts.register_custom_ops_library(get_library_path())
        opts.add_session_config_entry(_REGISTERED, get_library_path())
    if threads is not None:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return opts


def inference_session(model, *, threads: int | None = None, optimize: bool = True, library: bool | None = None,
                      inter_threads: int | None = None, profile: str | None = None, spin: bool = True):
    """An ``onnxruntime.InferenceSession`` on CPU: the one place the package opens a session.

    ``model`` is a path, serialized bytes or an ``onnx.ModelProto`` (stamped with an IR
    version the installed onnxruntime reads, io/ir_version.py ``runnable``). ``library``
    registers the ExPrune library: None registers it when a ModelProto uses it, and always
    for a path or bytes (they are not parsed here). ``threads``/``inter_threads`` set the
    intra-/inter-op thread counts, ``optimize=False`` turns graph optimisations off, and
    ``profile`` turns profiling on, to files starting with it. ``spin=False`` stops the
    intra-op threads from spinning while they wait for work (measure/timing.py says why).
    """
    import onnxruntime as ort

    check_threads("threads", threads)  # before a large model is serialised only to be refused
    check_threads("inter_threads", inter_threads)
    true_or_false("optimize", optimize)
    if hasattr(model, "SerializeToString"):
        from .io.ir_version import runnable

        if library is None:
            library = uses_library(model)
        model = runnable(model).SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    opts = ort.SessionOptions()
    if library is not False:
        session_options(opts)
    if threads is not None:
        opts.intra_op_num_threads = threads
    if inter_threads is not None:
        opts.inter_op_num_threads = inter_threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


# What a sparse conv's counters mean where cpu_has_tiles(): said beside every count of them.
TILES_NOTE = "an image the op ran densely on this CPU's AMX tiles skips none of its inputs"


@functools.cache
def cpu_has_tiles() -> bool:
    """Whether this CPU has what the sparse conv's tile path runs on: AMX-BF16 tiles and the
    AVX-512 set (Linux; False where it cannot tell)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return {"amx_tile", "amx_bf16", "avx512f", "avx512bw", "avx512dq", "avx512vl"} <= set(flags)
