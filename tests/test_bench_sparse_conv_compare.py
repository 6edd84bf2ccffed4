"""bench/sparse_conv_compare.py: its argument checks, and the order of its timed runs."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import sparse_conv_compare  # noqa: E402
from exprune_onnx import get_library_path  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["/no/such/lib.so"], "no such library: /no/such/lib.so"),
    ([",,"], "no such library: (none given)"),
    (["LIB", "--layers", "8x8x8"], "--layers are CxMxSxK with positive sizes"),
    (["LIB", "--layers", "axb"], "--layers are CxMxSxK, --zeros numbers"),
    (["LIB", "--zeros", "1.5"], "--zeros in [0, 1]"),
    (["LIB", "--inputs", "noise"], "--inputs: iid, photo"),
    (["LIB", "--threads", "0"], "--threads must be at least 1"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    argv = [get_library_path() if a == "LIB" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        sparse_conv_compare.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_each_library_runs_right_after_the_reference(monkeypatch):
    """Every library's run follows one of the reference's, never another library's: a
    library run after another would find the input and its buffers warmer."""
    calls = []

    class Session:
        def __init__(self, name):
            self.name = name

        def run(self, _outputs, feeds):
            calls.append(self.name)
            c = feeds["x"].shape[1]
            return [feeds["x"][:, :1].repeat(c, axis=1)]

    monkeypatch.setattr(sparse_conv_compare, "_session",
                        lambda model, library=None, threads=1: Session(library or "reference"))
    lines = []
    sparse_conv_compare.compare(["a.so", "b.so"], [(4, 4, 6, 3)], [0.5], ["iid"], seconds=0.0, log=lines.append)
    timed = calls[1 + 2 + 1:]  # the reference's output, each library's check, the sizing run
    assert timed and len(timed) % 4 == 0
    assert timed == ["reference", "a.so", "reference", "b.so"] * (len(timed) // 4)
    assert any(" r0=" in line and " r1=" in line for line in lines)
