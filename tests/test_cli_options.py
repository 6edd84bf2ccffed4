"""Options given more than once (cli_options.OnceCommand): a single-valued option used twice is a
usage error before any work, where click would keep the last silently (a trial's
`--score-output r2 --score-output y` scored only y, and `--threshold=-inf --threshold 0`
pruned at 0)."""

from __future__ import annotations

import pytest
from cli_calls import cli


@pytest.mark.parametrize(("args", "named"), [
    (["--threshold=-inf", "--threshold", "0"], "--threshold"),
    (["-o", "{tmp}/a.onnx", "--output", "{tmp}/b.onnx"], "-o/--output"),
    (["--check", "--no-check"], "--check/--no-check"),
    (["--no-check", "--no-check"], "--check/--no-check"),
    (["--calibration", "{data}", "--score-output", "a", "--score-output", "b"], "--score-output"),
])
def test_optimize_refuses_a_single_valued_option_given_twice(example, good_data, tmp_path, args, named):
    before = example.read_bytes()
    args = [a.format(tmp=tmp_path, data=good_data) for a in args]
    r = cli("optimize", example, *args)
    assert r.exit_code == 2, r.output
    assert f"{named} given more than once: give it once" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["fashion_cnn.onnx", good_data.name])
    assert example.read_bytes() == before


@pytest.mark.parametrize(("command", "args", "named"), [
    ("inspect", ["--k", "8", "--k", "16"], "--k"),
    ("verify", ["{model}", "--samples", "3", "--samples", "4"], "--samples"),
    ("evaluate", ["{model}", "--runs", "3", "--runs", "4"], "--runs"),
])
def test_every_command_refuses_a_single_valued_option_given_twice(example, command, args, named):
    r = cli(command, example, *[a.format(model=example) for a in args])
    assert r.exit_code == 2 and f"{named} given more than once" in r.output, r.output


def test_repeatable_options_and_plain_flags_may_repeat(example, tmp_path):
    """--input-shape and --argmax-only take one value a use; a flag twice means what it means once."""
    r = cli("optimize", example, "-o", tmp_path / "o.onnx", "--objective", "flops", "--no-check", "--explain",
            "--explain", "--input-shape", "input:1,1,28,28", "--input-shape", "input:1,1,28,28")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o.onnx").exists()


def test_help_is_shown_whatever_else_repeats(example):
    r = cli("optimize", example, "--threshold", "0", "--threshold", "1", "--help")
    assert r.exit_code == 0 and "Usage:" in r.output and "given more than once" not in r.output
