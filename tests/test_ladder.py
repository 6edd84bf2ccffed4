"""ladder.py: the search's walk over loss shares, on a scripted trial (no model run)."""

from exprune_onnx.tuning.ladder import CERTIFIED, LADDER, REFINE_RUNGS, explore, reach
from exprune_onnx.tuning.search import Trial

FITS = LADDER[4]  # the scripted budget: every layer's share at most this


def scripted_trial(log):
    """A trial that saves more the higher each share, within budget while no share is over FITS."""

    def trial(shares):
        floats = [s for s in shares.values() if isinstance(s, float)]
        t = Trial(dict(shares), max(floats, default=0.0), sum(LADDER.index(s) + 1 for s in floats) / 100,
                  max(floats, default=0.0) <= FITS)
        log.append(t)
        return t

    return trial


def _explore(leave_out=None, layers=("a", "b")):
    log = []
    start = Trial(dict.fromkeys(layers), 0.0, 0.0, True)
    best = explore(scripted_trial(log), start, [], {"a": 2, "b": 1}, True, False, leave_out)
    return best, log


def test_reach_is_the_refinement_above_the_common_share_or_above_the_gentlest_rung():
    shares = {"a": LADDER[3], "b": None, "c": LADDER[-1]}
    assert reach(shares, ["a", "b", "c"]) == {"a": LADDER[3 + REFINE_RUNGS], "b": LADDER[REFINE_RUNGS],
                                               "c": LADDER[-1]}
    assert reach(shares, ["a"]) == {"a": LADDER[3 + REFINE_RUNGS]}


def test_no_layer_climbs_past_its_reach():
    """reach() is a bound only if the walk never goes higher: each layer's highest share over
    every trial after the climb is at most its reach."""
    best, log = _explore()
    climbed = {"a": FITS, "b": FITS}
    assert best.shares == climbed
    bound = reach(climbed, ["a", "b"])
    assert all(s is None or LADDER.index(s) <= LADDER.index(bound[k]) for t in log for k, s in t.shares.items())


def test_layers_left_out_are_left_alone_from_then_on():
    asked = []

    def leave_out(shares):
        asked.append(shares)
        return {"b"}

    best, log = _explore(leave_out)
    assert asked == [reach({"a": FITS, "b": FITS}, ["a", "b"])]
    assert best.shares == {"a": FITS, "b": None} and best.feasible
    after = log[next(i for i, t in enumerate(log) if t.shares == {"a": FITS, "b": None}):]
    assert all(t.shares["b"] is None for t in after)
    assert len(after) == 2  # b's share taken away, then a's one rung up, over budget


def test_nothing_left_out_walks_as_before():
    plain, plain_log = _explore()
    asked, asked_log = _explore(lambda shares: set())
    assert asked.shares == plain.shares and [t.shares for t in asked_log] == [t.shares for t in plain_log]


def test_all_left_out_after_a_failed_climb_admits_no_layer():
    """Where even the gentlest common share is over budget, each layer would be admitted
    alone; a layer left out is not."""
    log = []
    start = Trial({"a": None, "b": None}, 0.0, 0.0, True)

    def trial(shares):
        t = Trial(dict(shares), 1.0, 0.5, False)  # every rewrite over budget
        log.append(t)
        return t

    best = explore(trial, start, [], {"a": 2, "b": 1}, True, False, lambda shares: {"a", "b"})
    assert best is start and len(log) == 2  # the climb's two misses only


def test_a_set_over_budget_without_the_layers_left_out_is_climbed_again():
    """Pruning one layer can win answers back: without b, a's climbed share was over budget,
    and the walk restarted from nothing, admitting a one rung at a time (a review)."""
    log = []

    def trial(shares):
        a, b = shares["a"], shares["b"]
        feasible = (a is None or LADDER.index(a) <= (4 if b is not None else 3)) and (b is None or b <= FITS)
        t = Trial(dict(shares), 0.0, sum(LADDER.index(x) + 1 for x in (a, b) if x is not None) / 100, feasible)
        log.append(t)
        return t

    start = Trial({"a": None, "b": None}, 0.0, 0.0, True)
    best = explore(trial, start, [], {"a": 2, "b": 1}, True, False, lambda shares: {"b"})
    assert best.shares == {"a": LADDER[3], "b": None}  # one at a time from nothing stopped at LADDER[2]


def test_the_certified_rule_is_tried_on_layers_left_out_too():
    """The op timed at reach is the threshold rule's; the Certified rule's is another."""
    log = []
    start = Trial({"a": None, "b": None}, 0.0, 0.0, True)
    explore(scripted_trial(log), start, [], {"a": 2, "b": 1}, True, True, lambda shares: {"b"})
    assert any(t.shares["b"] == CERTIFIED for t in log)
