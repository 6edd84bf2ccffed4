"""tuning/label_layout.py: labels that locate a map's classes, and multi-hot labels."""

import numpy as np
import pytest

from exprune_onnx.tuning.label_layout import Layout, is_yes_no, laid_out, layout_of, map_class_axis
from exprune_onnx.tuning.metrics import IGNORE, check_labels, score


@pytest.mark.parametrize(("shape", "labels", "axis"), [
    ((2, 4, 6, 6), (2, 6, 6), 1),  # a segmentation map, NCHW
    ((2, 6, 6, 4), (2, 6, 6), -1),  # the same, NHWC
    ((2, 6, 6, 6), (2, 6, 6), -1),  # both readings fit: classes last
    ((2, 4, 9), (2, 9), 1),  # a Conv1d tagger [N, C, L]
    ((2, 9, 4), (2, 9), None),  # [N, T, C]: scores as they are
    ((2, 4, 6, 6), (2,), None),  # one label per sample fits no map
    ((2, 1, 6, 6), (2, 6, 6), None),  # one channel is no choice of class
    ((2, 4, 1, 1), (2,), 1),  # SqueezeNet's [N, C, 1, 1] with one label a sample
    ((2, 4, 1, 1), (2, 1, 1), 1),
])
def test_labels_locate_a_map_s_classes(shape, labels, axis):
    assert map_class_axis(np.zeros(shape, np.float32), np.zeros(labels, np.int64)) == axis
    pooled = shape[2:] == (1, 1)  # without labels only a pooled classifier's classes are found
    assert map_class_axis(np.zeros(shape, np.float32), None) == (1 if pooled else None)


@pytest.mark.parametrize("axis", [1, -1])
def test_a_map_is_read_position_by_position_with_its_labels(axis):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((2, 4, 3, 5) if axis == 1 else (2, 3, 5, 4)).astype(np.float32)
    labels = scores.argmax(axis)
    layout = layout_of(scores, labels)
    flat = layout.scores(scores)
    assert layout == Layout(axis=axis) and flat.shape == (2, 15, 4)
    assert np.array_equal(flat.argmax(-1), layout.labels(labels))
    pixel = scores[1, :, 1, 2] if axis == 1 else scores[1, 1, 2, :]
    assert np.array_equal(flat[1, 7], pixel)  # position (1, 2) of sample 1


@pytest.mark.parametrize(("shape", "labels", "yes_no"), [
    ((2, 3), [[1, 0, 1], [0, 0, 0]], True),  # multi-hot
    ((2, 3), [[1.0, 0.0, 1.0], [0.0, 1.0, -100.0]], True),  # floats, and a class with no label
    ((2, 3), [[1, 0, 0], [0, 0, 1]], False),  # one-hot: refused with the arg-max advice
    ((2, 3), [[2, 0, 1], [0, 0, 0]], False),  # not 0/1: refused as class indices are
    ((2, 3), [[1, 0], [0, 1]], False),  # another shape
    ((2, 3), [1, 0], False),  # class indices of [N, C] scores: read as they are
    ((2, 1), [1, 0], True),  # a binary classifier's one score
    ((2, 1), [[1], [1]], True),
    ((2,), [0, 1], True),
    ((2, 1), [2, 0], False),
    ((2, 1), [[1, 0], [0, 1]], False),
])
def test_yes_no_labels(shape, labels, yes_no):
    assert is_yes_no(np.zeros(shape, np.float32), np.array(labels)) is yes_no


@pytest.mark.parametrize("shape", [(4, 1), (4,)])
def test_a_binary_classifier_s_one_score_is_one_yes_or_no_a_sample(shape):
    """One answer a sample: [N, 2] scores and [N] labels, so the certificate's losses are
    0 or 1 and the exact binomial applies."""
    ref = np.array([0.3, -1.2, 2.0, 0.1], np.float32).reshape(shape)
    labels = np.array([1, 0, 1, 1])
    layout = layout_of(ref, labels)
    assert layout == Layout(threshold=0.0)  # logits: not all in [0, 1]
    flat, flat_labels = layout.scores(ref), layout.labels(labels)
    assert flat.shape == (4, 2) and flat_labels.shape == (4,)
    assert np.array_equal(flat.argmax(-1), [1, 0, 1, 1])


def test_a_regression_onto_yes_and_no_is_cut_where_it_answers_its_labels():
    """A regressor trained on 0/1 targets strays outside [0, 1]: cut at 0 it would say yes
    to nearly everything; at 0.5 it answers its labels. Logits keep 0, and so does a tie."""
    regressed = np.array([-0.08, 0.12, 0.31, 0.93, 1.07, 0.71, 0.05, 0.44], np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1, 0, IGNORE])
    assert layout_of(regressed, labels) == Layout(threshold=0.5)
    assert layout_of(regressed[:, None], labels[:, None]) == Layout(threshold=0.5)
    # A calibration part: its outputs with its own labels, the layout from the whole data's
    part = np.array([0, 3, 4, 6])
    layout, _scores, part_labels = laid_out(regressed[part], labels, labels[part])
    assert layout == Layout(threshold=0.5) and np.array_equal(part_labels, labels[part])
    logits = np.array([-2.1, -0.3, 0.2, 3.0, 0.4, -1.5], np.float32)
    assert layout_of(logits, np.array([0, 0, 1, 1, 1, 0])) == Layout(threshold=0.0)
    # Logits spread past [-0.5, 1.5]: 0 stays, though 0.5 answers these labels better
    assert layout_of(logits, np.array([0, 0, 0, 1, 0, 0])) == Layout(threshold=0.0)
    assert layout_of(np.array([-1.0, 2.0], np.float32), np.array([0, 1])) == Layout(threshold=0.0)


@pytest.mark.parametrize(("scores", "threshold"), [
    ([[0.9, 0.2, 0.6], [0.1, 0.4, 0.7]], 0.5),  # probabilities (a Sigmoid in the graph)
    ([[2.0, -1.0, 0.3], [-3.0, -0.2, 1.5]], 0.0),  # logits
])
def test_multi_hot_labels_score_each_class_as_a_yes_or_no(scores, threshold):
    ref = np.array(scores, np.float32)
    labels = np.array([[1, 0, 0], [0, 0, 1]])
    labels[0, 1] = 1  # two classes for sample 0: multi-hot
    layout = layout_of(ref, labels)
    assert layout == Layout(threshold=threshold)
    flat_ref, flat_labels = layout.scores(ref), layout.labels(labels)
    assert flat_ref.shape == (2, 3, 2) and np.array_equal(flat_ref.argmax(-1), ref > threshold)
    check_labels(flat_labels, flat_ref)
    got = ref.copy()
    got[1, 2] = threshold - 1  # sample 1's right yes turns no
    s = score("accuracy", flat_ref, layout.scores(got), flat_labels)
    assert (s.original, s.optimized) == (pytest.approx(4 / 6), pytest.approx(3 / 6))


@pytest.mark.parametrize("shape", [(5, 3), (5, 1), (5,)])
def test_yes_no_scores_keep_the_output_s_relative_error(shape):
    """Scores measured from the threshold would change relerr's scale: it reads the values."""
    rng = np.random.default_rng(2)
    ref = rng.random(shape).astype(np.float32)
    got = ref + rng.normal(0, 0.05, shape).astype(np.float32)
    layout = Layout(threshold=0.5)
    plain = score("relerr", ref, got, None).drop
    assert score("relerr", *(layout.values(layout.scores(x), "relerr") for x in (ref, got)), None).drop == \
        pytest.approx(plain, rel=1e-6)
    assert layout.values(layout.scores(ref), "accuracy").shape[-1] == 2


def test_a_sigmoid_kind_is_read_as_yes_or_no_only_on_probabilities():
    """Without labels, output_kinds' "yesno" gives the 0.5 threshold; values outside [0, 1]
    (a Sigmoid scaled after the walk) stay as they are, never all "yes" from 0."""
    probs = np.array([[0.2, 0.9], [0.6, 0.1]], np.float32)
    assert layout_of(probs, None, "yesno") == Layout(threshold=0.5)
    assert layout_of(probs * 100, None, "yesno").plain
    assert layout_of(probs, None, None).plain and layout_of(probs[:, :, None], None, "yesno").plain
