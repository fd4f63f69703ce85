"""The one pairwise moment merge (``core.moments``) against independent oracles."""

from __future__ import annotations

import math
import random
import statistics
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from chalicelib.core.moments import merged_moments


def _moments(values: list[float]) -> tuple[int, float, float]:
    mean = statistics.fmean(values)
    return len(values), mean, math.fsum((v - mean) ** 2 for v in values)


@pytest.mark.parametrize("split", [1, 7, 500, 999])
def test_merged_float_groups_have_the_mean_and_variance_of_all_values(split: int) -> None:
    rng = random.Random(split)
    values = [1e6 + rng.gauss(0.0, 3.0) for _ in range(1_000)]
    n_a, mean_a, m2_a = _moments(values[:split])
    n_b, mean_b, m2_b = _moments(values[split:])
    mean, m2 = merged_moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b)
    assert math.isclose(mean, statistics.fmean(values), rel_tol=1e-15)
    assert math.isclose(m2 / (len(values) - 1), statistics.variance(values), rel_tol=1e-9)


def test_a_unit_scales_the_squared_deviations_in_and_out() -> None:
    values = [1e-200, 3e-200, 4e-200, 9e-200]  # squares underflow in float64
    unit = 2.0**-660
    parts = [values[:1], values[1:]]
    stats = []
    for part in parts:
        mean = statistics.fmean(part)
        stats.append((len(part), mean, math.fsum(((v - mean) / unit) ** 2 for v in part)))
    (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) = stats
    mean, m2 = merged_moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b, unit=unit)
    assert math.isclose(mean, statistics.fmean(values), rel_tol=1e-15)
    assert math.isclose(unit * math.sqrt(m2 / 3), statistics.stdev(values), rel_tol=1e-12)


def test_decimal_groups_merge_exactly_in_the_callers_context() -> None:
    values = [Fraction(v) for v in (10**30 + 1, 10**30 + 5, 10**30 + 2, 10**30 + 11, 10**30)]

    def exact(part: list[Fraction]) -> tuple[Fraction, Fraction]:
        mean = sum(part) / len(part)
        return mean, sum((v - mean) ** 2 for v in part)

    with localcontext() as context:
        context.prec = 100
        a_mean, a_m2 = exact(values[:2])
        b_mean, b_m2 = exact(values[2:])
        mean, m2 = merged_moments(
            Decimal(2),
            Decimal(a_mean.numerator) / a_mean.denominator,
            Decimal(a_m2.numerator) / a_m2.denominator,
            Decimal(3),
            Decimal(b_mean.numerator) / b_mean.denominator,
            Decimal(b_m2.numerator) / b_m2.denominator,
        )
    whole_mean, whole_m2 = exact(values)
    assert abs(Fraction(mean) - whole_mean) < Fraction(1, 10**60)
    assert abs(Fraction(m2) - whole_m2) < Fraction(1, 10**60)
