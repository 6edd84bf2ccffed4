"""`python -m bench --quick --out DIR`: one small model in the default run, every model behind `slow`.

The bench runs as the user runs it, in a subprocess from the repository root, and writes
only into a temporary directory: the committed bench/results.json and docs/ stay as they
are. The data files under models/data/ are not committed (each build script writes
them), so a model whose files are missing is skipped here as the bench itself skips it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.models import ALL  # noqa: E402

# The smallest model: 1,257 calibration and 540 test samples, about 5 s for the whole run.
SMALL = next(m for m in ALL if m.name == "digits_mlp")
SLOP = 1e-9  # the search's own tolerance on drops (differences of accuracies)


def have_files(m) -> bool:
    return m.onnx.is_file() and m.calibration.is_file() and m.test.is_file()


def run_bench(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def check_model(m: dict, quick_test_samples: int = 1000) -> None:
    """The figures of one model are there and make sense together."""
    assert 0 < m["test_samples"] <= quick_test_samples
    assert m["calibration_samples"] > 0
    assert 0.0 < m["baseline_metric"] <= 1.0
    assert [row["budget"] for row in m["budgets"]] == [0.001, 0.01]
    for row in m["budgets"]:
        budget = row["budget"]
        assert row["search_seconds"] > 0 and row["backoffs"] >= 0 and row["trials"]
        # Met on the search's own data, or said not to be.
        if row["met"]:
            assert row["calibration_drop"] <= budget + SLOP
            assert row["held_out_drop"] is None or row["held_out_drop"] <= budget + SLOP
        assert 0.0 <= row["saved"] <= 1.0 and 0.0 <= row["saved_layers"] <= 1.0
        # The same budget certified at 0.9 (bench/certified.py): nothing when the data is too small.
        cert = row["certified"]["certificate"]
        assert cert["confidence"] == 0.9 and cert["samples_needed"] == {0.001: 2302, 0.01: 230}[budget]
        if cert["certified_rung"] is None:
            assert row["certified"]["saved"] == 0.0
        else:
            assert cert["enough_samples"] and cert["certified_bound"] <= budget
        if row["rewritten"] == 0:
            continue
        # On the test split the budget may fail; then the row flags it.
        assert row["test_drop"] == pytest.approx(m["baseline_metric"] - row["test_metric"], abs=1e-12)
        assert row["over_budget_on_test"] == (row["test_drop"] > budget + SLOP)
        assert row["saved"] <= row["saved_layers"]
        assert {(t["batch"], t["threads"]) for t in row["latency"]} == {(1, 1), (1, 2), (32, 1), (32, 2)}
        for t in row["latency"]:
            assert t["runs"] == 5
            for ms in (t["original_ms"], t["optimized_ms"]):
                assert len(ms) == 3 and 0 < ms[0] <= ms[1] <= ms[2] and all(math.isfinite(x) for x in ms)
            assert t["ratio"] > 0 and math.isfinite(t["ratio"])
        assert row["memory_mb"]["original"] > 0 and row["memory_mb"]["optimized"] > 0
        assert row["size_bytes"]["original"] > 0 and row["size_bytes"]["optimized"] > 0
        lo = row["latency_objective"]
        early = [t for t in lo["layers"] if t["rewrite"] == "early exit"]
        groups = [t for t in lo["layers"] if t["group"]]  # small gains timed together (small_gains.py)
        zero = [t for t in lo["layers"] if t["rewrite"] == "zero inputs" and not t["group"]]
        assert lo["candidates"] == row["rewritten"] == len(early)
        assert len(zero) == lo["zero_input_candidates"]
        assert len(early) + len(zero) + len(groups) == len(lo["layers"])
        assert lo["kept"] == [t["layer"] for t in early if t["kept"]]
        assert lo["kept_zero_inputs"] == [t["layer"] for t in zero if t["kept"]]
        decided_by = {name: g for g in groups for name in g["group"]}
        for t in lo["layers"]:  # kept exactly when the model was at least 1% faster with it
            if t["in_group"]:  # a group row decided it: kept with its group, whatever its own times
                assert t["kept"] == decided_by[t["layer"]]["kept"]
                continue
            if t["note"]:  # decided without a whole-model pair of its own (screen.py, small_gains.py):
                assert not t["kept"]  # never kept so; its times are the layer's alone, or none
                continue
            assert t["with_ms"] > 0 and t["without_ms"] > 0
            assert lo["reverted_all"] or t["kept"] == (t["with_ms"] <= 0.99 * t["without_ms"])
        if lo["unchanged"]:
            assert lo["ratio"] == 1.0 and lo["saved"] == 0.0
            assert lo["reverted_all"] or not (lo["kept"] or lo["kept_zero_inputs"])
        else:
            assert lo["kept"] or lo["kept_zero_inputs"]
            assert lo["ratio"] > 0 and 0.0 <= lo["saved"] <= 1.0
            if not lo["kept_zero_inputs"]:  # convs reading a plain ReLU's zeros: the flops row has none of them
                assert lo["saved"] <= row["saved"] + 0.05


def check_outputs(out: Path, names: list[str]) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True
    assert {"cpu", "cores", "onnxruntime", "commit"} <= set(results["machine"])
    assert [m["name"] for m in results["models"]] == names
    markdown = (out / "benchmarks.md").read_text()
    assert markdown.startswith("# Benchmarks\n") and "**Quick run**" in markdown
    assert "## Under the guarantee" in markdown
    for name in names:
        assert f"### {name}:" in markdown
        plot = out / "benchmarks" / f"{name}.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return results


@pytest.mark.skipif(not have_files(SMALL), reason=f"digits_mlp files missing (run `{SMALL.build}`)")
def test_quick_bench_on_the_smallest_model(tmp_path):
    pytest.importorskip("matplotlib")
    done = run_bench(tmp_path, "--models", SMALL.name, timeout=300)
    assert done.returncode == 0, done.stderr
    results = check_outputs(tmp_path, [SMALL.name])
    assert results["missing"] == []
    check_model(results["models"][0])


@pytest.mark.parametrize("args, message", [
    (("--models", "no_such_model"), "unknown model(s) no_such_model"),
    (("--out", "docs/benchmarks.md"), "--out takes a directory"),
])
def test_bad_arguments_say_why(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_quick_bench_on_every_model(tmp_path):
    pytest.importorskip("matplotlib")
    done = run_bench(tmp_path, timeout=3600)
    assert done.returncode == 0, done.stderr
    present = [m.name for m in ALL if have_files(m)]
    results = check_outputs(tmp_path, present)
    assert sorted(x["name"] for x in results["missing"]) == sorted(m.name for m in ALL if not have_files(m))
    for m in results["models"]:
        check_model(m)


def test_a_latency_row_dropped_untimed_is_written_as_a_dash():
    """The report's untimed rows carry null times (report/latency.py): the bench's table
    shows them as '-', not a crash on None."""
    from bench.write import latency_objective_section

    layers = [{"layer": "h1", "rewrite": "early exit", "with_ms": None, "without_ms": None, "kept": False},
              {"layer": "h2", "rewrite": "early exit", "with_ms": 0.9, "without_ms": 1.0, "kept": True}]
    lo = {"kept": ["h2"], "candidates": 2, "reverted_all": False, "unchanged": False, "ratio": 0.9,
          "test_metric": 0.9, "saved": 0.1, "timing_seconds": 3.0, "layers": layers}
    text = "\n".join(latency_objective_section({"budgets": [{"budget": 0.01, "latency_objective": lo}],
                                                "baseline_metric": 0.9, "metric": "accuracy"}))
    assert "| 1 pt | h1 | early exit | - | - | no |" in text and "| 1 pt | h2 | early exit | 0.900 | 1.000 | yes |" in text
