"""Rows by key for the in-memory repositories: one way to read, add and remove a row.

Every domain's in-memory repository keeps its entities in dicts under its own lock and must
behave like the DynamoDB one: a missing id raises the domain's not-found error, a taken id is a
:class:`~chalicelib.core.errors.Conflict`, and what a caller gets back is a copy it may change
without changing what is stored. :class:`Rows` is that dict; the caller still holds its lock.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from typing import TypeVar

from chalicelib.core.errors import Conflict

__all__ = ["Rows"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Rows(dict[K, V]):
    """A dict of stored rows whose reads are deep copies.

    Args:
        missing: Builds the error raised for a key that is not stored (the domain's
            not-found error, with its message).
    """

    def __init__(self, missing: Callable[[K], Exception]) -> None:
        super().__init__()
        self._missing = missing

    def stored(self, key: K) -> V:
        """The stored row itself (for a change under the caller's lock).

        Raises:
            Exception: ``missing(key)`` when the key is not stored.
        """
        try:
            return self[key]
        except KeyError:
            raise self._missing(key) from None

    def read(self, key: K) -> V:
        """A copy of the stored row.

        Raises:
            Exception: ``missing(key)`` when the key is not stored.
        """
        return copy.deepcopy(self.stored(key))

    def add(self, key: K, row: V, taken: str) -> None:
        """Stores a new row (the caller passes the copy to keep).

        Raises:
            Conflict: The key is already stored; ``taken`` is the message.
        """
        if key in self:
            raise Conflict(taken)
        self[key] = row

    def remove(self, key: K) -> V:
        """Removes and returns the stored row.

        Raises:
            Exception: ``missing(key)`` when the key is not stored.
        """
        row = self.stored(key)
        del self[key]
        return row
