"""Concurrent writers get consecutive version numbers with no gaps or duplicates."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.core.events import RecordingEventBus
from chalicelib.dataversion.versioning import DatasetVersioningEngine


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


def test_a_writer_that_loses_the_race_is_checked_against_the_version_it_now_follows(
    aws: Any,
) -> None:
    """The issue's race, made deterministic: v2 drops column ``a`` while a write declaring
    ``a`` required, checked against v1, is between its check and its transaction; it must not
    land as v3 with ``a`` back as a required column."""
    from chalicelib.dataversion.errors import SchemaEvolutionError
    from chalicelib.dataversion.models import DatasetSchema

    engine = DatasetVersioningEngine(event_bus=RecordingEventBus())
    dataset = engine.create_dataset("raced", "alice")
    engine.create_version(dataset.dataset_id, b"id,a\n1,2\n")
    original = engine.repository.add_version
    interleaved: list[int] = []

    def add_version(
        version: Any,
        source: Any = None,
        predecessor: Any = None,
        generation: int = 0,
        profile: bytes | None = None,
    ) -> None:
        if not interleaved:  # the other writer lands v2 first
            interleaved.append(1)
            engine.create_version(dataset.dataset_id, b"id\n7\n")
        original(version, source, predecessor, generation, profile)

    engine.repository.add_version = add_version  # type: ignore[method-assign]
    required = DatasetSchema(columns={"id": "int", "a": "int"})
    with pytest.raises(SchemaEvolutionError, match="required column 'a' was added"):
        engine.create_version(dataset.dataset_id, b"id,a\n3,4\n", schema=required)
    engine.repository.add_version = original  # type: ignore[method-assign]
    stored, total = engine.list_versions(dataset.dataset_id)
    assert total == 2 and list(stored[-1].schema.columns) == ["id"]


def test_a_transaction_naming_a_stale_predecessor_is_refused(aws: Any) -> None:
    from dataclasses import replace

    from chalicelib.dataversion.errors import VersionNumberTaken

    engine = DatasetVersioningEngine(event_bus=RecordingEventBus())
    dataset = engine.create_dataset("stale", "alice")
    first = engine.create_version(dataset.dataset_id, b"id\n1\n")
    second = engine.create_version(dataset.dataset_id, b"id\n2\n")
    third = replace(second, version_id="dv-third", version_number=3, sha256="0" * 64)
    with pytest.raises(VersionNumberTaken):
        engine.repository.add_version(third, None, first)
    engine.repository.add_version(third, None, second)
    assert engine.repository.latest_version_number(dataset.dataset_id) == 3


# Each writer's content (and declared schema): compatible or not with whatever it ends up
# following (backward mode).
REQUIRED_B = {"id": "int", "b": "int"}
RACING_WRITES: list[tuple[bytes, dict[str, str] | None]] = [
    (b"id,a\n1,2\n", None),  # a int column (required if a was required)
    (b"id\n1\n", None),  # a dropped (backward-compatible)
    (b"id,a,note\n1,2,\n", None),  # a nullable column added
    (b"id,a\n1,x\n", None),  # a turned into a string (incompatible with an int a)
    (b"id,b\n1,2\n", REQUIRED_B),  # a required column b (incompatible unless b was there)
]


@pytest.mark.parametrize("seed", range(3))
def test_racing_writers_with_mixed_schemas_never_land_an_incompatible_version(
    atomic_dynamodb: None, seed: int
) -> None:
    import random

    from chalicelib.dataversion.errors import SchemaEvolutionError
    from chalicelib.dataversion.models import DatasetSchema
    from chalicelib.dataversion.schema import validate_schema_evolution

    rng = random.Random(seed)
    engine = DatasetVersioningEngine(event_bus=RecordingEventBus())
    dataset = engine.create_dataset(f"mixed-{seed}", "alice")
    engine.create_version(dataset.dataset_id, b"id,a\n0,0\n")
    writes = [rng.choice(RACING_WRITES) for _ in range(16)]
    writes = [
        (body.replace(b"1", str(i + 10).encode()), cols) for i, (body, cols) in enumerate(writes)
    ]

    def write(item: tuple[bytes, dict[str, str] | None]) -> str:
        body, columns = item
        declared = DatasetSchema(columns=columns) if columns else None
        try:
            engine.create_version(dataset.dataset_id, body, schema=declared)
        except SchemaEvolutionError:
            return "refused"
        return "landed"

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(write, writes))
    stored, total = engine.list_versions(dataset.dataset_id, limit=100)
    assert [v.version_number for v in stored] == list(range(1, total + 1))
    assert total == 1 + results.count("landed")
    for before, after in zip(stored, stored[1:], strict=False):
        validate_schema_evolution(before.schema, after.schema, dataset.compatibility)
