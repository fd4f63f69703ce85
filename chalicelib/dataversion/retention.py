"""Deleting versions, retention policies, content erasure and garbage collection.

* **Delete** a version: it becomes a tombstone (``deleted_at``/``deleted_by``; reads answer
  410; it stays in the version list and in lineage, marked deleted) and frees its content
  reservation, so the same content uploaded again is a new version. A version a tag points to or
  an experiment used is not deleted (409) until the tag moves.
* **Retention** (per dataset, run on a schedule): live versions that are neither among the
  ``keep_last`` newest nor younger than ``keep_days`` are deleted, except the latest one, tagged
  ones and those an experiment used.
* **Erasure** (a GDPR request, admins): every live version of any dataset holding a sha256 is
  deleted, then its stored object is collected at once.
* **Garbage collection** deletes stored objects no live version points to, once older than a
  grace period (uploads in flight). Nothing scans the versions table: each stored object has an
  index item (``obj#<key>``) listing the live versions that point to it, and each content one
  (``cnt#<sha256>``) listing the live versions that hold it; a version's write adds it to both
  in its own transaction and its deletion removes it in its own. It is safe under concurrent
  uploads: a collection *claims* a candidate only while its index lists no version (one
  conditional write), deletes it, and releases the claim moving the object's *generation* on.
  A writer reads the object's generation before it checks the bytes are stored, and its version
  transaction (which adds the reference) is conditional on no claim and that same generation.
  So a version either lands first (and the claim fails) or fails and retries after the claim:
  it reads the generation again and stores its bytes again. No object a version points to is
  ever deleted. Versions stored before the index existed are indexed once, by
  :meth:`~chalicelib.dataversion.repository.DatasetRepository.index_references`, before any
  collection.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import Conflict
from chalicelib.core.events import EventBus
from chalicelib.dataversion.errors import DatasetVersionGone, VersionNumberTaken
from chalicelib.dataversion.models import Dataset, DatasetVersion, RetentionPolicy
from chalicelib.dataversion.repository import DatasetRepository
from chalicelib.dataversion.storage import CAS_PREFIX, DataStore
from chalicelib.dataversion.tags import TagBook

DEFAULT_GRACE = timedelta(hours=24)
RETENTION = "retention"
ERASURE = "erasure"


@dataclass
class Collection:
    """What one garbage collection did.

    Attributes:
        deleted: Object keys deleted.
        kept: Candidates a version came to point to after they were listed (not claimed).
        busy: Candidates another collection had claimed.
    """

    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)


class Lifecycle:
    """Deletes versions, applies retention, erases content and collects garbage.

    Args:
        repository: DynamoDB access.
        store: S3 access.
        tags: Tag book (tagged versions are kept).
        lineage: Lineage graph (tombstones are marked there).
        event_bus: Where ``DatasetVersionDeleted`` goes.
        clock: Time source.
    """

    def __init__(
        self,
        repository: DatasetRepository,
        store: DataStore,
        tags: TagBook,
        lineage: Any,
        event_bus: EventBus,
        clock: Clock | None = None,
    ) -> None:
        self.repository = repository
        self.store = store
        self.tags = tags
        self.lineage = lineage
        self.event_bus = event_bus
        self.clock = clock or SystemClock()

    # ---- deleting -------------------------------------------------------------------------

    def delete_version(
        self, version: DatasetVersion, deleted_by: str, force: bool = False
    ) -> DatasetVersion:
        """Tombstones a version.

        Args:
            version: The version.
            deleted_by: Principal (or ``retention``/``erasure``).
            force: Delete even if tagged or used by an experiment (erasure).

        Raises:
            DatasetVersionGone: Already deleted (410).
            Conflict: A tag points to it or an experiment used it (409).
        """
        if version.deleted:
            raise DatasetVersionGone(f"version {version.version_id} was deleted")
        if not force:
            self._check_unpinned(version)
        try:
            deleted = self.repository.delete_version(version, deleted_by, self.clock.now())
        except VersionNumberTaken:
            raise DatasetVersionGone(f"version {version.version_id} was deleted") from None
        node = self.lineage.add_version_node(deleted)
        self.lineage.repository.put_node(_with_deleted(node, deleted.deleted_at))
        self.event_bus.publish(
            "DatasetVersionDeleted",
            {
                "dataset_id": deleted.dataset_id,
                "version_id": deleted.version_id,
                "version_number": deleted.version_number,
                "sha256": deleted.sha256,
                "deleted_by": deleted_by,
            },
        )
        return deleted

    def _check_unpinned(self, version: DatasetVersion) -> None:
        tagged = [
            m.tag for m in self.tags.tags(version.dataset_id) if m.version_id == version.version_id
        ]
        if tagged:
            raise Conflict(
                f"version {version.version_number} is tagged {', '.join(sorted(tagged))}; "
                "move the tag first"
            )
        if version.version_id in self.repository.used_version_ids(version.dataset_id):
            raise Conflict(f"version {version.version_number} was used by an experiment")

    # ---- retention ------------------------------------------------------------------------

    def set_retention(self, dataset_id: str, policy: RetentionPolicy | None) -> Dataset:
        """Stores (or, with ``None``, removes) a dataset's retention policy."""
        return self.repository.set_retention(dataset_id, policy)

    def apply_retention(self, dataset: Dataset) -> list[DatasetVersion]:
        """Deletes the versions the dataset's policy does not keep; returns them."""
        policy = dataset.retention
        if policy is None:
            return []
        live = [v for v in self.repository.versions_descending(dataset.dataset_id) if not v.deleted]
        pinned = {m.version_id for m in self.tags.tags(dataset.dataset_id)}
        pinned |= self.repository.used_version_ids(dataset.dataset_id)
        now = self.clock.now()
        doomed = [
            version
            for rank, version in enumerate(live)
            if rank > 0
            and version.version_id not in pinned
            and not _kept(policy, rank, version, now)
        ]
        deleted = []
        for version in doomed:
            try:
                deleted.append(self.delete_version(version, RETENTION))
            except (Conflict, DatasetVersionGone):  # tagged or deleted meanwhile
                continue
        return deleted

    # ---- erasure --------------------------------------------------------------------------

    def erase_content(self, sha256: str, erased_by: str) -> tuple[list[DatasetVersion], Collection]:
        """Deletes every live version holding ``sha256`` (tags and usages notwithstanding), then
        collects the objects they pointed to at once (no grace period)."""
        self.repository.index_references()
        versions = self.repository.live_versions_with_content(sha256)
        deleted = [self.delete_version(v, f"{ERASURE}:{erased_by}", force=True) for v in versions]
        keys = {v.storage_key for v in versions}
        keys |= {
            key for key, _ in self.store.list_objects(f"{CAS_PREFIX}{sha256[:2]}/{sha256[2:]}")
        }
        return deleted, self._collect(sorted(keys))

    # ---- garbage collection ---------------------------------------------------------------

    def collect_garbage(self, grace: timedelta = DEFAULT_GRACE) -> Collection:
        """Deletes stored objects older than ``grace`` that no live version points to."""
        self.repository.index_references()
        cutoff = self.clock.now() - grace
        old = [key for key, modified in self.store.list_objects(CAS_PREFIX) if modified <= cutoff]
        return self._collect([key for key in old if not self.repository.referenced(key)])

    def _collect(self, candidates: list[str]) -> Collection:
        result = Collection()
        token = uuid.uuid4().hex
        claimed = []
        for key in candidates:
            if self.repository.claim_object(key, token):
                claimed.append(key)
            elif self.repository.referenced(key):  # a version arrived since it was listed
                result.kept.append(key)
            else:
                result.busy.append(key)
        try:
            for key in claimed:  # unreferenced when claimed; none can point to it until release
                self.store.delete(key)
                result.deleted.append(key)
        finally:
            for key in claimed:
                self.repository.release_object(key, token, deleted=key in result.deleted)
        return result


def _kept(policy: RetentionPolicy, rank: int, version: DatasetVersion, now: datetime) -> bool:
    """Whether a rule of the policy keeps the version ``rank`` places below the newest."""
    if policy.keep_last is not None and rank < policy.keep_last:
        return True
    return policy.keep_days is not None and version.created_at > now - timedelta(
        days=policy.keep_days
    )


def _with_deleted(node: Any, deleted_at: datetime | None) -> Any:
    from dataclasses import replace

    return replace(node, deleted_at=deleted_at)
