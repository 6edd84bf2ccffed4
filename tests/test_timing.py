"""measure/timing.py: what the latency objective times."""

import numpy as np
import onnx
from helpers import weight_model

from exprune_onnx.measure.timing import constant_weights


def test_timing_copy_makes_listed_initializers_constant():
    model = weight_model(8)
    timed = constant_weights(model)
    assert [i.name for i in timed.graph.input] == ["x"]
    assert [i.name for i in model.graph.input] == ["x", "W"]  # the model itself is left as it is
    onnx.checker.check_model(timed)


def test_ir3_initializers_are_constants_already():
    """Before IR 4 every initializer must be listed, and onnxruntime folds them all."""
    model = weight_model(3)
    assert constant_weights(model) is model
    plain = weight_model(8)
    del plain.graph.input[1:]
    assert constant_weights(plain) is plain


def test_a_wide_spread_of_runs_is_said_to_make_the_ratio_rough():
    from exprune_onnx.measure.timing import Latency

    steady = Latency(1, 1, 30, (1.0, 1.05, 1.1), (0.5, 0.52, 0.55))
    assert steady.spread_note() == ""
    busy = Latency(1, 1, 30, (1.0, 1.05, 1.1), (2.06, 3.0, 6.16))
    assert busy.spread_note().startswith("the optimised model's runs spread from 2.060 to 6.160 ms (25th-75th "
                                         "percentile) about a median of 3.000")


def test_measure_takes_its_batches_in_turn(monkeypatch):
    """evaluate timed the data's first batch only, 30 times: a sparse op's time is the
    input's, so it now takes the objective's batches in turn, both models on each."""
    from exprune_onnx.measure import timing

    seen = []

    class Recording:
        def __init__(self, name):
            self.name = name

        def run(self, _names, feed):
            seen.append((self.name, int(feed["x"][0, 0])))

    monkeypatch.setattr(timing, "session", lambda model, threads: Recording(model.graph.name))
    one, two = weight_model(8), weight_model(8)
    one.graph.name, two.graph.name = "a", "b"
    feeds = [{"x": np.full((2, 3), i, np.float32)} for i in range(3)]
    lat = timing.measure(one, two, feeds, runs=5, warmup=1)
    timed = seen[2 * 3:]  # after a warm-up run of each batch
    assert [v for _n, v in seen[:6]] == [0, 0, 1, 1, 2, 2]
    # Each model runs first in every other pair (the second of two identical ones was faster).
    assert timed == [(n, i % 3) for i in range(5) for n in (("a", "b") if i % 2 == 0 else ("b", "a"))]
    assert lat.batch == 2 and lat.runs == 5
    seen.clear()
    timing.measure(one, two, feeds[0], runs=2, warmup=1)  # one batch, as before
    assert seen == [("a", 0), ("b", 0), ("a", 0), ("b", 0), ("b", 0), ("a", 0)]


def test_measure_goes_on_past_its_runs_for_its_minimum_time(monkeypatch):
    """Two identical 0.05 ms models timed 1.11 apart on 30 runs each (3 ms of timing)."""
    from exprune_onnx.measure import timing

    class Fast:
        def run(self, _names, _feed):
            pass

    monkeypatch.setattr(timing, "session", lambda model, threads: Fast())
    model = weight_model(8)
    feed = {"x": np.zeros((1, 3), np.float32)}
    assert timing.measure(model, model, feed, runs=4).runs == 4
    clock = iter(range(10**6))  # one second a call: runs until the minimum has gone by
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(clock)))
    lat = timing.measure(model, model, feed, runs=4, min_seconds=30.0)
    assert 4 < lat.runs < 30  # on past 4, and stopped once 30 "seconds" had gone by
