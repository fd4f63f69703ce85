"""Event-handler bodies for the cross-cutting scheduled work declared in ``app.py``."""

from __future__ import annotations

from chalicelib.core.events import EventBridgeBus, get_event_bus


def run_maintenance() -> dict[str, int]:
    """Redelivers outboxed events; returns counts for the log."""
    bus = get_event_bus()
    delivered = bus.redeliver_outbox() if isinstance(bus, EventBridgeBus) else 0
    return {"events_redelivered": delivered}
