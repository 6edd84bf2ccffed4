"""bench/lossless.py: how many timing rounds a row gets, and how saved runs merge."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import lossless  # noqa: E402


class Clock:
    """A clock that moves by ``step`` seconds each time a round is timed."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        return self.now

    def round(self):
        self.now += self.step
        return (1.0, 0.9)


def test_short_rounds_repeat_until_the_minimum_time():
    clock = Clock(0.8)
    out = lossless.timed_rounds(clock.round, 3, 10.0, clock=clock)
    assert len(out) == 13  # 12 rounds reach 9.6 s, the 13th passes 10 s
    assert clock.now >= 10.0


def test_long_rounds_stop_at_the_fewest_asked_for():
    clock = Clock(30.0)
    assert len(lossless.timed_rounds(clock.round, 3, 10.0, clock=clock)) == 3


def test_tiny_rounds_stop_at_the_cap():
    clock = Clock(0.001)
    assert len(lossless.timed_rounds(clock.round, 3, 10.0, clock=clock)) == lossless.MAX_ROUNDS


def test_no_minimum_time_gives_exactly_the_rounds_asked_for():
    clock = Clock(0.8)
    assert len(lossless.timed_rounds(clock.round, 5, 0.0, clock=clock)) == 5


def test_fewer_than_one_round_is_refused():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "bench.lossless", "--rounds", "0"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "--rounds must be at least 1" in done.stderr


def test_merging_a_missing_file_is_refused_and_writes_nothing():
    import subprocess

    before = (ROOT / "bench" / "lossless.json").read_bytes()
    done = subprocess.run([sys.executable, "-m", "bench.lossless", "--merge", "bench/lossless_runs/no_such_run.json"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "no such results file: bench/lossless_runs/no_such_run.json" in done.stderr
    assert "Traceback" not in done.stderr
    assert (ROOT / "bench" / "lossless.json").read_bytes() == before


def _run(commit, cpu, rows):
    machine = {"commit": commit, "cpu": cpu, "cores": 2}
    return {"models": [{"name": "m", "title": "M", "build": "b", "calib_samples": 1, "test_samples": 1,
                        "machine": machine, "load_before": 1.0, "command": f"run {commit}",
                        "rows": [dict(r) for r in rows]}]}


def _row(mode, batch, ratio):
    return {"mode": mode, "batch": batch, "threads": 1, "original_ms": 10.0, "ratio": ratio,
            "ratio_range": [ratio, ratio], "max_abs_diff": 0.0, "top1_agreement": 1.0,
            "custom_ops": {}, "compile_seconds": 1.0, "load": 1.0}


def test_a_later_run_replaces_a_row_of_the_same_configuration_on_the_same_cpu():
    old = _run("aaa", "AMD EPYC", [_row("lossless", 1, 0.7), _row("lossless", 8, 0.71)])
    new = _run("bbb", "AMD EPYC", [_row("lossless", 8, 0.69)])
    rows = lossless.merged([old, new])["models"][0]["rows"]
    assert [(r["batch"], r["ratio"], r["commit"]) for r in rows] == [(1, 0.7, "aaa"), (8, 0.69, "bbb")]


def test_rows_of_another_cpu_stand_beside_and_name_their_cpu():
    old = _run("aaa", "AMD EPYC", [_row("lossless", 1, 0.7), _row("lossless", 8, 0.71)])
    new = _run("bbb", "Intel Xeon", [_row("lossless", 8, 0.8)])
    result = lossless.merged([old, new])
    rows = result["models"][0]["rows"]
    assert [(r["batch"], r["ratio"], r["cpu"]) for r in rows] == [
        (1, 0.7, "AMD EPYC"), (8, 0.71, "AMD EPYC"), (8, 0.8, "Intel Xeon")]
    assert result["models"][0]["machine"]["cpu"] == "AMD EPYC and Intel Xeon"
    text = "\n".join(lossless.section(result))
    assert "| lossless | 1 x 1 (aaa, AMD EPYC) |" in text
    assert "| lossless | 8 x 1 (bbb, Intel Xeon) |" in text


def test_merged_rows_of_one_cpu_and_commit_carry_no_label():
    result = lossless.merged([_run("aaa", "AMD EPYC", [_row("lossless", 1, 0.7)])])
    assert "| lossless | 1 x 1 |" in "\n".join(lossless.section(result))


def test_the_calibrated_rows_options_pass_the_api_checks():
    """The search refuses options of the wrong type: the calibrated rows' must pass (a
    threshold of None did not, and every calibrated row failed)."""
    from exprune_onnx.config import check_options

    check_options(lossless.CALIBRATED)
    assert lossless.CALIBRATED.confidence == 0.0
