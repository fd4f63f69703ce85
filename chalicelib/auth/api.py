"""HTTP routes for API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from chalicelib.auth.models import ApiKey
from chalicelib.auth.service import get_auth_service
from chalicelib.core.http import ApiBlueprint, RequestContext
from chalicelib.core.text import Name, Text

api = ApiBlueprint(__name__, tag="auth")

RoleName = Literal["reader", "writer", "admin"]


class CreateKeyBody(BaseModel):
    """Body of ``POST /auth/keys``."""

    principal: Name = Field(min_length=1, max_length=200)
    roles: list[RoleName] = Field(min_length=1)
    groups: list[Annotated[Name, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    description: Text = Field(default="", max_length=500)


class KeyOut(BaseModel):
    """API key metadata."""

    key_id: str
    principal: str
    roles: list[str]
    groups: list[str]
    description: str
    created_at: datetime
    revoked_at: datetime | None = None


class IssuedKeyOut(KeyOut):
    """A created key, with its token (shown only here)."""

    token: str


class KeyList(BaseModel):
    """All keys."""

    keys: list[KeyOut]


class WhoAmI(BaseModel):
    """The authenticated caller."""

    principal: str
    key_id: str
    roles: list[str]
    groups: list[str]


def _key_out(key: ApiKey) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "principal": key.principal,
        "roles": key.roles,
        "groups": key.groups,
        "description": key.description,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


@api.route(
    "/auth/keys", "POST", role="admin", body=CreateKeyBody, response=IssuedKeyOut, status=201
)
def create_key(ctx: RequestContext) -> dict[str, object]:
    """Create an API key; the token is returned once."""
    body: CreateKeyBody = ctx.body
    issued = get_auth_service().create_key(
        body.principal, list(body.roles), body.groups, body.description
    )
    return {**_key_out(issued.key), "token": issued.token}


@api.route("/auth/keys", "GET", role="admin", response=KeyList)
def list_keys(ctx: RequestContext) -> dict[str, object]:
    """List API keys (metadata only)."""
    return {"keys": [_key_out(key) for key in get_auth_service().list_keys()]}


@api.route("/auth/keys/{key_id}", "DELETE", role="admin", status=204)
def revoke_key(ctx: RequestContext, key_id: str) -> None:
    """Revoke an API key."""
    get_auth_service().revoke_key(key_id)


@api.route("/auth/whoami", "GET", role="reader", response=WhoAmI)
def whoami(ctx: RequestContext) -> dict[str, object]:
    """The caller's principal, roles and groups."""
    principal = ctx.principal
    assert principal is not None
    return {
        "principal": principal.principal,
        "key_id": principal.key_id,
        "roles": sorted(principal.roles),
        "groups": sorted(principal.groups),
    }
