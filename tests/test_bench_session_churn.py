"""`python -m bench.session_churn`: run as the user runs it, on a small size and few sessions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux's")
def test_prints_both_models_resident_sizes_in_each_run_and_their_range():
    done = subprocess.run([sys.executable, "-m", "bench.session_churn", "--sessions", "2", "--size", "32",
                           "--runs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"optimised: 4 ExPruneSparseConv", done.stdout), done.stdout
    for name in ("original", "optimised"):
        for run in (1, 2):
            assert re.search(rf"run {run} +{name}: resident [\d.]+ -> [\d.]+ MB", done.stdout), done.stdout
        assert re.search(rf"{name}: resident at the end [\d.]+-[\d.]+ MB over 2 runs", done.stdout), done.stdout


def test_refuses_no_runs():
    done = subprocess.run([sys.executable, "-m", "bench.session_churn", "--runs", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--runs and --sessions must be at least 1" in done.stderr, done.stderr
