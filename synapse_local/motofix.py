"""Two fixes to moto's DynamoDB for the local stack and the tests.

**Atomicity.** moto applies a conditional write or a transaction as several unlocked Python steps,
so two threads of the moto server could both pass the same condition: lost updates that real
DynamoDB, which applies each request atomically, cannot produce. :func:`install` serializes
moto's DynamoDB request handling (one request at a time inside moto; the app is not serialized).

**Speed.** moto's ``transact_write_items`` backs up the whole table once per
item of the transaction (``copy.deepcopy(self.tables[name])`` inside the item loop), so a batch
of 50 outcomes copied the outcomes table 50 times and ``POST /experiments/{id}/outcomes`` got
slower with every outcome already stored (seconds per batch after a few thousand outcomes).

:func:`install` makes that backup happen once per table per transaction, with the same rollback
semantics. It only touches moto (the local stand-in for DynamoDB), never the app; every
:class:`~synapse_local.stack.LocalStack` installs it when it starts (``make run``, the demo,
the benches).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

_state = threading.local()


class _CopyOncePerTable:
    """Stands in for the ``copy`` module inside ``moto.dynamodb.models``."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def deepcopy(self, obj: Any, memo: Any = None) -> Any:
        backups = getattr(_state, "backups", None)
        if backups is None or not isinstance(obj, self._table_type):
            return copy.deepcopy(obj, memo)
        if id(obj) not in backups:
            backups[id(obj)] = copy.deepcopy(obj)
        return backups[id(obj)]


# Held by every DynamoDB request inside moto (and by the local stack's snapshots, which read
# moto's tables directly and so see them between two requests, never during one).
DYNAMODB_LOCK = threading.RLock()


def _serialize_requests() -> None:
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, "_serialized", False):
        return

    def call_action(self: Any) -> Any:
        with DYNAMODB_LOCK:
            return original(self)

    call_action._serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def install() -> bool:
    """Patches moto's DynamoDB (idempotent); returns whether the copy fix was newly installed."""
    from moto.dynamodb import models

    _serialize_requests()

    original = models.DynamoDBBackend.transact_write_items
    if getattr(original, "_copies_once", False):
        return False

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        _state.backups = {}
        try:
            return original(self, transact_items)
        finally:
            _state.backups = None

    transact_write_items._copies_once = True  # type: ignore[attr-defined]
    models.copy = _CopyOncePerTable(models.Table)  # type: ignore[assignment]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    return True
