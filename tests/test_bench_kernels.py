"""bench/kernels.py on tiny layers: rows well formed, survivor fractions as requested."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import kernels  # noqa: E402

TINY = [kernels.Case("gemm", 128, 256, batch=4), kernels.Case("conv", 32, 32, batch=1, size=8)]


@pytest.mark.parametrize("case", TINY, ids=lambda c: c.label)
def test_rows_are_well_formed(case):
    rows = kernels.measure_case(case, fractions=(0.3, 1.0), runs=3)
    assert [r.requested for r in rows] == [0.3, 1.0]
    elements = case.batch * case.out * max(case.size, 1) ** 2
    for r in rows:
        assert r.n == case.n and r.k == 32 * case.n // 128  # k "auto": min(32, n // 4)
        assert r.batch == case.batch and r.runs == 3
        # The threshold comes from the op's own estimate, so only float32 rounding of
        # the cut may move an element or two across it.
        assert abs(r.survivors - r.requested) <= 2 / elements, (r.survivors, r.requested)
        assert r.max_error < 1e-4
        assert r.dense_ms > 0 and r.optimized_ms > 0
        assert r.dense_iqr_ms[0] <= r.dense_ms <= r.dense_iqr_ms[1]
        assert r.speedup == pytest.approx(r.dense_ms / r.optimized_ms)
        assert r.ideal == pytest.approx(1 / (r.k / r.n + (1 - r.k / r.n) * r.survivors))
        assert r.pct_ideal == pytest.approx(100 * r.speedup / r.ideal)
    low, full = rows
    assert math.isfinite(low.threshold) and full.threshold == float("-inf") and full.survivors == 1.0
    assert full.ideal == pytest.approx(1.0)
    record = json.loads(json.dumps([r.as_dict() for r in rows]))
    assert record[1]["threshold"] is None and record[0]["survivors"] == low.survivors


def test_threshold_keeps_the_requested_fraction():
    est = np.random.default_rng(3).normal(size=(7, 143))
    for fraction in (0.1, 0.3, 0.5, 0.99):
        t = kernels.threshold_for(est, fraction)
        assert t == float(np.float32(t))  # the op reads a float32 attribute
        assert abs((est >= t).mean() - fraction) <= 1 / est.size
    assert kernels.threshold_for(est, 1.0) == float("-inf")
    with pytest.raises(ValueError):
        kernels.threshold_for(est, 0.0)


@pytest.mark.parametrize("case", [kernels.Case("gemm", 128, 256, 4, inputs="images"),
                                  kernels.Case("conv", 32, 32, 1, 28, "images")], ids=lambda c: c.label)
def test_image_inputs(case):
    """Hidden activations of real images: non-negative, different per row, seeded. Their
    ties (a uniform background) may keep a few more outputs than asked, never fewer."""
    _, feeds = kernels.build(case)
    x = feeds["x"]
    assert x.dtype == np.float32 and x.min() >= 0 and (x == 0).any() and (x > 0).any()
    assert x.shape == ((4, 128) if case.kind == "gemm" else (1, 32, 28, 28))
    np.testing.assert_array_equal(x, kernels.build(case)[1]["x"])
    if case.kind == "gemm":
        assert not np.array_equal(x[0], x[1])
    rows = kernels.measure_case(case, fractions=(0.3,), runs=3)
    elements = case.batch * case.out * max(case.size, 1) ** 2
    assert rows[0].inputs == "images" and rows[0].max_error < 1e-4
    assert 0.3 - 2 / elements <= rows[0].survivors < 0.5
    with pytest.raises(ValueError, match="multiple of 28"):
        kernels.build(kernels.Case("conv", 32, 32, 1, 30, "images"))


def test_case_filter_and_bad_arguments(capsys):
    assert [c.label for c in kernels.select(kernels.CASES, ["conv"])] == [
        "conv64x56x56/b1", "conv128x28x28/b1", "conv64x56x56/b1/images", "conv128x28x28/b1/images"]
    assert len(kernels.select(kernels.CASES, ["b32"])) == 3
    for argv in (["--cases", "nope"], ["--survivors", "0,0.5"], ["--survivors", "x"], ["--threads", "0"]):
        with pytest.raises(SystemExit) as exc:
            kernels.parse_args(argv)
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_profile_names_every_node():
    case = TINY[0]
    model, feeds = kernels.build(case)
    optimized = kernels.compile_layer(model, 0.0)
    times = kernels.node_times(model, optimized, feeds, runs=3)
    assert [key.split()[0] for key in times["optimized"]] == [n.op_type for n in optimized.graph.node]
    assert all(ms > 0 for nodes in times.values() for ms in nodes.values())
    assert times["dense"]  # onnxruntime fuses Gemm + Relu; whatever it runs is listed


def test_sparse_conv_table_quick(tmp_path, capsys):
    """`python -m bench.kernels --cases sparse_conv --quick`: rows for every tiny layer,
    input kind and zero fraction, zero fractions as requested, outputs equal to Conv."""
    from bench import sparse_conv_kernels as sc

    kinds = "iid,photo"
    try:
        import skimage  # noqa: F401
    except ImportError:
        kinds = "iid"
    out = tmp_path / "sc.json"
    assert kernels.main(["--cases", "sparse_conv", "--quick", "--repeats", "2", "--inputs", kinds,
                         "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert len(rows) == len(sc.QUICK_LAYERS) * len(kinds.split(",")) * len(sc.QUICK_ZEROS)
    for r in rows:
        assert abs(r["zeros"] - r["zeros_requested"]) < 0.05, r
        assert r["max_error"] < 1e-5 and r["conv_ms"] > 0 and r["op_ms"] > 0
        assert len(r["ratios"]) == 2 and r["ratio_min"] <= r["ratio"] <= r["ratio_max"]
    assert data["meta"]["threads"] == 1 and data["meta"]["batch"] == 1
    from bench.write import commit, cpu_name

    assert data["meta"]["commit"] == commit()  # the figures name the code they ran
    assert data["meta"]["cpu"] == cpu_name() != ""  # and the CPU: ratios move with it
    assert "ratio" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sc.parse_args(["--cases", "sparse_conv", "--inputs", "noise"])


def test_sparse_conv_table_1d_quick(tmp_path):
    """--conv1d: the same table over 1-D layers, i.i.d. zeros, outputs equal to Conv1d."""
    from bench import sparse_conv_kernels as sc

    out = tmp_path / "sc1.json"
    assert kernels.main(["--cases", "sparse_conv", "--quick", "--conv1d", "--repeats", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["layer"] for r in data["rows"]] == [sc.label(layer) for layer in sc.QUICK_LAYERS_1D
                                                  for _ in sc.QUICK_ZEROS]
    assert all(r["inputs"] == "iid" and r["max_error"] < 1e-5 and r["target"] is None for r in data["rows"])
    assert data["meta"]["conv1d"] and "(1-D)" in data["rows"][0]["layer"]
    import os

    assert data["meta"]["affinity"] == sorted(os.sched_getaffinity(0))  # a pinned run names its core
    with pytest.raises(SystemExit):
        sc.parse_args(["--cases", "sparse_conv", "--conv1d", "--inputs", "photo"])
