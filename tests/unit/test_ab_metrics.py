"""Declared metrics and corrections (chalicelib/abtesting/metrics.py, correction.py) against
independent oracles: statsmodels' multipletests, a seeded bootstrap and coverage simulations."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from chalicelib.abtesting import correction, metrics, sketch
from chalicelib.abtesting.models import ExperimentMetrics, MetricSpec


@pytest.mark.parametrize("seed", range(20))
def test_holm_and_bh_equal_statsmodels_multipletests(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 40))
    p = rng.uniform(0, 1, size) ** rng.uniform(1, 6)  # many small ones
    p[rng.random(size) < 0.2] = p[0]  # ties
    for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
        expected = multipletests(p, alpha=0.05, method=theirs)[1]
        assert correction.adjust(p.tolist(), ours) == pytest.approx(expected.tolist(), abs=1e-12)
    assert correction.adjust(p.tolist(), "none") == p.tolist()


def test_an_unknown_correction_or_a_p_value_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError):
        correction.adjust([0.1], "bonferroni-ish")
    with pytest.raises(ValueError):
        correction.adjust([1.5], "holm")


def _ratio_sums(name: str, a: np.ndarray, b: np.ndarray) -> dict[str, Decimal]:
    parts = {"n": len(a), "a": a.sum(), "b": b.sum(), "aa": (a * a).sum(), "bb": (b * b).sum(),
             "ab": (a * b).sum()}  # fmt: skip
    return {metrics.ratio_attribute(name, k): Decimal(repr(float(v))) for k, v in parts.items()}


@pytest.mark.parametrize(("n", "seed"), [(400, 1), (3000, 2)])
def test_delta_method_variance_of_a_ratio_matches_a_seeded_bootstrap(n: int, seed: int) -> None:
    """Sessions per user (Poisson) and clicks (correlated with sessions): the delta-method
    variance of sum clicks / sum sessions is within 10 % of 4,000 bootstrap resamples of the
    units (the bootstrap's own relative error is about 2 %)."""
    rng = np.random.default_rng(seed)
    sessions = rng.poisson(4, n).astype(float) + 1
    clicks = rng.binomial(sessions.astype(int), 0.3).astype(float) + rng.poisson(0.5, n)
    found = metrics.ratio_estimate(_ratio_sums("ctr", clicks, sessions), "ctr")
    assert found.value == pytest.approx(clicks.sum() / sessions.sum(), rel=1e-12)
    draws = rng.integers(0, n, size=(4000, n))
    boot = clicks[draws].sum(axis=1) / sessions[draws].sum(axis=1)
    assert found.variance == pytest.approx(boot.var(ddof=1), rel=0.10)


def test_ratio_interval_covers_the_true_ratio_at_95_percent() -> None:
    """400 seeded experiments of 500 units: the fixed z interval of the ratio difference built
    from the delta-method variances covers the true difference (0) in 95 % ± 3.3 points."""
    rng = np.random.default_rng(5)
    spec = MetricSpec("ctr", "ratio", numerator="clicks", denominator="sessions")
    covered = 0
    for _ in range(400):
        arms = []
        for _arm in range(2):
            sessions = rng.poisson(4, 500).astype(float) + 1
            clicks = rng.binomial(sessions.astype(int), 0.3).astype(float)
            arms.append(metrics.ratio_estimate(_ratio_sums("ctr", clicks, sessions), "ctr"))
        found = metrics.compare(spec, "t", arms[0], arms[1], method="fixed")
        covered += found.interval[0] <= 0 <= found.interval[1]
    assert abs(covered / 400 - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / 400)


@pytest.mark.parametrize("q", [0.5, 0.9])
def test_quantile_difference_interval_covers_the_truth_at_about_95_percent(q: float) -> None:
    """Lognormal latencies, treatment 10 % slower: the true difference of the q quantiles is
    known; over 400 seeded experiments of 2,000 per arm the fixed interval built from the
    order-statistic standard errors covers it in at least 92 % (nominal 95 %; the histogram's
    1 % buckets cost a little)."""
    rng = np.random.default_rng(int(q * 100))
    from statistics import NormalDist

    true_c = math.exp(3 + NormalDist().inv_cdf(q))
    truth = 0.1 * true_c
    spec = MetricSpec("latency_q", "quantile", quantile=q)
    covered = 0
    for _ in range(400):
        c = rng.lognormal(3, 1, 2000)
        t = 1.1 * rng.lognormal(3, 1, 2000)
        found = metrics.compare(spec, "t", metrics.quantile_estimate(sketch.histogram(c), q),
                                metrics.quantile_estimate(sketch.histogram(t), q),
                                method="fixed")  # fmt: skip
        covered += found.interval[0] <= truth <= found.interval[1]
    assert covered / 400 >= 0.92


def test_estimates_read_built_in_rates_and_named_values() -> None:
    arm = ExperimentMetrics("a", 100, 90, 10, converted_count=30, conversion_trials=100)
    conversion = metrics.estimate(arm, MetricSpec("conv", "proportion", source="conversion_rate"))
    assert conversion.value == 0.3 and conversion.variance == pytest.approx(0.3 * 0.7 / 100)
    assert metrics.estimate(arm, MetricSpec("revenue", "mean")) is None


def test_guardrail_direction_and_joint_correction() -> None:
    """Two treatments x two metrics are corrected together: four p-values, Holm."""
    specs = [MetricSpec("revenue", "mean", "primary"), MetricSpec("errors", "mean", "guardrail",
             lower_is_better=True)]  # fmt: skip

    def arm(revenue: float, errors: float) -> ExperimentMetrics:
        from chalicelib.abtesting.models import SufficientStats

        rng = np.random.default_rng(int(revenue * 10 + errors * 100))
        return ExperimentMetrics("x", 5000, custom_stats={
            "revenue": SufficientStats.from_values(rng.normal(revenue, 1, 5000).tolist()),
            "errors": SufficientStats.from_values(rng.normal(errors, 1, 5000).tolist()),
        })  # fmt: skip

    pairs = {"t1": (arm(10, 1), arm(10.2, 1.2)), "t2": (arm(10, 1), arm(10, 1))}
    found = metrics.compare_all(specs, pairs, "holm", method="fixed")
    raw = [item.p_value for item in found]
    assert [item.adjusted_p_value for item in found] == pytest.approx(
        multipletests(raw, method="holm")[1].tolist(), abs=1e-15
    )
    by_key = {(item.variant_id, item.metric_name): item for item in found}
    assert by_key[("t1", "revenue")].direction == "better"
    assert by_key[("t1", "errors")].direction == "worse"
    assert by_key[("t2", "revenue")].direction == "none"
