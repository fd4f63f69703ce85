"""The local stack's snapshots in-process: what is saved, what is restored, what is skipped."""

from __future__ import annotations

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
