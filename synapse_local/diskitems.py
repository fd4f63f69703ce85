"""The local stack's traffic-sized DynamoDB tables kept in SQLite instead of moto's memory.

Two tables grow with traffic, not with what users create: the outcome dedup records (one item
per outcome posted, kept 7 days as deployed, a TTL moto never applies) and the sticky bandit
assignments (one per user). In moto each such item is a Python object graph of about 1.2 KB
(the item, its attribute dict, a ``DynamoType`` per attribute and for the key, the strings),
plus its text in the snapshot cache: the local stack's RSS grew by about 1.5 MB per 1,000
outcomes, and every full garbage collection walked all of those objects, so posts slowed down
as outcomes accumulated (issue 17: 220 → 426 MiB and 332 → 499 ms from 10,000 to 150,000).

:class:`DiskItems` replaces such a table's ``items`` dict (moto's storage of a hash-key-only
table: hash ``DynamoType`` → ``Item``) with a mapping over one SQLite table of (key, DynamoDB
JSON), so the items live on disk, each is read back by its primary key (a B-tree lookup) and
memory no longer depends on how many there are. Nothing is dropped: every item stays readable,
conditional puts see it, scans and snapshots list it.

moto changes items in place (``update_item`` edits the ``Item`` it got from ``items``), so
objects handed out during a request are kept in a per-request map (one object per key: a
transaction's condition check and its write see the same item) and written back when the
request ends (:func:`settle`, called by :mod:`synapse_local.motofix` after every DynamoDB request
while moto's lock is held). A request that fails writes back what moto left in the table, as
moto's own dict would keep it; a cancelled transaction's undo log has put the old items back by
then. Each request's writes are one SQLite transaction.

Only the local stack uses it (:meth:`synapse_local.stack.LocalStack.start`); the tests' moto keeps
its dicts. The SQLite files are scratch: the saved state stays ``state.json``
(:mod:`synapse_local.persistence` streams these tables into it).
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

# Logical table names (the suffix after SYNAPSE_TABLE_PREFIX) kept on disk.
TRAFFIC_TABLES = ("outcome-dedup", "experiment-assignments")
# Rows fetched per round trip when a whole table is listed.
_FETCH = 2000

# (moto table, its store) for every table attach() moved; used under moto's DynamoDB lock.
_attached: list[tuple[Any, DiskItems]] = []


def item_text(item: Any) -> str:
    """An item's attributes as DynamoDB JSON (binary values as base64), as snapshots save them."""
    return json.dumps(item.to_json()["Attributes"], separators=(",", ":"), default=_base64)


def _base64(value: Any) -> str:
    """Binary attribute values (``B``, e.g. a version's compressed profile) as base64 text."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} cannot be saved")


def binary_restored(attributes: dict[str, Any]) -> dict[str, Any]:
    """Top-level ``B`` values back to the bytes :func:`item_text` saved as base64."""
    return {
        name: {"B": base64.b64decode(value["B"])}
        if set(value) == {"B"} and isinstance(value["B"], str)
        else value
        for name, value in attributes.items()
    }


def _key_text(key: Any) -> str:
    """A hash ``DynamoType`` as the text of its SQLite primary key (type and exact value)."""
    value = key.value
    if isinstance(value, bytes | bytearray):
        value = base64.b64encode(bytes(value)).decode("ascii")
    return json.dumps([key.type, value], separators=(",", ":"))


class DiskItems(MutableMapping[Any, Any]):
    """moto's ``items`` of a hash-key-only table, stored in SQLite.

    Args:
        path: The SQLite file (created; scratch, replaced at each start).
        hash_key_attr: The table's hash key attribute (to rebuild keys from stored items).
    """

    def __init__(self, path: Path, hash_key_attr: str) -> None:
        self.path = Path(path)
        self.hash_key_attr = hash_key_attr
        self.path.unlink(missing_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # scratch: state.json is what is kept
        self._db.execute("CREATE TABLE items (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID")
        # Objects handed out or stored during the current request (None: deleted), by key text.
        self._live: dict[str, tuple[Any, Any]] = {}
        self.writes = 0

    # ---- the mapping moto uses ----------------------------------------------------------------

    def _load(self, key: str) -> Any:
        row = self._db.execute("SELECT v FROM items WHERE k = ?", (key,)).fetchone()
        return None if row is None else self._item(row[0])

    def _item(self, text: str) -> Any:
        from moto.dynamodb.models.dynamo_type import DynamoType, Item

        attributes = binary_restored(json.loads(text))
        return Item(DynamoType(attributes[self.hash_key_attr]), None, attributes)

    def __getitem__(self, key: Any) -> Any:
        text = _key_text(key)
        if text in self._live:
            item = self._live[text][1]
        else:
            item = self._load(text)
            if item is not None:
                self._live[text] = (key, item)
        if item is None:
            raise KeyError(key)
        return item

    def __setitem__(self, key: Any, item: Any) -> None:
        self._live[_key_text(key)] = (key, item)

    def __delitem__(self, key: Any) -> None:
        self[key]  # KeyError when absent  # noqa: B018
        self._live[_key_text(key)] = (key, None)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __len__(self) -> int:
        self.write_back()
        return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    def __iter__(self) -> Iterator[Any]:
        for item in self.values():
            yield item.hash_key

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        """Every item, read in key order (objects of this request as they are now)."""
        self.write_back()
        live = {text: item for text, (_, item) in self._live.items()}
        cursor = self._db.execute("SELECT k, v FROM items ORDER BY k")
        while rows := cursor.fetchmany(_FETCH):
            for key, text in rows:
                yield live.get(key) or self._item(text)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        """An in-memory copy (moto's table backups copy ``items``)."""
        import copy

        return {item.hash_key: copy.deepcopy(item, memo) for item in self.values()}

    # ---- write-back ---------------------------------------------------------------------------

    def write_back(self) -> None:
        """Writes the objects of this request as they are now (one SQLite transaction)."""
        if not self._live:
            return
        puts = [(text, item_text(item)) for text, (_, item) in self._live.items() if item]
        gone = [(text,) for text, (_, item) in self._live.items() if item is None]
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO items (k, v) VALUES (?, ?)", puts)
            self._db.executemany("DELETE FROM items WHERE k = ?", gone)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self.writes += len(puts) + len(gone)

    def settle(self) -> None:
        """Ends a request: writes back and forgets its objects."""
        self.write_back()
        self._live.clear()

    def texts(self) -> Iterator[str]:
        """Every item's DynamoDB JSON from one read snapshot (for ``state.json``).

        Call under moto's DynamoDB lock; the rows are read through a second connection inside
        one read transaction (WAL), so they stay those of that moment while requests go on.
        """
        self.write_back()
        reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        reader.execute("BEGIN")
        cursor = reader.execute("SELECT v FROM items ORDER BY k")
        first = cursor.fetchmany(_FETCH)  # the read transaction's snapshot starts here
        return _rows(reader, cursor, first)

    def close(self) -> None:
        """Closes the SQLite connection and deletes the file."""
        self._db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def _rows(reader: sqlite3.Connection, cursor: sqlite3.Cursor, first: list[Any]) -> Iterator[str]:
    try:
        rows = first
        while rows:
            for (text,) in rows:
                yield text
            rows = cursor.fetchmany(_FETCH)
    finally:
        reader.execute("COMMIT")
        reader.close()


def is_traffic_table(name: str) -> bool:
    """Whether a table is one of :data:`TRAFFIC_TABLES` (by its logical suffix)."""
    return any(name == suffix or name.endswith(f"-{suffix}") for suffix in TRAFFIC_TABLES)


def attach(backend: Any, directory: Path) -> list[str]:
    """Moves the traffic tables of a moto DynamoDB backend onto SQLite files in ``directory``
    and has every DynamoDB request settle them (:data:`synapse_local.motofix.AFTER_REQUEST`).

    Returns the names of the tables moved (hash-key-only ones; others keep moto's dict).
    """
    from synapse_local.motofix import AFTER_REQUEST, DYNAMODB_LOCK

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    moved = []
    with DYNAMODB_LOCK:
        if settle not in AFTER_REQUEST:
            AFTER_REQUEST.append(settle)
        for name, table in backend.tables.items():
            if isinstance(table.items, DiskItems) or not is_traffic_table(name):
                continue
            if table.range_key_attr is not None:
                continue
            store = DiskItems(directory / f"{name}.sqlite", table.hash_key_attr)
            for key, item in list(table.items.items()):
                store[key] = item
            store.settle()
            table.items = store
            _attached.append((table, store))
            moved.append(name)
    return moved


def settle() -> None:
    """Ends the current DynamoDB request for every attached table (under moto's lock)."""
    for _, store in _attached:
        if store._live:
            store.settle()


def detach_all() -> None:
    """Gives every attached table its items back as moto's dict and deletes the SQLite files
    (the stack stopped; a later stack in this process finds the tables as moto left them)."""
    from synapse_local.motofix import DYNAMODB_LOCK

    with DYNAMODB_LOCK:
        for table, store in _attached:
            items = {item.hash_key: item for item in store.values()}
            table.items = defaultdict(dict, items)
            store.close()
        _attached.clear()
