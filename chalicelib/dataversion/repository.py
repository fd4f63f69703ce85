"""DynamoDB storage of datasets, versions, transformations, lineage, usages and rejections
(the dataversion domain's only DynamoDB code).

Uniqueness is enforced with conditional writes in one ``TransactWriteItems``: the version item
keyed ``(dataset_id, version_number)`` and three reservation items in ``dataset-keys`` (the
version id, the dataset's content hash, and — for S3 ingests — the source object's key and
ETag). Either all are written or none, so the dedup index and the versions never diverge and a
failed attempt leaves no gap in the numbering.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.core.errors import Conflict
from chalicelib.core.tables import (
    cancellation_codes,
    meta,
    string_list,
    transaction_connection,
)
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
    CompatibilityMode,
    Dataset,
    DatasetFormat,
    DatasetSchema,
    DatasetUsage,
    DatasetVersion,
    DriftLimits,
    LineageEdge,
    LineageNode,
    Rejection,
    RetentionPolicy,
    TagMove,
    TransformationRecord,
    TransformationType,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


class DatasetTable(Model):
    """One item per dataset."""

    Meta = meta("DATASETS_TABLE", "datasets")

    dataset_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    owner = UnicodeAttribute(default="")
    access_groups = string_list()
    format = UnicodeAttribute()
    compatibility = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    declared_schema = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    retention = UnicodeAttribute(null=True)
    drift_limits = UnicodeAttribute(null=True)
    listed = BooleanAttribute(null=True)  # its listing entries are written

    def to_domain(self) -> Dataset:
        declared = self.declared_schema
        kept = json.loads(self.retention) if self.retention else None
        limits = json.loads(self.drift_limits) if self.drift_limits else None
        return Dataset(
            dataset_id=self.dataset_id,
            name=self.name,
            owner=self.owner or "",
            access_groups=list(self.access_groups or []),
            format=DatasetFormat(self.format),
            compatibility=CompatibilityMode(self.compatibility),
            description=self.description or "",
            declared_schema=DatasetSchema.from_dict(json.loads(declared)) if declared else None,
            created_at=self.created_at,
            retention=RetentionPolicy(**kept) if kept else None,
            drift_limits=DriftLimits(**limits) if limits else None,
        )


class ListingIndex(GlobalSecondaryIndex["DatasetKeyTable"]):
    """Datasets by who may list them: ``all`` (admins), ``own:<principal>``, ``grp:<group>``;
    sorted by name (a sparse index: only ``lst#…`` items carry its keys)."""

    class Meta:
        index_name = "listing-index"
        projection = AllProjection()

    listing = UnicodeAttribute(hash_key=True)
    listed = UnicodeAttribute(range_key=True)


class DatasetKeyTable(Model):
    """Unique reservations: ``name#…``, ``vid#…``, ``sha#<dataset>#<sha256>``, ``src#…``; a
    version's profile ``prof#<version id>``; the listing entries ``lst#<partition>#<dataset>``."""

    Meta = meta("DATASET_KEYS_TABLE", "dataset-keys")

    key = UnicodeAttribute(hash_key=True)
    dataset_id = UnicodeAttribute()
    version_id = UnicodeAttribute(null=True)
    version_number = NumberAttribute(null=True)
    gc_token = UnicodeAttribute(null=True)  # obj#<storage key>: garbage collection claimed it
    generation = NumberAttribute(null=True)  # obj#<storage key>: times it was collected
    # obj#<storage key> and cnt#<sha256>: ``<dataset id>#<version number>`` of every live
    # version pointing to that object / holding that content (the reference index).
    refs = UnicodeSetAttribute(null=True)
    profile = BinaryAttribute(null=True, legacy_encoding=False)  # prof#<version id>
    listing = UnicodeAttribute(null=True)  # lst#…: the partition
    listed = UnicodeAttribute(null=True)  # lst#…: ``<name>#<dataset id>``, the sort key
    listing_index = ListingIndex()


class DatasetVersionTable(Model):
    """One item per version, numbered per dataset."""

    Meta = meta("DATASET_VERSIONS_TABLE", "dataset-versions")

    dataset_id = UnicodeAttribute(hash_key=True)
    version_number = NumberAttribute(range_key=True)
    version_id = UnicodeAttribute()
    sha256 = UnicodeAttribute()
    size_bytes = NumberAttribute()
    storage_key = UnicodeAttribute()
    format = UnicodeAttribute()
    schema = UnicodeAttribute(null=True)
    row_count = NumberAttribute(null=True)
    parent_version_ids = string_list()
    transformation_id = UnicodeAttribute(null=True)
    tags = UnicodeAttribute(default="{}")
    created_by = UnicodeAttribute(default="")
    created_at = UTCDateTimeAttribute()
    warnings = string_list()
    source_key = UnicodeAttribute(null=True)
    schema_sampled_rows = NumberAttribute(null=True)
    restored_from = UnicodeAttribute(null=True)
    deleted_at = UTCDateTimeAttribute(null=True)
    deleted_by = UnicodeAttribute(null=True)
    cell_typing = UnicodeAttribute(null=True)

    def to_domain(self) -> DatasetVersion:
        return DatasetVersion(
            version_id=self.version_id,
            dataset_id=self.dataset_id,
            version_number=int(self.version_number),
            sha256=self.sha256,
            size_bytes=int(self.size_bytes),
            storage_key=self.storage_key,
            format=DatasetFormat(self.format),
            schema=DatasetSchema.from_dict(json.loads(self.schema)) if self.schema else None,
            row_count=None if self.row_count is None else int(self.row_count),
            parent_version_ids=list(self.parent_version_ids or []),
            transformation_id=self.transformation_id,
            tags=json.loads(self.tags or "{}"),
            created_by=self.created_by or "",
            created_at=self.created_at,
            warnings=list(self.warnings or []),
            source_key=self.source_key,
            schema_sampled_rows=None
            if self.schema_sampled_rows is None
            else int(self.schema_sampled_rows),
            restored_from=self.restored_from,
            deleted_at=self.deleted_at,
            deleted_by=self.deleted_by,
            cell_typing=self.cell_typing,
        )

    @classmethod
    def from_domain(cls, version: DatasetVersion) -> DatasetVersionTable:
        return cls(
            version.dataset_id,
            version.version_number,
            version_id=version.version_id,
            sha256=version.sha256,
            size_bytes=version.size_bytes,
            storage_key=version.storage_key,
            format=version.format.value,
            schema=_dumps(version.schema.to_dict()) if version.schema else None,
            row_count=version.row_count,
            parent_version_ids=list(version.parent_version_ids),
            transformation_id=version.transformation_id,
            tags=_dumps(version.tags),
            created_by=version.created_by,
            created_at=version.created_at,
            warnings=list(version.warnings),
            source_key=version.source_key,
            schema_sampled_rows=version.schema_sampled_rows,
            restored_from=version.restored_from,
            deleted_at=version.deleted_at,
            deleted_by=version.deleted_by,
            cell_typing=version.cell_typing,
        )


class TransformationTable(Model):
    """One item per recorded transformation."""

    Meta = meta("DATASET_TRANSFORMATIONS_TABLE", "dataset-transformations")

    transformation_id = UnicodeAttribute(hash_key=True)
    type = UnicodeAttribute()
    params = UnicodeAttribute(default="{}")
    source_version_ids = string_list()
    output_version_ids = UnicodeAttribute(default="{}")
    fitted_params = UnicodeAttribute(default="{}")
    replayable = BooleanAttribute(default=True)
    code_hash = UnicodeAttribute(null=True)
    created_by = UnicodeAttribute(default="")
    created_at = UTCDateTimeAttribute()

    def to_domain(self) -> TransformationRecord:
        return TransformationRecord(
            transformation_id=self.transformation_id,
            type=TransformationType(self.type),
            params=json.loads(self.params),
            source_version_ids=list(self.source_version_ids or []),
            output_version_ids=json.loads(self.output_version_ids),
            fitted_params=json.loads(self.fitted_params),
            replayable=bool(self.replayable),
            code_hash=self.code_hash,
            created_by=self.created_by or "",
            created_at=self.created_at,
        )


class LineageTable(Model):
    """Adjacency items: ``(node, "node")`` metadata, ``(node, "up#<parent>")`` and
    ``(node, "down#<child>")`` edges."""

    Meta = meta("DATASET_LINEAGE_TABLE", "dataset-lineage")

    node_id = UnicodeAttribute(hash_key=True)
    edge = UnicodeAttribute(range_key=True)
    dataset_id = UnicodeAttribute(null=True)
    version_number = NumberAttribute(null=True)
    sha256 = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute(null=True)
    deleted_at = UTCDateTimeAttribute(null=True)
    transformation_id = UnicodeAttribute(null=True)
    transformation_type = UnicodeAttribute(null=True)


class DatasetUsageTable(Model):
    """Which versions an experiment used."""

    Meta = meta("DATASET_USAGES_TABLE", "dataset-usages")

    experiment_id = UnicodeAttribute(hash_key=True)
    usage_key = UnicodeAttribute(range_key=True)
    dataset_id = UnicodeAttribute()
    version_id = UnicodeAttribute()
    purpose = UnicodeAttribute(default="training")
    recorded_by = UnicodeAttribute(default="")
    recorded_at = UTCDateTimeAttribute()


class DatasetRejectionTable(Model):
    """Incoming files that were moved to ``rejected/``, keyed by source key and ETag."""

    Meta = meta("DATASET_REJECTIONS_TABLE", "dataset-rejections")

    source = UnicodeAttribute(hash_key=True)
    source_key = UnicodeAttribute()
    etag = UnicodeAttribute(default="")
    rejected_key = UnicodeAttribute()
    reason = UnicodeAttribute()
    rejected_at = UTCDateTimeAttribute()


def _failed(reasons: list[str], index: int) -> bool:
    return index < len(reasons) and reasons[index] == "ConditionalCheckFailed"


MAX_LISTING_ATTEMPTS = 20
ALL_DATASETS = "all"


def listing_partitions(owner: str, access_groups: list[str]) -> list[str]:
    """The listing-index partitions a dataset is entered under: every dataset (admins list
    it), its owner's, and each of its groups'."""
    found = [ALL_DATASETS]
    if owner:
        found.append(f"own:{owner}")
    found.extend(f"grp:{group}" for group in sorted(set(access_groups)) if group)
    return found


def _listing_key(partition: str, dataset_id: str) -> str:
    return f"lst#{partition}#{dataset_id}"


def _listing_item(partition: str, dataset: Dataset) -> DatasetKeyTable:
    return DatasetKeyTable(
        _listing_key(partition, dataset.dataset_id),
        dataset_id=dataset.dataset_id,
        listing=partition,
        listed=f"{dataset.name}#{dataset.dataset_id}",
    )


def _profile_item(version: DatasetVersion, profile: bytes) -> DatasetKeyTable:
    return DatasetKeyTable(
        f"prof#{version.version_id}",
        dataset_id=version.dataset_id,
        version_id=version.version_id,
        version_number=version.version_number,
        profile=profile,
    )


def source_ref(bucket: str, key: str, etag: str, version_id: str | None = None) -> str:
    """The idempotency key of one S3 object state."""
    return f"{bucket}/{key}#{etag}#{version_id or ''}"


class DatasetRepository:
    """Datasets, versions, transformations, usages and rejections in DynamoDB."""

    # ---- datasets -------------------------------------------------------------------------

    def create_dataset(self, dataset: Dataset) -> None:
        """Stores a dataset and reserves its name atomically.

        Raises:
            Conflict: The name is taken.
        """
        declared = dataset.declared_schema
        item = DatasetTable(
            dataset.dataset_id,
            name=dataset.name,
            owner=dataset.owner,
            access_groups=list(dataset.access_groups),
            format=dataset.format.value,
            compatibility=dataset.compatibility.value,
            description=dataset.description,
            declared_schema=_dumps(declared.to_dict()) if declared else None,
            created_at=dataset.created_at,
            drift_limits=_dumps(dataset.drift_limits.to_dict()) if dataset.drift_limits else None,
            listed=True,
        )
        name = DatasetKeyTable(f"name#{dataset.name}", dataset_id=dataset.dataset_id)
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                tx.save(name, condition=DatasetKeyTable.key.does_not_exist())
                tx.save(item, condition=DatasetTable.dataset_id.does_not_exist())
                for partition in listing_partitions(dataset.owner, dataset.access_groups):
                    tx.save(_listing_item(partition, dataset))
        except TransactWriteError as exc:
            if "ConditionalCheckFailed" in cancellation_codes(exc):
                raise Conflict(f"a dataset named '{dataset.name}' already exists") from None
            raise

    def get_dataset(self, dataset_id: str) -> Dataset:
        """The dataset.

        Raises:
            DatasetNotFound: Unknown id.
        """
        try:
            return DatasetTable.get(dataset_id, consistent_read=True).to_domain()
        except DoesNotExist:
            raise DatasetNotFound(f"dataset {dataset_id} does not exist") from None

    def set_access_groups(self, dataset_id: str, access_groups: list[str]) -> Dataset:
        """Replaces a dataset's access groups and its listing entries, in one transaction
        conditional on the groups it replaces (retried when another change won).

        Raises:
            DatasetNotFound: Unknown id.
        """
        for _ in range(MAX_LISTING_ATTEMPTS):
            current = self.get_dataset(dataset_id)
            before = set(listing_partitions(current.owner, current.access_groups))
            after = set(listing_partitions(current.owner, access_groups))
            changed = replace(current, access_groups=list(access_groups))
            try:
                with TransactWrite(connection=transaction_connection()) as tx:
                    tx.update(
                        DatasetTable(dataset_id),
                        actions=[
                            DatasetTable.access_groups.set(list(access_groups)),
                            DatasetTable.listed.set(True),
                        ],
                        condition=DatasetTable.access_groups == list(current.access_groups),
                    )
                    for partition in sorted(before - after):
                        tx.delete(DatasetKeyTable(_listing_key(partition, dataset_id)))
                    for partition in sorted(after - before):
                        tx.save(_listing_item(partition, changed))
            except TransactWriteError:
                continue
            return changed
        raise Conflict("the dataset's access groups keep changing; try again")

    def list_datasets_in(
        self, partitions: list[str], limit: int, after: str | None
    ) -> tuple[list[Dataset], str | None]:
        """A page of the datasets listed under any of ``partitions``, by name: at most
        ``limit`` of them after the sort key ``after``, and the sort key to continue after
        (``None``: no more). Each partition is read through the listing index."""
        found: dict[str, str] = {}
        for partition in dict.fromkeys(partitions):
            condition = DatasetKeyTable.listed > after if after is not None else None
            for entry in DatasetKeyTable.listing_index.query(
                partition, range_key_condition=condition, limit=limit + 1
            ):
                found[entry.listed] = entry.dataset_id
        page = sorted(found)[:limit]
        ids = [found[listed] for listed in page]
        items = {item.dataset_id: item for item in DatasetTable.batch_get(ids)}
        datasets = [items[i].to_domain() for i in ids if i in items]
        return datasets, (page[-1] if len(found) > limit else None)

    def index_unlisted(self) -> int:
        """Writes the listing entries of datasets stored before the listing index existed
        (a scan of the datasets not yet marked ``listed``); returns how many."""
        count = 0
        for item in DatasetTable.scan(DatasetTable.listed.does_not_exist()):
            dataset = item.to_domain()
            try:
                with TransactWrite(connection=transaction_connection()) as tx:
                    tx.update(
                        DatasetTable(dataset.dataset_id),
                        actions=[DatasetTable.listed.set(True)],
                        condition=DatasetTable.access_groups == list(dataset.access_groups),
                    )
                    for partition in listing_partitions(dataset.owner, dataset.access_groups):
                        tx.save(_listing_item(partition, dataset))
            except TransactWriteError:
                continue  # its groups changed meanwhile: that change wrote the entries
            count += 1
        return count

    def find_dataset(self, id_or_name: str) -> Dataset | None:
        """A dataset by id or by name, or ``None``."""
        try:
            return DatasetTable.get(id_or_name, consistent_read=True).to_domain()
        except DoesNotExist:
            pass
        reserved = self._key(f"name#{id_or_name}")
        return None if reserved is None else self.get_dataset(reserved.dataset_id)

    def list_datasets(self) -> list[Dataset]:
        """Every dataset, by name."""
        return sorted((item.to_domain() for item in DatasetTable.scan()), key=lambda d: d.name)

    # ---- versions -------------------------------------------------------------------------

    def latest_version_number(self, dataset_id: str) -> int:
        """The highest version number (0 when there is none)."""
        for item in DatasetVersionTable.query(
            dataset_id, scan_index_forward=False, limit=1, consistent_read=True
        ):
            return int(item.version_number)
        return 0

    def add_version(
        self,
        version: DatasetVersion,
        source: str | None = None,
        predecessor: DatasetVersion | None = None,
        object_generation: int = 0,
        profile: bytes | None = None,
    ) -> None:
        """Writes a version with its reservations (and its column profile) in one transaction.

        Args:
            version: The version.
            source: The S3 object it was ingested from (reserved with it).
            predecessor: The version it must directly follow (its schema was checked against
                it): the transaction fails unless that version is number
                ``version.version_number - 1``.
            object_generation: The stored object's collection generation when the caller saw
                its bytes (:meth:`object_state`): the transaction fails if garbage collection
                has claimed or deleted the object since.
            profile: The version's compressed column profile, stored as ``prof#<version id>``.

        Raises:
            DuplicateContent: The dataset already has this content hash.
            DuplicateSource: This source object was already ingested.
            VersionNumberTaken: Another writer took the number, or the predecessor is not the
                one checked (retry with the next).
        """
        keys = self._reservations(version, source)
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                tx.save(
                    DatasetVersionTable.from_domain(version),
                    condition=DatasetVersionTable.version_number.does_not_exist(),
                )
                # A restore moves the content's reservation to the new version (it must exist).
                restoring = version.restored_from is not None
                tx.save(
                    keys[0],
                    condition=DatasetKeyTable.key.exists()
                    if restoring
                    else DatasetKeyTable.key.does_not_exist(),
                )
                for item in keys[1:]:
                    tx.save(item, condition=DatasetKeyTable.key.does_not_exist())
                if profile is not None:  # last, so the cancellation reasons keep their places
                    tx.save(_profile_item(version, profile))
                # The version is referenced from its object's and its content's index items,
                # on condition that garbage collection has not claimed the object (see
                # collect_garbage); updates go after the puts, so this one comes last but one.
                tx.update(
                    DatasetKeyTable(f"obj#{version.storage_key}"),
                    actions=_referenced(version, True),
                    condition=DatasetKeyTable.gc_token.does_not_exist()
                    & (
                        DatasetKeyTable.generation.does_not_exist()
                        if object_generation == 0
                        else DatasetKeyTable.generation == object_generation
                    ),
                )
                tx.update(
                    DatasetKeyTable(f"cnt#{version.sha256}"), actions=_referenced(version, True)
                )
                if predecessor is not None:
                    tx.condition_check(
                        DatasetVersionTable,
                        version.dataset_id,
                        range_key=version.version_number - 1,
                        condition=DatasetVersionTable.version_id == predecessor.version_id,
                    )
        except TransactWriteError as exc:
            reasons = cancellation_codes(exc)
            # pynamodb sends condition checks first (the predecessor's), then the puts in
            # order (the version, its reservations, the profile), then the updates.
            first = 0 if predecessor is None else 1
            puts = 1 + len(keys) + (profile is not None)
            if _failed(reasons, first + puts):
                raise ObjectCollected("garbage collection claimed the stored object") from None
            if _failed(reasons, first + 1):
                if version.restored_from is not None:
                    raise Conflict(
                        "the content of the restored version is no longer held"
                    ) from None
                raise DuplicateContent("identical content is already a version") from None
            if source is not None and _failed(reasons, first + 3):
                raise DuplicateSource("this source object was already ingested") from None
            if _failed(reasons, first) or (predecessor is not None and _failed(reasons, 0)):
                raise VersionNumberTaken("version number taken") from None
            raise

    def _reservations(self, version: DatasetVersion, source: str | None) -> list[DatasetKeyTable]:
        """The content's, the id's and (for S3 ingests) the source's reservation items."""
        keys = [
            DatasetKeyTable(
                f"sha#{version.dataset_id}#{version.sha256}",
                dataset_id=version.dataset_id,
                version_id=version.version_id,
                version_number=version.version_number,
            ),
            self._version_key(version),
        ]
        if source is not None:
            keys.append(
                DatasetKeyTable(
                    f"src#{source}",
                    dataset_id=version.dataset_id,
                    version_id=version.version_id,
                    version_number=version.version_number,
                )
            )
        return keys

    @staticmethod
    def _version_key(version: DatasetVersion) -> DatasetKeyTable:
        return DatasetKeyTable(
            f"vid#{version.version_id}",
            dataset_id=version.dataset_id,
            version_id=version.version_id,
            version_number=version.version_number,
        )

    def get_profile(self, version_id: str) -> bytes | None:
        """A version's compressed column profile (``None``: it has none)."""
        found = self._key(f"prof#{version_id}")
        return None if found is None or found.profile is None else bytes(found.profile)

    def _key(self, key: str) -> DatasetKeyTable | None:
        try:
            return DatasetKeyTable.get(key, consistent_read=True)
        except DoesNotExist:
            return None

    def reserve_source(self, source: str, version: DatasetVersion) -> None:
        """Remembers that a source object resolved to an existing version (dedup path)."""
        try:
            DatasetKeyTable(
                f"src#{source}",
                dataset_id=version.dataset_id,
                version_id=version.version_id,
                version_number=version.version_number,
            ).save(condition=DatasetKeyTable.key.does_not_exist())
        except PutError as exc:
            if "ConditionalCheckFailed" not in str(exc):
                raise

    def version_for_source(self, source: str) -> DatasetVersion | None:
        """The version a source object was ingested as, if any."""
        found = self._key(f"src#{source}")
        return None if found is None else self.get_version(found.dataset_id, found.version_number)

    def version_by_hash(self, dataset_id: str, sha256: str) -> DatasetVersion | None:
        """The dataset's version with this content hash, if any."""
        found = self._key(f"sha#{dataset_id}#{sha256}")
        return None if found is None else self.get_version(dataset_id, found.version_number)

    def get_version(self, dataset_id: str, version_number: Any) -> DatasetVersion:
        """One version by number.

        Raises:
            DatasetVersionNotFound: Unknown number.
        """
        try:
            item = DatasetVersionTable.get(dataset_id, int(version_number), consistent_read=True)
        except DoesNotExist:
            raise DatasetVersionNotFound(
                f"dataset {dataset_id} has no version {version_number}"
            ) from None
        return item.to_domain()

    def get_version_by_id(self, version_id: str) -> DatasetVersion:
        """One version by its id.

        Raises:
            DatasetVersionNotFound: Unknown id.
        """
        found = self._key(f"vid#{version_id}")
        if found is None:
            raise DatasetVersionNotFound(f"version {version_id} does not exist")
        return self.get_version(found.dataset_id, found.version_number)

    def list_versions(self, dataset_id: str, limit: int, offset: int) -> list[DatasetVersion]:
        """Versions ``offset+1 … offset+limit`` in ascending order (numbers are consecutive)."""
        query = DatasetVersionTable.query(
            dataset_id,
            DatasetVersionTable.version_number > offset,
            limit=limit,
            consistent_read=True,
        )
        return [item.to_domain() for item in query]

    def versions_descending(self, dataset_id: str) -> Iterator[DatasetVersion]:
        """Versions from the newest backwards (lazily paged)."""
        for item in DatasetVersionTable.query(
            dataset_id, scan_index_forward=False, consistent_read=True
        ):
            yield item.to_domain()

    # ---- transformations ------------------------------------------------------------------

    # ---- deletion, retention and garbage collection ----------------------------------------

    def set_retention(self, dataset_id: str, policy: RetentionPolicy | None) -> Dataset:
        """Stores a dataset's retention policy (``None``: keep everything)."""
        item = DatasetTable.get(dataset_id, consistent_read=True)
        item.update(
            actions=[
                DatasetTable.retention.set(_dumps(policy.to_dict()))
                if policy is not None
                else DatasetTable.retention.remove()
            ]
        )
        return item.to_domain()

    def set_drift_limits(self, dataset_id: str, limits: DriftLimits | None) -> Dataset:
        """Stores (or, with ``None``, removes) a dataset's drift limits."""
        item = DatasetTable.get(dataset_id, consistent_read=True)
        item.update(
            actions=[
                DatasetTable.drift_limits.set(_dumps(limits.to_dict()))
                if limits is not None
                else DatasetTable.drift_limits.remove()
            ]
        )
        return item.to_domain()

    def add_warnings(self, version: DatasetVersion, warnings: list[str]) -> None:
        """Appends warnings to a stored version."""
        DatasetVersionTable.from_domain(version).update(
            actions=[
                DatasetVersionTable.warnings.set(DatasetVersionTable.warnings.append(warnings))
            ]
        )

    def delete_version(self, version: DatasetVersion, deleted_by: str, at: Any) -> DatasetVersion:
        """Tombstones a version and frees its content reservation (if it holds it), at once.

        Raises:
            VersionNumberTaken: It was deleted meanwhile (or its reservation moved).
        """
        item = DatasetVersionTable.from_domain(version)
        sha_key = f"sha#{version.dataset_id}#{version.sha256}"
        reserved = self._key(sha_key)
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                tx.update(
                    item,
                    actions=[
                        DatasetVersionTable.deleted_at.set(at),
                        DatasetVersionTable.deleted_by.set(deleted_by),
                    ],
                    condition=DatasetVersionTable.deleted_at.does_not_exist(),
                )
                # The profile holds values of the content (top values, extremes): it goes too.
                tx.delete(DatasetKeyTable(f"prof#{version.version_id}"))
                for index_key in (f"obj#{version.storage_key}", f"cnt#{version.sha256}"):
                    tx.update(DatasetKeyTable(index_key), actions=_referenced(version, False))
                if reserved is not None and reserved.version_id == version.version_id:
                    tx.delete(
                        DatasetKeyTable(sha_key),
                        condition=DatasetKeyTable.version_id == version.version_id,
                    )
        except TransactWriteError:
            raise VersionNumberTaken("the version changed meanwhile") from None
        return self.get_version(version.dataset_id, version.version_number)

    def used_version_ids(self, dataset_id: str) -> set[str]:
        """Versions of the dataset any experiment recorded using (a scan: scheduled work)."""
        found = DatasetUsageTable.scan(DatasetUsageTable.dataset_id == dataset_id)
        return {item.version_id for item in found}

    def referenced(self, storage_key: str) -> bool:
        """Whether a live version points to the stored object (its index item, read
        consistently)."""
        found = self._key(f"obj#{storage_key}")
        return found is not None and bool(found.refs)

    def live_versions_with_content(self, sha256: str) -> list[DatasetVersion]:
        """Every live version, of any dataset, whose content has this sha256 (read from the
        content's index item, not a scan)."""
        found = self._key(f"cnt#{sha256}")
        versions = []
        for ref in sorted(found.refs or ()) if found is not None else ():
            dataset_id, _, number = ref.rpartition("#")
            try:
                version = self.get_version(dataset_id, int(number))
            except DatasetVersionNotFound:
                continue
            if not version.deleted and version.sha256 == sha256:
                versions.append(version)
        return versions

    def index_references(self) -> int:
        """Writes the reference index of versions stored before it existed: once, a
        consistent scan of the versions, then a marker item that makes every later call one
        read. Idempotent (set additions); a version deleted meanwhile is not indexed (the write
        is conditional on it being live). Returns how many versions were indexed (0 once
        done)."""
        if self._key(REFERENCES_MARKER) is not None:
            return 0
        count = 0
        for item in DatasetVersionTable.scan(
            DatasetVersionTable.deleted_at.does_not_exist(), consistent_read=True
        ):
            version = item.to_domain()
            try:
                with TransactWrite(connection=transaction_connection()) as tx:
                    tx.condition_check(
                        DatasetVersionTable,
                        version.dataset_id,
                        range_key=version.version_number,
                        condition=DatasetVersionTable.deleted_at.does_not_exist(),
                    )
                    for index_key in (f"obj#{version.storage_key}", f"cnt#{version.sha256}"):
                        tx.update(DatasetKeyTable(index_key), actions=_referenced(version, True))
            except TransactWriteError:
                continue  # deleted meanwhile (or its object is being collected: it is gone)
            count += 1
        DatasetKeyTable(REFERENCES_MARKER, dataset_id="*").save()
        return count

    def object_state(self, storage_key: str) -> tuple[int, bool]:
        """A stored object's collection generation (how often it was deleted) and whether a
        collection has claimed it now."""
        found = self._key(f"obj#{storage_key}")
        if found is None:
            return 0, False
        return int(found.generation or 0), found.gc_token is not None

    def claim_object(self, storage_key: str, token: str) -> bool:
        """Marks a stored object that no live version points to as being collected; new
        versions cannot point to it until :meth:`release_object`. Returns whether the claim
        was made (``False``: claimed by another collection, or referenced)."""
        try:
            DatasetKeyTable(f"obj#{storage_key}").update(
                actions=[DatasetKeyTable.gc_token.set(token), DatasetKeyTable.dataset_id.set("*")],
                condition=DatasetKeyTable.gc_token.does_not_exist()
                & DatasetKeyTable.refs.does_not_exist(),
            )
        except UpdateError as exc:
            if "ConditionalCheckFailed" in str(exc):
                return False
            raise
        return True

    def release_object(self, storage_key: str, token: str, deleted: bool) -> None:
        """Ends a claim; when the object was deleted its generation moves on, so that a writer
        that saw the bytes before fails its transaction and stores them again."""
        actions: list[Action] = [DatasetKeyTable.gc_token.remove()]
        if deleted:
            actions.append(DatasetKeyTable.generation.add(1))
        DatasetKeyTable(f"obj#{storage_key}").update(
            actions=actions, condition=DatasetKeyTable.gc_token == token
        )

    def save_transformation(self, record: TransformationRecord) -> None:
        """Stores (or completes) a transformation record."""
        TransformationTable(
            record.transformation_id,
            type=record.type.value,
            params=_dumps(record.params),
            source_version_ids=list(record.source_version_ids),
            output_version_ids=_dumps(record.output_version_ids),
            fitted_params=_dumps(record.fitted_params),
            replayable=record.replayable,
            code_hash=record.code_hash,
            created_by=record.created_by,
            created_at=record.created_at,
        ).save()

    def get_transformation(self, transformation_id: str) -> TransformationRecord:
        """One transformation record.

        Raises:
            TransformationNotFound: Unknown id.
        """
        try:
            return TransformationTable.get(transformation_id, consistent_read=True).to_domain()
        except DoesNotExist:
            raise TransformationNotFound(
                f"transformation {transformation_id} does not exist"
            ) from None

    # ---- usages and rejections ------------------------------------------------------------

    def record_usage(self, usage: DatasetUsage) -> None:
        """Stores a usage (idempotent per experiment, version and purpose)."""
        DatasetUsageTable(
            usage.experiment_id,
            f"{usage.dataset_id}#{usage.version_id}#{usage.purpose}",
            dataset_id=usage.dataset_id,
            version_id=usage.version_id,
            purpose=usage.purpose,
            recorded_by=usage.recorded_by,
            recorded_at=usage.recorded_at,
        ).save()

    def remove_usage(self, usage: DatasetUsage) -> None:
        """Deletes a usage (for an experiment whose creation failed; absent is fine)."""
        DatasetUsageTable(
            usage.experiment_id, f"{usage.dataset_id}#{usage.version_id}#{usage.purpose}"
        ).delete()

    def usages(self, experiment_id: str, dataset_id: str | None = None) -> list[DatasetUsage]:
        """An experiment's usages (optionally of one dataset), oldest first."""
        condition = None
        if dataset_id is not None:
            condition = DatasetUsageTable.usage_key.startswith(f"{dataset_id}#")
        items = DatasetUsageTable.query(experiment_id, condition, consistent_read=True)
        found = [
            DatasetUsage(
                experiment_id=item.experiment_id,
                dataset_id=item.dataset_id,
                version_id=item.version_id,
                purpose=item.purpose,
                recorded_by=item.recorded_by or "",
                recorded_at=item.recorded_at,
            )
            for item in items
        ]
        return sorted(found, key=lambda usage: usage.recorded_at)

    def record_rejection(self, rejection: Rejection) -> None:
        """Stores why an incoming file was rejected."""
        DatasetRejectionTable(
            f"{rejection.source_key}#{rejection.etag}",
            source_key=rejection.source_key,
            etag=rejection.etag,
            rejected_key=rejection.rejected_key,
            reason=rejection.reason,
            rejected_at=rejection.rejected_at,
        ).save()

    def get_rejection(self, source_key: str, etag: str) -> Rejection | None:
        """The rejection of one incoming object, if any."""
        try:
            item = DatasetRejectionTable.get(f"{source_key}#{etag}", consistent_read=True)
        except DoesNotExist:
            return None
        return Rejection(
            source_key=item.source_key,
            etag=item.etag,
            rejected_key=item.rejected_key,
            reason=item.reason,
            rejected_at=item.rejected_at,
        )

    def list_rejections(self, limit: int = 100) -> list[Rejection]:
        """Recent rejections (any order; for operators)."""
        return [
            Rejection(i.source_key, i.etag, i.rejected_key, i.reason, i.rejected_at)
            for i in DatasetRejectionTable.scan(limit=limit)
        ]


class LineageRepository:
    """Adjacency items of the lineage DAG."""

    def put_node(self, node: LineageNode) -> None:
        """Stores a node's metadata (idempotent)."""
        LineageTable(
            node.version_id,
            "node",
            dataset_id=node.dataset_id,
            version_number=node.version_number,
            sha256=node.sha256,
            created_at=node.created_at,
            deleted_at=node.deleted_at,
        ).save()

    def put_edge(self, edge: LineageEdge) -> None:
        """Stores both directions of an edge in one transaction."""
        attrs: dict[str, Any] = {
            "transformation_id": edge.transformation_id,
            "transformation_type": edge.transformation_type,
        }
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.save(LineageTable(edge.child_id, f"up#{edge.parent_id}", **attrs))
            tx.save(LineageTable(edge.parent_id, f"down#{edge.child_id}", **attrs))

    def get_nodes(self, node_ids: Iterable[str]) -> dict[str, LineageNode]:
        """Node metadata for several ids (one BatchGetItem per 100 ids)."""
        keys = [(node_id, "node") for node_id in dict.fromkeys(node_ids)]
        found: dict[str, LineageNode] = {}
        for item in LineageTable.batch_get(keys):
            found[item.node_id] = LineageNode(
                version_id=item.node_id,
                dataset_id=item.dataset_id or "",
                version_number=int(item.version_number or 0),
                sha256=item.sha256 or "",
                created_at=item.created_at,
                deleted_at=item.deleted_at,
            )
        return found

    def edges(self, node_id: str, direction: str) -> list[LineageEdge]:
        """The edges of one node: ``up`` (to parents) or ``down`` (to children)."""
        prefix = "up#" if direction == "up" else "down#"
        edges = []
        for item in LineageTable.query(node_id, LineageTable.edge.startswith(prefix)):
            other = item.edge[len(prefix) :]
            parent, child = (other, node_id) if direction == "up" else (node_id, other)
            edges.append(
                LineageEdge(parent, child, item.transformation_id, item.transformation_type)
            )
        return edges


# The DynamoDB tables this module declares (listed by chalicelib.domains).
class DatasetTagTable(Model):
    """Tags: ``cur#<tag>`` (where it points now) and ``log#<tag>#<time>#<id>`` (each move)."""

    Meta = meta("DATASET_TAGS_TABLE", "dataset-tags")

    dataset_id = UnicodeAttribute(hash_key=True)
    tag_key = UnicodeAttribute(range_key=True)
    tag = UnicodeAttribute()
    version_id = UnicodeAttribute()
    version_number = NumberAttribute()
    previous_version_id = UnicodeAttribute(null=True)
    moved_by = UnicodeAttribute(default="")
    moved_at = UTCDateTimeAttribute()

    def to_domain(self) -> TagMove:
        return TagMove(
            dataset_id=self.dataset_id,
            tag=self.tag,
            version_id=self.version_id,
            version_number=int(self.version_number),
            previous_version_id=self.previous_version_id,
            moved_by=self.moved_by or "",
            moved_at=self.moved_at,
        )


def _tag_item(key: str, move: TagMove) -> DatasetTagTable:
    return DatasetTagTable(
        move.dataset_id,
        key,
        tag=move.tag,
        version_id=move.version_id,
        version_number=move.version_number,
        previous_version_id=move.previous_version_id,
        moved_by=move.moved_by,
        moved_at=move.moved_at,
    )


class TagRepository:
    """Where each tag points, and every move of it."""

    def current(self, dataset_id: str, tag: str) -> TagMove | None:
        """The tag's last move (where it points), or ``None``."""
        try:
            return DatasetTagTable.get(dataset_id, f"cur#{tag}", consistent_read=True).to_domain()
        except DoesNotExist:
            return None

    def move(self, move: TagMove) -> None:
        """Points the tag at ``move.version_id`` if it still points at
        ``move.previous_version_id``, and logs the move, in one transaction.

        Raises:
            VersionNumberTaken: Another move came first (read again and retry).
        """
        cur = DatasetTagTable.tag_key
        condition = (
            cur.does_not_exist()
            if move.previous_version_id is None
            else DatasetTagTable.version_id == move.previous_version_id
        )
        stamp = f"{move.moved_at.isoformat()}#{uuid.uuid4().hex[:8]}"
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                tx.save(_tag_item(f"cur#{move.tag}", move), condition=condition)
                tx.save(_tag_item(f"log#{move.tag}#{stamp}", move))
        except TransactWriteError as exc:
            if _failed(cancellation_codes(exc), 0):
                raise VersionNumberTaken("the tag moved meanwhile") from None
            raise

    def list_current(self, dataset_id: str) -> list[TagMove]:
        """Where every tag of the dataset points, by name."""
        found = DatasetTagTable.query(
            dataset_id, DatasetTagTable.tag_key.startswith("cur#"), consistent_read=True
        )
        return [item.to_domain() for item in found]

    def history(self, dataset_id: str, tag: str) -> list[TagMove]:
        """Every move of a tag, oldest first."""
        found = DatasetTagTable.query(
            dataset_id, DatasetTagTable.tag_key.startswith(f"log#{tag}#"), consistent_read=True
        )
        return [item.to_domain() for item in found]


TABLES = (
    DatasetTable,
    DatasetKeyTable,
    DatasetVersionTable,
    TransformationTable,
    LineageTable,
    DatasetUsageTable,
    DatasetRejectionTable,
    DatasetTagTable,
)


REFERENCES_MARKER = "mig#references"


def _referenced(version: DatasetVersion, add: bool) -> list[Action]:
    """The update adding (or removing) a version from an index item's ``refs``."""
    ref = {f"{version.dataset_id}#{version.version_number}"}
    return [
        DatasetKeyTable.refs.add(ref) if add else DatasetKeyTable.refs.delete(ref),
        DatasetKeyTable.dataset_id.set("*"),
    ]
