"""io/open_values.py: the plain command on a model with a length input beside its tokens
(trial AM: `optimize model.onnx` exited 6 on a text CNN exported with its lengths), and the
integer inputs it must still ask about."""

from __future__ import annotations

import numpy as np
import pytest
from cli_calls import cli, one_line_error
from helpers import init, make_model, save_model, scaled_normal, vi
from onnx import TensorProto, helper

from exprune_onnx.io.feeds import InputSpec
from exprune_onnx.io.open_values import assumed_values

ROWS, WIDTH = 50, 16


def text_model(length_name: str = "lengths", length_dims=("N",), seq="T", last_index: bool = False):
    """Token ids [N, seq] into a table, mean-pooled over the first lengths positions (a mask
    of Range(T) < lengths), then a ReLU MLP of two hidden layers. ``last_index``: the lengths also pick a position
    by Gather, which fails at a length of T (an index one past the end)."""
    ids, length = vi("input_ids", ["N", seq], TensorProto.INT64), vi(length_name, list(length_dims), TensorProto.INT64)
    flat = [length_name] if len(length_dims) == 1 else ["flat_len"]
    nodes = [helper.make_node("Reshape", [length_name, "minus1"], ["flat_len"])] if len(length_dims) > 1 else []
    nodes += [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
        helper.make_node("Shape", ["input_ids"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["t"], axis=0),
        helper.make_node("Range", ["zero", "t", "one"], ["pos"]),
        helper.make_node("Unsqueeze", ["pos", "axis0"], ["pos_row"]),
        helper.make_node("Unsqueeze", [flat[0], "axis1"], ["len_col"]),
        helper.make_node("Less", ["pos_row", "len_col"], ["keep"]),
        helper.make_node("Cast", ["keep"], ["keep_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["keep_f", "axis2"], ["keep3"]),
        helper.make_node("Mul", ["emb", "keep3"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis1"], ["total"], keepdims=0),
        helper.make_node("Cast", ["len_col"], ["len_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["total", "len_f"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w3"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "w2"], ["logits"]),
    ]
    outputs = [vi("logits", ["N", 4])]
    if last_index:
        nodes.append(helper.make_node("Gather", ["pos", flat[0]], ["last"]))
        outputs.append(vi("last", ["N"], TensorProto.INT64))
    scalar = lambda name, v: init(name, np.array(v, np.int64))  # noqa: E731
    inits = [init("table", np.random.default_rng(0).standard_normal((ROWS, WIDTH)).astype(np.float32)),
             scalar("zero", 0), scalar("one", 1), init("axis0", np.array([0], np.int64)),
             init("axis1", np.array([1], np.int64)), init("axis2", np.array([2], np.int64)),
             init("minus1", np.array([-1], np.int64)), init("w1", scaled_normal(WIDTH, 64)),
             init("w3", scaled_normal(64, 64)), init("w2", scaled_normal(64, 4))]
    used = {i for n in nodes for i in n.input}
    return make_model(nodes, [ids, length], outputs, [t for t in inits if t.name in used])


def test_a_length_input_is_taken_at_the_sequence_s_full_length():
    model = text_model()
    assert assumed_values(model, InputSpec({"input_ids": ("N", 128)})) == {"lengths": (128, 128)}
    assert assumed_values(text_model("x_lens"), InputSpec({"input_ids": ("N", 9)})) == {"x_lens": (9, 9)}
    assert assumed_values(text_model("seqLen"), InputSpec({"input_ids": ("N", 9)})) == {"seqLen": (9, 9)}
    assert assumed_values(text_model(seq=40), InputSpec()) == {"lengths": (40, 40)}  # a fixed sequence
    assert assumed_values(text_model(length_dims=("N", 1)), InputSpec({"input_ids": ("N", 64)})) == {
        "lengths": (64, 64)}


def test_the_length_is_never_past_the_sequence_nor_its_type():
    """A fixed sequence of 16 beside an open input taken as 128 gave 128, past the tokens
    (a review); an int8 length of 128 was refused as if the user had asked for it."""
    model = text_model(seq=16)
    model.graph.input.append(vi("side", ["N", "F"]))
    assert assumed_values(model, InputSpec({"side": ("N", 128)})) == {"lengths": (16, 16)}
    model = text_model()
    model.graph.input[1].type.tensor_type.elem_type = TensorProto.INT8
    assert assumed_values(model, InputSpec({"input_ids": ("N", 256)})) == {"lengths": (127, 127)}


def test_the_length_is_the_token_ids_not_another_input_s_smaller_size():
    """A speaker embedding [N, 4] beside the ids made the length 4: 124 of 128 tokens masked."""
    model = text_model()
    model.graph.input.append(vi("spk", ["N", 4]))
    model.graph.input.append(vi("max_length", ["N"], TensorProto.INT64))  # a bound, no length
    assert assumed_values(model, InputSpec({"input_ids": ("N", 128)})) == {"lengths": (128, 128)}


@pytest.mark.parametrize(("name", "dims", "spec"), [
    ("sr", ("N",), {}),  # an integer no name says the meaning of
    ("calendar_month", ("N",), {}),  # 'len' inside a word is no length (it was taken as one)
    ("blend_mode", ("N",), {}),
    ("lengths", ("N", 3), {}),  # three values a sample: no length of one sequence
    ("lengths", ("N",), {"values": {"lengths": (5, 9)}}),  # the user's own
])
def test_other_integer_inputs_are_left_to_the_user(name, dims, spec):
    model = text_model(name, dims) if dims == ("N",) else _three_lengths()
    given = InputSpec({"input_ids": ("N", 128)}, spec.get("values", {}))
    assert assumed_values(model, given) == {}


def _three_lengths():
    model = text_model()
    length = model.graph.input[1]
    length.type.tensor_type.shape.dim.add().dim_value = 3
    return model


def test_the_plain_command_runs_and_says_what_it_took(tmp_path):
    path = save_model(text_model(), tmp_path)
    r = cli("optimize", path, "-o", tmp_path / "o.onnx", "--objective", "flops")
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "took 'lengths' as 128 for every sample (full length" in text, text
    assert (tmp_path / "o.onnx").is_file()


def test_a_model_that_fails_at_full_length_says_what_was_taken(tmp_path):
    path = save_model(text_model(last_index=True), tmp_path)
    line = one_line_error(cli("optimize", path, "-o", tmp_path / "o.onnx", "--objective", "flops", "--threshold", "0"),
                          6)
    assert "open dims were taken as 'input_ids' [N, T] as [N, 128], 'lengths' was taken as 128: --input-shape, " \
        "--input-value or --check-data gives what it takes" in line, line
    assert not (tmp_path / "o.onnx").exists()


def test_verify_without_data_takes_the_same_length(tmp_path):
    path = save_model(text_model(), tmp_path)
    r = cli("verify", path, path)
    assert r.exit_code == 0 and "took 'lengths' as 128 for every sample" in " ".join(r.output.split()), r.output
