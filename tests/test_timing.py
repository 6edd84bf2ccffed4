"""measure/timing.py: what the latency objective times."""

import numpy as np
import onnx
import pytest
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


class _Timed:
    """A session whose run moves a fake clock by its own time: each session keeps one time
    for its life, as a real one did where its memory landed."""

    def __init__(self, clock, ms, name):
        self.clock, self.ms, self.name = clock, ms, name

    def run(self, _names, _feed):
        self.clock.append(self.clock[-1] + self.ms / 1e3)
        self.clock.order.append(self.name)


class _Clock(list):
    order: list


def test_measure_goes_round_pairs_of_sessions_alive_at_once(monkeypatch):
    """Six sessions of one model with a 79 MB weight took 4.2-5.2 ms, each the same in every
    sweep (a VM): one pair decided the ratio (a model against its own copy: 0.92-1.19). The
    pairs, all made before any run (a session made after another is freed takes its memory),
    each give a ratio, and ratios that disagree say the figure is rough."""
    from exprune_onnx.measure import timing

    clock = _Clock([0.0])
    clock.order = []
    made = []
    times = {"a": [1.0, 1.0, 1.0], "b": [1.0, 1.1, 0.96]}

    def make(model, threads):
        name = model.graph.name
        k = sum(m == name for m in made)
        made.append(name)
        return _Timed(clock, times[name][k], f"{name}{k}")

    monkeypatch.setattr(timing, "session", make)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[-1])
    one, two = weight_model(8), weight_model(8)
    one.graph.name, two.graph.name = "a", "b"
    lat = timing.measure(one, two, {"x": np.zeros((1, 3), np.float32)}, runs=12, warmup=1, sessions=3)
    assert made == ["a", "b"] * 3 and lat.runs == 12
    timed = clock.order[6:]  # after one warm-up run of each session
    assert timed[:12] == ["a0", "b0", "a1", "b1", "a2", "b2", "b0", "a0", "b1", "a1", "b2", "a2"]
    assert lat.pair_ratios == pytest.approx((1.0, 1.1, 0.96))
    assert lat.spread_note().startswith("the ratio went from 0.960 to 1.100 over 3 pairs of sessions")
    made.clear()
    assert timing.measure(one, two, {"x": np.zeros((1, 3), np.float32)}, runs=4, warmup=1).pair_ratios == ()


def test_pairs_of_sessions_close_together_are_steady():
    from exprune_onnx.measure.timing import Latency

    steady = Latency(1, 1, 30, (1.0, 1.05, 1.1), (0.9, 0.95, 1.0), (0.99, 1.0, 1.02))
    assert steady.spread_note() == ""


def test_as_many_pairs_of_sessions_as_half_the_memory_left_holds(monkeypatch):
    from exprune_onnx.io import memory_room
    from exprune_onnx.measure import timing
    from exprune_onnx.measure.timing import session_pairs

    model = weight_model(8)
    pair = 2 * 2 * model.ByteSize()
    monkeypatch.setattr(memory_room, "available_bytes", lambda: 10**12)
    assert session_pairs(model, model, 3) == 3
    monkeypatch.setattr(memory_room, "available_bytes", lambda: 2 * pair + 1)
    assert session_pairs(model, model, 3) == 2  # one more pair fits in half of it
    monkeypatch.setattr(memory_room, "available_bytes", lambda: pair)
    assert session_pairs(model, model, 3) == 1
    monkeypatch.setattr(memory_room, "available_bytes", lambda: None)  # not Linux: as asked
    assert session_pairs(model, model, 3) == 3
    # However much memory is left, the extra pairs of a big model take at most EXTRA_BYTES.
    monkeypatch.setattr(memory_room, "available_bytes", lambda: 10**12)
    monkeypatch.setattr(timing, "EXTRA_BYTES", pair)
    assert session_pairs(model, model, 3) == 2
