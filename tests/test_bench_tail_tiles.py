"""bench/tail_tiles.py: which convs it measures, and its all-zero tile shares."""

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


def test_missing_files_name_the_command_that_builds_them(monkeypatch, capsys, tmp_path):
    from bench.models import BenchModel

    ghost = BenchModel("ghost", "no files", "-", "python models/build_ghost.py")
    monkeypatch.setattr(tail_tiles, "MODELS_BY_NAME", {"ghost": ghost})
    monkeypatch.setattr(BenchModel, "onnx", property(lambda self: tmp_path / "ghost.onnx"))
    monkeypatch.setattr(sys, "argv", ["tail_tiles", "--models", "ghost"])
    with pytest.raises(SystemExit) as exit_info:
        tail_tiles.main()
    assert exit_info.value.code == 2 and "build them with `python models/build_ghost.py`" in capsys.readouterr().err
