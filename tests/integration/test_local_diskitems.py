"""The local stack's traffic tables kept in SQLite (``synapse_local.diskitems``): every request
answers as moto's own dict does, memory no longer grows with the outcomes stored, and snapshots
and restores keep every item.

Memory is counted with tracemalloc in bytes, never timed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.dynamodb.models import dynamodb_backends

from chalicelib.abtesting.models import Outcome
from chalicelib.abtesting.outcomes_repository import OutcomeDedupTable, OutcomeStore
from synapse_local import diskitems
from synapse_local.persistence import Persistence

ACCOUNT = "123456789012"
REGION = "us-east-1"
KEYS = [f"k{i}" for i in range(8)]


@pytest.fixture
def attached(aws: Any, tmp_path: Path) -> Iterator[Any]:
    """The ``aws`` fixture with the traffic tables moved to SQLite (as the local stack does)."""
    backend = dynamodb_backends[ACCOUNT][REGION]
    moved = diskitems.attach(backend, tmp_path / "tables")
    try:
        yield backend, moved
    finally:
        diskitems.detach_all()


def test_only_the_hash_key_traffic_tables_move_to_sqlite(attached: Any) -> None:
    backend, moved = attached
    assert sorted(moved) == sorted(
        name for name in backend.tables if name.endswith(diskitems.TRAFFIC_TABLES)
    )
    assert OutcomeDedupTable.Meta.table_name in moved
    for name, table in backend.tables.items():
        assert isinstance(table.items, diskitems.DiskItems) == (name in moved)


# ---- the same answers as moto's dict, on random requests ----------------------------------


def _twin_tables(client: Any, prefix: str) -> tuple[str, str]:
    """A traffic-named table (moved to SQLite) and a plain twin (moto's dict)."""
    names = (f"{prefix}-outcome-dedup", f"{prefix}-plain")
    for name in names:
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    return names


def _request(rng: random.Random) -> tuple[str, dict[str, Any]]:
    key = {"pk": {"S": rng.choice(KEYS)}}
    kind = rng.choice(["put", "put_new", "update", "update_if", "delete", "get", "transact"])
    if kind in ("put", "put_new"):
        body: dict[str, Any] = {"Item": {**key, "v": {"N": str(rng.randint(0, 9))},
                                         "b": {"B": bytes([rng.randint(0, 255)] * 3)}}}  # fmt: skip
        if kind == "put_new":
            body["ConditionExpression"] = "attribute_not_exists(pk)"
        return "put_item", body
    if kind.startswith("update"):
        body = {"Key": key, "UpdateExpression": "ADD n :one SET s = :s",
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":s": {"S": rng.choice(KEYS)}},
                "ReturnValues": "ALL_NEW"}  # fmt: skip
        if kind == "update_if":
            body["ConditionExpression"] = "attribute_exists(pk)"
        return "update_item", body
    if kind == "delete":
        return "delete_item", {"Key": key, "ReturnValues": "ALL_OLD"}
    if kind == "get":
        return "get_item", {"Key": key, "ConsistentRead": True}
    actions = []
    for _ in range(rng.randint(1, 3)):
        other = {"pk": {"S": rng.choice(KEYS)}}
        if other in [next(iter(a.values()))["Key"] for a in actions]:
            continue
        if rng.random() < 0.5:
            add = {"Key": other, "UpdateExpression": "ADD n :one",
                   "ExpressionAttributeValues": {":one": {"N": "1"}}}  # fmt: skip
            actions.append({"Update": add})
        else:
            check = {"Key": other, "ConditionExpression": "attribute_exists(pk)"}
            actions.append({"ConditionCheck": check})
    return "transact_write_items", {"TransactItems": actions}


def _send(client: Any, table: str, method: str, body: dict[str, Any]) -> Any:
    if method == "transact_write_items":
        body = {"TransactItems": [
            {kind: {"TableName": table, **action}}
            for entry in body["TransactItems"] for kind, action in entry.items()
        ]}  # fmt: skip
    else:
        body = {"TableName": table, **body}
    try:
        answer = getattr(client, method)(**body)
    except client.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"]
    answer.pop("ResponseMetadata", None)
    answer.pop("ConsumedCapacity", None)  # names the table
    return answer


def _scan(client: Any, table: str) -> list[Any]:
    return sorted(client.scan(TableName=table, ConsistentRead=True)["Items"], key=repr)


def test_a_sqlite_kept_table_answers_every_request_as_moto_dict_does(attached: Any) -> None:
    backend, _ = attached
    client = boto3.client("dynamodb", region_name=REGION)
    kept, plain = _twin_tables(client, "twin")
    diskitems.attach(backend, diskitems._attached[0][1].path.parent)
    assert isinstance(backend.tables[kept].items, diskitems.DiskItems)
    assert not isinstance(backend.tables[plain].items, diskitems.DiskItems)
    rng = random.Random(17)
    for step in range(300):
        method, body = _request(rng)
        assert _send(client, kept, method, body) == _send(client, plain, method, body), step
        if step % 25 == 0:
            assert _scan(client, kept) == _scan(client, plain), step
    assert _scan(client, kept) == _scan(client, plain)
    assert client.describe_table(TableName=kept)["Table"]["ItemCount"] == len(_scan(client, plain))


def test_a_failed_update_is_written_back_as_moto_left_it(attached: Any) -> None:
    client = boto3.client("dynamodb", region_name=REGION)
    backend, _ = attached
    kept, plain = _twin_tables(client, "fail")
    diskitems.attach(backend, diskitems._attached[0][1].path.parent)
    for table in (kept, plain):
        client.put_item(TableName=table, Item={"pk": {"S": "a"}, "s": {"S": "text"}})
        with contextlib.suppress(client.exceptions.ClientError):  # ADD to a string fails
            client.update_item(
                TableName=table, Key={"pk": {"S": "a"}}, UpdateExpression="SET t = :t ADD s :one",
                ExpressionAttributeValues={":one": {"N": "1"}, ":t": {"S": "x"}},
            )  # fmt: skip
    assert _scan(client, kept) == _scan(client, plain)


# ---- memory --------------------------------------------------------------------------------


def _post(store: OutcomeStore, start: int, count: int) -> None:
    now = datetime.now(timezone.utc)
    for offset in range(start, start + count, 200):
        outcomes = [
            Outcome("control" if i % 2 else "treatment", f"r{i}", i % 7 != 0, 12.5 + i % 40)
            for i in range(offset, offset + 200)
        ]
        store.record("exp-disk", outcomes, now)


# moto's dict kept about 1.2 KB per outcome (1.2 MB per 1,000); in SQLite nothing per outcome
# stays in Python's memory beyond bounded caches.
MAX_RETAINED_PER_THOUSAND = 64 * 1024


def test_outcomes_stored_in_sqlite_retain_no_memory_per_outcome(attached: Any) -> None:
    backend, _ = attached
    store = OutcomeStore()
    _post(store, 0, 1000)  # clients, parsers, SQLite pages warmed up
    retained = []
    tracemalloc.start()
    try:
        for round_number in range(1, 5):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            _post(store, round_number * 1000, 1000)
            gc.collect()
            retained.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    # The first rounds still fill bounded caches (parsed conditions, SQLite's page cache).
    assert max(retained[-2:]) <= MAX_RETAINED_PER_THOUSAND, retained
    assert max(retained) <= 4 * MAX_RETAINED_PER_THOUSAND, retained
    dedup = backend.tables[OutcomeDedupTable.Meta.table_name].items
    assert len(dedup) == 5000  # every dedup record kept, each readable by its key
    # A repeat of any stored request id is still a duplicate.
    receipt = store.record(
        "exp-disk", [Outcome("control", "r4999", True, 1.0)], datetime.now(timezone.utc)
    )
    assert (receipt.accepted, receipt.duplicates) == (0, 1)


# ---- snapshots and restores ----------------------------------------------------------------


def _write_in_batches(client: Any, table: str, requests: list[dict[str, Any]]) -> None:
    for start in range(0, len(requests), 25):
        answer = client.batch_write_item(RequestItems={table: requests[start : start + 25]})
        assert not answer["UnprocessedItems"]


def test_a_snapshot_streams_sqlite_tables_and_a_restore_puts_every_item_back(
    attached: Any, tmp_path: Path
) -> None:
    backend, _ = attached
    client = boto3.client("dynamodb", region_name=REGION)
    dedup = OutcomeDedupTable.Meta.table_name
    # 2,500 items: more than one SQLite fetch (2,000) and one state.json batch (1,000); written
    # and deleted 25 to a request (the requests are not what is tested).
    _write_in_batches(client, dedup, [
        {"PutRequest": {"Item": {"pk": {"S": f"e#{index}"}, "variant_id": {"S": "control"},
                                 "blob": {"B": bytes([index % 256])}}}}
        for index in range(2500)
    ])  # fmt: skip
    keeper = Persistence(tmp_path / "state", REGION)
    keeper.save()
    saved = json.loads((tmp_path / "state" / "state.json").read_text())
    assert len(saved["dynamodb"][dedup]) == 2500
    expected = sorted(map(diskitems.item_text, backend.tables[dedup].items.values()))
    assert sorted(json.dumps(item, separators=(",", ":")) for item in saved["dynamodb"][dedup]) == (
        expected
    )
    _write_in_batches(
        client, dedup, [{"DeleteRequest": {"Key": {"pk": {"S": f"e#{i}"}}}} for i in range(2500)]
    )
    assert len(backend.tables[dedup].items) == 0
    assert keeper.restore_items(keeper.load() or {}) >= 2500
    got = client.get_item(TableName=dedup, Key={"pk": {"S": "e#300"}}, ConsistentRead=True)
    assert got["Item"]["blob"] == {"B": bytes([300 % 256])}
    assert len(backend.tables[dedup].items) == 2500


def test_detaching_gives_moto_its_dict_back_with_every_item(aws: Any, tmp_path: Path) -> None:
    backend = dynamodb_backends[ACCOUNT][REGION]
    client = boto3.client("dynamodb", region_name=REGION)
    dedup = OutcomeDedupTable.Meta.table_name
    client.put_item(TableName=dedup, Item={"pk": {"S": "before"}})
    diskitems.attach(backend, tmp_path)
    client.put_item(TableName=dedup, Item={"pk": {"S": "during"}})
    files = list(tmp_path.glob("*.sqlite"))
    assert files
    diskitems.detach_all()
    assert not isinstance(backend.tables[dedup].items, diskitems.DiskItems)
    assert {item["pk"]["S"] for item in _scan(client, dedup)} == {"before", "during"}
    assert not any(path.exists() for path in files)
