"""The dataset versioning engine: datasets, content-addressed versions, schema checks.

Content is streamed once (:mod:`~chalicelib.dataversion.content`): every chunk updates the
sha256, the row counter and the schema sampler, and goes on to S3 (inline data, as a multipart
upload to a temporary key) or stays there (S3 ingest, :mod:`~chalicelib.dataversion.ingest`,
where the object is then copied server-side). The bytes are stored once per distinct
content at ``cas/sha256/ab/cdef…``; identical content returns the existing version.

Version numbers are allocated by a conditional transaction on ``(dataset_id, version_number)``
retried with the next number, so concurrent writers get consecutive numbers with no gaps.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import Conflict, ServiceUnavailable, ValidationError
from chalicelib.core.events import EventBus, get_event_bus
from chalicelib.dataversion.content import (
    ContentObserver,
    DataSource,
    ScannedContent,
    VersionOutcome,
    VersionRequest,
    iter_chunks,
)
from chalicelib.dataversion.errors import (
    DatasetProfileNotFound,
    DatasetVersionGone,
    DatasetVersionNotFound,
    DuplicateContent,
    DuplicateSource,
    ObjectCollected,
    VersionNumberTaken,
)
from chalicelib.dataversion.ingest import IngestOutcome, ObjectIngest
from chalicelib.dataversion.legacy_typing import CELL_TYPING, legacy_csv_types, retyped
from chalicelib.dataversion.lineage import LineageGraph
from chalicelib.dataversion.models import (
    PICKLE_WARNING,
    SCHEMA_FORMATS,
    TABULAR_FORMATS,
    CompatibilityMode,
    Dataset,
    DatasetFormat,
    DatasetSchema,
    DatasetVersion,
    DriftLimits,
    TransformationRecord,
    check_drift_limits,
)
from chalicelib.dataversion.reader import DEFAULT_SAMPLE_ROWS as PROFILE_SAMPLE_ROWS
from chalicelib.dataversion.repository import DatasetRepository
from chalicelib.dataversion.retention import Lifecycle
from chalicelib.dataversion.schema import (
    DEFAULT_SAMPLE_ROWS,
    WIDENINGS,
    check_declared,
    check_schema_definition,
    validate_against_history,
    validate_schema_evolution,
)
from chalicelib.dataversion.storage import DataStore, cas_key, dataset_of
from chalicelib.dataversion.tags import TagBook

__all__ = [
    "DataSource",
    "DatasetVersioningEngine",
    "IngestOutcome",
    "VersionOutcome",
    "VersionRequest",
    "iter_chunks",
    "reconcile_inferred",
]

MAX_ALLOCATION_ATTEMPTS = 200


def reconcile_inferred(previous: DatasetSchema | None, inferred: DatasetSchema) -> DatasetSchema:
    """Keeps the previous version's wider types and nullability where the new data fits them,
    and makes columns the previous version did not have nullable.

    Inference only sees values, so a float column whose new values happen to be whole numbers
    would otherwise be inferred as ``int`` and look like a narrowing. Likewise a column that
    first appears fully populated has not been declared required: nothing says later data must
    fill it. So requiredness comes from the version that introduces a column only when that is
    the first version (its fully populated columns are required); a column added later by
    inference is optional, and adding it is compatible in every mode. A declared schema states
    nullability explicitly and is taken as written.
    """
    if previous is None:
        return inferred
    columns = dict(inferred.columns)
    nullable = set(inferred.nullable)
    for name, kind in inferred.columns.items():
        before = previous.columns.get(name)
        if before is None:
            nullable.add(name)
            continue
        if kind == before or (kind, before) in WIDENINGS or before == "string":
            columns[name] = before
        if previous.is_nullable(name):
            nullable.add(name)
    keep = [name for name in previous.primary_key if name in columns]
    partitions = [name for name in previous.partition_keys if name in columns]
    return DatasetSchema(
        columns=columns,
        primary_key=keep if len(keep) == len(previous.primary_key) else [],
        partition_keys=partitions,
        nullable=[name for name in columns if name in nullable],
        schema_version=previous.schema_version,
    )


class DatasetVersioningEngine:
    """Creates datasets and versions.

    Args:
        repository: DynamoDB access.
        store: S3 access.
        lineage: The lineage graph versions are added to.
        event_bus: Where lifecycle events go.
        clock: Time source.
        sample_rows: Rows used for schema inference (row counts cover every row).
        profile_rows: Records drawn for the column profile of a CSV or JSON-lines version
            (0: no profiles).
    """

    def __init__(
        self,
        repository: DatasetRepository | None = None,
        store: DataStore | None = None,
        lineage: LineageGraph | None = None,
        event_bus: EventBus | None = None,
        clock: Clock | None = None,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        profile_rows: int = PROFILE_SAMPLE_ROWS,
    ) -> None:
        self.repository = repository or DatasetRepository()
        self.store = store or DataStore()
        self.lineage = lineage or LineageGraph()
        self.event_bus = event_bus or get_event_bus()
        self.clock = clock or SystemClock()
        self.sample_rows = sample_rows
        self.profile_rows = profile_rows
        self.tags = TagBook(clock=self.clock)
        self.lifecycle = Lifecycle(
            self.repository, self.store, self.tags, self.lineage, self.event_bus, self.clock
        )
        self.ingestion = ObjectIngest(
            self.repository, self.store, self.event_bus, self.clock, self._observer, self._commit
        )

    def _observer(self, fmt: DatasetFormat) -> ContentObserver:
        return ContentObserver(fmt, self.sample_rows, self.profile_rows)

    # ---- datasets -------------------------------------------------------------------------

    def create_dataset(
        self,
        name: str,
        owner: str,
        access_groups: Iterable[str] = (),
        format: DatasetFormat | str = DatasetFormat.CSV,
        compatibility: CompatibilityMode | str = CompatibilityMode.BACKWARD,
        description: str = "",
        schema: DatasetSchema | None = None,
        drift_limits: DriftLimits | None = None,
    ) -> Dataset:
        """Creates a dataset with a unique name.

        Raises:
            ValidationError: Empty name or a name with ``/``, or drift limits that check
                nothing or cannot be met.
            UnprocessableEntity: An invalid declared schema.
            Conflict: The name is taken (409).
        """
        clean = name.strip()
        if not clean or "/" in clean:
            raise ValidationError("name must be non-empty and must not contain '/'")
        if schema is not None:
            check_schema_definition(schema)
        if drift_limits is not None:
            check_drift_limits(drift_limits)
        dataset = Dataset(
            dataset_id=f"ds-{uuid.uuid4().hex[:16]}",
            name=clean,
            owner=owner,
            access_groups=sorted(set(access_groups)),
            format=DatasetFormat(format),
            compatibility=CompatibilityMode(compatibility),
            description=description,
            declared_schema=schema,
            created_at=self.clock.now(),
            drift_limits=drift_limits,
        )
        self.repository.create_dataset(dataset)
        self.event_bus.publish(
            "DatasetCreated",
            {"dataset_id": dataset.dataset_id, "name": dataset.name, "owner": owner},
        )
        return dataset

    def get_dataset(self, dataset_id: str) -> Dataset:
        """A dataset (404 if unknown)."""
        return self.repository.get_dataset(dataset_id)

    def list_datasets(self) -> list[Dataset]:
        """Every dataset (callers filter by access)."""
        return self.repository.list_datasets()

    # ---- creating versions ----------------------------------------------------------------

    def create_version(
        self,
        dataset_id: str,
        data: DataSource,
        schema: DatasetSchema | None = None,
        parent_version_id: str | None = None,
        transformation: TransformationRecord | None = None,
        tags: dict[str, str] | None = None,
        created_by: str = "",
        format: DatasetFormat | str | None = None,
    ) -> DatasetVersion:
        """Stores content as a new version (or returns the version with identical content).

        Args:
            dataset_id: The dataset.
            data: Bytes, text, a binary file object or an iterable of byte chunks; streamed.
            schema: A schema the content must match.
            parent_version_id: The version it derives from.
            transformation: The transformation that produced it.
            tags: Labels.
            created_by: Principal.
            format: Content format (default: the dataset's).

        Raises:
            SchemaMismatch: The content does not match the declared schema (422).
            SchemaEvolutionError: The schema is incompatible with the previous version (422).
        """
        request = VersionRequest(
            schema=schema,
            parent_version_ids=[parent_version_id] if parent_version_id else [],
            transformation=transformation,
            tags=dict(tags or {}),
            created_by=created_by,
            format=DatasetFormat(format) if format else None,
        )
        return self.store_version(dataset_id, data, request).version

    def store_version(self, dataset_id: str, data: Any, request: VersionRequest) -> VersionOutcome:
        """Like :meth:`create_version`, also telling whether a new version was written."""
        dataset = self.repository.get_dataset(dataset_id)
        fmt = request.format or dataset.format
        self._check_parents(request.parent_version_ids)
        observer = self._observer(fmt)
        staged, _ = self.store.upload_stream(observer.watch(iter_chunks(data)))
        try:
            content = observer.result()
            return self._commit(dataset, fmt, content, request, staged, None, None)
        finally:
            self.store.delete(staged)

    def _check_parents(self, parent_ids: list[str]) -> None:
        for parent in parent_ids:
            self.repository.get_version_by_id(parent)

    def _commit(
        self,
        dataset: Dataset,
        fmt: DatasetFormat,
        content: ScannedContent,
        request: VersionRequest,
        staged_key: str,
        staged_version: str | None,
        source: str | None,
    ) -> VersionOutcome:
        existing = self.repository.version_by_hash(dataset.dataset_id, content.sha256)
        if existing is not None:
            return self._deduplicated(existing, source, request)
        latest = self._latest(dataset.dataset_id)
        schema = self._resolve_schema(dataset, fmt, content, request, latest)
        # A direct upload stays at the dataset's own address; everything else is shared by digest.
        storage_key = staged_key if dataset_of(staged_key) else cas_key(content.sha256)

        def ensure_stored() -> int:
            """Stores the bytes at their address unless there; returns the object's collection
            generation read before the check (the version write is conditional on it)."""

            def copy() -> bool:
                if self.store.exists(storage_key):
                    return True
                if staged_key == storage_key:  # a direct upload collected before its ingest
                    return False
                self.store.copy(staged_key, storage_key, content.size, staged_version)
                return True

            return self._object_generation(storage_key, copy)

        generation = ensure_stored()
        version = DatasetVersion(
            version_id=f"dv-{uuid.uuid4().hex[:16]}",
            dataset_id=dataset.dataset_id,
            version_number=(latest.version_number if latest else 0) + 1,
            sha256=content.sha256,
            size_bytes=content.size,
            storage_key=storage_key,
            format=fmt,
            schema=schema,
            row_count=content.row_count,
            parent_version_ids=list(request.parent_version_ids),
            transformation_id=request.transformation.transformation_id
            if request.transformation
            else None,
            tags=dict(request.tags),
            created_by=request.created_by,
            created_at=self.clock.now(),
            warnings=[PICKLE_WARNING] if fmt is DatasetFormat.PICKLE else [],
            source_key=request.source_key,
            schema_sampled_rows=content.sampled_rows,
            cell_typing=CELL_TYPING if fmt is DatasetFormat.CSV else None,
        )

        def follow(predecessor: DatasetVersion | None) -> DatasetSchema | None:
            return self._resolve_schema(dataset, fmt, content, request, predecessor)

        outcome = self._allocate(
            version,
            latest,
            follow,
            source,
            request.transformation,
            ensure_stored,
            generation,
            content.profile,
        )
        if outcome.created and dataset.drift_limits is not None:
            return self._flag_drift(dataset.drift_limits, outcome.version, content.sample)
        return outcome

    def _flag_drift(
        self, limits: DriftLimits, version: DatasetVersion, sample: Any
    ) -> VersionOutcome:
        """Checks a new version against the live version before it under the dataset's drift
        limits; a breach (or a check that could not run) becomes a warning on the version, and
        a breach a ``DatasetDriftDetected`` event. The version stays created either way."""
        from chalicelib.dataversion.limits import check_limits

        before = self._live(self._previous(version))
        if before is None or version.format not in (DatasetFormat.CSV, DatasetFormat.JSON):
            return VersionOutcome(version, created=True)
        warnings, breaches = check_limits(self.store, limits, before, version, sample)
        if not warnings:
            return VersionOutcome(version, created=True)
        self.repository.add_warnings(version, warnings)
        flagged = replace(version, warnings=[*version.warnings, *warnings])
        if breaches:
            self.event_bus.publish(
                "DatasetDriftDetected",
                {
                    **_version_event(flagged),
                    "against_version_id": before.version_id,
                    "against_version_number": before.version_number,
                    "limits": limits.to_dict(),
                    "columns": breaches,
                },
            )
        return VersionOutcome(flagged, created=True)

    def _previous(self, version: DatasetVersion) -> DatasetVersion | None:
        if version.version_number <= 1:
            return None
        return self.repository.get_version(version.dataset_id, version.version_number - 1)

    def set_drift_limits(self, dataset_id: str, limits: DriftLimits | None) -> Dataset:
        """Stores (or, with ``None``, removes) the drift limits new versions are checked
        against."""
        if limits is not None:
            check_drift_limits(limits)
        self.repository.get_dataset(dataset_id)
        return self.repository.set_drift_limits(dataset_id, limits)

    def _object_generation(self, storage_key: str, stored: Callable[[], bool]) -> int:
        """Waits out a garbage collection that claimed the object, then makes sure its bytes
        are stored (``stored``); returns the generation read before that check.

        Raises:
            Conflict: The bytes are gone and cannot be stored again.
        """
        for attempt in range(MAX_ALLOCATION_ATTEMPTS):
            generation, claimed = self.repository.object_state(storage_key)
            if claimed:
                time.sleep(random.uniform(0.005, 0.02 * min(attempt + 1, 10)))
                continue
            if not stored():
                raise Conflict(
                    "the stored content was deleted (garbage collection); upload it again"
                )
            return generation
        raise ServiceUnavailable("the stored content stays claimed by garbage collection")

    def _deduplicated(
        self, existing: DatasetVersion, source: str | None, request: VersionRequest | None = None
    ) -> VersionOutcome:
        """The version that already holds the content, with the parents the request names
        recorded as new lineage edges (see :meth:`_link_parents`)."""
        if source is not None:
            self.repository.reserve_source(source, existing)
        self.lineage.add_version_node(existing)
        if request is not None and request.parent_version_ids:
            self._link_parents(existing, request)
        return VersionOutcome(existing, created=False)

    def _link_parents(self, existing: DatasetVersion, request: VersionRequest) -> None:
        """Records ``parent → existing`` for each parent not yet linked. Never an edge from a
        version to itself (a transformation whose output equals its input adds nothing), nor
        one that would close a cycle (content equal to an ancestor's: the DAG keeps the
        original derivation)."""
        linked = {
            edge.parent_id for edge in self.lineage.repository.edges(existing.version_id, "up")
        }
        linked |= {existing.version_id, *existing.parent_version_ids}
        for parent in dict.fromkeys(request.parent_version_ids):
            if parent in linked or self.lineage.detect_cycles([parent], existing.version_id):
                continue
            self.lineage.add_transformation_edge(
                [parent], existing.version_id, request.transformation
            )

    def _latest(self, dataset_id: str) -> DatasetVersion | None:
        number = self.repository.latest_version_number(dataset_id)
        return self.repository.get_version(dataset_id, number) if number else None

    def _live(self, version: DatasetVersion | None) -> DatasetVersion | None:
        """``version`` if it is live, else the newest live version before it (``None``: none)."""
        if version is None or not version.deleted:
            return version
        for found in self.repository.versions_descending(version.dataset_id):
            if found.version_number < version.version_number and not found.deleted:
                return found
        return None

    def _resolve_schema(
        self,
        dataset: Dataset,
        fmt: DatasetFormat,
        content: ScannedContent,
        request: VersionRequest,
        latest: DatasetVersion | None,
    ) -> DatasetSchema | None:
        latest = self._live(latest)
        declared = request.schema or dataset.declared_schema
        if declared is not None:
            check_schema_definition(declared)
            read = fmt in TABULAR_FORMATS or content.row_count is not None
            if fmt in SCHEMA_FORMATS and read:  # not a Parquet file whose footer was too large
                check_declared(declared, content.schema)
            schema: DatasetSchema | None = declared
        elif content.schema is not None:
            previous = _typed_as_now(latest, content) if latest else None
            schema = reconcile_inferred(previous, content.schema)
        else:
            schema = None
        self._check_evolution(dataset, latest, schema, content)
        return schema

    def _check_evolution(
        self,
        dataset: Dataset,
        latest: DatasetVersion | None,
        schema: DatasetSchema | None,
        content: ScannedContent | None = None,
    ) -> None:
        """Checks ``schema`` against the version it follows (every earlier version for the
        transitive modes), a CSV schema stored before pyarrow's typing rule as that rule types
        data of the kind ``content`` holds.

        Raises:
            SchemaEvolutionError: The dataset's mode forbids a change (422).
        """
        if latest is None or schema is None or dataset.compatibility is CompatibilityMode.NONE:
            return
        if dataset.compatibility.transitive:
            earlier = [
                found
                for found in self.repository.versions_descending(dataset.dataset_id)
                if found.version_number <= latest.version_number
            ]
            history = [_typed_as_now(found, content) for found in reversed(earlier)]
        else:
            history = [_typed_as_now(latest, content)]
        validate_against_history(history, schema, dataset.compatibility)

    def _allocate(
        self,
        version: DatasetVersion,
        predecessor: DatasetVersion | None,
        follow: Callable[[DatasetVersion | None], DatasetSchema | None],
        source: str | None,
        transformation: TransformationRecord | None,
        ensure_stored: Callable[[], int] | None = None,
        generation: int = 0,
        profile: bytes | None = None,
    ) -> VersionOutcome:
        """Writes the version right after ``predecessor``, the version its schema was checked
        against.

        When garbage collection has claimed the stored object (see
        :mod:`~chalicelib.dataversion.retention`) the write waits and retries, storing the
        bytes again first (``ensure_stored``) in case the collection deleted them.

        The write is one transaction conditional on the number being free and on the
        predecessor being the one checked; when another writer wins, the schema is resolved and
        checked again (``follow``) against the version that is now the latest before the next
        number is tried, so a version never lands after one it was not checked against.

        Raises:
            SchemaEvolutionError: The content is incompatible with the version it now follows.
        """
        candidate = version
        for attempt in range(MAX_ALLOCATION_ATTEMPTS):
            try:
                self.repository.add_version(candidate, source, predecessor, generation, profile)
            except VersionNumberTaken:
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
                predecessor = self._latest(version.dataset_id)
                number = (predecessor.version_number if predecessor else 0) + 1
                candidate = replace(
                    candidate,
                    version_number=number,
                    schema=follow(predecessor),
                    created_at=self.clock.now(),
                )
                continue
            except ObjectCollected:
                if ensure_stored is not None:
                    generation = ensure_stored()
                continue
            except DuplicateContent:
                found = self.repository.version_by_hash(version.dataset_id, version.sha256)
                if found is None:  # the version holding it was deleted meanwhile: write again
                    continue
                request = VersionRequest(
                    parent_version_ids=list(version.parent_version_ids),
                    transformation=transformation,
                )
                return self._deduplicated(found, source, request)
            except DuplicateSource:
                assert source is not None
                found = self.repository.version_for_source(source)
                assert found is not None
                return VersionOutcome(found, created=False)
            self._record_lineage(candidate, transformation)
            self.event_bus.publish("DatasetVersionCreated", _version_event(candidate))
            return VersionOutcome(candidate, created=True)
        raise ServiceUnavailable("could not allocate a version number; too much contention")

    def _record_lineage(
        self, version: DatasetVersion, transformation: TransformationRecord | None
    ) -> None:
        self.lineage.add_version_node(version)
        if version.restored_from is not None:
            self.lineage.add_restore_edge(version.restored_from, version.version_id)
            return
        for parent in version.parent_version_ids:
            self.lineage.add_transformation_edge([parent], version.version_id, transformation)

    # ---- restoring ------------------------------------------------------------------------

    def restore_version(
        self, dataset_id: str, version: DatasetVersion, created_by: str = ""
    ) -> VersionOutcome:
        """Makes an earlier version's content current again, as Delta Lake's ``RESTORE``.

        The new version points to the same stored object (nothing is copied), carries the old
        version's schema, row count and format, and is recorded in lineage with a
        ``restored_from`` edge from the old version. Its schema is checked against the version
        it follows, like any new version. Restoring the content the latest version already
        holds writes nothing and returns the latest version.

        Raises:
            DatasetVersionNotFound: The version is not one of this dataset's.
            SchemaEvolutionError: The old schema may not follow the latest one (422).
        """
        dataset = self.repository.get_dataset(dataset_id)
        if version.dataset_id != dataset_id:
            raise DatasetVersionNotFound(
                f"dataset {dataset_id} has no version {version.version_id}"
            )
        if version.deleted:
            raise DatasetVersionGone(f"version {version.version_id} was deleted")
        latest = self._latest(dataset_id)
        current = self._live(latest)
        if current is not None and current.sha256 == version.sha256:
            return VersionOutcome(current, created=False)

        def follow(predecessor: DatasetVersion | None) -> DatasetSchema | None:
            self._check_evolution(dataset, self._live(predecessor), version.schema)
            return version.schema

        restored = replace(
            version,
            version_id=f"dv-{uuid.uuid4().hex[:16]}",
            version_number=(latest.version_number if latest else 0) + 1,
            parent_version_ids=[version.version_id],
            transformation_id=None,
            created_by=created_by,
            created_at=self.clock.now(),
            source_key=None,
            restored_from=version.version_id,
            schema=follow(latest),
        )

        def still_stored() -> int:
            return self._object_generation(
                version.storage_key, lambda: self.store.exists(version.storage_key)
            )

        profile = self.repository.get_profile(version.version_id)
        return self._allocate(
            restored, latest, follow, None, None, still_stored, still_stored(), profile
        )

    # ---- S3-triggered ingest --------------------------------------------------------------

    def ingest_object(self, key: str, s3_version_id: str | None = None) -> IngestOutcome:
        """Turns an uploaded object into a version: a file under ``incoming/<dataset name or
        id>/``, or a direct upload to ``cas/…`` (see :mod:`~chalicelib.dataversion.ingest`).

        Idempotent: the same object (key and ETag) always resolves to the same version, however
        often and in whatever order its events arrive. Files for unknown datasets, or whose
        content is refused, are moved to ``rejected/`` with the reason recorded.
        """
        return self.ingestion.ingest(key, s3_version_id)

    # ---- reading versions -----------------------------------------------------------------

    def get_version(
        self,
        dataset_id: str,
        version_id: str | None = None,
        version_number: int | None = None,
        as_of: datetime | None = None,
    ) -> DatasetVersion:
        """One version: by id, by number, the one current at ``as_of``, or the latest.

        Raises:
            DatasetVersionNotFound: No such version (or none existed at ``as_of``).
        """
        self.repository.get_dataset(dataset_id)
        if version_id is not None:
            found = self.repository.get_version_by_id(version_id)
            if found.dataset_id != dataset_id:
                raise DatasetVersionNotFound(f"dataset {dataset_id} has no version {version_id}")
            return found
        if version_number is not None:
            return self.repository.get_version(dataset_id, version_number)
        if as_of is not None:
            return self.version_at(dataset_id, as_of)
        latest = self._live(self._latest(dataset_id))
        if latest is None:
            raise DatasetVersionNotFound(f"dataset {dataset_id} has no live versions")
        return latest

    def version_at(self, dataset_id: str, as_of: datetime) -> DatasetVersion:
        """The newest live (not deleted) version created at or before ``as_of``.

        Raises:
            DatasetVersionNotFound: The dataset had no such version then.
        """
        for version in self.repository.versions_descending(dataset_id):
            if version.created_at <= as_of and not version.deleted:
                return version
        raise DatasetVersionNotFound(f"dataset {dataset_id} had no version at {as_of.isoformat()}")

    def get_version_by_id(self, version_id: str) -> DatasetVersion:
        """A version by its id (404 if unknown)."""
        return self.repository.get_version_by_id(version_id)

    def list_versions(
        self, dataset_id: str, limit: int = 50, offset: int = 0, as_of: datetime | None = None
    ) -> tuple[list[DatasetVersion], int]:
        """A page of versions in ascending order.

        Returns:
            The page and the total number of versions (as of ``as_of``, when given).
        """
        self.repository.get_dataset(dataset_id)
        if as_of is None:
            total = self.repository.latest_version_number(dataset_id)
        else:
            try:
                total = self.version_at(dataset_id, as_of).version_number
            except DatasetVersionNotFound:
                total = 0
        if offset >= total:
            return [], total
        page = self.repository.list_versions(dataset_id, min(limit, total - offset), offset)
        return [v for v in page if v.version_number <= total], total

    def get_profile(self, version: DatasetVersion) -> dict[str, Any]:
        """The column profile computed when ``version`` was ingested, with its version.

        Raises:
            DatasetProfileNotFound: The version has none: opaque formats are not profiled, nor
                versions created before profiles were (404).
        """
        from chalicelib.dataversion.profile import decode_profile

        blob = self.repository.get_profile(version.version_id)
        if blob is None:
            raise DatasetProfileNotFound(
                f"version {version.version_number} ({version.format.value}) has no column "
                "profile: csv, json lines and parquet versions are profiled, when ingested"
            )
        found = decode_profile(blob)
        found["version_id"] = version.version_id
        found["version_number"] = version.version_number
        return found

    def validate_schema_evolution(
        self, old: DatasetSchema, new: DatasetSchema, mode: CompatibilityMode | str | None = None
    ) -> list[str]:
        """The changes from ``old`` to ``new``; raises when ``mode`` (default backward) forbids one.

        Raises:
            SchemaEvolutionError: Listing every incompatible change (422).
        """
        return validate_schema_evolution(old, new, CompatibilityMode(mode or "backward"))

    def compare_versions(self, a: DatasetVersion, b: DatasetVersion, sample: int = 20) -> dict:
        """Schema, row-count and row-level differences from ``a`` to ``b``."""
        from chalicelib.dataversion.compare import compare_versions

        return compare_versions(self.store, a, b, sample)


def _typed_as_now(version: DatasetVersion, content: ScannedContent | None) -> DatasetSchema | None:
    """``version``'s schema; for a CSV version stored before pyarrow's typing rule, its
    columns as that rule types new data of the kind the old rule typed as they are stored
    (``legacy_typing.retyped``), so that more of the same data is no change."""
    head = content.csv_head if content is not None else None
    if version.cell_typing is not None or version.format is not DatasetFormat.CSV:
        return version.schema
    if version.schema is None or head is None or content is None or content.schema is None:
        return version.schema
    return retyped(version.schema, legacy_csv_types(*head), content.schema)


def _version_event(version: DatasetVersion) -> dict[str, Any]:
    return {
        "dataset_id": version.dataset_id,
        "version_id": version.version_id,
        "version_number": version.version_number,
        "sha256": version.sha256,
        "size_bytes": version.size_bytes,
        "row_count": version.row_count,
        "parent_version_ids": version.parent_version_ids,
        "transformation_id": version.transformation_id,
    }
