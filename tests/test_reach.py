"""reach.py: early exits left alone before the search refines them, where even at the most
the search could give them they make the model no faster than the lossless one.
Decisions on a scripted clock (conftest.scripted_clock), so that they are exact."""

import pytest
from head_chains import head_model

from exprune_onnx.config import Options
from exprune_onnx.io.data import random_dataset
from exprune_onnx.tuning import search as search_module
from exprune_onnx.tuning.ladder import LADDER, reach

EXIT_OPS = ("ExPruneConvRelu", "ExPruneDenseRelu")


def _search(latency=(1, 1)):
    model = head_model("torch_vgg")  # conv2 (a conv early exit) and fc1 (a dense one)
    return search_module.search(model, Options(confidence=0.0, min_units=4), random_dataset(model, 64, 0),
                                metric="relerr", max_drop=0.5, seed=0, latency=latency)


def _reach_pairs(calls):
    """The pairs timed against the lossless model: the second model has no early exit."""
    return [(a, b) for a, b in calls if not any(n.op_type in EXIT_OPS for n in b.graph.node)
            and any(n.op_type in EXIT_OPS for n in a.graph.node)]


def _exits(model):
    return sorted(n.name.split("_")[0] for n in model.graph.node if n.op_type in EXIT_OPS)


def test_a_layer_no_faster_at_its_reach_is_left_alone_and_says_why(scripted_clock):
    calls = scripted_clock({"conv2": -0.2, "fc1": 0.2})
    out = _search()
    pairs = _reach_pairs(calls)
    assert [_exits(a) for a, _ in pairs[:2]] == [["conv2"], ["fc1"]]  # one layer at a time: a small model
    assert out.shares["conv2"] is None and isinstance(out.shares["fc1"], float)
    reason = out.options.setting("conv2").skip_reason
    share = reach({"conv2": LADDER[-1]}, ["conv2"])["conv2"]  # (the climb reached the top rung: max_drop 0.5)
    assert reason.startswith(f"objective latency: at a loss share of {share:.3g}, the most the search could raise it "
                             "to, the model took 1.200 ms with this layer against 1.000 ms for the lossless model") \
        and "it was not calibrated further" in reason
    # No trial after the verdict gives conv2 a share: only the climb's did.
    climbed = [t for t in out.trials if t.shares["conv2"] is not None]
    assert climbed and all(t.shares["conv2"] == t.shares["fc1"] for t in climbed)
    assert _exits(out.result.model) == ["fc1"]


def test_a_slower_layer_is_left_alone_however_little(scripted_clock):
    scripted_clock({"conv2": -0.02, "fc1": 0.2})
    out = _search()
    assert out.shares["conv2"] is None and "the most the search could raise it to" in \
        out.options.setting("conv2").skip_reason


def test_layers_that_pay_at_their_reach_are_calibrated_as_before(scripted_clock):
    calls = scripted_clock({"conv2": 0.2, "fc1": 0.2})
    out = _search()
    assert len(_reach_pairs(calls)) >= 2
    assert all(isinstance(out.shares[layer], float) for layer in ("conv2", "fc1"))
    assert not out.options.setting("conv2").skip_reason


def test_each_layer_is_timed_at_its_reach_against_the_lossless_model(scripted_clock, monkeypatch):
    """The pairs compare the layer's early exit at the share ladder.reach gave it with the
    lossless model: no early exit, every plain ReLU's zeros read (a review found mutations
    that timed another share, or against the original, passing the tests above)."""
    from exprune_onnx.tuning import reach as reach_module

    seen = {}
    real = reach_module.unpaying

    def spy(original, planner, shares, *args):
        seen.update(planner=planner, shares=dict(shares))
        return real(original, planner, shares, *args)

    monkeypatch.setattr(search_module, "unpaying", spy)
    calls = scripted_clock({"conv2": 0.2, "fc1": 0.2})
    out = _search()
    common = [t for t in out.trials if t.feasible and t.shares["conv2"] is not None and t.shares["conv2"] == t.shares["fc1"]]
    climbed = max(common, key=lambda t: t.saved).shares  # the climb's choice: the common share saving the most
    assert seen["shares"] == reach(climbed, ["conv2", "fc1"])
    pairs = _reach_pairs(calls)[:2]
    for (candidate, base), layer in zip(pairs, ["conv2", "fc1"]):
        assert not _exits(base) and any(n.op_type.startswith("ExPruneSparse") for n in base.graph.node)
        want = seen["planner"].options({**dict.fromkeys(seen["planner"].stats), layer: seen["shares"][layer]})
        assert _thresholds(candidate) == {layer: pytest.approx(want.setting(layer).threshold, rel=1e-6)}  # (float32)


def _thresholds(model):
    import onnx

    return {n.name.split("_")[0]: onnx.helper.get_attribute_value(a) for n in model.graph.node
            if n.op_type in EXIT_OPS for a in n.attribute if a.name == "threshold"}


def test_the_flops_objective_times_nothing(scripted_clock):
    calls = scripted_clock({"conv2": -0.2, "fc1": -0.2})
    out = _search(None)
    assert calls == [] and isinstance(out.shares["conv2"], float) and out.shares["conv2"] in LADDER
