"""The canary judge: is the canary worse than the control, with evidence that survives any number
of checks?

Each monitor check compares every treatment (canary) with the control, using only allocation
phases in which both had traffic, stratified by phase (so a base rate that moves between ramp steps
cannot fake a difference). For each criterion an always-valid test (the mSPRT of
:mod:`~chalicelib.abtesting.sequential`) gives a confidence sequence of a *contrast* that is
positive when the canary is worse than allowed:

* **error rate**: ``error_rate(canary) - (1 + tolerance) * error_rate(control)``;
* **latency percentile** (a test on the mergeable histogram): with ``Q`` the control's percentile
  (e.g. p95), ``share of canary requests above (1 + tolerance) Q`` minus ``share of control
  requests above Q``. If the canary's percentile is within the tolerance, the first share is at
  most ``1 - q``, which is the second;
* **opt-in absolute caps**: ``error_rate(canary) - cap``, and the share of canary requests above
  the latency cap minus ``1 - q``.

A criterion **fails** when the whole confidence sequence is above 0 (the lower bound is positive:
evidence the canary is worse), **passes** when it is at or below 0 (evidence it is not), and is
**inconclusive** otherwise, or while either arm has fewer than the minimum requests. A check
fails if any criterion fails, passes if all pass, else it is inconclusive. The monitor rolls back
after ``failure_limit`` consecutive failed checks (Argo Rollouts' analysis semantics).

The same test decides guardrails in the analysis (:func:`worse_than`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from chalicelib.abtesting import sketch
from chalicelib.abtesting.aggregate import merge_metrics
from chalicelib.abtesting.models import (
    LOWER_IS_BETTER,
    RATE_METRICS,
    ExperimentMetrics,
    RollbackPolicy,
)
from chalicelib.abtesting.sequential import (
    SequentialResult,
    Stratum,
    compare,
    mixture_test,
    proportion_stratum,
)

Pair = tuple[ExperimentMetrics, ExperimentMetrics]
"""``(control, treatment)`` metrics of one allocation phase."""

PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
PERCENTILE_METRICS = {f"latency_{name}_ms": q for name, q in PERCENTILES.items()}
UNBOUNDED = (-math.inf, math.inf)


class CheckOutcome(str, Enum):
    """The result of one criterion or one check."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Criterion:
    """One criterion of a check.

    Attributes:
        metric: ``error_rate`` or ``latency_pXX_ms`` (or a guardrail metric).
        kind: ``versus_control`` or ``cap``.
        outcome: pass / fail / inconclusive.
        test: The test, in words.
        observed: The canary's value (rate, mean or percentile in ms).
        reference: The control's value (versus control) or the cap.
        threshold: The relative tolerance (versus control) or the cap.
        interval: Confidence sequence of the contrast (positive: the canary is worse than
            allowed).
        reason: One sentence naming the test, the numbers and the bound.
    """

    metric: str
    kind: str
    outcome: CheckOutcome
    test: str
    observed: float | None
    reference: float | None
    threshold: float
    interval: tuple[float, float]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (infinite bounds as ``None``)."""
        return {
            "metric": self.metric,
            "kind": self.kind,
            "outcome": self.outcome.value,
            "test": self.test,
            "observed": self.observed,
            "reference": self.reference,
            "threshold": self.threshold,
            "lower_bound": _finite(self.interval[0]),
            "upper_bound": _finite(self.interval[1]),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class CanaryCheck:
    """The judge's verdict on one treatment at one check.

    Attributes:
        variant_id: The treatment.
        outcome: fail if a criterion failed, pass if all passed, else inconclusive.
        criteria: Every criterion evaluated.
        control_requests: Control requests the check used.
        canary_requests: Treatment requests the check used.
        reason: Why, naming the tests, numbers and bounds.
    """

    variant_id: str
    outcome: CheckOutcome
    criteria: tuple[Criterion, ...]
    control_requests: int
    canary_requests: int
    reason: str

    @property
    def failed(self) -> tuple[Criterion, ...]:
        """The failing criteria."""
        return tuple(c for c in self.criteria if c.outcome is CheckOutcome.FAIL)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "variant_id": self.variant_id,
            "outcome": self.outcome.value,
            "control_requests": self.control_requests,
            "canary_requests": self.canary_requests,
            "reason": self.reason,
            "criteria": [c.as_dict() for c in self.criteria],
        }


def _pooled(items: Sequence[ExperimentMetrics]) -> ExperimentMetrics:
    """One arm over every phase (the phase itself when there is one)."""
    if len(items) == 1:
        return items[0]
    return merge_metrics(items[0].variant_id if items else "", items)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def outcome_of(interval: tuple[float, float]) -> CheckOutcome:
    """fail when the contrast's lower bound is above 0, pass when its upper bound is at most 0."""
    low, high = interval
    if low > 0:
        return CheckOutcome.FAIL
    if high <= 0:
        return CheckOutcome.PASS
    return CheckOutcome.INCONCLUSIVE


def _bound_text(interval: tuple[float, float], digits: int = 4) -> str:
    low, high = interval
    shown = ", ".join("∞" if math.isinf(v) else f"{v:+.{digits}f}" for v in (low, high))
    return f"[{shown}]"


def _verdict(outcome: CheckOutcome, interval: tuple[float, float]) -> str:
    low, high = interval
    if outcome is CheckOutcome.FAIL:
        return f"lower bound {low:+.4f} > 0"
    if outcome is CheckOutcome.PASS:
        return f"upper bound {high:+.4f} <= 0"
    return f"interval {_bound_text(interval)} contains 0"


# --------------------------------------------------------------------------- strata


def _rate_strata(metric: str, pairs: Sequence[Pair]) -> list[Stratum]:
    strata = []
    for control, treatment in pairs:
        x_c, n_c = control.proportion(metric)
        x_t, n_t = treatment.proportion(metric)
        strata.append(proportion_stratum(x_c, n_c, x_t, n_t))
    return strata


def _mean_strata(metric: str, pairs: Sequence[Pair]) -> list[Stratum]:
    strata = []
    for control, treatment in pairs:
        c, t = control.continuous(metric), treatment.continuous(metric)
        if c.variance is None or t.variance is None:
            continue
        strata.append(
            Stratum(
                c.mean or 0.0,
                t.mean or 0.0,
                c.variance / c.count,
                t.variance / t.count,
                c.count,
                t.count,
            )  # fmt: skip
        )
    return strata


def _exceedance_strata(pairs: Sequence[Pair], base: float, tolerance: float) -> list[Stratum]:
    """Per phase: share of control above ``base`` and of the treatment above
    ``(1 + tolerance) base``, read from the histograms."""
    strata = []
    for control, treatment in pairs:
        n_c = sum(control.latency_histogram.values())
        n_t = sum(treatment.latency_histogram.values())
        above_c = sketch.count_above(control.latency_histogram, base)
        above_t = sketch.count_above(treatment.latency_histogram, (1 + tolerance) * base)
        strata.append(proportion_stratum(above_c, n_c, above_t, n_t))
    return strata


def _worse_contrast(
    strata: Sequence[Stratum], lower_is_better: bool, tolerance: float, alpha: float, tuning: float
) -> SequentialResult | None:
    """Confidence sequence of how much worse than allowed the treatment is (positive: worse)."""
    if lower_is_better:
        return compare(strata, alpha, tuning, scale=1 + tolerance)
    result = compare(strata, alpha, tuning, scale=1 - tolerance)
    if result is None:
        return None
    low, high = result.interval
    return SequentialResult(
        -result.estimate, result.standard_error, -result.z, result.p_value, (-high, -low),
        result.alpha, result.n, result.tuning,
    )  # fmt: skip


# --------------------------------------------------------------------------- criteria


def worse_than(
    metric: str,
    pairs: Sequence[Pair],
    tolerance: float,
    alpha: float,
    tuning: float,
    minimum: int = 1,
) -> Criterion:
    """Is the treatment worse than the control on ``metric`` by more than ``tolerance``
    (relative), with always-valid evidence?

    "Worse" is higher for the error rate and latencies, lower for other rates and custom
    metrics. Rates compare proportions, ``latency_ms`` and custom metrics compare means, and
    ``latency_pXX_ms`` compares the histograms (see the module docstring).

    Args:
        metric: The metric.
        pairs: ``(control, treatment)`` metrics per allocation phase.
        tolerance: Relative tolerance (0.2 = 20 % worse is still acceptable).
        alpha: Level of the confidence sequence.
        tuning: Requests per arm at which the sequence is tightest.
        minimum: Requests each arm needs (pooled over the phases) before a verdict.
    """
    control = _pooled([c for c, _ in pairs])
    treatment = _pooled([t for _, t in pairs])
    observed, reference = treatment.value(metric), control.value(metric)
    short = min(control.request_count, treatment.request_count) < minimum
    if metric in PERCENTILE_METRICS:
        return _percentile_versus(
            metric, pairs, control, treatment, tolerance, alpha, tuning, short
        )
    lower = metric in LOWER_IS_BETTER
    if metric in RATE_METRICS:
        strata, test = _rate_strata(metric, pairs), "proportions"
    else:
        strata, test = _mean_strata(metric, pairs), "means"
    factor = 1 + tolerance if lower else 1 - tolerance
    worse_side = ">" if lower else "<"
    description = (
        f"always-valid mSPRT on {test} (alpha {alpha:g}, stratified by allocation phase): "
        f"{metric}(treatment) {worse_side} {factor:.2f} x {metric}(control)"
    )
    result = None if short else _worse_contrast(strata, lower, tolerance, alpha, tuning)
    return _criterion(metric, "versus_control", description, observed, reference, tolerance,
                      result, short, minimum)  # fmt: skip


def _percentile_versus(
    metric: str,
    pairs: Sequence[Pair],
    control: ExperimentMetrics,
    treatment: ExperimentMetrics,
    tolerance: float,
    alpha: float,
    tuning: float,
    short: bool,
) -> Criterion:
    q = PERCENTILE_METRICS[metric]
    base = sketch.quantile(control.latency_histogram, q)
    observed = sketch.quantile(treatment.latency_histogram, q)
    label = f"p{round(q * 100)}"
    description = (
        f"always-valid mSPRT on the latency histograms (alpha {alpha:g}, stratified by "
        f"allocation phase): share of treatment requests above {1 + tolerance:.2f} x control's "
        f"{label} minus share of control requests above control's {label}"
    )
    result = None
    if not short and base is not None:
        strata = _exceedance_strata(pairs, base, tolerance)
        result = compare(strata, alpha, tuning)
    return _criterion(metric, "versus_control", description, observed, base, tolerance, result,
                      short or base is None, 0)  # fmt: skip


def _criterion(
    metric: str,
    kind: str,
    description: str,
    observed: float | None,
    reference: float | None,
    threshold: float,
    result: SequentialResult | None,
    short: bool,
    minimum: int,
) -> Criterion:
    interval = UNBOUNDED if result is None else result.interval
    outcome = CheckOutcome.INCONCLUSIVE if result is None else outcome_of(interval)
    shown = "no data" if observed is None else f"{observed:.4g}"
    base = "no data" if reference is None else f"{reference:.4g}"
    other = "cap" if kind == "cap" else "control"
    if short:
        verdict = f"waiting for {minimum} requests per arm" if minimum else "no data yet"
    else:
        verdict = _verdict(outcome, interval)
    reason = f"{metric} {shown} vs {other} {base}: {description}; {verdict}"
    return Criterion(metric, kind, outcome, description, observed, reference, threshold,
                     interval, reason)  # fmt: skip


def error_rate_cap(canary: ExperimentMetrics, cap: float, alpha: float, tuning: float) -> Criterion:
    """Opt-in cap: fails only when the always-valid lower bound of the error rate is above it."""
    x, n = canary.error_count, canary.request_count
    smoothed = (x + 1) / (n + 2)
    result = mixture_test(x / n - cap, smoothed * (1 - smoothed) / n, n, alpha, tuning)
    rate = x / n
    low, high = result.interval
    outcome = outcome_of(result.interval)
    bound = f"always-valid bounds of the error rate [{low + cap:.4f}, {high + cap:.4f}]"
    if outcome is CheckOutcome.FAIL:
        verdict = (
            f"exceeds threshold {cap:.4f} with evidence: lower bound {low + cap:.4f} > {cap:.4f}"
        )
    elif outcome is CheckOutcome.PASS:
        verdict = f"is below threshold {cap:.4f}: upper bound {high + cap:.4f} <= {cap:.4f}"
    else:
        verdict = f"is not shown above threshold {cap:.4f}"
    test = f"always-valid mSPRT of one proportion (alpha {alpha:g}): error_rate > cap"
    reason = f"error_rate {rate:.4f} ({x} errors in {n} requests) {verdict}; {bound}"
    return Criterion("error_rate", "cap", outcome, test, rate, cap, cap, result.interval, reason)


def latency_cap(
    canary: ExperimentMetrics, percentile: str, cap_ms: float, alpha: float, tuning: float
) -> Criterion:
    """Opt-in cap: fails only with evidence that more than ``1 - q`` of the requests exceed it."""
    q = PERCENTILES[percentile]
    metric = f"latency_{percentile}_ms"
    n = sum(canary.latency_histogram.values())
    above = sketch.count_above(canary.latency_histogram, cap_ms)
    smoothed = (above + 1) / (n + 2)
    result = mixture_test(above / n - (1 - q), smoothed * (1 - smoothed) / n, n, alpha, tuning)
    observed = sketch.quantile(canary.latency_histogram, q)
    outcome = outcome_of(result.interval)
    test = (
        f"always-valid mSPRT of one proportion (alpha {alpha:g}): share of requests above "
        f"{cap_ms:g} ms > {1 - q:.2f}"
    )
    reason = (
        f"{metric} {observed or 0:.1f} ms, {above} of {n} requests above the {cap_ms:g} ms cap: "
        f"{test}; {_verdict(outcome, result.interval)}"
    )
    interval = result.interval
    return Criterion(metric, "cap", outcome, test, observed, cap_ms, cap_ms, interval, reason)


# --------------------------------------------------------------------------- the check


def judge_canary(variant_id: str, pairs: Sequence[Pair], policy: RollbackPolicy) -> CanaryCheck:
    """One check of one treatment against the control under ``policy``.

    Args:
        variant_id: The treatment.
        pairs: ``(control, treatment)`` metrics of every allocation phase in which both had
            traffic.
        policy: Tolerances, caps, minimum requests, alpha and tuning.
    """
    control = _pooled([c for c, _ in pairs])
    canary = _pooled([t for _, t in pairs])
    needed = policy.min_requests_before_rollback
    if min(control.request_count, canary.request_count) < needed:
        reason = (
            f"variant {variant_id}: inconclusive: each arm needs {needed} requests "
            f"(control {control.request_count}, canary {canary.request_count})"
        )
        return CanaryCheck(variant_id, CheckOutcome.INCONCLUSIVE, (), control.request_count,
                           canary.request_count, reason)  # fmt: skip
    alpha, tuning = policy.alpha, policy.tuning_sample_size
    criteria = []
    if policy.error_rate_threshold is not None:
        criteria.append(error_rate_cap(canary, policy.error_rate_threshold, alpha, tuning))
    criteria.append(worse_than("error_rate", pairs, policy.error_rate_tolerance, alpha, tuning))
    metric = f"latency_{policy.latency_percentile}_ms"
    if policy.latency_threshold_ms is not None:
        criteria.append(
            latency_cap(
                canary, policy.latency_percentile, policy.latency_threshold_ms, alpha, tuning
            )  # fmt: skip
        )
    criteria.append(worse_than(metric, pairs, policy.latency_degradation_threshold, alpha, tuning))
    return _verdict_of(variant_id, tuple(criteria), control.request_count, canary.request_count)


def _verdict_of(
    variant_id: str, criteria: tuple[Criterion, ...], control_requests: int, canary_requests: int
) -> CanaryCheck:
    outcomes = {c.outcome for c in criteria}
    if CheckOutcome.FAIL in outcomes:
        outcome = CheckOutcome.FAIL
        chosen = [c for c in criteria if c.outcome is CheckOutcome.FAIL]
    elif outcomes == {CheckOutcome.PASS}:
        outcome, chosen = CheckOutcome.PASS, list(criteria)
    else:
        outcome = CheckOutcome.INCONCLUSIVE
        chosen = [c for c in criteria if c.outcome is not CheckOutcome.PASS]
    reason = f"variant {variant_id}: {outcome.value}: " + "; ".join(c.reason for c in chosen)
    return CanaryCheck(variant_id, outcome, criteria, control_requests, canary_requests, reason)
