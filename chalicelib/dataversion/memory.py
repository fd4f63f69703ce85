"""The data versioning's storage in memory: :class:`~chalicelib.dataversion.ports.DatasetCatalog`,
:class:`~chalicelib.dataversion.ports.LineageStore` and
:class:`~chalicelib.dataversion.ports.ObjectStore` for tests of the versioning and lineage logic
without AWS (the pattern of Chalice's ``InMemoryTodoDB``). Same results and errors as the
DynamoDB repository and the S3 store (one contract suite runs against both); each operation is
atomic under one lock, as a transaction is in DynamoDB, and objects go in and out as copies."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib.core.clock import utc_now
from chalicelib.core.errors import Conflict
from chalicelib.core.rows import Rows
from chalicelib.dataversion.errors import (
    DatasetNotFound,
    DatasetVersionNotFound,
    DuplicateContent,
    DuplicateSource,
    ObjectCollected,
    TransformationNotFound,
    VersionNumberTaken,
)
from chalicelib.dataversion.models import (
    Dataset,
    DatasetVersion,
    LineageEdge,
    LineageNode,
    TransformationRecord,
)
from chalicelib.dataversion.storage import CHUNK_BYTES, TMP_PREFIX, ObjectInfo


@dataclass
class _StoredObject:
    """A stored object's collection state: its generation (deletions so far), the claim of a
    collection under way, and the live versions pointing to it."""

    generation: int = 0
    token: str | None = None
    refs: set[str] = field(default_factory=set)


def _ref(version: DatasetVersion) -> str:
    return f"{version.dataset_id}#{version.version_number}"


class InMemoryDatasetRepository:
    """Datasets, versions, their reservations (content, id, source), profiles and the
    reference index of stored objects and contents, in dicts."""

    def __init__(self) -> None:
        self._datasets: Rows[str, Dataset] = Rows(
            lambda key: DatasetNotFound(f"dataset {key} does not exist")
        )
        self._names: dict[str, str] = {}
        self._versions: Rows[tuple[str, int], DatasetVersion] = Rows(
            lambda key: DatasetVersionNotFound(f"dataset {key[0]} has no version {key[1]}")
        )
        self._by_id: dict[str, tuple[str, int]] = {}
        self._by_content: dict[tuple[str, str], str] = {}  # (dataset, sha256) -> version id
        self._by_source: dict[str, tuple[str, int]] = {}
        self._profiles: dict[str, bytes] = {}
        self._objects: dict[str, _StoredObject] = {}
        self._contents: dict[str, set[str]] = {}
        self._transformations: Rows[str, TransformationRecord] = Rows(
            lambda key: TransformationNotFound(f"transformation {key} does not exist")
        )
        self._lock = threading.RLock()

    # ---- transformations ------------------------------------------------------------------
    def save_transformation(self, record: TransformationRecord) -> None:
        """Stores (or completes: the same id again replaces it) a transformation record."""
        with self._lock:
            self._transformations[record.transformation_id] = copy.deepcopy(record)

    def get_transformation(self, transformation_id: str) -> TransformationRecord:
        """One transformation record.

        Raises:
            TransformationNotFound: Unknown id.
        """
        with self._lock:
            return self._transformations.read(transformation_id)

    # ---- datasets -------------------------------------------------------------------------
    def create_dataset(self, dataset: Dataset) -> None:
        """Stores a dataset (without a retention policy) and reserves its name.

        Raises:
            Conflict: The name (or the id) is taken.
        """
        with self._lock:
            if dataset.name in self._names or dataset.dataset_id in self._datasets:
                raise Conflict(f"a dataset named '{dataset.name}' already exists")
            self._names[dataset.name] = dataset.dataset_id
            stored = dataclasses.replace(copy.deepcopy(dataset), retention=None)
            self._datasets[dataset.dataset_id] = stored

    def get_dataset(self, dataset_id: str) -> Dataset:
        """The dataset.

        Raises:
            DatasetNotFound: Unknown id.
        """
        with self._lock:
            return self._datasets.read(dataset_id)

    def find_dataset(self, id_or_name: str) -> Dataset | None:
        """A dataset by id or by name, or ``None``."""
        with self._lock:
            dataset_id = id_or_name if id_or_name in self._datasets else self._names.get(id_or_name)
            return None if dataset_id is None else self.get_dataset(dataset_id)

    def list_datasets(self) -> list[Dataset]:
        """Every dataset, by name."""
        with self._lock:
            return copy.deepcopy(sorted(self._datasets.values(), key=lambda d: d.name))

    def set_access_groups(self, dataset_id: str, access_groups: list[str]) -> Dataset:
        """Replaces a dataset's access groups.

        Raises:
            DatasetNotFound: Unknown id.
        """
        with self._lock:
            changed = dataclasses.replace(
                self.get_dataset(dataset_id), access_groups=list(access_groups)
            )
            self._datasets[dataset_id] = copy.deepcopy(changed)
            return changed

    # ---- versions -------------------------------------------------------------------------
    def latest_version_number(self, dataset_id: str) -> int:
        """The highest version number (0 when there is none)."""
        with self._lock:
            return max((n for d, n in self._versions if d == dataset_id), default=0)

    def add_version(
        self,
        version: DatasetVersion,
        source: str | None = None,
        predecessor: DatasetVersion | None = None,
        object_generation: int = 0,
        profile: bytes | None = None,
    ) -> None:
        """Writes a version with its reservations and profile, all or nothing.

        Raises:
            ObjectCollected: Garbage collection claimed (or deleted) the stored object since
                ``object_generation`` was read.
            DuplicateContent: The dataset already has this content (a restore: ``Conflict``,
                the content is no longer held).
            DuplicateSource: The source object was already ingested.
            VersionNumberTaken: The number is taken or ``predecessor`` is not the one before.
        """
        with self._lock:
            self._check_new_version(version, source, predecessor, object_generation)
            key = (version.dataset_id, version.version_number)
            self._versions[key] = copy.deepcopy(version)
            self._by_id[version.version_id] = key
            self._by_content[(version.dataset_id, version.sha256)] = version.version_id
            if source is not None:
                self._by_source[source] = key
            if profile is not None:
                self._profiles[version.version_id] = bytes(profile)
            stored = self._objects.setdefault(version.storage_key, _StoredObject())
            stored.refs.add(_ref(version))
            self._contents.setdefault(version.sha256, set()).add(_ref(version))

    def _check_new_version(
        self,
        version: DatasetVersion,
        source: str | None,
        predecessor: DatasetVersion | None,
        object_generation: int,
    ) -> None:
        """Raises what the DynamoDB transaction's failed conditions map to, in its order."""
        stored = self._objects.get(version.storage_key, _StoredObject())
        if stored.token is not None or stored.generation != object_generation:
            raise ObjectCollected("garbage collection claimed the stored object")
        held = (version.dataset_id, version.sha256) in self._by_content
        if version.restored_from is not None and not held:
            raise Conflict("the content of the restored version is no longer held")
        if version.restored_from is None and held:
            raise DuplicateContent("identical content is already a version")
        if source is not None and source in self._by_source:
            raise DuplicateSource("this source object was already ingested")
        before = self._versions.get((version.dataset_id, version.version_number - 1))
        if (version.dataset_id, version.version_number) in self._versions or (
            predecessor is not None
            and (before is None or before.version_id != predecessor.version_id)
        ):
            raise VersionNumberTaken("version number taken")

    def get_profile(self, version_id: str) -> bytes | None:
        """A version's compressed column profile, or ``None``."""
        with self._lock:
            return self._profiles.get(version_id)

    def reserve_source(self, source: str, version: DatasetVersion) -> None:
        """Remembers that a source object resolved to ``version`` (kept if already there)."""
        with self._lock:
            self._by_source.setdefault(source, (version.dataset_id, version.version_number))

    def version_for_source(self, source: str) -> DatasetVersion | None:
        """The version a source object was ingested as, if any."""
        with self._lock:
            key = self._by_source.get(source)
            return None if key is None else self.get_version(*key)

    def version_by_hash(self, dataset_id: str, sha256: str) -> DatasetVersion | None:
        """The dataset's version holding this content, if any."""
        with self._lock:
            version_id = self._by_content.get((dataset_id, sha256))
            return None if version_id is None else self.get_version_by_id(version_id)

    def get_version(self, dataset_id: str, version_number: int) -> DatasetVersion:
        """One version by number.

        Raises:
            DatasetVersionNotFound: Unknown number.
        """
        with self._lock:
            return self._versions.read((dataset_id, int(version_number)))

    def get_version_by_id(self, version_id: str) -> DatasetVersion:
        """One version by id.

        Raises:
            DatasetVersionNotFound: Unknown id.
        """
        with self._lock:
            key = self._by_id.get(version_id)
            if key is None:
                raise DatasetVersionNotFound(f"version {version_id} does not exist")
            return self.get_version(*key)

    def list_versions(self, dataset_id: str, limit: int, offset: int) -> list[DatasetVersion]:
        """Versions ``offset+1 … offset+limit``, ascending."""
        with self._lock:
            numbers = sorted(n for d, n in self._versions if d == dataset_id and n > offset)
            return [self.get_version(dataset_id, n) for n in numbers[:limit]]

    def versions_descending(self, dataset_id: str) -> Iterator[DatasetVersion]:
        """Versions from the newest backwards."""
        with self._lock:
            numbers = sorted((n for d, n in self._versions if d == dataset_id), reverse=True)
            found = [self.get_version(dataset_id, n) for n in numbers]
        yield from found

    def delete_version(
        self, version: DatasetVersion, deleted_by: str, at: datetime
    ) -> DatasetVersion:
        """Tombstones a version, dropping its profile, references and content reservation.

        Raises:
            VersionNumberTaken: It was deleted meanwhile.
        """
        key = (version.dataset_id, version.version_number)
        with self._lock:
            current = self._versions.get(key)
            if current is not None and current.deleted_at is not None:
                raise VersionNumberTaken("the version changed meanwhile")
            tombstone = dataclasses.replace(
                copy.deepcopy(version), deleted_at=at, deleted_by=deleted_by
            )
            self._versions[key] = tombstone
            self._profiles.pop(version.version_id, None)
            self._objects.setdefault(version.storage_key, _StoredObject()).refs.discard(
                _ref(version)
            )
            self._contents.setdefault(version.sha256, set()).discard(_ref(version))
            content = (version.dataset_id, version.sha256)
            if self._by_content.get(content) == version.version_id:
                del self._by_content[content]
            return self.get_version(*key)

    def referenced(self, storage_key: str) -> bool:
        """Whether a live version points to the stored object."""
        with self._lock:
            found = self._objects.get(storage_key)
            return found is not None and bool(found.refs)

    def live_versions_with_content(self, sha256: str) -> list[DatasetVersion]:
        """Every live version, of any dataset, with this content."""
        found = []
        with self._lock:
            for ref in sorted(self._contents.get(sha256, ())):
                dataset_id, _, number = ref.rpartition("#")
                version = self._versions.get((dataset_id, int(number)))
                if version is not None and not version.deleted and version.sha256 == sha256:
                    found.append(copy.deepcopy(version))
        return found

    def object_state(self, storage_key: str) -> tuple[int, bool]:
        """A stored object's collection generation and whether a collection claims it now."""
        with self._lock:
            found = self._objects.get(storage_key, _StoredObject())
            return found.generation, found.token is not None

    def claim_object(self, storage_key: str, token: str) -> bool:
        """Claims an object no live version points to for collection; ``False`` if it is
        claimed already or referenced."""
        with self._lock:
            found = self._objects.setdefault(storage_key, _StoredObject())
            if found.token is not None or found.refs:
                return False
            found.token = token
            return True

    def release_object(self, storage_key: str, token: str, deleted: bool) -> None:
        """Ends ``token``'s claim; a deleted object's generation moves on.

        Raises:
            Conflict: ``token`` does not hold the claim.
        """
        with self._lock:
            found = self._objects.get(storage_key)
            if found is None or found.token != token:
                raise Conflict(f"{storage_key} is not claimed by {token}")
            found.token = None
            found.generation += int(deleted)


class InMemoryLineageRepository:
    """Nodes by id and edges by (node, direction, other node)."""

    def __init__(self) -> None:
        self._nodes: dict[str, LineageNode] = {}
        self._edges: dict[tuple[str, str], dict[str, LineageEdge]] = {}
        self._lock = threading.Lock()

    def put_node(self, node: LineageNode) -> None:
        """Stores (or replaces) a node's metadata (its traversal depth is not stored)."""
        with self._lock:
            self._nodes[node.version_id] = dataclasses.replace(node, depth=0)

    def put_edge(self, edge: LineageEdge) -> None:
        """Stores both directions of an edge at once (idempotent)."""
        with self._lock:
            self._edges.setdefault((edge.child_id, "up"), {})[edge.parent_id] = edge
            self._edges.setdefault((edge.parent_id, "down"), {})[edge.child_id] = edge

    def get_nodes(self, node_ids: Iterable[str]) -> dict[str, LineageNode]:
        """The stored nodes among ``node_ids``, by id (unknown ids are left out)."""
        with self._lock:
            found = [self._nodes[i] for i in dict.fromkeys(node_ids) if i in self._nodes]
        return {node.version_id: dataclasses.replace(node) for node in found}

    def edges(self, node_id: str, direction: str) -> list[LineageEdge]:
        """A node's edges ``up`` (to parents) or ``down`` (to children), ordered by the id of
        the node at their other end."""
        key = (node_id, "up" if direction == "up" else "down")
        with self._lock:
            found = self._edges.get(key, {})
            return [found[other] for other in sorted(found)]


@dataclass(frozen=True)
class _Blob:
    data: bytes
    version_id: str
    modified: datetime
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        return hashlib.md5(self.data, usedforsecurity=False).hexdigest()


class InMemoryObjectStore:
    """The data bucket in a dict (:class:`~chalicelib.dataversion.ports.ObjectStore`): each
    write keeps the earlier versions of its key, readable by version id as in a versioned
    bucket; ETags are the content's MD5, as S3's for a single-part upload.

    Args:
        bucket: The name reported as the bucket.
        chunk_bytes: Size of the chunks ``iter_object`` yields.
    """

    def __init__(self, bucket: str = "memory-data", chunk_bytes: int = CHUNK_BYTES) -> None:
        self.bucket = bucket
        self.chunk_bytes = chunk_bytes
        self._objects: dict[str, list[_Blob]] = {}
        self._lock = threading.Lock()

    def _find(self, key: str, version_id: str | None = None) -> _Blob | None:
        with self._lock:
            versions = self._objects.get(key, [])
            if version_id is None:
                return versions[-1] if versions else None
            return next((b for b in versions if b.version_id == version_id), None)

    def _found(self, key: str, version_id: str | None = None) -> _Blob:
        blob = self._find(key, version_id)
        if blob is None:
            raise KeyError(f"no object {key}")
        return blob

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        """Size, ETag and metadata of ``key`` (``None`` when absent)."""
        blob = self._find(key, version_id)
        if blob is None:
            return None
        return ObjectInfo(
            key, len(blob.data), blob.etag, blob.version_id if version_id else None,
            dict(blob.metadata),
        )  # fmt: skip

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        return self._find(key) is not None

    def iter_object(self, key: str, version_id: str | None = None) -> Iterator[bytes]:
        """The object's bytes in chunks of ``chunk_bytes``."""
        data = self._found(key, version_id).data
        for start in range(0, len(data), self.chunk_bytes):
            yield data[start : start + self.chunk_bytes]

    def read(self, key: str) -> bytes:
        """The whole object."""
        return self._found(key).data

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Stores ``data`` at ``key`` (a new version of it)."""
        self._write(key, bytes(data), {})

    def _write(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        blob = _Blob(data, uuid.uuid4().hex, utc_now(), metadata)
        with self._lock:
            self._objects.setdefault(key, []).append(blob)

    def upload_stream(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Writes the chunks to a new temporary key; returns it and the bytes written."""
        key = f"{TMP_PREFIX}{uuid.uuid4().hex}"
        data = b"".join(chunks)
        self.put(key, data)
        return key, len(data)

    def copy(
        self, source_key: str, target_key: str, size: int, source_version: str | None = None
    ) -> None:
        """Copies an object (the given version, else the latest) to another key."""
        blob = self._found(source_key, source_version)
        self._write(target_key, blob.data, dict(blob.metadata))

    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """(key, last modified) of every object under ``prefix``, by key."""
        with self._lock:
            found = [(k, v[-1].modified) for k, v in self._objects.items() if v]
        yield from sorted(item for item in found if item[0].startswith(prefix))

    def delete(self, key: str) -> None:
        """Removes ``key`` (nothing if absent)."""
        with self._lock:
            self._objects.pop(key, None)

    def delete_if_unchanged(self, key: str, etag: str) -> bool:
        """Removes ``key`` only while it holds the object with ``etag``; whether it did."""
        with self._lock:
            versions = self._objects.get(key)
            if not versions or versions[-1].etag != etag:
                return False
            del self._objects[key]
            return True
