"""CUPED: variance reduction with a pre-experiment covariate (Deng, Xu, Kohavi & Walker 2013).

An outcome may carry ``covariate``, the unit's pre-experiment value ``x`` of the metric (or of
anything correlated with it). For outcomes that carry one and a value ``y`` of the primary
metric, the counters keep ``n, sum x, sum x^2, sum y, sum y^2, sum x y`` per arm (added exactly
by DynamoDB, in the same counter update as the rest: no extra write).

From those sums, per comparison of a treatment with the control:

* ``theta = W_xy / W_xx``, the slope of ``y`` on ``x`` pooled within the two arms (``W`` are
  the within-arm centred sums added over both arms);
* the adjusted effect ``(mean_y_t - mean_y_c) - theta (mean_x_t - mean_x_c)``;
* its standard error ``sqrt(s^2 (1/n_c + 1/n_t + (mean_x_t - mean_x_c)^2 / W_xx))`` with
  ``s^2 = (W_yy - W_xy^2 / W_xx) / (n_c + n_t - 3)``; the t test on ``n_c + n_t - 3`` degrees of
  freedom.

That is exactly the ordinary least squares fit of ``y`` on an intercept, the treatment
indicator and the centred covariate (statsmodels' ``OLS``; tested to 1e-9), so the estimate is
unbiased whatever the covariate is, as long as it was measured before the experiment.
``variance_reduction`` is ``1 - SE_adjusted^2 / SE_unadjusted^2`` against the same regression
without the covariate; it is about ``rho^2``, the squared within-arm correlation of ``x`` and
``y``, so the sample size needed for the same power falls by the factor ``1 - rho^2``.

Moments are computed in Decimal at :data:`~chalicelib.abtesting.aggregate.PRECISION` digits from
the exact stored sums, so nothing cancels; scipy (the t distribution) is imported lazily.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chalicelib.abtesting.models import CupedSums, Outcome

__all__ = [
    "ATTRIBUTES",
    "LIMIT",
    "CupedResult",
    "analyze",
    "outcome_sums",
    "response_value",
    "sums_from_counters",
]

LIMIT = 1e6
"""Largest ``|covariate|`` (and ``|y|`` of an outcome with a covariate): keeps the stored sums
within DynamoDB's 38 significant digits."""
DECIMALS = 6
ATTRIBUTES = ("cv:n", "cv:x", "cv:xx", "cv:y", "cv:yy", "cv:xy")
MINIMUM_UNITS = 3
_CONTEXT = decimal.Context(prec=100)


def response_value(outcome: Outcome, metric: str) -> float | None:
    """The value ``y`` of ``metric`` that one outcome contributes (``None`` when it has none,
    or the metric is a percentile)."""
    if metric == "conversion_rate":
        return None if outcome.converted is None else float(outcome.converted)
    if metric == "success_rate":
        return float(outcome.success)
    if metric == "error_rate":
        return float(not outcome.success)
    if metric in {"latency_ms", "latency"}:
        return float(outcome.latency_ms)
    if metric.startswith("latency_p"):
        return None
    value = outcome.custom_metrics.get(metric)
    return None if value is None else float(value)


def _exact(value: float) -> Decimal:
    return Decimal(str(round(float(value), DECIMALS)))


def outcome_sums(x: float, y: float) -> dict[str, Decimal]:
    """The counter increments of one outcome with covariate ``x`` and value ``y`` (both rounded
    to 6 decimals, as stored)."""
    dx, dy = _exact(x), _exact(y)
    c = _CONTEXT
    values = (Decimal(1), dx, c.multiply(dx, dx), dy, c.multiply(dy, dy), c.multiply(dx, dy))
    return dict(zip(ATTRIBUTES, values, strict=True))


def sums_from_counters(sums: Mapping[str, Any]) -> CupedSums:
    """The CUPED sums among a variant's merged counters (zeros when there are none)."""
    return CupedSums(*(Decimal(sums.get(name, 0)) for name in ATTRIBUTES))


@dataclass(frozen=True)
class CupedResult:
    """The CUPED-adjusted comparison of a treatment with the control.

    Attributes:
        metric_name: The metric (``y``).
        units_control: Control outcomes with a covariate and a value.
        units_treatment: Treatment outcomes with both.
        theta: Slope of ``y`` on the covariate, pooled within arms.
        correlation: Within-arm correlation of covariate and ``y``.
        unadjusted_effect: ``mean_y_t - mean_y_c`` over those outcomes.
        unadjusted_standard_error: Its standard error (pooled variance).
        effect: The adjusted difference ``treatment - control``.
        standard_error: Its standard error.
        variance_reduction: ``1 - standard_error^2 / unadjusted_standard_error^2``.
        statistic: ``effect / standard_error``.
        p_value: Two-sided t test on ``degrees_of_freedom``.
        confidence_interval: At the analysis' confidence level.
        degrees_of_freedom: ``n_c + n_t - 3``.
    """

    metric_name: str
    units_control: int
    units_treatment: int
    theta: float
    correlation: float
    unadjusted_effect: float
    unadjusted_standard_error: float
    effect: float
    standard_error: float
    variance_reduction: float
    statistic: float
    p_value: float
    confidence_interval: tuple[float, float]
    degrees_of_freedom: int


@dataclass(frozen=True)
class _Arm:
    n: Decimal
    mean_x: Decimal
    mean_y: Decimal
    sxx: Decimal
    syy: Decimal
    sxy: Decimal


def _arm(sums: CupedSums) -> _Arm:
    c = _CONTEXT
    n = sums.n
    mean_x, mean_y = c.divide(sums.sx, n), c.divide(sums.sy, n)
    return _Arm(
        n, mean_x, mean_y,
        c.subtract(sums.sxx, c.multiply(sums.sx, mean_x)),
        c.subtract(sums.syy, c.multiply(sums.sy, mean_y)),
        c.subtract(sums.sxy, c.multiply(sums.sx, mean_y)),
    )  # fmt: skip


def _t_test(effect: float, se: float, dof: int, level: float) -> tuple[float, float, float]:
    from scipy import stats

    if se == 0:
        return (0.0 if effect == 0 else math.copysign(math.inf, effect)), float(effect == 0), 0.0
    statistic = effect / se
    p_value = float(2 * stats.t.sf(abs(statistic), dof))
    return statistic, p_value, float(stats.t.ppf(1 - (1 - level) / 2, dof)) * se


def analyze(
    control: CupedSums, treatment: CupedSums, metric: str = "", level: float = 0.95
) -> CupedResult | None:
    """The CUPED comparison, or ``None`` with fewer than 3 units per arm or a constant
    covariate (within arms)."""
    if control.n < MINIMUM_UNITS or treatment.n < MINIMUM_UNITS:
        return None
    c_arm, t_arm = _arm(control), _arm(treatment)
    c = _CONTEXT
    w_xx, w_yy, w_xy = (c.add(getattr(c_arm, k), getattr(t_arm, k)) for k in ("sxx", "syy", "sxy"))
    if w_xx <= 0:
        return None
    theta = c.divide(w_xy, w_xx)
    dof = int(control.n + treatment.n) - 3
    inverse_n = c.add(c.divide(1, control.n), c.divide(1, treatment.n))
    gap_x = c.subtract(t_arm.mean_x, c_arm.mean_x)
    gap_y = c.subtract(t_arm.mean_y, c_arm.mean_y)
    effect = c.subtract(gap_y, c.multiply(theta, gap_x))
    residual = max(c.subtract(w_yy, c.multiply(theta, w_xy)), Decimal(0))
    variance = c.multiply(
        c.divide(residual, dof), c.add(inverse_n, c.divide(c.multiply(gap_x, gap_x), w_xx))
    )
    plain_variance = c.multiply(c.divide(w_yy, dof + 1), inverse_n)
    se, plain_se = math.sqrt(float(variance)), math.sqrt(float(plain_variance))
    statistic, p_value, half = _t_test(float(effect), se, dof, level)
    correlation = float(w_xy) / math.sqrt(float(w_xx) * float(w_yy)) if w_yy > 0 else 0.0
    reduction = 1.0 - float(variance) / float(plain_variance) if plain_variance > 0 else 0.0
    return CupedResult(
        metric_name=metric,
        units_control=int(control.n),
        units_treatment=int(treatment.n),
        theta=float(theta),
        correlation=correlation,
        unadjusted_effect=float(gap_y),
        unadjusted_standard_error=plain_se,
        effect=float(effect),
        standard_error=se,
        variance_reduction=reduction,
        statistic=statistic,
        p_value=p_value,
        confidence_interval=(float(effect) - half, float(effect) + half),
        degrees_of_freedom=dof,
    )
