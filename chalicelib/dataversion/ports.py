"""The interfaces of the data versioning's storage: datasets and their versions with the
reservations and reference index written with them, and the lineage DAG's adjacency items
(DynamoDB in :mod:`chalicelib.dataversion.repository`) and the data bucket's objects (S3 in
:mod:`chalicelib.dataversion.storage`), with in-memory implementations in
:mod:`chalicelib.dataversion.memory` for tests of the versioning and lineage logic that need no
AWS.

Both implementations pass one contract suite (``tests/unit/test_repository_contracts.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from chalicelib.dataversion.models import (
    Dataset,
    DatasetVersion,
    LineageEdge,
    LineageNode,
    TransformationRecord,
)

if TYPE_CHECKING:
    from chalicelib.dataversion.storage import ObjectInfo


class DatasetCatalog(Protocol):
    """Datasets (names reserved) and their consecutively numbered versions, each written in one
    transaction with its content's, id's and source's reservations and the references of its
    stored object and content (which garbage collection claims only while none is live)."""

    def create_dataset(self, dataset: Dataset) -> None:
        """Stores a dataset and reserves its name.

        Raises:
            Conflict: The name is taken.
        """

    def get_dataset(self, dataset_id: str) -> Dataset:
        """The dataset.

        Raises:
            DatasetNotFound: Unknown id.
        """

    def find_dataset(self, id_or_name: str) -> Dataset | None:
        """A dataset by id or by name, or ``None``."""

    def list_datasets(self) -> list[Dataset]:
        """Every dataset, by name."""

    def set_access_groups(self, dataset_id: str, access_groups: list[str]) -> Dataset:
        """Replaces a dataset's access groups.

        Raises:
            DatasetNotFound: Unknown id.
        """

    def latest_version_number(self, dataset_id: str) -> int:
        """The highest version number (0 when there is none)."""

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

    def get_profile(self, version_id: str) -> bytes | None:
        """A version's compressed column profile, or ``None``."""

    def reserve_source(self, source: str, version: DatasetVersion) -> None:
        """Remembers that a source object resolved to ``version`` (kept if already there)."""

    def version_for_source(self, source: str) -> DatasetVersion | None:
        """The version a source object was ingested as, if any."""

    def version_by_hash(self, dataset_id: str, sha256: str) -> DatasetVersion | None:
        """The dataset's version holding this content, if any."""

    def get_version(self, dataset_id: str, version_number: int) -> DatasetVersion:
        """One version by number.

        Raises:
            DatasetVersionNotFound: Unknown number.
        """

    def get_version_by_id(self, version_id: str) -> DatasetVersion:
        """One version by id.

        Raises:
            DatasetVersionNotFound: Unknown id.
        """

    def list_versions(self, dataset_id: str, limit: int, offset: int) -> list[DatasetVersion]:
        """Versions ``offset+1 … offset+limit``, ascending."""

    def versions_descending(self, dataset_id: str) -> Iterator[DatasetVersion]:
        """Versions from the newest backwards."""

    def delete_version(
        self, version: DatasetVersion, deleted_by: str, at: datetime
    ) -> DatasetVersion:
        """Tombstones a version, dropping its profile, references and content reservation.

        Raises:
            VersionNumberTaken: It was deleted meanwhile.
        """

    def referenced(self, storage_key: str) -> bool:
        """Whether a live version points to the stored object."""

    def live_versions_with_content(self, sha256: str) -> list[DatasetVersion]:
        """Every live version, of any dataset, with this content."""

    def object_state(self, storage_key: str) -> tuple[int, bool]:
        """A stored object's collection generation and whether a collection claims it now."""

    def claim_object(self, storage_key: str, token: str) -> bool:
        """Claims an object no live version points to for collection; ``False`` if it is
        claimed already or referenced."""

    def release_object(self, storage_key: str, token: str, deleted: bool) -> None:
        """Ends ``token``'s claim; a deleted object's generation moves on."""

    def save_transformation(self, record: TransformationRecord) -> None:
        """Stores (or completes: the same id again replaces it) a transformation record."""

    def get_transformation(self, transformation_id: str) -> TransformationRecord:
        """One transformation record.

        Raises:
            TransformationNotFound: Unknown id.
        """


class LineageStore(Protocol):
    """Nodes (a version's metadata) and edges of the lineage DAG, each edge readable from both
    of its ends."""

    def put_node(self, node: LineageNode) -> None:
        """Stores (or replaces) a node's metadata."""

    def put_edge(self, edge: LineageEdge) -> None:
        """Stores both directions of an edge at once (idempotent)."""

    def get_nodes(self, node_ids: Iterable[str]) -> dict[str, LineageNode]:
        """The stored nodes among ``node_ids``, by id (unknown ids are left out)."""

    def edges(self, node_id: str, direction: str) -> list[LineageEdge]:
        """A node's edges ``up`` (to parents) or ``down`` (to children), ordered by the id of
        the node at their other end."""


class ObjectStore(Protocol):
    """The data bucket as the versioning engine uses it (S3 in
    :class:`~chalicelib.dataversion.storage.DataStore`): content-addressed objects written by
    streaming, read back in chunks, copied, listed and deleted (conditionally on their ETag)."""

    bucket: str
    chunk_bytes: int

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        """Size, ETag and metadata of ``key`` (``None`` when absent)."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""

    def iter_object(self, key: str, version_id: str | None = None) -> Iterator[bytes]:
        """The object's bytes in chunks of ``chunk_bytes``."""

    def read(self, key: str) -> bytes:
        """The whole object."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Stores ``data`` at ``key``."""

    def upload_stream(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Writes the chunks to a new temporary key; returns it and the bytes written."""

    def copy(
        self, source_key: str, target_key: str, size: int, source_version: str | None = None
    ) -> None:
        """Copies an object to another key."""

    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """(key, last modified) of every object under ``prefix``, by key."""

    def delete(self, key: str) -> None:
        """Removes ``key`` (nothing if absent)."""

    def delete_if_unchanged(self, key: str, etag: str) -> bool:
        """Removes ``key`` only while it holds the object with ``etag``; whether it did."""
