"""Statistics against statsmodels and scipy, guardrails, SRM, Holm, latency sketch, bandit."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
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
    AllocationPhase,
    AnalysisMethod,
    AnalysisSettings,
    ExperimentMetrics,
    PhaseReason,
    RecommendedAction,
    SufficientStats,
)
from chalicelib.abtesting.statistics import (
    PhaseMetrics,
    StatisticalAnalyzer,
    holm_bonferroni,
    plan_sample_size,
)
from chalicelib.core.errors import UnprocessableEntity
from tests.helpers.abtesting import NOW
from tests.helpers.abtesting import analysis_experiment as _experiment
from tests.helpers.abtesting import rate_metrics as _rates
from tests.helpers.oracles import multipletests


def _continuous(variant: str, values: np.ndarray) -> ExperimentMetrics:
    stats = SufficientStats(len(values), float(values.sum()), float((values**2).sum()))
    return ExperimentMetrics(variant, request_count=len(values), latency=stats)


FIXED = AnalysisMethod.FIXED


def _fixed(minimum: int = 1, effect: float = 0.1) -> StatisticalAnalyzer:
    settings = AnalysisSettings(method=FIXED, minimum_detectable_effect=effect)
    return StatisticalAnalyzer(minimum_sample_size=minimum, settings=settings)


@pytest.mark.parametrize(
    ("xc", "nc", "xt", "nt"),
    [(100, 1000, 130, 1000), (480, 5000, 530, 5100), (12, 400, 9, 380), (0, 50, 3, 60),
     (0, 100, 0, 100), (1, 100, 3, 100)],
)  # fmt: skip
def test_fixed_rates_use_newcomb_as_statsmodels_and_a_p_value_that_inverts_it(
    xc: int, nc: int, xt: int, nt: int
) -> None:
    result = _fixed().calculate_significance(
        _rates("c", xc, nc), _rates("t", xt, nt), "conversion_rate"
    )
    low, high = confint_proportions_2indep(xt, nt, xc, nc, method="newcomb", compare="diff")
    assert result.test == "newcomb" and result.method == "fixed"
    assert result.confidence_interval[0] == pytest.approx(low, abs=1e-12)
    assert result.confidence_interval[1] == pytest.approx(high, abs=1e-12)
    assert result.confidence_interval[1] - result.confidence_interval[0] > 0.01  # never (0, 0)
    if xc + xt:
        z, _ = proportions_ztest([xt, xc], [nt, nc])
        assert result.statistic == pytest.approx(z, abs=1e-9)
    # The p-value is the level at which statsmodels' own Newcomb interval touches 0.
    assert result.is_significant == (not low <= 0 <= high)
    if 1e-12 < result.p_value < 1:
        at_p = confint_proportions_2indep(
            xt, nt, xc, nc, method="newcomb", compare="diff", alpha=result.p_value
        )
        assert min(abs(at_p[0]), abs(at_p[1])) < 1e-9


def test_newcomb_p_value_and_interval_agree_on_all_441_small_cases() -> None:
    analyzer = _fixed()
    disagreements = []
    for xc in range(21):
        for xt in range(21):
            result = analyzer.calculate_significance(
                _rates("c", xc, 100), _rates("t", xt, 100), "conversion_rate"
            )
            low, high = result.confidence_interval
            if (result.p_value < 0.05) == (low <= 0 <= high):
                disagreements.append((xc, xt))
    assert disagreements == []


def test_newcomb_interval_covers_at_least_95_percent_at_n_100_for_1_vs_3_percent() -> None:
    rng = np.random.default_rng(5)
    sims = 4000
    xc, xt = rng.binomial(100, 0.01, sims), rng.binomial(100, 0.03, sims)
    analyzer = _fixed()
    covered = 0
    for a, b in zip(xc, xt, strict=True):
        result = analyzer.calculate_significance(
            _rates("c", int(a), 100), _rates("t", int(b), 100), "conversion_rate"
        )
        low, high = result.confidence_interval
        covered += low <= 0.02 <= high
    # the coverage's binomial standard error is 0.35 %: the estimate must exceed 95 %
    assert covered / sims >= 0.95


def test_welch_t_test_from_sufficient_statistics_matches_statsmodels() -> None:
    rng = np.random.default_rng(3)
    control = rng.normal(100, 15, size=800)
    treatment = rng.normal(103, 25, size=650)
    result = _fixed().calculate_significance(
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
    result = _fixed().calculate_significance(control, treatment, "revenue")
    t, p, _ = ttest_ind([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], usevar="unequal")
    assert result.statistic == pytest.approx(t, abs=1e-6)
    assert result.p_value == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize("method", ["sequential", "fixed"])
def test_no_data_is_not_significant_and_says_continue(method: str) -> None:
    analyzer = StatisticalAnalyzer()
    empty = analyzer.calculate_significance(
        ExperimentMetrics("c"), ExperimentMetrics("t"), "latency_ms", method=method
    )
    assert not empty.is_significant and empty.p_value == 1.0
    assert empty.recommended_action is RecommendedAction.CONTINUE and empty.decision == "no_data"
    rates = analyzer.calculate_significance(
        _rates("c", 0, 0), _rates("t", 1, 10), "error_rate", method=method
    )
    assert rates.p_value == 1.0 and not rates.sample_size_adequate


def test_identical_constant_samples_are_not_significant() -> None:
    same = _continuous("c", np.full(50, 7.0))
    result = _fixed(minimum=10).calculate_significance(
        same, _continuous("t", np.full(50, 7.0)), "latency_ms"
    )
    assert result.p_value == 1.0
    assert result.recommended_action is RecommendedAction.CONCLUDE_NO_DIFFERENCE


def test_fixed_horizon_waits_for_the_planned_sample_size_before_recommending() -> None:
    analyzer = _fixed(minimum=1000)
    # +10 % on 10 % at the old default minimum of 1,000 per arm: underpowered, not "no difference"
    early = analyzer.calculate_significance(
        _rates("c", 100, 1000), _rates("t", 110, 1000), "conversion_rate"
    )
    assert early.decision == "underpowered"
    assert early.recommended_action is RecommendedAction.CONTINUE
    assert early.planned_sample_size == StatisticalAnalyzer().calculate_sample_size_requirement(
        0.1, 0.1
    )
    small = analyzer.calculate_significance(
        _rates("c", 10, 100), _rates("t", 40, 100), "conversion_rate"
    )
    assert small.is_significant and small.recommended_action is RecommendedAction.CONTINUE
    # With a 100 % minimum detectable effect 5 % vs 10 % is planned for a few hundred requests.
    big = _fixed(minimum=100, effect=1.0).calculate_significance(
        _rates("c", 100, 2000), _rates("t", 200, 2000), "conversion_rate"
    )
    assert big.planned_sample_size is not None and big.planned_sample_size < 2000
    assert big.recommended_action is RecommendedAction.CONCLUDE_WINNER and big.decision == "better"
    unknown = _experiment("t", settings=AnalysisSettings(method=FIXED))
    no_rate = {"c": _rates("c", 0, 10), "t": _rates("t", 1, 10)}
    reason = StatisticalAnalyzer().analyze(unknown, no_rate).reason
    assert "no plan yet" in reason and "None" not in reason


def test_fixed_horizon_power_at_the_planned_size_is_80_percent() -> None:
    planned = StatisticalAnalyzer().calculate_sample_size_requirement(0.1, 0.1)
    rng = np.random.default_rng(17)
    sims = 2000
    xc, xt = rng.binomial(planned, 0.10, sims), rng.binomial(planned, 0.11, sims)
    # The plan is declared (as from GET /stats/sample-size): planned from each sample's own
    # control rate, half the samples would still be "underpowered" at exactly the planned size.
    settings = AnalysisSettings(method=FIXED, planned_sample_size=planned)
    analyzer = StatisticalAnalyzer(minimum_sample_size=1, settings=settings)
    detected = 0
    for a, b in zip(xc, xt, strict=True):
        result = analyzer.calculate_significance(
            _rates("c", int(a), planned), _rates("t", int(b), planned), "conversion_rate"
        )
        detected += result.decision == "better"
    # 80 % by construction; allow three binomial standard errors of the estimate (2.7 %)
    assert detected / sims >= 0.8 - 3 * math.sqrt(0.8 * 0.2 / sims)


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
    plan = plan_sample_size(
        0.10, 0.10, 0.95, 0.8, variants=variants, daily_traffic=10_000, method="fixed"
    )
    alpha = 0.05 / (variants - 1)
    expected = NormalIndPower().solve_power(
        effect_size=proportion_effectsize(0.11, 0.10), alpha=alpha, power=0.8
    )
    assert plan.per_variant == math.ceil(expected)
    assert plan.total == plan.per_variant * variants
    assert plan.comparisons == variants - 1
    assert plan.days == math.ceil(plan.total / 10_000)
    assert plan.target_rate == pytest.approx(0.11)
    assert plan.analysis_method == "fixed"
    if variants == 2:
        assert plan.per_variant == 14_745


def test_the_default_plan_is_for_the_sequential_test_and_needs_more_traffic() -> None:
    sequential_plan = plan_sample_size(0.10, 0.10)
    fixed_plan = plan_sample_size(0.10, 0.10, method="fixed")
    assert sequential_plan.analysis_method == "sequential" and "mSPRT" in sequential_plan.method
    assert 1.5 * fixed_plan.per_variant < sequential_plan.per_variant < 3 * fixed_plan.per_variant


def test_a_sample_size_plan_refuses_one_arm_or_no_traffic() -> None:
    with pytest.raises(UnprocessableEntity):
        plan_sample_size(0.1, 0.1, variants=1)
    with pytest.raises(UnprocessableEntity):
        plan_sample_size(0.1, 0.1, daily_traffic=0)
    for method in ("fixed", "sequential"):
        for invisible in (1e-300, 1e-9):  # rounds to no change / needs > 1e12 per arm
            with pytest.raises(UnprocessableEntity):
                plan_sample_size(0.1, invisible, method=method)
    assert plan_sample_size(0.1, 0.1).days is None


def test_sample_size_rejects_impossible_inputs() -> None:
    with pytest.raises(UnprocessableEntity):
        StatisticalAnalyzer().calculate_sample_size_requirement(0.6, 1.0)
    with pytest.raises(UnprocessableEntity):
        StatisticalAnalyzer().calculate_sample_size_requirement(0.1, 0.0)


def _latency_arm(variant: str, n: int, errors: int, scale: float, seed: int, **extra: int) -> Any:
    values = np.random.default_rng(seed).lognormal(np.log(40.0 * scale), 0.3, n)
    return ExperimentMetrics(
        variant, n, n - errors, errors, latency_p95_ms=float(np.percentile(values, 95)),
        latency=SufficientStats.from_values(values), latency_histogram=sketch.histogram(values),
        **extra,
    )  # fmt: skip


def test_guardrails_flag_degradation_only_with_evidence_in_the_bad_direction() -> None:
    control = _latency_arm("c", 5000, 50, 1.0, 1, converted_count=500, conversion_trials=5000)
    worse = _latency_arm("t", 5000, 150, 1.3, 2, converted_count=470, conversion_trials=5000)
    better = _latency_arm("t", 5000, 25, 0.8, 3, converted_count=700, conversion_trials=5000)
    names = ["error_rate", "latency_p95_ms", "conversion_rate", "latency_ms"]
    analyzer = StatisticalAnalyzer()
    flagged = {g.metric_name: g for g in analyzer.check_guardrail_metrics(control, worse, names)}
    assert flagged["error_rate"].degraded and flagged["error_rate"].outcome == "fail"
    assert flagged["error_rate"].relative_change == pytest.approx(2.0)
    assert flagged["error_rate"].interval[0] > 0 and "mSPRT" in flagged["error_rate"].test
    assert flagged["latency_p95_ms"].degraded and flagged["latency_ms"].degraded
    assert not flagged["conversion_rate"].degraded  # 6 % drop is within the 10 % threshold
    kept = analyzer.check_guardrail_metrics(control, better, names)
    assert not any(g.degraded for g in kept)
    assert {g.metric_name: g.outcome for g in kept}["error_rate"] == "pass"


def test_a_guardrail_needs_evidence_not_a_point_estimate() -> None:
    analyzer = StatisticalAnalyzer()
    clean = ExperimentMetrics("c", 100, 100, 0)
    one_error = ExperimentMetrics("t", 100, 99, 1)
    result = analyzer.check_guardrail_metrics(clean, one_error, ["error_rate", "latency_p99_ms"])
    assert result[0].relative_change == math.inf and not result[0].degraded
    assert result[0].outcome == "inconclusive"
    assert not result[1].has_data and not result[1].degraded
    many = ExperimentMetrics("t", 1000, 970, 30)
    flagged = analyzer.check_guardrail_metrics(ExperimentMetrics("c", 1000, 1000, 0), many,
                                               ["error_rate"])  # fmt: skip
    assert flagged[0].degraded


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


def _phase(index: int, **weights: str) -> AllocationPhase:
    return AllocationPhase(
        index, NOW, PhaseReason.RAMP, {k: Decimal(v) for k, v in weights.items()}
    )


def test_sample_ratio_is_judged_per_phase_against_that_phases_weights() -> None:
    from scipy.stats import chisquare

    analyzer = StatisticalAnalyzer()
    # A healthy ramp: 90/10 then 50/50. Pooled against today's 50/50 it looks broken.
    phases = [
        PhaseMetrics(_phase(0, c="0.9", t="0.1"), {"c": ExperimentMetrics("c", 9030),
                                                   "t": ExperimentMetrics("t", 970)}),
        PhaseMetrics(_phase(1, c="0.5", t="0.5"), {"c": ExperimentMetrics("c", 5040),
                                                   "t": ExperimentMetrics("t", 4960)}),
        PhaseMetrics(_phase(2, c="1", t="0"), {"c": ExperimentMetrics("c", 800),
                                               "t": ExperimentMetrics("t", 0)}),
    ]  # fmt: skip
    pooled = analyzer.check_sample_ratio({"c": 14870, "t": 5930}, {"c": 0.5, "t": 0.5})
    assert pooled.mismatch
    per_phase = analyzer.check_sample_ratio_phases(phases)
    assert not per_phase.mismatch and per_phase.checked
    assert [r.phase for r in per_phase.phases] == [0, 1, 2]
    assert per_phase.phases[2].checked is False  # paused: only the control had traffic
    _, p0 = chisquare([9030, 970], [9000, 1000])
    _, p1 = chisquare([5040, 4960], [5000, 5000])
    assert per_phase.p_value == pytest.approx(min(1.0, 2 * min(p0, p1)))
    broken = [
        PhaseMetrics(
            _phase(0, c="0.5", t="0.5"),
            {"c": ExperimentMetrics("c", 5300), "t": ExperimentMetrics("t", 4700)},
        )
    ]
    assert analyzer.check_sample_ratio_phases(broken).mismatch


def test_holm_bonferroni_matches_statsmodels() -> None:
    p_values = [0.01, 0.04, 0.03, 0.005, 0.2]
    expected = multipletests(p_values, method="holm")[1]
    assert holm_bonferroni(p_values) == pytest.approx(list(expected))


def test_fixed_analysis_applies_holm_and_picks_a_healthy_winner() -> None:
    settings = AnalysisSettings(method=FIXED, minimum_detectable_effect=0.5)
    experiment = _experiment("a", "b", "d", "e", settings=settings)
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
    assert by_id["b"].significance.decision == "no_difference"
    assert by_id["a"].improves
    # d converts best but breaks the error-rate guardrail, so a wins
    assert analysis.recommendation is RecommendedAction.CONCLUDE_WINNER
    assert analysis.recommended_winner == "a" and analysis.method == "fixed"
    assert any("d: guardrail error_rate degraded" in w for w in analysis.warnings)
    assert analysis.reason.startswith("a is better on conversion_rate")


def test_sequential_analysis_splits_alpha_over_treatments_consistently() -> None:
    experiment = _experiment("a", "b")
    metrics = {
        "c": ExperimentMetrics("c", 20000, converted_count=2000, conversion_trials=20000),
        "a": ExperimentMetrics("a", 20000, converted_count=2250, conversion_trials=20000),
        "b": ExperimentMetrics("b", 20000, converted_count=2010, conversion_trials=20000),
    }
    analysis = StatisticalAnalyzer().analyze(experiment, metrics)
    by_id = {t.variant_id: t for t in analysis.treatments}
    for item in by_id.values():
        result = item.significance
        assert result.method == "sequential" and result.alpha == pytest.approx(0.025)
        low, high = result.confidence_interval
        assert item.adjusted_p_value == pytest.approx(min(1.0, 2 * result.p_value))
        assert (item.adjusted_p_value < 0.05) == (not low <= 0 <= high)
    assert by_id["a"].significance.decision == "better"
    assert by_id["b"].significance.decision == "inconclusive"
    assert analysis.recommendation is RecommendedAction.CONCLUDE_WINNER
    assert analysis.recommended_winner == "a"


def test_analysis_with_srm_says_continue_and_warns() -> None:
    experiment = _experiment("a")
    metrics = {
        "c": ExperimentMetrics("c", 6000, converted_count=600, conversion_trials=6000),
        "a": ExperimentMetrics("a", 4000, converted_count=800, conversion_trials=4000),
    }
    analysis = StatisticalAnalyzer().analyze(experiment, metrics)
    assert analysis.sample_ratio.mismatch
    assert analysis.recommendation is RecommendedAction.CONTINUE
    assert analysis.recommended_winner is None
    assert analysis.warnings and "sample ratio mismatch" in analysis.warnings[0]


def test_sequential_analysis_concludes_no_difference_only_when_the_sequence_is_within_the_mde() -> (
    None
):
    experiment = _experiment("a")
    early = {
        "c": ExperimentMetrics("c", 5000, converted_count=500, conversion_trials=5000),
        "a": ExperimentMetrics("a", 5000, converted_count=505, conversion_trials=5000),
    }
    analysis = StatisticalAnalyzer().analyze(experiment, early)
    assert analysis.recommendation is RecommendedAction.CONTINUE
    assert analysis.treatments[0].significance.decision == "inconclusive"
    assert "keep running" in analysis.reason
    late = {
        "c": ExperimentMetrics("c", 60000, converted_count=6000, conversion_trials=60000),
        "a": ExperimentMetrics("a", 60000, converted_count=6030, conversion_trials=60000),
    }
    analysis = StatisticalAnalyzer().analyze(experiment, late)
    assert analysis.treatments[0].significance.decision == "equivalent"
    assert analysis.recommendation is RecommendedAction.CONCLUDE_NO_DIFFERENCE
    assert analysis.recommended_winner is None  # nothing to promote: the control stays


@pytest.mark.parametrize("method", ["sequential", "fixed"])
def test_ramp_analysis_is_stratified_by_step_so_a_moving_base_rate_fakes_no_lift(
    method: str,
) -> None:
    """A/A ramp: the base rate moved from 5 % to 10 % between the 10 % and the 50 % step."""
    experiment = _experiment("t")
    step_one = {"c": _rates("c", 2700, 54000), "t": _rates("t", 300, 6000)}
    step_two = {"c": _rates("c", 3000, 30000), "t": _rates("t", 3000, 30000)}
    phases = [PhaseMetrics(_phase(0, c="0.9", t="0.1"), step_one),
              PhaseMetrics(_phase(1, c="0.5", t="0.5"), step_two)]  # fmt: skip
    pooled = {"c": _rates("c", 5700, 84000), "t": _rates("t", 3300, 36000)}
    analyzer = StatisticalAnalyzer()
    naive = analyzer.analyze(experiment, pooled, method=method).treatments[0].significance
    assert naive.effect_size > 0.3 and naive.p_value < 1e-6  # Simpson's paradox
    stratified = analyzer.analyze(experiment, pooled, phases, method).treatments[0].significance
    assert stratified.p_value > 0.5 and stratified.decision in {"equivalent", "no_difference"}
    low, high = stratified.confidence_interval
    assert low < 0 < high


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


def test_quantized_weights_share_the_quanta_by_largest_remainder() -> None:
    weights = quantize_weights([1.0, 1.0, 1.0], Decimal("0.05"))
    assert sum(weights) == Decimal(1)
    assert sorted(weights) == [Decimal("0.3333"), Decimal("0.3333"), Decimal("0.3334")]
    assert quantize_weights([0.0, 0.0], Decimal("0.01")) == [Decimal("0.5"), Decimal("0.5")]


def test_constant_but_different_samples_are_a_certain_difference_as_in_scipy() -> None:
    """Two constant arms that differ (5.0 everywhere vs 6.0 everywhere) are not 'no
    difference': scipy's Welch test gives t = inf and p = 0, and the interval is the difference."""
    from scipy import stats

    control, treatment = np.full(5000, 5.0), np.full(5000, 6.0)
    result = _fixed(minimum=10).calculate_significance(
        _continuous("c", control), _continuous("t", treatment), "latency_ms"
    )
    import warnings

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on constant samples
        oracle = stats.ttest_ind(treatment, control, equal_var=False)
    assert result.p_value == oracle.pvalue == 0.0
    assert result.statistic == oracle.statistic == math.inf
    assert result.confidence_interval == (1.0, 1.0) and result.is_significant
    assert result.decision == "worse"  # higher latency is worse
