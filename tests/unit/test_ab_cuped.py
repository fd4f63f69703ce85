"""CUPED (chalicelib/abtesting/cuped.py) against statsmodels' OLS, through DynamoDB, and the
1 - rho^2 sample-size reduction on seeded simulations."""

from __future__ import annotations

import math
from decimal import Decimal
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
import statsmodels.api as sm

from chalicelib.abtesting import cuped
from chalicelib.abtesting.engine import ABTestingEngine
from chalicelib.abtesting.errors import InvalidExperiment
from chalicelib.abtesting.models import CupedSums, ModelVariant, Outcome
from chalicelib.core.clock import FixedClock
from chalicelib.core.events import RecordingEventBus

RELATIVE = 1e-9


def _sums(x: np.ndarray, y: np.ndarray) -> CupedSums:
    """The sums as the counters add them, outcome by outcome."""
    total = CupedSums()
    for a, b in zip(x.tolist(), y.tolist(), strict=True):
        increments = cuped.outcome_sums(a, b)
        total = total + CupedSums(*(increments[name] for name in cuped.ATTRIBUTES))
    return total


def _ols(x_c: np.ndarray, y_c: np.ndarray, x_t: np.ndarray, y_t: np.ndarray) -> Any:
    x = np.r_[x_c, x_t]
    treated = np.r_[np.zeros(len(x_c)), np.ones(len(x_t))]
    return sm.OLS(np.r_[y_c, y_t], sm.add_constant(np.c_[treated, x - x.mean()])).fit()


def _assert_matches_ols(found: cuped.CupedResult, fit: Any) -> None:
    assert found.effect == pytest.approx(fit.params[1], rel=RELATIVE)
    assert found.standard_error == pytest.approx(fit.bse[1], rel=RELATIVE)
    assert found.theta == pytest.approx(fit.params[2], rel=RELATIVE)
    assert found.p_value == pytest.approx(fit.pvalues[1], rel=1e-6, abs=1e-300)
    low, high = fit.conf_int(alpha=0.05)[1]
    assert found.confidence_interval == pytest.approx((low, high), rel=1e-8)
    assert found.degrees_of_freedom == int(fit.df_resid)


@pytest.mark.parametrize(
    ("n_c", "n_t", "slope", "binary", "seed"),
    [(300, 420, 0.8, False, 1), (40, 2000, -1.5, False, 2), (500, 500, 0.0, False, 3),
     (800, 700, 0.0, True, 4)],
)  # fmt: skip
def test_cuped_effect_and_standard_error_equal_statsmodels_ols(
    n_c: int, n_t: int, slope: float, binary: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x_c, x_t = np.round(rng.normal(50, 10, n_c), 6), np.round(rng.normal(50, 10, n_t), 6)
    if binary:  # conversions whose chance grows with the pre-period value
        y_c = (rng.random(n_c) < 0.1 + (x_c - 50) / 200).astype(float)
        y_t = (rng.random(n_t) < 0.12 + (x_t - 50) / 200).astype(float)
    else:
        y_c = np.round(3 + slope * x_c + rng.normal(0, 6, n_c), 6)
        y_t = np.round(5 + slope * x_t + rng.normal(0, 6, n_t), 6)
    found = cuped.analyze(_sums(x_c, y_c), _sums(x_t, y_t), "m")
    _assert_matches_ols(found, _ols(x_c, y_c, x_t, y_t))
    plain = sm.OLS(np.r_[y_c, y_t], sm.add_constant(np.r_[np.zeros(n_c), np.ones(n_t)])).fit()
    assert found.unadjusted_standard_error == pytest.approx(plain.bse[1], rel=RELATIVE)
    assert found.variance_reduction == pytest.approx(
        1 - (fit_se := found.standard_error) ** 2 / plain.bse[1] ** 2, rel=1e-12
    )
    assert fit_se > 0


def test_too_few_units_or_a_constant_covariate_gives_no_cuped() -> None:
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    assert cuped.analyze(_sums(x, y), _sums(x, y)) is None
    flat = np.full(10, 7.0)
    assert cuped.analyze(_sums(flat, np.arange(10.0)), _sums(flat, np.arange(10.0))) is None


def _simulated_sums(rng: Any, n: int, rho: float, shift: float) -> CupedSums:
    x = rng.normal(0, 1, n)
    y = shift + rho * x + math.sqrt(1 - rho * rho) * rng.normal(0, 1, n)
    parts = (n, x.sum(), (x * x).sum(), y.sum(), (y * y).sum(), (x * y).sum())
    return CupedSums(*(Decimal(repr(float(v))) for v in parts))


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.7, 0.9])
def test_variance_falls_by_rho_squared_so_the_sample_size_by_one_minus_rho_squared(
    rho: float,
) -> None:
    """With 50,000 units per arm the sample r^2 is within 0.01 of rho^2 (its standard error is
    below 0.004), and the needed sample size is proportional to the variance."""
    rng = np.random.default_rng(int(rho * 100))
    found = cuped.analyze(_simulated_sums(rng, 50_000, rho, 0.0),
                          _simulated_sums(rng, 50_000, rho, 0.0))  # fmt: skip
    assert found.variance_reduction == pytest.approx(rho * rho, abs=0.01)
    assert 1 - found.variance_reduction == pytest.approx(1 - rho * rho, abs=0.01)


def test_cuped_keeps_the_power_at_one_minus_rho_squared_of_the_plain_sample_size() -> None:
    """rho = 0.7, effect 0.2 sd: the plain t test needs 393 per arm for 80 % power; CUPED at
    (1 - 0.49) x 393 = 201 per arm has the same power (1,000 seeded runs each; binomial
    standard error 1.3 points, tolerance 4)."""
    rng = np.random.default_rng(19)
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    plain_n = math.ceil(2 * z * z / 0.2**2)
    cuped_n = math.ceil(plain_n * (1 - 0.49))
    plain_hits = cuped_hits = 0
    for _ in range(1000):
        plain = cuped.analyze(_simulated_sums(rng, plain_n, 0.7, 0.0),
                              _simulated_sums(rng, plain_n, 0.7, 0.2))  # fmt: skip
        # the unadjusted t test is the same regression without the covariate
        plain_hits += abs(plain.unadjusted_effect / plain.unadjusted_standard_error) > 1.96
        adjusted = cuped.analyze(_simulated_sums(rng, cuped_n, 0.7, 0.0),
                                 _simulated_sums(rng, cuped_n, 0.7, 0.2))  # fmt: skip
        cuped_hits += adjusted.p_value < 0.05
    assert abs(plain_hits / 1000 - 0.8) <= 0.04
    assert abs(cuped_hits / 1000 - 0.8) <= 0.04


# ------------------------------------------------------------------ through DynamoDB


class _Registry:
    def get_version(self, model_id: str, version: int) -> tuple[str, int]:
        return model_id, version

    def set_stage(self, model_id: str, version: int, stage: str) -> None:
        """Promotions are not part of these tests."""


@pytest.fixture
def engine(aws: Any) -> ABTestingEngine:
    return ABTestingEngine(registry=_Registry(), event_bus=RecordingEventBus(),
                           clock=FixedClock(), route_cache_ttl=0)  # fmt: skip


def _running(engine: ABTestingEngine, metric: str) -> str:
    variants = [ModelVariant("v0", "m-1", 1, Decimal("0.5"), True),
                ModelVariant("v1", "m-1", 2, Decimal("0.5"))]  # fmt: skip
    created = engine.create_experiment("e", variants, primary_metric=metric)
    return engine.start_experiment(created.experiment_id).experiment_id


def test_cuped_of_a_custom_metric_through_dynamodb_equals_statsmodels(engine: Any) -> None:
    """Covariates near 1e5 with six decimals: the stored sums are exact, so the answer is the
    OLS fit on the same numbers; outcomes without a covariate count elsewhere, not here."""
    eid = _running(engine, "revenue")
    rng = np.random.default_rng(11)
    arms = {}
    outcomes = []
    for arm, lift in (("v0", 0.0), ("v1", 0.3)):
        x = np.round(1e5 + rng.normal(0, 3, 700), 6)
        y = np.round(20 + 0.5 * (x - 1e5) + lift + rng.normal(0, 1, 700), 6)
        arms[arm] = (x, y)
        outcomes += [
            Outcome(arm, f"{arm}-{i}", True, 10.0, custom_metrics={"revenue": float(v)},
                    covariate=float(c))
            for i, (c, v) in enumerate(zip(x, y, strict=True))
        ]  # fmt: skip
        outcomes += [Outcome(arm, f"{arm}-plain-{i}", True, 10.0, custom_metrics={"revenue": 1e3})
                     for i in range(5)]  # fmt: skip
    engine.record_outcomes(eid, outcomes)
    found = engine.analyze_experiment(eid).treatments[0].cuped
    assert found.units_control == found.units_treatment == 700
    _assert_matches_ols(found, _ols(*arms["v0"], *arms["v1"]))
    assert found.variance_reduction == pytest.approx(found.correlation**2, abs=0.01)  # rho 0.83


def test_cuped_of_conversions_through_dynamodb_equals_statsmodels(engine: Any) -> None:
    eid = _running(engine, "conversion_rate")
    rng = np.random.default_rng(12)
    arms, outcomes = {}, []
    for arm, base in (("v0", 0.10), ("v1", 0.13)):
        x = rng.poisson(3, 900).astype(float)
        y = (rng.random(900) < base + 0.03 * (x - 3)).astype(float)
        arms[arm] = (x, y)
        outcomes += [Outcome(arm, f"{arm}-{i}", True, 10.0, converted=bool(v), covariate=float(c))
                     for i, (c, v) in enumerate(zip(x, y, strict=True))]  # fmt: skip
    engine.record_outcomes(eid, outcomes)
    _assert_matches_ols(engine.analyze_experiment(eid).treatments[0].cuped,
                        _ols(*arms["v0"], *arms["v1"]))  # fmt: skip


@pytest.mark.parametrize(
    ("covariate", "custom"),
    [(math.nan, 1.0), (math.inf, 1.0), (2e6, 1.0), (1.0, 5e6)],
)
def test_a_bad_covariate_is_422_and_stores_nothing(
    engine: Any, covariate: float, custom: float
) -> None:
    eid = _running(engine, "revenue")
    good = Outcome("v0", "ok", True, 10.0, custom_metrics={"revenue": 1.0}, covariate=1.0)
    bad = Outcome("v1", "bad", True, 10.0, custom_metrics={"revenue": custom},
                  covariate=covariate)  # fmt: skip
    with pytest.raises(InvalidExperiment):
        engine.record_outcomes(eid, [good, bad])
    assert engine.get_experiment_metrics(eid)["v0"].request_count == 0
