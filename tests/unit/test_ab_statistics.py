"""Statistics against statsmodels and scipy, guardrails, SRM, Holm, latency sketch, bandit."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)
from statsmodels.stats.weightstats import ttest_ind

from chalicelib.abtesting import sketch
from chalicelib.abtesting.bandit import quantize_weights, thompson_weights
from chalicelib.abtesting.models import (
    Experiment,
    ExperimentMetrics,
    ExperimentStatus,
    ModelVariant,
    RecommendedAction,
    SufficientStats,
    TrafficAllocationStrategy,
)
from chalicelib.abtesting.statistics import (
    StatisticalAnalyzer,
    holm_bonferroni,
    plan_sample_size,
)
from chalicelib.core.errors import UnprocessableEntity

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _rates(variant: str, converted: int, trials: int) -> ExperimentMetrics:
    return ExperimentMetrics(
        variant, request_count=trials, converted_count=converted, conversion_trials=trials
    )


def _continuous(variant: str, values: np.ndarray) -> ExperimentMetrics:
    stats = SufficientStats(len(values), float(values.sum()), float((values**2).sum()))
    return ExperimentMetrics(variant, request_count=len(values), latency=stats)


@pytest.mark.parametrize(
    ("xc", "nc", "xt", "nt"),
    [(100, 1000, 130, 1000), (480, 5000, 530, 5100), (12, 400, 9, 380), (0, 50, 3, 60)],
)
def test_two_proportion_z_test_matches_statsmodels(xc: int, nc: int, xt: int, nt: int) -> None:
    result = StatisticalAnalyzer(minimum_sample_size=1).calculate_significance(
        _rates("c", xc, nc), _rates("t", xt, nt), "conversion_rate"
    )
    z, p = proportions_ztest([xt, xc], [nt, nc])
    low, high = confint_proportions_2indep(xt, nt, xc, nc, method="wald", compare="diff")
    assert result.test == "two_proportion_z"
    assert result.statistic == pytest.approx(z, abs=1e-6)
    assert result.p_value == pytest.approx(p, abs=1e-6)
    assert result.confidence_interval[0] == pytest.approx(low, abs=1e-6)
    assert result.confidence_interval[1] == pytest.approx(high, abs=1e-6)
    assert result.is_significant == (p < 0.05)
    if xc:
        assert result.effect_size == pytest.approx((xt / nt - xc / nc) / (xc / nc))


def test_welch_t_test_from_sufficient_statistics_matches_statsmodels() -> None:
    rng = np.random.default_rng(3)
    control = rng.normal(100, 15, size=800)
    treatment = rng.normal(103, 25, size=650)
    result = StatisticalAnalyzer(minimum_sample_size=1).calculate_significance(
        _continuous("c", control), _continuous("t", treatment), "latency_ms"
    )
    t, p, dof = ttest_ind(treatment, control, usevar="unequal")
    assert result.test == "welch_t"
    assert result.statistic == pytest.approx(t, abs=1e-6)
    assert result.p_value == pytest.approx(p, abs=1e-6)
    from scipy import stats

    se = math.sqrt(treatment.var(ddof=1) / 650 + control.var(ddof=1) / 800)
    half = stats.t.ppf(0.975, dof) * se
    diff = treatment.mean() - control.mean()
    assert result.confidence_interval[0] == pytest.approx(diff - half, abs=1e-6)
    assert result.confidence_interval[1] == pytest.approx(diff + half, abs=1e-6)


def test_custom_metric_uses_welch_on_its_own_statistics() -> None:
    control = ExperimentMetrics("c", 10, custom_stats={"revenue": SufficientStats(3, 6.0, 14.0)})
    treatment = ExperimentMetrics("t", 10, custom_stats={"revenue": SufficientStats(3, 9.0, 29.0)})
    result = StatisticalAnalyzer(minimum_sample_size=1).calculate_significance(
        control, treatment, "revenue"
    )
    t, p, _ = ttest_ind([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], usevar="unequal")
    assert result.statistic == pytest.approx(t, abs=1e-6)
    assert result.p_value == pytest.approx(p, abs=1e-6)


def test_no_data_is_not_significant_and_says_continue() -> None:
    analyzer = StatisticalAnalyzer()
    empty = analyzer.calculate_significance(
        ExperimentMetrics("c"), ExperimentMetrics("t"), "latency_ms"
    )
    assert not empty.is_significant and empty.p_value == 1.0
    assert empty.recommended_action is RecommendedAction.CONTINUE
    rates = analyzer.calculate_significance(_rates("c", 0, 0), _rates("t", 1, 10), "error_rate")
    assert rates.p_value == 1.0 and not rates.sample_size_adequate


def test_identical_constant_samples_are_not_significant() -> None:
    same = _continuous("c", np.full(50, 7.0))
    result = StatisticalAnalyzer(minimum_sample_size=10).calculate_significance(
        same, _continuous("t", np.full(50, 7.0)), "latency_ms"
    )
    assert result.p_value == 1.0
    assert result.recommended_action is RecommendedAction.CONCLUDE_NO_DIFFERENCE


def test_recommended_action_follows_sample_size_and_significance() -> None:
    analyzer = StatisticalAnalyzer(minimum_sample_size=1000)
    small = analyzer.calculate_significance(
        _rates("c", 10, 100), _rates("t", 40, 100), "conversion_rate"
    )
    assert small.is_significant and small.recommended_action is RecommendedAction.CONTINUE
    big = analyzer.calculate_significance(
        _rates("c", 100, 2000), _rates("t", 200, 2000), "conversion_rate"
    )
    assert big.recommended_action is RecommendedAction.CONCLUDE_WINNER


@pytest.mark.parametrize(
    ("baseline", "mde", "confidence", "power"),
    [(0.10, 0.10, 0.95, 0.8), (0.05, 0.20, 0.95, 0.9), (0.30, -0.05, 0.99, 0.8)],
)
def test_sample_size_matches_statsmodels_normal_power(
    baseline: float, mde: float, confidence: float, power: float
) -> None:
    found = StatisticalAnalyzer().calculate_sample_size_requirement(
        baseline, mde, confidence, power
    )
    effect = proportion_effectsize(baseline * (1 + mde), baseline)
    expected = NormalIndPower().solve_power(
        effect_size=effect, alpha=1 - confidence, power=power, alternative="two-sided"
    )
    assert found == math.ceil(expected)


def test_sample_size_known_value_for_ten_percent_lift_on_ten_percent() -> None:
    assert StatisticalAnalyzer().calculate_sample_size_requirement(0.10, 0.10) == 14_745


@pytest.mark.parametrize("variants", [2, 3, 5])
def test_a_sample_size_plan_splits_alpha_over_the_comparisons(variants: int) -> None:
    plan = plan_sample_size(0.10, 0.10, 0.95, 0.8, variants=variants, daily_traffic=10_000)
    alpha = 0.05 / (variants - 1)
    expected = NormalIndPower().solve_power(
        effect_size=proportion_effectsize(0.11, 0.10), alpha=alpha, power=0.8
    )
    assert plan.per_variant == math.ceil(expected)
    assert plan.total == plan.per_variant * variants
    assert plan.comparisons == variants - 1
    assert plan.days == math.ceil(plan.total / 10_000)
    assert plan.target_rate == pytest.approx(0.11)
    if variants == 2:
        assert plan.per_variant == 14_745


def test_a_sample_size_plan_refuses_one_arm_or_no_traffic() -> None:
    with pytest.raises(UnprocessableEntity):
        plan_sample_size(0.1, 0.1, variants=1)
    with pytest.raises(UnprocessableEntity):
        plan_sample_size(0.1, 0.1, daily_traffic=0)
    for invisible in (1e-300, 1e-9):  # rounds to no change / needs > 1e12 per arm
        with pytest.raises(UnprocessableEntity):
            plan_sample_size(0.1, invisible)
    assert plan_sample_size(0.1, 0.1).days is None


def test_sample_size_rejects_impossible_inputs() -> None:
    with pytest.raises(UnprocessableEntity):
        StatisticalAnalyzer().calculate_sample_size_requirement(0.6, 1.0)
    with pytest.raises(UnprocessableEntity):
        StatisticalAnalyzer().calculate_sample_size_requirement(0.1, 0.0)


def test_guardrails_flag_degradation_in_the_bad_direction_only() -> None:
    control = ExperimentMetrics(
        "c", 1000, 990, 10, latency_p95_ms=100.0, converted_count=100, conversion_trials=1000
    )
    worse = ExperimentMetrics(
        "t", 1000, 970, 30, latency_p95_ms=125.0, converted_count=95, conversion_trials=1000
    )
    better = ExperimentMetrics(
        "t", 1000, 995, 5, latency_p95_ms=80.0, converted_count=150, conversion_trials=1000
    )
    names = ["error_rate", "latency_p95_ms", "conversion_rate"]
    analyzer = StatisticalAnalyzer()
    flagged = {g.metric_name: g for g in analyzer.check_guardrail_metrics(control, worse, names)}
    assert flagged["error_rate"].degraded
    assert flagged["error_rate"].relative_change == pytest.approx(2.0)
    assert flagged["latency_p95_ms"].degraded
    assert not flagged["conversion_rate"].degraded  # 5 % drop is within the 10 % threshold
    assert not any(g.degraded for g in analyzer.check_guardrail_metrics(control, better, names))


def test_guardrail_with_zero_control_errors_and_missing_data() -> None:
    analyzer = StatisticalAnalyzer()
    clean = ExperimentMetrics("c", 100, 100, 0)
    faulty = ExperimentMetrics("t", 100, 99, 1)
    result = analyzer.check_guardrail_metrics(clean, faulty, ["error_rate", "latency_p99_ms"])
    assert result[0].degraded and result[0].relative_change == math.inf
    assert not result[1].has_data and not result[1].degraded


def test_sample_ratio_mismatch_is_detected_by_chi_square() -> None:
    from scipy.stats import chisquare

    analyzer = StatisticalAnalyzer()
    weights = {"c": 0.5, "t": 0.5}
    fine = analyzer.check_sample_ratio({"c": 5020, "t": 4980}, weights)
    assert not fine.mismatch
    skewed = analyzer.check_sample_ratio({"c": 5300, "t": 4700}, weights)
    stat, p = chisquare([5300, 4700], [5000, 5000])
    assert skewed.mismatch
    assert skewed.chi_square == pytest.approx(stat) and skewed.p_value == pytest.approx(p)
    assert not analyzer.check_sample_ratio({}, weights).mismatch


def test_holm_bonferroni_matches_statsmodels() -> None:
    p_values = [0.01, 0.04, 0.03, 0.005, 0.2]
    expected = multipletests(p_values, method="holm")[1]
    assert holm_bonferroni(p_values) == pytest.approx(list(expected))


def _experiment(*treatments: str) -> Experiment:
    share = Decimal(1) / (1 + len(treatments))
    variants = [ModelVariant("c", "m", 1, share, True)] + [
        ModelVariant(name, "m", 2, share) for name in treatments
    ]
    return Experiment(
        "exp", "e", "", tuple(variants), ExperimentStatus.RUNNING,
        TrafficAllocationStrategy.PERCENTAGE, NOW, None, 1000, 0.95, "conversion_rate",
        ("error_rate",), NOW, NOW,
    )  # fmt: skip


def test_analysis_applies_holm_and_picks_a_healthy_winner() -> None:
    experiment = _experiment("a", "b", "d", "e")
    metrics = {
        "c": ExperimentMetrics("c", 4000, 3990, 10, converted_count=400, conversion_trials=4000),
        "a": ExperimentMetrics("a", 4000, 3990, 10, converted_count=520, conversion_trials=4000),
        "b": ExperimentMetrics("b", 4000, 3990, 10, converted_count=462, conversion_trials=4000),
        "d": ExperimentMetrics("d", 4000, 3900, 100, converted_count=600, conversion_trials=4000),
        "e": ExperimentMetrics("e", 4000, 3990, 10, converted_count=405, conversion_trials=4000),
    }
    analysis = StatisticalAnalyzer().analyze(experiment, metrics)
    by_id = {t.variant_id: t for t in analysis.treatments}
    # b alone has p < 0.05 but not after Holm (second largest p of four: times 2)
    assert by_id["b"].significance.p_value < 0.05 < by_id["b"].adjusted_p_value
    assert not by_id["b"].significance.is_significant
    assert by_id["a"].improves
    # d converts best but breaks the error-rate guardrail, so a wins
    assert analysis.recommendation is RecommendedAction.CONCLUDE_WINNER
    assert analysis.recommended_winner == "a"
    assert any("d: guardrail error_rate degraded" in w for w in analysis.warnings)


def test_analysis_with_srm_says_continue_and_warns() -> None:
    experiment = _experiment("a")
    metrics = {
        "c": ExperimentMetrics("c", 6000, converted_count=600, conversion_trials=6000),
        "a": ExperimentMetrics("a", 4000, converted_count=800, conversion_trials=4000),
    }
    analysis = StatisticalAnalyzer().analyze(experiment, metrics)
    assert analysis.sample_ratio.mismatch
    assert analysis.recommendation is RecommendedAction.CONTINUE
    assert analysis.warnings and "sample ratio mismatch" in analysis.warnings[0]


def test_analysis_without_a_difference_recommends_the_control() -> None:
    experiment = _experiment("a")
    metrics = {
        "c": ExperimentMetrics("c", 5000, converted_count=500, conversion_trials=5000),
        "a": ExperimentMetrics("a", 5000, converted_count=505, conversion_trials=5000),
    }
    analysis = StatisticalAnalyzer().analyze(experiment, metrics)
    assert analysis.recommendation is RecommendedAction.CONCLUDE_NO_DIFFERENCE
    assert analysis.recommended_winner == "c"


def test_latency_sketch_quantiles_are_within_two_percent_of_numpy() -> None:
    rng = np.random.default_rng(11)
    values = rng.lognormal(mean=4.0, sigma=0.8, size=50_000)
    halves = [sketch.histogram(values[:25_000]), sketch.histogram(values[25_000:])]
    merged = sketch.merge(halves)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.percentile(values, q * 100))
        found = sketch.quantile(merged, q)
        assert found is not None and abs(found - exact) / exact <= 0.02


def test_sketch_bucket_value_is_within_one_percent_and_names_round_trip() -> None:
    for value in (0.004, 0.5, 1.0, 12.34, 999.0, 123456.0):
        index = sketch.bucket_index(value)
        assert abs(sketch.bucket_value(index) - value) / value <= 0.01 + 1e-12
        assert sketch.parse_attribute(sketch.attribute_name(index)) == index
    assert sketch.parse_attribute("request_count") is None
    assert sketch.quantile({}, 0.5) is None


def test_bandit_weights_keep_floors_and_sum_to_exactly_one() -> None:
    arms = [(5, 995), (300, 700), (2, 998), (20, 180)]
    weights = thompson_weights(arms, floor=Decimal("0.01"), samples=5000, seed=1)
    assert all(isinstance(w, Decimal) for w in weights)
    assert sum(weights) == Decimal(1)
    assert min(weights) >= Decimal("0.01")
    assert weights[1] == max(weights) and weights[1] > Decimal("0.9")


def test_bandit_weights_are_reproducible_for_a_seed() -> None:
    arms = [(50, 50), (55, 45)]
    first = thompson_weights(arms, samples=2000, seed=42)
    assert first == thompson_weights(arms, samples=2000, seed=42)


def test_quantized_weights_fix_the_rounding_residue_on_the_largest_arm() -> None:
    weights = quantize_weights([1.0, 1.0, 1.0], Decimal("0.05"))
    assert sum(weights) == Decimal(1)
    assert sorted(weights) == [Decimal("0.3333"), Decimal("0.3333"), Decimal("0.3334")]
    assert quantize_weights([0.0, 0.0], Decimal("0.01")) == [Decimal("0.5"), Decimal("0.5")]
