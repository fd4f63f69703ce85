"""Builders for data-versioning tests."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from chalicelib.core.clock import FixedClock
from chalicelib.dataversion.models import DatasetFormat, DatasetSchema, DatasetVersion
from chalicelib.dataversion.storage import cas_key


def stored_before_pyarrow_typing(
    engine: Any, dataset_id: str, body: bytes, columns: dict[str, str]
) -> DatasetVersion:
    """Version 1 as the service stored it before CSV cells were typed as pyarrow types them:
    its schema the old rule's, no mark of the typing rule."""
    digest = hashlib.sha256(body).hexdigest()
    engine.store.put(cas_key(digest), body)
    version = DatasetVersion(
        version_id=f"dv-{digest[:16]}",
        dataset_id=dataset_id,
        version_number=1,
        sha256=digest,
        size_bytes=len(body),
        storage_key=cas_key(digest),
        format=DatasetFormat.CSV,
        schema=DatasetSchema(columns=columns),
        row_count=body.count(b"\n") - 1,
        parent_version_ids=[],
        transformation_id=None,
        tags={},
        created_by="alice",
        created_at=FixedClock().now() - timedelta(days=30),
    )
    engine.repository.add_version(version)
    return version
