"""The command line as the input-shape and value tests run it (test_feeds.py,
test_open_dims.py): a run, and its one error line."""

from __future__ import annotations

from click.testing import CliRunner

from exprune_onnx.cli import main


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, code: int) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.output
    return lines[0]
