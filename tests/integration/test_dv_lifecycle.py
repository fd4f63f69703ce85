"""Deleting versions (tombstones, 410), retention policies, content erasure and garbage
collection, including collection racing with uploads."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.core.clock import FixedClock
from chalicelib.core.events import RecordingEventBus
from chalicelib.dataversion.errors import DatasetVersionGone
from chalicelib.dataversion.models import RetentionPolicy
from chalicelib.dataversion.storage import DataStore, cas_key
from chalicelib.dataversion.versioning import DatasetVersioningEngine
from tests.conftest import Http, Tokens


def body(i: int) -> str:
    return f"id,score\n{i},0.5\n"


def stored(key: str) -> bytes | None:
    store = DataStore()
    return store.read(key) if store.exists(key) else None


@pytest.fixture
def dataset(http: Http) -> str:
    made = http.call("POST", "/datasets", {"name": "lifecycle", "access_groups": ["ml"]})
    assert made.status_code == 201, made.data
    for i in range(3):
        http.call("POST", f"/datasets/{made.data['dataset_id']}/versions", {"data": body(i)})
    return made.data["dataset_id"]


def test_a_deleted_version_is_a_tombstone_that_reads_410(http: Http, dataset: str) -> None:
    deleted = http.call("DELETE", f"/datasets/{dataset}/versions/2")
    assert deleted.status_code == 200, deleted.data
    assert deleted.data["deleted_by"] == "alice" and deleted.data["deleted_at"]
    for path in ("versions/2", "versions/2/content", f"versions/{deleted.data['version_id']}"):
        gone = http.call("GET", f"/datasets/{dataset}/{path}")
        assert gone.status_code == 410 and gone.data["error"] == "dataset_version_gone"
    listed = http.call("GET", f"/datasets/{dataset}/versions").data["versions"]
    assert [bool(v["deleted_at"]) for v in listed] == [False, True, False]
    lineage = http.call("GET", f"/lineage/{deleted.data['version_id']}").data
    assert lineage["upstream"]["nodes"][0]["deleted_at"]
    again = http.call("DELETE", f"/datasets/{dataset}/versions/2")
    assert again.status_code == 410
    # Identical content uploaded again is a new version (the tombstone released it).
    made = http.call("POST", f"/datasets/{dataset}/versions", {"data": body(1)})
    assert made.status_code == 201 and made.data["version_number"] == 4


def test_deleting_the_latest_makes_the_previous_live_version_latest(aws: Any) -> None:
    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus())
    dataset = engine.create_dataset("latest", "alice")
    first = engine.create_version(dataset.dataset_id, "id,a\n1,2\n")
    second = engine.create_version(dataset.dataset_id, "id\n1\n")
    engine.lifecycle.delete_version(second, "alice")
    assert engine.get_version(dataset.dataset_id).version_id == first.version_id
    # The next version is checked against the live latest (v1), numbered after the tombstone.
    third = engine.create_version(dataset.dataset_id, "id,a\n5,6\n")
    assert third.version_number == 3 and third.schema.columns == {"id": "int", "a": "int"}
    assert len(engine.event_bus.of_type("DatasetVersionDeleted")) == 1


def test_tagged_or_experiment_used_versions_are_not_deleted(
    http: Http, tokens: Tokens, dataset: str
) -> None:
    http.call("PUT", f"/datasets/{dataset}/tags/production", {"version": "1"})
    tagged = http.call("DELETE", f"/datasets/{dataset}/versions/1")
    assert tagged.status_code == 409 and "production" in tagged.data["message"]
    from chalicelib.dataversion.service import get_versioning_engine

    engine = get_versioning_engine()
    second = engine.get_version(dataset, version_number=2)
    engine.repository.record_usage(_usage(second, FixedClock()))
    used = http.call("DELETE", f"/datasets/{dataset}/versions/2")
    assert used.status_code == 409 and "experiment" in used.data["message"]
    assert (
        http.call("DELETE", f"/datasets/{dataset}/versions/3", token=tokens.reader).status_code
        == 403
    )
    outsider = http.call("DELETE", f"/datasets/{dataset}/versions/3", token=tokens.other_writer)
    assert outsider.status_code == 404


def test_retention_keeps_the_newest_tagged_and_used_versions(aws: Any) -> None:
    clock = FixedClock()
    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus(), clock=clock)
    dataset = engine.create_dataset("retained", "alice")
    versions = []
    for i in range(6):
        versions.append(engine.create_version(dataset.dataset_id, body(i)))
        clock.advance(days=10)
    engine.tags.move(versions[0], "golden", "alice")
    engine.repository.record_usage(_usage(versions[1], clock))
    policy = RetentionPolicy(keep_last=2, keep_days=35)
    dataset = engine.lifecycle.set_retention(dataset.dataset_id, policy)
    deleted = engine.lifecycle.apply_retention(dataset)
    # Now is 60 days after v1: v6, v5 are the 2 newest; v4 is 30 days old (< 35); v1 is
    # tagged; v2 was used; v3 (40 days old) is kept by nothing and deleted.
    assert [v.version_number for v in deleted] == [3]
    assert deleted[0].deleted_by == "retention"
    assert engine.lifecycle.apply_retention(dataset) == []
    assert (
        engine.lifecycle.apply_retention(engine.lifecycle.set_retention(dataset.dataset_id, None))
        == []
    )


def _usage(version: Any, clock: FixedClock) -> Any:
    from chalicelib.dataversion.models import DatasetUsage

    return DatasetUsage(
        "exp-1", version.dataset_id, version.version_id, "training", "a", clock.now()
    )


def test_retention_policy_over_http_and_the_scheduled_job(http: Http, dataset: str) -> None:
    bad = http.call("PUT", f"/datasets/{dataset}/retention", {"keep_last": 0})
    assert bad.status_code == 400
    made = http.call("PUT", f"/datasets/{dataset}/retention", {"keep_last": 1})
    assert made.status_code == 200 and made.data["retention"] == {"keep_last": 1, "keep_days": None}
    from chalicelib.dataversion.handlers import run_retention

    assert run_retention()["versions_deleted"] == 2
    listed = http.call("GET", f"/datasets/{dataset}/versions").data["versions"]
    assert [bool(v["deleted_at"]) for v in listed] == [True, True, False]


def test_a_retention_policy_of_two_nulls_keeps_every_version(http: Http, dataset: str) -> None:
    made = http.call("PUT", f"/datasets/{dataset}/retention", {"keep_last": 1})
    assert made.status_code == 200 and made.data["retention"] == {"keep_last": 1, "keep_days": None}
    cleared = http.call(
        "PUT", f"/datasets/{dataset}/retention", {"keep_last": None, "keep_days": None}
    )
    assert cleared.status_code == 200, cleared.data
    assert cleared.data["retention"] is None
    assert http.call("GET", f"/datasets/{dataset}").data["retention"] is None
    from chalicelib.dataversion.handlers import run_retention

    assert run_retention()["versions_deleted"] == 0
    listed = http.call("GET", f"/datasets/{dataset}/versions").data["versions"]
    assert [bool(v["deleted_at"]) for v in listed] == [False, False, False]


def test_garbage_collection_deletes_only_what_no_live_version_points_to(aws: Any) -> None:
    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus())
    one = engine.create_dataset("one", "alice")
    two = engine.create_dataset("two", "alice")
    shared_a = engine.create_version(one.dataset_id, body(1))
    engine.create_version(two.dataset_id, body(1))  # the same stored object
    only = engine.create_version(one.dataset_id, body(2))
    engine.lifecycle.delete_version(shared_a, "alice")
    engine.lifecycle.delete_version(only, "alice")
    young = engine.lifecycle.collect_garbage(timedelta(hours=1))
    assert young.deleted == []  # within the grace period
    collected = engine.lifecycle.collect_garbage(timedelta(0))
    assert collected.deleted == [only.storage_key]
    assert stored(shared_a.storage_key) == body(1).encode()  # still used by dataset two


def test_erasure_removes_the_content_from_every_dataset(
    http: Http, tokens: Tokens, dataset: str
) -> None:
    other = http.call("POST", "/datasets", {"name": "copy"}).data["dataset_id"]
    http.call("POST", f"/datasets/{other}/versions", {"data": body(0)})
    http.call("PUT", f"/datasets/{dataset}/tags/production", {"version": "1"})
    digest = hashlib.sha256(body(0).encode()).hexdigest()
    assert http.call("POST", f"/content/{digest}/erase", token=tokens.writer).status_code == 403
    erased = http.call("POST", f"/content/{digest}/erase", token=tokens.admin)
    assert erased.status_code == 200, erased.data
    assert len(erased.data["deleted_version_ids"]) == 2
    assert erased.data["deleted_objects"] == [cas_key(digest)]
    assert stored(cas_key(digest)) is None
    assert http.call("GET", f"/datasets/{dataset}/versions/1").status_code == 410
    assert http.call("GET", f"/datasets/{other}/versions/1").status_code == 410
    assert http.call("POST", "/content/nothex/erase", token=tokens.admin).status_code == 400


def test_garbage_collection_racing_with_uploads_never_deletes_a_referenced_object(
    atomic_dynamodb: None,
) -> None:
    """Ten contents are uploaded to a scratch dataset and deleted again, three times each, so
    their stored objects keep becoming collection candidates, while collections run with no
    grace period and a second dataset uploads each content three times (sharing the object),
    deleting the first two. At the end each content's last version in the second dataset is
    live and its object exists and hashes to its sha256."""
    import random

    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus())
    scratch = engine.create_dataset("racing-scratch", "alice")
    kept = engine.create_dataset("racing-kept", "alice")
    stop = threading.Event()
    rounds = [("scratch", i % 10) for i in range(30)] + [("kept", i) for i in range(10)]
    random.Random(5).shuffle(rounds)

    def upload(round_: tuple[str, int]) -> None:
        target, content = round_
        if target == "kept":  # three versions in turn; the first two deleted again
            for turn in range(3):
                version = engine.create_version(kept.dataset_id, body(content))
                if turn < 2:
                    engine.lifecycle.delete_version(version, "k")
            return
        version = engine.create_version(scratch.dataset_id, body(content))
        with contextlib.suppress(DatasetVersionGone):
            engine.lifecycle.delete_version(version, "w")

    def collect() -> int:
        runs = 0
        while not stop.wait(0.05):
            engine.lifecycle.collect_garbage(timedelta(0))
            runs += 1
        return runs

    with ThreadPoolExecutor(max_workers=6) as pool:
        collectors = [pool.submit(collect) for _ in range(2)]
        try:
            list(pool.map(upload, rounds))
        finally:  # an upload that raises must fail the test, not leave the collectors running
            stop.set()
        assert all(c.result() > 0 for c in collectors)
    versions = [v for v in engine.repository.versions_descending(kept.dataset_id) if not v.deleted]
    assert len(versions) == 10
    for version in versions:
        data = stored(version.storage_key)
        assert data is not None, f"version {version.version_number}'s object was deleted"
        assert hashlib.sha256(data).hexdigest() == version.sha256


def no_version_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any scan of the versions table fails the test (the reference index is read instead)."""
    from chalicelib.dataversion.repository import DatasetVersionTable

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the versions table was scanned")

    monkeypatch.setattr(DatasetVersionTable, "scan", classmethod(refuse))


def test_erasure_and_garbage_collection_read_the_reference_index_not_a_scan(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus())
    assert engine.repository.index_references() == 0  # an empty table: the marker is written
    no_version_scan(monkeypatch)
    one = engine.create_dataset("one", "alice")
    two = engine.create_dataset("two", "alice")
    shared = engine.create_version(one.dataset_id, body(1))
    engine.create_version(two.dataset_id, body(1))
    only = engine.create_version(one.dataset_id, body(2))
    kept = engine.create_version(one.dataset_id, body(3))
    engine.lifecycle.delete_version(only, "alice")
    collected = engine.lifecycle.collect_garbage(timedelta(0))
    assert collected.deleted == [only.storage_key]
    assert stored(kept.storage_key) == body(3).encode()
    deleted, erased = engine.lifecycle.erase_content(shared.sha256, "admin")
    assert sorted(v.dataset_id for v in deleted) == sorted([one.dataset_id, two.dataset_id])
    assert erased.deleted == [shared.storage_key] and stored(shared.storage_key) is None
    assert engine.repository.live_versions_with_content(kept.sha256) == [
        engine.repository.get_version(one.dataset_id, kept.version_number)
    ]


def test_versions_stored_before_the_reference_index_are_indexed_once_before_collection(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.dataversion.repository import REFERENCES_MARKER, DatasetKeyTable

    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus())
    dataset = engine.create_dataset("old", "alice")
    old = engine.create_version(dataset.dataset_id, body(1))
    gone = engine.create_version(dataset.dataset_id, body(2))
    engine.lifecycle.delete_version(gone, "alice")
    # As stored before the index: no index items, no marker.
    for key in (f"obj#{old.storage_key}", f"cnt#{old.sha256}", REFERENCES_MARKER):
        DatasetKeyTable(key).delete()
    assert not engine.repository.referenced(old.storage_key)
    collected = engine.lifecycle.collect_garbage(timedelta(0))  # indexes first, then collects
    assert collected.deleted == [gone.storage_key]
    assert stored(old.storage_key) == body(1).encode()
    assert engine.repository.referenced(old.storage_key)
    assert engine.repository.live_versions_with_content(old.sha256) == [old]
    no_version_scan(monkeypatch)  # indexed once: later runs read the marker
    assert engine.repository.index_references() == 0


def test_a_stale_candidate_is_not_collected_once_a_version_references_it(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version that lands between the listing of candidates and the claim: the claim itself
    (conditional on the index listing no version) refuses the object."""
    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus())
    dataset = engine.create_dataset("late", "alice")
    version = engine.create_version(dataset.dataset_id, body(1))
    checked: list[str] = []

    def stale(key: str) -> bool:  # the first check answers as before the version existed
        checked.append(key)
        return len(checked) > 1

    monkeypatch.setattr(engine.repository, "referenced", stale)
    collected = engine.lifecycle.collect_garbage(timedelta(0))
    assert collected.deleted == [] and collected.kept == [version.storage_key]
    assert stored(version.storage_key) == body(1).encode()
