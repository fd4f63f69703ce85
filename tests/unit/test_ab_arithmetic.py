"""Exact arithmetic: stable sums of squares (shifted sums, Welford/Chan, Decimal with enough
digits) against numpy and scipy, interpolated percentiles against numpy, exact bandit floors."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from scipy import stats

from chalicelib.abtesting import aggregate, sketch
from chalicelib.abtesting.bandit import quantize_weights
from chalicelib.abtesting.models import (
    AnalysisMethod,
    AnalysisSettings,
    ExperimentMetrics,
    Outcome,
    SufficientStats,
)
from chalicelib.abtesting.outcomes_repository import _VariantDelta
from chalicelib.abtesting.statistics import StatisticalAnalyzer
from tests.helpers.abtesting import latency_histogram

FIXED = StatisticalAnalyzer(minimum_sample_size=1, settings=AnalysisSettings(AnalysisMethod.FIXED))


def _stored(variant: str, values: np.ndarray, chunk: int = 97) -> ExperimentMetrics:
    """What the repository stores for ``values`` as custom metric ``score`` (chunk deltas added
    up exactly, as DynamoDB's ADD does) and what the service reads back."""
    raw: dict[str, Any] = {"sums": {}, "histogram": {}}
    for start in range(0, len(values), chunk):
        delta = _VariantDelta()
        for index, value in enumerate(values[start : start + chunk]):
            delta.observe(Outcome(variant, f"{start}-{index}", True, 10.0,
                                  custom_metrics={"score": float(value)}))  # fmt: skip
        raw = aggregate.merge_counters([raw, {"sums": {**delta.counts, **delta.sums}}])
    return aggregate.metrics_from_counters(variant, raw)


def test_values_near_1e9_keep_their_variance_through_storage_and_match_scipy() -> None:
    rng = np.random.default_rng(2)
    control = np.round(1e9 + rng.normal(0, 1, 3000), 6)
    treatment = np.round(1e9 + 0.3 + rng.normal(0, 1, 2500), 6)
    c, t = _stored("c", control), _stored("t", treatment)
    # exact: the variance of the stored decimals (each float's shortest repr), in rationals
    exact = [Fraction(str(round(float(v), 6))) for v in control]
    mean = sum(exact) / len(exact)
    variance = sum((x - mean) ** 2 for x in exact) / (len(exact) - 1)
    assert c.custom_stats["score"].variance == pytest.approx(float(variance), rel=1e-14)
    assert c.custom_stats["score"].variance == pytest.approx(control.var(ddof=1), rel=1e-8)
    assert t.custom_stats["score"].mean == pytest.approx(treatment.mean(), rel=1e-15)
    # the naive float formula cancels to nothing at this magnitude
    naive = SufficientStats(3000, float(control.sum()), float((control**2).sum()))
    assert abs((naive.variance or 0.0) - control.var(ddof=1)) > 0.5
    result = FIXED.calculate_significance(c, t, "score")
    expected = stats.ttest_ind(treatment, control, equal_var=False)
    assert result.test == "welch_t"
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-6)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-6)
    low, high = result.confidence_interval
    assert high - low > 0.05  # not the zero-width interval of a zero variance


def test_two_pass_and_chan_merge_are_stable() -> None:
    rng = np.random.default_rng(4)
    values = 1e9 + rng.normal(0, 1, 10_000)
    whole = SufficientStats.from_values(values)
    parts = [SufficientStats.from_values(part) for part in np.array_split(values, 7)]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    for found in (whole, merged):
        assert found.count == 10_000
        # float inputs near 1e9 carry 1.2e-7 of rounding each: agreement to 1e-7 is the floor
        assert found.variance == pytest.approx(values.var(ddof=1), rel=1e-7)
        assert found.mean == pytest.approx(values.mean(), rel=1e-15)
    assert SufficientStats().merge(whole) == whole and whole.merge(SufficientStats()) == whole


def test_shifted_groups_merge_exactly_across_magnitudes() -> None:
    values = np.array([0.000001, 0.5, 3.25, 17.0, 999.999999, 123456.789012, 1e12, -42.5])
    found = _stored("v", values, chunk=3).custom_stats["score"]
    exact = [Fraction(str(v)) for v in values]
    mean = sum(exact) / len(exact)
    variance = sum((x - mean) ** 2 for x in exact) / (len(exact) - 1)
    assert found.mean == pytest.approx(float(mean), rel=1e-15)
    assert found.variance == pytest.approx(float(variance), rel=1e-15)


def test_the_delta_of_a_chunk_is_exact_decimal_arithmetic() -> None:
    delta = _VariantDelta()
    values = ["999999999999.999999", "999999999999.999998", "0.000001"]
    for index, value in enumerate(values):
        delta.observe(Outcome("v", f"r{index}", True, 9_999_999.999,
                              custom_metrics={"x": float(value)}))  # fmt: skip
    squares = sum(Fraction(delta.sums[name]) for name in delta.sums if ":ss@" in name)
    shifts = {name.rsplit("@", 1)[1] for name in delta.sums if ":ss@" in name}
    stored = [Decimal(str(round(float(v), 6))) for v in values]  # JSON numbers are floats
    expected = sum((Fraction(v) - Fraction(aggregate.shift_of(v))) ** 2 for v in stored)
    assert squares == expected and shifts == {"1E+12", "0.000001"}
    assert Fraction(delta.sums["latency_sumsq"]) == 3 * Fraction("9999999.999") ** 2


def test_legacy_counter_names_are_read_as_shift_zero() -> None:
    raw = {"sums": {"request_count": Decimal(3), "c:rev:n": Decimal(3), "c:rev:s": Decimal(6),
                    "c:rev:ss": Decimal(14), "c:bad": Decimal(1), "c:x:q@1": Decimal(1),
                    "c:y:n@nan?": Decimal(1)}}  # fmt: skip
    found = aggregate.metrics_from_counters("v", raw).custom_stats
    assert set(found) == {"rev"}
    assert found["rev"].mean == 2.0 and found["rev"].variance == pytest.approx(1.0)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100, 1000])
def test_interpolated_percentiles_are_within_one_percent_of_numpy(size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(200):
        values = rng.lognormal(3.0, 1.2, size)
        counts = sketch.histogram(values)
        for q in (0.5, 0.95, 0.99):
            found = sketch.quantile(counts, q)
            exact = float(np.percentile(values, q * 100))
            assert found is not None and abs(found - exact) <= 0.01 * exact


def test_the_tests_vectorised_histogram_is_sketch_histogram() -> None:
    """The simulations' ``latency_histogram`` (numpy) buckets every value as ``sketch`` does:
    random spreads, clamped values and the bucket bounds ``gamma^i`` with their neighbours."""
    rng = np.random.default_rng(5)
    bounds = sketch.GAMMA ** np.arange(-sketch.OFFSET, 1700, dtype=float)
    values = np.concatenate(
        [
            rng.lognormal(3.0, 1.0, 20_000),
            rng.lognormal(0.0, 8.0, 20_000),
            [-1.0, 0.0, 1e-9, sketch.MIN_VALUE, sketch.MAX_VALUE, 1e12],
            bounds,
            np.nextafter(bounds, 0.0),
            np.nextafter(bounds, np.inf),
        ]
    )
    assert latency_histogram(values) == sketch.histogram(values.tolist())


def test_the_median_of_10_and_100_is_55_not_10() -> None:
    median = sketch.quantile(sketch.histogram([10.0, 100.0]), 0.5)
    assert median == pytest.approx(55.0, rel=0.01)


def test_merged_metrics_read_percentiles_from_the_merged_histogram() -> None:
    rng = np.random.default_rng(12)
    halves = [rng.lognormal(4.0, 0.8, 25_000) for _ in range(2)]
    parts = [
        ExperimentMetrics("v", len(h), latency=SufficientStats.from_values(h),
                          latency_histogram=sketch.histogram(h))
        for h in halves
    ]  # fmt: skip
    merged = aggregate.merge_metrics("v", parts)
    everything = np.concatenate(halves)
    assert merged.request_count == 50_000
    assert merged.latency.variance == pytest.approx(everything.var(ddof=1), rel=1e-9)
    for q, found in ((0.5, merged.latency_p50_ms), (0.95, merged.latency_p95_ms),
                     (0.99, merged.latency_p99_ms)):  # fmt: skip
        exact = float(np.percentile(everything, q * 100))
        assert found is not None and abs(found - exact) <= 0.01 * exact
    assert sketch.count_above(sketch.histogram([1.0, 2.0, 50.0]), 2.5) == 1


def test_a_floor_finer_than_a_basis_point_is_kept_exactly_in_quanta_of_its_own_size() -> None:
    """Weights are whole quanta of 0.0001, or of 10**e when the floor has e < -4 decimals: a
    0.00005 floor in quanta of 0.0001 would be rounded up to 0.0001."""
    weights = quantize_weights([0.0, 1.0], Decimal("0.00005"))

    assert weights == [Decimal("0.00005"), Decimal("0.99995")]
    assert [w.as_tuple().exponent for w in weights] == [-5, -5]
    # trailing zeros do not make a floor finer: 0.0100 keeps the 0.0001 quantum
    coarse = quantize_weights([0.0, 1.0], Decimal("0.0100000"))
    assert coarse == [Decimal("0.01"), Decimal("0.99")]
    assert [w.as_tuple().exponent for w in coarse] == [-4, -4]


def test_bandit_floors_are_never_violated_in_20000_fuzz_cases() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(20_000):
        arms = int(rng.integers(2, 12))
        floor = Decimal(str(round(float(rng.uniform(0, 1 / arms)), int(rng.integers(1, 7)))))
        if floor * arms > 1:
            continue
        raw = (rng.dirichlet(np.ones(arms)) * float(rng.integers(0, 20_000))).tolist()
        weights = quantize_weights(raw, floor)
        assert sum(weights) == 1 and min(weights) >= floor and len(weights) == arms
        checked += 1
    assert checked > 19_000
    # the case: seven arms at a 0.1428 floor used to get 0.1426
    assert min(quantize_weights([1.0] * 7, Decimal("0.1428"))) == Decimal("0.1428")
