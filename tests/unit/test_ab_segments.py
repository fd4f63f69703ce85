"""Segment analysis without AWS: seeded simulations of false flags and power, the flag rules,
the correction oracle and the declaration checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

import numpy as np
import pytest
from scipy import stats

from chalicelib.abtesting.aggregate import merge_metrics
from chalicelib.abtesting.errors import InvalidExperiment
from chalicelib.abtesting.metrics import RATIO_KINDS, ratio_attribute
from chalicelib.abtesting.models import (
    AllocationPhase,
    AnalysisMethod,
    AnalysisSettings,
    DecisionEngine,
    Dimension,
    Experiment,
    ExperimentMetrics,
    ExperimentStatus,
    MetricSpec,
    ModelVariant,
    PhaseReason,
    SegmentSettings,
    SufficientStats,
    TrafficAllocationStrategy,
)
from chalicelib.abtesting.segments import (
    InvalidAttributes,
    SegmentAnalysis,
    analyze_segments,
    check_attributes,
    check_settings,
)
from chalicelib.abtesting.statistics import ExperimentAnalysis, PhaseMetrics, StatisticalAnalyzer
from tests.helpers.oracles import multipletests

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WEIGHTS = {"control": Decimal("0.5"), "treatment": Decimal("0.5")}
PHASE = AllocationPhase(0, T0, PhaseReason.START, WEIGHTS)


def _experiment(
    values: int, correction: str, method: str, metric: str = "error_rate"
) -> Experiment:
    variants = (
        ModelVariant("control", "m", 1, Decimal("0.5"), True),
        ModelVariant("treatment", "m", 2, Decimal("0.5")),
    )
    return Experiment(
        "exp", "exp", "", variants, ExperimentStatus.RUNNING,
        TrafficAllocationStrategy.PERCENTAGE, T0, None, 100, 0.95, metric, (), T0, T0,
        analysis=AnalysisSettings(AnalysisMethod(method)),
        segments=SegmentSettings((Dimension("country", values),), correction),
        phases=(PHASE,),
    )  # fmt: skip


def _metrics(variant: str, requests: int, errors: int) -> ExperimentMetrics:
    return ExperimentMetrics(variant, request_count=requests, success_count=requests - errors,
                             error_count=errors)  # fmt: skip


def _analyse(
    experiment: Experiment, counts: dict[str, tuple[int, int, int, int]]
) -> tuple[ExperimentAnalysis, SegmentAnalysis]:
    """``counts``: segment → (control requests, control errors, treatment requests, errors)."""
    segments = {
        value: [PhaseMetrics(PHASE, {"control": _metrics("control", n_c, e_c),
                                     "treatment": _metrics("treatment", n_t, e_t)})]
        for value, (n_c, e_c, n_t, e_t) in counts.items()
    }  # fmt: skip
    rows = list(counts.values())
    totals = {
        "control": _metrics("control", sum(r[0] for r in rows), sum(r[1] for r in rows)),
        "treatment": _metrics("treatment", sum(r[2] for r in rows), sum(r[3] for r in rows)),
    }
    analyzer = StatisticalAnalyzer(0.95, 100, experiment.analysis)
    overall = analyzer.analyze(experiment, totals, [PhaseMetrics(PHASE, totals)])
    return overall, analyze_segments(experiment, overall, {"country": segments})


def _simulate(
    experiment: Experiment, rng: np.random.Generator, requests: int, control: list[float],
    treatment: list[float],
) -> tuple[ExperimentAnalysis, SegmentAnalysis]:  # fmt: skip
    counts = {
        f"s{i:02d}": (requests, int(rng.binomial(requests, p_c)),
                      requests, int(rng.binomial(requests, p_t)))
        for i, (p_c, p_t) in enumerate(zip(control, treatment, strict=True))
    }  # fmt: skip
    return _analyse(experiment, counts)


@pytest.fixture
def without_the_bayesian_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overall analysis also reports a Bayesian reading (a numerical integration, ~0.2 s an
    analysis: 60 % of these simulations' time) that plays no part in the segment tests or the
    frequentist decision they are compared with; the simulations leave it out. Their numbers are
    unchanged (the reading draws no random numbers). ``test_ab_bayes.py`` tests the reading."""
    from chalicelib.abtesting import bayes

    monkeypatch.setattr(bayes, "compare_metrics", lambda *args, **kwargs: None)


RUNS = 300
# Largest count of experiments with a flag that a true rate of alpha = 5 % explains (one-sided
# binomial test at 0.1 %): 28 of 300, 9.3 %. Without a correction about 60 % would be flagged.
ALLOWED = int(stats.binom.ppf(0.999, RUNS, 0.05))


@pytest.mark.parametrize(
    ("correction", "method"), [("holm", "fixed"), ("bh", "fixed"), ("holm", "sequential")]
)
@pytest.mark.usefixtures("without_the_bayesian_reading")
def test_with_no_effect_anywhere_experiments_with_a_flag_stay_within_alpha(
    correction: str, method: str
) -> None:
    experiment = _experiment(20, correction, method)
    assert experiment.analysis.decision.engine is DecisionEngine.FREQUENTIST
    rng = np.random.default_rng(19)
    flagged = 0
    for _ in range(RUNS):
        _, found = _simulate(experiment, rng, 1000, [0.05] * 20, [0.05] * 20)
        assert len(found.tests) == 20
        flagged += bool(found.flagged)

    # measured: holm/fixed 8, bh/fixed 8, holm/sequential 0 of 300
    assert flagged <= ALLOWED


@pytest.mark.usefixtures("without_the_bayesian_reading")
def test_a_regression_in_one_segment_of_ten_is_found_and_flagged_when_hidden() -> None:
    """Error rate 2 % everywhere, 6 % for the treatment in one country; 2,000 requests per arm
    and segment, the default sequential method, Holm over the 10 segment tests."""
    experiment = _experiment(10, "holm", "sequential")
    assert experiment.analysis.decision.engine is DecisionEngine.FREQUENTIST
    rng = np.random.default_rng(23)
    found_top = hidden = flagged_when_hidden = 0
    for _ in range(200):
        overall, found = _simulate(experiment, rng, 2000, [0.02] * 10, [0.02] * 9 + [0.06])
        top = found.top[0]
        found_top += top.value == "s09" and top.significant and top.difference > 0
        if not overall.treatments[0].significance.is_significant:
            hidden += 1
            flagged = [(t.value, t.flag_reason) for t in found.flagged]
            flagged_when_hidden += any(value == "s09" for value, _ in flagged)
            assert all(value == "s09" for value, _ in flagged)  # no other segment flagged

    # measured: the top segment in 200 of 200 runs; overall not significant in 131, BR flagged in
    # all 131 of them (in the other runs the overall result itself shows the regression)
    assert found_top >= 190
    assert hidden >= 100
    assert flagged_when_hidden >= 0.95 * hidden


def test_a_significant_segment_opposite_to_a_significant_overall_result_is_flagged() -> None:
    experiment = _experiment(5, "holm", "fixed")
    counts = {f"c{i}": (5000, 500, 5000, 300) for i in range(4)}  # the treatment halves errors
    counts["BR"] = (5000, 100, 5000, 300)  # but triples them in BR

    overall, found = _analyse(experiment, counts)

    assert overall.treatments[0].significance.is_significant
    assert [(t.value, t.flag_reason) for t in found.flagged] == [
        ("BR", "significantly worse here, opposite to the overall result")
    ]
    agreeing = [t for t in found.tests if t.value != "BR"]
    assert all(t.significant and not t.flagged for t in agreeing)


def test_segment_adjusted_p_values_are_statsmodels_holm_and_bh() -> None:
    rng = np.random.default_rng(4)
    for correction, oracle in (("holm", "holm"), ("bh", "fdr_bh")):
        experiment = _experiment(12, correction, "fixed")
        rates = list(rng.uniform(0.03, 0.08, 12))
        _, found = _simulate(experiment, rng, 800, [0.05] * 12, rates)
        raw = [t.significance.p_value for t in found.tests]
        expected = multipletests(raw, alpha=0.05, method=oracle)[1]
        assert [t.adjusted_p_value for t in found.tests] == pytest.approx(list(expected))
        assert [t.significant for t in found.tests] == [bool(p < 0.05) for p in expected]


def test_top_segments_put_significant_ones_first_then_the_largest_effects() -> None:
    experiment = _experiment(6, "holm", "fixed")
    counts = {
        "big": (4000, 200, 4000, 400),  # +100 %, significant
        "small": (4000, 200, 4000, 260),  # +30 %, significant
        "noisy": (50, 1, 50, 3),  # +200 %, far from significant
        "flat": (4000, 200, 4000, 200),
        "empty": (0, 0, 0, 0),
    }

    _, found = _analyse(experiment, counts)

    assert [t.value for t in found.top] == ["big", "small", "noisy", "flat"]
    assert [t.significant for t in found.top] == [True, True, False, False]


def test_declarations_are_checked() -> None:
    check_settings(SegmentSettings((Dimension("country", 20), Dimension("d.e-v_1", 1)), "bh"))
    bad = [
        SegmentSettings(tuple(Dimension(f"d{i}") for i in range(4))),
        SegmentSettings((Dimension("a"), Dimension("a"))),
        SegmentSettings((Dimension("a", 21),)),
        SegmentSettings((Dimension("a", 0),)),
        SegmentSettings((Dimension("1a"),)),
        SegmentSettings((Dimension("a#b"),)),
        SegmentSettings((Dimension("é"),)),
        SegmentSettings((Dimension(""),)),
        SegmentSettings((Dimension("a" * 65),)),
        SegmentSettings((), "bonferroni"),
        SegmentSettings((), "none"),
    ]
    for settings in bad:
        with pytest.raises(InvalidExperiment):
            check_settings(settings)


def test_attributes_are_checked() -> None:
    dimensions = (Dimension("country"),)
    check_attributes(dimensions, {"country": "Brasil 🇧🇷"})
    check_attributes(dimensions, {})
    for attributes in (
        {"city": "Rio"}, {"country": 1}, {"country": ""}, {"country": "x" * 65},
        {"country": "a\nb"}, {"country": "a\u2066b"}, {"country": "(other)"},
    ):  # fmt: skip
        with pytest.raises(InvalidAttributes):
            check_attributes(dimensions, attributes)


DECLARED = (
    MetricSpec("revenue", "mean"),
    MetricSpec("clicked", "proportion"),
    MetricSpec("ctr", "ratio", numerator="clicks", denominator="sessions"),
    MetricSpec("basket_p90", "quantile", source="basket", quantile=0.9),
)


def _declared_arm(variant: str, rng: np.random.Generator, n: int) -> ExperimentMetrics:
    """An arm with errors (2 %), revenue, clicked and clicks per session drawn with no effect."""
    sessions = rng.poisson(3, n) + 1
    clicks = rng.binomial(sessions, 0.3)
    sums = {
        ratio_attribute("ctr", kind): Decimal(int(value))
        for kind, value in zip(
            RATIO_KINDS,
            (n, clicks.sum(), sessions.sum(), (clicks * clicks).sum(),
             (sessions * sessions).sum(), (clicks * sessions).sum()),
            strict=True,
        )
    }  # fmt: skip
    errors = int(rng.binomial(n, 0.02))
    return ExperimentMetrics(
        variant, request_count=n, success_count=n - errors, error_count=errors,
        custom_stats={
            "revenue": SufficientStats.from_values(rng.lognormal(3, 1, n)),
            "clicked": SufficientStats.from_values(rng.random(n) < 0.3),
        },
        declared_sums=sums,
    )  # fmt: skip


@pytest.mark.usefixtures("without_the_bayesian_reading")
def test_with_no_effect_on_any_declared_metric_experiments_with_a_flag_stay_within_alpha() -> None:
    """10 segments x 4 tested metrics (error rate, revenue, clicked, clicks per session) = 40
    tests an experiment, Holm over all of them: the share of A/A experiments with any flag
    stays within the binomial band of alpha. The quantile is reported untested."""
    base = _experiment(10, "holm", "fixed")
    experiment = replace(base, analysis=replace(base.analysis, metrics=DECLARED))
    analyzer = StatisticalAnalyzer(0.95, 100, experiment.analysis)
    rng = np.random.default_rng(23)
    flagged = 0
    for _ in range(RUNS):
        segments = {
            f"s{i}": [PhaseMetrics(PHASE, {v: _declared_arm(v, rng, 200) for v in WEIGHTS})]
            for i in range(10)
        }
        totals = {
            v: merge_metrics(v, [s[0].metrics[v] for s in segments.values()]) for v in WEIGHTS
        }
        overall = analyzer.analyze(experiment, totals, [PhaseMetrics(PHASE, totals)])
        found = analyze_segments(experiment, overall, {"country": segments})
        assert len(found.tests) == 40
        flagged += bool(found.flagged)

    assert [u.metric for u in found.untested] == ["basket_p90"]
    assert found.metrics == ("error_rate", "revenue", "clicked", "ctr")
    # measured: 6 of 300
    assert flagged <= ALLOWED


def _declared_segments(
    rng: np.random.Generator, values: int, without_revenue: frozenset[int] = frozenset()
) -> dict[str, list[PhaseMetrics]]:
    """``values`` segments of 300 outcomes an arm; the ones in ``without_revenue`` carry none."""
    found = {}
    for i in range(values):
        arms = {v: _declared_arm(v, rng, 300) for v in WEIGHTS}
        if i in without_revenue:
            arms = {v: replace(m, custom_stats={}) for v, m in arms.items()}
        found[f"s{i}"] = [PhaseMetrics(PHASE, arms)]
    return found


def _analyse_declared(
    experiment: Experiment, segments: dict[str, list[PhaseMetrics]]
) -> tuple[ExperimentAnalysis, SegmentAnalysis]:
    analyzer = StatisticalAnalyzer(0.95, 100, experiment.analysis)
    totals = {v: merge_metrics(v, [s[0].metrics[v] for s in segments.values()]) for v in WEIGHTS}
    overall = analyzer.analyze(experiment, totals, [PhaseMetrics(PHASE, totals)])
    return overall, analyze_segments(experiment, overall, {"country": segments})


@pytest.mark.usefixtures("without_the_bayesian_reading")
@pytest.mark.parametrize(("method", "oracle"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_a_stored_declared_twin_of_the_primary_metric_is_tested_once(
    method: str, oracle: str
) -> None:
    """An experiment stored before a declared metric named as the primary one was refused: the
    twin is the primary metric, tested once per segment and left out of /analysis' declared
    family; the family is the deduplicated set, as statsmodels adjusts it."""
    base = _experiment(4, method, "fixed")
    twin = (MetricSpec("error_rate", "proportion"), MetricSpec("revenue", "mean"))
    experiment = replace(base, analysis=replace(base.analysis, metrics=twin, correction=method))
    overall, found = _analyse_declared(experiment, _declared_segments(np.random.default_rng(5), 4))

    assert found.metrics == ("error_rate", "revenue")
    assert [(t.value, t.metric, t.kind) for t in found.tests] == [
        (f"s{i}", metric, kind)
        for i in range(4)
        for metric, kind in (("error_rate", "primary"), ("revenue", "mean"))
    ]
    raw = [t.significance.p_value for t in found.tests]
    expected = multipletests(raw, alpha=0.05, method=oracle)[1]
    assert [t.adjusted_p_value for t in found.tests] == pytest.approx(list(expected))
    assert [m.metric_name for m in overall.metrics] == ["revenue"]
    assert overall.metrics[0].adjusted_p_value == pytest.approx(overall.metrics[0].p_value)


@pytest.mark.usefixtures("without_the_bayesian_reading")
@pytest.mark.parametrize(("method", "oracle"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_tests_without_data_are_left_out_of_the_correction_family(method: str, oracle: str) -> None:
    """Segments where a metric has no data (p = 1, ``no_data``) do not count in the family
    size: the others are adjusted as statsmodels adjusts them alone, the empty ones stay at 1."""
    base = _experiment(6, method, "fixed")
    specs = (MetricSpec("revenue", "mean"), MetricSpec("clicked", "proportion"))
    experiment = replace(base, analysis=replace(base.analysis, metrics=specs))
    segments = _declared_segments(np.random.default_rng(8), 6, frozenset({1, 3, 4}))
    segments["s5"] = [PhaseMetrics(PHASE, {v: ExperimentMetrics(v) for v in WEIGHTS})]
    _, found = _analyse_declared(experiment, segments)

    empty = [t for t in found.tests if t.difference is None]
    assert {(t.value, t.metric) for t in empty} == {
        *((f"s{i}", m) for i in (1, 3, 4) for m in ("revenue", "clicked")),
        *(("s5", m) for m in ("error_rate", "revenue", "clicked")),
    }
    assert all(t.adjusted_p_value == 1.0 and not t.significant for t in empty)
    tested = [t for t in found.tests if t.difference is not None]
    assert len(tested) == 18 - len(empty)
    expected = multipletests([t.significance.p_value for t in tested], method=oracle)[1]
    assert [t.adjusted_p_value for t in tested] == pytest.approx(list(expected))
