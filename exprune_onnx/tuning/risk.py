"""Risk control with a stated confidence: exact binomial tests and the fixed-sequence walk.

Learn-then-Test (Angelopoulos et al. 2021, arXiv 2110.01052) turns "the optimised model
loses at most ``alpha`` on the data distribution" into a hypothesis test per candidate:
H0: risk > alpha. With ``n`` independent testing samples and a loss in {0, 1}, the
observed loss count is Binomial(n, risk), so the exact p-value is the binomial lower
tail ``P(Binomial(n, alpha) <= losses)``. Candidates ordered from conservative to
aggressive are tested in that order and the walk stops at the first that fails
(fixed-sequence testing: the family-wise error stays at ``1 - confidence`` without a
multiplicity correction). Everything is computed here in log space with math.lgamma:
the runtime has no scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable


def _check(n: int, alpha: float) -> None:
    if n < 0:
        raise ValueError(f"sample count must be >= 0, got {n}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"risk level must be in [0, 1], got {alpha}")


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed in log space (exact up to float rounding)."""
    _check(n, p)
    if k < 0:
        return 0.0
    if k >= n or p == 0:
        return 1.0
    if p == 1:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    lead = math.lgamma(n + 1)
    terms = [lead - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def binomial_p_value(losses: int, n: int, alpha: float) -> float:
    """Exact p-value of H0 "risk > alpha" after ``losses`` losses in ``n`` samples."""
    if alpha >= 1:
        return 0.0  # no risk exceeds 1: a budget of 100% holds whatever was lost
    return binom_cdf(losses, n, alpha)


def upper_bound(losses: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound: the true risk is below it with probability
    ``confidence``; the largest p with P(Binomial(n, p) <= losses) >= 1 - confidence.
    At confidence 0 it is the point estimate losses / n."""
    if n == 0:
        return 1.0
    if confidence == 0 or losses >= n:
        return losses / n if confidence == 0 else 1.0
    delta = 1.0 - confidence
    lo, hi = losses / n, 1.0  # the cdf falls with p: bisect where it crosses delta
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if binom_cdf(losses, n, mid) >= delta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(hi, 1e-300):
            break
    return hi


def hoeffding_bentkus_p_value(mean_loss: float, n: int, alpha: float) -> float:
    """Hoeffding-Bentkus p-value of H0 "risk > alpha" for a loss bounded in [0, 1] with
    sample mean ``mean_loss`` (Learn then Test, Proposition 3; Bates et al. 2021)."""
    _check(n, alpha)
    if alpha >= 1:
        return 0.0  # no risk exceeds 1 (it said 1.0, and --max-drop 1 certified nothing)
    if n == 0:
        return 1.0
    if alpha <= 0:
        return 0.0 if mean_loss < 0 else 1.0
    mu = min(mean_loss, alpha)
    hoeffding = math.exp(-n * _kl(mu, alpha))
    bentkus = math.e * binom_cdf(math.ceil(n * mean_loss - 1e-12), n, alpha)
    return min(1.0, hoeffding, bentkus)


def pooled_loss(lost, labelled, alpha: float, scale: int):
    """Each sample's loss for H0 "pooled risk > alpha", where the pooled risk is
    E[lost] / E[labelled] (positions lost over labelled positions, as accuracy over all
    positions counts them) and no sample has more than ``scale`` labelled positions.

    ``alpha + (lost - alpha * labelled) / scale`` lies in [0, 1], and its mean exceeds
    alpha exactly when E[lost] > alpha * E[labelled]: Hoeffding-Bentkus on it tests the
    pooled risk. With every position labelled it is each sample's share lost."""
    return alpha + (lost - alpha * labelled) / scale


def pooled_bound(lost: float, labelled: float, n: int, scale: int, confidence: float) -> float:
    """An upper bound on the pooled risk at ``confidence`` from totals over ``n`` samples: an
    alpha whose test on pooled_loss passes, found by bisection (at confidence 0, lost /
    labelled). The gap between alpha and the statistic's mean grows with alpha, but the
    Bentkus term moves in steps, so a slightly smaller alpha may pass too: a safe bound."""
    if n == 0 or labelled <= 0:
        return 1.0
    if confidence == 0:
        return lost / labelled

    def passes(alpha: float) -> bool:
        mean = pooled_loss(lost, labelled, alpha, scale * n)
        return hoeffding_bentkus_p_value(min(max(mean, 0.0), 1.0), n, alpha) <= 1.0 - confidence

    lo, hi = lost / labelled, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    return hi


def pooled_samples_needed(alpha: float, confidence: float, fill: float) -> int:
    """About the fewest testing samples at which pooled_loss can certify ``alpha`` with no
    loss at all, when a ``fill`` share of the positions is labelled: the statistic's mean
    is then alpha * (1 - fill), not 0. Up to about (1 / fill)^2 times samples_needed."""
    if confidence == 0 or fill >= 1:
        return samples_needed(alpha, confidence)
    if alpha >= 1:
        return 0
    mean, delta = alpha * (1.0 - max(fill, 1e-9)), 1.0 - confidence
    hi = max(1, math.ceil(math.log(1.0 / delta) / _kl(mean, alpha)))  # Hoeffding's term alone passes here
    if hi * alpha > 1e6:  # the Bentkus term's sum would be long; it gains little that far out
        return hi
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if hoeffding_bentkus_p_value(mean, mid, alpha) <= delta else (mid + 1, hi)
    return lo


def _kl(a: float, b: float) -> float:
    """Bernoulli Kullback-Leibler divergence kl(a || b), with 0 log 0 = 0."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def samples_needed(alpha: float, confidence: float) -> int:
    """The fewest testing samples at which ``alpha`` can be certified at all: zero losses
    in n samples give p = (1 - alpha)^n, which must reach 1 - confidence."""
    if confidence == 0:
        return 1
    if alpha <= 0:
        raise ValueError("a zero risk level can never be certified from samples")
    if alpha >= 1:
        return 0
    delta = 1.0 - confidence
    ratio = math.log(delta) / math.log1p(-alpha)
    if not ratio < 2.0**53:  # past float's integers (a budget like 1e-300 points): ln(1 - a) = -a there
        return math.ceil(Fraction(-math.log(delta)) / Fraction(alpha))
    n = max(0, math.ceil(ratio) - 1)
    while binom_cdf(0, n, alpha) > delta:  # the ratio above rounds: settle it exactly
        n += 1
    return n


@dataclass(frozen=True)
class RiskTest:
    """H0 "risk > alpha" on ``n`` testing samples at ``confidence``.

    ``binary``: every loss is 0 or 1 and the exact binomial p-value applies; otherwise the
    losses are in [0, 1] (a share of positions per sample) and Hoeffding-Bentkus applies.
    At confidence 0 there is no test: the point estimate mean <= alpha decides (p 0 or 1).
    """
    n: int
    alpha: float
    confidence: float
    binary: bool = True

    def p_value(self, total: float) -> float:
        """The p-value after losses summing to ``total``."""
        if self.confidence == 0:
            return 0.0 if total <= self.alpha * self.n + 1e-9 else 1.0
        if self.binary:
            return binomial_p_value(int(round(total)), self.n, self.alpha)
        return hoeffding_bentkus_p_value(total / self.n if self.n else 1.0, self.n, self.alpha)

    def passes(self, total: float) -> bool:
        return self.n > 0 and self.p_value(total) <= 1.0 - self.confidence

    def limit(self) -> float:
        """The largest loss total that still passes (-1: none does, not even 0).

        The p-value rises with the total, so a candidate can be abandoned mid-pass as
        soon as its running total exceeds this.
        """
        if not self.passes(0):
            return -1.0
        if self.binary:
            lo, hi = 0, self.n  # the last integer total that passes
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if self.passes(mid) else (lo, mid - 1)
            return float(lo)
        lo, hi = 0.0, float(self.n)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.passes(mid) else (lo, mid)
        return lo

    def bound(self, total: float) -> float:
        """An upper bound on the risk at this confidence: Clopper-Pearson for binary losses,
        else an alpha whose Hoeffding-Bentkus test passes, by bisection (the smallest but for
        the steps of the Bentkus term, so on the safe side)."""
        if self.n == 0:
            return 1.0
        if self.binary or self.confidence == 0:
            return upper_bound(int(round(total)), self.n, self.confidence) if self.binary else total / self.n
        lo, hi = total / self.n, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            ok = hoeffding_bentkus_p_value(total / self.n, self.n, mid) <= 1.0 - self.confidence
            lo, hi = (lo, mid) if ok else (mid, hi)
        return hi


@dataclass
class Step:
    """One candidate's test: its loss total (None: abandoned once over the limit)."""
    losses: float | None
    p_value: float  # when abandoned, a lower bound on it (at the total so far), over 1 - confidence
    passed: bool


@dataclass(frozen=True)
class Abandoned:
    """A candidate's losses, counted until their running total passed the limit."""
    so_far: float  # the total then: the whole is at least this


def fixed_sequence(count: int, losses_of: Callable[[int, float], float | Abandoned],
                   test: RiskTest) -> tuple[int, list[Step]]:
    """Walk candidates 0..count-1 (conservative first) while each passes ``test``.

    ``losses_of(i, limit)`` returns candidate i's loss total on the testing samples, or
    Abandoned once its running total exceeds ``limit`` (the candidate fails anyway).
    Returns the index of the last candidate that passed (-1: none) and the steps taken.
    """
    limit = test.limit()
    steps: list[Step] = []
    last = -1
    for i in range(count):
        if limit < 0:
            break  # not even zero losses would pass: do not spend a pass
        found = losses_of(i, limit)
        if isinstance(found, Abandoned):  # the p-value only grows with the losses not counted
            steps.append(Step(None, test.p_value(found.so_far), False))
            break
        passed = found <= limit + 1e-9 and test.passes(found)
        steps.append(Step(found, test.p_value(found), passed))
        if not passed:
            break
        last = i
    return last, steps
