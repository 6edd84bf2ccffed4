"""Peak memory of running a model, measured in a fresh process.

A process's peak resident set is a high-water mark that never goes down, so each
model is loaded and run in its own child interpreter: onnxruntime session creation
(weights, prepacked copies, the arena) and three runs on the given inputs. On Linux
the child reads its own high-water mark (VmHWM), since getrusage's maximum also
counts what the parent held before the exec. The figure includes the Python
interpreter and onnxruntime itself, which are the same for both models, so
differences between two models are what the weights and buffers cost.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from ..errors import RuntimeCheckError
from ..io.ir_version import runnable
from ..runtime import get_library_path, uses_library

# The child opens its session with onnxruntime directly, not runtime.inference_session:
# importing this package would add its own memory to the high-water mark measured.
_CHILD = """
import resource, sys
import numpy as np, onnxruntime as ort
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
if sys.argv[3]:
    opts.register_custom_ops_library(sys.argv[3])
s = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
stored = np.load(sys.argv[2])
feeds = {str(name): stored[f"a{i}"] for i, name in enumerate(stored["names"])}
for _ in range(3):
    s.run(None, feeds)
try:  # Linux: this process's own high-water mark
    status = open("/proc/self/status").read()
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
except (OSError, StopIteration):
    # getrusage also counts what the parent held before the exec: an upper bound.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(peak // 1024 if sys.platform == "darwin" else peak)
"""


def peak_rss_mb(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    """Peak resident memory (MiB) of a fresh process that loads ``model`` and runs it on ``feeds``."""
    if sys.platform == "win32":  # no getrusage; the figure is optional
        return float("nan")
    # The parent finds the library; the child only registers it, so it never imports
    # this package (from whatever directory it would start in).
    library = get_library_path() if uses_library(model) else ""
    with tempfile.TemporaryDirectory(prefix="exprune-mem-") as tmp:
        path, data = Path(tmp) / "m.onnx", Path(tmp) / "feeds.npz"
        onnx.save(runnable(model), path)
        # Positional keys: an input may be called anything, "file" included.
        np.savez(data, names=np.array(list(feeds)), **{f"a{i}": v for i, v in enumerate(feeds.values())})
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(data), library],
                             capture_output=True, text=True, cwd=tmp)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeCheckError(f"measuring peak memory failed: {last}")
    return int(out.stdout.split()[-1]) / 1024  # the child prints KiB
