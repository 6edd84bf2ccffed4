"""measure/compare.py: outputs without a batch axis (a detection count that changes from
input to input) are compared run by run, never cut to the first rows or broadcast."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import init, make_model, run_plain, scaled_normal, sequence_first_model, two_heads_model
from onnx import TensorProto, helper

from exprune_onnx.cli import main
from exprune_onnx.io.data import dataset_of
from exprune_onnx.measure.compare import _diff_runs, compare, output_for_labels, run_counting
from exprune_onnx.measure.runs import PerRun, joined
from exprune_onnx.runtime import inference_session


def detections(first: str = "y") -> onnx.ModelProto:
    """x [N, 32] -> MatMul -> Relu -> MatMul (rewritable) -> Relu -> y [N, 64], and
    NonZero(y) -> hits [2, K]: K, like a detection count, changes with the input."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="h2"), helper.make_node("Relu", ["h2"], ["y"]),
             helper.make_node("NonZero", ["y"], ["hits"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64]),
               helper.make_tensor_value_info("hits", TensorProto.INT64, [2, "K"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                      outputs if first == "y" else outputs[::-1],
                      [init("w1", scaled_normal(32, 64)), init("w2", scaled_normal(64, 64))])


def test_an_output_without_a_batch_axis_comes_run_by_run():
    model = detections()
    x = np.random.default_rng(0).standard_normal((10, 32)).astype(np.float32)
    data = dataset_of({"x": x}, model)
    got, _ = run_counting(inference_session(model), ["y", "hits"], {}, data.batches(4), 10, per_run=True, key="x")
    assert got["y"].batched and not got["hits"].batched and len(got["hits"]) == 3  # runs of 4, 4 and 2 samples
    y = joined(got["y"], got["y"], 10)[0]
    assert y.shape == (10, 64)
    assert [h.shape[1] for h in got["hits"]] == [int((y[i:i + 4] > 0).sum()) for i in (0, 4, 8)]
    same = compare(model, model, data, batch=4)
    hits = next(d for d in same.outputs if d.name == "hits")
    assert hits.runs == (0, 3) and hits.index and hits.top1_agreement == 1.0


def test_the_check_compares_detections_per_run_and_calibration_says_it_cannot_score_them(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(detections(), src)
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).standard_normal((96, 32)).astype(np.float32))
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops", "--threshold", "0",
                                  "--min-units", "32", "--check-data", str(tmp_path / "d.npz")])
    assert r.exit_code == 0, r.output
    assert "check 'hits'     │ no batch axis, compared per run: another shape on 2 of 2 runs" in r.output
    r = CliRunner().invoke(main, ["verify", str(src), str(out), "--data", str(tmp_path / "d.npz"), "--min-agreement", "0"])
    assert r.exit_code == 0 and "exact at -inf │ pass" in r.output, r.output  # 'hits' compared per run too
    onnx.save(detections(first="hits"), src)
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--min-units", "32", "--calibration",
                                  str(tmp_path / "d.npz"), "--max-drop", "0.01", "--confidence", "0"])
    assert r.exit_code == 6 and "calibration scores output 'hits': output 'hits' has no batch axis" in r.output, r.output
    assert "--score-output" in r.output
    # --score-output names the one to budget on: here the scores, not the detections.
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--min-units", "32", "--calibration",
                                  str(tmp_path / "d.npz"), "--max-drop", "0.05", "--confidence", "0",
                                  "--objective", "flops", "--score-output", "y", "--metric", "relerr"])
    assert r.exit_code == 0 and "mean relative error <= 0.05 on output 'y'" in r.output, r.output
    for args, code, words in ((["--calibration", str(tmp_path / "d.npz"), "--score-output", "boxes"], 4,
                               "--score-output names 'boxes', which the model does not output (its outputs: hits, y)"),
                              (["--score-output", "y"], 2, "--score-output goes with --calibration")):
        r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), *args])
        assert r.exit_code == code and words in r.output, r.output


def test_runs_are_paired_when_either_model_lacks_a_batch_axis():
    """On a fixed batch of 1, an [K, 3] output with K = 1 in every run looks batched; the
    other model's K varies. Both are compared run by run (it crashed)."""
    varies = PerRun([np.ones((2, 3), np.int64), np.ones((1, 3), np.int64), np.zeros((1, 3), np.int64)])
    varies.batched = False
    ones = PerRun([np.ones((1, 3), np.int64)] * 3)
    for a, b in ((varies, ones), (ones, varies)):
        got = joined(a, b, 3)
        assert isinstance(got[0], PerRun)
        d = _diff_runs("hits", *got)
        assert d.runs == (1, 3) and d.index and d.top1_agreement == 0.5  # two runs agree in shape, one in value
    both = joined(ones, ones, 3)
    assert both[0].shape == (3, 3)


@pytest.mark.parametrize("first", ["TopK", "LayerNormalization"])
def test_labels_go_to_the_output_the_graph_reads_as_classes(first):
    """An output listed before the logits, TopK's sorted values or LayerNorm'd features,
    shaped [N, C] too: the labels score the logits, not it."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["logits"], name="head")]
    if first == "TopK":
        nodes.append(helper.make_node("TopK", ["logits", "k"], ["lead", "lead_index"]))
    else:
        nodes.append(helper.make_node("LayerNormalization", ["r1", "gamma"], ["lead"], axis=-1))
    outputs = [helper.make_tensor_value_info("lead", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])], outputs,
                       [init("w1", scaled_normal(32, 64)), init("w2", scaled_normal(64, 10)),
                        init("k", np.array([5], np.int64)), init("gamma", np.ones(64, np.float32))])
    x = rng.standard_normal((40, 32)).astype(np.float32)
    answers_now = run_plain(model, {"x": x})[1].argmax(1)
    checked = compare(model, model, dataset_of({"x": x}, model, answers_now), batch=8)
    assert checked.accuracy == (1.0, 1.0)
    lead, logits = checked.outputs
    assert lead.top1_agreement is None and logits.top1_agreement == 1.0


def two_linear_heads(first: int, second: int) -> onnx.ModelProto:
    """x [N, 32] -> MatMul -> Relu -> out0 [N, first] and out1 [N, second], both Linear
    heads with names that say nothing."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "wa"], ["out0"]), helper.make_node("MatMul", ["r1", "wb"], ["out1"])]
    outputs = [helper.make_tensor_value_info("out0", TensorProto.FLOAT, ["N", first]),
               helper.make_tensor_value_info("out1", TensorProto.FLOAT, ["N", second])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])], outputs,
                      [init("w1", scaled_normal(32, 64)), init("wa", scaled_normal(64, first)),
                       init("wb", scaled_normal(64, second))])


def test_labels_go_to_the_output_whose_classes_they_name_or_to_the_score_output():
    """Box regression [N, 4] listed before logits [N, 5], generic names: labels of 5 classes
    fit only the logits (they were refused: "label 4 is not a class"). Where they fit both,
    --score-output names the one they score."""
    x = np.random.default_rng(4).standard_normal((40, 32)).astype(np.float32)
    model = two_linear_heads(4, 5)
    labels = run_plain(model, {"x": x})[1].argmax(1)
    labels[:2] = 4  # at least one label only the second output has
    checked = compare(model, model, dataset_of({"x": x}, model, labels), batch=8)
    assert checked.accuracy is not None and checked.accuracy[0] == np.mean(labels == run_plain(model, {"x": x})[1].argmax(1))
    # --score-output naming the boxes (a relerr budget) does not drag labels they do not fit
    assert compare(model, model, dataset_of({"x": x}, model, labels), batch=8, labelled="out0").accuracy is not None
    # Calibration reads the output off the first rows: the class range comes from all labels
    late = labels.copy()
    late[:] = np.minimum(late, 3)
    late[-1] = 4  # only the last row names class 4
    assert output_for_labels(model, dataset_of({"x": x}, model, late)) == "out1"
    model = two_linear_heads(6, 5)
    second = run_plain(model, {"x": x})[1].argmax(1)
    data = dataset_of({"x": x}, model, second)
    assert compare(model, model, data, batch=8, labelled="out1").accuracy == (1.0, 1.0)
    assert compare(model, model, data, batch=8).accuracy[0] < 1.0  # the first output, by default


def test_an_output_with_its_batch_on_axis_1_is_read_batch_first():
    """PyTorch's sequence-first [T, N, C]: each run's batch axis is moved first, so the
    samples' rows can be scored (and the check compares positions, with top-1 agreement)."""
    model = sequence_first_model()
    x = np.random.default_rng(0).standard_normal((10, 7, 16)).astype(np.float32)
    data = dataset_of({"x": x}, model)
    moved = {}
    got, _ = run_counting(inference_session(model), ["y"], {}, data.batches(4), 10, key="x", moved=moved)
    assert moved == {"y": 1}
    np.testing.assert_array_equal(got["y"], run_plain(model, {"x": x})[0].transpose(1, 0, 2))
    checked = compare(model, model, data, batch=4)
    assert checked.outputs[0].runs is None and checked.outputs[0].top1_agreement == 1.0


@pytest.mark.parametrize("fixed", [True, False])
def test_a_fixed_size_that_equals_the_batch_is_no_batch_axis(fixed):
    """[K, 3] rows (NonMaxSuppression's) at batch 3: axis 1 matches every run's samples,
    but the model fixes it at 3, so it stays run by run; declared symbolic, it would move."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Slice", ["t", "zero", "k"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["K", 3 if fixed else "N"])],
                       [init("zero", np.array([0], np.int64)), init("k", np.array([4], np.int64))])
    data = dataset_of({"x": np.ones((9, 5), np.float32)}, model)
    got, _ = run_counting(inference_session(model), ["y"], {}, data.batches(3), 9, per_run=True, key="x")
    assert got["y"].batched is not fixed


def test_segmentation_labels_score_the_map_per_position():
    """[N, H, W] labels with a map [N, C, H, W] and a pooled [N, C] output: the labels
    name the map's classes on axis 1, and accuracy and top-1 agreement are per position
    (-100 left out)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["map"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["map"], ["g"]), helper.make_node("Flatten", ["g"], ["pooled"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                       [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 5]),
                        helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", 5, 6, 6])],
                       [init("w", scaled_normal(5, 3, 3, 3))])
    x = np.random.default_rng(4).standard_normal((12, 3, 6, 6)).astype(np.float32)
    labels = run_plain(model, {"x": x})[1].argmax(1)
    labels[:, :3] = (labels[:, :3] + 1) % 5  # half the positions wrong
    labels[:, 3, :3] = -100  # a quarter of the right ones unlabelled
    checked = compare(model, model, dataset_of({"x": x}, model, labels), batch=4)
    assert checked.accuracy == (pytest.approx(15 / 33), pytest.approx(15 / 33))  # 18 right, 3 of them unlabelled
    pooled, seg = checked.outputs
    assert pooled.top1_agreement == 1.0 and seg.top1_agreement == 1.0


def test_agreement_per_position_leaves_out_unlabelled_positions():
    """Scores [N, T, V] with labels [N, T]: a position labelled -100 (padding, a prompt)
    counts in neither accuracy nor top-1 agreement."""
    def scorer(w):
        return make_model([helper.make_node("MatMul", ["x", "w"], ["z"])],
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 8])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 6, 5])], [init("w", w)])

    rng = np.random.default_rng(11)
    w = scaled_normal(8, 5)
    original, other = scorer(w), scorer(w + np.float32(0.3) * scaled_normal(8, 5))
    x = rng.standard_normal((16, 6, 8)).astype(np.float32)
    want, got = run_plain(original, {"x": x})[0].argmax(-1), run_plain(other, {"x": x})[0].argmax(-1)
    differ = want != got
    assert 0 < differ.sum() < differ.size
    labels = want.copy()
    labels[differ] = -100  # every answer that changed sits on an unlabelled position
    checked = compare(original, other, dataset_of({"x": x}, original, labels), batch=4)
    assert checked.outputs[0].top1_agreement == 1.0 and checked.accuracy == (1.0, 1.0)
    plain = compare(original, other, dataset_of({"x": x}, original, want), batch=4)
    assert plain.outputs[0].top1_agreement == pytest.approx(1 - differ.mean())


def test_multi_hot_labels_score_every_class_as_a_yes_or_no():
    """A Sigmoid per class with multi-hot labels: accuracy is the share of right yes/no
    answers (a yes above 0.5), not the arg-max's."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                       [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 5])],
                       [init("w", scaled_normal(8, 5))])
    x = np.random.default_rng(7).standard_normal((20, 8)).astype(np.float32)
    labels = (run_plain(model, {"x": x})[0] > 0.5).astype(np.int64)
    labels[:5, 0] = 1 - labels[:5, 0]  # 5 of 100 answers wrong
    labels[5:8, 1] = -100  # 3 right ones unlabelled
    labels[0, :] = [1, 1, 0, 0, 0] if labels[0, 0] == 1 else [0, 1, 1, 0, 0]  # multi-hot somewhere
    want = run_plain(model, {"x": x})[0] > 0.5
    right = (want == labels)[labels != -100].mean()
    checked = compare(model, model, dataset_of({"x": x}, model, labels), batch=8)
    assert checked.accuracy == (pytest.approx(right), pytest.approx(right)) and right < 1
    # The differences are the output's own, as without labels (not measured from 0.5).
    half = onnx.ModelProto()
    half.CopyFrom(model)
    half.graph.initializer[0].CopyFrom(init("w", onnx.numpy_helper.to_array(model.graph.initializer[0]) * 0.9))
    with_labels = compare(model, half, dataset_of({"x": x}, model, labels), batch=8).outputs[0]
    without = compare(model, half, dataset_of({"x": x}, model), batch=8).outputs[0]
    assert with_labels.max_rel == without.max_rel and with_labels.max_abs == without.max_abs


def test_a_sigmoid_per_class_without_labels_agrees_on_its_yes_or_no_answers():
    """Without labels too, a multi-label Sigmoid's agreement is the share of yes/no answers
    kept: a class flipped below the top one counts, which the arg-max would not see."""
    from exprune_onnx.report.tables import output_text

    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p"])]
    # Its own seed: the shared weight generator's state depends on the tests run before.
    w = (np.random.default_rng(4).standard_normal((8, 5)) / np.sqrt(8)).astype(np.float32)
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                       [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 5])], [init("w", w)])
    shifted = onnx.ModelProto()
    shifted.CopyFrom(model)
    w2 = w.copy()
    w2[:, 4] = -w2[:, 4]  # class 4's answers flip
    shifted.graph.initializer[0].CopyFrom(init("w", w2))
    x = np.random.default_rng(8).standard_normal((40, 8)).astype(np.float32)
    a, b = run_plain(model, {"x": x})[0], run_plain(shifted, {"x": x})[0]
    assert (a.argmax(1) == b.argmax(1)).mean() != ((a > 0.5) == (b > 0.5)).mean()  # the arg-max tells another story
    d = compare(model, shifted, dataset_of({"x": x}, model), batch=8).outputs[0]
    assert d.answer_kind == "yes/no" and d.top1_agreement == pytest.approx(((a > 0.5) == (b > 0.5)).mean())
    assert "yes/no agreement" in output_text(d)


def test_labels_go_to_the_output_they_fit():
    """One label a sample for a model whose first output has a prediction per token: they
    are the sequence head's, not an error about the token head's shape; calibration scores
    that output when no --score-output names one."""
    from exprune_onnx.measure.compare import output_for_labels

    model = two_heads_model()
    x = np.random.default_rng(8).standard_normal((24, 6, 16)).astype(np.float32)
    labels = run_plain(model, {"x": x})[1].argmax(1)
    labels[:6] = (labels[:6] + 1) % 3
    data = dataset_of({"x": x}, model, labels)
    checked = compare(model, model, data, batch=8)
    assert checked.accuracy == (pytest.approx(0.75), pytest.approx(0.75))
    assert output_for_labels(model, data) == "sequence"
    per_token = dataset_of({"x": x}, model, run_plain(model, {"x": x})[0].argmax(-1))
    assert output_for_labels(model, per_token) == "tokens"
    assert compare(model, model, per_token, batch=8).accuracy == (1.0, 1.0)


def test_a_pooled_conv_classifier_s_n_c_1_1_output_takes_one_label_a_sample():
    """SqueezeNet ends in a conv and a global pool: [N, C, 1, 1] scores, [N] labels."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7, 1, 1])],
                       [init("w", scaled_normal(7, 3, 3, 3))])
    x = np.random.default_rng(11).standard_normal((16, 3, 5, 5)).astype(np.float32)
    labels = run_plain(model, {"x": x})[0][:, :, 0, 0].argmax(1)
    labels[:4] = (labels[:4] + 1) % 7
    checked = compare(model, model, dataset_of({"x": x}, model, labels), batch=8)
    assert checked.accuracy == (0.75, 0.75) and checked.outputs[0].top1_agreement == 1.0
    # Without labels too (a trial's SqueezeNet [1, 1000, 1, 1] had no top-1 check, as a map's):
    # one answer a sample, some changed by a flipped filter; read as values where the graph says so.
    other = onnx.load_from_string(model.SerializeToString())
    w = onnx.numpy_helper.to_array(other.graph.initializer[0]).copy()
    answers = run_plain(model, {"x": x})[0][:, :, 0, 0].argmax(1)
    w[answers[0]] *= -1  # changes some answers
    other.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "w"))
    got = run_plain(other, {"x": x})[0][:, :, 0, 0].argmax(1)
    (d,) = compare(model, other, dataset_of({"x": x}, model), batch=8).outputs
    assert d.top1_agreement == pytest.approx(float(np.mean(got == answers))) and d.top1_agreement < 1.0
    from exprune_onnx.measure.compare import _diff

    a = run_plain(model, {"x": x})[0]
    assert _diff("y", a, a, "values").top1_agreement is None


def test_data_on_which_the_original_answers_nan_is_refused():
    """Inputs that overflow the model (inf - inf): NaN equals nothing and has no arg-max, so
    the check printed "top-1 agreement 100.00%", and calibration wrote NaN thresholds that
    onnxruntime refused ("internal error"). Both now say what the data does."""
    from exprune_onnx.errors import DataError
    from exprune_onnx.tuning.runner import Runner

    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "h"], ["b"]),
             helper.make_node("Sub", ["b", "b"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [init("w", scaled_normal(4, 3))])
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    data = dataset_of({"x": x * 1e30}, model)  # finite, but its square is not
    with pytest.raises(DataError, match=r"output 'y' is NaN on 6 of 6 samples \(100.0% of its values\) on arrays: "
                                        r"inputs that overflow"):
        compare(model, model, data, batch=4)
    with pytest.raises(DataError, match="inputs that overflow it"):
        Runner(model, data, np.arange(6), 4)
    random = dataclasses.replace(dataset_of({"x": x * 1e30}, model), source="random")  # not the user's to rescale
    with pytest.raises(DataError, match=r"on seeded random inputs: give real inputs \(--check-data; verify and "):
        compare(model, model, random, batch=4)
    data = dataset_of({"x": x}, model)  # scaled as in training: compared as usual
    assert compare(model, model, data, batch=4).outputs[0].max_abs == 0.0
    # NaN in a side output only (a Sqrt of a pre-activation): the rest is checked, that one
    # gets no top-1 agreement (NaN has no arg-max); labels on it are refused
    model.graph.node.append(helper.make_node("Sqrt", ["h"], ["aux"]))
    model.graph.output.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["N", 3]))
    y, aux = compare(model, model, data, batch=4).outputs
    assert y.top1_agreement == 1.0 and aux.top1_agreement is None
    labelled = dataset_of({"x": x}, model, np.zeros(6, np.int64))
    with pytest.raises(DataError, match="output 'aux' is NaN"):
        compare(model, model, labelled, batch=4, labelled="aux")


def test_a_masked_attention_s_minus_inf_is_not_blamed_and_the_nan_samples_are_counted():
    """Where(mask, -inf, scores) is how exporters mask attention; a sample whose every
    position is masked gives NaN. That was "its own weights hold NaN or Inf ('val_17'): the
    model is broken whatever its inputs", over one sample in 512 (a trial's)."""
    from exprune_onnx.errors import DataError

    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Where", ["m", "ninf", "s"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["y"], axis=-1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("m", TensorProto.BOOL, ["N", 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                       [init("w", scaled_normal(4, 3)), init("ninf", np.array(-np.inf, np.float32))])
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    mask = np.zeros((8, 3), bool)
    mask[5] = True  # every position of sample 5
    with pytest.raises(DataError) as caught:
        compare(model, model, dataset_of({"x": x, "m": mask}, model), batch=4)
    assert "NaN on 1 of 8 samples (12.5% of its values)" in str(caught.value)
    assert "every position is masked" in str(caught.value) and "weights" not in str(caught.value)


def test_nan_samples_are_counted_among_those_asked_for_not_a_fixed_batch_s_padding():
    from exprune_onnx.errors import DataError

    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "h"], ["b"]),
             helper.make_node("Sub", ["b", "b"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])], [init("w", scaled_normal(4, 3))])
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    x[5] *= 1e30  # the last sample, which the padded second run repeats
    with pytest.raises(DataError, match=r"NaN on 1 of 6 samples"):
        compare(model, model, dataset_of({"x": x}, model), batch=4)


def test_nan_from_the_model_s_own_weights_is_blamed_on_them():
    """A weight holding NaN (a broken export or checkpoint) made the check ask for real inputs
    or better-scaled data, which cannot help: the message now names the tensor, and the
    command still exits as for data it cannot check (6)."""
    from exprune_onnx.errors import DataError
    from exprune_onnx.tuning.runner import Runner

    w = scaled_normal(4, 3)
    w[1, 2] = np.nan
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [init("w", w)])
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    for source in ("arrays", "random"):
        data = dataclasses.replace(dataset_of({"x": x}, model), source=source)
        with pytest.raises(DataError, match=r"and its own weights hold NaN or Inf \('w': 1 of 12 values\): the model "
                                            r"is broken whatever its inputs"):
            compare(model, model, data, batch=4)
    with pytest.raises(DataError, match=r"its own weights hold NaN or Inf \('w': 1 of 12 values\)"):
        Runner(model, dataset_of({"x": x}, model), np.arange(6), 4)


def test_labels_beside_a_relerr_budget_on_one_output_score_the_other():
    """Calibrated on the first output with --metric relerr and checked on labelled data: the
    labels (of the second output's classes, which the first also holds) were scored against
    the first's arg-max, an accuracy of nothing (a trial's 0.20% on an embedding)."""
    from exprune_onnx import optimize

    x = np.random.default_rng(5).standard_normal((400, 32)).astype(np.float32)
    model = two_linear_heads(6, 5)
    labels = run_plain(model, {"x": x})[1].argmax(1)
    common = dict(calibration={"x": x}, check_data={"x": x, "labels": labels}, max_drop=0.05, confidence=0,
                  objective="flops", min_units=8, include_first_layer=True)
    for named in ({"score_output": "out0"}, {}):  # named, or the first output by default
        done = optimize(model, metric="relerr", **named, **common)
        assert done.checked is not None and done.checked.accuracy[0] == 1.0  # the second output's own answers
    # Where the scored output holds classes (agreement, chosen without labels to calibrate
    # on), labels that fit it stay with it.
    model = two_linear_heads(5, 6)
    labels = run_plain(model, {"x": x})[0].argmax(1)
    done = optimize(model, score_output="out0", **{**common, "check_data": {"x": x, "labels": labels}})
    assert done.calibrated.metric == "agreement" and done.checked.accuracy[0] == 1.0
