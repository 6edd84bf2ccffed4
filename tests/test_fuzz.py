"""Property and fuzz tests: random graphs, mutated model files, random op inputs.

The loops live in tests/fuzz_loops.py (what each one checks is written there); each
runs in a child process so that a crash in native code fails one test and names the
seed instead of killing pytest. The default run is small and fixed (seeds from 0);
``pytest -m slow tests/test_fuzz.py`` runs every loop for ``EXPRUNE_FUZZ_SECONDS``
(default 200) seconds from seed 10**6 and prints the counts. The regression tests at
the end pin the bugs the loops found.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from fuzz_loops import KNOWN, LOOPS

HERE = Path(__file__).resolve().parent


def spawn(loop: str, first: int, count: int, seconds: float) -> tuple[Counter, list[str]]:
    """Run a loop in a child process; a dead child is one crash, at the seed it was on."""
    timeout = seconds + 120
    cmd = [sys.executable, str(HERE / "fuzz_loops.py"), loop, str(first), str(count), str(seconds)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return Counter(crashes=1), [f"{loop}: no answer after {timeout} s, at {_last_case(stderr)}"]
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return Counter(crashes=1), [f"{loop}: the child died (exit {proc.returncode}) at {_last_case(proc.stderr)}: "
                                    f"{proc.stderr.strip()[-1500:]}"]
    report = json.loads(lines[-1])
    return Counter(report["counts"]), report["failures"]


def _last_case(stderr: str) -> str:
    cases = [line for line in stderr.splitlines() if line.startswith("case ")]
    return cases[-1].replace("case", "seed") if cases else "start-up"


def _assert_clean(counts: Counter, failures: list[str]) -> None:
    bad = counts["crash"] + counts["crashes"] + counts["wrong result"] + counts["documented error"]
    failures = [f for f in failures if f": {KNOWN}: " not in f]
    assert bad == 0 and not failures, "\n".join(failures)


# ------------------------------------------------------------------ tests


def test_generated_graphs_are_valid_and_varied():
    """The generator itself: checker-clean, deterministic, and it covers what it claims."""
    import onnx
    from graphgen import generate, max_opset

    seen, opsets, batches = Counter(), set(), set()
    for seed in range(60):
        g = generate(seed)
        onnx.checker.check_model(g.model, full_check=True)
        opsets.add(next(o.version for o in g.model.opset_import))
        batches.add(g.batch if isinstance(g.batch, str) else "fixed")
        seen.update(n.op_type for n in g.model.graph.node)
        seen.update("grouped" for n in g.model.graph.node for a in n.attribute if a.name == "group" and a.i > 1)
    assert generate(7).model.SerializeToString() == generate(7).model.SerializeToString()
    for op in ("Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "Add", "Sum", "Sigmoid", "MaxPool",
               "AveragePool", "Concat", "Flatten", "Reshape", "If", "Constant", "grouped"):
        assert seen[op] > 0, f"no {op} in 60 graphs"
    assert min(opsets) < 11 <= max(opsets) and max(opsets) <= max_opset() and batches == {"N", "fixed"}


def test_graph_properties():
    """Exact at -inf, idempotent, runs at a finite threshold under every rule: 60 graphs."""
    counts, failures = spawn("graphs", 0, 60, 300)
    _assert_clean(counts, failures)
    assert counts["graphs"] == 60
    # The properties mean something only if the rewrites happen: every rule, several times.
    for rule in ("conv_relu", "gemm_relu", "matmul_relu"):
        assert counts[f"rewritten {rule} (exact)"] >= 3, dict(counts)


def test_mutated_model_files():
    """Documented exit codes only, input untouched, nothing left behind: 120 mutated files."""
    counts, failures = spawn("files", 0, 120, 300)
    _assert_clean(counts, failures)
    assert counts["files"] == 120
    assert counts["exit 0"] > 0 and counts["exit 3"] > 0, dict(counts)  # both survivors and rejects


def test_op_inputs():
    """Valid cases match the numpy contract, invalid ones are errors naming the node: 1000 cases."""
    counts, failures = spawn("ops", 0, 1000, 300)
    _assert_clean(counts, failures)
    assert counts["op cases"] == 1000
    assert counts["op runs"] > 100 and counts["op errors"] > 50, dict(counts)
    assert counts["op runs that prune"] > 50 and counts["op runs with NaN or Inf"] > 20, dict(counts)


def test_sparse_conv_inputs():
    """ExPruneSparseConv matches onnxruntime's Conv on random geometries, groups and zero
    fractions; invalid cases are errors naming the node: 300 cases."""
    counts, failures = spawn("sparse_conv", 0, 300, 300)
    _assert_clean(counts, failures)
    assert counts["sparse conv cases"] == 300
    assert counts["sparse conv runs"] > 150 and counts["sparse conv errors"] > 40, dict(counts)


def test_child_crash_names_the_seed():
    """A child that dies (here: an unknown loop) fails with its last seed, not silently."""
    counts, failures = spawn("no-such-loop", 5, 1, 10)
    assert counts["crashes"] == 1 and "seed 5" in failures[0]


# ------------------------------------------------------------------ regressions (bugs the loops found)


def _relu_conv_model(weight=None, bias=None, bn=None, opset=17):
    """x -> Relu -> Conv(32 -> 8, 3x3) [-> BN] -> Relu: one rewritable layer, non-negative input."""
    from helpers import init, make_model, vi
    from onnx import helper

    rng = np.random.default_rng(0)
    w = weight if weight is not None else (rng.standard_normal((8, 32, 3, 3)) / 17).astype(np.float32)
    b = bias if bias is not None else (0.1 * rng.standard_normal(8)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["xr"]),
             helper.make_node("Conv", ["xr", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    inits = [init("w", w), init("b", b)]
    last = "c"
    if bn is not None:
        nodes.append(helper.make_node("BatchNormalization", ["c", "s", "beta", "mean", "var"], ["bn"]))
        inits += [init(n, v) for n, v in zip(("s", "beta", "mean", "var"), bn)]
        last = "bn"
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    return make_model(nodes, [vi("x", ["N", 32, 6, 6])], [vi("y", ["N", 8, 6, 6])], inits, opset=opset)


def _optimize(model, **options):
    import exprune_onnx

    return exprune_onnx.optimize_model(model, min_units=8, include_first_layer=True, **options)


def test_initializer_data_not_matching_dims_is_an_unreadable_model(tmp_path):
    """More data than its dims hold passes the checker (it only flags too little) and
    crashed numpy (exit 1); now exit 3."""
    from click.testing import CliRunner

    from exprune_onnx.cli import main

    model = _relu_conv_model()
    bias = next(t for t in model.graph.initializer if t.name == "b")
    bias.dims[0] = 7  # 8 floats of data
    path = tmp_path / "short.onnx"
    path.write_bytes(model.SerializeToString())
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 3 and "initializer 'b' holds 32 bytes" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o.onnx").exists()


def test_wrong_declared_input_rank_is_ignored_not_a_crash():
    """A value_info claiming the wrong rank for a layer's input made the rewrite index past
    it; shapes are now inferred afresh, as onnxruntime does, so the layer is rewritten."""
    from onnx import TensorProto, helper

    model = _relu_conv_model()
    model.graph.value_info.append(helper.make_tensor_value_info("xr", TensorProto.FLOAT, [2]))
    result = _optimize(model, threshold=-math.inf)
    assert result.changed
    onnx.checker.check_model(result.model)
    assert not any(v.name == "xr" and len(v.type.tensor_type.shape.dim) == 1 for v in result.model.graph.value_info)


def test_certified_rule_skips_nan_weights():
    """NaN weights gave a NaN w_pos_sum, which the op refuses at run time."""
    w = (np.random.default_rng(1).standard_normal((8, 32, 3, 3)) / 17).astype(np.float32)
    w[2, 20, 1, 1] = np.nan  # a tail unit under either unit order's top 8
    model = _relu_conv_model(weight=w)
    assert _optimize(model, threshold=-math.inf).changed  # other rules still rewrite it
    result = _optimize(model, threshold=0.0, rule="certified")
    assert not result.changed and "without NaN" in result.rejected[0].reason


def test_wrong_length_bias_and_batchnorm_are_left_alone():
    """A bias or BatchNorm parameter of the wrong length crashed folding and matching (broadcast errors)."""
    rng = np.random.default_rng(2)
    result = _optimize(_relu_conv_model(bias=np.zeros(7, np.float32)), threshold=-math.inf)
    assert not result.changed and "7 values for 8 outputs" in result.rejected[0].reason
    ones = np.ones(8, np.float32)
    bn = (ones, ones, rng.standard_normal(8).astype(np.float32), np.ones(6, np.float32))
    result = _optimize(_relu_conv_model(bn=bn), threshold=-math.inf)
    assert not result.changed and result.folded_batchnorms == 0


def test_sparse_initializer_weights_stay_exact():
    """graphsurgeon read sparse initializers as float64 zeros: the output did not load."""
    import onnx
    from helpers import assert_close, run_exprune, run_plain
    from onnx import helper, numpy_helper

    model = _relu_conv_model()
    weight = next(t for t in model.graph.initializer if t.name == "w")
    dense = numpy_helper.to_array(weight)
    keep = np.flatnonzero(np.abs(dense.reshape(-1)) > 0.05)
    model.graph.initializer.remove(weight)
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(
        numpy_helper.from_array(dense.reshape(-1)[keep], "w"), numpy_helper.from_array(keep.astype(np.int64), ""),
        list(dense.shape)))
    onnx.checker.check_model(model)
    result = _optimize(model, threshold=-math.inf)
    assert result.changed
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 32, 6, 6)).astype(np.float32)}
    assert_close(run_plain(model, feeds)[0], run_exprune(result.model, feeds)[0])


@pytest.mark.parametrize("damage", ["name", "elem_type"])
def test_non_utf8_name_or_unknown_type_is_an_unreadable_model(tmp_path, damage):
    """Both pass the checker; graphsurgeon then failed with TypeError or KeyError (exit 1)."""
    from click.testing import CliRunner

    from exprune_onnx.cli import main

    data = _relu_conv_model().SerializeToString()
    if damage == "name":
        data = data.replace(b"conv", b"\xe3onv")  # the node name "conv" becomes invalid UTF-8
        expected = "not UTF-8 text"
    else:
        model = _relu_conv_model()
        model.graph.input[0].type.tensor_type.elem_type = 65
        data, expected = model.SerializeToString(), "'x' has unknown element type 65"
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    r = CliRunner().invoke(main, ["optimize", str(path), "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 3 and expected in r.output and "Traceback" not in r.output, r.output


def test_gemm_on_a_scalar_is_left_alone():
    """Counting the FLOPs of a Gemm whose A is a scalar indexed past its shape."""
    from helpers import init, make_model, vi
    from onnx import helper

    w = np.ones((32, 4), np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["xr"]), helper.make_node("Gemm", ["s", "w"], ["g"]),
             helper.make_node("Add", ["g", "xr"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    model = make_model(nodes, [vi("x", [1, 4])], [vi("y", [1, 4])], [init("s", np.float32(2.0)), init("w", w)])
    model.graph.value_info.append(vi("g", [1, 4]))  # as an exporter may declare it; inference finds none
    result = _optimize(model, threshold=-math.inf)
    assert not result.changed and result.uncounted_nodes == 1


def test_ir3_model_with_if_body_stays_valid():
    """IR 3 wants initializers listed as graph inputs, which an If body cannot take: the
    constants the compiler adds in a body must stay Constant nodes."""
    import onnx
    from helpers import assert_close, run_exprune, run_plain
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    w = (rng.standard_normal((40, 40)) / 7).astype(np.float32)
    body = helper.make_graph(
        [const("w", w), const("b", (0.1 * rng.standard_normal(40)).astype(np.float32)),
         helper.make_node("MatMul", ["xr", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
         helper.make_node("Relu", ["a"], ["t"])],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 40])])
    other = helper.make_graph([helper.make_node("Identity", ["xr"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 40])])
    graph = helper.make_graph(
        [const("cond", np.array(True)), helper.make_node("Relu", ["x"], ["xr"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=other)],
        "ir3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 40])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    onnx.checker.check_model(model)
    result = _optimize(model, threshold=-math.inf)
    assert result.changed and result.model.ir_version == 3
    onnx.checker.check_model(result.model)
    feeds = {"x": rng.standard_normal((2, 40)).astype(np.float32)}
    assert_close(run_plain(model, feeds)[0], run_exprune(result.model, feeds)[0])


@pytest.mark.slow
def test_long_fuzz(capsys):
    """The three loops for EXPRUNE_FUZZ_SECONDS each, from seed 10**6 up (the default run covers 0..)."""
    seconds = float(os.environ.get("EXPRUNE_FUZZ_SECONDS", "200"))
    totals, failures = Counter(), []
    for loop in LOOPS:
        counts, fails = spawn(loop, 10**6, 10**9, seconds)
        totals.update(counts)
        failures += fails
    with capsys.disabled():
        print(f"\nfuzz for {seconds:.0f} s per loop: {totals['graphs']} graphs tried, {totals['inputs']} inputs tried, "
              f"{totals['files']} mutated files tried, {totals['op cases']} op input cases tried, "
              f"{totals['crash'] + totals['crashes']} crashes, {totals['wrong result']} wrong results, "
              f"{totals['documented error']} documented errors")
        print("  " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
        for line in failures:
            print("  " + line)
    _assert_clean(totals, failures)
