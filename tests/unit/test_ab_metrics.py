"""Declared metrics and corrections (chalicelib/abtesting/metrics.py, correction.py) against
independent oracles: statsmodels' multipletests, a seeded bootstrap and coverage simulations."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from chalicelib.abtesting import correction, metrics, sketch
from chalicelib.abtesting.models import ExperimentMetrics, MetricSpec
from tests.helpers.abtesting import latency_histogram, memory_engine, memory_manager
from tests.helpers.oracles import multipletests


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
        found = metrics.compare(spec, "t", metrics.quantile_estimate(latency_histogram(c), q),
                                metrics.quantile_estimate(latency_histogram(t), q),
                                method="fixed")  # fmt: skip
        covered += found.interval[0] <= truth <= found.interval[1]
    assert covered / 400 >= 0.92


def test_estimates_read_built_in_rates_and_named_values() -> None:
    arm = ExperimentMetrics("a", 100, 90, 10, converted_count=30, conversion_trials=100)
    conversion = metrics.estimate(arm, MetricSpec("conv", "proportion", source="conversion_rate"))
    assert conversion.value == 0.3 and conversion.variance == pytest.approx(0.3 * 0.7 / 100)
    assert metrics.estimate(arm, MetricSpec("revenue", "mean")) is None


def test_a_quantile_metric_counts_one_bucket_per_outcome_and_reads_its_own_buckets_back() -> None:
    """Each outcome adds 1 to the counter ``q:<metric>:<bucket>`` of its value's sketch bucket
    (nothing without the value); the arm's estimate is the quantile of the histogram those
    counters make, within the sketch's 1 % of numpy's, and ignores other metrics' counters."""
    spec = MetricSpec("ttfb_p90", "quantile", source="ttfb", quantile=0.9)
    values = np.random.default_rng(8).lognormal(4.0, 0.7, 300)
    sums: dict[str, Decimal] = {"q:ttfb_p9:40": Decimal(7), "r:ttfb_p90:n": Decimal(5)}
    for value in values:
        added = metrics.increments({"ttfb": float(value), "other": 1.0}, spec)
        assert added == {f"q:ttfb_p90:{sketch.bucket_index(float(value))}": Decimal(1)}
        for name, count in added.items():
            sums[name] = sums.get(name, Decimal(0)) + count
    assert metrics.increments({"other": 1.0}, spec) == {}
    assert metrics.quantile_attribute("ttfb_p90", 412) == "q:ttfb_p90:412"

    found = metrics.estimate(ExperimentMetrics("t", len(values), declared_sums=sums), spec)
    assert found is not None and found.n == len(values)
    assert found.value == pytest.approx(float(np.percentile(values, 90)), rel=0.01)
    assert found.variance > 0


def test_ratio_and_quantile_estimates_need_two_units_and_a_ratio_a_nonzero_denominator() -> None:
    """With fewer than two units there is no variance, and ``sum a / sum b`` with ``sum b = 0``
    has no value: no estimate (``None``, so the comparison is left out of the family)."""
    bucket = sketch.bucket_index(120.0)
    assert metrics.quantile_estimate({}, 0.5) is None
    assert metrics.quantile_estimate({bucket: 1}, 0.5) is None
    assert metrics.quantile_estimate({bucket: 2}, 0.5) is not None

    def sums(**parts: int) -> dict[str, Decimal]:
        return {metrics.ratio_attribute("ctr", k): Decimal(v) for k, v in parts.items()}

    # units as (clicks, sessions): one unit (2, 4); three units (1, 0), (1, 0), (0, 0)
    assert metrics.ratio_estimate(sums(n=1, a=2, b=4, aa=4, bb=16, ab=8), "ctr") is None
    assert metrics.ratio_estimate(sums(n=3, a=2, b=0, aa=2, bb=0, ab=0), "ctr") is None
    two = metrics.ratio_estimate(sums(n=2, a=3, b=8, aa=5, bb=32, ab=12), "ctr")  # (1, 4), (2, 4)
    assert two is not None and (two.value, two.n) == (3 / 8, 2)


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


@pytest.mark.parametrize(("method", "oracle"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_declared_comparisons_without_data_are_left_out_of_the_family(
    method: str, oracle: str
) -> None:
    """A metric no arm of a treatment carries (``no_data``, p = 1) does not count in the family
    size: the others are adjusted as statsmodels adjusts them alone."""
    from chalicelib.abtesting.models import SufficientStats

    specs = [MetricSpec("revenue", "mean"), MetricSpec("basket", "mean")]
    rng = np.random.default_rng(3)

    def arm(*names: str) -> ExperimentMetrics:
        stats = {n: SufficientStats.from_values(rng.normal(10, 2, 400).tolist()) for n in names}
        return ExperimentMetrics("x", 400, custom_stats=stats)

    pairs = {"t1": (arm("revenue", "basket"), arm("revenue", "basket")),
             "t2": (arm("revenue"), arm("revenue")), "t3": (arm(), arm("revenue"))}  # fmt: skip
    found = metrics.compare_all(specs, pairs, method, method="fixed")
    empty = [(i.variant_id, i.metric_name) for i in found if i.test == "no_data"]
    assert empty == [("t2", "basket"), ("t3", "revenue"), ("t3", "basket")]
    assert all(
        i.adjusted_p_value == 1.0 and not i.significant for i in found if i.test == "no_data"
    )
    tested = [i for i in found if i.test != "no_data"]
    expected = multipletests([i.p_value for i in tested], method=oracle)[1]
    assert [i.adjusted_p_value for i in tested] == pytest.approx(expected.tolist(), abs=1e-15)


# ------------------------------------------------------------------ declared on an experiment


class _Registry:
    def __init__(self) -> None:
        self.promoted: list[tuple[str, int]] = []

    def get_version(self, model_id: str, version: int) -> tuple[str, int]:
        return model_id, version

    def set_stage(self, model_id: str, version: int, stage: str) -> None:
        self.promoted.append((model_id, version))


@pytest.fixture
def engine() -> Any:
    """The engine over in-memory stores: declarations, validation, analysis and the monitor's
    decisions are logic (the DynamoDB counters pass the same contract,
    ``test_repository_contracts.py``, and the next fixture runs them here once)."""
    from chalicelib.core.clock import FixedClock
    from chalicelib.core.events import RecordingEventBus

    return memory_engine(_Registry(), RecordingEventBus(), FixedClock())


@pytest.fixture
def dynamodb_engine(aws: Any) -> Any:
    from chalicelib.abtesting.engine import ABTestingEngine
    from chalicelib.core.clock import FixedClock
    from chalicelib.core.events import RecordingEventBus

    return ABTestingEngine(registry=_Registry(), event_bus=RecordingEventBus(),
                           clock=FixedClock(), route_cache_ttl=0)  # fmt: skip


DECLARED = (
    MetricSpec("revenue", "mean", "primary", cap_upper=100.0),
    MetricSpec("ctr", "ratio", numerator="clicks", denominator="sessions"),
    MetricSpec("latency_p90", "quantile", source="latency_ms", quantile=0.9),
    MetricSpec("crashed", "proportion", "guardrail", lower_is_better=True),
)


def _start(engine: Any, specs: tuple = DECLARED, method: str = "bh", **extra: Any) -> str:
    from chalicelib.abtesting.models import AnalysisSettings, ModelVariant

    variants = [ModelVariant("v0", "m-1", 1, Decimal("0.5"), True),
                ModelVariant("v1", "m-1", 2, Decimal("0.5"))]  # fmt: skip
    settings = AnalysisSettings(metrics=specs, correction=method)
    created = engine.create_experiment("e", variants, analysis=settings, minimum_sample_size=100,
                                       **extra)  # fmt: skip
    return engine.start_experiment(created.experiment_id).experiment_id


def test_declared_metrics_are_analysed_together_through_dynamodb(dynamodb_engine: Any) -> None:
    from chalicelib.abtesting.models import Outcome

    engine = dynamodb_engine
    eid = _start(engine)
    rng = np.random.default_rng(21)
    raw: dict[str, dict[str, np.ndarray]] = {}
    outcomes = []
    for arm, lift in (("v0", 0.0), ("v1", 2.0)):
        n = 400
        revenue = np.round(rng.exponential(20, n) + lift, 6)
        revenue[:3] = 1e6  # heavy tail, capped at 100 when recorded
        sessions = rng.poisson(3, n) + 1.0
        clicks = rng.binomial(sessions.astype(int), 0.3).astype(float)
        latency = np.round(rng.lognormal(3, 0.5, n), 3)
        crashed = (rng.random(n) < 0.02).astype(float)
        raw[arm] = {"revenue": np.minimum(revenue, 100.0), "clicks": clicks,
                    "sessions": sessions, "latency": latency}  # fmt: skip
        outcomes += [
            Outcome(arm, f"{arm}-{i}", True, float(latency[i]), custom_metrics={
                "revenue": float(revenue[i]), "clicks": float(clicks[i]),
                "sessions": float(sessions[i]), "crashed": float(crashed[i])})
            for i in range(n)
        ]  # fmt: skip
    # small batches: each distinct revenue prefix and latency bucket is an attribute of the
    # counter update, and moto's expression parser recurses once per attribute
    for start in range(0, len(outcomes), 20):
        engine.record_outcomes(eid, outcomes[start : start + 20])
    analysis = engine.analyze_experiment(eid)
    assert analysis.correction == "bh" and len(analysis.metrics) == 4
    found = {item.metric_name: item for item in analysis.metrics}
    assert found["revenue"].treatment.value == pytest.approx(raw["v1"]["revenue"].mean(),
                                                             rel=1e-12)  # fmt: skip
    ctr = raw["v0"]["clicks"].sum() / raw["v0"]["sessions"].sum()
    assert found["ctr"].control.value == pytest.approx(ctr, rel=1e-12)
    p90 = np.percentile(raw["v0"]["latency"], 90)
    assert found["latency_p90"].control.value == pytest.approx(p90, rel=0.01)
    p_values = [item.p_value for item in analysis.metrics]
    expected = multipletests(p_values, method="fdr_bh")[1].tolist()
    assert [item.adjusted_p_value for item in analysis.metrics] == pytest.approx(expected)
    assert {g.metric_name for g in analysis.treatments[0].guardrails} == {"crashed"}


def test_a_failing_declared_guardrail_blocks_promotion(engine: Any) -> None:
    """The treatment converts 25 % against 10 % (a decisive winner) but crashes 30 % of the
    time against 2 %: the guardrail fails and neither engine recommends it; conclude promotes
    nothing."""
    from chalicelib.abtesting.models import Outcome

    specs = (MetricSpec("crashed", "proportion", "guardrail", lower_is_better=True),)
    eid = _start(engine, specs, "holm")
    outcomes = [
        Outcome(arm, f"{arm}-{i}", True, 10.0, converted=i < conv * 1000,
                custom_metrics={"crashed": float(i % 100 < crash * 100)})
        for arm, conv, crash in (("v0", 0.10, 0.02), ("v1", 0.25, 0.30))
        for i in range(1000)
    ]  # fmt: skip
    engine.record_outcomes(eid, outcomes)
    analysis = engine.analyze_experiment(eid)
    assert analysis.treatments[0].significance.decision == "better"
    guard = analysis.treatments[0].guardrails[0]
    assert guard.metric_name == "crashed" and guard.degraded and guard.outcome == "fail"
    assert analysis.recommendation.value != "conclude_winner"
    assert analysis.verdicts["bayesian"].recommended_winner is None
    assert engine.conclude_experiment(eid).winning_variant_id is None
    assert engine.registry.promoted == []


@pytest.mark.parametrize(
    "specs",
    [
        tuple(MetricSpec(f"m{i}", "mean") for i in range(11)),
        (MetricSpec("ctr", "ratio", numerator="clicks"),),
        (MetricSpec("a", "mean"), MetricSpec("a", "proportion")),
        (MetricSpec("a", "mean", "primary"), MetricSpec("b", "mean", "primary")),
        (MetricSpec("p", "quantile", quantile=1.0),),
        (MetricSpec("a", "mean", cap_lower=5.0, cap_upper=1.0),),
        (MetricSpec("a", "median"),),
        (MetricSpec("conversion_rate", "proportion"),),  # the primary metric, tested already
    ],
)
def test_inconsistent_declarations_are_refused_and_store_nothing(engine: Any, specs: tuple) -> None:
    from chalicelib.abtesting.errors import InvalidExperiment

    with pytest.raises(InvalidExperiment):
        _start(engine, specs)
    assert engine.list_experiments() == []


@pytest.mark.parametrize("values", [{"crashed": 0.5}, {"clicks": 2e6, "sessions": 1.0}])
def test_values_a_declared_metric_cannot_count_are_422_and_store_nothing(
    engine: Any, values: dict
) -> None:
    from chalicelib.abtesting.errors import InvalidExperiment
    from chalicelib.abtesting.models import Outcome

    eid = _start(engine)
    good = Outcome("v0", "ok", True, 5.0, custom_metrics={"revenue": 1.0})
    with pytest.raises(InvalidExperiment):
        engine.record_outcomes(eid, [good, Outcome("v1", "bad", True, 5.0, custom_metrics=values)])
    assert engine.get_experiment_metrics(eid)["v0"].request_count == 0


def _crash_outcomes(control: float, treatment: float, n: int = 1000) -> list:
    from chalicelib.abtesting.models import Outcome

    return [
        Outcome(arm, f"{arm}-{i}", True, 10.0,
                custom_metrics={"crashed": float(i % 100 < rate * 100)})
        for arm, rate in (("v0", control), ("v1", treatment))
        for i in range(n)
    ]  # fmt: skip


def test_a_rollback_guardrail_rolls_the_canary_back_through_the_monitor(engine: Any) -> None:
    specs = (MetricSpec("crashed", "proportion", "guardrail", lower_is_better=True,
                        rollback=True),)  # fmt: skip
    eid = _start(engine, specs, "holm")
    engine.record_outcomes(eid, _crash_outcomes(0.02, 0.30))
    manager = memory_manager(engine)
    decision = manager.evaluate(engine.get_experiment(eid))
    assert decision is not None and decision.metric == "crashed"
    assert decision.details["kind"] == "declared_guardrail"


def test_a_rollback_guardrail_waits_for_the_policys_requests_per_arm(engine: Any) -> None:
    """The decisive crash rates that roll the canary back, 1,000 control requests and 1,500
    canary ones, under a policy that needs 1,001 per arm before a check may fail: the declared
    guardrail is inconclusive and nothing rolls back; at 1,000 it rolls back."""
    from chalicelib.abtesting.models import Outcome

    specs = (MetricSpec("crashed", "proportion", "guardrail", lower_is_better=True,
                        rollback=True),)  # fmt: skip
    eid = _start(engine, specs, "holm")
    more = [Outcome("v1", f"v1-more-{i}", True, 10.0, custom_metrics={"crashed": float(i % 3 == 0)})
            for i in range(500)]  # fmt: skip
    engine.record_outcomes(eid, _crash_outcomes(0.02, 0.30) + more)
    manager = memory_manager(engine)
    manager.register_experiment(eid, min_requests_before_rollback=1001)
    assert manager.evaluate(engine.get_experiment(eid)) is None
    crit = [c for c in manager.judge(engine.get_experiment(eid))[0].criteria
            if c.metric == "crashed"]  # fmt: skip
    assert [c.outcome.value for c in crit] == ["inconclusive"]
    manager.register_experiment(eid, min_requests_before_rollback=1000)
    decision = manager.evaluate(engine.get_experiment(eid))
    assert decision is not None and decision.details["kind"] == "declared_guardrail"


def test_a_guardrail_without_rollback_or_without_evidence_rolls_nothing_back(engine: Any) -> None:
    blocking = (MetricSpec("crashed", "proportion", "guardrail", lower_is_better=True),)
    eid = _start(engine, blocking, "holm")
    engine.record_outcomes(eid, _crash_outcomes(0.02, 0.30))
    assert memory_manager(engine).evaluate(engine.get_experiment(eid)) is None
    rolling = (MetricSpec("crashed", "proportion", "guardrail", lower_is_better=True,
                          rollback=True),)  # fmt: skip
    same = _start(engine, rolling, "holm")
    engine.record_outcomes(same, _crash_outcomes(0.02, 0.02))
    checks = memory_manager(engine).judge(engine.get_experiment(same))
    crit = [c for c in checks[0].criteria if c.metric == "crashed"]
    assert crit and crit[0].outcome.value == "inconclusive"
    assert checks[0].outcome.value != "fail"


def test_only_a_guardrail_may_roll_back(engine: Any) -> None:
    from chalicelib.abtesting.errors import InvalidExperiment

    with pytest.raises(InvalidExperiment):
        _start(engine, (MetricSpec("revenue", "mean", "secondary", rollback=True),))


# ---- small samples: Fisher's exact test and constant arms -------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_fisher_exact_p_equals_scipy_on_seeded_tables(seed: int) -> None:
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(seed)
    for _ in range(200):
        size = int(rng.choice([3, 12, 60, 400]))
        a, b, c, d = (int(v) for v in rng.integers(0, size + 1, 4))
        if a + b == 0 or c + d == 0:
            continue
        expected = fisher_exact([[a, b], [c, d]]).pvalue
        assert metrics.fisher_exact_p(a, b, c, d) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_fisher_exact_p_on_a_billion_units_sums_only_the_tails() -> None:
    from scipy.stats import fisher_exact

    for table in ((10**9, 0, 10**9 - 40, 40), (0, 10**9, 25, 10**9)):
        expected = fisher_exact([[table[0], table[1]], [table[2], table[3]]]).pvalue
        assert metrics.fisher_exact_p(*table) == pytest.approx(expected, rel=1e-4, abs=1e-12)
    # The margins of [[1e9, 0], [1e9 - 1, 1]] allow two tables, a = 1e9 - 1 and a = 1e9, each
    # C(1e9, 1)/C(2e9, 1) = 1/2 likely, so p = 1 exactly (scipy's fisher_exact says 1.0 too,
    # after 10 s of exact factorisation over a billion units).
    assert metrics.fisher_exact_p(10**9, 0, 10**9 - 1, 1) == pytest.approx(1.0, rel=1e-4)


def _proportion(hits: int, n: int) -> metrics.Estimate:
    p = hits / n
    return metrics.Estimate(p, p * (1 - p) / n, n)


def test_two_constant_proportion_arms_get_fishers_p_not_zero() -> None:
    """0/20 against 20/20: z would divide by a zero variance and say p = 0."""
    from scipy.stats import fisher_exact

    spec = MetricSpec("crashed", "proportion", "guardrail")
    found = metrics.compare(spec, "t", _proportion(0, 20), _proportion(20, 20), method="fixed")
    assert found.test == "fisher_exact" and found.interval is None
    assert found.p_value == pytest.approx(fisher_exact([[0, 20], [20, 0]]).pvalue, rel=1e-9)
    assert 0 < found.p_value < 1e-10
    same = metrics.compare(spec, "t", _proportion(0, 3), _proportion(0, 4), method="fixed")
    assert (same.test, same.p_value) == ("fisher_exact", 1.0)


def test_small_expected_cells_use_fisher_and_large_ones_keep_z() -> None:
    from scipy.stats import fisher_exact

    spec = MetricSpec("converted", "proportion")
    small = metrics.compare(spec, "t", _proportion(1, 40), _proportion(6, 40), method="fixed")
    assert small.test == "fisher_exact"
    assert small.p_value == pytest.approx(fisher_exact([[1, 39], [6, 34]]).pvalue, rel=1e-9)
    large = metrics.compare(spec, "t", _proportion(500, 1000), _proportion(540, 1000), "fixed")
    assert large.test == "z" and large.interval is not None
    assert not metrics.needs_exact_test(_proportion(5, 100), _proportion(5, 100))
    assert metrics.needs_exact_test(_proportion(4, 100), _proportion(4, 100))


def test_two_constant_mean_arms_have_no_z_test_and_p_is_one() -> None:
    from chalicelib.abtesting.models import SufficientStats

    spec = MetricSpec("score", "mean", "primary")

    def arm(value: float) -> ExperimentMetrics:
        return ExperimentMetrics(
            "x", 10, custom_stats={"score": SufficientStats.from_values([value] * 10)}
        )

    found = metrics.compare_all([spec], {"t": (arm(3.0), arm(5.0))}, "holm", method="fixed")
    assert [(f.test, f.p_value, f.interval, f.significant) for f in found] == [
        ("zero_variance", 1.0, None, False)
    ]
    assert found[0].difference == 2.0
