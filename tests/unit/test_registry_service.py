"""The registry's logic on the in-memory records and artifact store (no AWS): version numbering
under races and lost responses, content-addressed artifacts, background samples, stages and their
events, and the integrity check when a model loads. The stores themselves are held to the
DynamoDB and S3 ones by ``test_repository_contracts.py``."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from chalicelib.core.errors import Conflict, UnprocessableEntity, ValidationError
from chalicelib.core.events import RecordingEventBus
from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.memory import InMemoryArtifactStore, InMemoryRegistryRepository
from chalicelib.registry.models import ModelStage
from chalicelib.registry.service import REGISTER_ATTEMPTS, ModelRegistry, VersionSpec

FEATURES = ("f0", "f1", "f2")
SPEC = VersionSpec(task="classification", feature_names=FEATURES)


def _artifact(c: float = 1.0) -> bytes:
    X = np.random.default_rng(1).normal(size=(80, 3))
    return sio.dumps(LogisticRegression(C=c).fit(X, (X[:, 0] + X[:, 1] > 0).astype(int)))


@pytest.fixture(scope="module")
def artifact() -> bytes:
    return _artifact()


def _registry(repository: Any = None, bus: RecordingEventBus | None = None) -> ModelRegistry:
    return ModelRegistry(
        repository=repository or InMemoryRegistryRepository(),
        store=InMemoryArtifactStore(),
        event_bus=bus or RecordingEventBus(),
    )


def test_events_on_register_and_promote(artifact: bytes) -> None:
    bus = RecordingEventBus()
    registry = _registry(bus=bus)
    model = registry.create_model("evented")
    registry.register_version(model.model_id, SPEC, artifact)
    registry.promote(model.model_id, 1)
    assert [e.detail_type for e in bus.events] == [
        "ModelCreated",
        "ModelVersionRegistered",
        "ModelVersionStageChanged",
        "ModelVersionPromoted",
    ]
    assert bus.events[-1].detail["previous_version"] is None
    assert registry.get_model(model.model_id).generation == 2


def test_the_same_bytes_are_stored_once_under_their_sha256(artifact: bytes) -> None:
    registry = _registry()
    model = registry.create_model("twice")
    first = registry.register_version(model.model_id, SPEC, artifact)
    second = registry.register_version(model.model_id, SPEC, artifact)
    assert (first.version, second.version) == (1, 2)
    assert first.artifact_key == second.artifact_key
    assert first.artifact_key.endswith(f"{first.artifact_sha256}.skops")
    assert registry.store.get(first.artifact_key) == artifact


def test_concurrent_registrations_get_consecutive_versions() -> None:
    registry = _registry()
    model = registry.create_model("parallel")
    artifacts = [_artifact(0.1 * (n + 1)) for n in range(8)]
    errors: list[Exception] = []

    def register(data: bytes) -> None:
        try:
            registry.register_version(model.model_id, SPEC, data)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(a,)) for a in artifacts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = registry.list_versions(model.model_id)
    assert [v.version for v in versions] == list(range(1, 9))
    assert len({v.artifact_sha256 for v in versions}) == 8


class LostResponses(InMemoryRegistryRepository):
    """Commits a version, then answers as if the condition failed (a retried request whose first
    attempt committed), ``lost`` times."""

    def __init__(self, lost: int) -> None:
        super().__init__()
        self.lost = lost

    def add_version(self, version: Any, expected_latest: int, registration_id: str = "") -> None:
        super().add_version(version, expected_latest, registration_id)
        if self.lost:
            self.lost -= 1
            raise Conflict("another version was registered at the same time")


def test_a_registration_whose_response_was_lost_returns_its_version_once(
    artifact: bytes,
) -> None:
    registry = _registry(LostResponses(lost=1))
    model = registry.create_model("lost")
    version = registry.register_version(model.model_id, SPEC, artifact)
    assert version.version == 1
    assert [v.version for v in registry.list_versions(model.model_id)] == [1]


class AlwaysRaced(InMemoryRegistryRepository):
    """Another writer wins every number."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def add_version(self, version: Any, expected_latest: int, registration_id: str = "") -> None:
        self.attempts += 1
        raise Conflict("another version was registered at the same time")


def test_registration_gives_up_after_a_bounded_number_of_lost_races(artifact: bytes) -> None:
    repository = AlwaysRaced()
    registry = _registry(repository)
    model = registry.create_model("raced")
    with pytest.raises(Conflict, match="too many concurrent registrations"):
        registry.register_version(model.model_id, SPEC, artifact)
    assert repository.attempts == REGISTER_ATTEMPTS


def test_background_sample_is_stored_and_checked(artifact: bytes) -> None:
    registry = _registry()
    model = registry.create_model("bg")
    good = VersionSpec(
        task="classification",
        feature_names=FEATURES,
        background_sample=((1.0, 2.0, 3.0), (4.0, 5.0, 6.0)),
    )
    version = registry.register_version(model.model_id, good, artifact)
    assert registry.get_background_sample(model.model_id, version.version) == [
        [1.0, 2.0, 3.0],
        [4.0, 5.0, 6.0],
    ]
    bad = VersionSpec(task="classification", feature_names=FEATURES, background_sample=((1.0,),))
    with pytest.raises(UnprocessableEntity, match="row 0"):
        registry.register_version(model.model_id, bad, artifact)
    assert [v.version for v in registry.list_versions(model.model_id)] == [1]


def test_an_uploaded_artifact_is_registered_and_its_upload_removed(artifact: bytes) -> None:
    registry = _registry()
    model = registry.create_model("uploaded")
    key, url = registry.create_upload(model.model_id)
    assert key.startswith(f"uploads/{model.model_id}/") and key in url
    registry.store.put(key, artifact)
    version = registry.register_version(model.model_id, SPEC, upload_key=key)
    assert registry.store.get(version.artifact_key) == artifact
    assert not registry.store.exists(key)
    with pytest.raises(ValidationError, match="a key returned by the uploads route"):
        registry.register_version(model.model_id, SPEC, upload_key="uploads/other/x")


def test_promotion_archives_the_previous_production_version(artifact: bytes) -> None:
    bus = RecordingEventBus()
    registry = _registry(bus=bus)
    model = registry.create_model("stages")
    for _ in range(2):
        registry.register_version(model.model_id, SPEC, artifact)
    registry.promote(model.model_id, 1)
    assert registry.promote(model.model_id, 2).stage is ModelStage.PRODUCTION
    assert registry.get_version(model.model_id, 1).stage is ModelStage.ARCHIVED
    assert registry.get_model(model.model_id).production_version == 2
    assert bus.events[-1].detail == {
        "model_id": model.model_id,
        "version": 2,
        "stage": "production",
        "previous_version": 1,
    }
    events = len(bus.events)
    assert registry.promote(model.model_id, 2).stage is ModelStage.PRODUCTION  # no change
    assert len(bus.events) == events
    with pytest.raises(ValidationError, match="stage must be"):
        registry.set_stage(model.model_id, 1, "none")


def test_a_model_whose_stored_bytes_changed_is_refused_on_load(artifact: bytes) -> None:
    registry = _registry()
    model = registry.create_model("tampered")
    version = registry.register_version(model.model_id, SPEC, artifact)
    loaded = registry.load_model(model.model_id, 1)
    assert loaded.predict(np.zeros((1, 3))).shape == (1,)
    registry.store.put(version.artifact_key, _artifact(0.5))
    with pytest.raises(UnsafeArtifactError, match="sha256 differs"):
        registry.load_model(model.model_id, 1)
