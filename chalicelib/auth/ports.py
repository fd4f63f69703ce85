"""The interface of API key storage: DynamoDB (:mod:`chalicelib.auth.repository`) when deployed,
memory (:mod:`chalicelib.auth.memory`) for tests of the auth logic that need no AWS.

Both implementations pass one contract suite (``tests/unit/test_repository_contracts.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from chalicelib.auth.models import ApiKey


class ApiKeyStore(Protocol):
    """Where API keys (their metadata and the sha256 of their token) are kept."""

    def create(self, key: ApiKey, token_hash: str) -> None:
        """Stores a new key.

        Raises:
            Conflict: The key id exists.
        """

    def get(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its token hash, or ``None``."""

    def revoke(self, key_id: str, when: datetime) -> bool:
        """Marks a key revoked (a second revocation keeps the first time); ``False`` if the key
        does not exist."""

    def list(self) -> list[ApiKey]:
        """Every key."""
