"""Response schema of ``GET /health`` (the routes are in :mod:`chalicelib.system.api`)."""

from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    """Liveness answer."""

    status: str
    stage: str
