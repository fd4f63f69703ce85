"""Who is calling: the authenticated principal and the roles it holds.

Pure data shared by every domain (the access rule in :mod:`chalicelib.core.access` and the HTTP
toolkit take it); issuing and checking API keys is the ``auth`` domain's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Role(str, Enum):
    """Roles, each including the ones below it: admin > writer > reader."""

    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {"reader": 1, "writer": 2, "admin": 3}[self.value]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        principal: Who the caller is (a user or service name).
        key_id: The API key used.
        roles: Granted roles.
        groups: Groups used for access control (:mod:`chalicelib.core.access`).
    """

    principal: str
    key_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)

    def has_role(self, role: str) -> bool:
        """Whether any granted role is at least ``role``."""
        needed = Role(role).rank
        return any(
            Role(granted).rank >= needed
            for granted in self.roles
            if granted in Role._value2member_map_
        )

    @property
    def is_admin(self) -> bool:
        return self.has_role("admin")
