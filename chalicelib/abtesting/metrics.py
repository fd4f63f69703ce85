"""Declared experiment metrics: proportions, means, ratios (delta method) and quantiles.

An experiment may declare up to :data:`MAX_METRICS` metrics, each ``primary``, ``secondary`` or
``guardrail``, over the named values its outcomes carry (``custom_metrics``) or the built-in ones
(``conversion_rate``, ``success_rate``, ``error_rate``, ``latency_ms``):

* ``proportion``: the mean of a 0/1 value (or a built-in rate); variance ``p (1 - p) / n``.
* ``mean``: the mean of a value; variance ``s^2 / n``. Optional ``cap_lower``/``cap_upper``
  winsorise each value at record time (heavy tails: one 1e6 order cannot swamp the mean).
* ``ratio``: ``sum numerator / sum denominator`` over outcomes carrying both (e.g. clicks per
  session, revenue per order). Units are outcomes, so numerator and denominator are correlated;
  the delta method gives ``Var(R) = (s_aa - 2 R s_ab + R^2 s_bb) / (n b^2)`` from exact sums
  ``n, sum a, sum b, sum a^2, sum b^2, sum a b`` (checked against a seeded bootstrap).
* ``quantile``: the ``q`` quantile of a positive value from a mergeable log-bucket histogram
  (1 % relative accuracy, :mod:`sketch`); its standard error from the distribution-free
  order-statistic interval ``ranks n q +- z sqrt(n q (1 - q))``, half its width over ``z``
  (coverage checked by simulation).

Each metric of each treatment is compared with the control by the analysis method (the
always-valid mSPRT by default, or a fixed-horizon z test), and the p-values of all declared
metrics and treatments are adjusted together by the declared correction (``holm`` or ``bh``,
:mod:`correction`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from statistics import NormalDist
from typing import Any

from chalicelib.abtesting import correction, sequential, sketch
from chalicelib.abtesting.models import (
    LOWER_IS_BETTER,
    RATE_METRICS,
    ExperimentMetrics,
    MetricSpec,
    SufficientStats,
)

__all__ = [
    "KINDS",
    "MAX_METRICS",
    "ROLES",
    "Estimate",
    "MetricComparison",
    "compare",
    "beside_primary",
    "compare_all",
    "estimate",
    "ratio_estimate",
    "quantile_estimate",
    "lower_is_better",
]

KINDS = ("proportion", "mean", "ratio", "quantile")
ROLES = ("primary", "secondary", "guardrail")
MAX_METRICS = 10
RATIO_LIMIT = 1e6
"""Largest ``|value|`` of a ratio's numerator or denominator (exact sums of squares)."""
_NORMAL = NormalDist()
_QUANTILE_Z = _NORMAL.inv_cdf(0.975)
RATIO_KINDS = ("n", "a", "b", "aa", "bb", "ab")
EXACT_BELOW = 5
"""A fixed comparison of proportions is Fisher's exact test when a 2x2 cell is expected to hold
fewer units (the textbook rule for the normal approximation)."""


def ratio_attribute(metric: str, kind: str) -> str:
    """Counter attribute of a ratio metric's sums: ``r:<metric>:<kind>``."""
    return f"r:{metric}:{kind}"


def quantile_attribute(metric: str, bucket: int) -> str:
    """Counter attribute of a quantile metric's histogram bucket: ``q:<metric>:<bucket>``."""
    return f"q:{metric}:{bucket}"


@dataclass(frozen=True)
class Estimate:
    """One arm's estimate of a metric and the variance of that estimate.

    Attributes:
        value: The estimate.
        variance: Its variance (``value``'s squared standard error).
        n: Units behind it.
    """

    value: float
    variance: float
    n: int


@dataclass(frozen=True)
class MetricComparison:
    """One declared metric, one treatment against the control.

    Attributes:
        metric_name: The metric.
        kind: proportion, mean, ratio or quantile.
        role: primary, secondary or guardrail.
        variant_id: The treatment.
        control: Control's estimate (``None`` without data).
        treatment: Treatment's estimate.
        difference: ``treatment - control``.
        relative_change: ``difference / |control|``.
        interval: Confidence interval (sequential: confidence sequence) of the difference at
            the unadjusted level.
        p_value: Raw p-value.
        adjusted_p_value: After the declared correction over all metrics and treatments.
        significant: ``adjusted_p_value < alpha``.
        direction: ``better``, ``worse`` or ``none`` (significant and which way).
        test: The test used.
    """

    metric_name: str
    kind: str
    role: str
    variant_id: str
    control: Estimate | None
    treatment: Estimate | None
    difference: float | None
    relative_change: float | None
    interval: tuple[float, float] | None
    p_value: float
    adjusted_p_value: float = 1.0
    significant: bool = False
    direction: str = "none"
    test: str = ""


def _from_stats(stats: SufficientStats, proportion: bool) -> Estimate | None:
    if stats.count < 2 or stats.mean is None or stats.variance is None:
        return None
    if proportion:
        p = stats.mean
        return Estimate(p, p * (1 - p) / stats.count, stats.count)
    return Estimate(stats.mean, stats.variance / stats.count, stats.count)


def ratio_estimate(sums: Mapping[str, Any], metric: str) -> Estimate | None:
    """``sum a / sum b`` and its delta-method variance from the exact sums of a ratio metric."""
    values = {k: Decimal(sums.get(ratio_attribute(metric, k), 0)) for k in RATIO_KINDS}
    n = int(values["n"])
    if n < 2 or values["b"] == 0:
        return None
    mean_a, mean_b = values["a"] / n, values["b"] / n
    s_aa = float((values["aa"] - values["a"] * mean_a) / (n - 1))
    s_bb = float((values["bb"] - values["b"] * mean_b) / (n - 1))
    s_ab = float((values["ab"] - values["a"] * mean_b) / (n - 1))
    ratio = float(values["a"] / values["b"])
    b = float(mean_b)
    variance = (s_aa - 2 * ratio * s_ab + ratio * ratio * s_bb) / (n * b * b)
    return Estimate(ratio, max(variance, 0.0), n)


def quantile_estimate(histogram: Mapping[int, int], q: float) -> Estimate | None:
    """The ``q`` quantile of a histogram and the variance from its order-statistic interval."""
    n = sum(int(c) for c in histogram.values())
    if n < 2:
        return None
    value = sketch.quantile(histogram, q)
    spread = _QUANTILE_Z * math.sqrt(n * q * (1 - q))
    low_rank = max(math.floor(n * q - spread), 0)
    high_rank = min(math.ceil(n * q + spread), n - 1)
    low = sketch.quantile(histogram, low_rank / (n - 1))
    high = sketch.quantile(histogram, high_rank / (n - 1))
    if value is None or low is None or high is None:
        return None
    se = (high - low) / (2 * _QUANTILE_Z)
    return Estimate(value, se * se, n)


def _quantile_histogram(metrics: ExperimentMetrics, spec: MetricSpec) -> dict[int, int]:
    source = spec.source or spec.name
    if source in {"latency_ms", "latency"}:
        return dict(metrics.latency_histogram)
    prefix = f"q:{spec.name}:"
    return {
        int(name[len(prefix) :]): int(count)
        for name, count in metrics.declared_sums.items()
        if name.startswith(prefix)
    }


def estimate(metrics: ExperimentMetrics, spec: MetricSpec) -> Estimate | None:
    """One arm's estimate of a declared metric (``None`` without enough data)."""
    source = spec.source or spec.name
    if spec.kind == "ratio":
        return ratio_estimate(metrics.declared_sums, spec.name)
    if spec.kind == "quantile":
        return quantile_estimate(_quantile_histogram(metrics, spec), spec.quantile or 0.5)
    if spec.kind == "proportion" and source in RATE_METRICS:
        successes, trials = metrics.proportion(source)
        if trials < 2:
            return None
        p = successes / trials
        return Estimate(p, p * (1 - p) / trials, trials)
    return _from_stats(metrics.continuous(source), spec.kind == "proportion")


def compare(
    spec: MetricSpec,
    variant_id: str,
    control: Estimate | None,
    treatment: Estimate | None,
    method: str = "sequential",
    alpha: float = 0.05,
    tuning: int = sequential.DEFAULT_TUNING,
) -> MetricComparison:
    """The raw comparison of one metric (the correction comes later, over all of them)."""
    empty = MetricComparison(spec.name, spec.kind, spec.role, variant_id, control, treatment,
                             None, None, None, 1.0, test="no_data")  # fmt: skip
    if control is None or treatment is None:
        return empty
    difference = treatment.value - control.value
    relative = difference / abs(control.value) if control.value else None
    variance = control.variance + treatment.variance
    if method == "sequential":
        stratum = sequential.Stratum(control.value, treatment.value, control.variance,
                                     treatment.variance, control.n, treatment.n)  # fmt: skip
        found = sequential.compare([stratum], alpha, tuning)
        if found is None:
            return empty
        return MetricComparison(spec.name, spec.kind, spec.role, variant_id, control, treatment,
                                difference, relative, found.interval, found.p_value,
                                test="sequential_z")  # fmt: skip
    if spec.kind == "proportion" and needs_exact_test(control, treatment):
        exact = fisher_exact_p(*_table(control, treatment))
        return MetricComparison(spec.name, spec.kind, spec.role, variant_id, control, treatment,
                                difference, relative, None, exact, test="fisher_exact")  # fmt: skip
    if variance <= 0:  # two constant arms: the z statistic is undefined, not infinite
        return MetricComparison(spec.name, spec.kind, spec.role, variant_id, control, treatment,
                                difference, relative, None, 1.0, test="zero_variance")  # fmt: skip
    se = math.sqrt(variance)
    p_value = math.erfc(abs(difference / se) / math.sqrt(2.0))
    half = _NORMAL.inv_cdf(1 - alpha / 2) * se
    interval = (difference - half, difference + half)
    return MetricComparison(spec.name, spec.kind, spec.role, variant_id, control, treatment,
                            difference, relative, interval, p_value, test="z")  # fmt: skip


def _table(control: Estimate, treatment: Estimate) -> tuple[int, int, int, int]:
    """``(control successes, control failures, treatment successes, treatment failures)``."""
    hits_c, hits_t = round(control.value * control.n), round(treatment.value * treatment.n)
    return hits_c, control.n - hits_c, hits_t, treatment.n - hits_t


def needs_exact_test(control: Estimate, treatment: Estimate) -> bool:
    """Whether a fixed comparison of two proportions uses Fisher's exact test instead of z:
    some cell of the 2x2 table is expected to hold fewer than :data:`EXACT_BELOW` units (under
    the pooled rate), which includes every table with a constant arm (zero variance)."""
    a, b, c, d = _table(control, treatment)
    total = a + b + c + d
    if total == 0:
        return False
    smallest = min(a + c, b + d) * min(control.n, treatment.n) / total
    return smallest < EXACT_BELOW or control.variance <= 0 or treatment.variance <= 0


def fisher_exact_p(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test of the table ``[[a, b], [c, d]]``: the
    hypergeometric probability of every table with the same margins that is at most as likely
    as the observed one (scipy's rule, with its relative tolerance of 1e-7).

    The probabilities rise to the mode and fall after it, so those tables are two tails: each
    is found by bisection and summed outwards until a term is below ``e^-50`` of the observed
    one, so a table of a billion units costs a few dozen terms, not a billion.
    """
    row, col, total = a + b, a + c, a + b + c + d
    low, high = max(0, col - (total - row)), min(row, col)
    base = math.lgamma(row + 1) + math.lgamma(total - row + 1) + math.lgamma(col + 1)
    base += math.lgamma(total - col + 1) - math.lgamma(total + 1)

    def log_pmf(x: int) -> float:
        return base - (math.lgamma(x + 1) + math.lgamma(row - x + 1) + math.lgamma(col - x + 1)
                       + math.lgamma(total - row - col + x + 1))  # fmt: skip

    mode = min(max((row + 1) * (col + 1) // (total + 2), low), high)
    limit = log_pmf(a) + math.log1p(1e-7)
    found = 0.0
    # left tail: [low, edge] rises, so bisect for the last x <= mode at most as likely
    edge = _last(low, mode, lambda x: log_pmf(x) <= limit)
    if edge is not None:
        found += _tail(log_pmf, edge, low - 1, -1, limit)
    start = _first(mode + 1, high, lambda x: log_pmf(x) <= limit)
    if start is not None:
        found += _tail(log_pmf, start, high + 1, 1, limit)
    return min(1.0, found)


def _last(low: int, high: int, ok: Any) -> int | None:
    """The largest ``x`` in ``[low, high]`` with ``ok(x)``, ``ok`` true up to a point."""
    if low > high or not ok(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if ok(middle) else (low, middle - 1)
    return low


def _first(low: int, high: int, ok: Any) -> int | None:
    """The smallest ``x`` in ``[low, high]`` with ``ok(x)``, ``ok`` true from a point on."""
    if low > high or not ok(high):
        return None
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if ok(middle) else (middle + 1, high)
    return low


def _tail(log_pmf: Any, start: int, stop: int, step: int, limit: float) -> float:
    """``sum exp(log_pmf(x))`` from ``start`` towards ``stop`` (exclusive) until negligible."""
    found = 0.0
    for x in range(start, stop, step):
        term = log_pmf(x)
        if term < limit - 50:
            break
        found += math.exp(term)
    return found


def lower_is_better(spec: MetricSpec) -> bool:
    """Whether a lower value of the declared metric is better (declared, else by its source)."""
    if spec.lower_is_better is not None:
        return spec.lower_is_better
    return (spec.source or spec.name) in LOWER_IS_BETTER


def beside_primary(specs: Sequence[MetricSpec], primary: str) -> list[MetricSpec]:
    """The declared metrics tested beside the primary metric.

    A declared metric named as the primary metric is the primary metric: creation refuses it,
    and for an experiment stored before that it is left out, so each metric is tested once.
    """
    return [spec for spec in specs if spec.name != primary]


def compare_all(
    specs: Sequence[MetricSpec],
    pairs: Mapping[str, tuple[ExperimentMetrics, ExperimentMetrics]],
    correction_method: str = "holm",
    method: str = "sequential",
    alpha: float = 0.05,
    tuning: int = sequential.DEFAULT_TUNING,
) -> list[MetricComparison]:
    """Every declared metric for every treatment, with p-values adjusted together.

    Args:
        specs: The declared metrics.
        pairs: ``{treatment_id: (control metrics, treatment metrics)}``.
        correction_method: ``holm``, ``bh`` or ``none``.
        method: ``sequential`` or ``fixed``.
        alpha: Family-wise (holm) or false-discovery (bh) level.
        tuning: The sequential test's tuning sample size.
    """
    raw = [
        compare(
            spec,
            variant_id,
            estimate(control, spec),
            estimate(treatment, spec),
            method,
            alpha,
            tuning,
        )  # fmt: skip
        for variant_id, (control, treatment) in pairs.items()
        for spec in specs
    ]
    adjusted = correction.adjust_tested(
        [item.p_value for item in raw], [item.test != "no_data" for item in raw], correction_method
    )
    found = []
    for item, p_adj in zip(raw, adjusted, strict=True):
        spec = next(s for s in specs if s.name == item.metric_name)
        significant = p_adj < alpha and item.difference is not None
        direction = "none"
        if significant:
            up = (item.difference or 0.0) > 0
            direction = "worse" if up == lower_is_better(spec) else "better"
        found.append(
            MetricComparison(**{**item.__dict__, "adjusted_p_value": p_adj,
                                "significant": significant, "direction": direction})
        )  # fmt: skip
    return found


def capped(spec: MetricSpec, value: float) -> float:
    """The value winsorised at the metric's declared caps."""
    if spec.cap_lower is not None and value < spec.cap_lower:
        return spec.cap_lower
    if spec.cap_upper is not None and value > spec.cap_upper:
        return spec.cap_upper
    return value


def increments(values: Mapping[str, float], spec: MetricSpec) -> dict[str, Decimal]:
    """The counter increments one outcome's named values add for a declared ratio (exact sums,
    6 decimals kept) or quantile (one histogram bucket); nothing for other kinds."""
    top, bottom = spec.numerator or "", spec.denominator or ""  # a ratio declares both
    if spec.kind == "ratio" and top in values and bottom in values:
        a = Decimal(str(round(float(values[top]), 6)))
        b = Decimal(str(round(float(values[bottom]), 6)))
        products = (Decimal(1), a, b, a * a, b * b, a * b)
        return {
            ratio_attribute(spec.name, k): v for k, v in zip(RATIO_KINDS, products, strict=True)
        }
    source = spec.source or spec.name
    if spec.kind == "quantile" and source in values:
        bucket = sketch.bucket_index(float(values[source]))
        return {quantile_attribute(spec.name, bucket): Decimal(1)}
    return {}
