"""Concurrent writers get consecutive version numbers with no gaps or duplicates."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.core.events import RecordingEventBus
from chalicelib.dataversion.versioning import DatasetVersioningEngine


@pytest.fixture
def atomic_dynamodb(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Serializes requests inside moto's DynamoDB, as the real service is atomic per request.

    moto's TransactWriteItems deep-copies its tables for rollback without a lock, so concurrent
    requests can corrupt the emulator itself; the engine's own concurrency control (conditional
    transactions, retried) is what the tests exercise.
    """
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()
    original = DynamoHandler.call_action

    def locked(self: Any) -> Any:
        with lock:
            return original(self)

    monkeypatch.setattr(DynamoHandler, "call_action", locked)
    yield


def test_twenty_concurrent_creations_get_versions_one_to_twenty(atomic_dynamodb: None) -> None:
    bus = RecordingEventBus()
    engine = DatasetVersioningEngine(event_bus=bus)
    dataset = engine.create_dataset("concurrent", "alice")

    def create(i: int) -> int:
        body = f"id,value\n{i},{i * 1.5}\n".encode()
        return engine.create_version(dataset.dataset_id, body, created_by=f"w{i}").version_number

    with ThreadPoolExecutor(max_workers=20) as pool:
        numbers = list(pool.map(create, range(20)))

    assert sorted(numbers) == list(range(1, 21))
    stored, total = engine.list_versions(dataset.dataset_id, limit=100)
    assert total == 20
    assert [v.version_number for v in stored] == list(range(1, 21))
    assert len({v.sha256 for v in stored}) == 20
    assert len(bus.of_type("DatasetVersionCreated")) == 20


def test_concurrent_identical_content_makes_one_version(atomic_dynamodb: None) -> None:
    engine = DatasetVersioningEngine(event_bus=RecordingEventBus())
    dataset = engine.create_dataset("same", "alice")
    body = b"id,value\n1,2\n"
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(
            pool.map(lambda _: engine.create_version(dataset.dataset_id, body).version_id, range(8))
        )
    assert len(ids) == 1
    assert engine.list_versions(dataset.dataset_id)[1] == 1
