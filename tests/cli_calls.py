"""The command line as the tests run it: a plain run, a run of optimize held to the FLOPs
objective, and the one error line a failure prints."""

from __future__ import annotations

from click.testing import CliRunner

from exprune_onnx.cli import main


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def invoke(*args):
    """``cli``, with optimize held to --objective=flops unless the objective is given: tests
    of the rewrites (tests/test_objective.py covers the latency objective, which may keep
    none of them on a tiny model)."""
    args = [str(a) for a in args]
    if args[:1] == ["optimize"] and "--objective" not in args:
        args.append("--objective=flops")
    return CliRunner().invoke(main, args)


def one_line_error(r, code: int) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.output
    return lines[0]


def error_text(result) -> str:
    """The one-line error (rich may wrap it), whitespace normalised."""
    assert "Traceback" not in result.output
    start = result.output.find("error:")
    assert start >= 0, result.output
    return " ".join(result.output[start:].split())


def assert_one_line_error(r, code: int, *words: str) -> str:
    """Exit ``code``, nothing on stdout, and exactly one stderr line holding ``words``."""
    assert r.exit_code == code, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output and r.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
