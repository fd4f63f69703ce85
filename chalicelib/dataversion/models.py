"""Dataset versioning domain: datasets, versions, schemas, transformations and lineage nodes.

Every datetime is timezone-aware UTC. The dataclasses hold no AWS types; the repository maps
them to DynamoDB items.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from chalicelib.core.errors import ValidationError


class DatasetFormat(str, Enum):
    """How a version's bytes are encoded.

    ``csv`` and ``json`` (JSON lines) are inspected: schema inference and row counts.
    ``parquet``: the row count and the schema come from the file's footer (transformations and
    row-level compares read CSV and JSON lines only). ``tfrecord`` and ``numpy`` are stored and
    hashed as opaque bytes. ``pickle`` is accepted only as opaque bytes with a warning on the
    version and is never loaded.
    """

    PARQUET = "parquet"
    CSV = "csv"
    JSON = "json"
    TFRECORD = "tfrecord"
    NUMPY = "numpy"
    PICKLE = "pickle"


# Formats whose rows the service reads (transformations, row-level compares).
TABULAR_FORMATS = frozenset({DatasetFormat.CSV, DatasetFormat.JSON})
# Formats with a schema: inferred on ingest, checked against a declared one, evolved.
SCHEMA_FORMATS = TABULAR_FORMATS | {DatasetFormat.PARQUET}
PICKLE_WARNING = (
    "pickle content is stored as opaque bytes and is never loaded by the service; "
    "loading pickle executes arbitrary code, so prefer csv, json lines or parquet"
)


class CompatibilityMode(str, Enum):
    """Schema-evolution rules, Confluent Schema Registry's seven modes.

    ``backward``: readers of the new schema can read data written with the previous one.
    ``forward``: readers of the previous schema can read data written with the new one.
    ``full``: both. ``none``: no checks. The ``_transitive`` variants check the new schema
    against every earlier version of the dataset, not only the previous one.
    """

    BACKWARD = "backward"
    BACKWARD_TRANSITIVE = "backward_transitive"
    FORWARD = "forward"
    FORWARD_TRANSITIVE = "forward_transitive"
    FULL = "full"
    FULL_TRANSITIVE = "full_transitive"
    NONE = "none"

    @property
    def directions(self) -> frozenset[str]:
        """What the mode checks: ``backward``, ``forward``, both or neither."""
        base = self.value.removesuffix("_transitive")
        if base == "full":
            return frozenset({"backward", "forward"})
        return frozenset() if base == "none" else frozenset({base})

    @property
    def transitive(self) -> bool:
        """Whether the new schema is checked against every earlier version."""
        return self.value.endswith("_transitive")


class TransformationType(str, Enum):
    """Kinds of transformation recorded in the lineage."""

    FILTER = "filter"
    MAP = "map"
    JOIN = "join"
    AGGREGATE = "aggregate"
    SAMPLE = "sample"
    SPLIT = "split"
    FEATURE_ENGINEERING = "feature_engineering"
    NORMALIZATION = "normalization"
    AUGMENTATION = "augmentation"


COLUMN_TYPES = ("int", "long", "float", "double", "bool", "string")


@dataclass
class DatasetSchema:
    """A tabular schema.

    Attributes:
        columns: Column name → type (``int``, ``long``, ``float``, ``double``, ``bool``,
            ``string``), in the data's column order.
        primary_key: Columns identifying a row (used by row-level comparisons).
        partition_keys: Columns the data is partitioned by.
        nullable: Columns that may be empty.
        schema_version: A label for humans; not part of :meth:`compute_hash`.
    """

    columns: dict[str, str]
    primary_key: list[str] = field(default_factory=list)
    partition_keys: list[str] = field(default_factory=list)
    nullable: list[str] = field(default_factory=list)
    schema_version: int = 1

    def compute_hash(self) -> str:
        """sha256 of the schema's structure, independent of column order."""
        canonical = {
            "columns": sorted(self.columns.items()),
            "primary_key": sorted(self.primary_key),
            "partition_keys": sorted(self.partition_keys),
            "nullable": sorted(set(self.nullable)),
        }
        text = json.dumps(canonical, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def is_nullable(self, column: str) -> bool:
        """Whether ``column`` may hold empty values."""
        return column in self.nullable

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {
            "columns": dict(self.columns),
            "primary_key": list(self.primary_key),
            "partition_keys": list(self.partition_keys),
            "nullable": sorted(set(self.nullable)),
            "schema_version": self.schema_version,
            "hash": self.compute_hash(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSchema:
        """Builds a schema from its JSON shape (``hash`` is ignored)."""
        return cls(
            columns={str(k): str(v) for k, v in dict(data.get("columns") or {}).items()},
            primary_key=[str(c) for c in data.get("primary_key") or []],
            partition_keys=[str(c) for c in data.get("partition_keys") or []],
            nullable=[str(c) for c in data.get("nullable") or []],
            schema_version=int(data.get("schema_version") or 1),
        )


@dataclass
class Dataset:
    """A named dataset.

    Attributes:
        dataset_id: Stable id (``ds-…``).
        name: Unique name.
        owner: Principal that created it.
        access_groups: Groups whose members may read (and, with the writer role, write) it.
        format: Default format of its versions.
        compatibility: Schema-evolution mode checked on every new version.
        description: Free text.
        declared_schema: A schema every version must match, if declared.
        created_at: Creation time (UTC).
        retention: Which versions the retention job keeps (``None``: all).
        drift_limits: Drift a new version may show against the one it follows before it is
            flagged (``None``: not checked).
    """

    dataset_id: str
    name: str
    owner: str
    access_groups: list[str]
    format: DatasetFormat
    compatibility: CompatibilityMode
    description: str
    declared_schema: DatasetSchema | None
    created_at: datetime
    retention: RetentionPolicy | None = None
    drift_limits: DriftLimits | None = None


@dataclass
class DriftLimits:
    """How far a new version may drift from the version it follows before it is flagged.

    A column breaches the limits when its population stability index exceeds ``psi`` or its
    two-sample test's p-value falls below ``p_value`` (as ``GET /datasets/{id}/drift``
    computes them).

    Attributes:
        psi: Largest PSI accepted (``None``: not checked).
        p_value: Smallest p-value accepted (``None``: not checked).
        columns: The columns checked (empty: every column both versions have).
    """

    psi: float | None = None
    p_value: float | None = None
    columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"psi": self.psi, "p_value": self.p_value, "columns": list(self.columns)}


MAX_LIMITED_COLUMNS = 1_000


def check_drift_limits(limits: DriftLimits) -> None:
    """Refuses limits that check nothing or cannot be met.

    Raises:
        ValidationError: Neither limit set, a PSI that is not positive, a p-value outside
            (0, 1), or too many or empty column names (400).
    """
    if limits.psi is None and limits.p_value is None:
        raise ValidationError("drift limits need psi and/or p_value")
    if limits.psi is not None and not (0 < limits.psi < float("inf")):
        raise ValidationError("psi must be a positive number")
    if limits.p_value is not None and not (0 < limits.p_value < 1):
        raise ValidationError("p_value must be between 0 and 1 (exclusive)")
    if len(limits.columns) > MAX_LIMITED_COLUMNS or any(not c for c in limits.columns):
        raise ValidationError(f"columns must be at most {MAX_LIMITED_COLUMNS} non-empty names")


@dataclass
class DatasetVersion:
    """One immutable, content-addressed version of a dataset.

    Attributes:
        version_id: Globally unique id (``dv-…``).
        dataset_id: The dataset.
        version_number: 1, 2, 3, … consecutive per dataset.
        sha256: Hex digest of the content.
        size_bytes: Content length.
        storage_key: The content-addressed S3 key (``cas/sha256/ab/cdef…``).
        format: Encoding of the content.
        schema: Inferred (or declared) schema; ``None`` for opaque formats.
        row_count: Data rows (``None`` for opaque formats).
        parent_version_ids: Versions it was derived from.
        transformation_id: The transformation that produced it, if any.
        tags: Free-form labels.
        created_by: Principal or ``s3:<key>``.
        created_at: Creation time (UTC).
        warnings: Notes such as the pickle warning.
        source_key: The ``incoming/`` key it was ingested from, if any.
        schema_sampled_rows: Rows the schema was inferred from (``None``: every row).
        restored_from: The version whose content this one restores (same stored object).
        deleted_at: When the version was deleted (a tombstone: its reads answer 410).
        deleted_by: Who deleted it (``retention`` for the retention policy, ``erasure`` for a
            content erasure).
        cell_typing: The rule its CSV schema's cells were typed by (``pyarrow``); ``None`` for
            other formats and for versions stored before that rule.
    """

    version_id: str
    dataset_id: str
    version_number: int
    sha256: str
    size_bytes: int
    storage_key: str
    format: DatasetFormat
    schema: DatasetSchema | None
    row_count: int | None
    parent_version_ids: list[str]
    transformation_id: str | None
    tags: dict[str, str]
    created_by: str
    created_at: datetime
    warnings: list[str] = field(default_factory=list)
    source_key: str | None = None
    schema_sampled_rows: int | None = None
    restored_from: str | None = None
    deleted_at: datetime | None = None
    deleted_by: str | None = None
    cell_typing: str | None = None

    @property
    def deleted(self) -> bool:
        """Whether the version is a tombstone."""
        return self.deleted_at is not None


@dataclass
class TransformationRecord:
    """How one or more versions were derived from source versions.

    Attributes:
        transformation_id: Id (``tr-…``).
        type: Kind of transformation.
        params: The declarative spec as given (JSON).
        source_version_ids: Inputs in order (a join has two).
        output_version_ids: Role → produced version (``output``, or ``train``/``test``).
        fitted_params: Values learned from the data (normalization means, etc.).
        replayable: Whether the service can re-execute it.
        code_hash: For external transformations, the hash of the code that ran.
        created_by: Principal.
        created_at: Time (UTC).
    """

    transformation_id: str
    type: TransformationType
    params: dict[str, Any]
    source_version_ids: list[str]
    output_version_ids: dict[str, str]
    fitted_params: dict[str, Any]
    replayable: bool
    code_hash: str | None
    created_by: str
    created_at: datetime


@dataclass
class LineageNode:
    """A version as a node of the lineage DAG.

    Attributes:
        version_id: The version.
        dataset_id: Its dataset.
        version_number: Its number.
        sha256: Its content hash.
        created_at: When it was created.
        depth: Distance from the node a traversal started at (0 for the start).
        deleted_at: When the version was deleted (a tombstone), if it was.
    """

    version_id: str
    dataset_id: str
    version_number: int
    sha256: str
    created_at: datetime | None
    depth: int = 0
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class LineageEdge:
    """A parent → child derivation.

    Attributes:
        parent_id: Source version.
        child_id: Derived version.
        transformation_id: The transformation (``None`` for a plain parent link).
        transformation_type: Its type, if any.
    """

    parent_id: str
    child_id: str
    transformation_id: str | None = None
    transformation_type: str | None = None


@dataclass
class DatasetUsage:
    """A record that an experiment used a version.

    Attributes:
        experiment_id: The experiment (or training run).
        dataset_id: The dataset.
        version_id: The version used.
        purpose: ``training``, ``validation``, ``test`` or free text.
        recorded_by: Principal.
        recorded_at: Time (UTC).
    """

    experiment_id: str
    dataset_id: str
    version_id: str
    purpose: str
    recorded_by: str
    recorded_at: datetime


@dataclass
class Rejection:
    """A file under ``incoming/`` (or a direct upload into ``cas/``) that could not become a
    version.

    Attributes:
        source_key: The incoming (or direct upload's) key.
        etag: Its ETag when it was rejected.
        rejected_key: Where it was moved (``rejected/…``), or its own key when the bytes stayed
            (a direct upload whose content matches its address).
        reason: Why.
        rejected_at: Time (UTC).
    """

    source_key: str
    etag: str
    rejected_key: str
    reason: str
    rejected_at: datetime


@dataclass
class TagMove:
    """One move of a named ref (a tag such as ``production``): its history is a list of these.

    Attributes:
        dataset_id: The dataset.
        tag: The tag's name.
        version_id: The version it points to after the move.
        version_number: That version's number.
        previous_version_id: Where it pointed before (``None``: the tag was new).
        moved_by: Principal.
        moved_at: Time (UTC).
    """

    dataset_id: str
    tag: str
    version_id: str
    version_number: int
    previous_version_id: str | None
    moved_by: str
    moved_at: datetime


@dataclass(frozen=True)
class RetentionPolicy:
    """Which versions of a dataset the scheduled retention job keeps.

    A version is deleted (tombstoned) only when neither rule keeps it: it is not among the
    ``keep_last`` newest live versions and it is older than ``keep_days`` days. The latest
    version, tagged versions and versions an experiment used are always kept.

    Attributes:
        keep_last: Newest live versions kept (``None``: this rule keeps nothing more).
        keep_days: Versions younger than this many days are kept (``None``: likewise).
    """

    keep_last: int | None = None
    keep_days: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return {"keep_last": self.keep_last, "keep_days": self.keep_days}


@dataclass
class ColumnDrift:
    """Drift of one column present in both versions.

    Attributes:
        column: Its name.
        kind: ``numeric`` (every non-empty value a number in both) or ``categorical``.
        psi: Population stability index of b against a (bins: deciles of a, or categories).
        test: ``ks`` (two-sample Kolmogorov-Smirnov) or ``chi2`` (chi-square of homogeneity).
        statistic: The test statistic.
        p_value: Its p-value (``None`` when a side has no values).
        nulls: Share of empty values in each sample.
    """

    column: str
    kind: str
    psi: float | None
    test: str
    statistic: float | None
    p_value: float | None
    nulls: dict[str, float]
