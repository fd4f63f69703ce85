"""Versioning engine: content addressing, dedup, streaming, numbering, schemas, point in time."""

from __future__ import annotations

import csv
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
    UnreadableContent,
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
from tests.helpers.dataversion import stored_before_pyarrow_typing

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


def test_versions_listed_as_of_a_time_before_the_first_version_are_none(
    engine: DatasetVersioningEngine, clock: FixedClock
) -> None:
    dataset = engine.create_dataset("clicks", "alice")
    before = clock.now() - timedelta(seconds=1)
    engine.create_version(dataset.dataset_id, CSV)
    assert engine.list_versions(dataset.dataset_id, as_of=before) == ([], 0)
    assert engine.list_versions(dataset.dataset_id, as_of=clock.now())[1] == 1


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


def _at(body: bytes, position: int, filler: bytes) -> bytes:
    """``body`` grown by rows ``<n>,ppp…`` and one ``x,<filler…>`` so that the next record
    starts at ``position``."""
    rows, number = [body], 0
    size = len(body)
    while position - size > 100:
        row = b"%d,%s\n" % (number, b"p" * 60)
        rows.append(row)
        size, number = size + len(row), number + 1
    rows.append(b"x," + filler * (position - size - 3) + b"\n")
    return b"".join(rows)


def test_records_across_slice_boundaries_count_type_and_sample_as_csv_reads_them(
    engine: DatasetVersioningEngine,
) -> None:
    """Through the Python API (64 KiB chunks, 1 MiB slices): a quoted CRLF whose CR ends the
    first slice, a blank line straddling the second boundary, a quoted field opening on the
    third, and a last record ended by a lone CR. Count, schema (the head's cells typed one by
    one) and samples (uniform, and every record) are what ``csv`` reads."""
    from chalicelib.dataversion.reader import sample_records
    from chalicelib.dataversion.schema import merge_types, value_type

    mib = 1 << 20
    body = _at(b"id,text\n", mib - 4, b"q") + b'6,"\r\n"\n'
    body = _at(body, 2 * mib - 1, b"r") + b"\n\n"
    body = _at(body, 3 * mib - 2, b"s") + b'7,"a\n""b"""\r\r8,\r'
    assert body[mib - 1 : mib + 1] == b"\r\n" and body[3 * mib] == ord('"')
    header, *rows = [row for row in csv.reader(io.StringIO(body.decode(), newline="")) if row]
    kinds: dict[str, str | None] = dict.fromkeys(header)
    for row in rows[:10_000]:
        for name, cell in zip(header, row, strict=True):
            kinds[name] = merge_types(kinds[name], value_type(cell))
    version = engine.create_version(engine.create_dataset("edges", "alice").dataset_id, body)
    assert version.row_count == len(rows) and version.schema is not None
    assert version.schema.columns == {name: kind or "string" for name, kind in kinds.items()}
    for max_rows in (500, len(rows)):
        sample = sample_records(engine.store, version, max_rows=max_rows, seed=3)
        assert sample.records == [
            dict(zip(header, rows[n], strict=True)) for n in sample.row_numbers
        ]
    assert {"id": "6", "text": "\r\n"} in sample.records
    assert sample.records[-2:] == [{"id": "7", "text": 'a\n"b"'}, {"id": "8", "text": ""}]


def _ragged_past_the_head(at: int = 12_345) -> bytes:
    """A CSV whose record ``at`` (counted after the header) has a field too many, far past
    the schema's 10,000-row head."""
    rows = [f"{i},{i % 7}\n" for i in range(1, 20_001)]
    rows[at - 1] = f"{at},1,extra\n"
    return ("id,group\n" + "".join(rows)).encode()


def test_a_ragged_record_anywhere_is_refused_naming_it_and_nothing_is_written(
    engine: DatasetVersioningEngine,
) -> None:
    """Through the Python API: a record past the schema's head with a field too many is
    refused (422, named), as ``csv`` reads it and pyarrow refuses it; no version, no lineage
    node, no stored object beyond what a refusal in the head leaves."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    body = _ragged_past_the_head()
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert [n for n, row in enumerate(rows) if len(row) != 2] == [12_345]
    with pytest.raises(pa.ArrowInvalid, match="Expected 2 columns, got 3"):
        pacsv.read_csv(io.BytesIO(body))
    dataset = engine.create_dataset("ragged", "alice")
    with pytest.raises(UnreadableContent) as raised:
        engine.create_version(dataset.dataset_id, body)
    assert raised.value.status == 422
    assert raised.value.message == "CSV record 12345 has 3 fields; the header has 2"
    left = sorted(key for key, _ in engine.store.list_objects(""))
    with pytest.raises(UnreadableContent, match="CSV record 2 has 3 fields"):
        engine.create_version(dataset.dataset_id, b"id,group\n1,2\n2,1,extra\n")
    assert sorted(key for key, _ in engine.store.list_objects("")) == left
    assert engine.list_versions(dataset.dataset_id)[1] == 0
    assert engine.lineage.repository._nodes == {}  # the in-memory DAG holds no node


@pytest.mark.parametrize("ragged", [False, True])
def test_field_counts_across_real_slice_boundaries_are_what_csv_reads(
    engine: DatasetVersioningEngine, ragged: bool
) -> None:
    """1 MiB slices (64 KiB chunks): a quoted field holding a comma and a CRLF that straddles
    the first boundary is one field; a record starting right at the second boundary with a
    field too many (or not) is refused (or not) as ``csv`` reads the file."""
    mib = 1 << 20
    body = _at(b"id,text\n", mib - 5, b"q") + b'6,",\r\n,"\n'
    body = _at(body, 2 * mib, b"r") + (b"7,a,b\n" if ragged else b"7,a\n") + b"8,z\n"
    assert body[mib - 2 : mib + 1] == b",\r\n" and body[2 * mib : 2 * mib + 2] == b"7,"
    rows = [row for row in csv.reader(io.StringIO(body.decode(), newline="")) if row]
    wrong = [n for n, row in enumerate(rows) if len(row) != 2]
    dataset = engine.create_dataset("edges", "alice")
    if not ragged:
        assert wrong == []
        version = engine.create_version(dataset.dataset_id, body)
        assert version.row_count == len(rows) - 1
        return
    with pytest.raises(UnreadableContent) as raised:
        engine.create_version(dataset.dataset_id, body)
    assert raised.value.message == f"CSV record {wrong[0]} has 3 fields; the header has 2"


# Cells and the type the CSV typing before pyarrow's rule (3414e60) gave a column of them: what
# versions stored until then hold in their schemas.
TYPED_BEFORE_PYARROW = [
    ("١٢٣", "int"),  # Arabic-Indic digits: int() read them; pyarrow reads text
    ("+5", "int"),  # pyarrow: a float
    ("99999999999999999999", "int"),  # beyond int64: pyarrow reads a float
    ("1_000", "float"),  # float() read it; pyarrow reads text
    ("tRuE", "bool"),  # any case was a bool; pyarrow reads text
]


def _pyarrow_type(body: bytes, column: str) -> str:
    """The type pyarrow's CSV reader infers for ``column`` of ``body`` (only "" null)."""
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(io.BytesIO(body), convert_options=pacsv.ConvertOptions(null_values=[""]))
    found = str(table.schema.field(column).type)
    return {"int64": "int", "double": "float", "bool": "bool"}.get(found, "string")


@pytest.mark.parametrize("mode", ["backward", "forward", "full", "full_transitive"])
@pytest.mark.parametrize(("cell", "typed_before"), TYPED_BEFORE_PYARROW)
def test_data_of_the_same_kind_may_follow_a_version_typed_before_pyarrows_rule(
    engine: DatasetVersioningEngine, mode: str, cell: str, typed_before: str
) -> None:
    """A dataset whose version 1 was typed by the rule before pyarrow's takes more data of the
    same kind in every mode: the change is in the typing, not in the data. The new version's
    column has the type pyarrow gives the same bytes."""
    dataset = engine.create_dataset("legacy", "alice", compatibility=mode)
    first = f"id,x\n1,{cell}\n2,{cell}\n".encode()
    stored_before_pyarrow_typing(
        engine, dataset.dataset_id, first, {"id": "int", "x": typed_before}
    )
    body = f"id,x\n1,{cell}\n2,{cell}\n3,{cell}\n".encode()
    second = engine.create_version(dataset.dataset_id, body)
    assert second.version_number == 2
    assert second.schema is not None
    assert second.schema.columns["x"] == _pyarrow_type(body, "x")
    third = engine.create_version(dataset.dataset_id, body + f"4,{cell}\n".encode())
    assert third.version_number == 3


@pytest.mark.parametrize(("cell", "typed_before"), TYPED_BEFORE_PYARROW)
def test_a_real_type_change_is_refused_after_a_version_typed_before_pyarrows_rule(
    engine: DatasetVersioningEngine, cell: str, typed_before: str
) -> None:
    """The allowance covers the typing rule only: text that neither rule reads as the old type
    is a type change after an old version, and the same cells are one after a version typed by
    pyarrow's rule from plain digits."""
    dataset = engine.create_dataset("legacy", "alice", compatibility="full")
    first = f"id,x\n1,{cell}\n".encode()
    stored_before_pyarrow_typing(
        engine, dataset.dataset_id, first, {"id": "int", "x": typed_before}
    )
    with pytest.raises(SchemaEvolutionError, match="column 'x'"):
        engine.create_version(dataset.dataset_id, b"id,x\n1,abc\n2,def\n")
    fresh = engine.create_dataset("fresh", "alice", compatibility="full")
    plain = {"int": "12", "float": "1.5", "bool": "true"}[typed_before]
    engine.create_version(fresh.dataset_id, f"id,x\n1,{plain}\n".encode())
    if _pyarrow_type(f"x\n{cell}\n".encode(), "x") != typed_before:
        with pytest.raises(SchemaEvolutionError, match="column 'x'"):
            engine.create_version(fresh.dataset_id, f"id,x\n1,{cell}\n2,{cell}\n".encode())
