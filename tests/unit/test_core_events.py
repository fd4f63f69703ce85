"""The EventBridge publisher: batching, retries of failed entries, the outbox and redelivery."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.core.events import Event, EventBridgeBus, EventOutboxTable, RecordingEventBus
from chalicelib.core.handlers import run_maintenance
from chalicelib.core.singleton import Lazy


class FlakyEvents:
    """A stand-in EventBridge client failing the first ``failures`` calls per entry."""

    def __init__(self, failures: int = 0, raise_first: int = 0) -> None:
        self.failures = failures
        self.raise_first = raise_first
        self.calls: list[list[dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append(Entries)
        if self.raise_first:
            self.raise_first -= 1
            raise ConnectionError("network down")
        if self.failures:
            self.failures -= 1
            return {
                "FailedEntryCount": len(Entries),
                "Entries": [{"ErrorCode": "ThrottlingException"} for _ in Entries],
            }
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "x"} for _ in Entries]}


def test_events_are_sent_in_batches_of_ten(aws: Any) -> None:
    client = FlakyEvents()
    bus = EventBridgeBus(client=client, backoff_seconds=0)
    bus.publish_many([Event("Thing", {"n": n}) for n in range(23)])
    assert [len(call) for call in client.calls] == [10, 10, 3]
    entry = client.calls[0][0]
    assert entry["DetailType"] == "Thing"
    assert json.loads(entry["Detail"])["n"] == 0


def test_failed_entries_are_retried_then_delivered(aws: Any) -> None:
    client = FlakyEvents(failures=2)
    bus = EventBridgeBus(client=client, backoff_seconds=0)
    bus.publish("ExperimentStarted", {"experiment_id": "e1"})
    assert len(client.calls) == 3
    assert list(EventOutboxTable.scan()) == []


def test_events_that_keep_failing_go_to_the_outbox_and_are_redelivered(aws: Any) -> None:
    client = FlakyEvents(failures=1, raise_first=2)
    bus = EventBridgeBus(client=client, backoff_seconds=0)
    bus.publish("DatasetVersionCreated", {"version_id": "v1"})
    kept = list(EventOutboxTable.scan())
    assert [item.detail_type for item in kept] == ["DatasetVersionCreated"]
    assert "ThrottlingException" in kept[0].last_error
    assert bus.redeliver_outbox() == 1
    assert list(EventOutboxTable.scan()) == []


def test_redelivery_keeps_events_that_fail_again(aws: Any) -> None:
    bus = EventBridgeBus(client=FlakyEvents(failures=10), backoff_seconds=0, attempts=1)
    bus.publish("X", {})
    assert bus.redeliver_outbox() == 0
    assert len(list(EventOutboxTable.scan())) == 1


def test_maintenance_handler_redelivers_through_the_shared_bus(aws: Any) -> None:
    from chalicelib.core.events import get_event_bus

    bus = EventBridgeBus(client=FlakyEvents(raise_first=3), backoff_seconds=0)
    bus.publish("Y", {})
    get_event_bus.override(EventBridgeBus(client=FlakyEvents(), backoff_seconds=0))
    assert run_maintenance() == {"events_redelivered": 1}
    get_event_bus.override(RecordingEventBus())
    assert run_maintenance() == {"events_redelivered": 0}


def test_real_eventbridge_put_through_moto(aws: Any) -> None:
    bus = EventBridgeBus()
    bus.publish("ModelCreated", {"model_id": "m"})
    assert list(EventOutboxTable.scan()) == []


def test_recording_bus_filters_by_type() -> None:
    bus = RecordingEventBus()
    bus.publish("A", {"x": 1})
    bus.publish("B", {})
    assert [e.detail for e in bus.of_type("A")] == [{"x": 1}]


def test_lazy_getter_builds_once_and_resets() -> None:
    built: list[int] = []
    getter = Lazy(lambda: built.append(1) or len(built))
    assert getter() == 1
    assert getter() == 1
    getter.reset()
    assert getter() == 2
