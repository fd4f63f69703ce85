"""The S3 trigger (objects landing under ``incoming/`` become dataset versions) and the
scheduled retention and garbage-collection job."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from chalicelib.core.observability import logger
from chalicelib.dataversion.ingest import IngestOutcome


def s3_records(event: Any) -> list[tuple[str, str | None]]:
    """(decoded key, S3 version id) of every record of a Chalice ``S3Event`` or raw event dict."""
    raw = event.to_dict() if hasattr(event, "to_dict") else event
    found = []
    for record in raw.get("Records", []):
        s3_object = record.get("s3", {}).get("object", {})
        found.append((unquote_plus(s3_object.get("key", "")), s3_object.get("versionId")))
    return found


def handle_s3_event(event: Any) -> list[IngestOutcome]:
    """Ingests every object in an S3 notification (idempotent; safe to deliver again).

    Transient AWS failures propagate so that the trigger retries the event.
    """
    from chalicelib.dataversion.service import get_versioning_engine

    engine = get_versioning_engine()
    outcomes = []
    for key, version_id in s3_records(event):
        outcome = engine.ingest_object(key, version_id)
        logger.info(
            "dataset ingest",
            extra={
                "key": key,
                "status": outcome.status,
                "version_id": outcome.version.version_id if outcome.version else None,
            },
        )
        outcomes.append(outcome)
    return outcomes


def run_retention() -> dict[str, int]:
    """The scheduled lifecycle job: applies every dataset's retention policy, then collects
    stored objects no live version points to (older than ``SYNAPSE_GC_GRACE_SECONDS``,
    default one day)."""
    import os
    from datetime import timedelta

    from chalicelib.dataversion.service import get_versioning_engine

    engine = get_versioning_engine()
    engine.repository.index_unlisted()  # datasets stored before the listing index
    deleted = 0
    for dataset in engine.list_datasets():
        deleted += len(engine.lifecycle.apply_retention(dataset))
    grace = timedelta(seconds=float(os.environ.get("SYNAPSE_GC_GRACE_SECONDS", "86400")))
    collected = engine.lifecycle.collect_garbage(grace)
    logger.info(
        "dataset retention",
        extra={"versions_deleted": deleted, "objects_deleted": len(collected.deleted)},
    )
    return {"versions_deleted": deleted, "objects_deleted": len(collected.deleted)}
