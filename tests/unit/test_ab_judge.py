"""The canary judge: A/A false rollbacks, regressions caught, minimums on both arms, caps that
need evidence, stratification by phase and reasons that name the test, numbers and bound.

Seeded simulations; rates are asserted with binomial tolerances (Clopper-Pearson bounds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chalicelib.abtesting.judge import CheckOutcome, judge_canary, worse_than
from chalicelib.abtesting.models import ExperimentMetrics, RollbackPolicy
from tests.helpers.abtesting import clopper_pearson_upper, latency_histogram

POLICY = RollbackPolicy("exp")  # the defaults: tolerance 20 %, alpha 0.05, no caps


def _arm(variant: str, requests: int, errors: int, histogram: dict[int, int] | None = None) -> Any:
    return ExperimentMetrics(
        variant, requests, requests - errors, errors, latency_histogram=histogram or {}
    )


def _rolled_back(
    rate_control: float,
    rate_canary: float,
    per_check: tuple[int, int],
    checks: int,
    sims: int,
    seed: int,
    policy: RollbackPolicy = POLICY,
) -> list[int | None]:
    """Canary requests seen when each simulated canary was rolled back (``None``: never).

    The judge is a pure function of the counts, and many simulated canaries reach the same
    error counts at the same check: each distinct (check, control errors, canary errors) is
    judged once (31,900-43,500 judge calls instead of 60,000 for 1,000 canaries x 60 checks).
    """
    rng = np.random.default_rng(seed)
    n_c, n_t = per_check
    control = rng.binomial(n_c, rate_control, (sims, checks)).cumsum(axis=1)
    canary = rng.binomial(n_t, rate_canary, (sims, checks)).cumsum(axis=1)
    fails: dict[tuple[int, int, int], bool] = {}

    def fail(check: int, errors_control: int, errors_canary: int) -> bool:
        key = (check, errors_control, errors_canary)
        if key not in fails:
            pair = (_arm("control", n_c * (check + 1), errors_control),
                    _arm("canary", n_t * (check + 1), errors_canary))  # fmt: skip
            fails[key] = judge_canary("canary", [pair], policy).outcome is CheckOutcome.FAIL
        return fails[key]

    found: list[int | None] = []
    for sim in range(sims):
        when = None
        for check in range(checks):
            if fail(check, int(control[sim, check]), int(canary[sim, check])):
                when = n_t * (check + 1)
                break
        found.append(when)
    return found


@pytest.mark.parametrize("rate", [0.02, 0.035, 0.055])
def test_aa_canary_false_rollbacks_over_60_checks_are_at_most_one_percent(rate: float) -> None:
    """The issue's table: identical error rates, 100 requests per arm per check, 60 checks.
    5.5 % is above the old default 5 % threshold: the canary is no worse than the control."""
    sims = 1000
    rolled = _rolled_back(rate, rate, (100, 100), 60, sims, seed=int(rate * 1000))
    false_rollbacks = sum(when is not None for when in rolled)
    assert clopper_pearson_upper(false_rollbacks, sims) <= 0.01


def test_control_with_3_requests_against_100_gives_no_decision() -> None:
    rng = np.random.default_rng(0)
    control = _arm("control", 3, 0, latency_histogram(np.array([40.0, 41.0, 42.0])))
    canary = _arm("canary", 100, 30, latency_histogram(rng.lognormal(np.log(400), 0.3, 100)))
    check = judge_canary("canary", [(control, canary)], POLICY)
    assert check.outcome is CheckOutcome.INCONCLUSIVE and check.criteria == ()
    assert "each arm needs 100 requests (control 3, canary 100)" in check.reason


def test_a_3x_error_rate_regression_of_a_10_percent_canary_is_caught_within_2000_requests() -> None:
    """Control 2 % errors, canary 6 %, the canary getting 10 % of 1,000 requests per check.
    Measured here: median 500 canary requests (5,000 in total), at most 1,500."""
    sims = 400
    rolled = _rolled_back(0.02, 0.06, (900, 100), 60, sims, seed=21)
    assert all(when is not None and when <= 2000 for when in rolled)
    assert float(np.median([when for when in rolled if when is not None])) <= 600


def _cumulative_histograms(values: np.ndarray) -> list[dict[int, int]]:
    """The histogram after each check (row) of ``values``."""
    found: list[dict[int, int]] = []
    total: dict[int, int] = {}
    for row in values:
        for bucket, count in latency_histogram(row).items():
            total[bucket] = total.get(bucket, 0) + count
        found.append(dict(total))
    return found


def test_a_latency_aa_is_not_rolled_back_by_the_histogram_test() -> None:
    """Identical latency distributions, 100 requests per arm per check, judged at every one of
    30 checks: at most 1 % of canaries ever fail (0 of 300 here)."""
    rng = np.random.default_rng(5)
    sims, checks, per_check = 300, 30, 100
    false_fails = 0
    for _ in range(sims):
        control = _cumulative_histograms(rng.lognormal(np.log(40), 0.4, (checks, per_check)))
        canary = _cumulative_histograms(rng.lognormal(np.log(40), 0.4, (checks, per_check)))
        for check in range(checks):
            n = (check + 1) * per_check
            pair = (_arm("control", n, 0, control[check]), _arm("canary", n, 0, canary[check]))
            if judge_canary("canary", [pair], POLICY).outcome is CheckOutcome.FAIL:
                false_fails += 1
                break
    assert clopper_pearson_upper(false_fails, sims) <= 0.01


def test_a_latency_regression_fails_naming_the_histogram_test_and_its_bound() -> None:
    rng = np.random.default_rng(9)
    control = _arm("control", 2000, 20, latency_histogram(rng.lognormal(np.log(40), 0.3, 2000)))
    canary = _arm("canary", 300, 3, latency_histogram(rng.lognormal(np.log(60), 0.3, 300)))
    check = judge_canary("canary", [(control, canary)], POLICY)
    assert check.outcome is CheckOutcome.FAIL
    [failed] = check.failed
    assert failed.metric == "latency_p95_ms" and failed.kind == "versus_control"
    assert failed.interval[0] > 0
    assert "above 1.20 x control's p95" in check.reason and "lower bound" in check.reason
    assert f"{failed.interval[0]:+.4f} > 0" in check.reason


def test_pass_needs_evidence_that_the_canary_is_not_worse() -> None:
    rng = np.random.default_rng(4)
    latency = latency_histogram(rng.lognormal(np.log(40), 0.3, 50000))
    big = judge_canary("canary", [(_arm("control", 50000, 1000, latency),
                                   _arm("canary", 50000, 975, latency))], POLICY)  # fmt: skip
    assert big.outcome is CheckOutcome.PASS
    small = judge_canary("canary", [(_arm("control", 150, 3, latency),
                                     _arm("canary", 150, 3, latency))], POLICY)  # fmt: skip
    assert small.outcome is CheckOutcome.INCONCLUSIVE


def test_absolute_caps_are_opt_in_and_need_a_lower_bound_above_the_cap() -> None:
    control, canary = _arm("control", 100, 5), _arm("canary", 100, 9)  # 9 % > a 5 % cap
    assert {c.kind for c in judge_canary("canary", [(control, canary)], POLICY).criteria} == {
        "versus_control"
    }
    capped = RollbackPolicy("exp", error_rate_threshold=0.05)
    check = judge_canary("canary", [(control, canary)], capped)
    cap = next(c for c in check.criteria if c.kind == "cap")
    assert cap.outcome is CheckOutcome.INCONCLUSIVE  # the point estimate alone is no evidence
    assert check.outcome is not CheckOutcome.FAIL
    # 5.5 % on both arms at the first check, capped at 5 %: never rolled back in 1,000 runs
    rolled = _rolled_back(0.055, 0.055, (100, 100), 1, 1000, seed=3, policy=capped)
    assert rolled.count(None) == 1000
    broken = judge_canary("canary", [(_arm("control", 400, 20), _arm("canary", 400, 80))], capped)
    assert broken.outcome is CheckOutcome.FAIL
    assert "error_rate 0.2000 (80 errors in 400 requests) exceeds threshold 0.0500" in broken.reason
    assert "lower bound" in broken.reason


def test_a_latency_cap_fails_only_with_evidence() -> None:
    rng = np.random.default_rng(8)
    control = _arm("control", 1000, 0, latency_histogram(rng.lognormal(np.log(40), 0.3, 1000)))
    slow = _arm("canary", 1000, 0, latency_histogram(rng.lognormal(np.log(120), 0.3, 1000)))
    policy = RollbackPolicy("exp", latency_threshold_ms=100.0, latency_degradation_threshold=5.0)
    check = judge_canary("canary", [(control, slow)], policy)
    cap = next(c for c in check.criteria if c.kind == "cap")
    assert cap.outcome is CheckOutcome.FAIL and check.outcome is CheckOutcome.FAIL
    assert "above the 100 ms cap" in cap.reason
    fast = _arm("canary", 1000, 0, latency_histogram(rng.lognormal(np.log(40), 0.3, 1000)))
    ok = judge_canary("canary", [(control, fast)], policy)
    assert next(c for c in ok.criteria if c.kind == "cap").outcome is CheckOutcome.PASS


def test_the_judge_is_stratified_by_allocation_phase() -> None:
    """A/A ramp: errors went from 1 % to 4 % for everyone when the canary moved from 10 % to 50 %
    of traffic. Pooled, the canary looks much worse; per phase it is not."""
    first = (_arm("control", 9000, 90), _arm("canary", 1000, 10))
    second = (_arm("control", 5000, 200), _arm("canary", 5000, 200))
    pooled = (_arm("control", 14000, 290), _arm("canary", 6000, 210))
    assert judge_canary("canary", [pooled], POLICY).outcome is CheckOutcome.FAIL
    assert judge_canary("canary", [first, second], POLICY).outcome is not CheckOutcome.FAIL


def test_a_metric_where_higher_is_better_is_worse_when_lower() -> None:
    def conversions(variant: str, converted: int) -> ExperimentMetrics:
        return ExperimentMetrics(variant, 5000, converted_count=converted, conversion_trials=5000)

    worse = worse_than("conversion_rate", [(conversions("c", 1000), conversions("t", 700))],
                       0.1, 0.05, 5000)  # fmt: skip
    assert worse.outcome is CheckOutcome.FAIL and "< 0.90 x" in worse.test
    better = worse_than("conversion_rate", [(conversions("c", 1000), conversions("t", 1100))],
                        0.1, 0.05, 5000)  # fmt: skip
    assert better.outcome is CheckOutcome.PASS
    early = (ExperimentMetrics("c", 50, converted_count=5, conversion_trials=50),
             ExperimentMetrics("t", 50, converted_count=1, conversion_trials=50))  # fmt: skip
    empty = worse_than("conversion_rate", [early], 0.1, 0.05, 5000, minimum=100)
    assert empty.outcome is CheckOutcome.INCONCLUSIVE and "waiting for 100" in empty.reason
