"""Bayesian reading of a comparison: posteriors, chance to win, expected loss, credible intervals.

Beside the frequentist tests of :mod:`~chalicelib.abtesting.statistics` (GrowthBook shows the
same pair of engines). Each arm gets an independent posterior:

* **Proportions** (``conversion_rate``, ``success_rate``, ``error_rate``): ``Beta(alpha + x,
  beta + n - x)`` from a ``Beta(alpha, beta)`` prior (default ``Beta(1, 1)``, uniform).
* **Means** (latency, custom metrics): the Gaussian approximation of the arm's mean,
  ``N(mean, s^2 / n)`` with the sample variance ``s^2``; with a declared normal prior
  ``N(prior_mean, prior_sd^2)`` on each arm's mean it is the conjugate update (precision
  ``n / s^2 + 1 / prior_sd^2``), else the prior is flat.

From the two posteriors ``C`` (control) and ``T`` (treatment):

* ``chance_to_win``: ``P(T > C)`` (``P(T < C)`` for a metric where lower is better).
* ``expected_loss_*``: the expected amount by which choosing that arm is worse than the other,
  ``E[max(C - T, 0)]`` for the treatment and ``E[max(T - C, 0)]`` for the control (sides swapped
  when lower is better), in the metric's units; ``risk_*`` is the same divided by the control's
  posterior mean, the scale ``risk_threshold`` uses (0.0025 = 0.25 % of the control's value).
* ``relative_lift``: the posterior median of ``(T - C) / C`` and its equal-tailed credible
  interval, from ``P((T - C) / C <= r) = P(T - (1 + r) C <= 0)``.

Two normals have closed forms. For Beta posteriors each quantity is a one-dimensional integral
over the *narrower* posterior (substituting its quantile function, so the integrand is smooth
and bounded), by Gauss-Legendre quadrature; tests check it against a seeded Monte Carlo oracle
with 2 million draws. numpy and scipy are imported only inside the functions that use them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from chalicelib.abtesting.models import (
    LOWER_IS_BETTER,
    RATE_METRICS,
    BayesianPrior,
    ExperimentMetrics,
)

__all__ = [
    "BayesianResult",
    "BetaPosterior",
    "NormalPosterior",
    "compare",
    "compare_metrics",
    "posterior_of",
]

_NORMAL = NormalDist()
QUADRATURE_NODES = 1024
"""Gauss-Legendre nodes over the narrower posterior's quantiles."""
CREDIBLE_LEVEL = 0.95
# A control posterior with more than this mass at or below 0 has no relative lift.
SIGN_TOLERANCE = 1e-9


@dataclass(frozen=True)
class BetaPosterior:
    """``Beta(a, b)``: the posterior of a proportion."""

    a: float
    b: float

    @property
    def mean(self) -> float:
        """Posterior mean."""
        return self.a / (self.a + self.b)

    @property
    def sd(self) -> float:
        """Posterior standard deviation."""
        total = self.a + self.b
        return math.sqrt(self.a * self.b / (total * total * (total + 1)))

    def cdf(self, x):  # noqa: ANN001, ANN201 - numpy arrays in and out
        """``P(X <= x)`` (vectorised)."""
        import numpy as np
        from scipy import special

        return special.betainc(self.a, self.b, np.clip(x, 0.0, 1.0))

    def ppf(self, u):  # noqa: ANN001, ANN201
        """Quantile function (vectorised)."""
        from scipy import special

        return special.betaincinv(self.a, self.b, u)

    def lower_partial(self, x):  # noqa: ANN001, ANN201
        """``E[max(x - X, 0)] = x F(x) - mean F_{a+1,b}(x)`` (vectorised)."""
        import numpy as np
        from scipy import special

        clipped = np.clip(x, 0.0, 1.0)
        below = special.betainc(self.a + 1, self.b, clipped)
        inside = x * special.betainc(self.a, self.b, clipped) - self.mean * below
        return np.where(x >= 1.0, x - self.mean, inside)


@dataclass(frozen=True)
class NormalPosterior:
    """``N(mean, sd^2)``: the (approximate) posterior of a mean."""

    mean: float
    sd: float


Posterior = BetaPosterior | NormalPosterior


@dataclass(frozen=True)
class BayesianResult:
    """The Bayesian reading of one treatment against the control on one metric.

    Attributes:
        metric_name: The metric.
        model: ``beta_binomial`` or ``normal``.
        prior: The prior, in words.
        control_mean: Posterior mean of the control.
        treatment_mean: Posterior mean of the treatment.
        chance_to_win: Posterior probability that the treatment is better.
        expected_loss_treatment: ``E[loss]`` of choosing the treatment, metric units.
        expected_loss_control: ``E[loss]`` of keeping the control, metric units.
        risk_treatment: ``expected_loss_treatment / |control_mean|``.
        risk_control: ``expected_loss_control / |control_mean|``.
        relative_lift: Posterior median of ``(T - C) / C`` (``None`` when the control's
            posterior is not clear of 0).
        credible_interval: Equal-tailed interval of the relative lift at ``credible_level``.
        credible_level: 0.95.
        lower_is_better: Whether lower values win (error rate, latencies).
    """

    metric_name: str
    model: str
    prior: str
    control_mean: float
    treatment_mean: float
    chance_to_win: float
    expected_loss_treatment: float
    expected_loss_control: float
    risk_treatment: float | None
    risk_control: float | None
    relative_lift: float | None
    credible_interval: tuple[float, float] | None
    credible_level: float = CREDIBLE_LEVEL
    lower_is_better: bool = False


@functools.cache
def _legendre(count: int = QUADRATURE_NODES) -> tuple[Any, Any]:
    """Gauss-Legendre nodes and weights on (0, 1) (computed once)."""
    from scipy import special

    nodes, weights = special.roots_legendre(count)
    return (nodes + 1.0) / 2.0, weights / 2.0


@functools.lru_cache(maxsize=64)
def _quantiles(posterior: BetaPosterior) -> Any:
    """The posterior's quantiles at the quadrature nodes (reused by every integral)."""
    u, _ = _legendre()
    return posterior.ppf(u)


def _expect(posterior: BetaPosterior, function: Callable[[Any], Any]) -> float:
    """``E[function(X)]`` for ``X ~ posterior``: ``integral_0^1 function(Q(u)) du``."""
    import numpy as np

    _, w = _legendre()
    return float(np.dot(w, function(_quantiles(posterior))))


def _beta_prob_greater(c: BetaPosterior, t: BetaPosterior) -> float:
    """``P(T > C)``, integrating over the narrower posterior."""
    if t.sd <= c.sd:
        return _expect(t, c.cdf)
    return 1.0 - _expect(c, t.cdf)


def _beta_loss(c: BetaPosterior, t: BetaPosterior) -> float:
    """``E[max(C - T, 0)]``, integrating over the narrower posterior."""
    if c.sd <= t.sd:
        return _expect(c, t.lower_partial)
    # E[max(C - y, 0)] = E[C] - y + E[max(y - C, 0)]
    return _expect(t, lambda y: c.mean - y + c.lower_partial(y))


def _beta_lift_cdf(c: BetaPosterior, t: BetaPosterior, r: float) -> float:
    """``P((T - C) / C <= r) = P(T <= k C)`` with ``k = 1 + r`` (0 for ``k <= 0``)."""
    k = 1.0 + r
    if k <= 0:
        return 0.0
    if c.sd <= t.sd:
        return _expect(c, lambda x: t.cdf(k * x))
    return _expect(t, lambda y: 1.0 - c.cdf(y / k))


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _normal_loss(c: NormalPosterior, t: NormalPosterior) -> float:
    """``E[max(C - T, 0)]`` with ``C - T ~ N(m, s^2)``: ``m Phi(m/s) + s phi(m/s)``."""
    m = c.mean - t.mean
    s = math.hypot(c.sd, t.sd)
    if s == 0:
        return max(m, 0.0)
    z = m / s
    return m * _normal_cdf(z) + s * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def _normal_prob_greater(c: NormalPosterior, t: NormalPosterior) -> float:
    s = math.hypot(c.sd, t.sd)
    diff = t.mean - c.mean
    if s == 0:
        return 1.0 if diff > 0 else (0.5 if diff == 0 else 0.0)
    return _normal_cdf(diff / s)


def _normal_lift_cdf(c: NormalPosterior, t: NormalPosterior, r: float) -> float:
    """``P(T - k C <= 0)`` with ``k = 1 + r``: ``T - k C`` is normal (needs ``C > 0``)."""
    k = 1.0 + r
    s = math.hypot(t.sd, k * c.sd)
    m = t.mean - k * c.mean
    if s == 0:
        return 1.0 if m <= 0 else 0.0
    return _normal_cdf(-m / s)


def _prob_greater(c: Posterior, t: Posterior) -> float:
    if isinstance(c, BetaPosterior) and isinstance(t, BetaPosterior):
        return _beta_prob_greater(c, t)
    assert isinstance(c, NormalPosterior) and isinstance(t, NormalPosterior)
    return _normal_prob_greater(c, t)


def _loss(c: Posterior, t: Posterior) -> float:
    if isinstance(c, BetaPosterior) and isinstance(t, BetaPosterior):
        return _beta_loss(c, t)
    assert isinstance(c, NormalPosterior) and isinstance(t, NormalPosterior)
    return _normal_loss(c, t)


def _lift_cdf(c: Posterior, t: Posterior, r: float) -> float:
    if isinstance(c, BetaPosterior) and isinstance(t, BetaPosterior):
        return _beta_lift_cdf(c, t, r)
    assert isinstance(c, NormalPosterior) and isinstance(t, NormalPosterior)
    return _normal_lift_cdf(c, t, r)


def _clear_of_zero(c: Posterior) -> bool:
    """Whether the control's posterior puts (almost) no mass at or below 0."""
    if isinstance(c, BetaPosterior):
        return True
    if c.sd == 0:
        return c.mean > 0
    return _normal_cdf(-c.mean / c.sd) < SIGN_TOLERANCE


def lift_quantile(c: Posterior, t: Posterior, q: float) -> float:
    """The ``q`` quantile of the relative lift ``(T - C) / C`` (control clear of 0)."""
    from scipy import optimize

    scale = math.hypot(t.sd, c.sd) / abs(c.mean) if c.mean else 1.0
    guess = t.mean / c.mean - 1.0
    step = max(scale, 1e-12)
    low, high = guess - step, guess + step
    floor = -1.0 if isinstance(c, BetaPosterior) else -math.inf
    low = max(low, floor + 1e-15) if math.isfinite(floor) else low
    for _ in range(200):
        if _lift_cdf(c, t, low) <= q:
            break
        step *= 2
        low = max(guess - step, floor + 1e-15) if math.isfinite(floor) else guess - step
    for _ in range(200):
        if _lift_cdf(c, t, high) >= q:
            break
        step *= 2
        high = guess + step
    return float(optimize.brentq(lambda r: _lift_cdf(c, t, r) - q, low, high, xtol=1e-12))


def compare(
    control: Posterior,
    treatment: Posterior,
    metric_name: str = "",
    lower_is_better: bool = False,
    prior: str = "",
    level: float = CREDIBLE_LEVEL,
) -> BayesianResult:
    """Chance to win, expected loss (risk) and the relative lift's credible interval.

    Args:
        control: The control's posterior.
        treatment: The treatment's posterior (same family).
        metric_name: For the result.
        lower_is_better: Lower values win (the chance and losses take the other side).
        prior: The prior in words, for the result.
        level: Credible level of the interval.
    """
    greater = _prob_greater(control, treatment)
    loss_if_treatment = _loss(control, treatment)  # E[max(C - T, 0)]
    # E[max(T - C, 0)] = E[T - C] + E[max(C - T, 0)]
    loss_if_control = max(treatment.mean - control.mean + loss_if_treatment, 0.0)
    if lower_is_better:
        greater = 1.0 - greater
        loss_if_treatment, loss_if_control = loss_if_control, loss_if_treatment
    base = abs(control.mean)
    lift = interval = None
    if _clear_of_zero(control):
        tail = (1.0 - level) / 2
        lift = lift_quantile(control, treatment, 0.5)
        interval = (lift_quantile(control, treatment, tail),
                    lift_quantile(control, treatment, 1 - tail))  # fmt: skip
    model = "beta_binomial" if isinstance(control, BetaPosterior) else "normal"
    return BayesianResult(
        metric_name=metric_name,
        model=model,
        prior=prior,
        control_mean=control.mean,
        treatment_mean=treatment.mean,
        chance_to_win=min(max(greater, 0.0), 1.0),
        expected_loss_treatment=max(loss_if_treatment, 0.0),
        expected_loss_control=loss_if_control,
        risk_treatment=max(loss_if_treatment, 0.0) / base if base else None,
        risk_control=loss_if_control / base if base else None,
        relative_lift=lift,
        credible_interval=interval,
        credible_level=level,
        lower_is_better=lower_is_better,
    )


def describe_prior(prior: BayesianPrior, rate: bool) -> str:
    """The prior in words."""
    if rate:
        return f"Beta({prior.alpha:g}, {prior.beta:g}) on each arm's rate"
    if prior.mean is None or prior.sd is None:
        return "flat on each arm's mean (Gaussian approximation N(mean, s^2/n))"
    return f"N({prior.mean:g}, {prior.sd:g}^2) on each arm's mean (Gaussian approximation)"


def posterior_of(metrics: ExperimentMetrics, metric: str, prior: BayesianPrior) -> Posterior | None:
    """The posterior of one arm's metric (``None`` without enough data: no trials for a rate,
    fewer than 2 values or no spread for a mean without a proper prior)."""
    if metric in RATE_METRICS:
        successes, trials = metrics.proportion(metric)
        if trials <= 0:
            return None
        return BetaPosterior(prior.alpha + successes, prior.beta + trials - successes)
    if metric in {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}:
        return None
    stats = metrics.continuous(metric)
    if stats.count < 2 or stats.variance is None or stats.mean is None:
        return None
    precision_data = stats.count / stats.variance if stats.variance > 0 else math.inf
    if prior.mean is None or prior.sd is None:
        if not math.isfinite(precision_data):
            return NormalPosterior(stats.mean, 0.0)
        return NormalPosterior(stats.mean, math.sqrt(1.0 / precision_data))
    if not math.isfinite(precision_data):
        return NormalPosterior(stats.mean, 0.0)
    precision_prior = 1.0 / (prior.sd * prior.sd)
    precision = precision_data + precision_prior
    mean = (stats.mean * precision_data + prior.mean * precision_prior) / precision
    return NormalPosterior(mean, math.sqrt(1.0 / precision))


def compare_metrics(
    control: ExperimentMetrics,
    treatment: ExperimentMetrics,
    metric: str,
    prior: BayesianPrior | None = None,
    level: float = CREDIBLE_LEVEL,
) -> BayesianResult | None:
    """The Bayesian comparison of two arms' aggregated metrics (``None`` without data)."""
    prior = prior or BayesianPrior()
    c = posterior_of(control, metric, prior)
    t = posterior_of(treatment, metric, prior)
    if c is None or t is None:
        return None
    text = describe_prior(prior, metric in RATE_METRICS)
    return compare(c, t, metric, metric in LOWER_IS_BETTER, text, level)


def _units(metrics: ExperimentMetrics, metric: str) -> int:
    if metric in RATE_METRICS:
        return metrics.proportion(metric)[1]
    return metrics.continuous(metric).count


def compare_phases(
    pairs: Sequence[tuple[ExperimentMetrics, ExperimentMetrics]],
    metric: str,
    prior: BayesianPrior | None = None,
    level: float = CREDIBLE_LEVEL,
) -> BayesianResult | None:
    """The Bayesian reading stratified by allocation phase, like the frequentist test.

    Pooling the phases' counts compares arms whose traffic came from different periods in
    different proportions once the allocation changed (Simpson's paradox can reverse the
    result). With one phase this is :func:`compare_metrics`. With several, each arm's
    stratified value is ``sum_k w_k X_k`` over the phases where both arms have a posterior, with
    the frequentist test's weights ``w_k`` proportional to the effective size
    ``n_c n_t / (n_c + n_t)`` (summing to 1); the phases' posteriors are independent, so it is
    normal with mean ``sum w_k E[X_k]`` and variance ``sum w_k^2 Var[X_k]`` (each phase's Beta or
    normal posterior approximated by its first two moments), and the two arms are compared as
    normal posteriors (``model`` ``normal``; the prior text says it is stratified).
    """
    prior = prior or BayesianPrior()
    if len(pairs) == 1:
        return compare_metrics(pairs[0][0], pairs[0][1], metric, prior, level)
    strata: list[tuple[Posterior, Posterior, float]] = []
    for control, treatment in pairs:
        c, t = posterior_of(control, metric, prior), posterior_of(treatment, metric, prior)
        n_c, n_t = _units(control, metric), _units(treatment, metric)
        if c is not None and t is not None and n_c and n_t:
            strata.append((c, t, n_c * n_t / (n_c + n_t)))
    if not strata:
        return None
    if len(strata) == 1:
        c, t, _ = strata[0]
        text = describe_prior(prior, metric in RATE_METRICS)
        return compare(c, t, metric, metric in LOWER_IS_BETTER, text, level)
    total = sum(weight for _, _, weight in strata)
    control_mean = sum(c.mean * w / total for c, _, w in strata)
    treatment_mean = sum(t.mean * w / total for _, t, w in strata)
    control_sd = math.sqrt(sum((c.sd * w / total) ** 2 for c, _, w in strata))
    treatment_sd = math.sqrt(sum((t.sd * w / total) ** 2 for _, t, w in strata))
    arms = (
        NormalPosterior(control_mean, control_sd),
        NormalPosterior(treatment_mean, treatment_sd),
    )
    text = describe_prior(prior, metric in RATE_METRICS)
    text += f"; stratified over {len(strata)} allocation phases (weights n_c n_t / (n_c + n_t))"
    return compare(arms[0], arms[1], metric, metric in LOWER_IS_BETTER, text, level)
