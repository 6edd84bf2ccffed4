"""report/markup.py: names from a model or a data file reach the terminal as written, with
their control characters as escapes (trial AH: an npz key could retitle and clear it)."""

import numpy as np
from cli_calls import assert_one_line_error, invoke

from exprune_onnx.report.markup import escape, visible


def test_controls_are_escapes_and_the_rest_is_kept():
    assert visible('a/b\n"x\x1b[31mRED\x7f\x9b') == 'a/b\\x0a"x\\x1b[31mRED\\x7f\\x9b'
    assert visible("conv_1/Relu:0 é ✓") == "conv_1/Relu:0 é ✓"
    assert escape("[bold]\x1b") == "\\[bold]\\x1b"
    # A final backslash is shown once (rich doubled it), in a sentence and at the end of a cell.
    from rich.text import Text

    for name in ("conv\\", "a[b]\\", "x\\[y]"):
        assert Text.from_markup(f"layer {escape(name)} is left alone").plain == f"layer {name} is left alone"
        assert Text.from_markup(escape(name)).plain == name


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


def _renamed_output(example, tmp_path, name):
    import onnx

    model = onnx.load(example)
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
    model.graph.output[0].name = name
    path = tmp_path / "x[bold]y.onnx"
    onnx.save(model, path)
    return path


def test_output_and_file_names_in_optimize_verify_and_evaluate(example, tmp_path):
    """A review: an output named with ESC reached the check, evaluate and verify rows raw, and
    a file named x[bold]y.onnx was shown as 'xy.onnx', a file that does not exist."""
    path = _renamed_output(example, tmp_path, "out\x1b[31mRED[bold]")
    data = tmp_path / "d.npz"
    np.savez(data, input=np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32))
    runs = [invoke("optimize", path, "-o", tmp_path / "o.onnx", "--check-data", data, "--threshold=-inf",
                   "--objective", "flops")]
    runs += [invoke("verify", path, tmp_path / "o.onnx", "--data", data),
             invoke("evaluate", path, tmp_path / "o.onnx", "--data", data, "--runs", "2")]
    for r, file_named in zip(runs, (True, True, False)):  # (evaluate names no file)
        text = " ".join(r.output.split())
        assert r.exit_code == 0 and "\x1b" not in r.output, r.output
        assert "out\\x1b[31mRED[bold]" in text and ("x[bold]y.onnx" in text) == file_named, text


def test_warnings_in_the_report_keep_the_names_as_they_are(tmp_path):
    """Terminal escapes are the terminal's: the JSON report's warnings name 'in\\tput' as the
    model does (they held 'in\\x09put', beside assumed_input_shapes' 'in\\tput')."""
    import json

    from helpers import conv_hw, save_model

    model = conv_hw()
    model.graph.input[0].name = "in\tput"
    for node in model.graph.node:
        node.input[:] = ["in\tput" if i == "x" else i for i in node.input]
    path = save_model(model, tmp_path)
    r = invoke("optimize", path, "-o", tmp_path / "o.onnx", "--objective", "flops", "--report", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert r.exit_code == 0 and "in\\x09put" in " ".join(r.output.split()), r.output
    assert "in\tput" in report["assumed_input_shapes"] and any("'in\tput'" in w for w in report["warnings"])
