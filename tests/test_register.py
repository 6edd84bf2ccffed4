"""Registering the library (custom_ops/src/register.cc) on session options after session
options: a service that makes a session per request registers it every time, and whatever a
registration keeps stays as long as the library is loaded. Kept per registration, one small
block a session fell in the holes destroyed sessions left in glibc's heap, and the heap grew
by a session's activations each time in some runs (bench/session_churn.py: 1.5 GB after 120
sessions). The op domain is made once and shared, so a registration keeps nothing."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import exprune_onnx

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import gc, sys
sys.path[:0] = [sys.argv[1]]
import onnxruntime as ort
from bench.session_churn import held_mb
import exprune_onnx

path = exprune_onnx.get_library_path()
anchor = exprune_onnx.session_options()  # keeps the library loaded between registrations


def register(times):
    for _ in range(times):
        opts = ort.SessionOptions()
        opts.register_custom_ops_library(path)
        del opts
    gc.collect()


register(200)  # onnxruntime's and the interpreter's own first-use allocations
base = held_mb()
register(3000)
print(f"{(held_mb() - base) * 1024:.1f}")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2")
def test_registrations_keep_nothing_while_the_library_is_loaded():
    done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    grown_kb = float(done.stdout.split()[-1])
    # 3000 domains kept were 452 KB (the library before); onnxruntime's own registry of libraries and
    # the interpreter move the count by a few kilobytes.
    assert grown_kb < 64, f"3000 registrations kept {grown_kb:.1f} KB"


def test_sessions_of_separate_registrations_share_the_domain_and_run_at_once():
    import onnxruntime as ort
    from scratch_layers import sparse_conv_layer
    from sparse_conv_models import lowered

    model, feeds = sparse_conv_layer(16, 16)
    blob = model.SerializeToString()
    sessions = [ort.InferenceSession(blob, exprune_onnx.session_options(optimize=False),
                                     providers=["CPUExecutionProvider"]) for _ in range(4)]
    expected = ort.InferenceSession(lowered(model).SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda sess: sess.run(None, feeds)[0], sessions))
    for out in outs:
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
