"""tuning/pairs.py: two models timed side by side."""

import numpy as np
import pytest
from helpers import input_mlp, weight_model

import exprune_onnx
from exprune_onnx.io.data import Dataset, random_dataset
from exprune_onnx.tuning import pairs


def test_timing_gives_up_on_a_clearly_slower_rewrite():
    model = input_mlp(["N"])
    feeds = pairs.timing_feeds(random_dataset(model, 8, 0), 1)
    calls = []

    def always(a_ms, b_ms):
        calls.append((a_ms, b_ms))
        return True

    pairs.time_pair(model, model, feeds, 1, passes=20, give_up=always)
    assert len(calls) == 1  # checked once, after MIN_PASSES passes, then stopped
    calls.clear()
    pairs.time_pair(model, model, feeds, 1, passes=5, give_up=lambda a, b: calls.append(1) and False)
    assert len(calls) == 5 - pairs.MIN_PASSES + 1
    assert pairs.clearly_slower(1.0 + 2 * pairs.GIVE_UP, 1.0)
    assert not pairs.clearly_slower(1.0, 1.0)


def test_small_models_get_more_passes_within_the_budget():
    """About 0.4 s per model: hundreds of passes at 50 us a batch, at least 5 for a slow one."""
    assert pairs.passes_for(50e-6) == 1000 and pairs.passes_for(0.5e-3) == 100
    assert pairs.passes_for(1.0) == 5


def test_timing_feeds_have_the_asked_batch_and_come_from_the_indices():
    data = Dataset({"x": np.arange(10, dtype=np.float32).reshape(5, 2)}, None, "t")
    feeds = pairs.timing_feeds(data, 3, seed=1, indices=np.array([1, 3]))
    assert len(feeds) == pairs.FEEDS
    for f in feeds:
        assert f["x"].shape == (3, 2) and set(f["x"][:, 0]) <= {2.0, 6.0}
    with pytest.raises(exprune_onnx.errors.RuntimeCheckError):
        pairs.timing_feeds(data, 1, indices=np.array([], np.int64))


def test_the_objective_times_listed_weights_as_constants(monkeypatch):
    seen = []
    monkeypatch.setattr(pairs, "timing_session", lambda model, threads: seen.append(model))
    pairs.session(weight_model(8), 1)
    assert [i.name for i in seen[0].graph.input] == ["x"]


def test_time_pair_goes_round_pairs_of_sessions_alive_at_once(monkeypatch):
    """The latency objective's last comparison with the original goes round several pairs
    (a session's time can lean one way for its life: measure/timing.py)."""
    order = []

    class Recording:
        def __init__(self, name):
            self.name = name

        def run(self, _names, _feed):
            order.append(self.name)

    made = []

    def make(model, threads):
        made.append(f"{model.graph.name}{sum(m.startswith(model.graph.name) for m in made)}")
        return Recording(made[-1])

    monkeypatch.setattr(pairs, "session", make)
    one, two = weight_model(8), weight_model(8)
    one.graph.name, two.graph.name = "a", "b"
    feeds = [{"x": np.zeros((1, 3), np.float32)}] * 2
    pairs.time_pair(one, two, feeds, 1, passes=2, sessions=2)
    assert made == ["a0", "b0", "a1", "b1"]
    assert order[8:] == ["a0", "b0", "a1", "b1", "b0", "a0", "b1", "a1"]  # after warming each pair up


def test_a_settled_ratio_is_far_from_each_line_the_caller_reads_it_against():
    """Feeds of different cost (a zero-skipping op's, 10% apart) are no noise: run to run,
    a feed's ratio moves by the machine's noise only."""
    rng = np.random.default_rng(0)
    cost = np.tile(np.linspace(0.95, 1.05, 8), 4)  # four passes over 8 feeds

    def runs(scale, noise, by_pass=0.0):
        shift = np.repeat(by_pass * np.array([1, -1, 1, -1]), 8)  # noise that moves whole passes
        return list(scale * cost * np.exp(shift + noise * rng.standard_normal(cost.size)))

    dense = runs(1.0, 0.0)
    line = (0.99, 1.0)
    assert pairs.settled(runs(0.97, 0.002), dense, line, 8)  # 3% faster: known after 4 passes
    assert pairs.settled(runs(1.02, 0.002), dense, line, 8)  # 2% slower
    assert not pairs.settled(runs(0.99, 0.002), dense, line, 8)  # at a line itself
    assert not pairs.settled(runs(0.97, 0.05), dense, line, 8)  # 5% noise a run: not known yet
    assert not pairs.settled(runs(0.97, 0.001, by_pass=0.02), dense, line, 8)  # passes 4% apart
    # 0.4% slower: clear of the 1% line, not of the "faster or not" one.
    slower = runs(1.004, 0.0005)
    assert pairs.settled(slower, dense, (0.99,), 8) and not pairs.settled(slower, dense, line, 8)
    assert not pairs.settled(runs(0.5, 0.0)[:8], dense[:8], line, 8)  # one pass tells no noise
    assert not pairs.settled([0.999] * 16, [1.0] * 16, (1.0,), 8)  # identical runs: SE_FLOOR, not 0


def _recording_sessions(monkeypatch, seconds):
    """pairs.session replaced by sessions that log their runs; the clock advances by
    ``seconds[name]`` a run, so that time_pair's medians are scripted."""
    clock, order = [0.0], []

    class Recording:
        def __init__(self, name):
            self.name = name

        def run(self, _names, _feed):
            order.append(self.name)
            clock[0] += seconds[self.name]

    monkeypatch.setattr(pairs, "session", lambda model, threads: Recording(model.graph.name))
    monkeypatch.setattr(pairs.time, "perf_counter", lambda: clock[0])
    return order


def test_timing_stops_once_the_decision_is_settled_and_not_before(monkeypatch):
    one, two = weight_model(8), weight_model(8)
    one.graph.name, two.graph.name = "a", "b"
    feeds = [{"x": np.zeros((1, 3), np.float32)}] * pairs.FEEDS
    order = _recording_sessions(monkeypatch, {"a": 0.9e-3, "b": 1e-3})
    assert pairs.time_pair(one, two, feeds, 1, passes=10, settle_at=(0.99, 1.0)) == pytest.approx((0.9, 1.0))
    warm = 2 * pairs.WARM_RUNS
    assert len(order) == warm + 2 * pairs.MIN_PASSES * pairs.FEEDS  # settled at the first check
    order.clear()
    pairs.time_pair(one, two, feeds, 1, passes=10, settle_at=(0.9,))  # a ratio right at the line: all passes
    assert len(order) == warm + 2 * 10 * pairs.FEEDS
    order.clear()
    pairs.time_pair(one, two, feeds, 1, passes=10)  # nothing to decide: all passes
    assert len(order) == warm + 2 * 10 * pairs.FEEDS
    with pytest.raises(ValueError):  # a feed would meet one pair of sessions every pass
        pairs.time_pair(one, two, feeds, 1, passes=10, sessions=2, settle_at=(0.99,))


def test_each_session_warms_up_once_a_shape_and_at_least_twice():
    same = [{"x": np.zeros((1, 3), np.float32)} for _ in range(pairs.FEEDS)]
    assert len(pairs.warm_ups(same)) == pairs.WARM_RUNS
    mixed = same[:3] + [{"x": np.zeros((1, n), np.float32)} for n in (4, 5, 6)]
    warm = pairs.warm_ups(mixed)
    assert sorted(f["x"].shape[1] for f in warm) == [3, 4, 5, 6]  # one of each shape, more than WARM_RUNS
