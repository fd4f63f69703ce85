"""Bodies of the A/B-testing event handlers declared in ``app.py``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from chalicelib.core.observability import logger


def _tick(event: Any) -> datetime | None:
    """The scheduled time of a CloudWatch/EventBridge event (Chalice object or raw dict)."""
    raw = getattr(event, "time", None) or (event.get("time") if isinstance(event, dict) else None)
    if isinstance(raw, datetime):
        return raw if raw.tzinfo else raw.replace(tzinfo=timezone.utc)
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def run_monitor(event: Any = None) -> dict[str, Any]:
    """The ``experiment_monitor`` schedule: fans running experiments out to the monitor queue.

    One index query for the running ids and one ``SendMessageBatch`` per 250 experiments; the
    checks themselves run in ``experiment_monitor_worker`` (:func:`handle_monitor_messages`).
    """
    from chalicelib.abtesting.rollback import get_rollback_manager

    report = get_rollback_manager().fan_out(_tick(event))
    if report["running"]:
        logger.info("experiment monitor fan-out", extra=report)
    return report


def _bodies(event: Any) -> list[str]:
    if isinstance(event, dict):
        return [record["body"] for record in event.get("Records", [])]
    return [record.body for record in event]


def handle_monitor_messages(event: Any) -> dict[str, Any]:
    """The ``experiment_monitor_worker``: checks the experiments each message names (judge and
    roll back, ramp, reweight). Malformed messages are dropped; a failing experiment is logged
    and retried on the next tick, so a message is never redelivered forever."""
    from chalicelib.abtesting.rollback import MonitorReport, get_rollback_manager

    manager = get_rollback_manager()
    total = MonitorReport()
    for body in _bodies(event):
        try:
            message = json.loads(body)
            tick = datetime.fromisoformat(str(message["tick"]).replace("Z", "+00:00"))
            ids = [str(i) for i in message["experiment_ids"]]
        except (ValueError, KeyError, TypeError):
            logger.warning("dropping malformed experiment monitor message")
            continue
        report = manager.check_experiments(ids, tick)
        total.checked += report.checked
        total.rolled_back += report.rolled_back
        total.ramped += report.ramped
        total.reweighted += report.reweighted
        total.errors += report.errors
        for outcome, count in report.outcomes.items():
            total.outcomes[outcome] = total.outcomes.get(outcome, 0) + count
    summary = total.as_dict()
    if total.rolled_back or total.ramped or total.reweighted or total.errors:
        logger.info("experiment monitor", extra=summary)
    return summary
