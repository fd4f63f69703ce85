"""Lifecycle events on the EventBridge bus.

Every domain publishes through an :class:`EventBus`. The EventBridge implementation batches
``put_events`` (10 entries a call), retries the entries EventBridge reports as failed with
backoff, and writes what still failed to an outbox table that the scheduled handler redelivers,
so an event is never silently lost.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pynamodb.attributes import UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from chalicelib.core import aws, jsonutil
from chalicelib.core.clock import utc_now
from chalicelib.core.config import get_settings
from chalicelib.core.observability import logger
from chalicelib.core.singleton import lazy
from chalicelib.core.tables import meta

MAX_ENTRIES_PER_CALL = 10


@dataclass(frozen=True)
class Event:
    """One lifecycle event.

    Attributes:
        detail_type: The event name, e.g. ``ExperimentStarted``.
        detail: JSON-serializable payload.
        time: When it happened (UTC).
        event_id: Unique id, also the idempotency key consumers can use.
    """

    detail_type: str
    detail: dict[str, Any]
    time: datetime = field(default_factory=utc_now)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class EventBus(Protocol):
    """Publishes lifecycle events."""

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Publishes one event."""
        ...

    def publish_many(self, events: list[Event]) -> None:
        """Publishes several events (batched)."""
        ...


class RecordingEventBus:
    """An in-memory bus for tests and library use: keeps every event in ``events``."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Records one event."""
        self.publish_many([Event(detail_type, detail)])

    def publish_many(self, events: list[Event]) -> None:
        """Records several events."""
        with self._lock:
            self.events.extend(events)

    def of_type(self, detail_type: str) -> list[Event]:
        """The recorded events named ``detail_type``."""
        return [event for event in self.events if event.detail_type == detail_type]


class EventOutboxTable(Model):
    """Events that EventBridge refused after retries, kept for redelivery."""

    Meta = meta("EVENT_OUTBOX_TABLE", "event-outbox")

    event_id = UnicodeAttribute(hash_key=True)
    detail_type = UnicodeAttribute()
    detail = UnicodeAttribute()
    occurred_at = UTCDateTimeAttribute()
    last_error = UnicodeAttribute(null=True)


class EventBridgeBus:
    """Publishes to an EventBridge bus with batching, retries and an outbox.

    Args:
        bus_name: Event bus name (default: ``EVENT_BUS_NAME``).
        source: The ``Source`` of every entry (default: ``EVENT_SOURCE``).
        client: A boto3 ``events`` client (default: the shared one).
        attempts: Tries per entry before it goes to the outbox.
        backoff_seconds: First retry delay; doubles each attempt.
    """

    def __init__(
        self,
        bus_name: str | None = None,
        source: str | None = None,
        client: Any = None,
        attempts: int = 3,
        backoff_seconds: float = 0.05,
    ) -> None:
        settings = get_settings()
        self.bus_name = bus_name or settings.event_bus_name
        self.source = source or settings.event_source
        self._client = client
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds

    @property
    def client(self) -> Any:
        return self._client or aws.client("events")

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Publishes one event."""
        self.publish_many([Event(detail_type, detail)])

    def publish_many(self, events: list[Event]) -> None:
        """Publishes events in batches of ten; failures after retries go to the outbox."""
        for start in range(0, len(events), MAX_ENTRIES_PER_CALL):
            self._publish_batch(events[start : start + MAX_ENTRIES_PER_CALL])

    def _entry(self, event: Event) -> dict[str, Any]:
        return {
            "Source": self.source,
            "DetailType": event.detail_type,
            "Detail": jsonutil.dumps({**event.detail, "event_id": event.event_id}),
            "EventBusName": self.bus_name,
            "Time": event.time,
        }

    def _publish_batch(self, batch: list[Event]) -> None:
        pending = list(batch)
        error = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_seconds * (2 ** (attempt - 1)))
            try:
                result = self.client.put_events(Entries=[self._entry(e) for e in pending])
            except Exception as exc:  # noqa: BLE001 - any transport failure is retried
                error = f"{type(exc).__name__}: {exc}"
                continue
            entries = result.get("Entries", [])
            failed = [e for e, r in zip(pending, entries, strict=False) if r.get("ErrorCode")]
            error = next((r.get("ErrorCode", "") for r in entries if r.get("ErrorCode")), "")
            pending = failed
            if not pending:
                return
        for event in pending:
            self._to_outbox(event, error)

    def _to_outbox(self, event: Event, error: str) -> None:
        logger.warning("event kept for redelivery", extra={"detail_type": event.detail_type})
        item = EventOutboxTable(
            event.event_id,
            detail_type=event.detail_type,
            detail=jsonutil.dumps(event.detail),
            occurred_at=event.time,
            last_error=error[:500],
        )
        try:
            item.save()
        except Exception as exc:  # noqa: BLE001 - the change this event reports is committed
            # Raising would report a committed change as failed (and a client retry would repeat
            # it); the full event goes to the error log instead, the last place it can be kept.
            logger.error(
                "event lost: EventBridge and the outbox both failed",
                extra={
                    "event_id": event.event_id,
                    "detail_type": event.detail_type,
                    "detail": item.detail,
                    "occurred_at": event.time.isoformat(),
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                },
            )

    def redeliver_outbox(self, limit: int = 100) -> int:
        """Tries again to publish events from the outbox; returns how many were delivered."""
        delivered = 0
        for item in EventOutboxTable.scan(limit=limit):
            event = Event(
                item.detail_type, json.loads(item.detail), item.occurred_at, item.event_id
            )
            try:
                result = self.client.put_events(Entries=[self._entry(event)])
            except Exception:  # noqa: BLE001 - stays in the outbox for the next run
                continue
            if not result.get("FailedEntryCount"):
                item.delete()
                delivered += 1
        return delivered


@lazy
def get_event_bus() -> EventBus:
    """The process-wide event bus (EventBridge)."""
    return EventBridgeBus()


# The DynamoDB tables this module declares (listed by chalicelib.domains).
TABLES = (EventOutboxTable,)
