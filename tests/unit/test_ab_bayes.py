"""The Bayesian reading (chalicelib/abtesting/bayes.py) against a seeded Monte Carlo oracle, and
the Bayesian decision engine through the analyzer and the engine (conclude)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from chalicelib.abtesting import bayes
from chalicelib.abtesting.engine import ABTestingEngine
from chalicelib.abtesting.errors import InvalidExperiment
from chalicelib.abtesting.models import (
    AnalysisSettings,
    BayesianPrior,
    DecisionEngine,
    DecisionSettings,
    ExperimentMetrics,
    ModelVariant,
    Outcome,
    SufficientStats,
)
from chalicelib.abtesting.statistics import StatisticalAnalyzer, bayesian_decision
from chalicelib.core.clock import FixedClock
from chalicelib.core.events import RecordingEventBus
from tests.helpers.abtesting import memory_engine

DRAWS = 2_000_000
# Chance to win agrees with the oracle within 0.5 percentage points (the promise); the Monte
# Carlo standard error at 2e6 draws is at most 0.035 points, so the margin is all ours.
CHANCE_TOLERANCE = 0.005
# Expected losses agree within 6 Monte Carlo standard errors (plus 1e-9 for losses that are 0).
LOSS_SIGMAS = 6.0

# (prior alpha, prior beta, control conversions, control trials, treatment conversions, trials)
BETA_GRID = [
    (1, 1, 0, 3, 1, 4),  # tiny
    (1, 1, 3, 10, 4_000, 100_000),  # lopsided: 10 vs 100,000
    (1, 1, 9_000, 10_000, 2, 10),  # lopsided the other way
    (1, 1, 100_000, 1_000_000, 100_500, 1_000_000),  # large, a small lift
    (1, 1, 1, 10_000, 5, 10_000),  # rare events
    (0.5, 0.5, 0, 50, 0, 60),  # Jeffreys prior, no conversions at all (density infinite at 0)
    (1, 1, 50, 100, 30, 100),  # treatment worse
    (2, 20, 120, 1_000, 120, 1_000),  # informative prior, identical arms
    (1, 1, 499, 1_000, 501, 1_000),  # close to a coin flip
]


def _oracle(control: Any, treatment: Any, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    if isinstance(control, bayes.BetaPosterior):
        c = rng.beta(control.a, control.b, DRAWS)
        t = rng.beta(treatment.a, treatment.b, DRAWS)
    else:
        c = rng.normal(control.mean, control.sd, DRAWS)
        t = rng.normal(treatment.mean, treatment.sd, DRAWS)
    loss_t, loss_c = np.maximum(c - t, 0.0), np.maximum(t - c, 0.0)
    return {
        "chance": float(np.mean(t > c)),
        "loss_t": (float(loss_t.mean()), float(loss_t.std() / math.sqrt(DRAWS))),
        "loss_c": (float(loss_c.mean()), float(loss_c.std() / math.sqrt(DRAWS))),
        "lift": (t - c) / c,
    }


def _check_against_oracle(found: bayes.BayesianResult, oracle: dict[str, Any]) -> None:
    chance = oracle["chance"]
    if found.lower_is_better:
        chance = 1.0 - chance
    assert abs(found.chance_to_win - chance) <= CHANCE_TOLERANCE
    loss_t, loss_c = oracle["loss_t"], oracle["loss_c"]
    if found.lower_is_better:
        loss_t, loss_c = loss_c, loss_t
    assert abs(found.expected_loss_treatment - loss_t[0]) <= LOSS_SIGMAS * loss_t[1] + 1e-9
    assert abs(found.expected_loss_control - loss_c[0]) <= LOSS_SIGMAS * loss_c[1] + 1e-9
    # The credible interval's ends and the median are the 2.5 %, 50 % and 97.5 % quantiles of
    # the lift: the share of oracle draws below each is that level within 6 binomial errors.
    lift = oracle["lift"]
    assert found.credible_interval is not None and found.relative_lift is not None
    for level, value in zip(
        (0.025, 0.5, 0.975), (found.credible_interval[0], found.relative_lift,
                              found.credible_interval[1]), strict=True,
    ):  # fmt: skip
        share = float(np.mean(lift <= value))
        assert abs(share - level) <= 6 * math.sqrt(level * (1 - level) / DRAWS)


@pytest.mark.parametrize("case", BETA_GRID, ids=[str(c) for c in BETA_GRID])
def test_beta_chance_to_win_risk_and_lift_match_monte_carlo(case: tuple) -> None:
    a0, b0, xc, nc, xt, nt = case
    control = bayes.BetaPosterior(a0 + xc, b0 + nc - xc)
    treatment = bayes.BetaPosterior(a0 + xt, b0 + nt - xt)
    found = bayes.compare(control, treatment, "conversion_rate")
    _check_against_oracle(found, _oracle(control, treatment, seed=int(sum(case))))
    assert found.risk_treatment == pytest.approx(found.expected_loss_treatment / control.mean)


def test_the_quadrature_integrates_polynomials_of_its_degree_exactly_on_the_unit_interval() -> None:
    """Calls the cached rule's body itself (``__wrapped__``): it runs once per process, and
    the first test to reach it in a worker may be one ``make test`` runs untraced."""
    nodes, weights = bayes._legendre.__wrapped__()
    assert len(nodes) == len(weights) == bayes.QUADRATURE_NODES
    assert nodes.min() > 0 and nodes.max() < 1
    for degree in (0, 1, 7, 2 * bayes.QUADRATURE_NODES - 1):
        assert float(np.dot(weights, nodes**degree)) == pytest.approx(1 / (degree + 1), rel=1e-9)


def test_lower_is_better_swaps_the_chance_and_the_losses() -> None:
    control, treatment = bayes.BetaPosterior(21, 981), bayes.BetaPosterior(11, 991)
    higher = bayes.compare(control, treatment, "error_rate")
    lower = bayes.compare(control, treatment, "error_rate", lower_is_better=True)
    assert lower.chance_to_win == pytest.approx(1 - higher.chance_to_win, abs=1e-12)
    assert lower.expected_loss_treatment == higher.expected_loss_control
    assert lower.expected_loss_control == higher.expected_loss_treatment
    _check_against_oracle(lower, _oracle(control, treatment, seed=7))


NORMAL_GRID = [
    (100.0, 5.0, 101.0, 5.0),
    (100.0, 0.1, 99.0, 3.0),  # lopsided precision
    (2.0, 0.2, 2.1, 0.05),
    (50.0, 1.0, 50.0, 1.0),
]


@pytest.mark.parametrize("case", NORMAL_GRID, ids=[str(c) for c in NORMAL_GRID])
def test_normal_chance_to_win_risk_and_lift_match_monte_carlo(case: tuple) -> None:
    control = bayes.NormalPosterior(case[0], case[1])
    treatment = bayes.NormalPosterior(case[2], case[3])
    found = bayes.compare(control, treatment, "revenue")
    _check_against_oracle(found, _oracle(control, treatment, seed=int(sum(case))))


def _mean_metrics(variant: str, values: np.ndarray) -> ExperimentMetrics:
    stats = SufficientStats.from_values(values.tolist())
    return ExperimentMetrics(variant, len(values), custom_stats={"revenue": stats})


def test_mean_posterior_is_the_gaussian_approximation_or_the_conjugate_update() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(10, 2, 400)
    metrics = _mean_metrics("a", values)
    flat = bayes.posterior_of(metrics, "revenue", BayesianPrior())
    assert isinstance(flat, bayes.NormalPosterior)
    assert flat.mean == pytest.approx(values.mean(), rel=1e-12)
    assert flat.sd == pytest.approx(values.std(ddof=1) / 20, rel=1e-12)
    prior = BayesianPrior(mean=0.0, sd=0.5)
    shrunk = bayes.posterior_of(metrics, "revenue", prior)
    data_precision = 400 / values.var(ddof=1)
    precision = data_precision + 4.0
    assert shrunk.sd == pytest.approx(math.sqrt(1 / precision), rel=1e-12)
    assert shrunk.mean == pytest.approx(values.mean() * data_precision / precision, rel=1e-12)


def test_a_control_posterior_not_clear_of_zero_has_no_relative_lift() -> None:
    found = bayes.compare(bayes.NormalPosterior(0.1, 1.0), bayes.NormalPosterior(0.5, 1.0))
    assert found.relative_lift is None and found.credible_interval is None
    assert 0.5 < found.chance_to_win < 1


def test_no_data_and_percentiles_have_no_bayesian_reading() -> None:
    empty = ExperimentMetrics("a")
    assert bayes.compare_metrics(empty, empty, "conversion_rate") is None
    full = ExperimentMetrics("a", 10, 10, 0)
    assert bayes.compare_metrics(full, full, "latency_p95_ms") is None


def test_bayesian_decision_follows_the_risk_threshold() -> None:
    def reading(risk_t: float, risk_c: float) -> bayes.BayesianResult:
        return bayes.BayesianResult("m", "normal", "", 1.0, 1.0, 0.5, risk_t, risk_c, risk_t,
                                    risk_c, 0.0, (0.0, 0.0))  # fmt: skip

    assert bayesian_decision(None, 0.01, True) == "no_data"
    assert bayesian_decision(reading(0.001, 0.02), 0.01, False) == "inconclusive"
    assert bayesian_decision(reading(0.001, 0.02), 0.01, True) == "better"
    assert bayesian_decision(reading(0.02, 0.001), 0.01, True) == "keep_control"
    assert bayesian_decision(reading(0.02, 0.03), 0.01, True) == "inconclusive"


def test_identical_arms_keep_the_control_instead_of_naming_the_treatment_better() -> None:
    """Two arms with the same posterior (a constant metric equal in both, or equal counts) have
    equal risks; the tie named the treatment 'better' and conclude promoted it."""
    for posterior in (bayes.NormalPosterior(1.0, 0.0), bayes.NormalPosterior(10.0, 0.01),
                      bayes.BetaPosterior(500_001.0, 4_500_001.0)):  # fmt: skip
        reading = bayes.compare(posterior, posterior, "value")
        assert reading.risk_treatment == reading.risk_control
        assert bayesian_decision(reading, 0.0025, True) == "keep_control"


def test_the_risk_threshold_names_a_winner_in_most_aa_tests_read_repeatedly() -> None:
    """Documents a limit (README 'Deciding on risk', GUARANTEES 'What is not guaranteed'): the
    risk threshold bounds the expected loss, not the chance of naming a winner when the arms are
    equal. Once both arms' risks are below the threshold, the arm with the higher observed mean
    is 'better', a coin flip in an A/A test. 200 seeded A/A tests of a mean metric (10 +- 3 per
    unit), read every 1,000 units per arm up to 20,000 at the default threshold 0.0025."""
    rng = np.random.default_rng(19)
    runs, looks, batch, sd = 200, 20, 1000, 3.0
    ever = at_end = 0
    for _ in range(runs):
        sums = np.cumsum(rng.normal(10.0 * batch, sd * math.sqrt(batch), (2, looks)), axis=1)
        verdicts = []
        for look in range(looks):
            n = batch * (look + 1)
            control, treatment = (bayes.NormalPosterior(s / n, sd / math.sqrt(n))
                                  for s in sums[:, look])  # fmt: skip
            reading = bayes.compare(control, treatment, "value")
            verdicts.append(bayesian_decision(reading, DecisionSettings().risk_threshold, True))
        ever += "better" in verdicts
        at_end += verdicts[-1] == "better"
    # A winner is named in 82 % of the A/A tests at some look, and in 48.5 % read once at the end.
    assert (ever, at_end) == (164, 97)


# ------------------------------------------------------------------ through the engine


class _Registry:
    def __init__(self) -> None:
        self.promoted: list[tuple[str, int]] = []

    def get_version(self, model_id: str, version: int) -> tuple[str, int]:
        return model_id, version

    def set_stage(self, model_id: str, version: int, stage: str) -> None:
        self.promoted.append((model_id, version))


@pytest.fixture
def engine() -> ABTestingEngine:
    """The engine over in-memory repositories (the DynamoDB ones pass the same contracts)."""
    return memory_engine(_Registry(), RecordingEventBus(), FixedClock())


def _bayesian_experiment(engine: ABTestingEngine, **decision: Any) -> str:
    variants = [ModelVariant("v0", "m-1", 1, Decimal("0.5"), True),
                ModelVariant("v1", "m-1", 2, Decimal("0.5"))]  # fmt: skip
    settings = AnalysisSettings(decision=DecisionSettings(DecisionEngine.BAYESIAN, **decision))
    created = engine.create_experiment("exp", variants, minimum_sample_size=100,
                                       analysis=settings)  # fmt: skip
    return engine.start_experiment(created.experiment_id).experiment_id


def _convert(engine: ABTestingEngine, eid: str, per_arm: int, rates: tuple[float, float]) -> None:
    outcomes = [
        Outcome(arm, f"{arm}-{i}", True, 50.0, converted=i < rate * per_arm)
        for arm, rate in zip(("v0", "v1"), rates, strict=True)
        for i in range(per_arm)
    ]
    engine.record_outcomes(eid, outcomes)


def test_conclude_follows_the_bayesian_engine_on_its_risk_threshold(engine: Any) -> None:
    """10 % vs 13 % on 600 users each: the always-valid test is not decisive (p = 0.74), but the
    expected loss of shipping the treatment (0.4 % of the control's rate) is below a 1 %
    threshold, so the Bayesian engine ships it."""
    eid = _bayesian_experiment(engine, risk_threshold=0.01)
    _convert(engine, eid, 600, (0.10, 0.13))
    analysis = engine.analyze_experiment(eid)
    assert analysis.decision_engine == "bayesian"
    assert analysis.verdicts["frequentist"].recommendation.value == "continue"
    reading = analysis.treatments[0].bayesian
    assert reading.risk_treatment < 0.01 and analysis.treatments[0].bayesian_decision == "better"
    assert analysis.recommendation.value == "conclude_winner"
    concluded = engine.conclude_experiment(eid)
    assert concluded.winning_variant_id == "v1"
    assert "chance to win" in concluded.conclusion_reason
    assert engine.registry.promoted == [("m-1", 2)]


def test_a_tight_risk_threshold_keeps_running_and_conclude_promotes_nothing(engine: Any) -> None:
    eid = _bayesian_experiment(engine, risk_threshold=0.0001)
    _convert(engine, eid, 600, (0.10, 0.13))
    analysis = engine.analyze_experiment(eid)
    assert analysis.recommendation.value == "continue"
    assert analysis.treatments[0].bayesian_decision == "inconclusive"
    concluded = engine.conclude_experiment(eid)
    assert concluded.winning_variant_id is None
    assert "Bayesian (expected loss)" in concluded.conclusion_reason
    assert engine.registry.promoted == []


def test_the_bayesian_engine_keeps_the_control_when_that_is_safe(engine: Any) -> None:
    eid = _bayesian_experiment(engine, risk_threshold=0.01)
    _convert(engine, eid, 2000, (0.20, 0.15))
    analysis = engine.analyze_experiment(eid)
    assert analysis.treatments[0].bayesian_decision == "keep_control"
    assert analysis.recommendation.value == "conclude_no_difference"


def test_the_frequentist_engine_still_decides_by_default_and_shows_both(engine: Any) -> None:
    variants = [ModelVariant("v0", "m-1", 1, Decimal("0.5"), True),
                ModelVariant("v1", "m-1", 2, Decimal("0.5"))]  # fmt: skip
    eid = engine.start_experiment(
        engine.create_experiment("e", variants, minimum_sample_size=100).experiment_id
    ).experiment_id
    _convert(engine, eid, 300, (0.10, 0.13))
    analysis = engine.analyze_experiment(eid)
    assert analysis.decision_engine == "frequentist"
    assert analysis.recommendation.value == "continue"
    assert set(analysis.verdicts) == {"frequentist", "bayesian"}
    assert analysis.treatments[0].bayesian.model == "beta_binomial"


@pytest.mark.parametrize(
    "decision",
    [
        DecisionSettings(risk_threshold=0.0),
        DecisionSettings(risk_threshold=math.nan),
        DecisionSettings(prior=BayesianPrior(alpha=0.0)),
        DecisionSettings(prior=BayesianPrior(mean=1.0)),
        DecisionSettings(prior=BayesianPrior(mean=1.0, sd=-1.0)),
        DecisionSettings(prior=BayesianPrior(mean=math.inf, sd=1.0)),
    ],
)
def test_inconsistent_decision_settings_are_refused(engine: Any, decision: Any) -> None:
    variants = [ModelVariant("v0", "m-1", 1, Decimal("0.5"), True),
                ModelVariant("v1", "m-1", 2, Decimal("0.5"))]  # fmt: skip
    with pytest.raises(InvalidExperiment):
        engine.create_experiment("e", variants, analysis=AnalysisSettings(decision=decision))
    assert engine.list_experiments() == []


def test_the_analyzer_reads_one_comparison_the_bayesian_way() -> None:
    control = ExperimentMetrics("a", 1000, 1000, 0, converted_count=100, conversion_trials=1000)
    treatment = ExperimentMetrics("b", 1000, 1000, 0, converted_count=130, conversion_trials=1000)
    found = StatisticalAnalyzer().bayesian(control, treatment, "conversion_rate")
    assert found.model == "beta_binomial" and found.prior == "Beta(1, 1) on each arm's rate"
    assert 0.98 < found.chance_to_win < 1
    assert found.credible_interval[0] < found.relative_lift < found.credible_interval[1]


# ---- stratified by allocation phase ------------------------------------------------------------


def _phase(control: tuple[int, int], treatment: tuple[int, int]):
    from tests.helpers.abtesting import rate_metrics

    return rate_metrics("c", *control), rate_metrics("t", *treatment)


def test_the_phase_stratified_reading_matches_monte_carlo() -> None:
    """Three phases with different splits: chance to win and the expected losses of the
    stratified reading agree with 400,000 draws of sum_k w_k (T_k - C_k) from the phases' Beta
    posteriors (within 0.5 points; the expected loss within 5 %: the normal approximation)."""
    import numpy as np

    from chalicelib.abtesting import bayes

    pairs = [_phase((120, 1000), (118, 1000)), _phase((95, 500), (330, 1500)),
             _phase((40, 200), (410, 1800))]  # fmt: skip
    found = bayes.compare_phases(pairs, "conversion_rate")
    assert found is not None and "stratified over 3" in found.prior
    rng = np.random.default_rng(11)
    sizes = [(1000, 1000), (500, 1500), (200, 1800)]
    weights = np.array([n_c * n_t / (n_c + n_t) for n_c, n_t in sizes])
    weights /= weights.sum()
    draws = 400_000
    control = sum(
        w * rng.beta(1 + x, 1 + n - x, draws)
        for w, (x, n) in zip(weights, [(120, 1000), (95, 500), (40, 200)], strict=True)
    )
    treatment = sum(
        w * rng.beta(1 + x, 1 + n - x, draws)
        for w, (x, n) in zip(weights, [(118, 1000), (330, 1500), (410, 1800)], strict=True)
    )
    assert found.chance_to_win == pytest.approx((treatment > control).mean(), abs=0.005)
    loss = np.maximum(control - treatment, 0).mean()
    assert found.expected_loss_treatment == pytest.approx(loss, rel=0.05)


def test_a_reweighted_experiment_is_not_read_through_pooled_counts() -> None:
    """Simpson's case: equal rates within each phase (10 % then 20 %), but the treatment got
    90 % of the later, better phase. Pooled counts give it a near-certain win; the stratified
    reading, like the frequentist one, does not."""
    from chalicelib.abtesting import bayes
    from chalicelib.abtesting.aggregate import merge_metrics

    pairs = [_phase((500, 5000), (500, 5000)), _phase((200, 1000), (1800, 9000))]
    pooled = bayes.compare_metrics(
        merge_metrics("c", [p[0] for p in pairs]), merge_metrics("t", [p[1] for p in pairs]),
        "conversion_rate",
    )  # fmt: skip
    stratified = bayes.compare_phases(pairs, "conversion_rate")
    assert pooled is not None and pooled.chance_to_win > 0.999
    assert stratified is not None and 0.3 < stratified.chance_to_win < 0.7


def test_one_phase_keeps_the_exact_beta_binomial_reading() -> None:
    from chalicelib.abtesting import bayes

    pair = _phase((120, 1000), (140, 1000))
    assert bayes.compare_phases([pair], "conversion_rate") == bayes.compare_metrics(
        pair[0], pair[1], "conversion_rate"
    )
