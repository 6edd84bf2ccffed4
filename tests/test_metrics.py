"""tuning/metrics.py: which outputs are class scores, how their answers are compared, and
which labels the accuracy can be scored with."""

import numpy as np
import pytest

from exprune_onnx.errors import DataError
from exprune_onnx.tuning.certify import sample_losses
from exprune_onnx.tuning.metrics import (
    check_labels,
    is_scores,
    score,
    top1_agreement,
)

SCORES = np.zeros((4, 3), np.float32)  # 4 samples, 3 classes
PER_POSITION = np.zeros((2, 5, 3), np.float32)  # 2 samples, 5 positions, 3 classes
INDICES = np.array([[7], [0]], np.int64)  # an arg-max head: class indices, no class count


@pytest.mark.parametrize(("labels", "output"), [
    (np.array([0, 2, 1, 0]), SCORES),
    (np.array([0.0, 2.0, 1.0, 0.0]), SCORES),  # whole numbers stored as floats
    (np.zeros((2, 5), np.int32), PER_POSITION),
    (np.array([9, 0]), INDICES),
])
def test_labels_that_fit(labels, output):
    check_labels(labels, output)


@pytest.mark.parametrize(("labels", "output", "message"), [
    (np.eye(3)[[0, 2, 1, 0]], SCORES, "shape [N, 3], the model's predictions [N] (N samples)"),
    (np.array([0, 1]), SCORES, "shape [2], the model's predictions [4]"),
    (np.array([0, 3, 1, 0]), SCORES, "label 3 is not a class of the model's output (its classes are 0 to 2)"),
    (np.array([0, -1, 1, 0]), SCORES, "label -1 is not a class"),
    (np.full((2, 5), 255), PER_POSITION, "2; mark a position with no label -100"),  # VOC's ignore label
    (np.array([-2, 0]), INDICES, "label -2 is not a class of the model's output (classes are >= 0)"),
    (np.array([0.0, np.nan, 1.0, 0.0]), SCORES, "whole class indices; found nan"),
    (np.array([0.5, 1.0, 1.0, 0.0]), SCORES, "whole class indices; found 0.5"),
    (np.array(["cat", "dog", "cat", "dog"]), SCORES, "whole class indices; found 'cat'"),
])
def test_labels_that_name_no_class(labels, output, message):
    with pytest.raises(DataError) as info:
        check_labels(labels, output)
    assert message in str(info.value)


def test_infinite_labels_are_refused_without_a_numpy_warning():
    """numpy's 'invalid value encountered' was printed before the one-line error (a review)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="whole class indices; found inf"):
            check_labels(np.array([0.0, np.inf, 1.0, 0.0]), SCORES)


def test_scores_have_two_or_three_axes():
    assert is_scores(SCORES) and is_scores(PER_POSITION)
    assert not is_scores(np.zeros((2, 3, 4, 4), np.float32))  # an NCHW map: its classes are not the last axis
    assert not is_scores(np.zeros((4, 1), np.float32)) and not is_scores(INDICES)


def test_top1_agreement_counts_a_pick_among_exact_ties_as_agreeing():
    original = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.5, 0.5, 0.5]], np.float32)
    # Row 0 ties between classes 0 and 1, row 2 among all three: rounding picks another of them.
    rounded = original + np.array([[0.0, 1e-7, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1e-7]], np.float32)
    assert top1_agreement(original, rounded) == 1.0
    changed = original + np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    assert top1_agreement(original, changed) == pytest.approx(2 / 3)
    near_tie = np.array([[1.0, 1.0 - 1e-6]], np.float32)  # not a tie: the answer did change
    assert top1_agreement(near_tie, near_tie[:, ::-1]) == 0.0
    nan_row = np.array([[np.nan, 1.0], [0.0, 1.0]], np.float32)  # identical outputs agree, NaN or not
    assert top1_agreement(nan_row, nan_row.copy()) == 1.0


def test_calibration_scores_ties_as_the_check_does():
    """The agreement metric and the certificate's per-sample loss share the check's rule."""
    original = np.array([[1.0, 1.0], [0.0, 2.0]], np.float32)
    rounded = original + np.array([[0.0, 1e-7], [0.0, 0.0]], np.float32)
    assert score("agreement", original, rounded, None).drop == 0.0
    assert sample_losses("agreement", original, rounded, None, 0.0).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 1)])
def test_per_position_class_indices_agree_with_their_scores(shape):
    scores = np.random.default_rng(3).standard_normal((2, 5, 3)).astype(np.float32)
    index = scores.argmax(-1).reshape(shape)
    assert top1_agreement(scores, index) == 1.0
    index[0, 1] = (index[0, 1] + 1) % 3
    assert top1_agreement(scores, index) == pytest.approx(0.9)
    labels = scores.argmax(-1)
    assert score("accuracy", scores, index, labels).drop == pytest.approx(0.1)
    assert sample_losses("lost", scores, index, labels, 0.0).tolist() == [0.2, 0.0]


def test_positions_labelled_minus_100_are_left_out():
    """Hugging Face marks padding and prompt tokens with the ignore index -100: they are
    no class, and accuracy, losses and the certificate count the labelled positions only."""
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((2, 4, 3)).astype(np.float32)
    labels = ref.argmax(-1)
    labels[0, 2:] = -100  # sample 0 has two labelled positions
    got = ref.copy()
    got[0, 0] = -got[0, 0]  # sample 0 loses one of its two
    check_labels(labels, ref)
    s = score("accuracy", ref, got, labels)
    assert s.original == 1.0 and s.optimized == pytest.approx(5 / 6) and s.drop == pytest.approx(1 / 6)
    assert score("lost", ref, got, labels).drop == pytest.approx(1 / 6)
    assert sample_losses("lost", ref, got, labels, 0.0).tolist() == [0.5, 0.0]
    with pytest.raises(DataError, match="every label is -100"):
        check_labels(np.full((2, 4), -100), ref)
    with pytest.raises(DataError, match="label -1 is not a class"):
        check_labels(np.where(labels < 0, -1, labels), ref)  # only -100 means "no label"


def test_a_one_position_step_s_index_aligns_with_its_scores():
    """A KV-cache step's logits [B, 1, V] and their --argmax-only index [B, 1]: compared
    position by position, not broadcast to [B, B]."""
    scores = np.random.default_rng(5).standard_normal((4, 1, 3)).astype(np.float32)
    index = scores.argmax(-1)
    assert top1_agreement(scores, index) == 1.0
    assert score("accuracy", scores, index, index.copy()).drop == 0.0


@pytest.mark.parametrize("metric", ["auto", "relerr", "agreement"])
def test_topk_outputs_are_not_scored(metric):
    """TopK's sorted values keep their arg-max at 0, its indices [N, 3] are class numbers:
    no metric reads either. Other integer outputs are read as before."""
    from exprune_onnx.tuning.metrics import choose

    with pytest.raises(DataError, match="made by TopK .* name another output with --score-output"):
        choose(metric, np.zeros((4, 3), np.int64), None, "topk")
    assert choose("auto", np.zeros((4, 1), np.int64), None, "topk") == "agreement"  # TopK(k=1): the answer
    assert choose("auto", np.zeros((4, 3), np.int64), None) == "relerr"


def test_an_arg_max_mask_is_class_indices_per_pixel():
    """A segmentation exported with its arg-max, [N, H, W] int64: its labels [N, H, W] are
    scored pixel by pixel (accuracy), and without labels its pixels' agreement counts,
    not the relative error of class numbers."""
    from exprune_onnx.tuning.metrics import check_labels, choose, prediction_shape

    ref = np.random.default_rng(0).integers(0, 4, (3, 5, 6))
    got = ref.copy()
    got[0, 0, :3] = (got[0, 0, :3] + 1) % 4  # 3 of 90 pixels change class
    assert prediction_shape(ref) == (3, 5, 6)
    check_labels(ref, ref)
    assert choose("auto", ref, ref) == "accuracy" and choose("auto", ref, None) == "agreement"
    s = score("accuracy", ref, got, ref)
    assert (s.original, s.optimized) == (1.0, pytest.approx(87 / 90))
    assert score("agreement", ref, got, None).optimized == pytest.approx(87 / 90)


def test_an_arg_max_mask_with_its_class_axis_kept_is_read_as_one():
    """argmax(1, keepdim=True) gives [N, 1, H, W], argmax(-1, keepdim=True) [N, T, 1]: the
    same predictions as without the axis. An 8-bit image [N, 3, H, W] stays values."""
    from exprune_onnx.tuning.metrics import check_labels, is_class_index, prediction_shape

    mask = np.random.default_rng(1).integers(0, 4, (3, 1, 5, 6))
    assert is_class_index(mask) and prediction_shape(mask) == (3, 5, 6)
    check_labels(mask[:, 0], mask)
    assert score("accuracy", mask, mask, mask[:, 0]).original == 1.0
    tokens = mask[:, 0, 0, :, None]  # [3, 6, 1]
    assert prediction_shape(tokens) == (3, 6)
    assert not is_class_index(np.zeros((3, 3, 5, 6), np.uint8))


def test_labels_the_original_does_no_better_on_than_chance_are_warned_of():
    from exprune_onnx.tuning.metrics import label_warnings

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((400, 10)).astype(np.float32)
    right = scores.argmax(1)
    (fitted,) = label_warnings(scores, right)  # right on all 400: data it was trained on?
    assert "right on all 400 labelled calibration samples" in fitted and "held-out" in fitted
    assert label_warnings(scores[:99], right[:99]) == []  # too few to tell
    one_wrong = right.copy()
    one_wrong[7] = (one_wrong[7] + 1) % 10
    assert label_warnings(scores, one_wrong) == []
    shuffled = rng.permutation(right)
    (warning,) = label_warnings(scores, shuffled)
    assert "no better than its answers would score on labels unrelated to the samples" in warning
    # A weak but real model (60% right) is not warned of, nor are unlabelled positions counted.
    weak = np.where(rng.random(400) < 0.6, right, shuffled)
    assert label_warnings(scores, weak) == []
    assert label_warnings(scores, np.where(np.arange(400) < 200, one_wrong, -100)) == []
    # One class for all (even with some answers wrong), or labels of positions (a map): no sign.
    answers = np.where(np.arange(300) < 297, 3, 1)
    assert label_warnings(np.eye(10, dtype=np.float32)[answers], np.full(300, 3)) == []
    # Imbalanced yes/no labels (91% one class) and a sound model right on 93%: no sign; shuffled: a sign.
    truth = (rng.random(2000) < 0.09).astype(np.int64)
    sound = np.where(rng.random(2000) < 0.93, truth, 1 - truth)
    two = np.eye(2, dtype=np.float32)[sound]
    assert label_warnings(two, truth) == [] and len(label_warnings(two, rng.permutation(truth))) == 1
    assert label_warnings(rng.standard_normal((4, 5, 10)), rng.integers(0, 10, (4, 5))) == []


def test_a_calibration_on_shuffled_labels_says_so(tmp_path):
    from click.testing import CliRunner
    from helpers import calibration_dataset, calibration_mlp, save_model

    from exprune_onnx.cli import main

    model = calibration_mlp()
    data = calibration_dataset(model, 600)
    np.savez(tmp_path / "d.npz", x=data.inputs["x"], labels=np.random.default_rng(2).permutation(data.labels))
    r = CliRunner().invoke(main, ["optimize", str(save_model(model, tmp_path)), "--calibration", str(tmp_path / "d.npz"),
                                  "--max-drop", "0.05", "--objective", "flops", "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 0, r.output
    assert "no better than its answers would score on labels unrelated" in " ".join(r.output.split())


def test_a_held_out_part_too_small_for_its_budget_is_said_to_say_little():
    from exprune_onnx.tuning.metrics import thin_holdout

    assert "has 5 sample(s), so one answer is 20 points against a budget of 1" in thin_holdout("accuracy", 0.01, 5)
    assert "no held-out part (--holdout 0): " in thin_holdout("lost", 0.01, 0)
    assert "hold some out, or certify" in thin_holdout("lost", 0.01, 0, 0.0, 500)
    # The default share of a single sample rounds to none: not "--holdout 0", which was never given.
    assert "(--holdout 0.5 of 1 sample(s) holds none out)" in thin_holdout("accuracy", 0.01, 0, 0.5, 1)
    assert "give more data, or certify" in thin_holdout("accuracy", 0.01, 0, 0.5, 1)
    assert thin_holdout("accuracy", 0.01, 100) == "" and thin_holdout("agreement", 0.05, 20) == ""
    assert thin_holdout("agreement", 0.05, 19) != ""
    assert thin_holdout("relerr", 0.01, 5) == ""  # a mean of errors, not a count of answers


def test_relerr_on_class_indices_is_refused():
    """--metric relerr --score-output label measured the 'relative error' of int64 class ids."""
    from exprune_onnx.errors import DataError
    from exprune_onnx.tuning.metrics import choose

    with pytest.raises(DataError, match="relerr metric measures values, and the scored output holds class indices"):
        choose("relerr", np.arange(30, dtype=np.int64) % 10, None)
    assert choose("relerr", np.random.default_rng(0).standard_normal((30, 10)).astype(np.float32), None) == "relerr"


def test_agreement_on_a_map_without_labels_says_what_makes_it_answer_per_position():
    """A segmentation map [N, C, H, W] with --metric agreement and no labels: the refusal
    named only the shape, and a trial found no way to calibrate per-pixel agreement."""
    from exprune_onnx.tuning.metrics import choose

    with pytest.raises(DataError) as err:
        choose("agreement", np.zeros((4, 5, 8, 8), np.float32), None)
    assert "labels of one class per position ([N, H, W])" in str(err.value)
    assert "the original's own arg-max" in str(err.value)
    with pytest.raises(DataError) as err:
        choose("agreement", np.zeros((4, 5, 8, 8, 2), np.float32), None)
    assert "per position" not in str(err.value)  # not an image's map


def test_the_same_infinity_in_both_is_no_difference():
    """An input of -inf (a float mask) makes outputs of -inf in both models: inf - inf is NaN,
    which made every figure of the check NaN. One infinity against another value is infinitely
    far; the scale is the finite values'."""
    from exprune_onnx.tuning.metrics import abs_diff, relative_error, sample_relative_errors

    ref = np.array([[-np.inf, 2.0, 4.0], [1.0, np.inf, -2.0]], np.float32)
    got = ref + np.array([[0, 0.5, 0], [0, 0, 0]], np.float32)
    assert abs_diff(ref, got).tolist() == [[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]]
    assert relative_error(ref, got) == pytest.approx((0.5 / 6) / (9 / 6))  # over the finite |ref|
    assert sample_relative_errors(ref, got).tolist() == pytest.approx([(0.5 / 3) / 2, 0.0])
    moved = ref.copy()
    moved[0, 0] = 0.0
    assert abs_diff(ref, moved)[0, 0] == np.inf


@pytest.mark.parametrize("metric", ["agreement", "accuracy", "relerr"])
def test_an_optimised_output_turned_nan_is_a_loss_under_every_metric(metric):
    """A review: NaN > tolerance is False, so a row the optimised model made NaN was no
    relerr loss, and a row of NaN answered class 0 (arg-max's first NaN), agreeing with an
    original that answered 0. A NaN the original has too is no change."""
    from exprune_onnx.tuning.metrics import abs_diff

    ref = np.array([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0], [0.0, 3.0, 1.0], [np.nan, 1.0, 0.0]], np.float32)
    got = ref.copy()
    got[0] = np.nan  # all NaN: arg-max 0, the original's answer
    got[1, 2] = np.nan  # one NaN, in a class the original does not pick
    labels = np.array([0, 0, 1, 1]) if metric == "accuracy" else None
    assert sample_losses(metric, ref, got, labels, 0.01).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert score(metric, ref[:3], got[:3], None if labels is None else labels[:3], over=0.01).drop == \
        pytest.approx(2 / 3)
    assert abs_diff(ref, got)[:, 0].tolist() == [np.inf, 0.0, 0.0, 0.0]  # (a NaN in both is none)


def _scores(classes: np.ndarray, width: int) -> np.ndarray:
    """Scores whose arg-max is ``classes``."""
    out = np.zeros((len(classes), width), np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


def test_a_class_mix_of_one_class_or_few_classes_is_warned_of():
    from exprune_onnx.tuning.metrics import class_mix_warnings

    balanced = np.arange(200) % 10
    assert class_mix_warnings(_scores(balanced, 10), balanced) == []
    one = np.full(200, 9)
    (text,) = class_mix_warnings(_scores(balanced, 10), one)
    assert text.startswith("class 9 is 100% of the 200 calibration samples (by their labels)")
    mostly = np.where(np.arange(200) < 190, 1, balanced)  # 95% class 1, all ten present
    assert class_mix_warnings(_scores(balanced, 10), mostly)[0].startswith("class 1 is 96% of the 200")
    (text,) = class_mix_warnings(_scores(mostly, 10), None)  # no labels: the original's answers
    assert "(by the original's answers)" in text
    few = np.arange(200) % 4  # 50 samples a class, 4 of 10 classes
    assert class_mix_warnings(_scores(few, 10), few)[0].startswith("the 200 calibration samples hold 4 of the "
                                                                   "model's 10 classes")
    assert class_mix_warnings(_scores(few[:40], 10), few[:40]) == []  # too few samples to expect every class


def test_the_class_mix_is_not_judged_for_two_classes_maps_or_ignored_labels():
    from exprune_onnx.tuning.metrics import IGNORE, class_mix_warnings

    one = np.zeros(100, np.int64)
    assert class_mix_warnings(_scores(one, 2), one) == []  # a yes/no model meets mostly one answer
    assert class_mix_warnings(np.zeros((4, 10, 8, 8), np.float32), None) == []
    assert class_mix_warnings(_scores(np.arange(100) % 10, 10), np.full(100, IGNORE)) == []
