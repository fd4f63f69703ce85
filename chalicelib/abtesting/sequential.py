"""Always-valid inference: the mixture sequential probability ratio test (mSPRT).

Every decision the service takes on its own (the analysis read at any time, the monitor's canary
judge) uses this test, so its error rate holds however often the numbers are looked at.

The estimate ``d`` of a difference (treatment - control) is approximately ``N(delta, V)``. The
normal-mixture likelihood ratio of ``delta = theta0`` against a mixture ``delta ~ N(theta0,
tau^2)`` is (Robbins 1970; Johari, Koomen, Pekelis & Walsh 2017, "Always valid inference")::

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2)))

Under ``delta = theta0`` it is a martingale with mean 1, so by Ville's inequality
``P(exists n: Lambda_n >= 1 / alpha) <= alpha``. Hence:

* the always-valid p-value ``p_n = min(1, 1 / Lambda_n)``: ``P(p_T <= alpha) <= alpha`` at any
  stopping time ``T``, however many looks came before;
* the confidence sequence (the values of ``theta0`` not rejected), half-width
  ``sqrt(V (V + tau^2) / tau^2 * (2 log(1 / alpha) + log((V + tau^2) / V)))``; ``0`` lies outside
  it exactly when ``p < alpha``, so the interval and the test never disagree.

The mixing variance is tuned as GrowthBook does (its "sequential testing tuning parameter", the
sample size ``N*`` at which the interval is tightest): ``tau^2 = V* c(alpha)`` with
``c(alpha) = -2 log(alpha) + log(1 - 2 log(alpha))`` and ``V* = V n / N*`` the variance the
estimate will have at ``N*`` requests per arm. Written with the per-request standard deviation
``sigma`` and ``rho^2 = tau^2 / sigma^2``, the half-width above is GrowthBook's published
asymptotic confidence sequence (Waudby-Smith et al. 2023, "Time-uniform central limit theory and
asymptotic confidence sequences")::

    sigma * sqrt(2 (N rho^2 + 1) / (N^2 rho^2) * log(sqrt(N rho^2 + 1) / alpha))

``tests/unit/test_ab_sequential.py`` checks the two forms against each other and a value worked
out by hand. Everything here is pure Python (``math`` only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

DEFAULT_TUNING = 5000
"""Requests per arm at which the confidence sequence is tightest (GrowthBook's default)."""

_NORMAL = NormalDist()


def tuning_constant(alpha: float) -> float:
    """``c(alpha) = -2 log(alpha) + log(1 - 2 log(alpha))``: ``tau^2 / V*`` that minimises the
    half-width at the tuning sample size."""
    log_inverse = -2.0 * math.log(alpha)
    return log_inverse + math.log(1.0 + log_inverse)


def effective_size(n_control: float, n_treatment: float) -> float:
    """Harmonic mean of the arm sizes: ``V`` of a difference scales as ``1 / effective_size``."""
    if n_control <= 0 or n_treatment <= 0:
        return 0.0
    return 2.0 / (1.0 / n_control + 1.0 / n_treatment)


def variance_ratio(n: float, alpha: float, tuning: float) -> float:
    """``r = V / tau^2 = N* / (c(alpha) n)`` for an estimate from ``n`` (effective) requests."""
    return tuning / (tuning_constant(alpha) * n)


def boundary(n: float, alpha: float, tuning: float = DEFAULT_TUNING) -> float:
    """The confidence sequence's half-width in standard errors after ``n`` requests per arm.

    ``|d - theta0| / sqrt(V)`` must exceed this for ``theta0`` to be rejected. It is about 3 at
    the tuning size for ``alpha = 0.05`` (a fixed-horizon test needs 1.96 once).
    """
    r = variance_ratio(n, alpha, tuning)
    return math.sqrt((1.0 + r) * (2.0 * math.log(1.0 / alpha) + math.log(1.0 + 1.0 / r)))


def log_likelihood_ratio(z: float, n: float, alpha: float, tuning: float) -> float:
    """``log Lambda`` for a standardised difference ``z = (d - theta0) / sqrt(V)``."""
    r = variance_ratio(n, alpha, tuning)
    return 0.5 * math.log(r / (1.0 + r)) + z * z / (2.0 * (1.0 + r))


@dataclass(frozen=True)
class SequentialResult:
    """An always-valid comparison of treatment with control.

    Attributes:
        estimate: The difference ``treatment - control`` (or the tested contrast).
        standard_error: ``sqrt(V)``.
        z: ``(estimate - null) / standard_error``.
        p_value: Always-valid p-value of ``difference == null`` (two-sided).
        interval: Confidence sequence of the difference at level ``1 - alpha``.
        alpha: The level used.
        n: Effective requests per arm the variance corresponds to.
        tuning: ``N*`` of the mixture.
        null: The hypothesised difference ``theta0``.
    """

    estimate: float
    standard_error: float
    z: float
    p_value: float
    interval: tuple[float, float]
    alpha: float
    n: float
    tuning: float
    null: float = 0.0

    @property
    def rejects(self) -> bool:
        """Whether ``null`` lies outside the confidence sequence (equivalently ``p < alpha``)."""
        low, high = self.interval
        return not low <= self.null <= high


def mixture_test(
    estimate: float,
    variance: float,
    n: float,
    alpha: float = 0.05,
    tuning: float = DEFAULT_TUNING,
    null: float = 0.0,
) -> SequentialResult:
    """The mSPRT of ``difference == null`` and the confidence sequence of the difference.

    Args:
        estimate: The observed difference.
        variance: Its estimated variance ``V`` (> 0, else no evidence either way).
        n: Effective requests per arm behind ``V`` (see :func:`effective_size`).
        alpha: Level; the interval holds at every look with probability ``1 - alpha``.
        tuning: ``N*``, requests per arm at which the interval is tightest.
        null: ``theta0``.
    """
    if not (variance > 0 and n > 0 and math.isfinite(variance)):
        unbounded = (-math.inf, math.inf)
        return SequentialResult(estimate, math.nan, 0.0, 1.0, unbounded, alpha, n, tuning, null)
    se = math.sqrt(variance)
    z = (estimate - null) / se
    log_ratio = log_likelihood_ratio(z, n, alpha, tuning)
    p_value = 1.0 if log_ratio <= 0 else math.exp(-log_ratio)
    half = boundary(n, alpha, tuning) * se
    return SequentialResult(
        estimate, se, z, p_value, (estimate - half, estimate + half), alpha, n, tuning, null
    )


@dataclass(frozen=True)
class Stratum:
    """One stratum (allocation phase) of a two-arm comparison.

    Attributes:
        estimate_control: Control's rate or mean in the stratum.
        estimate_treatment: Treatment's rate or mean.
        variance_control: Variance of the control's estimate (``p (1 - p) / n`` or ``s^2 / n``).
        variance_treatment: Variance of the treatment's estimate.
        n_control: Control requests in the stratum.
        n_treatment: Treatment requests in the stratum.
    """

    estimate_control: float
    estimate_treatment: float
    variance_control: float
    variance_treatment: float
    n_control: float
    n_treatment: float

    @property
    def weight(self) -> float:
        """The stratum's weight: its effective size (0 when an arm has no data)."""
        return effective_size(self.n_control, self.n_treatment)


@dataclass(frozen=True)
class Pooled:
    """Strata combined into one contrast.

    Attributes:
        control: Weighted control estimate.
        treatment: Weighted treatment estimate.
        variance: Variance of ``treatment - scale * control``.
        n: Effective requests per arm (sum of the strata's effective sizes).
    """

    control: float
    treatment: float
    variance: float
    n: float


def pool(strata: Sequence[Stratum], scale: float = 1.0) -> Pooled | None:
    """Weights strata by their effective size (no Simpson's paradox across allocation phases).

    The contrast is ``treatment - scale * control`` (``scale = 1 + tolerance`` tests "worse by
    more than a relative tolerance"). Returns ``None`` when no stratum has data in both arms.
    """
    used = [s for s in strata if s.weight > 0]
    total = sum(s.weight for s in used)
    if not used or total <= 0:
        return None
    shares = [s.weight / total for s in used]
    control = sum(w * s.estimate_control for w, s in zip(shares, used, strict=True))
    treatment = sum(w * s.estimate_treatment for w, s in zip(shares, used, strict=True))
    variance = sum(
        w * w * (s.variance_treatment + scale * scale * s.variance_control)
        for w, s in zip(shares, used, strict=True)
    )
    return Pooled(control, treatment, variance, total)


def proportion_stratum(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int
) -> Stratum:
    """A stratum of a rate. Variances use ``(x + 1) / (n + 2)`` so that an arm without events
    still has a positive variance (zero events in 100 is not certainty of a zero rate)."""

    def rate(x: int, n: int) -> float:
        return x / n if n else 0.0

    def variance(x: int, n: int) -> float:
        if not n:
            return 0.0
        smoothed = (x + 1) / (n + 2)
        return smoothed * (1 - smoothed) / n

    return Stratum(
        rate(x_control, n_control),
        rate(x_treatment, n_treatment),
        variance(x_control, n_control),
        variance(x_treatment, n_treatment),
        n_control,
        n_treatment,
    )


def compare(
    strata: Sequence[Stratum],
    alpha: float = 0.05,
    tuning: float = DEFAULT_TUNING,
    scale: float = 1.0,
) -> SequentialResult | None:
    """The mSPRT of ``treatment - scale * control == 0`` over (possibly several) strata."""
    pooled = pool(strata, scale)
    if pooled is None:
        return None
    return mixture_test(
        pooled.treatment - scale * pooled.control, pooled.variance, pooled.n, alpha, tuning
    )


def sequential_sample_size(
    effect: float,
    sd_control: float,
    sd_treatment: float,
    alpha: float = 0.05,
    power: float = 0.8,
    tuning: float = DEFAULT_TUNING,
    limit: float = 1e12,
) -> int:
    """Requests per arm at which the mSPRT has crossed with probability ``power`` at least.

    The chance of having crossed by ``n`` is at least the chance of being outside the boundary
    at ``n``: ``Phi(|effect| / se(n) - boundary(n)) >= power``; the smallest such ``n`` is found
    by bisection. Returns ``limit`` rounded up when it is never reached below it.
    """
    if effect == 0:
        return math.ceil(limit)
    z_power = _NORMAL.inv_cdf(power)
    spread = sd_control**2 + sd_treatment**2
    # The fixed-horizon size is a lower bound: start the bracket there.
    fixed = spread * (_NORMAL.inv_cdf(1 - alpha / 2) + z_power) ** 2 / effect**2

    def enough(n: float) -> bool:
        return abs(effect) / math.sqrt(spread / n) - boundary(n, alpha, tuning) >= z_power

    low, high = 1.0, max(2.0, math.floor(fixed))
    if enough(high):
        high = 2.0
    else:
        low = high
        high = min(2 * high, limit)
    while not enough(high):
        if high >= limit:
            return math.ceil(limit)
        low, high = high, min(high * 2, limit)
    while high - low > 1:
        middle = math.floor((low + high) / 2)
        low, high = (low, middle) if enough(middle) else (middle, high)
    return math.ceil(high)


def wilson_interval(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson's score interval of a proportion (as ``statsmodels``' ``proportion_confint``)."""
    return _wilson(successes, trials, _NORMAL.inv_cdf(1 - alpha / 2))


def _wilson(successes: int, trials: int, z: float) -> tuple[float, float]:
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (max(0.0, center - half), min(1.0, center + half))


def newcomb_interval(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int, alpha: float = 0.05
) -> tuple[float, float]:
    """Newcomb's hybrid score interval (1998, method 10) of ``p_treatment - p_control``.

    Matches ``statsmodels.stats.proportion.confint_proportions_2indep(x_t, n_t, x_c, n_c,
    compare="diff", method="newcomb")``. Unlike the Wald interval it never collapses to a point
    (0/100 vs 0/100 gives about ±3.7 %) and covers at its nominal level at small counts.
    """
    z = _NORMAL.inv_cdf(1 - alpha / 2)
    return newcomb_interval_z(x_control, n_control, x_treatment, n_treatment, z)


def newcomb_interval_z(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int, z: float
) -> tuple[float, float]:
    """:func:`newcomb_interval` for a normal quantile ``z`` instead of a level."""
    p_t, p_c = x_treatment / n_treatment, x_control / n_control
    low_t, high_t = _wilson(x_treatment, n_treatment, z)
    low_c, high_c = _wilson(x_control, n_control, z)
    diff = p_t - p_c
    lower = diff - math.sqrt((p_t - low_t) ** 2 + (high_c - p_c) ** 2)
    upper = diff + math.sqrt((high_t - p_t) ** 2 + (p_c - low_c) ** 2)
    return (lower, upper)
