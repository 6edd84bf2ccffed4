"""Screening each rewrite alone before the latency objective times the whole model (screen.py)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from head_chains import head_model
from helpers import latency_choice, run_exprune, run_plain, three_layer_mlp

import exprune_onnx
from exprune_onnx.config import Options
from exprune_onnx.measure.shape_probe import tensor_values
from exprune_onnx.tuning import objective, screen


def test_a_layer_cut_out_alone_computes_what_it_computes_in_the_model():
    model = three_layer_mlp()
    result = exprune_onnx.optimize_model(model, Options(threshold=-math.inf, sparse_relu="off"))
    h1 = next(rw for rw in result.rewritten if rw.candidate.layer == "h1")
    ins, out = [h1.candidate.x.name], h1.candidate.output.name
    fast, dense = screen.subgraph(result.model, ins, out), screen.subgraph(model, ins, out)
    assert [n.op_type for n in dense.graph.node] == ["Gemm", "Relu"]
    assert "ExPruneDenseRelu" in [n.op_type for n in fast.graph.node]
    assert all(n.op_type not in ("Gemm",) or n.name != "h0" for n in fast.graph.node)  # nothing from above
    x = np.abs(np.random.default_rng(0).standard_normal((5, 96))).astype(np.float32)
    np.testing.assert_allclose(run_exprune(fast, {ins[0]: x})[0], run_plain(dense, {ins[0]: x})[0],
                               rtol=1e-5, atol=1e-5)
    # The values it is timed on are those the original computes there.
    feeds = [{"x": np.ones((2, 64), np.float32)}]
    captured = tensor_values(model, ins, feeds)
    want = onnx.ModelProto()
    want.CopyFrom(model)
    want.graph.output.append(onnx.helper.make_tensor_value_info(ins[0], onnx.TensorProto.FLOAT, None))
    np.testing.assert_array_equal(captured[0][ins[0]], run_plain(want, feeds[0])[1])


def test_a_layer_that_reads_more_than_its_inputs_is_not_cut_out():
    model = three_layer_mlp()
    assert screen.subgraph(model, ["r0"], "r2") is not None  # two layers: still bounded by r0
    assert screen.subgraph(model, ["r1"], "y") is not None
    assert screen.subgraph(model, ["w0"], "r1") is None  # reaches the graph input x


def test_a_layer_slower_alone_is_dropped_without_timing_the_model(monkeypatch, scripted_clock):
    calls = scripted_clock({"h1": -0.2, "h2": 0.3})
    monkeypatch.setattr(objective, "SCREEN_ABOVE", -1.0)  # screen even this tiny model
    choice = latency_choice(three_layer_mlp())
    rows = {t.layer: t for t in choice.layers}
    assert rows["h1"].alone and not rows["h1"].kept  # slower alone: dropped there
    assert not rows["h2"].alone and rows["h2"].kept  # a sparse consumer reads it: timed in the model
    reason = next(r.reason for r in choice.result.rejected if r.layer == "h1")
    assert "the layer alone took" in reason
    whole = [c for c in calls if len(c[0].graph.node) > 4]
    assert all(not any(n.name.startswith("h1_") for n in [*c[0].graph.node, *c[1].graph.node] if n.domain)
               for c in whole)  # h1 never appears in a whole-model timing
    assert [r.candidate.layer for r in choice.result.rewritten] == ["h2"]


def test_a_layer_faster_alone_by_under_the_margin_is_not_timed_in_the_model(monkeypatch, scripted_clock):
    calls = scripted_clock({"h1": 0.05, "h2": 0.3})
    monkeypatch.setattr(objective, "SCREEN_ABOVE", -1.0)
    # h1 is 5% faster alone, but the first estimate puts the model at 10 ms: 0.05 ms is under 1% of it.
    monkeypatch.setattr(objective, "seconds_per_run", lambda model, feeds, threads, source: 0.01)
    choice = latency_choice(three_layer_mlp())
    row = next(t for t in choice.layers if t.layer == "h1")
    assert row.alone and row.small and not row.kept
    assert row.without_ms - row.with_ms == pytest.approx(0.05)
    reason = next(r.reason for r in choice.result.rejected if r.layer == "h1")
    assert reason == "objective latency: saves 0.050 ms alone, under 1% of the model's 10.000 ms"
    whole = [c for c in calls if len(c[0].graph.node) > 4]
    assert whole and all(not any(n.name.startswith("h1_") for n in [*c[0].graph.node, *c[1].graph.node] if n.domain)
                         for c in whole)
    assert [r.candidate.layer for r in choice.result.rewritten] == ["h2"]


def test_a_layer_faster_alone_is_still_timed_in_the_model(monkeypatch, scripted_clock):
    scripted_clock({"h1": 0.2, "h2": 0.3})
    monkeypatch.setattr(objective, "SCREEN_ABOVE", -1.0)
    choice = latency_choice(three_layer_mlp())
    assert [(t.layer, t.alone, t.kept) for t in choice.layers] == [("h1", False, True), ("h2", False, True)]


def test_a_layer_whose_zeros_are_read_through_a_pool_is_not_screened():
    """conv2's zeros reach fc1 through MaxPool -> AveragePool(1x1) -> Flatten: its gain
    shows in fc1, which conv2 alone does not contain."""
    for chain in ("torch_vgg", "tf2onnx"):
        res = exprune_onnx.optimize_model(head_model(chain, head_relu=False), threshold=-2.0, min_units=4)
        assert [rw.candidate.layer for rw in res.rewritten] == ["conv2"]
        assert [s.op_node.inputs[0].name for s in res.sparse] == ["flat"]
        assert screen.screenable(res) == []


def _early_exit_nodes(model):
    return {n.name.split("_")[0] for n in model.graph.node if n.domain and not n.op_type.startswith("ExPruneSparse")}


@pytest.mark.parametrize(("gain", "together"), [(-0.3, True), (0.3, False)])
def test_early_exit_layers_clearly_slower_together_are_dropped_untimed_one_by_one(monkeypatch, scripted_clock,
                                                                                   gain, together):
    """Screened, h1 is slower alone and h2 faster; h3 (its output read sparsely: not
    screenable) and h2 are left for whole-model timings, and are first timed together.
    25% slower together: both dropped with that pair's times, none timed on its own (h2,
    which would have paid alone, with them: the price of the shortcut); faster: timed one
    by one as before."""
    calls = scripted_clock({"h1": -0.2, "h2": 0.05, "h3": gain})
    monkeypatch.setattr(objective, "SCREEN_ABOVE", -1.0)
    monkeypatch.setattr(screen, "GROUP_FIRST", 2)
    choice = latency_choice(three_layer_mlp((64, 96, 128, 160, 192)), Options(threshold=-2.0, sparse_relu="off"))
    rows = {t.layer: t for t in choice.layers}
    assert rows["h1"].alone and "not faster alone" in rows["h1"].note
    group_pairs = [c for c in calls if _early_exit_nodes(c[0]) >= {"h2", "h3"}
                   and not _early_exit_nodes(c[1]) & {"h2", "h3"}]
    assert len(group_pairs) == 1
    one_by_one = [c for c in calls if len(_early_exit_nodes(c[0]) ^ _early_exit_nodes(c[1])) == 1
                  and len(c[0].graph.node) > 4]
    if together:
        assert not one_by_one
        for layer in ("h2", "h3"):
            assert not rows[layer].kept and "with all 2 early-exit layers" in rows[layer].note
            reason = next(r.reason for r in choice.result.rejected if r.layer == layer)
            assert "so none was timed on its own" in reason
        assert choice.result.rewritten == []
    else:
        assert {next(iter(_early_exit_nodes(a) ^ _early_exit_nodes(b))) for a, b in one_by_one} == {"h2", "h3"}
        assert rows["h2"].kept and rows["h3"].kept and not rows["h2"].note
