"""Frequentist statistics of experiments, computed from sufficient statistics.

* Rates (conversion, success, error): two-proportion z-test with the pooled standard error for
  the test and the unpooled (Wald) standard error for the confidence interval of the difference,
  as ``statsmodels.stats.proportion.proportions_ztest`` / ``confint_proportions_2indep``.
* Continuous metrics (latency, custom metrics): Welch's t-test from count, sum and sum of squares,
  as ``statsmodels.stats.weightstats.ttest_ind(usevar="unequal")``.
* Sample size per arm for a rate: Cohen's h with the normal approximation,
  ``n = 2 ((z_{1-alpha/2} + z_{power}) / h)^2`` with ``h = 2 asin(sqrt(p2)) - 2 asin(sqrt(p1))``
  and ``p2 = baseline * (1 + minimum_detectable_effect)`` (the effect is relative), as
  ``NormalIndPower().solve_power(proportion_effectsize(p2, p1), ...)`` rounded up.
* Sample-ratio mismatch: Pearson chi-square of observed requests against the weights.
* Several treatments: Holm-Bonferroni adjusted p-values.

scipy is imported only inside the functions that need the t and chi-square distributions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

from chalicelib.abtesting.models import (
    LOWER_IS_BETTER,
    RATE_METRICS,
    Experiment,
    ExperimentMetrics,
    GuardrailResult,
    RecommendedAction,
    SampleRatioResult,
    SignificanceResult,
)
from chalicelib.core.errors import UnprocessableEntity

_NORMAL = NormalDist()
SRM_ALPHA = 0.001


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
    """

    variant_id: str
    significance: SignificanceResult
    adjusted_p_value: float
    guardrails: list[GuardrailResult]
    improves: bool


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
        recommended_winner: The variant to conclude with (the control when nothing beat it).
        warnings: Human-readable concerns (SRM, degraded guardrails).
    """

    experiment_id: str
    primary_metric: str
    control_variant_id: str
    treatments: list[TreatmentAnalysis]
    sample_ratio: SampleRatioResult
    recommendation: RecommendedAction
    recommended_winner: str | None
    warnings: list[str] = field(default_factory=list)


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


def plan_sample_size(
    baseline_rate: float,
    minimum_detectable_effect: float,
    confidence_level: float = 0.95,
    power: float = 0.8,
    variants: int = 2,
    daily_traffic: int | None = None,
) -> SampleSizePlan:
    """Requests per arm, in total and in days, to detect a relative change of a rate.

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

    Raises:
        UnprocessableEntity: Fewer than 2 variants, no positive traffic, or what
            :meth:`StatisticalAnalyzer.calculate_sample_size_requirement` refuses.
    """
    if variants < 2 or (daily_traffic is not None and daily_traffic < 1):
        raise UnprocessableEntity("need at least 2 variants and a positive daily_traffic")
    comparisons = variants - 1
    per_comparison = 1 - (1 - confidence_level) / comparisons
    per_variant = StatisticalAnalyzer().calculate_sample_size_requirement(
        baseline_rate, minimum_detectable_effect, per_comparison, power
    )
    total = per_variant * variants
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
    )


class StatisticalAnalyzer:
    """Significance tests, sample sizes, guardrails, SRM and Holm correction.

    Args:
        confidence_level: Default confidence level (e.g. 0.95).
        minimum_sample_size: Requests each arm needs before a conclusion is recommended.
    """

    def __init__(self, confidence_level: float = 0.95, minimum_sample_size: int = 1000) -> None:
        self.confidence_level = confidence_level
        self.minimum_sample_size = minimum_sample_size

    def calculate_significance(
        self,
        control: ExperimentMetrics,
        treatment: ExperimentMetrics,
        metric_name: str,
        confidence_level: float | None = None,
    ) -> SignificanceResult:
        """Compares treatment with control on one metric (``treatment - control``).

        Rates use the two-proportion z-test; ``latency_ms`` and custom metrics use Welch's t.
        """
        level = self.confidence_level if confidence_level is None else confidence_level
        if metric_name in RATE_METRICS:
            return self._proportions(control, treatment, metric_name, level)
        return self._welch(control, treatment, metric_name, level)

    def _adequate(self, control: ExperimentMetrics, treatment: ExperimentMetrics) -> bool:
        smallest = min(control.request_count, treatment.request_count)
        return smallest >= self.minimum_sample_size

    def _result(
        self,
        metric: str,
        test: str,
        values: tuple[float | None, float | None],
        statistic: float,
        p_value: float,
        interval: tuple[float, float],
        adequate: bool,
        level: float,
    ) -> SignificanceResult:
        control_value, treatment_value = values
        significant = p_value < 1.0 - level
        lift = None
        if control_value and treatment_value is not None:
            lift = (treatment_value - control_value) / control_value
        if not adequate:
            action = RecommendedAction.CONTINUE
        elif significant:
            action = RecommendedAction.CONCLUDE_WINNER
        else:
            action = RecommendedAction.CONCLUDE_NO_DIFFERENCE
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
            recommended_action=action,
            statistic=statistic,
        )

    def _proportions(
        self, control: ExperimentMetrics, treatment: ExperimentMetrics, metric: str, level: float
    ) -> SignificanceResult:
        x_c, n_c = control.proportion(metric)
        x_t, n_t = treatment.proportion(metric)
        adequate = self._adequate(control, treatment)
        if not n_c or not n_t:
            values = (x_c / n_c if n_c else None, x_t / n_t if n_t else None)
            nan = (math.nan, math.nan)
            return self._result(
                metric, "two_proportion_z", values, math.nan, 1.0, nan, False, level
            )
        p_c, p_t = x_c / n_c, x_t / n_t
        diff = p_t - p_c
        pooled = (x_c + x_t) / (n_c + n_t)
        se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
        z = diff / se_pooled if se_pooled > 0 else 0.0
        p_value = two_sided_normal_p(z) if se_pooled > 0 else 1.0
        se = math.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
        half = _NORMAL.inv_cdf(1 - (1 - level) / 2) * se
        interval = (diff - half, diff + half)
        values = (p_c, p_t)
        return self._result(
            metric, "two_proportion_z", values, z, p_value, interval, adequate, level
        )

    def _welch(
        self, control: ExperimentMetrics, treatment: ExperimentMetrics, metric: str, level: float
    ) -> SignificanceResult:
        c, t = control.continuous(metric), treatment.continuous(metric)
        adequate = self._adequate(control, treatment)
        values = (c.mean, t.mean)
        nan = (math.nan, math.nan)
        if c.variance is None or t.variance is None:
            return self._result(metric, "welch_t", values, math.nan, 1.0, nan, False, level)
        diff = t.mean - c.mean  # type: ignore[operator]
        var_c, var_t = c.variance / c.count, t.variance / t.count
        se = math.sqrt(var_c + var_t)
        if se == 0:
            return self._result(metric, "welch_t", values, 0.0, 1.0, (diff, diff), adequate, level)
        from scipy import stats

        dof = (var_c + var_t) ** 2 / (var_c**2 / (c.count - 1) + var_t**2 / (t.count - 1))
        statistic = diff / se
        p_value = float(2 * stats.t.sf(abs(statistic), dof))
        half = float(stats.t.ppf(1 - (1 - level) / 2, dof)) * se
        interval = (diff - half, diff + half)
        return self._result(
            metric, "welch_t", values, statistic, p_value, interval, adequate, level
        )

    def calculate_sample_size_requirement(
        self,
        baseline_rate: float,
        minimum_detectable_effect: float,
        confidence_level: float = 0.95,
        power: float = 0.8,
    ) -> int:
        """Requests per arm to detect a relative change of a rate (two-sided test).

        Args:
            baseline_rate: The control's rate, in (0, 1).
            minimum_detectable_effect: Relative change to detect (0.1 = +10 %).
            confidence_level: 1 - alpha.
            power: 1 - beta.

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
        h = 2 * math.asin(math.sqrt(target)) - 2 * math.asin(math.sqrt(baseline_rate))
        z_alpha = _NORMAL.inv_cdf(1 - (1 - confidence_level) / 2)
        z_beta = _NORMAL.inv_cdf(power)
        needed = 2 * ((z_alpha + z_beta) / abs(h)) ** 2 if h else math.inf
        if not needed <= MAX_SAMPLE_SIZE:
            raise UnprocessableEntity(
                f"detecting this effect needs more than {MAX_SAMPLE_SIZE:.0e} requests per arm"
            )
        return math.ceil(needed)

    def check_guardrail_metrics(
        self,
        control: ExperimentMetrics,
        treatment: ExperimentMetrics,
        guardrail_names: Sequence[str],
        degradation_threshold: float = 0.1,
    ) -> list[GuardrailResult]:
        """Flags guardrails on which the treatment is worse than control by more than the threshold.

        "Worse" is higher for error rate and latencies, lower for other rates and custom metrics.
        The change is relative to control; when control is 0, any worsening counts as degraded.
        """
        results = []
        for name in guardrail_names:
            c_value, t_value = control.value(name), treatment.value(name)
            if c_value is None or t_value is None:
                results.append(GuardrailResult(name, c_value, t_value, None, False, False))
                continue
            worsening = t_value - c_value if name in LOWER_IS_BETTER else c_value - t_value
            if c_value:
                change = (t_value - c_value) / abs(c_value)
                degraded = worsening / abs(c_value) > degradation_threshold
            else:
                change = math.inf if t_value > 0 else (-math.inf if t_value < 0 else 0.0)
                degraded = worsening > 0
            results.append(GuardrailResult(name, c_value, t_value, change, degraded, True))
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
        from scipy import stats

        active = [name for name, weight in weights.items() if weight > 0]
        total = sum(observed.get(name, 0) for name in active)
        weight_sum = sum(float(weights[name]) for name in active)
        expected = {name: total * float(weights[name]) / weight_sum for name in active}
        counts = {name: int(observed.get(name, 0)) for name in active}
        if total == 0 or len(active) < 2:
            return SampleRatioResult(0.0, 1.0, False, counts, expected)
        chi_square = sum((counts[n] - expected[n]) ** 2 / expected[n] for n in active)
        p_value = float(stats.chi2.sf(chi_square, len(active) - 1))
        return SampleRatioResult(chi_square, p_value, p_value < alpha, counts, expected)

    def analyze(
        self, experiment: Experiment, metrics: Mapping[str, ExperimentMetrics]
    ) -> ExperimentAnalysis:
        """Significance per treatment (Holm-adjusted), guardrails, SRM and a recommendation."""
        control_id = experiment.control.variant_id
        control = metrics.get(control_id, ExperimentMetrics(control_id))
        metric = experiment.primary_metric
        raw = [
            self.calculate_significance(
                control,
                metrics.get(t.variant_id, ExperimentMetrics(t.variant_id)),
                metric,
                experiment.confidence_level,
            )
            for t in experiment.treatments
        ]
        adjusted = holm_bonferroni([result.p_value for result in raw])
        treatments = [
            self._treatment(experiment, control, metrics, variant.variant_id, result, p_adj)
            for variant, result, p_adj in zip(experiment.treatments, raw, adjusted, strict=True)
        ]
        weights = {v.variant_id: float(v.traffic_weight) for v in experiment.variants}
        observed = {name: m.request_count for name, m in metrics.items()}
        srm = self.check_sample_ratio(observed, weights)
        return self._recommend(experiment, treatments, srm)

    def _treatment(
        self,
        experiment: Experiment,
        control: ExperimentMetrics,
        metrics: Mapping[str, ExperimentMetrics],
        variant_id: str,
        result: SignificanceResult,
        adjusted: float,
    ) -> TreatmentAnalysis:
        significant = adjusted < 1.0 - experiment.confidence_level
        action = result.recommended_action
        if result.sample_size_adequate:
            action = (
                RecommendedAction.CONCLUDE_WINNER
                if significant
                else RecommendedAction.CONCLUDE_NO_DIFFERENCE
            )
        corrected = SignificanceResult(
            **{**result.__dict__, "is_significant": significant, "recommended_action": action}
        )
        treatment = metrics.get(variant_id, ExperimentMetrics(variant_id))
        guardrails = self.check_guardrail_metrics(control, treatment, experiment.guardrail_metrics)
        lower = experiment.primary_metric in LOWER_IS_BETTER
        direction = (result.treatment_value or 0.0) - (result.control_value or 0.0)
        better = direction < 0 if lower else direction > 0
        improves = significant and result.sample_size_adequate and better
        return TreatmentAnalysis(variant_id, corrected, adjusted, guardrails, improves)

    def _recommend(
        self,
        experiment: Experiment,
        treatments: list[TreatmentAnalysis],
        srm: SampleRatioResult,
    ) -> ExperimentAnalysis:
        warnings = []
        if srm.mismatch:
            warnings.append(
                f"sample ratio mismatch (chi-square {srm.chi_square:.2f}, p={srm.p_value:.2g}): "
                "assignment or logging is broken; do not trust the results"
            )
        for item in treatments:
            for guard in item.guardrails:
                if guard.degraded:
                    warnings.append(f"{item.variant_id}: guardrail {guard.metric_name} degraded")
        healthy = [
            t for t in treatments if t.improves and not any(g.degraded for g in t.guardrails)
        ]
        control_id = experiment.control.variant_id
        adequate = all(t.significance.sample_size_adequate for t in treatments)
        winner: str | None = None
        if srm.mismatch or not adequate:
            action = RecommendedAction.CONTINUE
        elif healthy:
            action = RecommendedAction.CONCLUDE_WINNER
            best = max(healthy, key=lambda t: abs(t.significance.effect_size or 0.0))
            winner = best.variant_id
        else:
            action = RecommendedAction.CONCLUDE_NO_DIFFERENCE
            winner = control_id
        return ExperimentAnalysis(
            experiment_id=experiment.experiment_id,
            primary_metric=experiment.primary_metric,
            control_variant_id=control_id,
            treatments=treatments,
            sample_ratio=srm,
            recommendation=action,
            recommended_winner=winner,
            warnings=warnings,
        )


def metrics_from_counters(variant_id: str, raw: Mapping[str, object]) -> ExperimentMetrics:
    """Builds :class:`ExperimentMetrics` from merged shard counters (see the repository)."""
    from chalicelib.abtesting import sketch
    from chalicelib.abtesting.models import SufficientStats

    sums = dict(raw.get("sums", {}))  # type: ignore[call-overload]
    histogram = dict(raw.get("histogram", {}))  # type: ignore[call-overload]

    def count(name: str) -> int:
        return int(sums.get(name, 0))

    requests = count("request_count")
    latency = SufficientStats(
        requests, float(sums.get("latency_sum", 0)), float(sums.get("latency_sumsq", 0))
    )
    custom_stats: dict[str, SufficientStats] = {}
    for name in sums:
        if name.startswith("c:") and name.endswith(":n"):
            metric = name[2:-2]
            custom_stats[metric] = SufficientStats(
                count(name),
                float(sums.get(f"c:{metric}:s", 0)),
                float(sums.get(f"c:{metric}:ss", 0)),
            )
    trials, converted = count("conversion_trials"), count("converted_count")
    return ExperimentMetrics(
        variant_id=variant_id,
        request_count=requests,
        success_count=count("success_count"),
        error_count=count("error_count"),
        latency_p50_ms=sketch.quantile(histogram, 0.50),
        latency_p95_ms=sketch.quantile(histogram, 0.95),
        latency_p99_ms=sketch.quantile(histogram, 0.99),
        conversion_rate=converted / trials if trials else None,
        custom_metrics={k: v.mean for k, v in custom_stats.items() if v.mean is not None},
        converted_count=converted,
        conversion_trials=trials,
        latency=latency,
        custom_stats=custom_stats,
    )
