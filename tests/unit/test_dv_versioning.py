"""Versioning engine: content addressing, dedup, streaming, numbering, schemas, point in time."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.core.clock import FixedClock
from chalicelib.core.events import RecordingEventBus
from chalicelib.dataversion.errors import (
    DatasetVersionNotFound,
    SchemaEvolutionError,
    SchemaMismatch,
)
from chalicelib.dataversion.lineage import LineageGraph
from chalicelib.dataversion.memory import (
    InMemoryDatasetRepository,
    InMemoryLineageRepository,
    InMemoryObjectStore,
)
from chalicelib.dataversion.models import (
    PICKLE_WARNING,
    CompatibilityMode,
    DatasetFormat,
    DatasetSchema,
)
from chalicelib.dataversion.storage import DataStore, cas_key
from chalicelib.dataversion.versioning import DatasetVersioningEngine

CSV = b"id,amount,label\n1,2.5,true\n2,3.0,false\n3,,true\n"


@pytest.fixture
def bus() -> RecordingEventBus:
    return RecordingEventBus()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def engine(bus: RecordingEventBus, clock: FixedClock) -> DatasetVersioningEngine:
    """The engine on in-memory storage (the S3 store's own behaviour is contract-tested in
    ``test_repository_contracts.py``)."""
    return DatasetVersioningEngine(
        repository=InMemoryDatasetRepository(),
        store=InMemoryObjectStore(chunk_bytes=64 * 1024),
        lineage=LineageGraph(InMemoryLineageRepository()),
        event_bus=bus,
        clock=clock,
    )


def _objects(engine: DatasetVersioningEngine, prefix: str) -> list[str]:
    return [key for key, _ in engine.store.list_objects(prefix)]


def test_version_is_stored_at_its_sha256_content_address(engine: DatasetVersioningEngine) -> None:
    dataset = engine.create_dataset("clicks", "alice")
    version = engine.create_version(dataset.dataset_id, CSV)
    digest = hashlib.sha256(CSV).hexdigest()
    assert version.sha256 == digest
    assert version.storage_key == f"cas/sha256/{digest[:2]}/{digest[2:]}" == cas_key(digest)
    assert engine.store.read(version.storage_key) == CSV
    assert version.size_bytes == len(CSV)
    assert version.version_number == 1
    assert _objects(engine, "tmp/") == []


def test_identical_content_returns_the_existing_version(
    engine: DatasetVersioningEngine, bus: RecordingEventBus
) -> None:
    dataset = engine.create_dataset("clicks", "alice")
    first = engine.create_version(dataset.dataset_id, CSV)
    again = engine.create_version(dataset.dataset_id, io.BytesIO(CSV))
    assert again.version_id == first.version_id
    assert engine.list_versions(dataset.dataset_id)[1] == 1
    assert len(bus.of_type("DatasetVersionCreated")) == 1
    assert _objects(engine, "cas/") == [first.storage_key]


def test_same_bytes_in_two_datasets_share_one_stored_object(
    engine: DatasetVersioningEngine,
) -> None:
    a = engine.create_version(engine.create_dataset("a", "alice").dataset_id, CSV)
    b = engine.create_version(engine.create_dataset("b", "alice").dataset_id, CSV)
    assert a.version_id != b.version_id
    assert a.storage_key == b.storage_key
    assert _objects(engine, "cas/") == [a.storage_key]


def test_large_content_streams_through_multipart_in_chunks(
    aws: Any, engine: DatasetVersioningEngine
) -> None:
    """On S3 (moto) itself: 12 MiB in 5 MiB parts."""
    engine = DatasetVersioningEngine(
        repository=engine.repository, store=DataStore(chunk_bytes=5 * 1024 * 1024),
        lineage=engine.lineage, event_bus=engine.event_bus, clock=engine.clock,
    )  # fmt: skip
    dataset = engine.create_dataset("big", "alice")
    row = b"1,2.5,true\n"
    body = b"id,amount,label\n" + row * (12 * 1024 * 1024 // len(row))
    chunks = (body[i : i + 1_000_000] for i in range(0, len(body), 1_000_000))
    version = engine.create_version(dataset.dataset_id, chunks)
    assert version.sha256 == hashlib.sha256(body).hexdigest()
    assert version.row_count == body.count(b"\n") - 1
    assert engine.store.read(version.storage_key) == body


def test_schema_and_rows_are_inferred_from_csv(engine: DatasetVersioningEngine) -> None:
    dataset = engine.create_dataset("clicks", "alice")
    version = engine.create_version(dataset.dataset_id, CSV)
    assert version.row_count == 3
    assert version.schema is not None
    assert version.schema.columns == {"id": "int", "amount": "float", "label": "bool"}
    assert version.schema.nullable == ["amount"]
    assert version.schema_sampled_rows is None


def test_quoted_newlines_do_not_count_as_rows(engine: DatasetVersioningEngine) -> None:
    dataset = engine.create_dataset("notes", "alice")
    body = b'id,text\n1,"line one\nline two"\n2,"say ""hi""\nbye"\n3,plain'
    version = engine.create_version(dataset.dataset_id, body)
    assert version.row_count == 3
    assert version.schema is not None and version.schema.columns["text"] == "string"


def test_json_lines_are_inspected(engine: DatasetVersioningEngine) -> None:
    dataset = engine.create_dataset("events", "alice", format="json")
    body = b'{"user": "u1", "score": 1, "ok": true}\n{"user": "u2", "score": 2.5}\n'
    version = engine.create_version(dataset.dataset_id, body)
    assert version.row_count == 2
    assert version.schema is not None
    assert version.schema.columns == {"user": "string", "score": "float", "ok": "bool"}
    assert version.schema.nullable == ["ok"]


def test_declared_schema_mismatch_is_422_naming_the_column(
    engine: DatasetVersioningEngine,
) -> None:
    schema = DatasetSchema(columns={"id": "int", "amount": "int", "label": "bool"})
    dataset = engine.create_dataset("typed", "alice", schema=schema)
    with pytest.raises(SchemaMismatch) as raised:
        engine.create_version(dataset.dataset_id, CSV)
    assert raised.value.status == 422
    assert "'amount'" in raised.value.message
    assert engine.list_versions(dataset.dataset_id)[1] == 0


def test_pickle_is_stored_opaque_with_a_warning(engine: DatasetVersioningEngine) -> None:
    dataset = engine.create_dataset("blobs", "alice", format="pickle")
    version = engine.create_version(dataset.dataset_id, b"\x80\x04\x95 not loaded")
    assert version.format is DatasetFormat.PICKLE
    assert version.warnings == [PICKLE_WARNING]
    assert version.schema is None and version.row_count is None


def test_incompatible_schema_change_is_refused_under_backward(
    engine: DatasetVersioningEngine,
) -> None:
    dataset = engine.create_dataset("clicks", "alice")
    engine.create_version(dataset.dataset_id, CSV)
    with pytest.raises(SchemaEvolutionError) as raised:
        engine.create_version(dataset.dataset_id, b"id,amount,label\nx1,2.5,true\n")
    assert "column 'id' changed type int -> string" in raised.value.message
    assert engine.list_versions(dataset.dataset_id)[1] == 1


def test_an_inferred_new_column_is_optional_so_adding_it_is_compatible(
    engine: DatasetVersioningEngine,
) -> None:
    """A column that first appears fully populated was not declared required: adding it is
    fine in the default (backward) mode, and a later version may drop it again even in full."""
    dataset = engine.create_dataset("clicks", "alice", compatibility=CompatibilityMode.FULL)
    engine.create_version(dataset.dataset_id, CSV)
    second = engine.create_version(dataset.dataset_id, b"id,amount,label,country\n1,2.5,true,de\n")
    assert second.schema is not None and second.schema.is_nullable("country")
    assert not second.schema.is_nullable("id")
    third = engine.create_version(dataset.dataset_id, b"id,amount,label\n4,2.5,true\n")
    assert third.version_number == 3


def test_whole_numbers_in_a_float_column_are_not_a_narrowing(
    engine: DatasetVersioningEngine,
) -> None:
    dataset = engine.create_dataset("clicks", "alice")
    engine.create_version(dataset.dataset_id, CSV)
    second = engine.create_version(dataset.dataset_id, b"id,amount,label\n7,3,false\n")
    assert second.schema is not None and second.schema.columns["amount"] == "float"
    assert second.schema.is_nullable("amount")


def test_mode_none_accepts_any_change(engine: DatasetVersioningEngine) -> None:
    dataset = engine.create_dataset("free", "alice", compatibility=CompatibilityMode.NONE)
    engine.create_version(dataset.dataset_id, CSV)
    second = engine.create_version(dataset.dataset_id, b"x\nhello\n")
    assert second.version_number == 2


def test_duplicate_dataset_name_is_409(engine: DatasetVersioningEngine) -> None:
    from chalicelib.core.errors import Conflict

    engine.create_dataset("clicks", "alice")
    with pytest.raises(Conflict):
        engine.create_dataset("clicks", "bob")


def test_point_in_time_lookup_returns_the_version_current_then(
    engine: DatasetVersioningEngine, clock: FixedClock
) -> None:
    dataset = engine.create_dataset("clicks", "alice")
    start = clock.now()
    first = engine.create_version(dataset.dataset_id, CSV)
    clock.advance(hours=1)
    second = engine.create_version(dataset.dataset_id, CSV + b"4,1.0,false\n")
    clock.advance(hours=1)
    third = engine.create_version(dataset.dataset_id, CSV + b"5,1.0,false\n")
    assert engine.get_version(dataset.dataset_id, as_of=start).version_id == first.version_id
    at = start + timedelta(minutes=90)
    assert engine.get_version(dataset.dataset_id, as_of=at).version_id == second.version_id
    assert engine.get_version(dataset.dataset_id, as_of=clock.now()).version_id == third.version_id
    assert engine.get_version(dataset.dataset_id).version_id == third.version_id
    with pytest.raises(DatasetVersionNotFound):
        engine.get_version(dataset.dataset_id, as_of=start - timedelta(seconds=1))
    page, total = engine.list_versions(dataset.dataset_id, as_of=at)
    assert total == 2 and [v.version_number for v in page] == [1, 2]


def test_versions_page_with_limit_and_offset(engine: DatasetVersioningEngine) -> None:
    dataset = engine.create_dataset("clicks", "alice")
    for i in range(5):
        engine.create_version(dataset.dataset_id, CSV + f"{i + 10},1.0,true\n".encode())
    page, total = engine.list_versions(dataset.dataset_id, limit=2, offset=2)
    assert total == 5
    assert [v.version_number for v in page] == [3, 4]
    assert engine.list_versions(dataset.dataset_id, limit=2, offset=5) == ([], 5)


def test_compare_versions_reports_schema_rows_and_changed_rows(
    engine: DatasetVersioningEngine,
) -> None:
    schema = DatasetSchema(
        columns={"id": "int", "amount": "float", "label": "bool"},
        primary_key=["id"],
        nullable=["amount"],
    )
    dataset = engine.create_dataset("clicks", "alice", schema=schema)
    a = engine.create_version(dataset.dataset_id, CSV)
    b = engine.create_version(
        dataset.dataset_id, b"id,amount,label\n1,2.5,true\n2,9.0,false\n4,1.0,true\n"
    )
    diff = engine.compare_versions(a, b)
    assert diff["row_count"] == {"a": 3, "b": 3, "diff": 0}
    rows = diff["rows"]
    assert rows["mode"] == "primary_key"
    assert (rows["added"], rows["removed"], rows["changed"]) == (1, 1, 1)
    assert rows["changed_sample"][0]["after"]["amount"] == "9.0"
    assert diff["schema"]["same"] is True
