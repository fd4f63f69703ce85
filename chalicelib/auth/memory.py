"""API keys kept in memory: the :class:`~chalicelib.auth.ports.ApiKeyStore` for tests of the auth
logic without AWS (the pattern of Chalice's ``InMemoryTodoDB``). Same results and errors as the
DynamoDB repository (one contract suite runs against both)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime

from chalicelib.auth.models import ApiKey
from chalicelib.core.errors import Conflict


class InMemoryApiKeyRepository:
    """API keys in a dict, one lock around every operation (each is atomic, as in DynamoDB)."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[ApiKey, str]] = {}
        self._lock = threading.Lock()

    def create(self, key: ApiKey, token_hash: str) -> None:
        """Stores a new key.

        Raises:
            Conflict: The key id exists.
        """
        with self._lock:
            if key.key_id in self._keys:
                raise Conflict(f"API key {key.key_id} already exists")
            stored = dataclasses.replace(
                key, roles=list(key.roles), groups=list(key.groups), revoked_at=None
            )
            self._keys[key.key_id] = (stored, token_hash)

    def get(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its token hash, or ``None``."""
        with self._lock:
            found = self._keys.get(key_id)
        if found is None:
            return None
        key, token_hash = found
        return dataclasses.replace(key, roles=list(key.roles), groups=list(key.groups)), token_hash

    def revoke(self, key_id: str, when: datetime) -> bool:
        """Marks a key revoked; returns ``False`` if it does not exist."""
        with self._lock:
            found = self._keys.get(key_id)
            if found is None:
                return False
            key, token_hash = found
            if key.revoked_at is None:
                self._keys[key_id] = (dataclasses.replace(key, revoked_at=when), token_hash)
            return True

    def list(self) -> list[ApiKey]:
        """Every key."""
        with self._lock:
            keys = [key for key, _ in self._keys.values()]
        return [dataclasses.replace(k, roles=list(k.roles), groups=list(k.groups)) for k in keys]
