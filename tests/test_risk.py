"""risk.py: exact binomial tails, Clopper-Pearson and Hoeffding-Bentkus, and the fixed-sequence walk.

The reference values were computed once with scipy 1.17.1 (a dev-only dependency) as
``scipy.stats.binom.cdf(k, n, p)``, ``scipy.stats.beta.ppf(C, k + 1, n - k)`` (the
one-sided Clopper-Pearson upper bound), and for Hoeffding-Bentkus
``min(1, exp(-n * kl(min(r, a), a)), e * binom.cdf(ceil(n * r), n, a))`` with kl the
Bernoulli KL divergence; the sample counts by a loop over n of ``binom.cdf(0, n, a) <= 1 - C``.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from exprune_onnx.tuning.risk import (
    Abandoned,
    RiskTest,
    binom_cdf,
    binomial_p_value,
    fixed_sequence,
    hoeffding_bentkus_p_value,
    pooled_bound,
    pooled_loss,
    pooled_samples_needed,
    samples_needed,
    upper_bound,
)

BINOM_CDF = [  # (k, n, p, scipy.stats.binom.cdf(k, n, p))
    (0, 2302, 0.001, 0.09994334856146572),
    (3, 5000, 0.001, 0.26488547585650707),
    (10, 1000, 0.02, 0.010236548159763267),
    (50, 100, 0.4, 0.9832383134968385),
    (7, 700, 0.01, 0.5987150897471628),
]
CLOPPER_PEARSON = [  # (losses, n, confidence, scipy.stats.beta.ppf(confidence, losses + 1, n - losses))
    (0, 2302, 0.9, 0.0009997540797958247),
    (3, 5000, 0.9, 0.001335664863646353),
    (10, 1000, 0.95, 0.016903175120562504),
    (1, 628, 0.9, 0.006179589074486634),
]
HOEFFDING_BENTKUS = [  # (mean loss, n, alpha, p-value as in the module docstring)
    (0.0005, 5000, 0.001, 0.46405250776265317),
    (0.002, 3000, 0.01, 2.89246423492534e-07),
    (0.05, 400, 0.1, 0.0005676079452857908),
]
NEEDED = [(0.001, 0.9, 2302), (0.01, 0.9, 230), (0.01, 0.95, 299)]  # (alpha, confidence, n)


@pytest.mark.parametrize("k, n, p, ref", BINOM_CDF)
def test_binomial_tail_matches_reference(k, n, p, ref):
    assert binom_cdf(k, n, p) == pytest.approx(ref, rel=1e-10)
    assert binomial_p_value(k, n, p) == binom_cdf(k, n, p)


def test_binomial_tail_edges():
    assert binom_cdf(-1, 10, 0.3) == 0.0
    assert binom_cdf(10, 10, 0.3) == 1.0
    assert binom_cdf(0, 10, 0.5) == pytest.approx(0.5 ** 10, rel=1e-12)
    assert binom_cdf(3, 10, 0.0) == 1.0 and binom_cdf(3, 10, 1.0) == 0.0
    with pytest.raises(ValueError):
        binom_cdf(1, 10, 1.5)


@pytest.mark.parametrize("losses, n, confidence, ref", CLOPPER_PEARSON)
def test_clopper_pearson_matches_reference(losses, n, confidence, ref):
    assert upper_bound(losses, n, confidence) == pytest.approx(ref, rel=1e-9)


def test_upper_bound_edges():
    assert upper_bound(3, 100, 0.0) == 0.03  # confidence 0: the point estimate
    assert upper_bound(100, 100, 0.9) == 1.0
    assert upper_bound(0, 0, 0.9) == 1.0


@pytest.mark.parametrize("mean, n, alpha, ref", HOEFFDING_BENTKUS)
def test_hoeffding_bentkus_matches_reference(mean, n, alpha, ref):
    assert hoeffding_bentkus_p_value(mean, n, alpha) == pytest.approx(ref, rel=1e-9)


def test_a_tiny_budget_needs_a_count_past_float_not_an_overflow():
    """(1 - a)^n <= delta for n = -ln(delta) / a once a is below float's resolution of 1 - a
    (a subnormal budget would overflow the float ratio); the message shortens the count."""
    from exprune_onnx.report.certificate import count_text as _count

    for alpha in (1e-17, 1e-200, 1e-322):
        n = samples_needed(alpha, 0.9)
        assert isinstance(n, int) and abs(n * Fraction(alpha) / Fraction(math.log(10)) - 1) < 1e-9
    assert _count(samples_needed(1e-322, 0.9)) == "about 2.33e322"  # 1e-322 is stored as 9.88e-323
    assert _count(2302) == "2302"


@pytest.mark.parametrize("alpha, confidence, n", NEEDED)
def test_samples_needed_matches_reference(alpha, confidence, n):
    assert samples_needed(alpha, confidence) == n
    assert RiskTest(n, alpha, confidence).passes(0)
    assert not RiskTest(n - 1, alpha, confidence).passes(0)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("n, alpha", [(5000, 0.001), (700, 0.01), (200, 0.1)])
def test_limit_is_the_last_total_that_passes(n, alpha, binary):
    test = RiskTest(n, alpha, 0.9, binary)
    limit = test.limit()
    assert limit >= 0 and test.passes(limit)
    assert not test.passes(limit + (1 if binary else 1e-6 * n))
    assert test.bound(limit) <= alpha + 1e-9
    assert RiskTest(10, 0.01, 0.9, binary).limit() == -1  # 10 samples cannot certify 1%


@pytest.mark.parametrize("binary", [True, False])
def test_a_budget_of_one_holds_whatever_is_lost(binary):
    """No risk exceeds 1: every total passes (Hoeffding-Bentkus gave p = 1, so --max-drop 1
    certified nothing on per-position losses while 0.99 certified every rung)."""
    test = RiskTest(50, 1.0, 0.9, binary)
    assert test.limit() == 50 and test.passes(50) and test.passes(0)
    assert hoeffding_bentkus_p_value(0.7, 50, 1.0) == 0.0 and samples_needed(1.0, 0.9) == 0
    assert RiskTest(50, 0.99, 0.9, binary).limit() < 50  # just under 1 is still a test


def test_walk_stops_at_the_first_failure_and_never_looks_further():
    asked = []

    def losses_of(i, limit):
        asked.append(i)
        return [0, 0, 9, 0][i]

    test = RiskTest(1000, 0.01, 0.9)  # limit 5 losses
    assert test.limit() == 5
    last, steps = fixed_sequence(4, losses_of, test)
    assert last == 1 and asked == [0, 1, 2]  # rung 3 would pass, but the walk ended at rung 2
    assert [s.passed for s in steps] == [True, True, False]
    assert steps[2].p_value > 0.1 >= steps[1].p_value


@pytest.mark.parametrize("binary", [True, False])
def test_walk_with_abandoned_rung_and_with_too_few_samples(binary):
    test = RiskTest(1000, 0.01, 0.9, binary)
    over = test.limit() + (1 if binary else 0.25)  # the running total when the rung was abandoned
    last, steps = fixed_sequence(3, lambda i, limit: Abandoned(over) if i == 1 else 0, test)
    assert last == 0 and steps[1].losses is None and not steps[1].passed
    # Its p-value is a lower bound, at the total counted so far: over 1 - confidence, a failure.
    assert steps[1].p_value == test.p_value(over) > 0.1
    asked = []
    last, steps = fixed_sequence(3, lambda i, limit: asked.append(i) or 0, RiskTest(100, 0.01, 0.9))
    assert last == -1 and steps == [] and asked == []  # 100 samples cannot certify 1%: no pass spent


def _simulated_walks(risks, n, alpha, confidence, reps, seed):
    """The true risk of the rung each of ``reps`` simulated testing sets certifies (0: none)."""
    rng = np.random.default_rng(seed)
    test = RiskTest(n, alpha, confidence)
    chosen = []
    for _ in range(reps):
        counts = rng.binomial(n, risks)
        last, _ = fixed_sequence(len(risks), lambda i, limit, counts=counts: int(counts[i]), test)
        chosen.append(risks[last] if last >= 0 else 0.0)
    return np.array(chosen)


def test_simulated_coverage_on_a_ladder_with_known_risks():
    """Rungs just over the budget are where a wrong procedure fails: the point estimate
    (confidence 0) lands over budget about half the time, the walk at 0.9 at most ~10%."""
    risks = np.array([0.002, 0.005, 0.0105, 0.011, 0.012, 0.015, 0.02])
    alpha, reps = 0.01, 2000
    over = np.mean(_simulated_walks(risks, 1000, alpha, 0.9, reps, seed=0) > alpha)
    # Over budget only when rung 2 (risk 0.0105 > alpha) passes: P <= P(Binomial(1000, 0.01) <= 5) = 0.066.
    assert over <= 0.1 + 3 * math.sqrt(0.1 * 0.9 / reps)
    point = np.mean(_simulated_walks(risks, 1000, alpha, 0.0, reps, seed=0) > alpha)
    assert point > 0.3, "the point estimate must go over budget often here, or this test cannot tell them apart"
    # And the walk is not vacuous: it certifies the rung at a fifth of the budget almost
    # always (P(Binomial(1000, 0.002) <= 5) = 0.98).
    assert np.mean(_simulated_walks(risks, 1000, alpha, 0.9, reps, seed=1) > 0) > 0.95


def test_pooled_loss_lies_in_0_1_and_is_the_share_when_every_position_is_labelled():
    lost, labelled = np.array([0, 3, 10, 0, 2]), np.array([10, 10, 10, 1, 4])
    z = pooled_loss(lost, labelled, 0.05, 10)
    assert (z >= 0).all() and (z <= 1).all()
    np.testing.assert_allclose(z[:3], lost[:3] / 10)


def test_pooled_bound_is_a_budget_the_pooled_test_passes_just_above_one_it_fails():
    lost, labelled, n, scale = 37, 9000, 400, 40

    def passes(alpha):
        mean = pooled_loss(lost, labelled, alpha, scale * n)
        return RiskTest(n, alpha, 0.9, binary=False).passes(mean * n)

    bound = pooled_bound(lost, labelled, n, scale, 0.9)
    assert lost / labelled < bound < 1 and passes(bound) and not passes(bound * 0.999)
    assert pooled_bound(lost, labelled, n, scale, 0.0) == lost / labelled
    assert pooled_bound(0, 0, n, scale, 0.9) == 1.0


def test_pooling_refuses_what_the_mean_of_shares_would_pass():
    """Short samples that lose nothing and long ones that lose 5%: the mean share is
    2.5%, but 4.9% of all labelled positions are lost, over a 4% budget."""
    n, scale, budget = 2000, 100, 0.04
    labelled = np.where(np.arange(n) % 2 == 0, 2, 100)
    lost = np.where(labelled == 100, 5, 0)
    test = RiskTest(n, budget, 0.9, binary=False)
    assert test.passes(float((lost / labelled).sum()))
    assert not test.passes(float(pooled_loss(lost, labelled, budget, scale).sum()))
    assert pooled_bound(lost.sum(), labelled.sum(), n, scale, 0.9) > budget


def test_pooled_samples_needed_with_part_of_the_positions_labelled():
    """No loss in n samples, half the positions labelled: the statistic's mean is half the
    budget, so certifying 1 point at 0.9 takes 1,369 samples, not 230 (a scan over n)."""
    assert pooled_samples_needed(0.01, 0.9, 1.0) == samples_needed(0.01, 0.9) == 230
    first = next(n for n in range(1, 5000) if hoeffding_bentkus_p_value(0.005, n, 0.01) <= 0.1)
    assert pooled_samples_needed(0.01, 0.9, 0.5) == first == 1369
    assert pooled_samples_needed(0.01, 0.0, 0.5) == 1 and pooled_samples_needed(1.0, 0.9, 0.5) == 0


def test_pooled_test_holds_its_confidence_where_long_samples_lose_more():
    """H0 true at the boundary: short samples (5 labelled positions) lose nothing, long
    ones (50) lose 5.5%, so 5% of all labelled positions are lost, the budget. The pooled
    test certifies in at most 1 - C of the draws; the mean of shares (2.75%) nearly always."""
    rng = np.random.default_rng(0)
    n, scale, budget, confidence = 400, 50, 0.05, 0.9
    labelled = np.where(np.arange(n) % 2 == 0, 5, 50)
    test = RiskTest(n, budget, confidence, binary=False)
    pooled = shares = 0
    for _ in range(300):
        lost = rng.binomial(labelled, np.where(labelled == 50, 0.055, 0.0))
        pooled += test.passes(float(pooled_loss(lost, labelled, budget, scale).sum()))
        shares += test.passes(float((lost / labelled).sum()))
    assert pooled / 300 <= 1 - confidence and shares / 300 > 0.9
