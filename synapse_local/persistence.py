"""The local stack remembers: moto's state saved to a folder and restored at the next start.

What is kept (everything a user creates through the API):

* every DynamoDB item of every table (experiments, outcomes and their counters, datasets and
  versions, models, API keys, explanation cache and jobs, ...), as DynamoDB JSON;
* every S3 object of every bucket with its metadata and content type; the bytes are files named
  by their sha256 under ``blobs/`` (written once, however often the object is saved);
* every SQS message (pending S3 events and explanation jobs, and the dead-letter queues); a
  message that was being handled is visible again after a restart (at least once, as in AWS).

How: a WSGI wrapper around moto's server marks the state dirty on every request that changes it
(reads, polling and event publishing do not). A flusher thread writes a snapshot every
``flush_seconds`` (default 5) when dirty, and :meth:`Persistence.save` writes one on a clean stop.
A snapshot is read from moto's in-process backends while moto's DynamoDB requests are held
(``motofix.DYNAMODB_LOCK``), so tables are consistent with each other. Only items that changed
since the previous snapshot are serialized again (the rest keep their text), so the hold is a
pass over the items (about 0.1 s per 100,000) rather than their serialization (seconds), and a
long run does not slow every request down as its state grows. The traffic tables kept in SQLite
(:mod:`synapse_local.diskitems`: outcome dedup records, bandit assignments) are not held in memory
at all: their rows are read from one SQLite read snapshot taken under the same hold and streamed
into the file after it, so neither the hold nor the memory of a snapshot grows with the outcomes
posted. A snapshot is written atomically:
blobs first, then ``state.json`` by rename; blobs no snapshot needs are deleted afterwards. So a
``kill -9`` loses at most what changed in the last flush interval, never the folder.

Not kept: multipart uploads in progress (S3 forgets them; the client restarts such a push),
EventBridge events (delivered already or not at all), caches (rebuilt on use).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from synapse_local.diskitems import binary_restored, item_text, settle

log = logging.getLogger("synapse.local.persistence")

FORMAT = 1
ACCOUNT = "123456789012"
CHUNK = 1024 * 1024
# Requests that read or poll; everything else that is not a GET/HEAD changes state.
_READ_TARGETS = (
    "DynamoDB_20120810.GetItem",
    "DynamoDB_20120810.BatchGetItem",
    "DynamoDB_20120810.Query",
    "DynamoDB_20120810.Scan",
    "DynamoDB_20120810.TransactGetItems",
    "DynamoDB_20120810.Describe",
    "DynamoDB_20120810.List",
    "AmazonSQS.ReceiveMessage",
    "AmazonSQS.GetQueue",
    "AmazonSQS.ListQueues",
    "AmazonSQS.ChangeMessageVisibility",
    "AWSEvents.",
)


class ChangeTracker:
    """WSGI middleware over moto's server that notes requests which change state."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.changes = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            if not target.startswith(_READ_TARGETS):
                self.changes += 1
        return self.app(environ, start_response)


def _backend(service: str, region: str) -> Any:
    from moto.backends import get_backend

    backends = get_backend(service)[ACCOUNT]  # type: ignore[call-overload]
    return backends["global"] if service == "s3" else backends[region]


def _blob_path(root: Path, digest: str) -> Path:
    return root / "blobs" / digest[:2] / digest


class Persistence:
    """Saves and restores the local stack's moto state in ``directory``.

    Args:
        directory: The state folder (created 0700).
        region: The region the stack runs in.
        flush_seconds: Period of the background flush (when something changed).
    """

    def __init__(self, directory: Path, region: str, flush_seconds: float = 5.0) -> None:
        self.directory = Path(directory)
        self.region = region
        self.flush_seconds = flush_seconds
        self.tracker: ChangeTracker | None = None
        self._saved_changes = 0
        self._blobs: dict[tuple[str, str, str, int], str] = {}  # (bucket, key, etag, size)
        # id(item) → (item, revision, DynamoDB JSON text) from the last snapshot.
        self._item_texts: dict[int, tuple[Any, int, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.saves = 0

    @property
    def lock(self) -> threading.Lock:
        """Held while a snapshot is written (a memory report waits for it to end)."""
        return self._lock

    @property
    def state_file(self) -> Path:
        """The snapshot's index."""
        return self.directory / "state.json"

    def reset(self) -> None:
        """Deletes every saved state (``make run RESET=1``)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def has_state(self) -> bool:
        """Whether a snapshot exists."""
        return self.state_file.exists()

    # ------------------------------------------------------------------ tracking, flushing

    def track(self, moto_server: Any) -> None:
        """Wraps the running moto server's WSGI app to notice changes."""
        server = moto_server._server
        self.tracker = ChangeTracker(server.app)
        server.app = self.tracker

    def start_flusher(self) -> None:
        """Saves every ``flush_seconds`` while something changed."""
        self._thread = threading.Thread(target=self._run, name="local-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.save_if_changed()
            except Exception:  # noqa: BLE001 - a failed flush must not stop the stack
                log.exception("saving the local state failed; retrying next interval")

    def stop_flusher(self) -> None:
        """Stops the background flush."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def save_if_changed(self) -> bool:
        """Saves when a change was seen since the last save; returns whether it saved."""
        changes = self.tracker.changes if self.tracker else 0
        if changes == self._saved_changes and self.has_state():
            return False
        self.save()
        self._saved_changes = changes
        return True

    # ------------------------------------------------------------------ save

    def save(self) -> None:
        """Writes a snapshot (blobs first, then ``state.json`` atomically)."""
        from synapse_local.motofix import DYNAMODB_LOCK

        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            started = time.time()  # the snapshot holds every change completed before this
            with DYNAMODB_LOCK:
                tables = self._dump_tables()
            head = {
                "format": FORMAT,
                "saved_at": started,
                "region": self.region,
                "s3": self._dump_buckets(),
                "sqs": self._dump_queues(),
            }
            write_atomically(self.state_file, _state_chunks(head, tables))
            self._collect_garbage(head["s3"])
            self.saves += 1

    def _dump_tables(self) -> dict[str, list[str] | Iterator[str]]:
        """Every item of every table as DynamoDB JSON text (held under ``DYNAMODB_LOCK``).

        An item's text is kept from the previous snapshot while the item object is the same
        and :func:`~synapse_local.motofix.item_revision` says it was not updated in place
        since (puts and deletes replace objects), so a snapshot serializes only what changed
        and holds moto's DynamoDB for a pass over the items, not for their serialization.
        A table kept in SQLite gives an iterator over one read snapshot instead (its texts are
        stored already), consumed after the hold.
        """
        from synapse_local.diskitems import DiskItems
        from synapse_local.motofix import item_revision

        backend = _backend("dynamodb", self.region)
        previous, kept = self._item_texts, {}
        found: dict[str, list[str] | Iterator[str]] = {}
        for name, table in backend.tables.items():
            if isinstance(table.items, DiskItems):
                found[name] = table.items.texts()
                continue
            texts = []
            for item in _items_of(table):
                revision = item_revision(item)
                cached = previous.get(id(item))
                if cached is None or cached[0] is not item or cached[1] != revision:
                    cached = (item, revision, item_text(item))
                kept[id(item)] = cached
                texts.append(cached[2])
            found[name] = texts
        self._item_texts = kept
        return found

    def _dump_buckets(self) -> dict[str, dict[str, Any]]:
        backend = _backend("s3", self.region)
        found: dict[str, dict[str, Any]] = {}
        for name, bucket in list(backend.buckets.items()):
            objects = {}
            for key_name in list(bucket.keys.keys()):  # moto's items() fails on a delete
                key = bucket.keys.get(key_name)
                if key is None:
                    continue
                try:
                    blob = self._blob_of(name, key)
                except ValueError:
                    # Deleted or overwritten since the listing (moto closed its buffer): that
                    # request counted as a change, so the next flush saves the bucket as it is.
                    continue
                objects[key_name] = {
                    "blob": blob,
                    "size": key.size,
                    "metadata": dict(key.metadata),  # Content-Type included
                    "checksum": key.checksum_value,
                }
            found[name] = objects
        return found

    def _blob_of(self, bucket: str, key: Any) -> str:
        """The sha256 of an object's bytes, written under ``blobs/`` once."""
        identity = (bucket, key.name, key.etag, key.size)
        digest = self._blobs.get(identity)
        if digest is not None and _blob_path(self.directory, digest).exists():
            return digest
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".blob-")
        hasher = hashlib.sha256()
        try:
            with os.fdopen(handle, "wb") as out, key.lock:
                buffer = key._value_buffer
                buffer.seek(0)
                while chunk := buffer.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
            digest = hasher.hexdigest()
            target = _blob_path(self.directory, digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        self._blobs[identity] = digest
        return digest

    def _dump_queues(self) -> dict[str, list[dict[str, Any]]]:
        backend = _backend("sqs", self.region)
        found = {}
        for name, queue in list(backend.queues.items()):
            found[name] = [
                {"body": message.body, "attributes": message.message_attributes or {}}
                for message in list(queue._messages)
            ]
        return found

    def _collect_garbage(self, buckets: dict[str, dict[str, Any]]) -> None:
        needed = {entry["blob"] for objects in buckets.values() for entry in objects.values()}
        root = self.directory / "blobs"
        for path in root.glob("*/*") if root.exists() else []:
            if path.name not in needed:
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ restore

    def load(self) -> dict[str, Any] | None:
        """The saved snapshot, or ``None`` (none, or written by another format)."""
        if not self.has_state():
            return None
        state = json.loads(self.state_file.read_text(encoding="utf-8"))
        if state.get("format") != FORMAT:
            log.warning("ignoring %s: unknown format %s", self.state_file, state.get("format"))
            return None
        return state

    def restore_objects(self, state: dict[str, Any]) -> int:
        """Puts every saved bucket and object back (before the bootstrap subscribes the
        notifications, and without notifications: nothing is ingested twice)."""
        backend = _backend("s3", self.region)
        count = 0
        for bucket, objects in state.get("s3", {}).items():
            if bucket not in backend.buckets:
                backend.create_bucket(bucket, self.region)
            for key_name, entry in objects.items():
                value = _blob_path(self.directory, entry["blob"]).read_bytes()
                key = backend.put_object(
                    bucket, key_name, value, checksum_value=entry.get("checksum"),
                    disable_notification=True,
                )  # fmt: skip
                key.set_metadata(entry.get("metadata") or {})
                self._blobs[(bucket, key_name, key.etag, key.size)] = entry["blob"]
                count += 1
        return count

    def restore_items(self, state: dict[str, Any]) -> int:
        """Puts every saved item back into the (bootstrapped) tables."""
        backend = _backend("dynamodb", self.region)
        count = 0
        for name, items in state.get("dynamodb", {}).items():
            table = backend.tables.get(name)
            if table is None:
                log.warning("table %s no longer exists; %d saved items skipped", name, len(items))
                continue
            for attributes in items:
                table.put_item(binary_restored(attributes))
                count += 1
                if count % 1000 == 0:
                    settle()  # items kept in SQLite are written per 1,000, not all at once
        settle()
        return count

    def restore_messages(self, state: dict[str, Any]) -> int:
        """Sends every saved message again (into the bootstrapped queues)."""
        backend = _backend("sqs", self.region)
        count = 0
        for name, messages in state.get("sqs", {}).items():
            if name not in backend.queues:
                continue
            for message in messages:
                backend.send_message(name, message["body"], message.get("attributes") or None)
                count += 1
        return count

    def describe(self, counts: Iterable[int]) -> str:
        """One line for the start-up banner."""
        items, objects, messages = counts
        return (
            f"restored from {self.directory}: {items} items, {objects} objects, "
            f"{messages} queued messages"
        )


def _items_of(table: Any) -> list[Any]:
    """A table's items in storage order (moto's ``all_items`` sorts them: slow at 10^5)."""
    if table.range_key_attr:
        return [item for bucket in list(table.items.values()) for item in bucket.values()]
    return list(table.items.values())


def _state_chunks(
    head: dict[str, Any], tables: dict[str, list[str] | Iterator[str]]
) -> Iterator[bytes]:
    """``state.json`` in pieces: ``head`` plus ``"dynamodb": {table: [item, ...]}``."""
    yield (json.dumps(head)[:-1] + ', "dynamodb": {').encode()
    for index, (name, texts) in enumerate(tables.items()):
        yield f"{', ' if index else ''}{json.dumps(name)}: [".encode()
        batch: list[str] = []
        separator = ""
        for text in texts:
            batch.append(text)
            if len(batch) == 1000:
                yield (separator + ",".join(batch)).encode()
                batch, separator = [], ","
        if batch:
            yield (separator + ",".join(batch)).encode()
        yield b"]"
    yield b"}}"


def write_atomically(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Replaces ``path`` with ``data`` (bytes, or pieces written in turn) whole or not at all
    (a file only its owner reads)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".state-")
    try:
        with os.fdopen(handle, "wb") as out:
            for piece in [data] if isinstance(data, bytes | bytearray) else data:
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
