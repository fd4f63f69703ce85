"""The routing hot path: exact thresholds, stickiness, split accuracy, ramps, states, cache."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from chalicelib.abtesting.errors import ExperimentNotRunning
from chalicelib.abtesting.models import (
    Experiment,
    ExperimentStatus,
    ModelVariant,
    TrafficAllocationStrategy,
)
from chalicelib.abtesting.routing import SCALE, RouteTable, TrafficRouter, thresholds, unit_hash

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _experiment(
    weights: dict[str, str],
    control: str = "control",
    status: ExperimentStatus = ExperimentStatus.RUNNING,
    strategy: TrafficAllocationStrategy = TrafficAllocationStrategy.PERCENTAGE,
    **extra: Any,
) -> Experiment:
    variants = tuple(
        ModelVariant(name, "m-1", index + 1, Decimal(weight), name == control)
        for index, (name, weight) in enumerate(weights.items())
    )
    return Experiment(
        experiment_id="exp-1",
        name="e",
        description="",
        variants=variants,
        status=status,
        allocation_strategy=strategy,
        start_time=NOW,
        end_time=None,
        minimum_sample_size=100,
        confidence_level=0.95,
        primary_metric="conversion_rate",
        guardrail_metrics=(),
        created_at=NOW,
        updated_at=NOW,
        salt="salt-1",
        **extra,
    )


class Loader:
    """Serves a mutable experiment and counts reads (stands in for DynamoDB)."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.reads = 0

    def __call__(self, experiment_id: str) -> Experiment:
        self.reads += 1
        return self.experiment


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class MemoryAssignments:
    """Conditional first-write-wins store, like the DynamoDB one."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], str] = {}
        self.calls = 0

    def get_or_assign(self, experiment_id: str, user_id: str, variant_id: str, when: Any) -> str:
        self.calls += 1
        return self.stored.setdefault((experiment_id, user_id), variant_id)


def _router(experiment: Experiment, **kwargs: Any) -> tuple[TrafficRouter, Loader]:
    loader = Loader(experiment)
    return TrafficRouter(loader, **{"ttl_seconds": 5.0, **kwargs}), loader


def test_thresholds_compare_exactly_like_the_decimal_weights() -> None:
    weights = [Fraction(Decimal("0.1")), Fraction(Decimal("0.2")), Fraction(Decimal("0.7"))]
    found = thresholds(weights)
    assert found[-1] == SCALE
    for cumulative, threshold in zip([Fraction(1, 10), Fraction(3, 10)], found, strict=False):
        # h < threshold  <=>  h / 2**64 < cumulative, checked on both sides of the boundary
        boundary = cumulative * SCALE
        below, above = math.floor(boundary), math.ceil(boundary)
        assert (below < threshold) == (Fraction(below, SCALE) < cumulative)
        assert (above < threshold) == (Fraction(above, SCALE) < cumulative)
        assert Fraction(threshold - 1, SCALE) < cumulative
        assert Fraction(threshold, SCALE) >= cumulative


def test_pick_uses_the_salted_64_bit_hash_and_bisect() -> None:
    table = RouteTable(_experiment({"treatment": "0.5", "control": "0.5"}))
    for user in ("a", "b", "c", "d"):
        point = unit_hash("salt-1", user)
        expected = "treatment" if point < SCALE // 2 else "control"
        assert table.pick(user)[0] == expected


def test_sticky_user_keeps_the_variant_across_calls_and_router_instances() -> None:
    experiment = _experiment({"control": "0.5", "treatment": "0.5"})
    first, _ = _router(experiment)
    second, _ = _router(experiment)
    for index in range(500):
        user = f"user-{index}"
        chosen = first.route("exp-1", f"req-{index}", user)
        assert first.route("exp-1", f"other-{index}", user) == chosen
        assert second.route("exp-1", f"again-{index}", user) == chosen


def test_without_user_id_the_request_id_is_hashed() -> None:
    router, _ = _router(_experiment({"control": "0.5", "treatment": "0.5"}))
    table = RouteTable(_experiment({"control": "0.5", "treatment": "0.5"}))
    assert router.route("exp-1", "req-7") == table.pick("req-7")
    not_sticky = [router.route("exp-1", f"req-{i}", "same-user", sticky=False) for i in range(200)]
    assert {variant for variant, _ in not_sticky} == {"control", "treatment"}


def test_split_matches_the_weights_within_sampling_error_over_100k_users() -> None:
    router, _ = _router(_experiment({"control": "0.5", "a": "0.3", "b": "0.2"}))
    users = 100_000
    counts: dict[str, int] = {}
    for index in range(users):
        variant, _ = router.route("exp-1", "r", f"user-{index}")
        counts[variant] = counts.get(variant, 0) + 1
    for name, weight in {"control": 0.5, "a": 0.3, "b": 0.2}.items():
        sd = math.sqrt(users * weight * (1 - weight))
        assert abs(counts[name] - users * weight) < 4 * sd, (name, counts)


def test_zero_weight_variant_gets_no_traffic() -> None:
    router, _ = _router(_experiment({"control": "0.9", "a": "0", "b": "0.1"}))
    seen = {router.route("exp-1", "r", f"u{i}")[0] for i in range(5000)}
    assert seen == {"control", "b"}


def test_ramping_never_moves_treatment_users_back_to_control() -> None:
    steps = ["0.05", "0.25", "0.5", "0.75", "1"]
    users = [f"user-{i}" for i in range(20_000)]
    previous: dict[str, str] | None = None
    for step in steps:
        rest = str(Decimal(1) - Decimal(step))
        experiment = _experiment(
            {"treatment": step, "control": rest}, strategy=TrafficAllocationStrategy.RAMPING
        )
        router, _ = _router(experiment)
        current = {user: router.route("exp-1", "r", user)[0] for user in users}
        share = sum(1 for v in current.values() if v == "treatment") / len(users)
        assert abs(share - float(step)) < 0.02
        if previous is not None:
            moved_back = [
                u for u in users if previous[u] == "treatment" and current[u] != "treatment"
            ]
            assert moved_back == []
        previous = current
    assert previous is not None and set(previous.values()) == {"treatment"}


def test_paused_and_rolled_back_experiments_send_everyone_to_control() -> None:
    for status in (ExperimentStatus.PAUSED, ExperimentStatus.ROLLED_BACK):
        router, _ = _router(_experiment({"control": "0.1", "t": "0.9"}, status=status))
        assert {router.route("exp-1", f"r{i}", f"u{i}") for i in range(300)} == {("control", 1)}


def test_concluded_experiment_sends_everyone_to_the_winner() -> None:
    experiment = _experiment(
        {"control": "0.5", "t": "0.5"},
        status=ExperimentStatus.CONCLUDED,
        winning_variant_id="t",
    )
    router, _ = _router(experiment)
    assert {router.route("exp-1", f"r{i}", f"u{i}") for i in range(300)} == {("t", 2)}
    no_winner = replace(experiment, winning_variant_id=None)
    router, _ = _router(no_winner)
    assert router.route("exp-1", "r", "u") == ("control", 1)


def test_draft_experiment_refuses_to_route_with_409() -> None:
    router, _ = _router(_experiment({"control": "0.5", "t": "0.5"}, status=ExperimentStatus.DRAFT))
    with pytest.raises(ExperimentNotRunning) as caught:
        router.route("exp-1", "r", "u")
    assert caught.value.status == 409


def test_config_is_cached_until_the_ttl_then_a_pause_takes_effect() -> None:
    clock = FakeTime()
    experiment = _experiment({"control": "0", "t": "1"})
    router, loader = _router(experiment, monotonic=clock)
    for index in range(100):
        assert router.route("exp-1", f"r{index}", f"u{index}")[0] == "t"
    assert loader.reads == 1
    loader.experiment = replace(experiment, status=ExperimentStatus.PAUSED)
    clock.now = 4.9
    assert router.route("exp-1", "r", "u")[0] == "t"
    clock.now = 5.0
    assert router.route("exp-1", "r", "u")[0] == "control"
    assert loader.reads == 2


def test_invalidate_reloads_at_once() -> None:
    experiment = _experiment({"control": "0", "t": "1"})
    router, loader = _router(experiment)
    router.route("exp-1", "r")
    loader.experiment = replace(experiment, status=ExperimentStatus.ROLLED_BACK)
    router.invalidate("exp-1")
    router.invalidate("never-seen")
    assert router.route("exp-1", "r") == ("control", 1)


def test_ttl_defaults_to_the_route_cache_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNAPSE_ROUTE_CACHE_TTL", "2.5")
    router = TrafficRouter(Loader(_experiment({"control": "0.5", "t": "0.5"})))
    assert router.ttl_seconds == 2.5


def test_bandit_users_stay_on_their_first_variant_when_weights_change() -> None:
    store = MemoryAssignments()
    experiment = _experiment(
        {"control": "0.99", "t": "0.01"}, strategy=TrafficAllocationStrategy.MAB
    )
    router, loader = _router(experiment, assignments=store, ttl_seconds=0.0)
    users = [f"user-{i}" for i in range(2000)]
    before = {user: router.route("exp-1", "r", user) for user in users}
    loader.experiment = _experiment(
        {"control": "0.01", "t": "0.99"}, strategy=TrafficAllocationStrategy.MAB
    )
    fresh, _ = _router(loader.experiment, assignments=store, ttl_seconds=0.0)
    assert {user: fresh.route("exp-1", "r", user) for user in users} == before
    assert {user: router.route("exp-1", "r", user) for user in users} == before
    assert {v for v, _ in before.values()} == {"control", "t"}


def test_bandit_lru_answers_repeat_users_without_the_store_and_evicts_oldest() -> None:
    store = MemoryAssignments()
    experiment = _experiment({"control": "0.5", "t": "0.5"}, strategy=TrafficAllocationStrategy.MAB)
    router, _ = _router(experiment, assignments=store, lru_size=2)
    router.route("exp-1", "r", "u1")
    router.route("exp-1", "r", "u1")
    assert store.calls == 1
    router.route("exp-1", "r", "u2")
    router.route("exp-1", "r", "u3")  # evicts u1
    router.route("exp-1", "r", "u1")
    assert store.calls == 4


def test_bandit_without_a_store_still_routes_by_hash() -> None:
    experiment = _experiment({"control": "0.5", "t": "0.5"}, strategy=TrafficAllocationStrategy.MAB)
    router, _ = _router(experiment)
    table = RouteTable(experiment)
    assert router.route("exp-1", "r", "u9") == table.pick("u9")


def test_an_assignment_names_the_allocation_phase_of_the_weights_that_decided_it() -> None:
    from chalicelib.abtesting.models import AllocationPhase, PhaseReason

    phases = tuple(
        AllocationPhase(index, NOW, reason, {"control": Decimal(1), "treatment": Decimal(0)})
        for index, reason in enumerate([PhaseReason.START, PhaseReason.PAUSE])
    )
    paused = _experiment({"control": "0.5", "treatment": "0.5"}, phases=phases,
                         status=ExperimentStatus.PAUSED)  # fmt: skip
    router, loader = _router(paused)
    assert router.assign("exp-1", "r-1", "u-1") == ("control", 1, 1)
    running = replace(paused, status=ExperimentStatus.RUNNING, phases=phases[:1])
    loader.experiment = running
    router.invalidate("exp-1")
    variant, version, phase = router.assign("exp-1", "r-2", "u-2")
    assert (variant, version) == router.route("exp-1", "r-2", "u-2") and phase == 0
    assert RouteTable(_experiment({"control": "0.5", "treatment": "0.5"})).phase == 0
