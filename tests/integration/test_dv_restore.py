"""Restoring an earlier version, and the lineage of re-uploads and identity transformations."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.core.clock import FixedClock
from chalicelib.core.events import RecordingEventBus
from chalicelib.dataversion.errors import SchemaEvolutionError
from chalicelib.dataversion.models import CompatibilityMode
from chalicelib.dataversion.storage import DataStore
from chalicelib.dataversion.versioning import DatasetVersioningEngine
from tests.conftest import Http, Tokens

A = "id,score\n1,0.5\n2,0.75\n"
B = "id,score\n1,0.5\n2,0.75\n3,1.0\n"


@pytest.fixture
def dataset(http: Http) -> str:
    made = http.call("POST", "/datasets", {"name": "restorable", "access_groups": ["ml"]})
    assert made.status_code == 201, made.data
    return made.data["dataset_id"]


def add(http: Http, dataset_id: str, data: str, **extra: Any) -> Any:
    return http.call("POST", f"/datasets/{dataset_id}/versions", {"data": data, **extra})


def objects(prefix: str) -> list[str]:
    from chalicelib.core import aws as clients
    from chalicelib.core.config import get_settings

    found = clients.client("s3").list_objects_v2(Bucket=get_settings().data_bucket, Prefix=prefix)
    return [item["Key"] for item in found.get("Contents", [])]


def test_restoring_makes_old_content_latest_without_copying_it(http: Http, dataset: str) -> None:
    first = add(http, dataset, A).data
    add(http, dataset, B)
    again = add(http, dataset, A)
    assert again.status_code == 200 and again.data["version_number"] == 1  # dedup, as promised
    stored_before = objects("cas/")
    restored = http.call("POST", f"/datasets/{dataset}/versions/1/restore")
    assert restored.status_code == 201, restored.data
    body = restored.data
    assert body["version_number"] == 3 and body["restored_from"] == first["version_id"]
    assert body["sha256"] == first["sha256"] and body["row_count"] == 2
    assert body["schema"] == first["schema"] and body["parent_version_ids"] == [first["version_id"]]
    assert objects("cas/") == stored_before  # the same stored object, no copy
    latest = http.call("GET", f"/datasets/{dataset}/versions?limit=10").data["versions"][-1]
    assert latest["version_id"] == body["version_id"]
    # Identical content now resolves to the restored version, the latest holding it.
    assert add(http, dataset, A).data["version_id"] == body["version_id"]
    lineage = http.call("GET", f"/lineage/{body['version_id']}").data["upstream"]
    assert [(e["parent_id"], e["transformation_type"]) for e in lineage["edges"]] == [
        (first["version_id"], "restored_from")
    ]


def test_restoring_the_latest_content_writes_nothing(http: Http, dataset: str) -> None:
    add(http, dataset, A)
    again = http.call("POST", f"/datasets/{dataset}/versions/1/restore")
    assert again.status_code == 200 and again.data["version_number"] == 1
    assert http.call("GET", f"/datasets/{dataset}/versions").data["total"] == 1


def test_restore_needs_write_access_and_a_known_version(
    http: Http, tokens: Tokens, dataset: str
) -> None:
    add(http, dataset, A)
    add(http, dataset, B)
    path = f"/datasets/{dataset}/versions/1/restore"
    assert http.call("POST", path, token=tokens.reader).status_code == 403
    assert http.call("POST", path, token=tokens.other_writer).status_code == 404
    missing = http.call("POST", f"/datasets/{dataset}/versions/9/restore")
    assert missing.status_code == 404 and missing.data["error"] == "dataset_version_not_found"
    assert http.call("GET", f"/datasets/{dataset}/versions").data["total"] == 2


def test_as_of_after_a_restore_answers_the_restored_content(aws: Any) -> None:
    clock = FixedClock()
    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus(), clock=clock)
    dataset = engine.create_dataset("timeline", "alice")
    first = engine.create_version(dataset.dataset_id, A)
    clock.advance(hours=1)
    engine.create_version(dataset.dataset_id, B)
    clock.advance(hours=1)
    outcome = engine.restore_version(dataset.dataset_id, first, "alice")
    clock.advance(hours=1)
    found = engine.version_at(dataset.dataset_id, clock.now())
    assert found.version_id == outcome.version.version_id and found.sha256 == first.sha256


def test_a_restore_is_checked_against_the_version_it_follows(aws: Any) -> None:
    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus())
    dataset = engine.create_dataset("strict", "alice", compatibility=CompatibilityMode.BACKWARD)
    first = engine.create_version(dataset.dataset_id, "id,a\n1,2\n")
    engine.create_version(dataset.dataset_id, "id\n1\n")  # drops a (backward-compatible)
    with pytest.raises(SchemaEvolutionError, match="required column 'a' was added"):
        engine.restore_version(dataset.dataset_id, first, "alice")


def test_a_re_upload_with_a_new_parent_records_the_edge(http: Http, dataset: str) -> None:
    parent = add(http, dataset, A).data
    child = add(http, dataset, B).data
    again = add(http, dataset, B, parent_version_id=parent["version_id"])
    assert again.status_code == 200 and again.data["version_id"] == child["version_id"]
    up = http.call("GET", f"/lineage/{child['version_id']}").data["upstream"]
    assert [e["parent_id"] for e in up["edges"]] == [parent["version_id"]]
    add(http, dataset, B, parent_version_id=parent["version_id"])  # twice: one edge
    up = http.call("GET", f"/lineage/{child['version_id']}").data["upstream"]
    assert len(up["edges"]) == 1


def test_a_transformation_whose_output_is_its_input_records_no_self_loop(
    http: Http, dataset: str
) -> None:
    source = add(http, dataset, A).data
    spec = {"type": "filter", "predicates": [{"column": "id", "op": "gt", "value": 0}]}
    applied = http.call(
        "POST",
        f"/datasets/{dataset}/transformations",
        {"transformation": spec, "source_version_ids": [source["version_id"]]},
    )
    assert applied.status_code == 201, applied.data
    lineage = http.call("GET", f"/lineage/{source['version_id']}?direction=both").data
    edges = lineage["upstream"]["edges"] + lineage["downstream"]["edges"]
    assert all(edge["parent_id"] != edge["child_id"] for edge in edges)
    assert edges == []


def test_content_equal_to_an_ancestor_does_not_close_a_cycle(http: Http, dataset: str) -> None:
    first = add(http, dataset, A).data
    second = add(http, dataset, B, parent_version_id=first["version_id"]).data
    back = add(http, dataset, A, parent_version_id=second["version_id"])
    assert back.status_code == 200 and back.data["version_id"] == first["version_id"]
    up = http.call("GET", f"/lineage/{first['version_id']}").data["upstream"]
    assert up["edges"] == []
