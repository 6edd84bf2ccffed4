"""conv_relu: Conv -> [BN] -> [residual Add] -> Relu | Clip(0, c)."""

import numpy as np
import onnx
import pytest
from helpers import (
    NEG_INF,
    assert_close,
    assert_equivalent,
    conv_reference,
    expose,
    init,
    make_model,
    node_types,
    run_exprune,
    threshold_of,
    vi,
)
from onnx import helper

from exprune_onnx import optimize_model

C, C_OUT = 32, 24


def conv_model(*, spatial=2, strides=None, pads=None, dilations=None, auto_pad=None, bn=True, residual=False,
               act="relu", opset=17, group=1, channels=C, extra_consumer=False, weight_input=False,
               first_layer=False, dtype=np.float32, seed=0, affine=False, residual_op="Add"):
    """inp -> Relu -> x -> Conv -> [BN] -> [Mul, Add (Caffe2's affine)] -> [Add|Sum(x)] -> act -> y"""
    rng = np.random.default_rng(seed)
    size = [9, 8][:spatial] if spatial == 2 else [17]
    kernel = [3] * spatial
    w = (rng.normal(size=(C_OUT if not residual else channels, channels // group, *kernel)) * 0.15).astype(dtype)
    out_ch = w.shape[0]
    tdtype = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    attrs = {}
    for key, value in (("strides", strides), ("pads", pads), ("dilations", dilations), ("auto_pad", auto_pad)):
        if value is not None:
            attrs[key] = value
    if group != 1:
        attrs["group"] = group
    nodes = [] if first_layer else [helper.make_node("Relu", ["inp"], ["x"])]
    x = "inp" if first_layer else "x"
    inits = [init("B", rng.normal(size=out_ch).astype(dtype))]
    inputs = [vi("inp", ["N", channels, *size], tdtype)]
    if weight_input:
        inputs.append(vi("W", list(w.shape), tdtype))
    else:
        inits.append(init("W", w))
    nodes.append(helper.make_node("Conv", [x, "W", "B"], ["c"], name="conv", **attrs))
    t = "c"
    if bn:
        inits += [init("s", rng.uniform(0.5, 1.5, out_ch).astype(dtype)), init("b", rng.normal(size=out_ch).astype(dtype)),
                  init("m", rng.normal(size=out_ch).astype(dtype)), init("v", rng.uniform(0.5, 1.5, out_ch).astype(dtype))]
        nodes.append(helper.make_node("BatchNormalization", [t, "s", "b", "m", "v"], ["bn"], name="bn"))
        t = "bn"
    if affine:
        shape = [1, out_ch] + [1] * spatial
        inits += [init("scale", rng.uniform(-1.5, 1.5, shape).astype(dtype)),
                  init("shift", rng.normal(size=shape).astype(dtype))]
        nodes += [helper.make_node("Mul", [t, "scale"], ["scaled"]), helper.make_node("Add", ["shift", "scaled"], ["shifted"])]
        t = "shifted"
    if residual:
        nodes.append(helper.make_node(residual_op, [t, x], ["sum"], name="add"))
        t = "sum"
    if act == "relu":
        nodes.append(helper.make_node("Relu", [t], ["y"], name="act"))
    elif act == "clip_inputs":
        inits += [init("lo", np.array(0, dtype)), init("hi", np.array(6, dtype))]
        nodes.append(helper.make_node("Clip", [t, "lo", "hi"], ["y"], name="act"))
    elif act == "clip_attrs":
        nodes.append(helper.make_node("Clip", [t], ["y"], name="act", min=0.0, max=6.0))
    elif act == "clip_neg":
        inits += [init("lo", np.array(-1, dtype))]
        nodes.append(helper.make_node("Clip", [t, "lo"], ["y"], name="act"))
    outputs = [vi("y", None, tdtype)]
    if extra_consumer:
        nodes.append(helper.make_node("Sigmoid", ["c"], ["side"]))
        outputs.append(vi("side", None, tdtype))
    return make_model(nodes, inputs, outputs, inits, opset=opset)


def feeds_for(model):
    dims = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return lambda rng: {"inp": rng.normal(size=dims).astype(np.float32)}


CASES = {
    "2d_bn": {},
    "2d_strided_dilated": {"strides": [2, 2], "pads": [1, 2, 0, 1], "dilations": [2, 1]},
    "2d_same_upper": {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    "2d_same_lower": {"auto_pad": "SAME_LOWER"},
    "2d_valid": {"auto_pad": "VALID"},
    "1d": {"spatial": 1, "pads": [1, 1], "strides": [2]},
    "residual": {"residual": True, "pads": [1, 1, 1, 1]},
    "relu6_inputs": {"act": "clip_inputs", "pads": [1, 1, 1, 1]},
    "relu6_attrs_opset9": {"act": "clip_attrs", "opset": 9, "pads": [1, 1, 1, 1]},
    "no_bn": {"bn": False},
    "caffe2_affine_sum": {"affine": True, "residual": True, "residual_op": "Sum", "pads": [1, 1, 1, 1]},
}


@pytest.mark.parametrize("case", CASES)
def test_rewrite_is_exact_at_minus_inf(case):
    model = conv_model(**CASES[case])
    res = optimize_model(model, threshold=NEG_INF)
    assert node_types(res.model) == ["Relu", "Gather", "Slice", "Conv", "ExPruneConvRelu"]
    assert [r.candidate.layer for r in res.rewritten] == ["conv"]
    onnx.checker.check_model(res.model)
    assert_equivalent(model, res.model, feeds_for(model))


@pytest.mark.parametrize("case", ["2d_bn", "2d_strided_dilated", "residual", "relu6_inputs", "1d", "caffe2_affine_sum"])
def test_finite_threshold_prunes_exactly(case):
    cfg = CASES[case]
    model = conv_model(**cfg)
    res = optimize_model(model, threshold=0.0)
    partial = next(n for n in res.model.graph.node if n.domain).input[0]
    attrs = threshold_of(res.model)
    k, n = attrs["k"], C
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    probe = expose(res.model, [partial])
    spatial = cfg.get("spatial", 2)
    for seed in range(3):
        feed = feeds_for(model)(np.random.default_rng(seed))
        y, part = run_exprune(probe, feed)
        x = np.maximum(feed["inp"], 0)
        # The full computation, from the original parameters.
        strides = cfg.get("strides", [1] * spatial)
        dil = cfg.get("dilations", [1] * spatial)
        pads = cfg.get("pads", [0] * 2 * spatial)
        z = conv_reference(x, weights["W"], strides, pads, dil) + weights["B"].reshape(-1, *[1] * spatial)
        s = weights["s"] / np.sqrt(weights["v"] + 1e-5)
        shape = (-1,) + (1,) * spatial
        z = (z - weights["m"].reshape(shape)) * s.reshape(shape) + weights["b"].reshape(shape)
        folded_bias = (weights["B"] - weights["m"]) * s + weights["b"]
        base = folded_bias.reshape(shape)
        if cfg.get("affine"):
            z = z * weights["scale"][0] + weights["shift"][0]
            base = base * weights["scale"][0] + weights["shift"][0]
        if cfg.get("residual"):
            z = z + x
            base = base + x
        full = np.clip(z, 0, attrs["clip_max"])
        pruned = base + (n / k) * part < attrs["threshold"]
        assert 0 < pruned.sum() < pruned.size, "the case must both prune and keep outputs"
        assert np.all(y[pruned] == 0)
        assert_close(full[~pruned], y[~pruned])


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"extra_consumer": True}, "also feeds"),
        ({"weight_input": True}, "not a constant"),
        ({"group": 2}, "grouped convolution"),
        ({"opset": 8, "bn": False}, "opset 8"),
        ({"first_layer": True}, "graph input"),
        ({"channels": 16, "bn": False}, "fewer than --min-units"),
        ({"act": "clip_neg"}, "min -1"),
        ({"dtype": np.float16, "bn": False}, "float32"),
    ],
)
def test_must_not_fire(kwargs, reason):
    model = conv_model(**kwargs)
    before = model.SerializeToString()
    res = optimize_model(model, threshold=0.0)
    assert not res.changed
    assert res.model.SerializeToString() == before
    assert model.SerializeToString() == before
    assert any(reason in r.reason for r in res.rejected), [r.reason for r in res.rejected]


def test_second_run_finds_nothing():
    model = conv_model(residual=True, pads=[1, 1, 1, 1])
    once = optimize_model(model, threshold=0.0)
    twice = optimize_model(once.model, threshold=0.0)
    assert not twice.changed
    assert twice.model.SerializeToString() == once.model.SerializeToString()


def test_k_option_and_config_names():
    model = conv_model()
    res = optimize_model(model, threshold=NEG_INF, k=0.5)
    assert threshold_of(res.model)["k"] == 16
    res = optimize_model(model, threshold=NEG_INF, k=4)
    assert threshold_of(res.model)["k"] == 4
    assert_equivalent(model, res.model, feeds_for(model), draws=1)
