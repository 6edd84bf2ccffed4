"""report/plot.py: where --plot draws (a PNG when no suffix is given; never a stream or a device)."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import calibration_args

from exprune_onnx.cli import main


def test_a_plot_without_a_suffix_is_written_as_png(example, tmp_path):
    pytest.importorskip("matplotlib")
    r = CliRunner().invoke(main, ["optimize", str(example), "-o", str(tmp_path / "o.onnx"), *calibration_args(tmp_path),
                                  "--plot", str(tmp_path / "p"), "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote the plot to {tmp_path / 'p.png'}" in " ".join(r.output.split())  # not where it was told
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exprune-")]
    assert oct((tmp_path / "r.json").stat().st_mode & 0o777) == oct((tmp_path / "o.onnx").stat().st_mode & 0o777)


def test_a_plot_format_it_cannot_draw_is_refused_before_any_work(example, tmp_path, monkeypatch):
    from exprune_onnx import workflow

    monkeypatch.setattr(workflow, "run", lambda *a, **k: pytest.fail("the work started"))
    r = CliRunner().invoke(main, ["optimize", str(example), *calibration_args(tmp_path), "--plot", str(tmp_path / "p.xyz")])
    assert r.exit_code == 2 and ".xyz is not a format it draws" in r.output


@pytest.mark.parametrize("plot", ["-", "/dev/null", "/dev/full", "/dev/stdout"])
def test_a_plot_to_a_stream_or_a_device_is_refused_before_any_work(plot, example, tmp_path, monkeypatch):
    """--plot /dev/full wrote a file /dev/full.png, and --plot - a file './-.png' (trial AH)."""
    from exprune_onnx import workflow

    monkeypatch.setattr(workflow, "run", lambda *a, **k: pytest.fail("the work started"))
    r = CliRunner().invoke(main, ["optimize", str(example), *calibration_args(tmp_path), "--plot", plot])
    assert r.exit_code == 2 and "a plot is drawn to a file, not to standard output or a device" in r.output
    assert not Path(plot + ".png").exists()


def test_a_plot_under_dev_shm_is_a_file():
    """/dev/shm holds plain files, as written reports there are; a plot there was refused as a device."""
    from exprune_onnx.report.plot import plot_path

    assert plot_path(Path("/dev/shm/exprune-p")) == Path("/dev/shm/exprune-p.png")
    assert plot_path(Path("/dev/shm/exprune-p.svg")) == Path("/dev/shm/exprune-p.svg")
