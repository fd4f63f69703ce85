"""The always-valid mSPRT: its formula against GrowthBook's published one (worked by hand), and its
error rates under continuous peeking by seeded simulation, with binomial tolerances.

Reference formula (GrowthBook documentation, "Sequential testing"; Waudby-Smith, Arbour, Sinha,
Kennedy and Ramdas 2023, "Time-uniform central limit theory and asymptotic confidence
sequences"): for an estimate with per-unit standard deviation ``sigma`` after ``N`` units,

    half-width = sigma * sqrt(2 (N rho^2 + 1) / (N^2 rho^2) * log(sqrt(N rho^2 + 1) / alpha)),
    rho = sqrt((-2 log(alpha) + log(-2 log(alpha) + 1)) / N*),

``N*`` being the tuning sample size. Our code writes it as the normal-mixture SPRT in the
variance ``V = sigma^2 / N`` of the estimate and ``tau^2 = rho^2 sigma^2``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportions_ztest

from chalicelib.abtesting import sequential
from chalicelib.abtesting.models import ExperimentMetrics
from chalicelib.abtesting.statistics import StatisticalAnalyzer
from tests.helpers.abtesting import analysis_experiment as _experiment
from tests.helpers.abtesting import clopper_pearson_upper
from tests.helpers.abtesting import rate_metrics as _rates


def not_significantly_below(events: int, trials: int, target: float) -> bool:
    """The observed rate is compatible with a true rate of at least ``target`` (one-sided
    binomial test at the 0.1 % level)."""
    return float(stats.binom.cdf(events, trials, target)) > 0.001


def test_confidence_sequence_matches_growthbooks_formula_worked_by_hand() -> None:
    # sigma = 1, N = 1000, N* = 5000, alpha = 0.05, by hand:
    #   -2 ln 0.05 = 5.991465; ln(5.991465 + 1) = 1.944690; sum 7.936155
    #   rho^2 = 7.936155 / 5000 = 0.00158723; N rho^2 = 1.587231
    #   2 (N rho^2 + 1) / (N^2 rho^2) = 5.174462 / 1587.231 = 0.00326006
    #   ln(sqrt(2.587231) / 0.05) = ln(32.16966) = 3.471026
    #   half-width = sqrt(0.00326006 * 3.471026) = 0.106375
    result = sequential.mixture_test(0.0, 1.0 / 1000, 1000, alpha=0.05, tuning=5000)
    assert result.interval == pytest.approx((-0.106375, 0.106375), abs=5e-7)

    def growthbook(sigma: float, n: float, tuning: float, alpha: float) -> float:
        rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning
        return sigma * math.sqrt(
            2 * (n * rho2 + 1) / (n * n * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha)
        )

    for sigma, n, tuning, alpha in [(1, 1000, 5000, 0.05), (0.3, 50, 1000, 0.01),
                                    (12.0, 2e6, 5000, 0.1), (0.05, 7, 3, 0.2)]:  # fmt: skip
        ours = sequential.mixture_test(2.0, sigma**2 / n, n, alpha, tuning)
        half = growthbook(sigma, n, tuning, alpha)
        assert ours.interval == pytest.approx((2.0 - half, 2.0 + half), rel=1e-12)


def test_the_p_value_is_one_over_the_mixture_likelihood_ratio() -> None:
    # Robbins' normal mixture: Lambda = sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2)))
    variance, n, alpha, tuning, estimate = 0.0004, 2500, 0.05, 5000, 0.07
    tau2 = variance * n / tuning * (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha)))
    ratio = math.sqrt(variance / (variance + tau2)) * math.exp(
        tau2 * estimate**2 / (2 * variance * (variance + tau2))
    )
    result = sequential.mixture_test(estimate, variance, n, alpha, tuning)
    assert result.p_value == pytest.approx(1 / ratio, rel=1e-12)
    assert sequential.mixture_test(0.0, variance, n, alpha, tuning).p_value == 1.0


def test_p_below_alpha_exactly_when_the_sequence_excludes_the_null() -> None:
    rng = np.random.default_rng(1)
    for _ in range(2000):
        estimate, variance = float(rng.normal(0, 0.05)), float(rng.uniform(1e-5, 1e-3))
        n, alpha = float(rng.uniform(10, 1e5)), float(rng.choice([0.01, 0.05, 0.1]))
        result = sequential.mixture_test(estimate, variance, n, alpha, 5000)
        low, high = result.interval
        assert (result.p_value < alpha) == (not low <= 0 <= high) == result.rejects


def test_no_variance_is_no_evidence() -> None:
    result = sequential.mixture_test(0.3, 0.0, 100)
    assert result.p_value == 1.0 and result.interval == (-math.inf, math.inf)
    assert sequential.compare([]) is None
    assert sequential.sequential_sample_size(0.0, 1.0, 1.0, limit=1e6) == 1_000_000


def test_aa_false_winner_rate_under_continuous_peeking_is_at_most_alpha(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's case: identical arms at 10 %, the analysis read at 39 checkpoints from 1,000
    to 20,000 users per arm. The naive peer (a z-test re-checked at every look) is shown to
    fail the same data, so the simulation can tell the two apart.

    The experiment decides with the frequentist engine, so the Bayesian reading the analysis
    also reports (numerical integration, ~20 ms a call; 11,700 calls here) plays no part in
    what is measured and is left out (tests/unit/test_ab_bayes.py measures the Bayesian
    engine's own A/A rate)."""
    from chalicelib.abtesting import bayes

    monkeypatch.setattr(bayes, "compare_metrics", lambda *args, **kwargs: None)
    rng = np.random.default_rng(7)
    sims = 300
    looks = np.arange(1000, 20001, 500)
    step = np.diff(np.concatenate([[0], looks]))
    control = rng.binomial(step, 0.1, (sims, len(looks))).cumsum(axis=1)
    treatment = rng.binomial(step, 0.1, (sims, len(looks))).cumsum(axis=1)
    experiment = _experiment("t")
    analyzer = StatisticalAnalyzer()
    ours_significant = ours_winner = 0
    for sim in range(sims):
        found = winner = False
        for look, n in enumerate(looks):
            metrics = {"c": _rates("c", int(control[sim, look]), int(n)),
                       "t": _rates("t", int(treatment[sim, look]), int(n))}  # fmt: skip
            analysis = analyzer.analyze(experiment, metrics)
            found = found or analysis.treatments[0].significance.is_significant
            winner = winner or analysis.recommendation.value == "conclude_winner"
        ours_significant += found
        ours_winner += winner
    assert clopper_pearson_upper(ours_significant, sims) <= 0.05
    assert clopper_pearson_upper(ours_winner, sims) <= 0.05
    # the naive peer on the same data: statsmodels' z-test at every look (13-27 % in the issue)
    first = [proportions_ztest([treatment[s, k], control[s, k]], [n, n])[1] < 0.05
             for s in range(sims) for k, n in enumerate(looks)]  # fmt: skip
    naive = np.array(first).reshape(sims, len(looks)).any(axis=1).sum()
    assert naive / sims > 0.1


@pytest.mark.parametrize("lift", [0.10, 0.05])
def test_power_is_80_percent_at_the_sequential_planned_size_under_peeking(lift: float) -> None:
    planned = StatisticalAnalyzer().calculate_sample_size_requirement(
        0.1, lift, method="sequential"
    )
    fixed = StatisticalAnalyzer().calculate_sample_size_requirement(0.1, lift)
    assert fixed < planned < 3 * fixed
    rng = np.random.default_rng(11)
    sims, count = 500, 40
    looks = np.linspace(planned / count, planned, count).astype(int)
    step = np.diff(np.concatenate([[0], looks]))
    control = rng.binomial(step, 0.1, (sims, count)).cumsum(axis=1)
    treatment = rng.binomial(step, 0.1 * (1 + lift), (sims, count)).cumsum(axis=1)
    analyzer = StatisticalAnalyzer(minimum_sample_size=1)
    detected = 0
    for sim in range(sims):
        for look, n in enumerate(looks):
            result = analyzer.calculate_significance(
                _rates("c", int(control[sim, look]), int(n)),
                _rates("t", int(treatment[sim, look]), int(n)),
                "conversion_rate",
            )
            if result.decision == "better":
                detected += 1
                break
    assert not_significantly_below(detected, sims, 0.8)


def test_confidence_sequence_of_a_mean_covers_the_truth_at_every_look() -> None:
    rng = np.random.default_rng(3)
    sims, looks, per_look, delta = 400, 50, 100, 0.3
    n = np.arange(1, looks + 1) * per_look

    def moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sample variance after each look (centred first, so sums are stable)."""
        centred = values - values.mean()
        total = centred.reshape(looks, per_look).sum(axis=1).cumsum()
        squares = (centred**2).reshape(looks, per_look).sum(axis=1).cumsum()
        return total / n + values.mean(), (squares - total**2 / n) / (n - 1)

    missed = 0
    for _ in range(sims):
        c_mean, c_var = moments(rng.normal(10.0, 2.0, looks * per_look))
        t_mean, t_var = moments(rng.normal(10.0 + delta, 3.0, looks * per_look))
        for look in range(looks):
            stratum = sequential.Stratum(c_mean[look], t_mean[look], c_var[look] / n[look],
                                         t_var[look] / n[look], n[look], n[look])  # fmt: skip
            low, high = sequential.compare([stratum], 0.05, 1000).interval
            if not low <= delta <= high:
                missed += 1
                break
    assert clopper_pearson_upper(missed, sims) <= 0.05


def test_strata_are_weighted_by_their_effective_size() -> None:
    a = sequential.proportion_stratum(50, 1000, 60, 1000)
    b = sequential.proportion_stratum(10, 100, 12, 100)
    pooled = sequential.pool([a, b, sequential.proportion_stratum(0, 0, 3, 10)])
    assert pooled is not None and pooled.n == pytest.approx(1100)
    assert pooled.control == pytest.approx((1000 * 0.05 + 100 * 0.1) / 1100)
    assert pooled.treatment == pytest.approx((1000 * 0.06 + 100 * 0.12) / 1100)
    assert sequential.pool([sequential.proportion_stratum(0, 0, 1, 1)]) is None
    assert ExperimentMetrics("x").value("conversion_rate") is None
