"""Request and response schemas of the dataset versioning routes (the routes are in
:mod:`chalicelib.dataversion.api`).

Responses are built one way: :func:`shaped` reads every field a ``*Out`` model declares (by its
JSON name) from the domain object that the route returns, so each entity is written once as a
dataclass (``models.py``) and once as its public schema here, never as a hand-built dict.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from chalicelib.core.schema import Schema
from chalicelib.core.shaping import mirrored
from chalicelib.core.shaping import shaped as shaped  # re-exported for the routes
from chalicelib.core.text import Name, Text, name_pattern
from chalicelib.dataversion.models import (
    ColumnDrift,
    DatasetSchema,
    DatasetUsage,
    DriftLimits,
    Rejection,
    TagMove,
    TransformationRecord,
)
from chalicelib.dataversion.reconstruction import ReproducibilityReport

FormatName = Literal["parquet", "csv", "json", "tfrecord", "numpy", "pickle"]
ColumnType = Literal["int", "long", "float", "double", "bool", "string"]


ColumnName = Annotated[Name, Field(min_length=1, max_length=1000)]
Tags = dict[
    Annotated[Name, Field(min_length=1, max_length=128)], Annotated[Name, Field(max_length=256)]
]
DatasetName = Annotated[Name, Field(json_schema_extra={"pattern": name_pattern("/")})]


class SchemaIn(Schema):
    """A declared schema."""

    columns: dict[ColumnName, ColumnType] = Field(min_length=1, max_length=2000)
    primary_key: list[ColumnName] = Field(default_factory=list, max_length=2000)
    partition_keys: list[ColumnName] = Field(default_factory=list, max_length=2000)
    nullable: list[ColumnName] = Field(default_factory=list, max_length=2000)
    schema_version: int = Field(default=1, ge=1)

    def to_domain(self) -> DatasetSchema:
        return DatasetSchema.from_dict(self.model_dump())


class SchemaOut(Schema):
    """A schema with its order-independent hash."""

    columns: dict[str, str]
    primary_key: list[str]
    partition_keys: list[str]
    nullable: list[str]
    schema_version: int
    hash: str


class CreateDatasetBody(Schema):
    """Body of ``POST /datasets``."""

    name: DatasetName = Field(min_length=1, max_length=200, pattern=r"^[^/]+$")
    description: Text = Field(default="", max_length=2000)
    format: FormatName = "csv"
    compatibility: Literal[
        "backward",
        "backward_transitive",
        "forward",
        "forward_transitive",
        "full",
        "full_transitive",
        "none",
    ] = "backward"
    access_groups: list[Annotated[Name, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=50
    )
    schema_: SchemaIn | None = Field(default=None, alias="schema")
    drift_limits: DriftLimitsIn | None = None


class AccessBody(Schema):
    """Body of ``PUT /datasets/{id}/access``: who may see the dataset besides its owner."""

    access_groups: list[Annotated[Name, Field(min_length=1, max_length=200)]] = Field(max_length=50)


class DriftLimitsIn(Schema):
    """Drift limits: a new version whose drift from the version it follows exceeds them (per
    column, as ``GET /datasets/{id}/drift`` computes it) is created with a warning and a
    ``DatasetDriftDetected`` event. At least one of ``psi`` and ``p_value``."""

    psi: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    p_value: float | None = Field(default=None, gt=0, lt=1)
    columns: list[Annotated[Name, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000
    )

    def to_domain(self) -> DriftLimits | None:
        """The limits (``None`` when neither is set: no limits)."""
        if self.psi is None and self.p_value is None:
            return None
        return DriftLimits(self.psi, self.p_value, list(self.columns))


class RetentionIn(Schema):
    """A retention policy: versions neither among the ``keep_last`` newest nor younger than
    ``keep_days`` days are deleted by the scheduled retention job (the latest, tagged and
    experiment-used versions are always kept)."""

    keep_last: int | None = Field(default=None, ge=1, le=1_000_000)
    keep_days: int | None = Field(default=None, ge=1, le=36_500)


class VersionRefOut(Schema):
    """A version named in a drift report."""

    version_id: str
    version_number: int


class SchemaDiffOut(Schema):
    """Columns added and removed from a to b, every change, and those the dataset's mode
    forbids."""

    added: list[str]
    removed: list[str]
    changes: list[str]
    incompatible: list[str]


_ColumnDriftFields: Any = mirrored(
    ColumnDrift, kind=Literal["numeric", "categorical"], test=Literal["ks", "chi2"]
)


class ColumnDriftOut(_ColumnDriftFields):
    """Drift of one column present in both versions."""


class TopValueOut(Schema):
    """A frequent value of a column among the profiled records."""

    value: str
    count: int


class HistogramOut(Schema):
    """Equal-width bins between a numeric column's minimum and maximum (``counts[i]``: values
    in ``[edges[i], edges[i + 1])``, the last bin closed)."""

    edges: list[float]
    counts: list[int]


class ColumnProfileOut(Schema):
    """The profile of one column."""

    name: str
    kind: Literal["numeric", "categorical", "empty"]
    count: int
    nulls: int
    distinct: int | None = Field(
        description="null for a Parquet version profiled from its footer (not known there)"
    )
    non_finite: int | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: list[float] | None = None
    histogram: HistogramOut | None = None
    top: list[TopValueOut]


class ProfileOut(Schema):
    """The column profile of a version, computed at ingest from the records drawn while it was
    hashed (every record, or a seeded uniform sample of ``profiled_rows`` when ``sampled``); for
    Parquet, from the footer's column statistics over every row (``note`` says what is
    known)."""

    version_id: str
    version_number: int
    rows: int
    profiled_rows: int
    sampled: bool
    unprofiled_columns: int
    columns: list[ColumnProfileOut]
    note: str | None


class DriftOut(Schema):
    """Per-column drift from version a to version b, on seeded uniform samples."""

    a: VersionRefOut
    b: VersionRefOut
    rows: dict[str, int]
    sampled_rows: dict[str, int]
    schema_: SchemaDiffOut = Field(alias="schema")
    columns: list[ColumnDriftOut]


class EraseOut(Schema):
    """What an erasure did."""

    sha256: str
    deleted_version_ids: list[str]
    deleted_objects: list[str]


class DatasetOut(Schema):
    """A dataset."""

    dataset_id: str
    name: str
    owner: str
    access_groups: list[str]
    format: str
    compatibility: str
    description: str
    declared_schema: SchemaOut | None
    created_at: datetime
    retention: RetentionIn | None = None
    drift_limits: DriftLimitsIn | None = None


class DatasetList(Schema):
    """A page of the datasets the caller may see, by name; ``next_token`` asks for the next
    page (``null``: this is the last)."""

    datasets: list[DatasetOut]
    next_token: str | None = None


class DatasetListQuery(Schema):
    """Query of ``GET /datasets``: page size and the token of the page to continue from."""

    limit: int = Field(default=100, ge=1, le=1000)
    next_token: str | None = Field(default=None, max_length=2000)


class VersionOut(Schema):
    """A dataset version."""

    version_id: str
    dataset_id: str
    version_number: int
    sha256: str
    size_bytes: int
    format: str
    schema_: SchemaOut | None = Field(alias="schema")
    row_count: int | None
    schema_sampled_rows: int | None
    parent_version_ids: list[str]
    transformation_id: str | None
    tags: dict[str, str]
    created_by: str
    created_at: datetime
    warnings: list[str]
    source_key: str | None
    restored_from: str | None = None
    deleted_at: datetime | None = None
    deleted_by: str | None = None
    created: bool | None = None


class VersionList(Schema):
    """A page of versions."""

    versions: list[VersionOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class CreateVersionBody(Schema):
    """Body of ``POST /datasets/{id}/versions``: inline content (text or base64)."""

    data: str | None = Field(default=None, description="UTF-8 content (CSV, JSON lines)")
    data_base64: str | None = Field(default=None, description="binary content, base64")
    format: FormatName | None = None
    schema_: SchemaIn | None = Field(default=None, alias="schema")
    parent_version_id: str | None = None
    tags: Tags = Field(default_factory=dict, max_length=50)


class UploadBody(Schema):
    """Body of ``POST /datasets/{id}/uploads``.

    Give ``sha256`` (the file's digest) for a direct upload: new content goes straight into
    content-addressed storage in one PUT that S3 verifies, and content the dataset already has
    is not uploaded at all. Give ``size_bytes`` to get a multipart upload for large files when
    no digest is given (parallel parts; required above 5 GiB).
    """

    filename: Name = Field(default="data.csv", min_length=1, max_length=200)
    size_bytes: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class UploadOut(Schema):
    """What to upload: ``url`` (one PUT with exactly ``headers``), ``part_urls`` (multipart),
    or nothing (``status`` ``exists``: the dataset has this content as ``version_id``)."""

    key: str
    url: str | None
    method: str
    expires_in: int
    upload_id: str | None
    part_size: int | None
    part_urls: list[str] | None
    headers: dict[str, str]
    status: Literal["upload", "exists"]
    mode: Literal["direct", "staged", "none"]
    version_id: str | None


class PartIn(Schema):
    """One uploaded part: its number and the ETag S3 returned for it."""

    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=200)


class CompleteUploadBody(Schema):
    """Body of ``POST /datasets/{id}/uploads/complete``."""

    key: str = Field(min_length=1, max_length=1024)
    upload_id: str = Field(min_length=1, max_length=1024)
    parts: list[PartIn] = Field(min_length=1, max_length=10_000)


class CompleteUploadOut(Schema):
    """A completed multipart upload (the S3 trigger ingests it)."""

    key: str
    status: str


class ContentOut(Schema):
    """A presigned GET of a version's content."""

    version_id: str
    sha256: str
    size_bytes: int
    url: str
    expires_in: int


class VersionsQuery(Schema):
    """Query of ``GET /datasets/{id}/versions``."""

    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0)
    as_of: datetime | None = None


class VersionQuery(Schema):
    """Query of ``GET /datasets/{id}/versions/{version}``."""

    as_of: datetime | None = Field(
        default=None, description="for a tag: the version it pointed to at this time"
    )


class TagBody(Schema):
    """Body of ``PUT /datasets/{id}/tags/{tag}``."""

    version: str = Field(
        min_length=1, max_length=200, description="a version number, version id or another tag"
    )


_TagFields: Any = mirrored(TagMove)


class TagOut(_TagFields):
    """Where a tag points, from its last move."""


class TagList(Schema):
    """The tags of a dataset."""

    tags: list[TagOut]


class TagHistoryOut(TagOut):
    """Where a tag points (or pointed at ``as_of``) and every move of it, oldest first."""

    history: list[TagOut]


class CompareQuery(Schema):
    """Query of the compare route: version numbers or ids."""

    a: str = Field(min_length=1)
    b: str = Field(min_length=1)


class CompareOut(Schema):
    """Differences between two versions."""

    a: str
    b: str
    same_content: bool
    schema_: dict[str, Any] = Field(alias="schema")
    row_count: dict[str, int | None]
    rows: dict[str, Any] | None
    rows_note: str | None


class LineageQuery(Schema):
    """Query of ``GET /lineage/{version_id}``."""

    direction: Literal["upstream", "downstream", "both"] = "upstream"
    max_depth: int | None = Field(default=None, ge=0, le=100)


class LineageNodeOut(Schema):
    """A version in a lineage view (``visible`` false: another team's version, redacted)."""

    version_id: str
    dataset_id: str | None
    version_number: int | None
    sha256: str | None
    created_at: datetime | None
    depth: int
    visible: bool
    deleted_at: datetime | None = None


class LineageEdgeOut(Schema):
    """A derivation."""

    parent_id: str
    child_id: str
    transformation_id: str | None
    transformation_type: str | None


class LineageViewOut(Schema):
    """One direction of lineage."""

    nodes: list[LineageNodeOut]
    edges: list[LineageEdgeOut]
    truncated: bool


class LineageOut(Schema):
    """Upstream and/or downstream lineage of a version."""

    version_id: str
    upstream: LineageViewOut | None = None
    downstream: LineageViewOut | None = None


class TransformationBody(Schema):
    """Body of ``POST /datasets/{id}/transformations``."""

    transformation: dict[str, Any] = Field(description="a declarative spec; see the docs")
    source_version_ids: list[str] = Field(min_length=1, max_length=10)
    tags: Tags = Field(default_factory=dict, max_length=50)
    output_dataset_ids: dict[
        Literal["output", "train", "test"], Annotated[str, Field(min_length=1, max_length=200)]
    ] = Field(default_factory=dict)
    data: str | None = Field(default=None, description="external steps: the produced content")


_TransformationFields: Any = mirrored(TransformationRecord, type=str, outputs=dict[str, VersionOut])


class TransformationOut(_TransformationFields):
    """A recorded transformation and its output versions."""


class ReplayBody(Schema):
    """Body of ``POST /versions/{version_id}/replay``."""

    source_version_id: str
    data: str | None = Field(default=None, description="new source content (CSV / JSON lines)")
    data_version_id: str | None = Field(default=None, description="or a stored version")


class ReplayOut(Schema):
    """The outcome of a replay."""

    target_version_id: str
    source_version_id: str
    sha256: str
    size_bytes: int
    row_count: int
    target_sha256: str
    matches_target: bool
    steps: list[str]


_ReproducibilityFields: Any = mirrored(ReproducibilityReport)


class ReproducibilityOut(_ReproducibilityFields):
    """Whether a version can be rebuilt from its roots."""


class UsageBody(Schema):
    """Body of the usages route."""

    experiment_id: str = Field(min_length=1, max_length=200)
    purpose: Name = Field(default="training", min_length=1, max_length=50)


_UsageFields: Any = mirrored(DatasetUsage)


class UsageOut(_UsageFields):
    """A recorded usage."""


class UsagesQuery(Schema):
    """Query of ``GET /datasets/{id}/usages``."""

    experiment_id: str = Field(min_length=1)


class UsageList(Schema):
    """Usages of a dataset by one experiment."""

    usages: list[UsageOut]


class ReconstructQuery(Schema):
    """Query of ``GET /datasets/{id}/reconstruct``: at most one of ``as_of`` (default: now) and
    ``experiment_id``."""

    as_of: datetime | None = None
    experiment_id: str | None = None


class ReconstructionOut(Schema):
    """A version to rebuild from and its download URL."""

    version: VersionOut
    download_url: str
    usage: UsageOut | None


class ReconstructList(Schema):
    """Versions to rebuild from."""

    reconstructions: list[ReconstructionOut]


_RejectionFields: Any = mirrored(Rejection)


class RejectionOut(_RejectionFields):
    """An incoming file that was moved to ``rejected/`` instead of becoming a version."""


class RejectionList(Schema):
    """Recent rejections."""

    rejections: list[RejectionOut]


class RejectionsQuery(Schema):
    """Query of ``GET /dataset-rejections``."""

    limit: int = Field(default=100, ge=1, le=1000)
