"""GET /datasets reads the listing index (never a scan), a page at a time: every caller sees
exactly the datasets they may read, across pages, with nothing leaked or repeated."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.dataversion.repository import DatasetKeyTable, DatasetTable
from chalicelib.dataversion.service import get_versioning_engine
from tests.conftest import Http, Tokens


def create(http: Http, name: str, groups: list[str], token: str) -> str:
    response = http.call("POST", "/datasets", {"name": name, "access_groups": groups}, token=token)
    assert response.status_code == 201, response.data
    return response.data["dataset_id"]


def every_page(http: Http, token: str, limit: int) -> list[list[dict[str, Any]]]:
    pages, query = [], f"/datasets?limit={limit}"
    while True:
        response = http.call("GET", query, token=token)
        assert response.status_code == 200, response.data
        pages.append(response.data["datasets"])
        token_ = response.data["next_token"]
        if token_ is None:
            return pages
        query = f"/datasets?limit={limit}&next_token={token_}"


@pytest.fixture
def no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("GET /datasets scanned the datasets table")

    monkeypatch.setattr(DatasetTable, "scan", classmethod(refuse))


def test_two_groups_paginated_see_exactly_what_they_may_read_once_each(
    http: Http, tokens: Tokens, no_scan: None
) -> None:
    created: dict[str, str] = {}
    for i in range(7):
        created[create(http, f"ml-{i:02d}", ["ml"], tokens.writer)] = "ml"
    for i in range(6):
        created[create(http, f"other-{i:02d}", ["other"], tokens.other_writer)] = "other"
    for i in range(3):
        created[create(http, f"both-{i:02d}", ["ml", "other"], tokens.admin)] = "both"
    created[create(http, "admin-only", [], tokens.admin)] = "none"
    for who, token in (
        ("reader", tokens.reader),
        ("writer", tokens.writer),
        ("other_writer", tokens.other_writer),
        ("admin", tokens.admin),
    ):
        # What each caller may read, asked dataset by dataset (the access rule's own answer).
        readable = {
            ds
            for ds in created
            if http.call("GET", f"/datasets/{ds}", token=token).status_code == 200
        }
        for limit in (1, 3, 4, 100):
            pages = every_page(http, token, limit)
            listed = [d["dataset_id"] for page in pages for d in page]
            assert all(len(page) <= limit for page in pages)
            assert len(listed) == len(set(listed)), (who, limit, listed)  # never repeated
            assert set(listed) == readable, (who, limit)  # nothing leaked, nothing missed
            names = [d["name"] for page in pages for d in page]
            assert names == sorted(names)
    assert {created[ds] for ds in readable} == set(created.values())  # the admin saw all


def test_changing_groups_moves_a_dataset_between_listings(
    http: Http, tokens: Tokens, no_scan: None
) -> None:
    ds = create(http, "moving", ["ml"], tokens.writer)

    def listed(token: str) -> bool:
        return ds in {d["dataset_id"] for page in every_page(http, token, 2) for d in page}

    assert listed(tokens.reader) and not listed(tokens.other_writer)
    moved = http.call("PUT", f"/datasets/{ds}/access", {"access_groups": ["other"]})
    assert moved.status_code == 200, moved.data
    assert not listed(tokens.reader) and listed(tokens.other_writer)
    assert listed(tokens.writer)  # the owner still lists it
    http.call("PUT", f"/datasets/{ds}/access", {"access_groups": ["ml", "other"]})
    assert listed(tokens.reader) and listed(tokens.other_writer)


def test_a_token_the_listing_did_not_issue_is_400(http: Http) -> None:
    for token in ("nonsense!", "eyJ4IjogMX0=", "bnVsbA=="):
        response = http.call("GET", f"/datasets?next_token={token}")
        assert response.status_code == 400 and response.data["error"], response.data


def test_datasets_stored_before_the_index_are_listed_after_the_hourly_job(
    http: Http, tokens: Tokens, client: Any
) -> None:
    ds = create(http, "legacy", ["ml"], tokens.writer)
    for entry in list(DatasetKeyTable.scan(DatasetKeyTable.dataset_id == ds)):
        if entry.key.startswith("lst#"):
            entry.delete()
    DatasetTable(ds).update(actions=[DatasetTable.listed.remove()])
    assert ds not in {d["dataset_id"] for d in http.call("GET", "/datasets").data["datasets"]}
    assert get_versioning_engine().repository.index_unlisted() == 1
    assert get_versioning_engine().repository.index_unlisted() == 0  # marked: done once
    for token in (tokens.admin, tokens.reader, tokens.writer):
        listed = http.call("GET", "/datasets", token=token).data["datasets"]
        assert ds in {d["dataset_id"] for d in listed}
    assert ds not in {
        d["dataset_id"]
        for d in http.call("GET", "/datasets", token=tokens.other_writer).data["datasets"]
    }


def test_a_kept_table_without_the_listing_index_gets_it_when_tables_are_created(
    http: Http,
) -> None:
    from chalicelib.core import aws
    from chalicelib.core.tables import add_missing_indexes, create_all_tables

    dynamodb = aws.client("dynamodb")
    name = DatasetKeyTable.Meta.table_name

    def indexes() -> set[str]:
        table = dynamodb.describe_table(TableName=name)["Table"]
        return {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}

    dynamodb.update_table(
        TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "listing-index"}}]
    )
    assert "listing-index" not in indexes()  # a table kept from before the index
    assert name in create_all_tables([DatasetKeyTable])
    assert indexes() == {"listing-index"}
    assert add_missing_indexes(DatasetKeyTable) == []
    ds = http.call("POST", "/datasets", {"name": "after-upgrade"}).data["dataset_id"]
    assert ds in {d["dataset_id"] for d in http.call("GET", "/datasets").data["datasets"]}
