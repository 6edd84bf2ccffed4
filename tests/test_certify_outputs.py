"""certify.py on each kind of output: a segmentation map (labelled pixels pooled), a
sequence-first output, one yes/no score, multi-label Sigmoids and a decode step's one
position, each certified by the test its losses call for (the rest: test_certify.py)."""

import numpy as np
import onnx
import pytest
from helpers import calibration_dataset, calibration_mlp, run_exprune, run_plain

from exprune_onnx.config import Options
from exprune_onnx.report.certificate import certificate_json, certificate_rows
from exprune_onnx.tuning.search import search, split_indices


def run_plain_or_exprune(model, feeds):
    return run_exprune(model, feeds)[0]


def _segmentation():
    """A map of 6 classes per pixel ([N, 6, 8, 8]) and 600 inputs labelled with its own answers."""
    from helpers import conv_hw, init, scaled_normal

    model = conv_hw()  # its pool and flatten give way to a 1x1 conv
    del model.graph.node[-2:]
    model.graph.node.append(onnx.helper.make_node("Conv", ["d", "head"], ["seg"]))
    model.graph.initializer.append(init("head", scaled_normal(6, 32, 1, 1)))
    model.graph.input[0].CopyFrom(onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8]))
    model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("seg", onnx.TensorProto.FLOAT, ["N", 6, 8, 8]))
    x = np.random.default_rng(5).standard_normal((600, 3, 8, 8)).astype(np.float32)
    return model, x, run_plain(model, {"x": x})[0].argmax(1)


def test_a_segmentation_map_is_certified_on_each_sample_s_share_of_pixels_lost():
    """[N, H, W] labels for an [N, C, H, W] map: accuracy per pixel, each testing sample's
    loss its share of labelled pixels lost, so Hoeffding-Bentkus, not the binomial."""
    from exprune_onnx.io.data import dataset_of

    model, x, labels = _segmentation()
    out = search(model, Options(confidence=0.9, min_units=8), dataset_of({"x": x}, model, labels), max_drop=0.1,
                 seed=0)
    cert = out.certificate
    assert out.metric == "accuracy" and cert.test == "Hoeffding-Bentkus" and cert.chosen >= 0
    assert out.class_axis == 1  # stamped on the model, so that verify reads the map per pixel without labels
    _ladder, test = split_indices(600, 0.5, 0)
    ref = run_plain(model, {"x": x[test]})[0].argmax(1)
    got = run_plain_or_exprune(out.result.model, {"x": x[test]}).argmax(1)
    lost = ((ref == labels[test]) & (got != labels[test])).reshape(len(test), -1).mean(1)
    assert cert.losses == pytest.approx(lost.sum()) and cert.losses > 0


def test_unlabelled_pixels_pool_the_certificate_over_labelled_ones():
    """Samples with different numbers of labelled pixels (-100 elsewhere): the risk
    certified is the pixels lost over the pixels labelled, pooled over the testing part
    as accuracy pools them, not the mean of each sample's share."""
    from exprune_onnx.io.data import dataset_of

    model, x, labels = _segmentation()
    rows = np.arange(8)[None, :, None]
    labels = np.where(rows < (np.arange(600) % 8 + 1)[:, None, None], labels, -100)  # 1 to 8 rows labelled
    out = search(model, Options(confidence=0.9, min_units=8), dataset_of({"x": x}, model, labels), max_drop=0.1,
                 seed=0)
    cert = out.certificate
    assert cert.chosen >= 0 and "pooled over labelled positions" in cert.loss
    _ladder, test = split_indices(600, 0.5, 0)
    ref = run_plain(model, {"x": x[test]})[0].argmax(1)
    got = run_plain_or_exprune(out.result.model, {"x": x[test]}).argmax(1)
    lost = (ref == labels[test]) & (got != labels[test])
    assert cert.positions == (int(lost.sum()), int((labels[test] != -100).sum())) and cert.positions[0] > 0
    assert cert.bound >= cert.positions[0] / cert.positions[1]
    row = dict(certificate_rows(cert))["certified"]
    assert f"{cert.positions[0]} of {cert.positions[1]} labelled positions lost" in row
    written = certificate_json(cert)
    assert (written["positions_lost"], written["positions_labelled"]) == cert.positions


def test_a_sequence_first_output_is_certified_sample_by_sample():
    """PyTorch's [T, N, C]: the testing part's runs have their batch moved first as the
    reference's, so each sample's loss is its share of frames whose top-1 changed."""
    from helpers import sequence_first_model

    from exprune_onnx.io.data import dataset_of

    model = sequence_first_model()
    x = np.random.default_rng(6).standard_normal((800, 7, 16)).astype(np.float32)
    out = search(model, Options(confidence=0.9, min_units=8, include_first_layer=True), dataset_of({"x": x}, model),
                 max_drop=0.1, seed=0)
    cert = out.certificate
    assert out.metric == "agreement" and cert.test == "Hoeffding-Bentkus" and cert.chosen >= 0
    _ladder, test = split_indices(800, 0.5, 0)
    ref = run_plain(model, {"x": x[test]})[0].argmax(-1)
    got = run_plain_or_exprune(out.result.model, {"x": x[test]}).argmax(-1)
    assert cert.losses == pytest.approx((ref != got).mean(0).sum()) and cert.losses > 0  # frames first: axis 0
    # A share of frames a sample is no count of losses (a trial read '0.8125 loss(es) in 500').
    row = dict(certificate_rows(cert))["certified"]
    assert f"losses summing to {cert.losses:.4g} over {cert.samples} samples (each its share of positions)" in row


def test_a_binary_classifier_s_one_score_is_certified_on_its_yes_or_no():
    """One logit a sample and 0/1 labels: accuracy of the yes/no answers (yes above 0),
    one answer a sample, so the exact binomial."""
    from exprune_onnx.io.data import dataset_of

    model = calibration_mlp(classes=1)
    x = calibration_dataset(model, count=1200, labels=False).inputs["x"]
    labels = (run_plain(model, {"x": x})[0][:, 0] > 0).astype(np.int64)
    labels[::10] = 1 - labels[::10]
    out = search(model, Options(confidence=0.9), dataset_of({"x": x}, model, labels), max_drop=0.05, seed=0)
    cert = out.certificate
    assert out.metric == "accuracy" and cert.test.startswith("exact binomial") and cert.chosen >= 0
    assert out.holdout.original == pytest.approx(0.9, abs=0.03)


def test_a_multi_label_sigmoid_without_labels_is_certified_on_its_yes_or_no_answers():
    """A Sigmoid per class and no labels: agreement counts the yes/no answers kept (not
    the arg-max's), each sample's loss its share of answers changed, so Hoeffding-Bentkus."""
    from exprune_onnx.io.data import dataset_of

    model = calibration_mlp(classes=6)
    model.graph.node.append(onnx.helper.make_node("Sigmoid", ["logits"], ["p"]))
    model.graph.output[0].name = "p"
    x = calibration_dataset(model, count=1200, labels=False).inputs["x"]
    out = search(model, Options(confidence=0.9), dataset_of({"x": x}, model), max_drop=0.05, seed=0)
    cert = out.certificate
    assert out.metric == "agreement" and cert.loss == "yes/no answers changed"
    assert cert.test == "Hoeffding-Bentkus" and cert.chosen >= 0
    _ladder, test = split_indices(1200, 0.5, 0)
    ref = run_plain(model, {"x": x[test]})[0] > 0.5
    got = run_plain_or_exprune(out.result.model, {"x": x[test]}) > 0.5
    assert cert.losses == pytest.approx((ref != got).mean(1).sum()) and cert.losses > 0
    assert out.holdout.answer_kind == "yes/no"


def test_a_decode_step_s_one_position_is_certified_with_the_exact_binomial():
    """Logits [N, 1, V] with labels [N, 1]: one prediction a sample, so each loss is 0 or 1."""
    from helpers import init, make_model, scaled_normal
    from onnx import TensorProto, helper

    from exprune_onnx.io.data import dataset_of

    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["logits"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16])],
                       [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, 10])],
                       [init("w1", scaled_normal(16, 64)), init("w2", scaled_normal(64, 10))])
    x = np.random.default_rng(10).standard_normal((600, 1, 16)).astype(np.float32)
    labels = run_plain(model, {"x": x})[0].argmax(-1)
    options = Options(confidence=0.9, min_units=8, include_first_layer=True)
    out = search(model, options, dataset_of({"x": x}, model, labels), max_drop=0.05, seed=0)
    assert out.certificate.test.startswith("exact binomial")
