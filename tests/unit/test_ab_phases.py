"""Allocation history on moto: the weights in force over time (start, ramp steps, bandit
reweights, pauses), outcomes counted in the phase they were routed in, SRM per phase, analysis
stratified by phase, explicit conclusions, and exact statistics through storage."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from scipy import stats

from chalicelib.abtesting.engine import MAX_PHASES, ABTestingEngine
from chalicelib.abtesting.errors import ExperimentStateConflict, InvalidExperiment
from chalicelib.abtesting.models import (
    AllocationPhase,
    AnalysisMethod,
    AnalysisSettings,
    BanditConfig,
    Dimension,
    ExperimentStatus,
    ModelVariant,
    Outcome,
    PhaseReason,
    RampSchedule,
    SegmentSettings,
)
from chalicelib.abtesting.outcomes_repository import parse_shard_key, shard_key
from chalicelib.abtesting.repository import HISTORY_BYTES, history_bytes
from chalicelib.core.clock import FixedClock
from chalicelib.core.events import RecordingEventBus
from tests.helpers.abtesting import FakeRegistry, memory_engine
from tests.helpers.abtesting import running_experiment as _running


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def bus() -> RecordingEventBus:
    return RecordingEventBus()


@pytest.fixture
def engine(bus: RecordingEventBus, clock: FixedClock, registry: FakeRegistry) -> Any:
    """The engine over in-memory repositories (the DynamoDB ones pass the same contracts)."""
    return memory_engine(registry, bus, clock)


@pytest.fixture
def dynamo_engine(
    aws: Any, bus: RecordingEventBus, clock: FixedClock, registry: FakeRegistry
) -> Any:
    """The engine over the DynamoDB repositories (moto enforces DynamoDB's item size)."""
    return ABTestingEngine(registry=registry, event_bus=bus, clock=clock, route_cache_ttl=0)


def _binomial(variant: str, prefix: str, n: int, rate: float, phase: int | None, seed: int) -> list:
    hits = np.random.default_rng(seed).random(n) < rate
    return [
        Outcome(variant, f"{prefix}-{i}", True, 40.0, converted=bool(hit), phase=phase)
        for i, hit in enumerate(hits)
    ]


def test_every_allocation_change_is_a_phase_with_the_weights_in_force(
    engine: Any, clock: FixedClock
) -> None:
    ramp = RampSchedule((Decimal("0.1"), Decimal("0.5")), 10, 0)
    experiment = _running(engine, "0.9", "0.1", allocation_strategy="ramping", ramp=ramp)
    eid = experiment.experiment_id
    clock.advance(minutes=11)
    engine.advance_ramp(eid)
    engine.pause_experiment(eid)
    engine.resume_experiment(eid)
    engine.conclude_experiment(eid, "v1")
    phases = engine.get_experiment(eid).phases
    assert [p.reason for p in phases] == [PhaseReason.START, PhaseReason.RAMP, PhaseReason.PAUSE,
                                          PhaseReason.RESUME, PhaseReason.END]  # fmt: skip
    assert [p.index for p in phases] == [0, 1, 2, 3, 4]
    weights = [{k: str(v) for k, v in p.weights.items()} for p in phases]
    assert weights == [{"v0": "0.9", "v1": "0.1"}, {"v0": "0.5", "v1": "0.5"},
                       {"v0": "1", "v1": "0"}, {"v0": "0.5", "v1": "0.5"},
                       {"v0": "0", "v1": "1"}]  # fmt: skip
    assert [p.compares for p in phases] == [True, True, False, True, False]
    assert phases[1].started_at > phases[0].started_at


def test_outcomes_count_in_the_phase_they_were_routed_in(engine: Any, clock: FixedClock) -> None:
    experiment = _running(engine, "0.5", "0.5")
    eid = experiment.experiment_id
    assert engine.assign_request(eid, "r-1", "u-1")[2] == 0
    engine.pause_experiment(eid)
    assert engine.assign_request(eid, "r-2", "u-1") == ("v0", 1, 1)
    # one outcome routed before the pause, posted now; one routed while paused; one from nowhere
    engine.record_outcomes(eid, [Outcome("v1", "early", True, 1.0, phase=0),
                                 Outcome("v0", "paused", True, 1.0)])  # fmt: skip
    with pytest.raises(InvalidExperiment, match="phase 9 does not exist"):
        engine.record_outcomes(eid, [Outcome("v0", "future", True, 1.0, phase=9)])
    phases = engine.get_phase_metrics(eid)
    assert [p.metrics["v1"].request_count for p in phases] == [1, 0]
    assert [p.metrics["v0"].request_count for p in phases] == [0, 1]
    totals = engine.get_experiment_metrics(eid)
    assert totals["v0"].request_count == 1 and totals["v1"].request_count == 1
    assert parse_shard_key(shard_key("v-1", 3, 7)) == ("v-1", 3)
    assert parse_shard_key(shard_key("v-1", 0, 7)) == ("v-1", 0) and shard_key("v", 0, 7) == "v#07"


def test_srm_after_a_ramp_step_follows_the_weights_in_force(engine: Any, clock: FixedClock) -> None:
    """The issue: a healthy ramp 10 % → 50 % had SRM p = 1.5e-21 against today's weights."""
    ramp = RampSchedule((Decimal("0.1"), Decimal("0.5")), 10, 0)
    experiment = _running(engine, "0.9", "0.1", allocation_strategy="ramping", ramp=ramp)
    eid = experiment.experiment_id
    engine.record_outcomes(eid, _binomial("v0", "a", 540, 0.1, None, 1)
                           + _binomial("v1", "b", 60, 0.1, None, 2))  # fmt: skip
    clock.advance(minutes=11)
    assert engine.advance_ramp(eid) is not None
    engine.record_outcomes(eid, _binomial("v0", "c", 400, 0.1, None, 3)
                           + _binomial("v1", "d", 400, 0.1, None, 4))  # fmt: skip
    analysis = engine.analyze_experiment(eid)
    srm = analysis.sample_ratio
    assert not srm.mismatch and srm.checked and len(srm.phases) == 2
    assert srm.observed == {"v0": 940, "v1": 460}
    assert srm.expected == {"v0": pytest.approx(940.0), "v1": pytest.approx(460.0)}
    pooled = stats.chisquare([940, 460], [700, 700]).pvalue
    assert pooled < 1e-20  # what comparing with the current weights said


def test_pausing_stops_counting_exposure(engine: Any) -> None:
    experiment = _running(engine, "0.5", "0.5")
    eid = experiment.experiment_id
    engine.record_outcomes(eid, _binomial("v0", "a", 200, 0.1, None, 5)
                           + _binomial("v1", "b", 200, 0.1, None, 6))  # fmt: skip
    engine.pause_experiment(eid)
    engine.record_outcomes(eid, _binomial("v0", "p", 600, 0.1, None, 7))  # everyone on control
    engine.resume_experiment(eid)
    engine.record_outcomes(eid, _binomial("v0", "c", 200, 0.1, None, 8)
                           + _binomial("v1", "d", 200, 0.1, None, 9))  # fmt: skip
    analysis = engine.analyze_experiment(eid)
    assert not analysis.sample_ratio.mismatch
    assert analysis.sample_ratio.observed == {"v0": 400, "v1": 400}
    assert [p.checked for p in analysis.sample_ratio.phases] == [True, False, True]
    assert engine.get_experiment_metrics(eid)["v0"].request_count == 1000  # still reported


def test_bandit_after_a_reweight_finds_the_winner_and_conclude_promotes_it(
    engine: Any, clock: FixedClock, registry: FakeRegistry, bus: RecordingEventBus
) -> None:
    """The issue: treatment +140 %, one reweight, then ``conclude`` with ``{}`` promoted the
    control's model because SRM against the new weights said "continue"."""
    experiment = _running(engine, "0.5", "0.5", allocation_strategy="mab",
                          bandit=BanditConfig(Decimal("0.05"), 5, 2000),
                          minimum_sample_size=100)  # fmt: skip
    eid = experiment.experiment_id
    engine.record_outcomes(eid, _binomial("v0", "a", 700, 0.05, None, 10)
                           + _binomial("v1", "b", 700, 0.12, None, 11))  # fmt: skip
    clock.advance(minutes=6)
    reweighted = engine.update_bandit_weights(eid)
    assert reweighted is not None and reweighted.phase == 1
    share = reweighted.variants[1].traffic_weight
    assert share > Decimal("0.9")
    control_n = int(600 * (1 - share))
    engine.record_outcomes(eid, _binomial("v0", "c", control_n, 0.05, None, 12)
                           + _binomial("v1", "d", 600 - control_n, 0.12, None, 13))  # fmt: skip
    analysis = engine.analyze_experiment(eid)
    assert not analysis.sample_ratio.mismatch
    assert analysis.recommendation.value == "conclude_winner"
    assert analysis.recommended_winner == "v1"
    concluded = engine.conclude_experiment(eid)
    assert concluded.winning_variant_id == "v1" and registry.promoted == [("m-1", 2)]
    assert bus.of_type("ExperimentConcluded")[0].detail["promoted"] is True


def test_a_bandit_stops_reweighting_when_its_history_is_full(
    engine: Any, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chalicelib.abtesting.engine as engine_module

    experiment = _running(engine, "0.5", "0.5", allocation_strategy="mab",
                          bandit=BanditConfig(Decimal("0.05"), 5, 500))  # fmt: skip
    eid = experiment.experiment_id
    # v1 clearly better, so Thompson sampling (seeded by the random experiment id) always moves
    # the weights off 0.5/0.5; with v1's data alone it kept them in a few % of ids (no new phase)
    engine.record_outcomes(eid, _binomial("v0", "a", 200, 0.1, None, 13)
                           + _binomial("v1", "b", 200, 0.5, None, 14))  # fmt: skip
    # one phase now, one for the reweight and room for a pause, its resume and the end
    monkeypatch.setattr(engine_module, "MAX_PHASES", 4)
    clock.advance(minutes=6)
    assert engine.update_bandit_weights(eid) is None
    assert len(engine.get_experiment(eid).phases) == 1
    monkeypatch.setattr(engine_module, "MAX_PHASES", MAX_PHASES)
    assert engine.update_bandit_weights(eid) is not None
    assert len(engine.get_experiment(eid).phases) == 2


def test_a_pause_without_room_for_its_resume_and_the_end_is_refused_and_changes_nothing(
    engine: Any, clock: FixedClock, bus: RecordingEventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause adds a phase and needs room for two more (its resume and the end), so with at
    most 5 phases one pause/resume cycle fits (start, pause, resume) and the next pause is a 409
    naming the history's length; the experiment keeps running and still concludes."""
    import chalicelib.abtesting.engine as engine_module

    monkeypatch.setattr(engine_module, "MAX_PHASES", 5)
    eid = _running(engine, "0.5", "0.5").experiment_id
    engine.pause_experiment(eid)
    engine.resume_experiment(eid)
    before = engine.get_experiment(eid)
    with pytest.raises(ExperimentStateConflict) as refused:
        engine.pause_experiment(eid)
    assert str(refused.value) == (
        "the allocation history is full (3 phases): the experiment cannot be paused any more; "
        "conclude it or roll it back"
    )
    after = engine.get_experiment(eid)
    assert after.status is ExperimentStatus.RUNNING and after.revision == before.revision
    assert [p.reason for p in after.phases] == [PhaseReason.START, PhaseReason.PAUSE,
                                                PhaseReason.RESUME]  # fmt: skip
    assert len(bus.of_type("ExperimentPaused")) == 1
    concluded = engine.conclude_experiment(eid)
    assert concluded.status is ExperimentStatus.CONCLUDED and len(concluded.phases) == 4


def test_a_full_history_refuses_pauses_and_still_concludes_within_the_item_limit(
    dynamo_engine: Any, clock: FixedClock, bus: RecordingEventBus
) -> None:
    """20 arms with 64-character ids: each phase is ~2 KB of the experiment's DynamoDB item.
    Before the byte bound, 63 pause/resume cycles made the item too large for DynamoDB (moto
    enforces it) and then even ``conclude`` and roll back failed."""
    engine = dynamo_engine
    names = [f"arm-{index:02d}-" + "x" * 57 for index in range(20)]
    variants = [ModelVariant(name, "m-1", 1, Decimal("0.05"), index == 0)
                for index, name in enumerate(names)]  # fmt: skip
    created = engine.create_experiment("wide", variants, allocation_strategy="mab",
                                       bandit=BanditConfig(Decimal("0.01"), 1, 500))  # fmt: skip
    eid = engine.start_experiment(created.experiment_id).experiment_id
    engine.record_outcomes(eid, _binomial(names[1], "b", 300, 0.5, None, 15))
    cycles = 0
    with pytest.raises(ExperimentStateConflict, match="allocation history is full"):
        while cycles < 200:
            engine.pause_experiment(eid)
            engine.resume_experiment(eid)
            cycles += 1
    refused = engine.get_experiment(eid)
    assert refused.status is ExperimentStatus.RUNNING and 20 <= cycles < 200
    assert len(refused.phases) == 1 + 2 * cycles
    clock.advance(minutes=2)
    assert engine.update_bandit_weights(eid) is None  # the bandit keeps its weights
    assert engine.get_experiment(eid).revision == refused.revision
    concluded = engine.conclude_experiment(eid)
    assert concluded.status is ExperimentStatus.CONCLUDED
    assert len(concluded.phases) == len(refused.phases) + 1
    assert history_bytes(concluded.phases) <= HISTORY_BYTES
    assert bus.of_type("ExperimentConcluded")


def test_fixed_analysis_of_a_custom_metric_near_1e9_matches_scipy_through_dynamodb(
    dynamo_engine: Any,
) -> None:
    engine = dynamo_engine
    settings = AnalysisSettings(AnalysisMethod.FIXED, planned_sample_size=100)
    experiment = _running(engine, "0.5", "0.5", primary_metric="score", analysis=settings,
                          minimum_sample_size=100)  # fmt: skip
    eid = experiment.experiment_id
    rng = np.random.default_rng(6)
    control = np.round(1e9 + rng.normal(0, 1, 800), 6)
    treatment = np.round(1e9 + 0.4 + rng.normal(0, 1, 700), 6)
    engine.record_outcomes(
        eid,
        [Outcome("v0", f"c{i}", True, 5.0, custom_metrics={"score": float(v)})
         for i, v in enumerate(control)]
        + [Outcome("v1", f"t{i}", True, 5.0, custom_metrics={"score": float(v)})
           for i, v in enumerate(treatment)],
    )  # fmt: skip
    result = engine.analyze_experiment(eid).treatments[0].significance
    expected = stats.ttest_ind(treatment, control, equal_var=False)
    assert result.test == "welch_t"
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-6)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-6)


def test_an_experiment_stored_without_phases_reads_as_one_phase_at_its_current_weights(
    engine: Any,
) -> None:
    segments = SegmentSettings((Dimension("country"),))
    experiment = _running(engine, "0.75", "0.25", segments=segments)
    eid = experiment.experiment_id
    engine.record_outcomes(eid, [
        Outcome("v0", "a", True, 1.0, attributes={"country": "BR"}),
        Outcome("v0", "b", False, 1.0, attributes={"country": "BR"}),
        Outcome("v1", "c", True, 1.0, attributes={"country": "PT"}),
    ])  # fmt: skip
    # As an experiment stored before allocation phases existed reads back: no history.
    legacy = dataclasses.replace(engine.get_experiment(eid), phases=())
    assert legacy.start_time is not None
    expected = AllocationPhase(0, legacy.start_time, PhaseReason.START,
                               {"v0": Decimal("0.75"), "v1": Decimal("0.25")})  # fmt: skip

    _, totals, (only,) = engine.experiment_data(eid, legacy)
    assert only.phase == expected
    assert only.metrics == totals
    assert [totals[v].request_count for v in ("v0", "v1")] == [2, 1]
    assert totals["v0"].error_count == 1

    by_segment = engine.segment_phases(legacy)
    assert set(by_segment) == {"country"} and set(by_segment["country"]) == {"BR", "PT"}
    for value, requests in (("BR", [2, 0]), ("PT", [0, 1])):
        (phase_metrics,) = by_segment["country"][value]
        assert phase_metrics.phase == expected
        assert [phase_metrics.metrics[v].request_count for v in ("v0", "v1")] == requests
