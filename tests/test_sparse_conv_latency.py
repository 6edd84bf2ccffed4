"""Zero-input convs under the latency objective (tuning/objective.py, screen.py,
small_gains.py) and in optimize's tables and report: timed alone, in groups, kept or dropped
by scripted clocks."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import NEG_INF, assert_close, init, node_types, run_exprune, run_plain
from onnx import helper
from sparse_conv_models import (
    SPARSE,
    assert_same_outputs,
    build,
    chain3,
    conv,
    feeds,
    init_array,
    relu_conv,
    sparse_node,
    stem,
    weight,
)

import exprune_onnx
from exprune_onnx import ops
from exprune_onnx.cli import main
from exprune_onnx.io.data import random_dataset
from exprune_onnx.runtime import cpu_has_tiles
from exprune_onnx.verify import verify


def test_cli_explain_names_the_rewrite(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(relu_conv(np.random.default_rng(10)), src)
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops", "--no-check",
                                  "--explain", "--threshold", "-inf"])
    assert r.exit_code == 0, r.output
    assert "sparse_conv" in r.output and "--sparse-relu on" in r.output
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops", "--no-check",
                                  "--sparse-relu", "on", "--threshold", "-inf"])
    assert r.exit_code == 0, r.output
    assert node_types(onnx.load(out))[-1] == ops.SPARSE_CONV


@pytest.mark.parametrize("bias_add, types", [
    (False, ["Conv", "Relu", "Slice", "ExPruneSparseConv", "Conv", "ExPruneConvRelu"]),
    (True, ["Conv", "Relu", "ExPruneSparseConv", "Slice", "Add", "Conv", "ExPruneConvRelu"]),
], ids=["direct", "through_a_bias_add"])
def test_shortcut_conv_is_rewritten_alone_beside_an_early_exit_block(bias_add, types):
    """c1 becomes an early-exit layer that takes the block's Add -> Relu; the shortcut c2 reads
    the stem's Relu and is rewritten alone, its output the early-exit op's residual. With
    c2 -> Add(bias) before the join, following c2's group reaches the join the early-exit
    rewrite has emptied (it lingers as a consumer until cleanup): c2 is still rewritten
    alone and its bias Add stays (the graph fuzzer found a crash there, seed 1005909)."""
    rng = np.random.default_rng(11)
    nodes, inits = stem(rng)
    inits += [init("W1", weight(rng, 8, 8)), init("W2", weight(rng, 8, 8, 1)),
              init("b2", init_array(rng, (1, 8, 1, 1), 0.5))]
    nodes += [conv("c1", "r0", "W1", "a1", pads=[1, 1, 1, 1]), conv("c2", "r0", "W2", "a2")]
    if bias_add:
        nodes.append(helper.make_node("Add", ["a2", "b2"], ["a2b"], name="bias2"))
    nodes += [helper.make_node("Add", ["a1", "a2b" if bias_add else "a2"], ["s"], name="join"),
              helper.make_node("Relu", ["s"], ["y"])]
    model = build(nodes, inits if bias_add else inits[:-1])
    res = exprune_onnx.optimize_model(model, threshold=NEG_INF, sparse_relu="on", min_units=4, k=4,
                                      unit_order="stored")
    assert [rw.candidate.layer for rw in res.rewritten] == ["c1"]
    assert [(s.layer, s.op_types) for s in res.sparse] == [("c2", ["Conv"])]
    assert node_types(res.model) == types
    onnx.checker.check_model(res.model)
    f = feeds(rng)
    for ref, got in zip(run_plain(model, f), run_exprune(res.model, f)):
        assert_close(ref, got)
    rows = verify(model, res.model, random_dataset(model, 4, 0))
    assert all(r.ok for r in rows), rows


def test_a_later_run_reads_a_sparse_convs_relu():
    """A first run keeps only c1 sparse; a second run finds c2 behind c1's fused Relu."""
    rng = np.random.default_rng(12)
    model = chain3(rng)
    first = exprune_onnx.optimize_model(model, **SPARSE, sparse_relu_layers=frozenset({"c1"}))
    assert [s.layer for s in first.sparse] == ["c1"]
    second = exprune_onnx.optimize_model(first.model, **SPARSE)
    assert [(s.layer, s.source) for s in second.sparse] == [("c2", ops.SPARSE_CONV)]
    assert_same_outputs(model, second.model, rng)


def test_screen_pairs_compute_the_same_layer():
    """The objective's layer-alone pair (screen.py): the op and the dense Conv it stands for agree."""
    from exprune_onnx.tuning.screen import alone_pair

    rng = np.random.default_rng(13)
    res = exprune_onnx.optimize_model(relu_conv(rng, clip=True, group=2, m=16, stride=2), **SPARSE)
    node = sparse_node(res.model)
    x = np.maximum(rng.standard_normal((2, 8, 10, 10)), 0).astype(np.float32)
    sparse, dense = alone_pair(res.model, node.name, list(x.shape))
    onnx.checker.check_model(dense)
    (want,) = run_plain(dense, {"r0": x})
    (got,) = run_exprune(sparse, {"r0": x})
    assert_close(want, got)


def test_objective_drops_prune_nothing_layers_untimed(monkeypatch):
    """At -inf the early-exit layers are dropped without a whole-model timing; the sparse
    convs that are not faster alone are never timed in the whole model either."""
    from exprune_onnx.tuning import objective

    calls = []

    def fake(a, b, feeds, threads, passes):
        calls.append(len(a.graph.node))
        return 2.0, 1.0  # the rewritten side always slower

    monkeypatch.setattr(objective, "time_pair", fake)
    model = chain3(np.random.default_rng(14))
    options = exprune_onnx.Options(threshold=NEG_INF, min_units=8)
    result = exprune_onnx.optimize_model(model, options)
    assert [rw.candidate.layer for rw in result.rewritten] == ["c1"]
    choice = objective.choose(model, options, result, random_dataset(model, 8, 0))
    assert not choice.result.changed and choice.result.model is model
    notes = {(t.layer, t.kind): t.note for t in choice.layers}
    assert notes == {("c1", objective.EARLY_EXIT): "prunes nothing at threshold -inf",
                     ("c1", objective.ZERO_INPUTS): "not faster alone",
                     ("c2", objective.ZERO_INPUTS): "not faster alone"}
    assert calls == [1, 1]  # two layer-alone pairs, no whole model
    from exprune_onnx.report.latency import latency_json

    rows = {(r["layer"], r["rewrite"]): r for r in latency_json(choice)["layers"]}
    untimed = rows[("c1", objective.EARLY_EXIT)]
    assert untimed["with_ms"] is None and untimed["without_ms"] is None  # the table's "-", not 0 ms
    assert rows[("c1", objective.ZERO_INPUTS)]["with_ms"] == 2.0  # its times alone


@pytest.mark.parametrize(("gains", "whole", "kept"), [
    # Both save half the margin alone: neither is timed in the model alone; together they clear it.
    ({"zero:c1": 0.5, "zero:c2": 0.5}, [("c1", "c2")], {"c1", "c2"}),
    # Together they do not clear it: nothing is written, so nothing is timed against the original.
    ({"zero:c1": 0.4, "zero:c2": 0.4}, [("c1", "c2")], set()),
    # c1 clears it alone and is timed in the model; c2 alone is too small and has no group.
    ({"zero:c1": 2.0, "zero:c2": 0.5}, [("c1",)], {"c1"}),
], ids=["small_pair_kept_together", "small_pair_dropped", "one_large_one_small"])
def test_sparse_convs_too_small_alone_are_timed_only_in_a_group(scripted_clock, gains, whole, kept):
    """A conv whose gain alone is under the margin of the model's time cannot clear the
    margin in the model (small_gains.py): it gets no whole-model timing of its own."""
    from rich.console import Console

    from exprune_onnx.report.latency import latency_table
    from exprune_onnx.tuning import objective

    calls = scripted_clock({k: g * objective.MARGIN for k, g in gains.items()})
    model = chain3(np.random.default_rng(14))
    options = exprune_onnx.Options(threshold=NEG_INF, min_units=8)
    choice = objective.choose(model, options, exprune_onnx.optimize_model(model, options),
                              random_dataset(model, 8, 0))

    def sparse_in(m):
        return tuple(sorted(n.name[:-len("_sparse")] for n in m.graph.node if n.op_type == ops.SPARSE_CONV))

    # Whole-model pairs only (a layer alone is one node): each (with, without) as the convs read sparsely.
    timed = [(sparse_in(a), sparse_in(b)) for a, b in calls if len(a.graph.node) > 1]
    assert timed == [(names, ()) for names in whole] + ([((), tuple(sorted(kept)))] if kept else [])
    assert {t.layer for t in choice.layers if t.kind == objective.ZERO_INPUTS and t.kept and not t.group} == kept
    assert sparse_in(choice.result.model) == tuple(sorted(kept))
    small = {t.layer: t for t in choice.layers if t.small}
    assert {f"zero:{layer}" for layer in small} == {k for k, g in gains.items() if g < 1}
    console = Console(width=400, record=True)
    console.print(latency_table(choice))
    text = console.export_text()
    if len(small) == 1:  # no group: its row says why it was not timed in the model
        (row,) = small.values()
        assert row.note.startswith("saves ") and "under 1% of the model's 1.000 ms" in row.note
        assert f"dropped: {row.note}" in text
    else:
        assert ("kept with the group below" if kept else "dropped: too small, alone or together") in text


@pytest.mark.parametrize(("in_model", "groups", "kept"), [
    # c3 (too small alone, untimed) would be slower in the model: it has no group of its own.
    ({"c1": 0.6, "c2": 0.6, "c3": -0.4}, [("c1", "c2")], {"c1", "c2"}),
    # c1 alone is timed faster but short: it joins the untimed c3, on top of nothing kept.
    ({"c1": 0.6, "c2": -2.0, "c3": 0.6}, [("c1", "c3")], {"c1", "c3"}),
    # Two of each: the untimed pair is timed on top of the first group, and dropped alone.
    ({"c1": 0.6, "c2": 0.6, "c3": -0.4, "c4": -0.4}, [("c1", "c2"), ("c3", "c4")], {"c1", "c2"}),
], ids=["timed_pair_kept_untimed_left", "one_timed_joins_the_untimed", "untimed_pair_dropped_on_top"])
def test_untimed_small_convs_never_sink_a_group_timed_faster(monkeypatch, in_model, groups, kept):
    """c1, c2 save 2% of the model alone and are timed in it; c3, c4 save 0.5% alone, so
    they are not (small_gains.py). Gains in the model are in units of the 1% margin."""
    from exprune_onnx.tuning import objective

    alone = {"c1": 0.02, "c2": 0.02, "c3": 0.005, "c4": 0.005}
    rng = np.random.default_rng(15)
    nodes, inits = stem(rng, 16)
    prev, last = "r0", sorted(in_model)[-1]
    for c in sorted(in_model):
        inits.append(init(f"W{c}", weight(rng, 16, 16)))
        out = "y" if c == last else f"r{c}"
        nodes += [conv(c, prev, f"W{c}", f"a{c}", pads=[1, 1, 1, 1]), helper.make_node("Relu", [f"a{c}"], [out])]
        prev = out
    model = build(nodes, inits)

    def cost(m):
        sparse = {n.name[:-len("_sparse")] for n in m.graph.node if n.op_type == ops.SPARSE_CONV}
        return 1.0 - sum(in_model[c] * objective.MARGIN for c in sparse)

    timed = []

    def fake(a, b, feeds, threads, passes, **_):
        if len(a.graph.node) == 1:  # a conv alone (screen.alone_pair): 0.1 ms dense
            return 0.1 - alone[a.graph.node[0].name[:-len("_sparse")]], 0.1
        timed.append((a, b))
        return cost(a), cost(b)

    monkeypatch.setattr(objective, "time_pair", fake)
    monkeypatch.setattr(objective, "seconds_per_run", lambda model, feeds, threads, source: 1e-3)
    options = exprune_onnx.Options(threshold=NEG_INF, min_units=10**6)
    choice = objective.choose(model, options, exprune_onnx.optimize_model(model, options), random_dataset(model, 8, 0))
    assert [t.group for t in choice.layers if t.group] == groups
    assert {n.name[:-len("_sparse")] for n in choice.result.model.graph.node if n.op_type == ops.SPARSE_CONV} == kept
    # No conv too small alone is ever the one difference of a whole-model pair.
    untimed = {c for c, g in alone.items() if c in in_model and g < 0.01}

    def sparse(m):
        return {n.name[:-len("_sparse")] for n in m.graph.node if n.op_type == ops.SPARSE_CONV}

    assert not any(len(sparse(a) ^ sparse(b)) == 1 and sparse(a) ^ sparse(b) <= untimed for a, b in timed)


def test_cli_report_of_zero_input_rewrites_alone(tmp_path):
    """Lossless mode: no early-exit layer, so no table of them (it would be empty); the zero-input
    table counts the inputs the op skipped, which on a CPU with AMX tiles may be none."""
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(relu_conv(np.random.default_rng(10)), src)
    r = CliRunner().invoke(main, ["optimize", str(src), "-o", str(out), "--objective", "flops",
                                  "--sparse-relu", "on", "--threshold", "-inf", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert [t for t in node_types(onnx.load(out)) if t.startswith("ExPrune")] == [ops.SPARSE_CONV]
    check = json.loads((tmp_path / "r.json").read_text())["check"]
    (node, (read, total)), = check["inputs_read"].items()  # the inputs it read, apart from any pruned outputs
    assert check["pruned"] == {} and node.endswith("_sparse") and 0 < read <= total
    assert "Rewritten layers" not in r.output
    assert "Zero inputs skipped" in r.output and "inputs skipped (measured)" in r.output
    assert ("AMX tiles skips none" in r.output) == cpu_has_tiles()
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).random((4, 3, 10, 10), dtype=np.float32))
    r = CliRunner().invoke(main, ["evaluate", str(src), str(out), "--data", str(tmp_path / "d.npz"), "--runs", "2"])
    assert r.exit_code == 0 and ("AMX tiles skips none" in r.output) == cpu_has_tiles(), r.output  # as optimize
