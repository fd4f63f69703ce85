"""Tags: named refs with their own history, accepted wherever a version is, with as_of."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.core.clock import FixedClock
from chalicelib.core.events import RecordingEventBus
from chalicelib.dataversion.storage import DataStore
from chalicelib.dataversion.versioning import DatasetVersioningEngine
from tests.conftest import Http, Tokens

V1 = "id,score\n1,0.5\n"
V2 = "id,score\n1,0.5\n2,0.7\n"
V3 = "id,score\n1,0.5\n2,0.7\n3,0.9\n"


@pytest.fixture
def dataset(http: Http) -> str:
    made = http.call("POST", "/datasets", {"name": "tagged", "access_groups": ["ml"]})
    assert made.status_code == 201, made.data
    for body in (V1, V2, V3):
        assert http.call("POST", f"/datasets/{made.data['dataset_id']}/versions", {"data": body})
    return made.data["dataset_id"]


def tag(http: Http, dataset: str, name: str, version: str, token: str | None = None) -> Any:
    return http.call("PUT", f"/datasets/{dataset}/tags/{name}", {"version": version}, token)


def test_a_tag_moves_with_its_history_and_is_accepted_wherever_a_version_is(
    http: Http, dataset: str
) -> None:
    first = tag(http, dataset, "production", "1")
    assert first.status_code == 200, first.data
    assert first.data["version_number"] == 1 and first.data["previous_version_id"] is None
    moved = tag(http, dataset, "production", "3")
    assert moved.data["previous_version_id"] == first.data["version_id"]
    assert moved.data["moved_by"] == "alice"
    got = http.call("GET", f"/datasets/{dataset}/versions/production").data
    assert got["version_number"] == 3
    content = http.call("GET", f"/datasets/{dataset}/versions/production/content")
    assert content.status_code == 200 and content.data["version_id"] == got["version_id"]
    compared = http.call("GET", f"/datasets/{dataset}/compare?a=1&b=production").data
    assert compared["row_count"] == {"a": 1, "b": 3, "diff": 2}
    # A tag can be pointed at another tag's version.
    assert tag(http, dataset, "golden-2026-11", "production").data["version_number"] == 3
    listed = http.call("GET", f"/datasets/{dataset}/tags").data["tags"]
    assert sorted((t["tag"], t["version_number"]) for t in listed) == [
        ("golden-2026-11", 3),
        ("production", 3),
    ]
    history = http.call("GET", f"/datasets/{dataset}/tags/production").data
    assert [m["version_number"] for m in history["history"]] == [1, 3]
    assert history["history"][1]["previous_version_id"] == first.data["version_id"]


def test_moving_a_tag_to_where_it_points_records_nothing(http: Http, dataset: str) -> None:
    tag(http, dataset, "stable", "2")
    tag(http, dataset, "stable", "2")
    assert len(http.call("GET", f"/datasets/{dataset}/tags/stable").data["history"]) == 1


def test_as_of_answers_where_a_tag_pointed_then(aws: Any) -> None:
    clock = FixedClock()
    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus(), clock=clock)
    dataset = engine.create_dataset("timeline", "alice")
    first = engine.create_version(dataset.dataset_id, V1)
    second = engine.create_version(dataset.dataset_id, V2)
    engine.tags.move(first, "production", "alice")
    before_move = clock.advance(hours=1)
    clock.advance(hours=1)
    engine.tags.move(second, "production", "bob")
    assert engine.tags.resolve(dataset.dataset_id, "production").version_id == second.version_id
    then = engine.tags.resolve(dataset.dataset_id, "production", as_of=before_move)
    assert then.version_id == first.version_id and then.moved_by == "alice"
    from chalicelib.dataversion.errors import DatasetVersionNotFound

    with pytest.raises(DatasetVersionNotFound, match="no tag 'production' at"):
        engine.tags.resolve(dataset.dataset_id, "production", as_of=before_move.replace(year=2000))


def test_as_of_on_a_tag_over_http(http: Http, dataset: str) -> None:
    first = tag(http, dataset, "production", "1").data
    tag(http, dataset, "production", "2")
    at = first["moved_at"].replace("+00:00", "Z")
    then = http.call("GET", f"/datasets/{dataset}/versions/production?as_of={at}").data
    assert then["version_number"] == 1
    shown = http.call("GET", f"/datasets/{dataset}/tags/production?as_of={at}").data
    assert shown["version_number"] == 1 and len(shown["history"]) == 2


def test_racing_moves_each_record_the_version_they_replaced(aws: Any) -> None:
    engine = DatasetVersioningEngine(store=DataStore(), event_bus=RecordingEventBus())
    dataset = engine.create_dataset("raced-tags", "alice")
    versions = [engine.create_version(dataset.dataset_id, f"id\n{i}\n") for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda v: engine.tags.move(v, "latest-good", "w"), versions))
    history = engine.tags.history(dataset.dataset_id, "latest-good")
    assert len(history) == 8 and history[0].previous_version_id is None
    # Each move replaced the version the previous move set: a chain, nothing lost.
    chain = {move.previous_version_id: move.version_id for move in history}
    assert len(chain) == 8
    current = engine.tags.resolve(dataset.dataset_id, "latest-good")
    walked, at = [], None
    while at in chain:
        at = chain[at]
        walked.append(at)
    assert walked[-1] == current.version_id and len(walked) == 8


@pytest.mark.parametrize("name", ["12", "dv-123", "-x", "a b", "x" * 129])
def test_names_that_read_as_versions_or_are_not_names_are_400(
    http: Http, dataset: str, name: str
) -> None:
    response = tag(http, dataset, name, "1")
    assert response.status_code == 400, response.data
    assert response.data["error"] == "invalid_request"
    assert f"{name[:40]!r} is not a tag name" in response.data["message"]  # quoted, cut at 40
    assert http.call("GET", f"/datasets/{dataset}/tags").data["tags"] == []


def test_tags_follow_the_dataset_access_rule(http: Http, tokens: Tokens, dataset: str) -> None:
    assert tag(http, dataset, "production", "1", tokens.reader).status_code == 403
    assert tag(http, dataset, "production", "1", tokens.other_writer).status_code == 404
    tag(http, dataset, "production", "1")
    assert http.call("GET", f"/datasets/{dataset}/tags", token=tokens.reader).status_code == 200
    for path in ("/tags", "/tags/production", "/versions/production"):
        assert (
            http.call("GET", f"/datasets/{dataset}{path}", token=tokens.other_writer).status_code
            == 404
        )


def test_unknown_tags_and_versions_are_404(http: Http, dataset: str) -> None:
    assert http.call("GET", f"/datasets/{dataset}/versions/nope").status_code == 404
    assert http.call("GET", f"/datasets/{dataset}/tags/nope").status_code == 404
    assert tag(http, dataset, "production", "9").status_code == 404
