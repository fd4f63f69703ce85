"""``GET /health`` and ``GET /openapi.json`` (both public)."""

from __future__ import annotations

from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.core.http import ApiBlueprint, RequestContext
from chalicelib.core.shaping import shaped
from chalicelib.system.schemas import Health

api = ApiBlueprint(__name__, tag="system")

_openapi_cache: dict[str, Any] = {}


@api.route("/health", "GET", role=None, response=Health)
def health(ctx: RequestContext) -> dict[str, Any]:
    """Liveness check (no auth, no I/O)."""
    return shaped(Health, status="ok", stage=get_settings().stage)


@api.route("/openapi.json", "GET", role=None)
def openapi(ctx: RequestContext) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route."""
    if "doc" not in _openapi_cache:
        from chalicelib.core.openapi import build_openapi

        _openapi_cache["doc"] = build_openapi()
    return _openapi_cache["doc"]
