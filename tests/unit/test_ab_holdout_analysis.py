"""The holdout's cumulative-effect analysis (chalicelib/abtesting/holdout_analysis.py) against
statsmodels' two-proportion tests, a Monte Carlo Bayesian oracle and seeded simulations."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from chalicelib.abtesting import bayes
from chalicelib.abtesting.holdout_analysis import analyze_holdout, shipped_variants
from chalicelib.abtesting.models import ExperimentStatus, HoldoutRef, SufficientStats
from chalicelib.abtesting.statistics import plan_sample_size
from tests.helpers.abtesting import analysis_experiment, rate_metrics

HOLDOUT = HoldoutRef("h1", "h1", Decimal("0.1"))


def _covered(status: ExperimentStatus = ExperimentStatus.RUNNING, winner: str | None = None):
    experiment = analysis_experiment("t")
    return replace(experiment, status=status, winning_variant_id=winner, holdouts=(HOLDOUT,))


def test_what_an_experiment_ships_depends_on_its_state() -> None:
    assert shipped_variants(_covered()) == ("t",)
    assert shipped_variants(_covered(ExperimentStatus.PAUSED)) == ("t",)
    assert shipped_variants(_covered(ExperimentStatus.CONCLUDED, "t")) == ("t",)
    assert shipped_variants(_covered(ExperimentStatus.CONCLUDED, "c")) == ()
    assert shipped_variants(_covered(ExperimentStatus.ROLLED_BACK)) == ()
    assert shipped_variants(_covered(ExperimentStatus.DRAFT)) == ()


def test_the_fixed_reading_equals_statsmodels_wald_test_and_interval() -> None:
    """Two experiments pooled: holdout 230/2,000, exposed 1,390/10,000 (a concluded winner and a
    running treatment; a rolled-back experiment and the controls count nowhere)."""
    covered = [
        (_covered(ExperimentStatus.CONCLUDED, "t"), {"holdout": rate_metrics("holdout", 100, 1000),
         "t": rate_metrics("t", 700, 5000), "c": rate_metrics("c", 10, 100)}),
        (_covered(), {"holdout": rate_metrics("holdout", 130, 1000),
         "t": rate_metrics("t", 690, 5000), "c": rate_metrics("c", 500, 5000)}),
        (_covered(ExperimentStatus.ROLLED_BACK), {"holdout": rate_metrics("holdout", 900, 1000),
         "t": rate_metrics("t", 0, 5000)}),
    ]  # fmt: skip
    found = analyze_holdout("h1", covered, "conversion_rate", "fixed", 0.05)
    assert (found.holdout_requests, found.exposed_requests) == (2000, 10000)
    assert [e.exposed_requests for e in found.experiments] == [5000, 5000, 0]
    expected = sm_proportion.test_proportions_2indep(
        1390, 10000, 230, 2000, method="wald", compare="diff"
    )
    low, high = sm_proportion.confint_proportions_2indep(
        1390, 10000, 230, 2000, method="wald", alpha=0.05
    )
    comparison = found.comparison
    assert comparison.test == "z"
    assert comparison.difference == pytest.approx(1390 / 10000 - 230 / 2000, abs=1e-12)
    assert comparison.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert comparison.interval == pytest.approx((low, high), rel=1e-9)
    assert found.significant and found.direction == "better"


def test_the_bayesian_reading_matches_monte_carlo() -> None:
    covered = [(_covered(), {"holdout": rate_metrics("holdout", 98, 1000),
                             "t": rate_metrics("t", 1150, 10000)})]  # fmt: skip
    found = analyze_holdout("h1", covered, "conversion_rate", "sequential", 0.05)
    rng = np.random.default_rng(7)
    holdout = rng.beta(1 + 98, 1 + 902, 400_000)
    exposed = rng.beta(1 + 1150, 1 + 8850, 400_000)
    assert found.bayesian is not None
    assert found.bayesian.chance_to_win == pytest.approx((exposed > holdout).mean(), abs=0.005)


def test_a_custom_mean_metric_is_compared_by_the_unequal_variance_z_test() -> None:
    rng = np.random.default_rng(3)
    held, shown = rng.normal(10, 2, 3000), rng.normal(10.3, 2.5, 6000)

    def arm(name: str, values: np.ndarray):
        base = rate_metrics(name, 0, len(values))
        stats_ = SufficientStats.from_values(values.tolist())
        return replace(base, custom_stats={"revenue": stats_})

    covered = [(_covered(), {"holdout": arm("holdout", held), "t": arm("t", shown)})]
    found = analyze_holdout("h1", covered, "revenue", "fixed", 0.05)
    _, expected = CompareMeans(DescrStatsW(shown), DescrStatsW(held)).ztest_ind(usevar="unequal")
    assert found.comparison.p_value == pytest.approx(expected, rel=1e-6)


@pytest.fixture
def decisions_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaves the Bayesian reading out of the analyses a simulation makes.

    The reading (checked against Monte Carlo above) takes about 40 ms of quadrature per
    analysis, 98 % of a simulated analysis's time, and plays no part in ``significant``:
    ``compare_metrics`` answers ``None`` here, as it does for an arm without data, so a
    decision that came to read it would fail these tests rather than pass them unread.
    """
    monkeypatch.setattr(bayes, "compare_metrics", lambda *args, **kwargs: None)


def _detections(seed: int, rate: float, lift: float, n: int, runs: int, method: str) -> int:
    """Seeded holdouts of ``n`` units per arm, every run's counts drawn at once: how many the
    analysis finds significant."""
    rng = np.random.default_rng(seed)
    holdouts = rng.binomial(n, rate, runs).tolist()
    exposed = rng.binomial(n, rate * (1 + lift), runs).tolist()
    found = 0
    for held, shown in zip(holdouts, exposed, strict=True):
        covered = [(_covered(), {"holdout": rate_metrics("holdout", held, n),
                                 "t": rate_metrics("t", shown, n)})]  # fmt: skip
        found += analyze_holdout("h1", covered, "conversion_rate", method, 0.05).significant
    return found


def _binomial_band(trials: int, p: float) -> tuple[int, int]:
    """The counts a binomial(trials, p) leaves with probability 0.1 % on each side."""
    return int(stats.binom.ppf(0.001, trials, p)), int(stats.binom.ppf(0.999, trials, p))


@pytest.mark.usefixtures("decisions_only")
def test_with_no_cumulative_effect_false_positives_stay_at_alpha() -> None:
    """1,000 seeded A/A holdouts (10 % rate, 4,000 units per arm): the fixed test's
    false-positive count lies in the 99.8 % binomial band around alpha = 5 %, and the
    sequential one's is no higher than that band allows."""
    fixed = _detections(0, 0.1, 0.0, 4000, 1000, "fixed")
    sequential = _detections(0, 0.1, 0.0, 4000, 1000, "sequential")
    low, high = _binomial_band(1000, 0.05)
    assert low <= fixed <= high, fixed
    assert sequential <= high, sequential


@pytest.mark.usefixtures("decisions_only")
def test_a_real_cumulative_lift_is_found_with_the_power_the_planner_predicts() -> None:
    """+10 % relative on a 10 % rate at the fixed planner's size per arm, 600 seeded runs: the
    detections lie in the 99.8 % binomial band around the planned power (80 %)."""
    plan = plan_sample_size(0.1, 0.1, 0.95, 0.8, method="fixed")
    found = _detections(0, 0.1, 0.1, plan.per_variant, 600, "fixed")
    low, high = _binomial_band(600, 0.8)
    assert low <= found <= high, (found, plan.per_variant)
