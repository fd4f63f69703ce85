"""HTTP routes for API keys (schemas in :mod:`chalicelib.auth.schemas`)."""

from __future__ import annotations

from typing import Any

from chalicelib.auth.schemas import CreateKeyBody, IssuedKeyOut, KeyList, WhoAmI
from chalicelib.auth.service import get_auth_service
from chalicelib.core.http import ApiBlueprint, RequestContext
from chalicelib.core.shaping import shaped

api = ApiBlueprint(__name__, tag="auth")


@api.route(
    "/auth/keys", "POST", role="admin", body=CreateKeyBody, response=IssuedKeyOut, status=201
)
def create_key(ctx: RequestContext) -> dict[str, Any]:
    """Create an API key; the token is returned once."""
    body: CreateKeyBody = ctx.body
    issued = get_auth_service().create_key(
        body.principal, list(body.roles), body.groups, body.description
    )
    return shaped(IssuedKeyOut, issued.key, token=issued.token)


@api.route("/auth/keys", "GET", role="admin", response=KeyList)
def list_keys(ctx: RequestContext) -> dict[str, Any]:
    """List API keys (metadata only)."""
    return shaped(KeyList, keys=get_auth_service().list_keys())


@api.route("/auth/keys/{key_id}", "DELETE", role="admin", status=204)
def revoke_key(ctx: RequestContext, key_id: str) -> None:
    """Revoke an API key."""
    get_auth_service().revoke_key(key_id)


@api.route("/auth/whoami", "GET", role="reader", response=WhoAmI)
def whoami(ctx: RequestContext) -> dict[str, Any]:
    """The caller's principal, roles and groups."""
    principal = ctx.principal
    assert principal is not None
    return shaped(WhoAmI, principal, roles=sorted(principal.roles), groups=sorted(principal.groups))
