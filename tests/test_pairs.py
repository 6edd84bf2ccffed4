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
