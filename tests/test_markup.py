"""report/markup.py: names from a model or a data file reach the terminal as written, with
their control characters as escapes (trial AH: an npz key could retitle and clear it)."""

import numpy as np
from cli_calls import assert_one_line_error, invoke

from exprune_onnx.report.markup import escape, visible


def test_controls_are_escapes_and_the_rest_is_kept():
    assert visible('a/b\n"x\x1b[31mRED\x7f\x9b') == 'a/b\\x0a"x\\x1b[31mRED\\x7f\\x9b'
    assert visible("conv_1/Relu:0 é ✓") == "conv_1/Relu:0 é ✓"
    assert escape("[bold]\x1b") == "\\[bold]\\x1b"


def test_an_error_naming_a_data_key_prints_no_control_character(example, tmp_path):
    key = "\x1b]0;pwned\x07\x1b[2J"
    data = tmp_path / "d.npz"
    np.savez(data, **{key: np.zeros((2, 1, 28, 28), np.float32)})
    r = invoke("optimize", example, "-o", tmp_path / "o.onnx", "--check-data", data)
    line = assert_one_line_error(r, 6, "\\x1b]0;pwned\\x07\\x1b[2J")
    assert "\x1b" not in r.output and "\x07" not in line


def test_a_node_name_in_the_tables_prints_no_control_character(example, tmp_path):
    import onnx

    model = onnx.load(example)
    next(n for n in model.graph.node if n.op_type == "Conv").name = 'a/b\n"x\x1b[31mRED'
    onnx.save(model, tmp_path / "m.onnx")
    r = invoke("inspect", tmp_path / "m.onnx", "--explain")
    assert r.exit_code == 0 and '\\x1b[31mRED' in r.output and "\x1b" not in r.output
