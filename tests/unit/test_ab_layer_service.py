"""The layer service on the in-memory layer repository (the DynamoDB one passes the same
contract, ``test_repository_contracts.py``): reservations are conditional on the layer's
revision, so a race between overlapping slices has one winner; a failed experiment store frees
its slice."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from chalicelib.abtesting.errors import SliceTaken
from chalicelib.abtesting.layers import LayerService
from chalicelib.abtesting.memory import InMemoryLayerRepository
from chalicelib.abtesting.models import Layer, LayerSlice, ModelVariant
from chalicelib.core.errors import Conflict, UnprocessableEntity
from chalicelib.core.events import RecordingEventBus
from tests.helpers.abtesting import FakeRegistry, engine_variants, memory_engine


class RacingRepository(InMemoryLayerRepository):
    """Lets another reservation land between the next read of the layer and its write (the
    rival service writes to this same repository, as another instance to the same table)."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: tuple[LayerService, LayerSlice] | None = None

    def get_layer(self, layer_id: str) -> Layer:
        found = super().get_layer(layer_id)
        if self.rival is not None:
            rival, taken = self.rival
            self.rival = None
            rival.reserve("exp-rival", taken)
        return found


def _racing(bus: RecordingEventBus, start: int, end: int) -> tuple[LayerService, Layer, Any]:
    """A rival service, its new layer, and a service whose next read of the layer lets the
    rival take ``[start, end)`` before it writes."""
    repository = RacingRepository()
    rival = LayerService(repository, bus)
    layer = rival.create_layer("ranking")
    repository.rival = (rival, LayerSlice(layer.layer_id, start, end))
    return rival, layer, LayerService(repository, bus)


def test_of_two_racing_overlapping_reservations_exactly_one_wins() -> None:
    rival, layer, racing = _racing(RecordingEventBus(), 0, 5000)

    with pytest.raises(SliceTaken, match=r"free: \[5000, 10000\)"):
        racing.reserve("exp-late", LayerSlice(layer.layer_id, 4000, 6000))

    stored = rival.get_layer(layer.layer_id)
    assert stored.slices == {"exp-rival": LayerSlice(layer.layer_id, 0, 5000)}
    assert stored.revision == 1


def test_a_racing_disjoint_reservation_is_retried_and_both_are_stored() -> None:
    rival, layer, racing = _racing(RecordingEventBus(), 0, 5000)

    racing.reserve("exp-late", LayerSlice(layer.layer_id, 5000, 6000))

    stored = rival.get_layer(layer.layer_id)
    assert set(stored.slices) == {"exp-rival", "exp-late"} and stored.revision == 2
    assert stored.free() == [(6000, 10000)]
    rival.release("exp-late", layer.layer_id)
    rival.release("exp-late", layer.layer_id)  # twice: nothing left to free
    assert rival.get_layer(layer.layer_id).free() == [(5000, 10000)]


class Failing:
    """An experiment repository whose store fails (after the slice was reserved)."""

    def create(self, experiment: Any) -> None:
        raise RuntimeError("DynamoDB is down")

    def get(self, experiment_id: str) -> Any:
        raise AssertionError("not read")


class Registry:
    def get_version(self, model_id: str, version: int) -> tuple[str, int]:
        return (model_id, version)


def test_a_failed_experiment_store_frees_its_slice() -> None:
    from chalicelib.abtesting.engine import ABTestingEngine

    bus = RecordingEventBus()
    layers = LayerService(InMemoryLayerRepository(), event_bus=bus)
    layer = layers.create_layer("ranking")
    engine = ABTestingEngine(Failing(), Registry(), bus, layers=layers)  # type: ignore[arg-type]
    variants = [
        ModelVariant("control", "m", 1, Decimal("0.5"), True),
        ModelVariant("treatment", "m", 2, Decimal("0.5")),
    ]
    with pytest.raises(RuntimeError, match="down"):
        engine.create_experiment("e", variants, layer=LayerSlice(layer.layer_id, 0, 100))
    assert layers.get_layer(layer.layer_id).slices == {}


def test_layer_and_holdout_validation() -> None:
    layers = LayerService(InMemoryLayerRepository(), event_bus=RecordingEventBus())
    with pytest.raises(UnprocessableEntity):
        layers.create_layer("  ")
    for share in (Decimal(0), Decimal("0.51"), 0.1):
        with pytest.raises(UnprocessableEntity, match="share"):
            layers.create_holdout("h", share)  # type: ignore[arg-type]
    for _ in range(10):
        layers.create_holdout("h", Decimal("0.01"))
    with pytest.raises(UnprocessableEntity, match="at most 10"):
        layers.create_holdout("h", Decimal("0.01"))
    layer = layers.create_layer("l")
    layers.reserve("exp-1", LayerSlice(layer.layer_id, 0, 10))
    with pytest.raises(Conflict, match="layer_in_use|slice"):
        layers.delete_layer(layer.layer_id)


class StaleRepository(InMemoryLayerRepository):
    """Every conditional write loses (another writer always came first)."""

    def update_layer(self, layer: Layer, when: Any, **changes: Any) -> Layer | None:
        return None

    def delete_layer(self, layer: Layer) -> bool:
        return False


def test_a_layer_that_keeps_changing_is_a_409_not_a_loop() -> None:
    bus = RecordingEventBus()
    stale = LayerService(StaleRepository(), bus)
    layer = stale.create_layer("busy")
    for attempt in (
        lambda: stale.reserve("e", LayerSlice(layer.layer_id, 0, 1)),
        lambda: stale.set_access_groups(layer.layer_id, ["ml"]),
        lambda: stale.delete_layer(layer.layer_id),
    ):
        with pytest.raises(Conflict):
            attempt()


def test_a_holdout_without_outcomes_does_not_hold_a_ramp() -> None:
    from chalicelib.abtesting.models import Outcome, RampSchedule
    from chalicelib.core.clock import SystemClock

    engine = memory_engine(Registry(), RecordingEventBus(), SystemClock())
    engine.layers.create_holdout("h", Decimal("0.1"))
    variants = [
        ModelVariant("control", "m", 1, Decimal("0.9"), True),
        ModelVariant("treatment", "m", 2, Decimal("0.1")),
    ]
    ramp = RampSchedule((Decimal("0.1"), Decimal("0.5")), 1, min_requests_per_variant=5)
    created = engine.create_experiment("ramp", variants, allocation_strategy="ramping", ramp=ramp)
    assert [h.share for h in created.holdouts] == [Decimal("0.1")]
    engine.start_experiment(created.experiment_id)
    outcomes = [
        Outcome(variant, f"{variant}-{index}", True, 10.0)
        for variant in ("control", "treatment")
        for index in range(5)
    ]
    engine.record_outcomes(created.experiment_id, outcomes)
    experiment = engine.get_experiment(created.experiment_id)
    assert engine.get_experiment_metrics(created.experiment_id)["holdout"].request_count == 0
    assert engine.ramp_hold_reason(experiment) is None


def test_a_released_slice_routes_nobody_and_is_free_after_two_route_cache_periods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Conclude, release: the experiment keeps an empty slice (its users go outside_layer to
    the control's model), the layer holds the buckets 2 x 5 s more, then another experiment
    takes them; a running experiment cannot release (its exposed users would move)."""
    from chalicelib.core.clock import FixedClock

    monkeypatch.setenv("SYNAPSE_ROUTE_CACHE_TTL", "5")
    bus = RecordingEventBus()
    clock = FixedClock()
    engine = memory_engine(FakeRegistry(), bus, clock)
    layer = engine.layers.create_layer("ranking")
    wanted = LayerSlice(layer.layer_id, 0, 5000)
    first = engine.create_experiment("a", engine_variants("0.5", "0.5"), layer=wanted)
    engine.start_experiment(first.experiment_id)
    users = [f"u{i}" for i in range(2000)]
    inside = [
        u for u in users
        if engine.decide_request(first.experiment_id, f"r-{u}", u)[3] == "experiment"
    ]  # fmt: skip
    assert 900 < len(inside) < 1100
    with pytest.raises(Conflict, match="would move users already exposed"):
        engine.release_slice(first.experiment_id)
    engine.conclude_experiment(first.experiment_id, "v1")

    released = engine.release_slice(first.experiment_id)

    assert (released.layer.start, released.layer.end) == (0, 0)
    decided = {engine.decide_request(first.experiment_id, f"s-{u}", u)[::3] for u in inside}
    assert decided == {(None, "outside_layer")}  # the control's model, not an exposure
    with pytest.raises(SliceTaken):  # held for two route-cache periods
        engine.create_experiment("b", engine_variants("0.5", "0.5"), layer=wanted)
    assert engine.layers.get_layer(layer.layer_id).free(clock.now()) == [(5000, 10000)]
    clock.advance(seconds=10)
    assert engine.layers.get_layer(layer.layer_id).free(clock.now()) == [(0, 10000)]
    second = engine.create_experiment("b", engine_variants("0.5", "0.5"), layer=wanted)
    assert engine.layers.get_layer(layer.layer_id).slices.keys() == {second.experiment_id}
    again = engine.release_slice(first.experiment_id)  # idempotent: nothing left to release
    assert again.layer == released.layer
    assert engine.layers.get_layer(layer.layer_id).slices.keys() == {second.experiment_id}
    assert bus.of_type("LayerSliceReleased")[0].detail["end"] == 5000


def test_only_an_experiment_with_a_slice_can_release_one_and_a_layer_empties_when_freed() -> None:
    from chalicelib.core.clock import FixedClock

    clock = FixedClock()
    engine = memory_engine(FakeRegistry(), RecordingEventBus(), clock)
    plain = engine.create_experiment("plain", engine_variants("0.5", "0.5"))
    with pytest.raises(UnprocessableEntity, match="takes no layer slice"):
        engine.release_slice(plain.experiment_id)
    layer = engine.layers.create_layer("ranking")
    draft = engine.create_experiment(
        "draft", engine_variants("0.5", "0.5"), layer=LayerSlice(layer.layer_id, 10, 20)
    )
    engine.release_slice(draft.experiment_id)  # a draft exposed nobody
    with pytest.raises(Conflict, match="slice"):
        engine.layers.delete_layer(layer.layer_id)
    clock.advance(seconds=3600)
    engine.layers.delete_layer(layer.layer_id)


def test_a_draft_whose_slice_was_released_cannot_start_even_when_the_release_races_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting a released draft would run an experiment that routes nobody (every request
    outside_layer): 409, also when the release lands between the start's read and its write."""
    from chalicelib.abtesting.errors import ExperimentStateConflict
    from chalicelib.core.clock import FixedClock

    engine = memory_engine(FakeRegistry(), RecordingEventBus(), FixedClock())
    layer = engine.layers.create_layer("ranking")
    wanted = LayerSlice(layer.layer_id, 0, 5000)
    released = engine.create_experiment("a", engine_variants("0.5", "0.5"), layer=wanted)
    engine.release_slice(released.experiment_id)
    with pytest.raises(ExperimentStateConflict, match="released"):
        engine.start_experiment(released.experiment_id)
    racing = engine.create_experiment(
        "b", engine_variants("0.5", "0.5"), layer=LayerSlice(layer.layer_id, 6000, 7000)
    )
    read = engine.repository.get
    raced: list[str] = []

    def get_then_release(experiment_id: str) -> Any:
        found = read(experiment_id)
        if not raced:  # the release lands after the start has read the draft
            raced.append(experiment_id)
            engine.release_slice(experiment_id)
        return found

    monkeypatch.setattr(engine.repository, "get", get_then_release)
    with pytest.raises(ExperimentStateConflict):
        engine.start_experiment(racing.experiment_id)
    monkeypatch.setattr(engine.repository, "get", read)
    assert engine.get_experiment(racing.experiment_id).status.value == "draft"


def test_a_running_slice_grows_into_free_buckets_and_no_exposed_user_moves() -> None:
    """Grow [0, 3000) to [0, 5000) while running: every user routed into the experiment before
    is still in it with the same variant; users who were outside_layer and now fall in the
    added buckets join; shrinking, moving, overlapping a neighbour and resizing a concluded
    experiment are refused, and a draft's slice moves anywhere free."""
    from chalicelib.core.clock import FixedClock

    engine = memory_engine(FakeRegistry(), RecordingEventBus(), FixedClock())
    layer = engine.layers.create_layer("ranking")
    arms = engine_variants("0.5", "0.5")
    first = engine.create_experiment("a", arms, layer=LayerSlice(layer.layer_id, 0, 3000))
    neighbour = engine.create_experiment("b", arms, layer=LayerSlice(layer.layer_id, 6000, 7000))
    engine.start_experiment(first.experiment_id)
    users = [f"u{i}" for i in range(3000)]
    before = {u: engine.decide_request(first.experiment_id, f"r-{u}", u) for u in users}

    grown = engine.resize_slice(first.experiment_id, 0, 5000)

    assert (grown.layer.start, grown.layer.end) == (0, 5000)
    after = {u: engine.decide_request(first.experiment_id, f"s-{u}", u) for u in users}
    stayed = [u for u in users if before[u][3] == "experiment"]
    assert all(after[u][0] == before[u][0] for u in stayed)  # same variant, still exposed
    joined = [u for u in users if before[u][3] != "experiment" and after[u][3] == "experiment"]
    assert 400 < len(joined) < 800  # about 2000 / 10000 of the users
    assert engine.layers.get_layer(layer.layer_id).free() == [(5000, 6000), (7000, 10000)]
    refused = [(0, 4000), (100, 5000), (1000, 6000), (0, 6500)]
    for start, end in refused:
        with pytest.raises(Conflict):
            engine.resize_slice(first.experiment_id, start, end)
    assert engine.get_experiment(first.experiment_id).layer == grown.layer
    moved = engine.resize_slice(neighbour.experiment_id, 8000, 9000)  # a draft: anywhere free
    assert (moved.layer.start, moved.layer.end) == (8000, 9000)
    engine.conclude_experiment(first.experiment_id, "v1")
    with pytest.raises(Conflict, match="concluded"):
        engine.resize_slice(first.experiment_id, 0, 5500)
    plain = engine.create_experiment("plain", arms)
    with pytest.raises(UnprocessableEntity, match="takes no layer slice"):
        engine.resize_slice(plain.experiment_id, 0, 10)


def test_a_resize_whose_experiment_changed_meanwhile_puts_the_old_slice_back() -> None:
    from chalicelib.abtesting.errors import ExperimentStateConflict
    from chalicelib.core.clock import FixedClock

    engine = memory_engine(FakeRegistry(), RecordingEventBus(), FixedClock())
    layer = engine.layers.create_layer("ranking")
    created = engine.create_experiment(
        "a", engine_variants("0.5", "0.5"), layer=LayerSlice(layer.layer_id, 0, 100)
    )
    engine.start_experiment(created.experiment_id)
    original = engine.repository.transition

    def concluded_meanwhile(*args: Any, **kwargs: Any) -> Any:
        raise ExperimentStateConflict("experiment is concluded")

    engine.repository.transition = concluded_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ExperimentStateConflict):
        engine.resize_slice(created.experiment_id, 0, 200)
    engine.repository.transition = original  # type: ignore[method-assign]

    slices = engine.layers.get_layer(layer.layer_id).slices
    assert (slices[created.experiment_id].start, slices[created.experiment_id].end) == (0, 100)


def test_a_resize_racing_a_release_is_refused_and_the_release_stands() -> None:
    """The resize read the slice before a release landed: the layer no longer holds that slice
    for it, so the resize is 409 ``slice_changed`` and the released slice keeps its free_at."""
    from chalicelib.core.clock import FixedClock

    engine = memory_engine(FakeRegistry(), RecordingEventBus(), FixedClock())
    layer = engine.layers.create_layer("ranking")
    created = engine.create_experiment(
        "a", engine_variants("0.5", "0.5"), layer=LayerSlice(layer.layer_id, 0, 100)
    )
    stale = engine.get_experiment(created.experiment_id)
    engine.release_slice(created.experiment_id)
    engine.repository.get = lambda experiment_id: stale  # type: ignore[method-assign]

    with pytest.raises(Conflict) as raised:
        engine.resize_slice(created.experiment_id, 0, 200)

    assert raised.value.code == "slice_changed"
    held = engine.layers.get_layer(layer.layer_id).slices[created.experiment_id]
    assert (held.start, held.end) == (0, 100) and held.free_at is not None
