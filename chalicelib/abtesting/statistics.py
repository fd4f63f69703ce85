"""Statistics of experiments, computed from sufficient statistics.

Two analysis methods (``Experiment.analysis.method``, or ``?method=`` on the analysis route):

* ``sequential`` (the default): the always-valid mSPRT of :mod:`~chalicelib.abtesting.sequential`
  (p-values and confidence sequences that hold at every look), stratified by allocation phase.
  Several treatments split alpha with Bonferroni, so each interval is at ``alpha / k`` and agrees
  with its adjusted p-value.
* ``fixed``: fixed-horizon tests that may recommend only once both arms reached the *planned*
  sample size (the power calculation for the minimum detectable effect at the control's observed
  rate or spread); before that the answer is "underpowered: keep running".

  - Rates: Newcomb's hybrid score interval of the difference (as statsmodels'
    ``confint_proportions_2indep(method="newcomb")``) and the p-value that inverts it, so
    ``p < alpha`` exactly when the interval excludes 0. ``statistic`` is the pooled z (as
    ``proportions_ztest``).
  - Continuous metrics (latency, custom metrics): Welch's t-test from count, mean and centred
    sum of squares, as ``statsmodels.stats.weightstats.ttest_ind(usevar="unequal")``.
  - Several allocation phases: a stratified normal test (phase estimates weighted by their
    effective size), never the pooled counts, which Simpson's paradox can reverse.
  - Several treatments: Holm-Bonferroni adjusted p-values.

* Sample size per arm for a rate (fixed): Cohen's h with the normal approximation,
  ``n = 2 ((z_{1-alpha/2} + z_{power}) / h)^2``, as statsmodels' ``NormalIndPower``; sequential:
  the smallest ``n`` at which the mSPRT has crossed with the requested power
  (:func:`~chalicelib.abtesting.sequential.sequential_sample_size`).
* Sample-ratio mismatch: Pearson chi-square per allocation phase against that phase's weights,
  Bonferroni over the phases.
* Guardrails: the canary judge's always-valid test that the treatment is worse by more than the
  threshold (:func:`~chalicelib.abtesting.judge.worse_than`).

scipy is imported only inside the functions that need the t and chi-square distributions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

from chalicelib.abtesting import bayes, cuped, sequential
from chalicelib.abtesting import metrics as declared
from chalicelib.abtesting.aggregate import merge_metrics, metrics_from_counters
from chalicelib.abtesting.judge import CheckOutcome, Pair, worse_than
from chalicelib.abtesting.models import (
    LOWER_IS_BETTER,
    RATE_METRICS,
    AllocationPhase,
    AnalysisMethod,
    AnalysisSettings,
    BayesianPrior,
    DecisionEngine,
    Experiment,
    ExperimentMetrics,
    GuardrailResult,
    RecommendedAction,
    SampleRatioResult,
    SignificanceResult,
)
from chalicelib.core.errors import UnprocessableEntity

__all__ = [
    "EngineVerdict",
    "ExperimentAnalysis",
    "PhaseMetrics",
    "SampleSizePlan",
    "StatisticalAnalyzer",
    "TreatmentAnalysis",
    "comparable_pairs",
    "holm_bonferroni",
    "metrics_from_counters",
    "plan_sample_size",
    "two_sided_normal_p",
]

_NORMAL = NormalDist()
SRM_ALPHA = 0.001
# Requests per arm before a guardrail's normal approximation is trusted.
GUARDRAIL_MINIMUM = 100


def two_sided_normal_p(z: float) -> float:
    """Two-sided p-value of a standard normal statistic."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def holm_bonferroni(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (monotone, capped at 1), in the input order."""
    count = len(p_values)
    order = sorted(range(count), key=lambda i: p_values[i])
    adjusted = [1.0] * count
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (count - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class TreatmentAnalysis:
    """Everything known about one treatment against the control.

    Attributes:
        variant_id: The treatment.
        significance: Primary-metric comparison (``is_significant`` uses the Holm-adjusted p).
        adjusted_p_value: Holm-Bonferroni adjusted p-value across treatments.
        guardrails: Guardrail checks.
        improves: The treatment is significantly better on the primary metric.
        bayesian: The Bayesian reading of the primary metric (``None`` without data, or for a
            percentile metric).
        bayesian_decision: ``better`` (the expected loss of shipping it is below the risk
            threshold), ``keep_control`` (that of keeping the control is), ``inconclusive`` or
            ``no_data``.
        cuped: The CUPED-adjusted comparison of the primary metric over outcomes that carried
            a covariate (``None`` without enough of them).
    """

    variant_id: str
    significance: SignificanceResult
    adjusted_p_value: float
    guardrails: list[GuardrailResult]
    improves: bool
    bayesian: bayes.BayesianResult | None = None
    bayesian_decision: str = "no_data"
    cuped: cuped.CupedResult | None = None


@dataclass(frozen=True)
class EngineVerdict:
    """What one decision engine recommends.

    Attributes:
        recommendation: continue / conclude_winner / conclude_no_difference.
        recommended_winner: The treatment to promote, or ``None``.
        reason: Why, in one sentence.
    """

    recommendation: RecommendedAction
    recommended_winner: str | None
    reason: str


@dataclass(frozen=True)
class ExperimentAnalysis:
    """The analysis of an experiment.

    Attributes:
        experiment_id: The experiment.
        primary_metric: The deciding metric.
        control_variant_id: The control.
        treatments: One analysis per treatment.
        sample_ratio: The SRM check.
        recommendation: continue / conclude_winner / conclude_no_difference.
        recommended_winner: The treatment to promote; ``None`` unless the recommendation is
            ``conclude_winner``.
        warnings: Human-readable concerns (SRM, degraded guardrails).
        method: ``sequential`` or ``fixed``.
        reason: One sentence saying why the recommendation is what it is.
        decision_engine: ``frequentist`` or ``bayesian``: whose verdict ``recommendation``,
            ``recommended_winner`` and ``reason`` are (and what ``conclude`` follows).
        verdicts: Both engines' verdicts, by engine name.
        risk_threshold: The Bayesian engine's threshold on the relative expected loss.
        metrics: Every declared metric for every treatment, p-values adjusted together.
        correction: The correction applied to them (``holm``, ``bh`` or ``none``).
    """

    experiment_id: str
    primary_metric: str
    control_variant_id: str
    treatments: list[TreatmentAnalysis]
    sample_ratio: SampleRatioResult
    recommendation: RecommendedAction
    recommended_winner: str | None
    warnings: list[str] = field(default_factory=list)
    method: str = AnalysisMethod.SEQUENTIAL.value
    reason: str = ""
    decision_engine: str = DecisionEngine.FREQUENTIST.value
    verdicts: Mapping[str, EngineVerdict] = field(default_factory=dict)
    risk_threshold: float | None = None
    metrics: list[declared.MetricComparison] = field(default_factory=list)
    correction: str = "holm"


@dataclass(frozen=True)
class PhaseMetrics:
    """Metrics of every variant during one allocation phase.

    Attributes:
        phase: The phase (its weights).
        metrics: Metrics per variant of outcomes attributed to that phase.
    """

    phase: AllocationPhase
    metrics: Mapping[str, ExperimentMetrics]


# Beyond this many requests per arm an effect is, in practice, undetectable.
MAX_SAMPLE_SIZE = 1e12


@dataclass(frozen=True)
class SampleSizePlan:
    """How much traffic an experiment on a rate needs.

    Attributes:
        per_variant: Requests each arm needs.
        total: Requests over all arms (equal split).
        comparisons: Treatments compared with the control.
        confidence_level: The requested (family-wise) confidence.
        confidence_per_comparison: After the Bonferroni split over ``comparisons``.
        power: 1 - beta of each comparison.
        baseline_rate: The control's rate.
        target_rate: The rate the smallest effect of interest leads to.
        days: Days to reach ``total`` at the given daily traffic (``None`` without it).
        method: How it was computed.
        analysis_method: ``sequential`` (the analysis' default) or ``fixed``.
    """

    per_variant: int
    total: int
    comparisons: int
    confidence_level: float
    confidence_per_comparison: float
    power: float
    baseline_rate: float
    target_rate: float
    days: int | None
    method: str = (
        "two-sided two-proportion z-test on Cohen's h (as statsmodels' NormalIndPower), "
        "Bonferroni over the comparisons with the control"
    )
    analysis_method: str = AnalysisMethod.FIXED.value


SEQUENTIAL_PLAN = (
    "smallest n at which the always-valid mSPRT (tuning {tuning} per arm) has crossed with the "
    "requested power, Bonferroni over the comparisons with the control"
)


def plan_sample_size(
    baseline_rate: float,
    minimum_detectable_effect: float,
    confidence_level: float = 0.95,
    power: float = 0.8,
    variants: int = 2,
    daily_traffic: int | None = None,
    method: str = AnalysisMethod.SEQUENTIAL.value,
    tuning_sample_size: int = sequential.DEFAULT_TUNING,
) -> SampleSizePlan:
    """Requests per arm, in total and in days, to detect a relative change of a rate.

    ``method="sequential"`` (the default analysis) plans for the always-valid test, which needs
    more requests than a fixed-horizon test read once (about twice at +10 % on a 10 % rate) and
    in exchange may be read at any time.

    With more than one treatment, each comparison with the control is tested at
    ``1 - (1 - confidence_level) / (variants - 1)`` (Bonferroni: the bound the analysis's Holm
    correction never needs more than).

    Args:
        baseline_rate: The control's rate, in (0, 1).
        minimum_detectable_effect: Relative change to detect (0.1 = +10 %).
        confidence_level: Family-wise 1 - alpha.
        power: 1 - beta.
        variants: Arms including the control (at least 2).
        daily_traffic: Requests per day over all arms, for ``days``.
        method: ``sequential`` or ``fixed``.
        tuning_sample_size: ``N*`` of the sequential test.

    Raises:
        UnprocessableEntity: Fewer than 2 variants, no positive traffic, or what
            :meth:`StatisticalAnalyzer.calculate_sample_size_requirement` refuses.
    """
    if variants < 2 or (daily_traffic is not None and daily_traffic < 1):
        raise UnprocessableEntity("need at least 2 variants and a positive daily_traffic")
    comparisons = variants - 1
    per_comparison = 1 - (1 - confidence_level) / comparisons
    per_variant = StatisticalAnalyzer().calculate_sample_size_requirement(
        baseline_rate, minimum_detectable_effect, per_comparison, power, method,
        tuning_sample_size,
    )  # fmt: skip
    total = per_variant * variants
    extra = {}
    if method == AnalysisMethod.SEQUENTIAL.value:
        extra["method"] = SEQUENTIAL_PLAN.format(tuning=tuning_sample_size)
    return SampleSizePlan(
        per_variant=per_variant,
        total=total,
        comparisons=comparisons,
        confidence_level=confidence_level,
        confidence_per_comparison=per_comparison,
        power=power,
        baseline_rate=baseline_rate,
        target_rate=baseline_rate * (1 + minimum_detectable_effect),
        days=None if daily_traffic is None else math.ceil(total / daily_traffic),
        analysis_method=AnalysisMethod(method).value,
        **extra,
    )


def newcomb_p_value(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int
) -> tuple[float, float]:
    """``(p, z*)``: the p-value that inverts Newcomb's interval.

    The interval at level ``1 - p`` has 0 on its boundary, so ``p < alpha`` exactly when the
    ``1 - alpha`` interval excludes 0. Found by bisection on the normal quantile ``z*``.
    """
    diff = x_treatment / n_treatment - x_control / n_control
    if diff == 0:
        return 1.0, 0.0

    def excludes_zero(z: float) -> bool:
        low, high = sequential.newcomb_interval_z(x_control, n_control, x_treatment, n_treatment, z)
        return low > 0 or high < 0

    low, high = 0.0, 40.0
    if excludes_zero(high):
        return math.erfc(high / math.sqrt(2.0)), high
    for _ in range(100):
        middle = (low + high) / 2
        if middle in (low, high):  # adjacent floats (after ~57 halvings): nothing moves any more
            break
        low, high = (middle, high) if excludes_zero(middle) else (low, middle)
    return math.erfc(high / math.sqrt(2.0)), high


def _pairs_totals(pairs: Sequence[Pair]) -> tuple[ExperimentMetrics, ExperimentMetrics]:
    if len(pairs) == 1:
        return pairs[0]
    control = merge_metrics(pairs[0][0].variant_id, [c for c, _ in pairs])
    return control, merge_metrics(pairs[0][1].variant_id, [t for _, t in pairs])


class StatisticalAnalyzer:
    """Significance tests, sample sizes, guardrails, SRM and multiple-comparison corrections.

    Args:
        confidence_level: Default confidence level (e.g. 0.95).
        minimum_sample_size: Requests each arm needs before any recommendation.
        settings: Method, minimum detectable effect, power and sequential tuning (defaults:
            sequential, 10 %, 80 %, 5,000).
    """

    def __init__(
        self,
        confidence_level: float = 0.95,
        minimum_sample_size: int = 1000,
        settings: AnalysisSettings | None = None,
    ) -> None:
        self.confidence_level = confidence_level
        self.minimum_sample_size = minimum_sample_size
        self.settings = settings or AnalysisSettings()

    # ------------------------------------------------------------------ one comparison

    def calculate_significance(
        self,
        control: ExperimentMetrics,
        treatment: ExperimentMetrics,
        metric_name: str,
        confidence_level: float | None = None,
        method: AnalysisMethod | str | None = None,
        strata: Sequence[Pair] | None = None,
        comparisons: int = 1,
    ) -> SignificanceResult:
        """Compares treatment with control on one metric (``treatment - control``).

        Args:
            control: Control's metrics (all phases).
            treatment: Treatment's metrics (all phases).
            metric_name: A rate (``conversion_rate``, ``success_rate``, ``error_rate``),
                ``latency_ms`` or a custom metric.
            confidence_level: Overrides the analyzer's level.
            method: ``sequential`` or ``fixed`` (default: the analyzer's settings).
            strata: ``(control, treatment)`` per allocation phase (default: one stratum).
            comparisons: Treatments compared with the control (alpha is split for the
                sequential interval and for the planned sample size).
        """
        level = self.confidence_level if confidence_level is None else confidence_level
        chosen = AnalysisMethod(method or self.settings.method)
        pairs = list(strata) if strata else [(control, treatment)]
        alpha = round((1.0 - level) / max(comparisons, 1), 12)
        rate = metric_name in RATE_METRICS
        values = (control.value(metric_name), treatment.value(metric_name))
        planned = self._planned(control, treatment, metric_name, alpha, chosen)
        if chosen is AnalysisMethod.SEQUENTIAL:
            found = self._sequential(pairs, metric_name, rate, alpha)
            test_alpha = alpha
        else:
            test_alpha = round(1.0 - level, 12)
            if len(pairs) > 1:
                found = self._stratified_fixed(pairs, metric_name, rate, test_alpha)
            elif rate:
                found = self._newcomb(control, treatment, metric_name, test_alpha)
            else:
                found = self._welch(control, treatment, metric_name, level)
        smallest = min(control.request_count, treatment.request_count)
        needed = self.minimum_sample_size
        if chosen is AnalysisMethod.FIXED and planned is not None:
            needed = planned
        adequate = smallest >= needed
        return self._result(metric_name, values, found, planned, chosen, test_alpha, adequate)

    def _planned(
        self,
        control: ExperimentMetrics,
        treatment: ExperimentMetrics,
        metric: str,
        alpha: float,
        method: AnalysisMethod,
    ) -> int | None:
        """Requests per arm for the configured power against the minimum detectable effect:
        the declared plan, else planned at the control's observed rate or spread (``None`` when
        that is not defined)."""
        settings = self.settings
        if settings.planned_sample_size is not None:
            return max(settings.planned_sample_size, self.minimum_sample_size)
        mde = settings.minimum_detectable_effect
        base = control.value(metric)
        if metric in RATE_METRICS:
            if base is None or not 0 < base < 1 or not 0 < base * (1 + mde) < 1:
                return None
            needed = self._rate_plan(base, mde, alpha, method)
        else:
            needed = self._mean_plan(control, treatment, metric, alpha, method)
        return None if needed is None else max(needed, self.minimum_sample_size)

    def _rate_plan(
        self, base: float, mde: float, alpha: float, method: AnalysisMethod
    ) -> int | None:
        try:
            return self.calculate_sample_size_requirement(
                base, mde, 1 - alpha, self.settings.power, method,
                self.settings.tuning_sample_size,
            )  # fmt: skip
        except UnprocessableEntity:
            return None

    def _mean_plan(
        self,
        control: ExperimentMetrics,
        treatment: ExperimentMetrics,
        metric: str,
        alpha: float,
        method: AnalysisMethod,
    ) -> int | None:
        c, t = control.continuous(metric), treatment.continuous(metric)
        base = c.mean
        if not base or c.variance is None or t.variance is None:
            return None
        sd = math.sqrt((c.variance + t.variance) / 2)
        effect = abs(base) * self.settings.minimum_detectable_effect
        if not sd or not effect:
            return None
        if method is AnalysisMethod.SEQUENTIAL:
            return sequential.sequential_sample_size(
                effect, sd, sd, alpha, self.settings.power, self.settings.tuning_sample_size,
                MAX_SAMPLE_SIZE,
            )  # fmt: skip
        z = _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(self.settings.power)
        return math.ceil(min(2 * (z * sd / effect) ** 2, MAX_SAMPLE_SIZE))

    def _sequential(
        self, pairs: Sequence[Pair], metric: str, rate: bool, alpha: float
    ) -> tuple[str, float, float, tuple[float, float]]:
        strata = _strata(pairs, metric, rate)
        result = sequential.compare(strata, alpha, self.settings.tuning_sample_size)
        test = "sequential_proportions" if rate else "sequential_means"
        if result is None:
            return test, math.nan, 1.0, (math.nan, math.nan)
        return test, result.z, result.p_value, result.interval

    def _stratified_fixed(
        self, pairs: Sequence[Pair], metric: str, rate: bool, alpha: float
    ) -> tuple[str, float, float, tuple[float, float]]:
        pooled = sequential.pool(_strata(pairs, metric, rate))
        if pooled is None or not pooled.variance > 0:
            return "stratified_z", math.nan, 1.0, (math.nan, math.nan)
        diff = pooled.treatment - pooled.control
        se = math.sqrt(pooled.variance)
        half = _NORMAL.inv_cdf(1 - alpha / 2) * se
        return "stratified_z", diff / se, two_sided_normal_p(diff / se), (diff - half, diff + half)

    def _newcomb(
        self, control: ExperimentMetrics, treatment: ExperimentMetrics, metric: str, alpha: float
    ) -> tuple[str, float, float, tuple[float, float]]:
        x_c, n_c = control.proportion(metric)
        x_t, n_t = treatment.proportion(metric)
        if not n_c or not n_t:
            return "newcomb", math.nan, 1.0, (math.nan, math.nan)
        pooled = (x_c + x_t) / (n_c + n_t)
        se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
        z = (x_t / n_t - x_c / n_c) / se_pooled if se_pooled > 0 else 0.0
        p_value, _ = newcomb_p_value(x_c, n_c, x_t, n_t)
        interval = sequential.newcomb_interval(x_c, n_c, x_t, n_t, alpha)
        return "newcomb", z, p_value, interval

    def _welch(
        self, control: ExperimentMetrics, treatment: ExperimentMetrics, metric: str, level: float
    ) -> tuple[str, float, float, tuple[float, float]]:
        c, t = control.continuous(metric), treatment.continuous(metric)
        if c.variance is None or t.variance is None:
            return "welch_t", math.nan, 1.0, (math.nan, math.nan)
        diff = (t.mean or 0.0) - (c.mean or 0.0)
        var_c, var_t = c.variance / c.count, t.variance / t.count
        se = math.sqrt(var_c + var_t)
        if se == 0:
            # Both arms constant: the difference is known exactly (scipy: t = ±inf, p = 0).
            if diff == 0:
                return "welch_t", 0.0, 1.0, (0.0, 0.0)
            return "welch_t", math.copysign(math.inf, diff), 0.0, (diff, diff)
        from scipy import stats

        dof = (var_c + var_t) ** 2 / (var_c**2 / (c.count - 1) + var_t**2 / (t.count - 1))
        statistic = diff / se
        p_value = float(2 * stats.t.sf(abs(statistic), dof))
        half = float(stats.t.ppf(1 - (1 - level) / 2, dof)) * se
        return "welch_t", statistic, p_value, (diff - half, diff + half)

    def _result(
        self,
        metric: str,
        values: tuple[float | None, float | None],
        found: tuple[str, float, float, tuple[float, float]],
        planned: int | None,
        method: AnalysisMethod,
        alpha: float,
        adequate: bool,
    ) -> SignificanceResult:
        test, statistic, p_value, interval = found
        control_value, treatment_value = values
        significant = p_value < alpha
        lift = None
        if control_value and treatment_value is not None:
            lift = (treatment_value - control_value) / control_value
        decision = self._decision(metric, method, interval, adequate, significant, values)
        return SignificanceResult(
            metric_name=metric,
            test=test,
            control_value=control_value,
            treatment_value=treatment_value,
            is_significant=significant,
            p_value=p_value,
            confidence_interval=interval,
            effect_size=lift,
            sample_size_adequate=adequate,
            recommended_action=_ACTIONS[decision],
            statistic=statistic,
            method=method.value,
            decision=decision,
            planned_sample_size=planned,
            alpha=alpha,
        )

    def _decision(
        self,
        metric: str,
        method: AnalysisMethod,
        interval: tuple[float, float],
        adequate: bool,
        significant: bool,
        values: tuple[float | None, float | None],
    ) -> str:
        """better / worse / equivalent / no_difference / inconclusive / underpowered / no_data."""
        control_value, treatment_value = values
        if math.isnan(interval[0]) or control_value is None or treatment_value is None:
            return "no_data"
        if not adequate:
            return "underpowered" if method is AnalysisMethod.FIXED else "inconclusive"
        if significant:
            up = (interval[0] + interval[1]) > 0
            better = not up if metric in LOWER_IS_BETTER else up
            return "better" if better else "worse"
        if method is AnalysisMethod.FIXED:
            return "no_difference"
        margin = abs(control_value) * self.settings.minimum_detectable_effect
        if margin > 0 and -margin < interval[0] and interval[1] < margin:
            return "equivalent"
        return "inconclusive"

    # ------------------------------------------------------------------ sample size

    def calculate_sample_size_requirement(
        self,
        baseline_rate: float,
        minimum_detectable_effect: float,
        confidence_level: float = 0.95,
        power: float = 0.8,
        method: AnalysisMethod | str = AnalysisMethod.FIXED,
        tuning_sample_size: int = sequential.DEFAULT_TUNING,
    ) -> int:
        """Requests per arm to detect a relative change of a rate (two-sided test).

        Args:
            baseline_rate: The control's rate, in (0, 1).
            minimum_detectable_effect: Relative change to detect (0.1 = +10 %).
            confidence_level: 1 - alpha.
            power: 1 - beta.
            method: ``fixed`` (a test read once, the classic formula) or ``sequential`` (the
                always-valid test read at every look).
            tuning_sample_size: ``N*`` of the sequential test.

        Raises:
            UnprocessableEntity: A rate outside (0, 1), a zero effect, a level outside (0, 1),
                or an effect too small to detect within ``MAX_SAMPLE_SIZE`` requests per arm.
        """
        target = baseline_rate * (1 + minimum_detectable_effect)
        checks = (
            0 < baseline_rate < 1,
            0 < target < 1,
            minimum_detectable_effect != 0,
            0 < confidence_level < 1,
            0 < power < 1,
        )
        if not all(checks):
            raise UnprocessableEntity(
                "need 0 < baseline_rate < 1, a non-zero effect keeping the rate in (0, 1), "
                "and confidence_level and power in (0, 1)"
            )
        if AnalysisMethod(method) is AnalysisMethod.SEQUENTIAL:
            needed = float(
                sequential.sequential_sample_size(
                    target - baseline_rate,
                    math.sqrt(baseline_rate * (1 - baseline_rate)),
                    math.sqrt(target * (1 - target)),
                    1 - confidence_level,
                    power,
                    tuning_sample_size,
                    MAX_SAMPLE_SIZE * 10,
                )  # fmt: skip
            )
        else:
            h = 2 * math.asin(math.sqrt(target)) - 2 * math.asin(math.sqrt(baseline_rate))
            z_alpha = _NORMAL.inv_cdf(1 - (1 - confidence_level) / 2)
            z_beta = _NORMAL.inv_cdf(power)
            needed = 2 * ((z_alpha + z_beta) / abs(h)) ** 2 if h else math.inf
        if not needed <= MAX_SAMPLE_SIZE:
            raise UnprocessableEntity(
                f"detecting this effect needs more than {MAX_SAMPLE_SIZE:.0e} requests per arm"
            )
        return math.ceil(needed)

    # ------------------------------------------------------------------ guardrails and SRM

    def check_guardrail_metrics(
        self,
        control: ExperimentMetrics,
        treatment: ExperimentMetrics,
        guardrail_names: Sequence[str],
        degradation_threshold: float = 0.1,
        strata: Sequence[Pair] | None = None,
    ) -> list[GuardrailResult]:
        """Flags guardrails on which there is evidence that the treatment is worse than the
        control by more than the threshold (relative).

        "Worse" is higher for error rate and latencies, lower for other rates and custom metrics.
        The evidence is the canary judge's always-valid test (:func:`judge.worse_than`) at the
        analyzer's alpha, stratified by allocation phase, after ``GUARDRAIL_MINIMUM`` requests
        per arm; ``relative_change`` is the point estimate, for information.
        """
        pairs = list(strata) if strata else [(control, treatment)]
        alpha = 1.0 - self.confidence_level
        tuning = self.settings.tuning_sample_size
        results = []
        for name in guardrail_names:
            c_value, t_value = control.value(name), treatment.value(name)
            if c_value is None or t_value is None:
                results.append(GuardrailResult(name, c_value, t_value, None, False, False))
                continue
            if c_value:
                change = (t_value - c_value) / abs(c_value)
            else:
                change = math.inf if t_value > 0 else (-math.inf if t_value < 0 else 0.0)
            verdict = worse_than(name, pairs, degradation_threshold, alpha, tuning,
                                 GUARDRAIL_MINIMUM)  # fmt: skip
            failed = verdict.outcome is CheckOutcome.FAIL
            results.append(
                GuardrailResult(
                    name,
                    c_value,
                    t_value,
                    change,
                    failed,
                    True,
                    verdict.outcome.value,
                    verdict.test,
                    verdict.interval,
                )  # fmt: skip
            )
        return results

    def check_sample_ratio(
        self,
        observed: Mapping[str, int],
        weights: Mapping[str, float],
        alpha: float = SRM_ALPHA,
    ) -> SampleRatioResult:
        """Chi-square test of observed requests per variant against the configured weights.

        Variants with weight 0 are left out; the other weights are normalized.
        """
        from scipy import special

        active = [name for name, weight in weights.items() if weight > 0]
        total = sum(observed.get(name, 0) for name in active)
        weight_sum = sum(float(weights[name]) for name in active)
        expected = {name: total * float(weights[name]) / weight_sum for name in active}
        counts = {name: int(observed.get(name, 0)) for name in active}
        if total == 0 or len(active) < 2:
            return SampleRatioResult(0.0, 1.0, False, counts, expected, checked=False)
        chi_square = sum((counts[n] - expected[n]) ** 2 / expected[n] for n in active)
        p_value = float(special.chdtrc(len(active) - 1, chi_square))  # chi2.sf, without overhead
        return SampleRatioResult(chi_square, p_value, p_value < alpha, counts, expected)

    def check_sample_ratio_phases(
        self, phases: Sequence[PhaseMetrics], alpha: float = SRM_ALPHA
    ) -> SampleRatioResult:
        """SRM per allocation phase against that phase's weights, Bonferroni over the phases.

        The combined result's ``p_value`` is the smallest phase p-value times the number of
        phases checked (capped at 1); ``observed`` and ``expected`` add up the checked phases
        (a paused phase, with traffic to the control only, is not exposure to compare).
        """
        results = []
        for item in phases:
            weights = {name: float(w) for name, w in item.phase.weights.items()}
            observed = {name: m.request_count for name, m in item.metrics.items()}
            found = self.check_sample_ratio(observed, weights, alpha)
            results.append(SampleRatioResult(**{**found.__dict__, "phase": item.phase.index}))
        checked = [r for r in results if r.checked]
        observed_total: dict[str, int] = {}
        expected_total: dict[str, float] = {}
        for result in checked:
            for name, count in result.observed.items():
                observed_total[name] = observed_total.get(name, 0) + count
                expected_total[name] = expected_total.get(name, 0.0) + result.expected[name]
        if not checked:
            return SampleRatioResult(0.0, 1.0, False, observed_total, expected_total, False,
                                     tuple(results))  # fmt: skip
        p_value = min(1.0, min(r.p_value for r in checked) * len(checked))
        chi_square = sum(r.chi_square for r in checked)
        return SampleRatioResult(chi_square, p_value, p_value < alpha, observed_total,
                                 expected_total, True, tuple(results))  # fmt: skip

    # ------------------------------------------------------------------ the analysis

    def analyze(
        self,
        experiment: Experiment,
        metrics: Mapping[str, ExperimentMetrics],
        phases: Sequence[PhaseMetrics] | None = None,
        method: AnalysisMethod | str | None = None,
    ) -> ExperimentAnalysis:
        """Significance per treatment, guardrails, SRM and a recommendation.

        Args:
            experiment: The experiment (variants, metric, level, analysis settings).
            metrics: Metrics per variant over the whole experiment.
            phases: Metrics per allocation phase; the comparisons use only phases in which
                both arms had traffic (paused time does not count), stratified by phase.
                Without phases the totals are one phase at the configured weights.
            method: Overrides the experiment's analysis method.
        """
        chosen = AnalysisMethod(method or experiment.analysis.method)
        analyzer = StatisticalAnalyzer(
            experiment.confidence_level, experiment.minimum_sample_size, experiment.analysis
        )
        phases = list(phases) if phases is not None else [_one_phase(experiment, metrics)]
        control_id = experiment.control.variant_id
        treatments = experiment.treatments
        raw = []
        for variant in treatments:
            pairs = comparable_pairs(phases, control_id, variant.variant_id)
            control, treatment = _pairs_totals(pairs) if pairs else _empty_pair(control_id, variant)
            result = analyzer.calculate_significance(
                control, treatment, experiment.primary_metric, None, chosen, pairs or None,
                len(treatments),
            )  # fmt: skip
            raw.append((variant.variant_id, pairs, control, treatment, result))
        adjusted = _adjusted([item[4].p_value for item in raw], chosen)
        comparisons = _declared(experiment, raw, chosen)
        analyses = [
            _with_declared_guardrails(analyzer._treatment(experiment, item, p_adj, chosen),
                                      comparisons)
            for item, p_adj in zip(raw, adjusted, strict=True)
        ]  # fmt: skip
        srm = analyzer.check_sample_ratio_phases(phases)
        frequentist = analyzer._recommend(experiment, analyses, srm, chosen)
        found = _with_verdicts(experiment, frequentist, srm)
        return replace(found, metrics=comparisons, correction=experiment.analysis.correction)

    def bayesian(
        self,
        control: ExperimentMetrics,
        treatment: ExperimentMetrics,
        metric_name: str,
        prior: BayesianPrior | None = None,
    ) -> bayes.BayesianResult | None:
        """The Bayesian reading of one comparison: chance to win, expected loss (risk) and the
        relative lift's 95 % credible interval (``None`` without data; see :mod:`bayes`).

        Args:
            control: Control's metrics.
            treatment: Treatment's metrics.
            metric_name: A rate, ``latency_ms`` or a custom metric.
            prior: Priors (default: ``Beta(1, 1)`` for rates, flat for means).
        """
        return bayes.compare_metrics(control, treatment, metric_name, prior)

    def _treatment(
        self,
        experiment: Experiment,
        item: tuple[str, list[Pair], ExperimentMetrics, ExperimentMetrics, SignificanceResult],
        adjusted: float,
        method: AnalysisMethod,
    ) -> TreatmentAnalysis:
        variant_id, pairs, control, treatment, result = item
        alpha_family = 1.0 - experiment.confidence_level
        significant = adjusted < alpha_family
        decision = result.decision
        if decision in {"better", "worse"} and not significant:
            decision = "no_difference" if method is AnalysisMethod.FIXED else "inconclusive"
        corrected = SignificanceResult(
            **{
                **result.__dict__,
                "is_significant": significant,
                "decision": decision,
                "recommended_action": _ACTIONS[decision],
            }
        )
        guardrails = self.check_guardrail_metrics(
            control, treatment, experiment.guardrail_metrics, strata=pairs or None
        )
        settings = experiment.analysis.decision
        reading = (
            bayes.compare_phases(pairs, experiment.primary_metric, settings.prior)
            if pairs
            else bayes.compare_metrics(
                control, treatment, experiment.primary_metric, settings.prior
            )
        )
        adequate = min(control.request_count, treatment.request_count) >= self.minimum_sample_size
        return TreatmentAnalysis(
            variant_id, corrected, adjusted, guardrails, decision == "better", reading,
            bayesian_decision(reading, settings.risk_threshold, adequate),
            cuped.analyze(control.cuped, treatment.cuped, experiment.primary_metric,
                          experiment.confidence_level),
        )  # fmt: skip

    def _recommend(
        self,
        experiment: Experiment,
        treatments: list[TreatmentAnalysis],
        srm: SampleRatioResult,
        method: AnalysisMethod,
    ) -> ExperimentAnalysis:
        warnings = []
        if srm.mismatch:
            warnings.append(
                f"sample ratio mismatch (chi-square {srm.chi_square:.2f}, p={srm.p_value:.2g}, "
                "per allocation phase): assignment or logging is broken; do not trust the results"
            )
        for item in treatments:
            for guard in item.guardrails:
                if guard.degraded:
                    warnings.append(f"{item.variant_id}: guardrail {guard.metric_name} degraded")
        healthy = [
            t for t in treatments if t.improves and not any(g.degraded for g in t.guardrails)
        ]
        decided = all(
            t.significance.decision in {"worse", "equivalent", "no_difference"}
            or (t.improves and t not in healthy)
            for t in treatments
        )
        winner: str | None = None
        if srm.mismatch:
            action = RecommendedAction.CONTINUE
            reason = "sample ratio mismatch: fix assignment or logging before deciding anything"
        elif healthy:
            action = RecommendedAction.CONCLUDE_WINNER
            best = max(healthy, key=lambda t: abs(t.significance.effect_size or 0.0))
            winner = best.variant_id
            reason = _winner_reason(best, method)
        elif treatments and decided:
            action = RecommendedAction.CONCLUDE_NO_DIFFERENCE
            reason = _no_winner_reason(treatments)
        else:
            action = RecommendedAction.CONTINUE
            reason = _continue_reason(treatments, method)
        return ExperimentAnalysis(
            experiment_id=experiment.experiment_id,
            primary_metric=experiment.primary_metric,
            control_variant_id=experiment.control.variant_id,
            treatments=treatments,
            sample_ratio=srm,
            recommendation=action,
            recommended_winner=winner,
            warnings=warnings,
            method=method.value,
            reason=reason,
        )


_ACTIONS = {
    "better": RecommendedAction.CONCLUDE_WINNER,
    "worse": RecommendedAction.CONCLUDE_NO_DIFFERENCE,
    "equivalent": RecommendedAction.CONCLUDE_NO_DIFFERENCE,
    "no_difference": RecommendedAction.CONCLUDE_NO_DIFFERENCE,
    "inconclusive": RecommendedAction.CONTINUE,
    "underpowered": RecommendedAction.CONTINUE,
    "no_data": RecommendedAction.CONTINUE,
}


def _strata(pairs: Sequence[Pair], metric: str, rate: bool) -> list[sequential.Stratum]:
    strata = []
    for control, treatment in pairs:
        if rate:
            x_c, n_c = control.proportion(metric)
            x_t, n_t = treatment.proportion(metric)
            strata.append(sequential.proportion_stratum(x_c, n_c, x_t, n_t))
            continue
        c, t = control.continuous(metric), treatment.continuous(metric)
        if c.variance is not None and t.variance is not None:
            strata.append(
                sequential.Stratum(
                    c.mean or 0.0,
                    t.mean or 0.0,
                    c.variance / c.count,
                    t.variance / t.count,
                    c.count,
                    t.count,
                )  # fmt: skip
            )
    return strata


def _one_phase(experiment: Experiment, metrics: Mapping[str, ExperimentMetrics]) -> PhaseMetrics:
    from chalicelib.abtesting.models import PhaseReason

    weights = {v.variant_id: v.traffic_weight for v in experiment.variants}
    start = experiment.start_time or experiment.created_at
    phase = AllocationPhase(0, start, PhaseReason.START, weights)
    full = {v.variant_id: metrics.get(v.variant_id, ExperimentMetrics(v.variant_id))
            for v in experiment.variants}  # fmt: skip
    return PhaseMetrics(phase, full)


def comparable_pairs(
    phases: Sequence[PhaseMetrics], control_id: str, treatment_id: str
) -> list[Pair]:
    """``(control, treatment)`` of every phase in which both had traffic."""
    found = []
    for item in phases:
        weights = item.phase.weights
        if weights.get(control_id, 0) > 0 and weights.get(treatment_id, 0) > 0:
            found.append(
                (item.metrics.get(control_id, ExperimentMetrics(control_id)),
                 item.metrics.get(treatment_id, ExperimentMetrics(treatment_id)))
            )  # fmt: skip
    return found


def _empty_pair(control_id: str, variant: object) -> Pair:
    return ExperimentMetrics(control_id), ExperimentMetrics(getattr(variant, "variant_id", ""))


def _adjusted(p_values: list[float], method: AnalysisMethod) -> list[float]:
    """Holm (fixed) or Bonferroni (sequential: matches the intervals at alpha / k)."""
    if method is AnalysisMethod.FIXED:
        return holm_bonferroni(p_values)
    return [min(1.0, p * len(p_values)) for p in p_values]


def _interval_text(result: SignificanceResult) -> str:
    low, high = result.confidence_interval
    kind = "confidence sequence" if result.method == "sequential" else "confidence interval"
    level = 1 - (result.alpha or 0.05)
    return f"{level:.1%} {kind} of the difference [{low:+.4g}, {high:+.4g}]"


def _winner_reason(best: TreatmentAnalysis, method: AnalysisMethod) -> str:
    result = best.significance
    kind = "always-valid" if method is AnalysisMethod.SEQUENTIAL else "fixed-horizon"
    return (
        f"{best.variant_id} is better on {result.metric_name} "
        f"({result.control_value:.4g} → {result.treatment_value:.4g}): {kind} p = "
        f"{best.adjusted_p_value:.3g} (adjusted), {_interval_text(result)}; guardrails healthy"
    )


def _no_winner_reason(treatments: list[TreatmentAnalysis]) -> str:
    parts = [f"{t.variant_id}: {t.significance.decision}" for t in treatments]
    return "no treatment beats the control (" + ", ".join(parts) + "); keep the control"


def _continue_reason(treatments: list[TreatmentAnalysis], method: AnalysisMethod) -> str:
    parts = []
    for item in treatments:
        result = item.significance
        planned = result.planned_sample_size
        if result.decision == "underpowered" and planned is None:
            parts.append(
                f"{item.variant_id}: underpowered: keep running (no plan yet: the control's rate "
                "or spread is still unknown; or declare analysis.planned_sample_size)"
            )
        elif result.decision == "underpowered":
            parts.append(
                f"{item.variant_id}: underpowered: keep running until {planned} requests per "
                "arm (the planned sample size for the minimum detectable effect)"
            )
        elif result.decision == "no_data":
            parts.append(f"{item.variant_id}: no data yet")
        else:
            expected = ""
            if planned:
                expected = f"; about {planned} per arm decide an effect of the minimum size"
            parts.append(f"{item.variant_id}: {result.decision}: keep running{expected}")
    return "; ".join(parts) or "no treatments"


def bayesian_decision(
    reading: bayes.BayesianResult | None, risk_threshold: float, adequate: bool
) -> str:
    """``better``, ``keep_control``, ``inconclusive`` or ``no_data`` by expected loss.

    ``better`` when the risk of shipping the treatment is below the threshold (and smaller
    than that of keeping the control: identical arms keep the control); ``keep_control``
    when the risk of keeping the control is;
    ``inconclusive`` before ``minimum_sample_size`` requests per arm or while both are above it.
    """
    if reading is None:
        return "no_data"
    risk_t, risk_c = reading.risk_treatment, reading.risk_control
    if not adequate or risk_t is None or risk_c is None:
        return "inconclusive"
    if risk_t < risk_threshold and risk_t < risk_c:  # equal arms: nothing to ship
        return "better"
    if risk_c < risk_threshold:
        return "keep_control"
    return "inconclusive"


def _bayesian_verdict(
    experiment: Experiment, treatments: Sequence[TreatmentAnalysis], srm: SampleRatioResult
) -> EngineVerdict:
    threshold = experiment.analysis.decision.risk_threshold
    if srm.mismatch:
        return EngineVerdict(
            RecommendedAction.CONTINUE,
            None,
            "sample ratio mismatch: fix assignment or logging before deciding anything",
        )
    healthy = [
        t for t in treatments
        if t.bayesian_decision == "better" and not any(g.degraded for g in t.guardrails)
    ]  # fmt: skip
    if healthy:
        best = max(healthy, key=lambda t: t.bayesian.chance_to_win if t.bayesian else 0.0)
        reading = best.bayesian
        assert reading is not None
        return EngineVerdict(
            RecommendedAction.CONCLUDE_WINNER,
            best.variant_id,
            f"{best.variant_id} is better on {reading.metric_name}: chance to win "
            f"{reading.chance_to_win:.1%}, risk {reading.risk_treatment:.3g} < threshold "
            f"{threshold:g} (expected loss relative to the control); guardrails healthy",
        )
    settled = all(
        t.bayesian_decision == "keep_control"
        or (t.bayesian_decision == "better" and t not in healthy)
        for t in treatments
    )
    parts = ", ".join(f"{t.variant_id}: {t.bayesian_decision}" for t in treatments)
    if treatments and settled:
        return EngineVerdict(
            RecommendedAction.CONCLUDE_NO_DIFFERENCE,
            None,
            f"keeping the control risks less than {threshold:g} against every treatment or a "
            f"guardrail degraded ({parts}); keep the control",
        )
    return EngineVerdict(
        RecommendedAction.CONTINUE,
        None,
        f"no arm's expected loss is below the risk threshold {threshold:g} yet ({parts}): "
        "keep running",
    )


def _with_verdicts(
    experiment: Experiment, frequentist: ExperimentAnalysis, srm: SampleRatioResult
) -> ExperimentAnalysis:
    """The analysis with both engines' verdicts; the configured engine's is the recommendation."""
    settings = experiment.analysis.decision
    verdicts = {
        DecisionEngine.FREQUENTIST.value: EngineVerdict(
            frequentist.recommendation, frequentist.recommended_winner, frequentist.reason
        ),
        DecisionEngine.BAYESIAN.value: _bayesian_verdict(experiment, frequentist.treatments, srm),
    }
    chosen = verdicts[DecisionEngine(settings.engine).value]
    return replace(
        frequentist,
        recommendation=chosen.recommendation,
        recommended_winner=chosen.recommended_winner,
        reason=chosen.reason,
        decision_engine=DecisionEngine(settings.engine).value,
        verdicts=verdicts,
        risk_threshold=settings.risk_threshold,
    )


def _declared(
    experiment: Experiment, raw: Sequence[tuple[Any, ...]], method: AnalysisMethod
) -> list[declared.MetricComparison]:
    """Every declared metric for every treatment (totals of the comparable phases)."""
    specs = declared.beside_primary(experiment.analysis.metrics, experiment.primary_metric)
    if not specs:
        return []
    pairs = {item[0]: (item[2], item[3]) for item in raw}
    return declared.compare_all(
        specs, pairs, experiment.analysis.correction, method.value,
        round(1.0 - experiment.confidence_level, 12), experiment.analysis.tuning_sample_size,
    )  # fmt: skip


def _with_declared_guardrails(
    item: TreatmentAnalysis, comparisons: Sequence[declared.MetricComparison]
) -> TreatmentAnalysis:
    """Adds the declared guardrail metrics to the treatment's guardrails: ``fail`` (degraded,
    which blocks promotion in both engines) when significantly worse after the correction."""
    extra = []
    for found in comparisons:
        if found.variant_id != item.variant_id or found.role != "guardrail":
            continue
        failed = found.direction == "worse"
        extra.append(
            GuardrailResult(
                found.metric_name,
                found.control.value if found.control else None,
                found.treatment.value if found.treatment else None,
                found.relative_change,
                failed,
                found.difference is not None,
                "fail" if failed else "inconclusive",
                f"declared {found.kind} metric: {found.test}, adjusted p "
                f"{found.adjusted_p_value:.3g}",
                found.interval or (-math.inf, math.inf),
            )
        )
    if not extra:
        return item
    return replace(item, guardrails=[*item.guardrails, *extra])
