"""The engine and rollback manager over in-memory repositories with a fake model registry
(moto DynamoDB where a test counts DynamoDB requests or exercises the DynamoDB outcome store)."""

from __future__ import annotations

import re
import threading
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.abtesting.engine import ABTestingEngine
from chalicelib.abtesting.errors import ExperimentStateConflict, InvalidExperiment
from chalicelib.abtesting.models import (
    BanditConfig,
    Experiment,
    ExperimentStatus,
    ModelVariant,
    Outcome,
    RampSchedule,
)
from chalicelib.abtesting.outcomes_repository import OutcomeStore
from chalicelib.abtesting.rollback import AutoRollbackManager
from chalicelib.core.clock import FixedClock
from chalicelib.core.errors import Conflict, NotFound
from chalicelib.core.events import RecordingEventBus
from tests.helpers.abtesting import FakeRegistry, memory_engine, memory_manager
from tests.helpers.abtesting import engine_variants as _variants
from tests.helpers.abtesting import running_experiment as _running

WRITE_OPERATIONS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


@pytest.fixture
def write_counter(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts DynamoDB write requests made by any botocore client (PynamoDB's and boto3's)."""
    from botocore.client import BaseClient

    counts: dict[str, int] = {}
    original = BaseClient._make_api_call

    def counting(self: Any, operation: str, params: Any) -> Any:
        if self.meta.service_model.service_name == "dynamodb" and operation in WRITE_OPERATIONS:
            counts[operation] = counts.get(operation, 0) + 1
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    return counts


@pytest.fixture
def bus() -> RecordingEventBus:
    return RecordingEventBus()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def engine(bus: RecordingEventBus, clock: FixedClock, registry: FakeRegistry) -> Any:
    return memory_engine(registry, bus, clock)


@pytest.fixture
def dynamo_engine(
    aws: Any, bus: RecordingEventBus, clock: FixedClock, registry: FakeRegistry
) -> Any:
    """The engine over the DynamoDB repositories (moto)."""
    return ABTestingEngine(registry=registry, event_bus=bus, clock=clock, route_cache_ttl=0)


def _outcomes(variant: str, count: int, errors: int = 0, prefix: str = "r", **extra: Any) -> list:
    return [
        Outcome(variant, f"{prefix}-{variant}-{i}", i >= errors, 100.0 + i % 7, **extra)
        for i in range(count)
    ]


# ------------------------------------------------------------------------------- creation


def test_valid_experiment_is_stored_as_a_draft_with_exact_weights(engine: Any, bus: Any) -> None:
    created = engine.create_experiment(
        "checkout", _variants("0.25", "0.25", "0.5"), guardrail_metrics=["error_rate"]
    )
    stored = engine.get_experiment(created.experiment_id)
    assert stored.status is ExperimentStatus.DRAFT
    assert [v.traffic_weight for v in stored.variants] == [
        Decimal("0.25"),
        Decimal("0.25"),
        Decimal("0.5"),
    ]
    assert stored.created_at.tzinfo is not None and stored.guardrail_metrics == ("error_rate",)
    assert [e.detail_type for e in bus.events] == ["ExperimentCreated"]


def test_three_thirds_are_rejected_unless_they_sum_exactly_to_one(engine: Any) -> None:
    with pytest.raises(InvalidExperiment, match="sum to exactly 1"):
        engine.create_experiment("x", _variants("0.3333", "0.3333", "0.3333"))
    long_third = "0." + "3" * 40  # beyond Decimal's 28-digit context: must still be exact
    with pytest.raises(InvalidExperiment, match="sum to exactly 1"):
        engine.create_experiment("x", _variants(long_third, long_third, long_third))
    exact = engine.create_experiment("x", _variants("0.3333", "0.3333", "0.3334"))
    assert sum(v.traffic_weight for v in exact.variants) == Decimal(1)


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([ModelVariant("a", "m-1", 1, Decimal("1"), True)], "at least two"),
        (
            [
                ModelVariant("a", "m-1", 1, Decimal("0.5"), True),
                ModelVariant("b", "m-1", 2, Decimal("0.5"), True),
            ],
            "exactly one variant must be the control",
        ),
        (
            [
                ModelVariant("a", "m-1", 1, Decimal("0.5")),
                ModelVariant("b", "m-1", 2, Decimal("0.5")),
            ],
            "exactly one variant must be the control",
        ),
        (
            [
                ModelVariant("a", "m-1", 1, Decimal("0.5"), True),
                ModelVariant("a", "m-1", 2, Decimal("0.5")),
            ],
            "unique",
        ),
        (
            [
                ModelVariant("a", "m-1", 1, Decimal("1.5"), True),
                ModelVariant("b", "m-1", 2, Decimal("-0.5")),
            ],
            r"\[0, 1\]",
        ),
    ],
)
def test_invalid_variant_sets_are_rejected(engine: Any, variants: list, message: str) -> None:
    with pytest.raises(InvalidExperiment, match=message) as caught:
        engine.create_experiment("x", variants)
    assert caught.value.status == 422


def test_unknown_model_version_is_rejected_and_nothing_is_stored(
    engine: Any, registry: FakeRegistry
) -> None:
    registry.versions.discard(("m-1", 2))
    with pytest.raises(InvalidExperiment, match="no version 2") as caught:
        engine.create_experiment("x", _variants("0.5", "0.5"))
    assert caught.value.code == "unknown_model_version"
    assert engine.list_experiments() == []


def test_ramping_needs_one_treatment_and_a_first_step_equal_to_its_weight(engine: Any) -> None:
    ramp = RampSchedule((Decimal("0.05"), Decimal("0.5"), Decimal("1")), 30)
    with pytest.raises(InvalidExperiment, match="exactly one treatment"):
        engine.create_experiment(
            "r", _variants("0.9", "0.05", "0.05"), allocation_strategy="ramping", ramp=ramp
        )
    with pytest.raises(InvalidExperiment, match="first ramp step"):
        engine.create_experiment(
            "r", _variants("0.9", "0.1"), allocation_strategy="ramping", ramp=ramp
        )
    with pytest.raises(InvalidExperiment, match="strictly increase"):
        bad = RampSchedule((Decimal("0.05"), Decimal("0.05")))
        engine.create_experiment(
            "r", _variants("0.95", "0.05"), allocation_strategy="ramping", ramp=bad
        )
    with pytest.raises(InvalidExperiment, match="needs a ramp"):
        engine.create_experiment("r", _variants("0.95", "0.05"), allocation_strategy="ramping")
    made = engine.create_experiment(
        "r", _variants("0.95", "0.05"), allocation_strategy="ramping", ramp=ramp
    )
    assert engine.get_experiment(made.experiment_id).ramp == ramp


def test_bandit_needs_a_rate_metric_and_a_feasible_floor(engine: Any) -> None:
    with pytest.raises(InvalidExperiment, match="primary metric"):
        engine.create_experiment(
            "b", _variants("0.5", "0.5"), allocation_strategy="mab", primary_metric="latency_ms"
        )
    with pytest.raises(InvalidExperiment, match="floor"):
        engine.create_experiment(
            "b",
            _variants("0.5", "0.5"),
            allocation_strategy="mab",
            bandit=BanditConfig(floor=Decimal("0.6")),
        )


# ------------------------------------------------------------------------------- lifecycle


def test_lifecycle_transitions_and_wrong_states_are_409(engine: Any, bus: Any) -> None:
    draft = engine.create_experiment("x", _variants("0.5", "0.5"))
    experiment_id = draft.experiment_id
    for wrong in (engine.pause_experiment, engine.resume_experiment):
        with pytest.raises(ExperimentStateConflict) as caught:
            wrong(experiment_id)
        assert caught.value.status == 409
    with pytest.raises(ExperimentStateConflict):
        engine.conclude_experiment(experiment_id, "v1")
    assert engine.start_experiment(experiment_id).start_time is not None
    with pytest.raises(ExperimentStateConflict):
        engine.start_experiment(experiment_id)
    assert engine.pause_experiment(experiment_id).status is ExperimentStatus.PAUSED
    assert engine.route_request(experiment_id, "r", "u") == ("v0", 1)
    assert engine.resume(experiment_id).status is ExperimentStatus.RUNNING
    with pytest.raises(NotFound):
        engine.start_experiment("exp-missing")
    assert [e.detail_type for e in bus.events] == [
        "ExperimentCreated",
        "ExperimentStarted",
        "ExperimentPaused",
        "ExperimentResumed",
    ]


def _race(actions: list[Any]) -> list[str]:
    barrier = threading.Barrier(len(actions))
    results: list[str] = []

    def act(action: Any) -> None:
        barrier.wait()
        try:
            action()
            results.append("ok")
        except ExperimentStateConflict:
            results.append("conflict")

    threads = [threading.Thread(target=act, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


def test_two_concurrent_transitions_cannot_both_succeed(
    engine: Any, atomic_dynamodb: None, bus: Any
) -> None:
    for _ in range(4):
        eid = _running(engine, "0.5", "0.5").experiment_id
        pause = lambda e=eid: engine.pause_experiment(e)  # noqa: E731
        roll_back = lambda e=eid: engine.mark_rolled_back(e, "spike", {}, automatic=True)  # noqa: E731
        assert _race([pause, roll_back] * 3) == ["conflict"] * 5 + ["ok"]
    assert len(bus.of_type("ExperimentPaused")) + len(bus.of_type("ExperimentRolledBack")) == 4


def test_conclude_promotes_the_winner_and_routes_everyone_to_it(
    engine: Any, registry: FakeRegistry, bus: Any
) -> None:
    experiment = _running(engine, "0.5", "0.5")
    concluded = engine.conclude_experiment(experiment.experiment_id, "v1")
    assert concluded.status is ExperimentStatus.CONCLUDED
    assert concluded.winning_variant_id == "v1" and concluded.end_time is not None
    assert concluded.effective_weights() == {"v0": Decimal(0), "v1": Decimal(1)}
    assert registry.promoted == [("m-1", 2)]
    routes = {engine.route_request(experiment.experiment_id, f"r{i}", f"u{i}") for i in range(50)}
    assert routes == {("v1", 2)}
    assert bus.of_type("ExperimentConcluded")[0].detail["winning_variant_id"] == "v1"
    with pytest.raises(ExperimentStateConflict):
        engine.conclude_experiment(experiment.experiment_id, "v1")


def test_failed_promotion_leaves_the_experiment_as_it_was(
    engine: Any, registry: FakeRegistry, bus: Any
) -> None:
    experiment = _running(engine, "0.5", "0.5")
    registry.fail_promotion = True
    with pytest.raises(Conflict):
        engine.conclude_experiment(experiment.experiment_id, "v1")
    stored = engine.get_experiment(experiment.experiment_id)
    assert stored.status is ExperimentStatus.RUNNING
    assert stored.winning_variant_id is None and stored.end_time is None
    assert bus.of_type("ExperimentConcluded") == []


def test_conclude_unknown_winner_is_422(engine: Any) -> None:
    experiment = _running(engine, "0.5", "0.5")
    with pytest.raises(InvalidExperiment):
        engine.conclude_experiment(experiment.experiment_id, "nope")


def _conversions(eid: str, engine: Any, per_arm: int, control: float, treatment: float) -> None:
    engine.record_outcomes(
        eid,
        [Outcome("v0", f"c{i}", True, 50.0, converted=i < control * per_arm)
         for i in range(per_arm)]
        + [Outcome("v1", f"t{i}", True, 50.0, converted=i < treatment * per_arm)
           for i in range(per_arm)],
    )  # fmt: skip


def test_conclude_without_a_winner_promotes_a_decisive_sequential_winner(
    engine: Any, registry: FakeRegistry, bus: Any
) -> None:
    experiment = _running(engine, "0.5", "0.5", minimum_sample_size=100)
    eid = experiment.experiment_id
    _conversions(eid, engine, 1000, 0.10, 0.25)
    concluded = engine.conclude_experiment(eid)
    assert concluded.winning_variant_id == "v1"
    assert registry.promoted == [("m-1", 2)]
    assert concluded.conclusion_reason.startswith("v1 promoted: v1 is better on conversion_rate")
    event = bus.of_type("ExperimentConcluded")[0].detail
    assert event["promoted"] is True and event["winning_variant_id"] == "v1"
    assert event["model_version"] == 2 and "always-valid" in event["reason"]


def test_conclude_without_a_decisive_winner_promotes_nothing_and_keeps_the_control(
    engine: Any, registry: FakeRegistry, bus: Any
) -> None:
    """10 % vs 25 % on 200 users each is significant for a test read once, but the analysis may
    have been read at every batch: the always-valid test is not yet decisive."""
    experiment = _running(engine, "0.5", "0.5", minimum_sample_size=100)
    eid = experiment.experiment_id
    _conversions(eid, engine, 200, 0.10, 0.25)
    assert engine.analyze_experiment(eid, "fixed").treatments[0].significance.p_value < 0.001
    concluded = engine.conclude_experiment(eid)
    assert concluded.status is ExperimentStatus.CONCLUDED
    assert concluded.winning_variant_id is None and registry.promoted == []
    assert concluded.conclusion_reason.startswith("concluded without promoting anything")
    assert "control's model (m-1 version 1)" in concluded.conclusion_reason
    assert concluded.effective_weights() == {"v0": Decimal(1), "v1": Decimal(0)}
    assert {engine.route_request(eid, f"r{i}", f"u{i}") for i in range(50)} == {("v0", 1)}
    event = bus.of_type("ExperimentConcluded")[0].detail
    assert event["promoted"] is False and event["winning_variant_id"] is None
    assert "model_version" not in event


# ------------------------------------------------------------------------------- outcomes


def test_outcomes_are_idempotent_on_request_id(engine: Any) -> None:
    experiment = _running(engine, "0.5", "0.5")
    eid = experiment.experiment_id
    batch = _outcomes("v0", 30, errors=3) + _outcomes("v1", 20)
    first = engine.record_outcomes(eid, batch + batch[:5])
    assert (first.accepted, first.duplicates) == (50, 5)
    again = engine.record_outcomes(eid, batch[10:] + _outcomes("v1", 4, prefix="new"))
    assert (again.accepted, again.duplicates) == (4, 40)
    single = engine.record_outcome(eid, "v0", batch[0].request_id, True, 1.0)
    assert (single.accepted, single.duplicates) == (0, 1)
    metrics = engine.get_experiment_metrics(eid)
    assert metrics["v0"].request_count == 30 and metrics["v0"].error_count == 3
    assert metrics["v1"].request_count == 24


def test_a_thousand_batched_outcomes_cost_at_most_20_write_requests(
    dynamo_engine: Any, write_counter: dict[str, int]
) -> None:
    engine = dynamo_engine
    experiment = _running(engine, "0.5", "0.5")
    outcomes = _outcomes("v0", 500) + _outcomes("v1", 500)
    write_counter.clear()
    for start in range(0, 1000, 250):
        engine.record_outcomes(experiment.experiment_id, outcomes[start : start + 250])
    assert sum(write_counter.values()) <= 20
    assert set(write_counter) == {"TransactWriteItems"}
    metrics = engine.get_experiment_metrics(experiment.experiment_id)
    assert metrics["v0"].request_count == 500 and metrics["v1"].request_count == 500


def test_metrics_merge_shards_into_exact_sums(engine: Any) -> None:
    experiment = _running(engine, "0.5", "0.5")
    eid = experiment.experiment_id
    latencies = [12.5, 40.25, 99.125, 7.0, 250.0, 31.5]
    for index, latency in enumerate(latencies):
        engine.record_outcome(
            eid, "v1", f"single-{index}", index != 2, latency, converted=index % 2 == 0,
            custom_metrics={"revenue": index * 1.5},
        )  # fmt: skip
    found = engine.get_experiment_metrics(eid)["v1"]
    assert found.request_count == 6 and found.error_count == 1 and found.success_count == 5
    assert found.latency.total == pytest.approx(sum(latencies))
    assert found.latency.total_sq == pytest.approx(sum(v * v for v in latencies))
    assert (found.converted_count, found.conversion_trials) == (3, 6)
    assert found.custom_metrics["revenue"] == pytest.approx(sum(i * 1.5 for i in range(6)) / 6)
    assert found.latency_p50_ms is not None and found.latency_p99_ms is not None
    assert engine.get_experiment_metrics(eid)["v0"].request_count == 0


def test_outcomes_for_unknown_variants_or_drafts_store_nothing(engine: Any) -> None:
    experiment = _running(engine, "0.5", "0.5")
    with pytest.raises(InvalidExperiment):
        engine.record_outcomes(experiment.experiment_id, _outcomes("v0", 3) + _outcomes("zz", 1))
    assert engine.get_experiment_metrics(experiment.experiment_id)["v0"].request_count == 0
    for bad in (
        Outcome("v0", "nan", True, float("nan")),
        Outcome("v0", "inf", True, float("inf")),
        Outcome("v0", "neg", True, -1.0),
        Outcome("v0", "metric", True, 1.0, custom_metrics={"x": float("inf")}),
        Outcome("v0", "huge", True, 1.0, custom_metrics={"x": 1e200}),
        Outcome("v0", "name", True, 1.0, custom_metrics={"bad name": 1.0}),
    ):
        with pytest.raises(InvalidExperiment):
            engine.record_outcomes(experiment.experiment_id, [bad])
    draft = engine.create_experiment("d", _variants("0.5", "0.5"))
    with pytest.raises(Conflict):
        engine.record_outcomes(draft.experiment_id, _outcomes("v0", 1))


class ScriptedClient:
    """A DynamoDB client whose transact_write_items fails as scripted, then succeeds."""

    def __init__(self, failures: list[dict[str, Any]]) -> None:
        self.failures = failures
        self.calls: list[list[Any]] = []

    def transact_write_items(self, TransactItems: list[Any]) -> None:  # noqa: N803
        from botocore.exceptions import ClientError

        self.calls.append(TransactItems)
        if self.failures:
            raise ClientError(self.failures.pop(0), "TransactWriteItems")


def _cancelled(*codes: str) -> dict[str, Any]:
    return {
        "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
        "CancellationReasons": [{"Code": code} for code in codes],
    }


def test_outcome_store_drops_already_counted_ids_and_retries_conflicts() -> None:
    from chalicelib.core.clock import utc_now

    client = ScriptedClient(
        [
            _cancelled("None", "ConditionalCheckFailed", "None", "None"),
            _cancelled("None", "None", "TransactionConflict"),
            {"Error": {"Code": "ThrottlingException", "Message": "slow down"}},
        ]
    )
    store = OutcomeStore(client=client, sleep=lambda seconds: None)
    receipt = store.record("exp", _outcomes("v0", 3), utc_now())
    assert (receipt.accepted, receipt.duplicates) == (2, 1)
    assert [len(call) for call in client.calls] == [4, 3, 3, 3]


def test_outcome_store_raises_on_other_errors_and_gives_up_after_retries() -> None:
    from botocore.exceptions import ClientError

    from chalicelib.core.clock import utc_now
    from chalicelib.core.errors import ServiceUnavailable

    bad = ScriptedClient([{"Error": {"Code": "ValidationException", "Message": "no"}}])
    with pytest.raises(ClientError):
        OutcomeStore(client=bad, sleep=lambda s: None).record("e", _outcomes("v0", 1), utc_now())
    busy = ScriptedClient([_cancelled("None", "TransactionConflict")] * 20)
    with pytest.raises(ServiceUnavailable):
        OutcomeStore(client=busy, sleep=lambda s: None).record("e", _outcomes("v0", 1), utc_now())
    everything_seen = ScriptedClient([_cancelled("ConditionalCheckFailed", "None")])
    receipt = OutcomeStore(client=everything_seen, sleep=lambda s: None).record(
        "e", _outcomes("v0", 1), utc_now()
    )
    assert (receipt.accepted, receipt.duplicates) == (0, 1)


def test_chunks_fit_one_transaction_with_an_update_per_variant() -> None:
    from chalicelib.abtesting.outcomes_repository import chunk_outcomes

    outcomes = [Outcome(f"v{i % 3}", f"r{i}", True, 1.0) for i in range(1000)]
    chunks = list(chunk_outcomes(outcomes))
    assert sum(len(c) for c in chunks) == 1000
    assert all(len(c) + len({o.variant_id for o in c}) <= 100 for c in chunks)
    assert len(chunks) == 11


# ------------------------------------------------------------------------------- ramp and bandit


def _ramping(engine: Any) -> Experiment:
    ramp = RampSchedule((Decimal("0.05"), Decimal("0.25"), Decimal("1")), 30, 10)
    return _running(
        engine,
        "0.95",
        "0.05",
        allocation_strategy="ramping",
        ramp=ramp,
        guardrail_metrics=["error_rate"],
    )


def test_ramp_advances_only_when_due_with_enough_data_and_healthy_guardrails(
    engine: Any, clock: FixedClock, bus: Any
) -> None:
    experiment = _ramping(engine)
    eid = experiment.experiment_id
    clock.advance(minutes=31)
    assert engine.advance_ramp(eid) is None  # no data yet: hold
    engine.record_outcomes(eid, _outcomes("v0", 20) + _outcomes("v1", 20))
    clock.advance(minutes=-2)
    assert engine.advance_ramp(eid) is None  # not due
    clock.advance(minutes=2)
    with pytest.MonkeyPatch.context() as patch:  # a full allocation history: the ramp holds
        patch.setattr("chalicelib.abtesting.engine.MAX_PHASES", 4)
        assert engine.advance_ramp(eid) is None
    stepped = engine.advance_ramp(eid)
    assert stepped is not None and stepped.ramp_step == 1
    assert {v.variant_id: v.traffic_weight for v in stepped.variants} == {
        "v0": Decimal("0.75"),
        "v1": Decimal("0.25"),
    }
    assert engine.advance_ramp(eid) is None  # interval restarts at the step
    engine.record_outcomes(eid, _outcomes("v1", 20, errors=10, prefix="bad"))
    clock.advance(minutes=31)
    # half of 20 requests failing is not yet evidence (guardrails need 100 per arm)
    assert engine.ramp_hold_reason(engine.get_experiment(eid)) is None
    engine.record_outcomes(
        eid, _outcomes("v0", 200, prefix="more") + _outcomes("v1", 200, errors=60, prefix="worse")
    )
    assert engine.advance_ramp(eid) is None  # evidence the error-rate guardrail degraded: hold
    assert "error_rate" in (engine.ramp_hold_reason(engine.get_experiment(eid)) or "")
    events = bus.of_type("RampAdvanced")
    assert len(events) == 1 and events[0].detail["treatment_weight"] == "0.25"


def test_ramp_step_is_taken_once_by_concurrent_monitors(
    engine: Any, clock: FixedClock, atomic_dynamodb: None, bus: Any
) -> None:
    experiment = _ramping(engine)
    engine.record_outcomes(experiment.experiment_id, _outcomes("v0", 20) + _outcomes("v1", 20))
    clock.advance(minutes=31)
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        results.append(engine.advance_ramp(experiment.experiment_id))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for r in results if r is not None) == 1
    assert engine.get_experiment(experiment.experiment_id).ramp_step == 1
    assert len(bus.of_type("RampAdvanced")) == 1


def test_bandit_reweighting_favours_the_better_arm_and_keeps_floors(
    engine: Any, clock: FixedClock, bus: Any
) -> None:
    experiment = _running(
        engine,
        "0.34",
        "0.33",
        "0.33",
        allocation_strategy="mab",
        bandit=BanditConfig(Decimal("0.02"), 5, 4000),
    )
    eid = experiment.experiment_id
    outcomes = []
    for variant, converted in (("v0", 15), ("v1", 45), ("v2", 12)):
        outcomes += [
            Outcome(variant, f"{variant}-{i}", True, 10.0, converted=i < converted)
            for i in range(300)
        ]
    engine.record_outcomes(eid, outcomes)
    assert engine.update_bandit_weights(eid) is None  # not due yet
    clock.advance(minutes=6)
    updated = engine.update_bandit_weights(eid)
    assert updated is not None
    weights = {v.variant_id: v.traffic_weight for v in updated.variants}
    assert sum(weights.values()) == Decimal(1)
    assert min(weights.values()) >= Decimal("0.02")
    assert weights["v1"] == max(weights.values()) and weights["v1"] > Decimal("0.9")
    assert bus.of_type("WeightsUpdated")[0].detail["weights"]["v1"] == str(weights["v1"])
    assert engine.update_bandit_weights(eid) is None


def test_bandit_users_stay_sticky_across_instances_and_reweighting(
    dynamo_engine: Any, clock: FixedClock, registry: FakeRegistry, bus: Any, write_counter: dict
) -> None:
    engine = dynamo_engine
    experiment = _running(
        engine, "0.5", "0.5", allocation_strategy="mab", bandit=BanditConfig(Decimal("0.01"), 5)
    )
    eid = experiment.experiment_id
    users = [f"user-{i}" for i in range(60)]
    write_counter.clear()
    first = {user: engine.route_request(eid, f"r-{user}", user) for user in users}
    assert write_counter == {"PutItem": 60}  # one conditional put per new user
    assert {user: engine.route_request(eid, "again", user) for user in users} == first
    assert write_counter == {"PutItem": 60}  # repeat users are served from the LRU
    engine.record_outcomes(
        eid,
        [Outcome("v0", f"c{i}", True, 5.0, converted=i < 5) for i in range(200)]
        + [Outcome("v1", f"t{i}", True, 5.0, converted=i < 80) for i in range(200)],
    )
    clock.advance(minutes=6)
    reweighted = engine.update_bandit_weights(eid)
    assert reweighted is not None and reweighted.variants[1].traffic_weight > Decimal("0.9")
    other = ABTestingEngine(registry=registry, event_bus=bus, clock=clock, route_cache_ttl=0)
    assert {user: other.route_request(eid, "elsewhere", user) for user in users} == first
    newcomers = [other.route_request(eid, "n", f"new-{i}")[0] for i in range(100)]
    assert newcomers.count("v1") > 80


# ------------------------------------------------------------------------------- rollback


@pytest.fixture
def manager(engine: Any) -> AutoRollbackManager:
    return memory_manager(engine)


def test_an_error_spike_fails_the_check_with_the_test_numbers_and_bound(
    engine: Any, manager: AutoRollbackManager
) -> None:
    experiment = _running(engine, "0.9", "0.1")
    eid = experiment.experiment_id
    manager.register_experiment(eid, error_rate_threshold=0.05, min_requests_before_rollback=50)
    engine.record_outcomes(eid, _outcomes("v1", 40, errors=20))
    assert manager.check_rollback_conditions(eid) is None  # the control has no requests yet
    engine.record_outcomes(
        eid, _outcomes("v0", 800) + _outcomes("v1", 160, errors=20, prefix="more")
    )
    reason = manager.check_rollback_conditions(eid)
    assert reason is not None and reason.startswith("variant v1: fail")
    assert "error_rate 0.2000 (40 errors in 200 requests) exceeds threshold 0.0500" in reason
    assert "lower bound" in reason and "mSPRT" in reason
    assert "error_rate 0.2 vs control 0" in reason  # and the comparison with the control


def test_latency_degradation_triggers_rollback(engine: Any, manager: AutoRollbackManager) -> None:
    experiment = _running(engine, "0.5", "0.5")
    eid = experiment.experiment_id
    manager.register_experiment(
        eid, latency_degradation_threshold=0.2, min_requests_before_rollback=10
    )
    engine.record_outcomes(
        eid,
        [Outcome("v0", f"c{i}", True, 100.0 + i % 3) for i in range(50)]
        + [Outcome("v1", f"t{i}", True, 150.0 + i % 3) for i in range(50)],
    )
    reason = manager.check_rollback_conditions(eid)
    assert reason is not None and re.search(r"latency_p95_ms 15\d(\.\d)? vs control 10\d", reason)
    assert "above 1.20 x control's p95" in reason and "lower bound" in reason
    manager.register_experiment(eid, enabled=False)
    assert manager.check_rollback_conditions(eid) is None


def test_concurrent_rollbacks_roll_back_once_and_publish_one_event(
    engine: Any, manager: AutoRollbackManager, atomic_dynamodb: None, bus: Any
) -> None:
    experiment = _running(engine, "0.5", "0.5")
    barrier = threading.Barrier(5)
    results: list[bool] = []

    def run() -> None:
        barrier.wait()
        results.append(manager.execute_rollback(experiment.experiment_id, "error spike"))

    threads = [threading.Thread(target=run) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 4 + [True]
    assert len(bus.of_type("ExperimentRolledBack")) == 1
    stored = engine.get_experiment(experiment.experiment_id)
    assert stored.status is ExperimentStatus.ROLLED_BACK and stored.rollback_reason == "error spike"
    assert engine.route_request(experiment.experiment_id, "r", "u") == ("v0", 1)


def test_monitor_pass_rolls_back_and_is_idempotent(
    engine: Any, manager: AutoRollbackManager
) -> None:
    healthy = _running(engine, "0.5", "0.5")
    broken = _running(engine, "0.5", "0.5")
    engine.record_outcomes(
        broken.experiment_id, _outcomes("v0", 200) + _outcomes("v1", 200, errors=40)
    )
    engine.record_outcomes(healthy.experiment_id, _outcomes("v0", 200) + _outcomes("v1", 200))
    first = manager.run_once()
    assert first.checked == 2 and first.rolled_back == [broken.experiment_id]
    stored = engine.get_experiment(broken.experiment_id)
    assert stored.rollback_details["metric"] == "error_rate"
    assert stored.rollback_details["observed"] == pytest.approx(0.2)
    assert stored.rollback_details["lower_bound"] > 0
    assert stored.rollback_details["consecutive_failures"] == 1
    assert manager.get_check(healthy.experiment_id).outcome in {"pass", "inconclusive"}
    second = manager.run_once()
    assert second.checked == 1 and second.rolled_back == []


def test_start_monitoring_runs_the_same_pass_in_a_thread(
    engine: Any, manager: AutoRollbackManager, bus: Any
) -> None:
    broken = _running(engine, "0.5", "0.5")
    engine.record_outcomes(
        broken.experiment_id, _outcomes("v0", 200) + _outcomes("v1", 200, errors=40)
    )
    rolled = threading.Event()
    original = bus.publish_many

    def watch(events: list[Any]) -> None:
        original(events)
        if any(e.detail_type == "ExperimentRolledBack" for e in events):
            rolled.set()

    bus.publish_many = watch  # type: ignore[method-assign]
    manager.start_monitoring(interval=0.05)
    manager.start_monitoring(interval=0.05)  # already running: no second thread
    assert manager.monitoring
    try:
        assert rolled.wait(timeout=30)
    finally:
        manager.stop_monitoring()
    assert not manager.monitoring
    assert engine.get_experiment(broken.experiment_id).status is ExperimentStatus.ROLLED_BACK


def test_policy_is_stored_and_validated(engine: Any, manager: AutoRollbackManager) -> None:
    from chalicelib.core.errors import UnprocessableEntity

    experiment = _running(engine, "0.5", "0.5")
    eid = experiment.experiment_id
    default = manager.get_policy(eid)
    assert default.error_rate_threshold is None and default.latency_threshold_ms is None  # opt-in
    assert (default.error_rate_tolerance, default.alpha, default.failure_limit) == (0.2, 0.05, 1)
    manager.register_experiment(
        eid, error_rate_threshold=0.1, latency_percentile="p99", failure_limit=3,
        latency_threshold_ms=250.0, alpha=0.01, tuning_sample_size=400, error_rate_tolerance=0.5,
    )  # fmt: skip
    fresh = AutoRollbackManager(engine).get_policy(eid)
    assert fresh.error_rate_threshold == 0.1 and fresh.latency_percentile == "p99"
    assert (fresh.failure_limit, fresh.latency_threshold_ms, fresh.alpha) == (3, 250.0, 0.01)
    assert (fresh.tuning_sample_size, fresh.error_rate_tolerance) == (400, 0.5)
    for wrong in ({"error_rate_threshold": 2}, {"failure_limit": 0}, {"alpha": 0.7},
                  {"latency_threshold_ms": -1.0}, {"latency_percentile": "p90"}):  # fmt: skip
        with pytest.raises(UnprocessableEntity):
            manager.register_experiment(eid, **wrong)
    with pytest.raises(NotFound):
        manager.register_experiment("exp-missing")
