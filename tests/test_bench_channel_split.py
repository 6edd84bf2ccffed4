"""bench/channel_split.py: every split form computes the Conv + Relu, channels ranked by
their calibration density, and its argument checks."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import channel_split  # noqa: E402


def _layer(seed=0, c=16, m=8, s=6):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(m, c, 3, 3)).astype(np.float32)
    bias = rng.normal(size=m).astype(np.float32)
    x = np.maximum(rng.normal(size=(2, c, s, s)), 0).astype(np.float32)
    x[:, : c // 2] = np.abs(x[:, : c // 2]) + 0.1  # half the channels dense, half about half zeros
    return weight, bias, x


@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1]},
                                   {"pads": [2, 1, 2, 1], "dilations": [2, 1], "strides": [2, 1]}],
                         ids=["same", "strided_dilated"])
@pytest.mark.parametrize("k", ["ort", 0, 4, 8, 12])
def test_every_form_is_the_conv_and_relu(k, attrs):
    weight, bias, x = _layer()
    model = channel_split.build(weight, bias, (1,) + x.shape[1:], k, attrs)
    onnx.checker.check_model(model)
    reference = channel_split.session(channel_split.build(weight, bias, (1,) + x.shape[1:], "ort", attrs), 1)
    got = channel_split.session(model, 1)
    for i in range(len(x)):
        want = reference.run(None, {"x": x[i : i + 1]})[0]
        np.testing.assert_allclose(got.run(None, {"x": x[i : i + 1]})[0], want, rtol=1e-5, atol=1e-5)


def test_measure_layer_ranks_channels_by_calibration_density_and_checks_outputs():
    weight, bias, x = _layer(c=16)
    calib = x.copy()
    calib[:, 8:] = 0.0  # the last 8 channels all zero on calibration: ranked last
    r = channel_split.measure_layer(weight, bias, {"pads": [1, 1, 1, 1]}, calib, x, rounds=1, threads=1)
    assert r["channels"] == 16 and r["max_rel_diff"] < 1e-5
    assert set(r["ratios"]) == {"0", "2", "4", "6", "8", "10", "12"}
    assert all(r["kth_share"][k] == 1.0 for k in ("2", "4", "6", "8"))  # the dense half first
    assert r["kth_share"]["12"] < 1.0


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "0"], "must be at least 1"),
    (["--layers", "no_such_tensor"], "reads an input named like 'no_such_tensor'"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, monkeypatch, capsys):
    model = channel_split.MODELS_BY_NAME[channel_split.MODEL]
    if "--layers" in argv and not (model.onnx.is_file() and model.calibration.is_file() and model.test.is_file()):
        pytest.skip(f"needs the VGG16 bench model and data (`{model.build}`)")
    monkeypatch.setattr(sys, "argv", ["channel_split", *argv])
    with pytest.raises(SystemExit) as exc:
        channel_split.main()
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_missing_files_name_the_command_that_builds_them(monkeypatch, capsys, tmp_path):
    from bench.models import BenchModel

    ghost = BenchModel("ghost", "no files", "-", "python models/build_ghost.py")
    monkeypatch.setattr(channel_split, "MODELS_BY_NAME", {channel_split.MODEL: ghost})
    monkeypatch.setattr(BenchModel, "onnx", property(lambda self: tmp_path / "ghost.onnx"))
    monkeypatch.setattr(sys, "argv", ["channel_split"])
    with pytest.raises(SystemExit) as exc:
        channel_split.main()
    assert exc.value.code == 2 and "build them with `python models/build_ghost.py`" in capsys.readouterr().err


def test_split_conv_rewrites_conv_and_relu_into_the_two_parts_with_the_same_outputs():
    import onnx_graphsurgeon as gs
    from helpers import init, make_model, node_types, vi
    from onnx import helper

    from exprune_onnx.runtime import inference_session

    weight, bias, x = _layer(c=16, m=8, s=6)
    nodes = [helper.make_node("Relu", ["in"], ["r"]),
             helper.make_node("Conv", ["r", "W", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, [vi("in", [1, 16, 6, 6])], [vi("y", [1, 8, 6, 6])], [init("W", weight), init("b", bias)])
    graph = gs.import_onnx(model)
    conv = next(n for n in graph.nodes if n.op == "Conv")
    density = np.linspace(0.0, 1.0, 16)  # channels 10..15 the densest six
    channel_split.split_conv(graph, conv, 6, density)
    split = gs.export_onnx(graph)
    split.opset_import.append(helper.make_opsetid(channel_split.ops.DOMAIN, channel_split.ops.VERSION))
    onnx.checker.check_model(split)
    assert node_types(split) == ["Relu", "Gather", "Gather", "Conv", "ExPruneSparseConv"]
    dense_idx = next(n for n in split.graph.node if n.op_type == "Gather" and "dense_idx" in n.input[1]).input[1]
    picked = next(t for t in split.graph.initializer if t.name == dense_idx)
    assert list(onnx.numpy_helper.to_array(picked)) == list(range(10, 16))
    want, got = inference_session(model, threads=1, optimize=False), inference_session(split, threads=1, optimize=False)
    for i in range(len(x)):
        feed = {"in": x[i : i + 1]}
        np.testing.assert_allclose(got.run(None, feed)[0], want.run(None, feed)[0], rtol=1e-5, atol=1e-5)


def test_kept_layers_read_the_lossless_1x1_row(tmp_path):
    rows = [{"mode": "lossless", "batch": 1, "threads": 2, "layers": [{"layer": "a", "rewrite": "zero inputs",
                                                                      "kept": True}]},
            {"mode": "lossless", "batch": 1, "threads": 1, "layers": [
                {"layer": "b", "rewrite": "zero inputs", "kept": True},
                {"layer": "c", "rewrite": "zero inputs", "kept": False},
                {"layer": "d", "rewrite": "early exit", "kept": True}]}]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"models": [{"rows": rows}]}))
    assert channel_split.kept_layers(path) == ["b"]
    path.write_text(json.dumps({"models": [{"rows": rows[:1]}]}))
    with pytest.raises(ValueError, match="no lossless row at batch 1, 1 thread"):
        channel_split.kept_layers(path)


@pytest.mark.parametrize("layers, message", [
    ("block3_conv1_1/Relu", "--layers are part=k"),
    ("block3_conv1_1/Relu=x", "--layers are part=k"),
    ("block3_conv1_1/Relu=0", "k >= 1"),
])
def test_whole_rejects_layers_without_a_split_point(layers, message, monkeypatch, capsys, tmp_path):
    model = channel_split.MODELS_BY_NAME[channel_split.MODEL]
    if not (model.onnx.is_file() and model.calibration.is_file() and model.test.is_file()):
        pytest.skip(f"needs the VGG16 bench model and data (`{model.build}`)")
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"models": [{"rows": [{"mode": "lossless", "batch": 1, "threads": 1, "layers": []}]}]}))
    monkeypatch.setattr(sys, "argv", ["channel_split", "--whole", str(run), "--layers", layers])
    with pytest.raises(SystemExit) as exc:
        channel_split.main()
    assert exc.value.code == 2 and message in capsys.readouterr().err
