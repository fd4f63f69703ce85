"""Response schema of ``GET /health`` (the routes are in :mod:`chalicelib.system.api`)."""

from __future__ import annotations

from chalicelib.core.schema import Schema


class Health(Schema):
    """Liveness answer."""

    status: str
    stage: str
