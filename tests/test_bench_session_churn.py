"""`python -m bench.session_churn`: run as the user runs it, on a small size and few sessions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux's")
def test_prints_both_models_resident_sizes():
    done = subprocess.run([sys.executable, "-m", "bench.session_churn", "--sessions", "2", "--size", "32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"optimised: 4 ExPruneSparseConv", done.stdout), done.stdout
    for name in ("original", "optimised"):
        assert re.search(rf"{name}: resident [\d.]+ -> [\d.]+ MB", done.stdout), done.stdout
