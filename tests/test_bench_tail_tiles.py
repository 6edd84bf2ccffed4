"""bench/tail_tiles.py: which convs it measures, its all-zero tile shares, weight loads and hybrid model."""

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import init, make_model, vi
from onnx import helper

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import tail_tiles  # noqa: E402


def test_share_counts_only_tiles_with_no_survivor():
    y = np.zeros((1, 32, 2, 28), np.float32)  # 2 rows x 2 tiles of 14 positions, 1 block of 32
    y[0, 31, 0, 13] = 1.0  # one survivor in the first tile of row 0
    y[0, 0, 1, 14] = -0.0  # a negative zero is a zero
    assert tail_tiles.all_zero_share(y, 14, 32) == pytest.approx(3 / 4)
    assert tail_tiles.all_zero_share(y, 1, 16) == pytest.approx(1 - 1 / (2 * 2 * 28))


def test_weight_loads_count_blocks_holding_a_nonzero_per_nonzero():
    x = np.zeros((1, 2, 2, 4), np.float32)
    x[0, 0, :, 0:2] = 1.0  # channel 0: one full 2x2 block, 4 non-zeros
    x[0, 1, 0, 3] = 2.0  # channel 1: one non-zero alone
    assert tail_tiles.weight_loads(x, 1, 1) == pytest.approx(1.0)
    assert tail_tiles.weight_loads(x, 1, 2) == pytest.approx((2 + 1) / 5)
    assert tail_tiles.weight_loads(x, 2, 2) == pytest.approx((1 + 1) / 5)


def test_weight_loads_pad_a_partial_block_and_ignore_all_zero_inputs():
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 2, 2] = 1.0  # in the padded corner block
    assert tail_tiles.weight_loads(x, 2, 2) == pytest.approx(1.0)
    assert tail_tiles.weight_loads(np.zeros((1, 1, 3, 3), np.float32), 2, 2) == 0.0


def test_an_edge_tile_is_judged_on_its_real_outputs():
    y = np.ones((1, 20, 1, 15), np.float32)
    y[0, 16:, 0, 14] = 0.0  # the last column's 4 channels of the second block: a partial tile
    assert tail_tiles.all_zero_share(y, 14, 16) == pytest.approx(1 / 4)


def _chain(after):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    nodes += after
    inits = [init("w", rng.normal(size=(3, 3, 3, 3)).astype(np.float32))]
    inits += [init(n, np.ones(3, np.float32)) for n in ("s", "b", "m", "v")]
    return make_model(nodes, [vi("x", [1, 3, 6, 6])], [vi(nodes[-1].output[0], None)], inits)


def test_conv_groups_follow_batchnorm_and_add_to_the_relu():
    bn = helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"])
    add = helper.make_node("Add", ["n", "r"], ["a"])
    model = _chain([bn, add, helper.make_node("Relu", ["a"], ["y"])])
    assert [(conv.name, out) for conv, out in tail_tiles.conv_groups(model)] == [("conv", "y")]


@pytest.mark.parametrize("after", [
    [helper.make_node("Sigmoid", ["c"], ["y"])],
    [helper.make_node("Relu", ["c"], ["y"]), helper.make_node("Identity", ["c"], ["z"])],
], ids=["no_relu", "conv_output_shared"])
def test_conv_groups_leave_other_convs_out(after):
    assert tail_tiles.conv_groups(_chain(after)) == []


def test_layer_row_bounds_use_the_default_head():
    x = np.ones((1, 64, 4, 4), np.float32)
    y = np.zeros((1, 32, 4, 14), np.float32)
    row = tail_tiles.layer_row(helper.make_node("Conv", ["x", "w"], ["c"], name="c"), x, y, (32, 64, 3, 3))
    assert row["k"] == 16 and row["in_nonzero"] == 1.0 and row["out_zero"] == 1.0
    assert row["skip_14x32"] == 1.0 and row["bound"] == pytest.approx(1 - 16 / 64)


@pytest.mark.parametrize("models", ["nosuch", "fashion_cnn,nosuch"])
def test_an_unknown_model_is_a_usage_error_before_anything_runs(models, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tail_tiles", "--models", models])
    with pytest.raises(SystemExit) as exit_info:
        tail_tiles.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr()
    assert "unknown model 'nosuch'" in err.err and "fashion_cnn" in err.err and err.out == ""


@pytest.mark.parametrize("flag", ["--list-rate", "--dense-rate"])
@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_rate_that_is_not_positive_is_a_usage_error(flag, value, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tail_tiles", "--models", "fashion_cnn", flag, value])
    with pytest.raises(SystemExit) as exit_info:
        tail_tiles.main()
    assert exit_info.value.code == 2 and "must be positive" in capsys.readouterr().err


def test_missing_files_name_the_command_that_builds_them(monkeypatch, capsys, tmp_path):
    from bench.models import BenchModel

    ghost = BenchModel("ghost", "no files", "-", "python models/build_ghost.py")
    monkeypatch.setattr(tail_tiles, "MODELS_BY_NAME", {"ghost": ghost})
    monkeypatch.setattr(BenchModel, "onnx", property(lambda self: tmp_path / "ghost.onnx"))
    monkeypatch.setattr(sys, "argv", ["tail_tiles", "--models", "ghost"])
    with pytest.raises(SystemExit) as exit_info:
        tail_tiles.main()
    assert exit_info.value.code == 2 and "build them with `python models/build_ghost.py`" in capsys.readouterr().err


def test_window_mix_takes_the_cheaper_way_per_channel_and_window():
    x = np.zeros((1, 2, 1, 14), np.float32)  # one window: padded columns 0..15
    x[0, 0] = 1.0  # channel 0: non-zero in columns 1..14, reaching 2 + 12 * 3 + 2 outputs
    x[0, 1, 0, 0] = 1.0  # channel 1: one input, reaching 2 outputs
    # list: 40 and 2 at rate 1; dense: 14 outputs x 3 taps at rate 2 = 21 for either
    assert tail_tiles.window_mix(x, 1.0, 2.0) == pytest.approx((21 + 2) / (40 + 2))
    assert tail_tiles.window_mix(x, 1.0, 0.5) == pytest.approx(1.0)  # dense never cheaper


def test_window_mix_counts_a_column_in_both_windows_that_read_it():
    x = np.zeros((1, 1, 1, 15), np.float32)
    x[0, 0, 0, 14] = 1.0  # padded column 15: the first window's last (1 output), the second's column 1 (2)
    # dense at rate 42 costs 1 per window: the second window's list (2) loses to it
    assert tail_tiles.window_mix(x, 1.0, 42.0) == pytest.approx((1 + 1) / (1 + 2))
    assert tail_tiles.window_mix(np.zeros((1, 1, 2, 5), np.float32), 1.0, 1.0) == 1.0


def test_layer_row_models_the_hybrid_for_stride_1_3x3_convs_only():
    x = np.ones((1, 16, 2, 14), np.float32)  # dense windows: the registers win at the default rates
    y = np.ones((1, 8, 2, 14), np.float32)
    plain = helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1, 1, 1])
    strided = helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2])
    assert tail_tiles.layer_row(plain, x, y, (8, 16, 3, 3))["hybrid"] < 1.0
    assert tail_tiles.layer_row(strided, x, y[:, :, :1, :7], (8, 16, 3, 3))["hybrid"] is None
    assert tail_tiles.layer_row(plain, x, y, (8, 16, 1, 1))["hybrid"] is None
