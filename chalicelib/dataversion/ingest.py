"""S3-triggered ingest: an uploaded object becomes a version.

Two kinds of object arrive, and one skeleton (:meth:`ObjectIngest.ingest`) handles both:

* **staged** files under ``incoming/<dataset name or id>/…``: read once, stored at their
  content address, then removed from ``incoming/``; a refused file is moved to ``rejected/``.
* **direct** uploads, PUT straight to ``cas/…`` with the dataset in their metadata (see
  :meth:`~chalicelib.dataversion.storage.DataStore.presign_verified_put`): versioned in place,
  nothing copied. A refused one stays where it is (its bytes match their address and other
  versions may come to use them), unless its bytes do not match its address: then it is moved
  to ``rejected/``.

The object is HEAD-ed once; removing it afterwards is conditional on its ETag (a file uploaded
again to the same key meanwhile is never deleted unread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chalicelib.core.clock import Clock
from chalicelib.core.errors import Conflict, UnprocessableEntity
from chalicelib.core.events import EventBus
from chalicelib.core.observability import logger
from chalicelib.core.text import name_problem, visible
from chalicelib.dataversion.content import (
    ContentObserver,
    ScannedContent,
    VersionOutcome,
    VersionRequest,
)
from chalicelib.dataversion.models import Dataset, DatasetFormat, DatasetVersion, Rejection
from chalicelib.dataversion.repository import DatasetRepository, source_ref
from chalicelib.dataversion.storage import (
    CAS_PREFIX,
    INCOMING_PREFIX,
    META_CREATED_BY,
    META_DATASET,
    META_FILENAME,
    REJECTED_PREFIX,
    DataStore,
    ObjectInfo,
    dataset_of,
    digest_of,
)

EXTENSION_FORMATS = {
    ".csv": DatasetFormat.CSV,
    ".jsonl": DatasetFormat.JSON,
    ".ndjson": DatasetFormat.JSON,
    ".json": DatasetFormat.JSON,
    ".parquet": DatasetFormat.PARQUET,
    ".tfrecord": DatasetFormat.TFRECORD,
    ".npy": DatasetFormat.NUMPY,
    ".npz": DatasetFormat.NUMPY,
    ".pkl": DatasetFormat.PICKLE,
    ".pickle": DatasetFormat.PICKLE,
}

Commit = Callable[
    [Dataset, DatasetFormat, ScannedContent, VersionRequest, str, str | None, str | None],
    VersionOutcome,
]
"""Writes a version: (dataset, format, content, request, stored key, its S3 version, source)."""


@dataclass
class IngestOutcome:
    """What an S3-triggered ingest did with one object.

    Attributes:
        status: ``created``, ``duplicate``, ``rejected``, ``missing`` (already handled) or
            ``ignored`` (a ``cas/`` object that is not a direct upload).
        key: The incoming key.
        version: The version, when created or deduplicated.
        reason: Why it was rejected.
    """

    status: str
    key: str
    version: DatasetVersion | None = None
    reason: str | None = None


def key_problem(key: str) -> str | None:
    """Why an incoming key cannot be ingested, or ``None``.

    Keys must be ``incoming/<dataset name or id>/<file path>`` with no empty, ``.`` or ``..``
    segments, backslashes, or characters a name may not hold (controls, bidirectional
    formatting; see :mod:`chalicelib.core.text`): S3 keys are flat, but such names mislead
    every tool that maps keys to paths (or display as something else), so they are rejected
    rather than versioned.
    """
    if not key.startswith(INCOMING_PREFIX):
        return f"key '{key}' is not under {INCOMING_PREFIX}"
    segments = key[len(INCOMING_PREFIX) :].split("/")
    if len(segments) < 2:
        return f"key '{key}' is not incoming/<dataset name or id>/<file>"
    if any(segment in ("", ".", "..") for segment in segments):
        return f"key '{key}' has an empty, '.' or '..' segment"
    if "\\" in key:
        return f"key '{visible(key)}' contains a backslash"
    problem = name_problem(key)
    if problem is not None:
        return f"key '{visible(key)}' contains a {problem}"
    return None


def format_for_key(key: str, default: DatasetFormat) -> DatasetFormat:
    """The format implied by a file name's extension, else ``default``."""
    lowered = key.lower()
    for extension, fmt in EXTENSION_FORMATS.items():
        if lowered.endswith(extension):
            return fmt
    return default


@dataclass
class _Arrival:
    """One uploaded object and what its kind (staged or direct) decides for the skeleton.

    Attributes:
        key: Its key.
        info: Its HEAD.
        staged: A staged file (consumed: removed once handled) rather than a direct upload.
    """

    key: str
    info: ObjectInfo
    staged: bool

    def problem(self) -> str | None:
        """Why the key itself is refused (staged keys only: a direct key is a CAS address)."""
        return key_problem(self.key) if self.staged else None

    def dataset_ref(self) -> str:
        """The dataset name or id it is for."""
        if self.staged:
            return self.key[len(INCOMING_PREFIX) :].split("/", 1)[0]
        return dataset_of(self.key) or self.info.metadata[META_DATASET]

    def request(self, fmt: DatasetFormat) -> VersionRequest:
        """The version request the object makes."""
        created_by = f"s3:{self.key}"
        if not self.staged:
            created_by = self.info.metadata.get(META_CREATED_BY) or created_by
        return VersionRequest(created_by=created_by, format=fmt, source_key=self.key)

    def filename(self) -> str:
        """The name whose extension tells the format."""
        return self.key if self.staged else self.info.metadata.get(META_FILENAME, "")

    def quarantine_key(self) -> str:
        """Where the object goes when it is moved aside."""
        rest = self.key[len(INCOMING_PREFIX) :] if self.staged else self.key
        return f"{REJECTED_PREFIX}{rest}"


class ObjectIngest:
    """Turns uploaded objects into versions (the engine's ``ingest_object``).

    Args:
        repository: DynamoDB access.
        store: S3 access.
        event_bus: Where rejections are published.
        clock: Time source.
        observe: A fresh content observer for a format.
        commit: Writes the version (schema checks, storage, allocation, lineage, events).
    """

    def __init__(
        self,
        repository: DatasetRepository,
        store: DataStore,
        event_bus: EventBus,
        clock: Clock,
        observe: Callable[[DatasetFormat], ContentObserver],
        commit: Commit,
    ) -> None:
        self.repository = repository
        self.store = store
        self.event_bus = event_bus
        self.clock = clock
        self.observe = observe
        self.commit = commit

    def ingest(self, key: str, s3_version_id: str | None = None) -> IngestOutcome:
        """Turns the object at ``key`` into a version, once.

        Idempotent: the same object (key and ETag) always resolves to the same version, however
        often and in whatever order its events arrive.
        """
        staged = not key.startswith(CAS_PREFIX)
        info = self.store.head(key, s3_version_id)
        if info is None:
            logger.info("uploaded object already handled or gone", extra={"key": key})
            return IngestOutcome("missing" if staged else "ignored", key)
        if not staged and (digest_of(key) is None or META_DATASET not in info.metadata):
            return IngestOutcome("ignored", key)  # a copy into cas/ made by another path
        arrival = _Arrival(key, info, staged)
        source = source_ref(self.store.bucket, key, info.etag, s3_version_id)
        done = self.repository.version_for_source(source)
        if done is not None:
            self._release(arrival)
            return IngestOutcome("duplicate", key, done)
        if not staged:  # a refused direct upload stays in place: its refusal is remembered
            earlier = self.repository.get_rejection(key, info.etag)
            if earlier is not None:
                return IngestOutcome("rejected", key, reason=earlier.reason)
        target = self._target(arrival)
        if isinstance(target, str):
            return self._reject(arrival, target, move=staged)
        return self._version(arrival, target, s3_version_id, source)

    def _target(self, arrival: _Arrival) -> Dataset | str:
        """The dataset the object is for, or why there is none."""
        problem = arrival.problem()
        if problem is not None:
            return problem
        named = arrival.dataset_ref()
        dataset = self.repository.find_dataset(named)
        if dataset is not None:
            return dataset
        if arrival.staged:
            return f"no dataset named or with id '{named}'"
        return f"no dataset with id '{named}'"

    def _version(
        self, arrival: _Arrival, dataset: Dataset, s3_version_id: str | None, source: str
    ) -> IngestOutcome:
        """Reads the object once and commits it as a version (or rejects it)."""
        fmt = format_for_key(arrival.filename(), dataset.format)
        observer = self.observe(fmt)
        try:
            for chunk in self.store.iter_object(arrival.key, s3_version_id):
                observer.see(chunk)
            content = observer.result()
            expected = None if arrival.staged else digest_of(arrival.key)
            if expected is not None and content.sha256 != expected:
                reason = f"content hashes to {content.sha256}, not the declared {expected}"
                return self._reject(arrival, reason, move=True)
            stored_version = (s3_version_id or None) if arrival.staged else None
            outcome = self.commit(
                dataset, fmt, content, arrival.request(fmt), arrival.key, stored_version, source
            )
        except (UnprocessableEntity, Conflict) as exc:
            return self._reject(arrival, exc.message, move=arrival.staged)
        self._release(arrival)
        status = "created" if outcome.created else "duplicate"
        return IngestOutcome(status, arrival.key, outcome.version)

    def _reject(self, arrival: _Arrival, reason: str, move: bool) -> IngestOutcome:
        """Records, publishes and logs why an object did not become a version; with ``move``
        the object goes to ``rejected/`` (else it stays where it is)."""
        key, info = arrival.key, arrival.info
        rejected_key = arrival.quarantine_key() if move else key
        if move:
            self.store.copy(key, rejected_key, info.size, info.version_id)
        rejection = Rejection(key, info.etag, rejected_key, reason, self.clock.now())
        self.repository.record_rejection(rejection)
        if move:  # only once the refusal is recorded: a retried event finds the object again
            self.store.delete_if_unchanged(key, info.etag)
        self.event_bus.publish(
            "DatasetVersionRejected",
            {"source_key": key, "etag": info.etag, "rejected_key": rejected_key, "reason": reason},
        )
        logger.warning("incoming file rejected", extra={"key": key, "reason": reason})
        return IngestOutcome("rejected", key, reason=reason)

    def _release(self, arrival: _Arrival) -> None:
        """Removes a handled staged file (unless it was replaced meanwhile); a direct upload is
        the version's stored object and stays."""
        if arrival.staged:
            self.store.delete_if_unchanged(arrival.key, arrival.info.etag)
