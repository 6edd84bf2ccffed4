"""bench/channel_split.py: every split form computes the Conv + Relu, channels ranked by
their calibration density, and its argument checks."""

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


@pytest.mark.parametrize("k", ["ort", 0, 4, 8, 12])
def test_every_form_is_the_conv_and_relu(k):
    weight, bias, x = _layer()
    attrs = {"pads": [1, 1, 1, 1]}
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
