"""Reading stored versions: records exactly as csv/json read them, a seeded uniform sample, and
the sha256 checked on every read (transformations, replays, comparisons, backgrounds)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from chalicelib.core.events import RecordingEventBus
from chalicelib.dataversion.errors import ContentIntegrityError
from chalicelib.dataversion.models import DatasetFormat
from chalicelib.dataversion.reader import read_verified, sample_records
from chalicelib.dataversion.storage import DataStore
from chalicelib.dataversion.versioning import DatasetVersioningEngine
from tests.conftest import Http

QUOTED = (
    b'id,text,score\n1,"line one\nline two",0.5\n\n2,"blank\n\ninside",1.5\n'
    b'3,"cr\r\nlf ""quoted""",2.5\r\n4,plain,3.5'
)


@pytest.fixture
def engine(aws: Any) -> DatasetVersioningEngine:
    return DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus())


def csv_dicts(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_quoted_line_ends_and_blank_lines_inside_quotes_read_as_csv_reads_them(
    engine: DatasetVersioningEngine,
) -> None:
    dataset = engine.create_dataset("quoted", "alice")
    version = engine.create_version(dataset.dataset_id, QUOTED)
    sample = sample_records(engine.store, version)
    assert sample.records == csv_dicts(QUOTED)
    assert sample.records[1]["text"] == "blank\n\ninside"
    assert sample.columns == ["id", "text", "score"]
    assert sample.total == version.row_count == 4 and sample.row_numbers == [0, 1, 2, 3]


def test_json_lines_with_blank_lines_are_sampled_as_json_reads_them(
    engine: DatasetVersioningEngine,
) -> None:
    body = b'{"a": 1, "t": "x\\ny"}\n\n  \n{"a": 2, "b": true}\r\n\n'
    dataset = engine.create_dataset("lines", "alice", format=DatasetFormat.JSON)
    version = engine.create_version(dataset.dataset_id, body)
    sample = sample_records(engine.store, version)
    expected = [json.loads(line) for line in body.decode().split("\n") if line.strip()]
    assert sample.records == expected and sample.columns == ["a", "t", "b"]
    assert sample.total == version.row_count == 2


def test_a_large_version_is_sampled_uniformly_not_cut_at_the_first_rows(
    engine: DatasetVersioningEngine,
) -> None:
    rows = 20_000
    body = b"id,value\n" + b"".join(b'%d,"v\n%d"\n' % (i, i) for i in range(rows))
    dataset = engine.create_dataset("large", "alice")
    version = engine.create_version(dataset.dataset_id, body)
    sample = sample_records(engine.store, version, max_rows=500, seed=11)
    assert len(sample.records) == 500 and sample.total == rows
    everything = csv_dicts(body)
    assert all(
        everything[number] == record
        for number, record in zip(sample.row_numbers, sample.records, strict=True)
    )
    # Uniform over the file, not the head: each quarter holds about a quarter of the sample.
    quarters = [
        sum(1 for n in sample.row_numbers if q * rows // 4 <= n < (q + 1) * rows // 4)
        for q in range(4)
    ]
    assert all(90 <= count <= 160 for count in quarters), quarters
    again = sample_records(engine.store, version, max_rows=500, seed=11)
    assert again.row_numbers == sample.row_numbers
    other = sample_records(engine.store, version, max_rows=500, seed=12)
    assert other.row_numbers != sample.row_numbers


def overwrite(version: Any, data: bytes) -> None:
    DataStore().put(version.storage_key, data)


def test_overwritten_bytes_are_refused_on_every_read(engine: DatasetVersioningEngine) -> None:
    dataset = engine.create_dataset("tampered", "alice")
    version = engine.create_version(dataset.dataset_id, b"id,v\n1,2\n")
    assert read_verified(engine.store, version) == b"id,v\n1,2\n"
    overwrite(version, b"id,v\n1,3\n")
    with pytest.raises(ContentIntegrityError, match="not its sha256") as raised:
        read_verified(engine.store, version)
    assert raised.value.status == 409
    with pytest.raises(ContentIntegrityError):
        sample_records(engine.store, version)


def test_a_transformation_or_comparison_of_overwritten_bytes_is_409(http: Http) -> None:
    made = http.call("POST", "/datasets", {"name": "tampered-http"}).data
    dataset = made["dataset_id"]
    first = http.call("POST", f"/datasets/{dataset}/versions", {"data": "id,v\n1,2\n2,3\n"}).data
    http.call("POST", f"/datasets/{dataset}/versions", {"data": "id,v\n1,2\n"})
    from chalicelib.dataversion.service import get_versioning_engine

    stored = get_versioning_engine().get_version_by_id(first["version_id"])
    overwrite(stored, b"id,v\n9,9\n")
    spec = {"type": "filter", "predicates": [{"column": "v", "op": "gt", "value": 2}]}
    applied = http.call(
        "POST",
        f"/datasets/{dataset}/transformations",
        {"transformation": spec, "source_version_ids": [first["version_id"]]},
    )
    assert applied.status_code == 409 and applied.data["error"] == "content_integrity"
    compared = http.call("GET", f"/datasets/{dataset}/compare?a=1&b=2")
    assert compared.status_code == 409 and compared.data["error"] == "content_integrity"
    listed = http.call("GET", f"/datasets/{dataset}/versions").data
    assert listed["total"] == 2


def test_opaque_formats_are_not_read_as_records(engine: DatasetVersioningEngine) -> None:
    from chalicelib.core.errors import UnprocessableEntity

    dataset = engine.create_dataset("opaque", "alice", format=DatasetFormat.NUMPY)
    version = engine.create_version(dataset.dataset_id, b"\x93NUMPY")
    with pytest.raises(UnprocessableEntity, match="only csv and json"):
        sample_records(engine.store, version)
