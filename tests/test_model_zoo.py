"""The compiler on real exported CNNs: the onnx wheel's light model zoo.

``onnx/backend/test/data/light/`` holds Caffe2 exports of nine ImageNet classifiers
(IR 3, opset 9). Their big weights are ``ConstantOfShape`` nodes filled with 0.02, so
the models are structure only; :func:`refill` gives every weight seeded random values
(He-scaled) and :func:`calibrate_batchnorm` fits the BatchNorm statistics to the data,
so activations keep their scale through the network and outputs depend on the input.

For each model the test

1. derives from the graph alone which layers are eligible (a group-1 Conv, Gemm or
   MatMul whose output reaches a Relu only through BatchNormalization and Adds, with
   at least ``min_units`` input units and not reading the raw graph input) and checks
   that exactly those layers are rewritten;
2. checks the optimised model with the ONNX checker and runs it (graph optimisations
   off) against the original in plain onnxruntime on two seeded inputs;
3. checks that compiling the optimised model again changes nothing.

Heavy models (VGG19 ~40-60 s, ZFNet-512 ~11 s, which only repeats AlexNet's coverage)
are marked ``slow`` and deselected by default; ``pytest -m slow`` runs them.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from zoo_models import (
    INPUT_SEEDS,
    ZOO,
    assert_close,
    eligible_layers,
    model_path,
    plain_session,
    refilled,
    relative_error,
    zoo_feeds,
)

import exprune_onnx

NEG_INF = float("-inf")
PLAIN_CLI_FAST = ("squeezenet", "shufflenet")


def _param(name: str):
    slow, _ = ZOO[name]
    return pytest.param(name, id=name, marks=[pytest.mark.slow] if slow else [])


def _raw(name: str) -> onnx.ModelProto:
    """The shipped export with its weights still in ConstantOfShape nodes, as IR 4."""
    raw = onnx.load(str(model_path(name)))
    init_names = {t.name for t in raw.graph.initializer}
    data_inputs = [i for i in raw.graph.input if i.name not in init_names]
    del raw.graph.input[:]
    raw.graph.input.extend(data_inputs)
    raw.ir_version = 4
    onnx.checker.check_model(raw)
    return raw


@pytest.mark.parametrize("name", [_param(n) for n in ZOO])
def test_zoo_model_rewritten_and_exact(name):
    started = time.perf_counter()
    expected = eligible_layers(refilled(name, calibrated=False))
    recorded = ZOO[name][1]
    assert len(expected) == recorded, f"the structural analysis now finds {len(expected)} eligible layers"

    if not expected:
        # Nothing to rewrite: the very input comes back (values do not matter here).
        model = refilled(name, calibrated=False)
        res = exprune_onnx.optimize_model(model, threshold=NEG_INF)
        assert res.rewritten == [] and res.changed is False
        assert res.model is model
        assert res.rejected, "every Conv/Gemm should be reported with a reason"
        print(f"{name}: 0 layers rewritten, {time.perf_counter() - started:.1f} s")
        return

    original = refilled(name)
    res = exprune_onnx.optimize_model(refilled(name), threshold=NEG_INF)
    rewritten = {r.candidate.layer: r for r in res.rewritten}
    assert len(rewritten) == len(res.rewritten), "a layer was rewritten twice"
    reasons = {r.layer: r.reason for r in res.rejected}
    missing = {layer: reasons.get(layer, "(not reported)") for layer in expected if layer not in rewritten}
    extra = sorted(set(rewritten) - set(expected))
    assert not missing, f"eligible layers left alone: {missing}"
    assert not extra, f"layers rewritten that the pattern does not cover: {extra}"
    for layer, r in rewritten.items():
        assert 1 <= r.k < r.candidate.n, (layer, r.k, r.candidate.n)
        assert r.candidate.op_types[0] == expected[layer][0], (layer, r.candidate.op_types)
        assert r.candidate.op_types[-1] == "Relu", (layer, r.candidate.op_types)

    assert res.changed
    optimized_model = res.model
    del res, rewritten  # the Result keeps the compiler's whole graph alive (GBs for VGG19)
    onnx.checker.check_model(optimized_model)
    # The early-exit ops, one per layer; a Conv or MatMul after one also reads its zeros sparsely.
    custom = [n for n in optimized_model.graph.node
              if n.domain == exprune_onnx.DOMAIN and n.op_type in exprune_onnx.ops.PRUNE_OPS]
    assert len(custom) == len(expected)

    again = exprune_onnx.optimize_model(optimized_model, threshold=NEG_INF)
    assert again.changed is False and again.rewritten == []
    assert again.model is optimized_model
    del again

    feeds = [zoo_feeds(original, seed) for seed in INPUT_SEEDS]
    reference = plain_session(original)
    del original
    optimized = exprune_onnx.inference_session(optimized_model, optimize=False)
    del optimized_model
    assert [o.name for o in optimized.get_outputs()] == [o.name for o in reference.get_outputs()]
    worst = 0.0
    refs = []
    for seed, feed in zip(INPUT_SEEDS, feeds):
        want = reference.run(None, feed)
        got = optimized.run(None, feed)
        for out, ref, val in zip(reference.get_outputs(), want, got):
            assert np.isfinite(ref).all(), f"{out.name}: the refilled model itself is not finite"
            assert_close(ref, val, f"{name} output '{out.name}' (input seed {seed})")
            worst = max(worst, relative_error(ref, val))
        refs.append(want)
    # The refill is meaningful: every output (probabilities and logits) depends on the input.
    for a, b, out in zip(refs[0], refs[1], reference.get_outputs()):
        scale = float(np.abs(a).max())
        assert scale > 0, f"{out.name} is all zeros"
        assert float(np.abs(a - b).max()) > 1e-2 * scale, f"{out.name} hardly varies with the input"

    # Shown with `pytest -s` or `-rP`.
    print(f"{name}: {len(expected)} layers rewritten, max error {worst:.2e} of the output range, "
          f"{time.perf_counter() - started:.1f} s")


def test_finite_threshold_runs_on_squeezenet():
    original = refilled("squeezenet")
    res = exprune_onnx.optimize_model(refilled("squeezenet"), threshold=0.0)
    assert res.changed
    assert all(r.threshold == 0.0 for r in res.rewritten)
    onnx.checker.check_model(res.model)
    reference = plain_session(original)
    optimized = exprune_onnx.inference_session(res.model, optimize=False)
    feeds = zoo_feeds(original, INPUT_SEEDS[0])
    for out, ref, got in zip(reference.get_outputs(), reference.run(None, feeds), optimized.run(None, feeds)):
        assert got.shape == ref.shape, out.name
        assert np.isfinite(got).all(), out.name


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1"])
def test_constant_of_shape_weights_count_as_constants(name):
    """graphutil folds weights computed from constants (Caffe2's ConstantOfShape, a
    Reshape of one for inception_v1's classifier), so the unrefilled export has the
    same eligible layers as the refilled one."""
    res = exprune_onnx.optimize_model(_raw(name), threshold=NEG_INF)
    not_constant = [(r.layer, r.reason) for r in res.rejected if "not a constant" in r.reason]
    assert not not_constant
    expected = eligible_layers(refilled(name, calibrated=False))
    assert {r.candidate.layer for r in res.rewritten} == set(expected)
    onnx.checker.check_model(res.model)


def test_shipped_ir3_model_stays_valid():
    """IR 3 requires every initializer to be listed as a graph input too.

    The shipped files are IR 3 and list their initializers as inputs; the optimised
    model must pass the checker (list its new initializers as inputs, or move to
    IR >= 4, where they need not be).
    """
    shipped = onnx.load(str(model_path("squeezenet")))
    assert shipped.ir_version == 3
    onnx.checker.check_model(shipped)
    res = exprune_onnx.optimize_model(shipped, threshold=NEG_INF)
    assert len(res.rewritten) == ZOO["squeezenet"][1]
    onnx.checker.check_model(res.model)
    session = exprune_onnx.inference_session(res.model, optimize=False)
    feeds = {i.name: np.random.default_rng(0).uniform(0, 1, i.shape).astype(np.float32) for i in session.get_inputs()}
    assert all(np.isfinite(o).all() for o in session.run(None, feeds))


@pytest.mark.parametrize("name", [pytest.param(n, id=n, marks=[] if n in PLAIN_CLI_FAST else [pytest.mark.slow])
                                  for n in ZOO])
@pytest.mark.parametrize("objective", ["latency", "flops"])
def test_plain_cli_on_a_fixed_batch_zoo_model(tmp_path, name, objective):
    from click.testing import CliRunner

    from exprune_onnx.cli import main

    src, out = tmp_path / f"{name}.onnx", tmp_path / "out.onnx"
    model = refilled(name)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # a fixed batch of 1
    onnx.save(model, src)
    args = ["optimize", str(src), "-o", str(out)] + (["--objective", "flops"] if objective == "flops" else [])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    written = onnx.load(out)
    onnx.checker.check_model(written)
    assert written.graph.input[0] == model.graph.input[0]
    if any(n.domain == exprune_onnx.DOMAIN for n in written.graph.node):
        assert "top-1 agreement" in r.output or "max abs diff" in r.output  # the check ran
