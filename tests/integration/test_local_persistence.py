"""The local stack's snapshots in-process: what is saved, what is restored, what is skipped."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from synapse_client import Client
from synapse_local.persistence import ChangeTracker, Persistence
from tests.reliability.stack import running_stack


def test_a_restarted_stack_has_the_datasets_versions_bytes_queue_and_admin_token(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with running_stack(state_dir=state, flush_seconds=0.2, run_schedules=False) as first:
        api = Client(first.url, first.admin_token)
        dataset_id = api.create_dataset("kept")["dataset_id"]
        version = api.create_version(dataset_id, data="a,b\n1,2\n")
        token = first.admin_token
        assert first.persistence.save_if_changed() is True
        assert first.persistence.save_if_changed() is False  # nothing changed since
        api.list_datasets()
        assert first.persistence.save_if_changed() is False  # reads change nothing
        assert "kept across restarts; empty" in first.describe()
    saved = json.loads((state / "state.json").read_text())
    assert saved["format"] == 1 and any(saved["dynamodb"].values())
    with running_stack(state_dir=state, run_schedules=False, run_pumps=False) as second:
        api = Client(second.url, second.admin_token)
        assert second.admin_token == token
        assert api.get_version(dataset_id, 1)["sha256"] == version["sha256"]
        pulled = api.pull(dataset_id, 1, str(tmp_path / "back.csv"))
        assert (tmp_path / "back.csv").read_text() == "a,b\n1,2\n" and pulled["sha256"]
        assert "restored from" in second.describe()


def test_unknown_formats_are_ignored_and_garbage_blobs_are_collected(tmp_path: Path) -> None:
    keeper = Persistence(tmp_path, "us-east-1")
    assert keeper.load() is None
    (tmp_path / "state.json").write_text(json.dumps({"format": 99}))
    assert keeper.load() is None
    stray = tmp_path / "blobs" / "ab" / "abcdef"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    keeper._collect_garbage({"bucket": {}})
    assert not stray.exists()
    keeper.reset()
    assert not tmp_path.exists()


def test_the_change_tracker_counts_writes_but_not_reads_or_polls() -> None:
    seen: list[Any] = []
    tracker = ChangeTracker(lambda environ, start: seen.append(environ) or [b""])
    for method, target in [("GET", ""), ("POST", "DynamoDB_20120810.Query"),
                           ("POST", "AmazonSQS.ReceiveMessage"), ("POST", "AWSEvents.PutEvents"),
                           ("POST", "DynamoDB_20120810.PutItem"), ("PUT", "")]:  # fmt: skip
        tracker({"REQUEST_METHOD": method, "HTTP_X_AMZ_TARGET": target}, None)
    assert tracker.changes == 2 and len(seen) == 6


def _fresh_texts(region: str) -> dict[str, list[Any]]:
    """Every item of every table serialized from scratch (the oracle for cached texts)."""
    from synapse_local.persistence import _backend, _items_of

    backend = _backend("dynamodb", region)
    return {
        name: sorted((item.to_json()["Attributes"] for item in _items_of(table)), key=repr)
        for name, table in backend.tables.items()
    }


def test_snapshots_serialize_only_changed_items_and_match_a_full_serialization(
    aws: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    import random

    import boto3
    from moto.dynamodb.models.dynamo_type import Item

    from chalicelib.abtesting.outcomes_repository import MetricShardTable, OutcomeDedupTable

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dedup, metrics = OutcomeDedupTable.Meta.table_name, MetricShardTable.Meta.table_name
    keeper = Persistence(tmp_path, "us-east-1")
    serialized: list[Any] = []
    to_json = Item.to_json

    def counting(item: Any) -> Any:
        serialized.append(item)
        return to_json(item)

    for index in range(50):
        dynamodb.put_item(TableName=dedup, Item={"pk": {"S": f"old{index}"}})
    keeper._dump_tables()
    monkeypatch.setattr(Item, "to_json", counting)
    rng = random.Random(5)
    for step in range(60):
        key = f"k{rng.randint(0, 9)}"
        action = rng.choice(["put", "update", "delete", "transact"])
        if action == "put":
            dynamodb.put_item(TableName=dedup, Item={"pk": {"S": key}, "n": {"N": str(step)}})
        elif action == "delete":
            dynamodb.delete_item(TableName=dedup, Key={"pk": {"S": key}})
        else:
            update = {"TableName": metrics, "UpdateExpression": "ADD request_count :one",
                      "Key": {"experiment_id": {"S": "e"}, "shard_key": {"S": key}},
                      "ExpressionAttributeValues": {":one": {"N": "1"}}}  # fmt: skip
            if action == "update":
                dynamodb.update_item(**update)
            else:  # a cancelled transaction: the update is rolled back
                never = "attribute_not_exists(pk) AND attribute_exists(pk)"
                failing = {"TableName": dedup, "Item": {"pk": {"S": key}},
                           "ConditionExpression": never}  # fmt: skip
                update.pop("TableName")
                with contextlib.suppress(dynamodb.exceptions.TransactionCanceledException):
                    dynamodb.transact_write_items(
                        TransactItems=[
                            {"Update": {"TableName": metrics, **update}},
                            {"Put": failing},
                        ]
                    )
        serialized.clear()
        tables = keeper._dump_tables()
        assert len(serialized) <= 2  # what this step changed, never every item
        parsed = {name: sorted(map(json.loads, texts), key=repr) for name, texts in tables.items()}
        assert parsed == _fresh_texts("us-east-1")


def test_an_object_deleted_while_a_snapshot_is_taken_is_skipped_not_a_failed_save(
    aws: Any, tmp_path: Path
) -> None:
    import boto3

    from synapse_local.persistence import _backend

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="snapshot-race")
    for name in ("kept", "going"):
        s3.put_object(Bucket="snapshot-race", Key=name, Body=name.encode())
    keeper = Persistence(tmp_path, "us-east-1")
    bucket = _backend("s3", "us-east-1").buckets["snapshot-race"]
    bucket.keys["going"].dispose()  # as a DeleteObject racing the listing leaves it
    listed = list(bucket.keys.keys())

    class Deleting(type(bucket.keys)):  # type: ignore[misc]
        def keys(self) -> Any:  # listed, then deleted before the snapshot reads it
            return [*listed, "deleted-meanwhile"]

    bucket.keys.__class__ = Deleting
    objects = keeper._dump_buckets()["snapshot-race"]

    assert set(objects) == {"kept"}
    assert objects["kept"]["size"] == 4
