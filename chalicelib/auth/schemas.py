"""Request and response schemas of the API-key routes (the routes are in
:mod:`chalicelib.auth.api`); responses are built with
:func:`~chalicelib.core.shaping.shaped` from the domain objects."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from chalicelib.core.schema import Schema
from chalicelib.core.text import Name, Text

RoleName = Literal["reader", "writer", "admin"]


class CreateKeyBody(Schema):
    """Body of ``POST /auth/keys``."""

    principal: Name = Field(min_length=1, max_length=200)
    roles: list[RoleName] = Field(min_length=1)
    groups: list[Annotated[Name, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    description: Text = Field(default="", max_length=500)


class KeyOut(Schema):
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


class KeyList(Schema):
    """All keys."""

    keys: list[KeyOut]


class WhoAmI(Schema):
    """The authenticated caller."""

    principal: str
    key_id: str
    roles: list[str]
    groups: list[str]
