"""Auth domain: roles, principals and API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chalicelib.core.principal import Principal, Role

__all__ = ["ApiKey", "Principal", "Role"]


@dataclass(frozen=True)
class ApiKey:
    """Stored API key metadata (the token itself is never stored, only its sha256).

    Attributes:
        key_id: Public id of the key.
        principal: Owner of the key.
        roles: Granted roles.
        groups: Access groups.
        created_at: Creation time (UTC).
        revoked_at: Revocation time, if revoked.
        description: Free text.
    """

    key_id: str
    principal: str
    roles: list[str]
    groups: list[str]
    created_at: datetime
    revoked_at: datetime | None = None
    description: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
