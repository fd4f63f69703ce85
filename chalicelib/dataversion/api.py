"""HTTP routes of the dataset versioning service.

Access: a caller who may not read a dataset gets 404 for it (as if it did not exist); readers
get 403 on writes. Large files go through ``POST /datasets/{id}/uploads`` (presigned PUT under
``incoming/``); the S3 trigger turns the uploaded object into a version.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from chalicelib.core.errors import ValidationError
from chalicelib.core.http import ApiBlueprint, ApiResponse, RequestContext
from chalicelib.core.text import Name, Text, name_pattern
from chalicelib.dataversion.models import (
    Dataset,
    DatasetFormat,
    DatasetSchema,
    DatasetVersion,
    DriftLimits,
    RetentionPolicy,
)
from chalicelib.dataversion.service import get_dataset_service
from chalicelib.dataversion.versioning import VersionRequest

api = ApiBlueprint(__name__, tag="datasets")

FormatName = Literal["parquet", "csv", "json", "tfrecord", "numpy", "pickle"]
ColumnType = Literal["int", "long", "float", "double", "bool", "string"]


ColumnName = Annotated[Name, Field(min_length=1, max_length=1000)]
Tags = dict[
    Annotated[Name, Field(min_length=1, max_length=128)], Annotated[Name, Field(max_length=256)]
]
DatasetName = Annotated[Name, Field(json_schema_extra={"pattern": name_pattern("/")})]


class SchemaIn(BaseModel):
    """A declared schema."""

    columns: dict[ColumnName, ColumnType] = Field(min_length=1, max_length=2000)
    primary_key: list[ColumnName] = Field(default_factory=list, max_length=2000)
    partition_keys: list[ColumnName] = Field(default_factory=list, max_length=2000)
    nullable: list[ColumnName] = Field(default_factory=list, max_length=2000)
    schema_version: int = Field(default=1, ge=1)

    def to_domain(self) -> DatasetSchema:
        return DatasetSchema.from_dict(self.model_dump())


class SchemaOut(BaseModel):
    """A schema with its order-independent hash."""

    columns: dict[str, str]
    primary_key: list[str]
    partition_keys: list[str]
    nullable: list[str]
    schema_version: int
    hash: str


class CreateDatasetBody(BaseModel):
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


class AccessBody(BaseModel):
    """Body of ``PUT /datasets/{id}/access``: who may see the dataset besides its owner."""

    access_groups: list[Annotated[Name, Field(min_length=1, max_length=200)]] = Field(max_length=50)


class DriftLimitsIn(BaseModel):
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


class RetentionIn(BaseModel):
    """A retention policy: versions neither among the ``keep_last`` newest nor younger than
    ``keep_days`` days are deleted by the scheduled retention job (the latest, tagged and
    experiment-used versions are always kept)."""

    keep_last: int | None = Field(default=None, ge=1, le=1_000_000)
    keep_days: int | None = Field(default=None, ge=1, le=36_500)


class VersionRefOut(BaseModel):
    """A version named in a drift report."""

    version_id: str
    version_number: int


class SchemaDiffOut(BaseModel):
    """Columns added and removed from a to b, every change, and those the dataset's mode
    forbids."""

    added: list[str]
    removed: list[str]
    changes: list[str]
    incompatible: list[str]


class ColumnDriftOut(BaseModel):
    """Drift of one column present in both versions."""

    column: str
    kind: Literal["numeric", "categorical"]
    psi: float | None
    test: Literal["ks", "chi2"]
    statistic: float | None
    p_value: float | None
    nulls: dict[str, float]


class TopValueOut(BaseModel):
    """A frequent value of a column among the profiled records."""

    value: str
    count: int


class HistogramOut(BaseModel):
    """Equal-width bins between a numeric column's minimum and maximum (``counts[i]``: values
    in ``[edges[i], edges[i + 1])``, the last bin closed)."""

    edges: list[float]
    counts: list[int]


class ColumnProfileOut(BaseModel):
    """The profile of one column."""

    name: str
    kind: Literal["numeric", "categorical", "empty"]
    count: int
    nulls: int
    distinct: int
    non_finite: int | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: list[float] | None = None
    histogram: HistogramOut | None = None
    top: list[TopValueOut]


class ProfileOut(BaseModel):
    """The column profile of a version, computed at ingest from the records drawn while it was
    hashed (every record, or a seeded uniform sample of ``profiled_rows`` when ``sampled``)."""

    version_id: str
    version_number: int
    rows: int
    profiled_rows: int
    sampled: bool
    unprofiled_columns: int
    columns: list[ColumnProfileOut]
    note: str | None


class DriftOut(BaseModel):
    """Per-column drift from version a to version b, on seeded uniform samples."""

    a: VersionRefOut
    b: VersionRefOut
    rows: dict[str, int]
    sampled_rows: dict[str, int]
    schema_: SchemaDiffOut = Field(alias="schema")
    columns: list[ColumnDriftOut]


class EraseOut(BaseModel):
    """What an erasure did."""

    sha256: str
    deleted_version_ids: list[str]
    deleted_objects: list[str]


class DatasetOut(BaseModel):
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


class DatasetList(BaseModel):
    """A page of the datasets the caller may see, by name; ``next_token`` asks for the next
    page (``null``: this is the last)."""

    datasets: list[DatasetOut]
    next_token: str | None = None


class DatasetListQuery(BaseModel):
    """Query of ``GET /datasets``: page size and the token of the page to continue from."""

    limit: int = Field(default=100, ge=1, le=1000)
    next_token: str | None = Field(default=None, max_length=2000)


class VersionOut(BaseModel):
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


class VersionList(BaseModel):
    """A page of versions."""

    versions: list[VersionOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class CreateVersionBody(BaseModel):
    """Body of ``POST /datasets/{id}/versions``: inline content (text or base64)."""

    data: str | None = Field(default=None, description="UTF-8 content (CSV, JSON lines)")
    data_base64: str | None = Field(default=None, description="binary content, base64")
    format: FormatName | None = None
    schema_: SchemaIn | None = Field(default=None, alias="schema")
    parent_version_id: str | None = None
    tags: Tags = Field(default_factory=dict, max_length=50)


class UploadBody(BaseModel):
    """Body of ``POST /datasets/{id}/uploads``.

    Give ``sha256`` (the file's digest) for a direct upload: new content goes straight into
    content-addressed storage in one PUT that S3 verifies, and content the dataset already has
    is not uploaded at all. Give ``size_bytes`` to get a multipart upload for large files when
    no digest is given (parallel parts; required above 5 GiB).
    """

    filename: Name = Field(default="data.csv", min_length=1, max_length=200)
    size_bytes: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class UploadOut(BaseModel):
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


class PartIn(BaseModel):
    """One uploaded part: its number and the ETag S3 returned for it."""

    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=200)


class CompleteUploadBody(BaseModel):
    """Body of ``POST /datasets/{id}/uploads/complete``."""

    key: str = Field(min_length=1, max_length=1024)
    upload_id: str = Field(min_length=1, max_length=1024)
    parts: list[PartIn] = Field(min_length=1, max_length=10_000)


class CompleteUploadOut(BaseModel):
    """A completed multipart upload (the S3 trigger ingests it)."""

    key: str
    status: str


class ContentOut(BaseModel):
    """A presigned GET of a version's content."""

    version_id: str
    sha256: str
    size_bytes: int
    url: str
    expires_in: int


class VersionsQuery(BaseModel):
    """Query of ``GET /datasets/{id}/versions``."""

    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0)
    as_of: datetime | None = None


class VersionQuery(BaseModel):
    """Query of ``GET /datasets/{id}/versions/{version}``."""

    as_of: datetime | None = Field(
        default=None, description="for a tag: the version it pointed to at this time"
    )


class TagBody(BaseModel):
    """Body of ``PUT /datasets/{id}/tags/{tag}``."""

    version: str = Field(
        min_length=1, max_length=200, description="a version number, version id or another tag"
    )


class TagOut(BaseModel):
    """Where a tag points, from its last move."""

    dataset_id: str
    tag: str
    version_id: str
    version_number: int
    previous_version_id: str | None
    moved_by: str
    moved_at: datetime


class TagList(BaseModel):
    """The tags of a dataset."""

    tags: list[TagOut]


class TagHistoryOut(TagOut):
    """Where a tag points (or pointed at ``as_of``) and every move of it, oldest first."""

    history: list[TagOut]


class CompareQuery(BaseModel):
    """Query of the compare route: version numbers or ids."""

    a: str = Field(min_length=1)
    b: str = Field(min_length=1)


class CompareOut(BaseModel):
    """Differences between two versions."""

    a: str
    b: str
    same_content: bool
    schema_: dict[str, Any] = Field(alias="schema")
    row_count: dict[str, int | None]
    rows: dict[str, Any] | None
    rows_note: str | None


class LineageQuery(BaseModel):
    """Query of ``GET /lineage/{version_id}``."""

    direction: Literal["upstream", "downstream", "both"] = "upstream"
    max_depth: int | None = Field(default=None, ge=0, le=100)


class LineageNodeOut(BaseModel):
    """A version in a lineage view (``visible`` false: another team's version, redacted)."""

    version_id: str
    dataset_id: str | None
    version_number: int | None
    sha256: str | None
    created_at: datetime | None
    depth: int
    visible: bool
    deleted_at: datetime | None = None


class LineageEdgeOut(BaseModel):
    """A derivation."""

    parent_id: str
    child_id: str
    transformation_id: str | None
    transformation_type: str | None


class LineageViewOut(BaseModel):
    """One direction of lineage."""

    nodes: list[LineageNodeOut]
    edges: list[LineageEdgeOut]
    truncated: bool


class LineageOut(BaseModel):
    """Upstream and/or downstream lineage of a version."""

    version_id: str
    upstream: LineageViewOut | None = None
    downstream: LineageViewOut | None = None


class TransformationBody(BaseModel):
    """Body of ``POST /datasets/{id}/transformations``."""

    transformation: dict[str, Any] = Field(description="a declarative spec; see the docs")
    source_version_ids: list[str] = Field(min_length=1, max_length=10)
    tags: Tags = Field(default_factory=dict, max_length=50)
    output_dataset_ids: dict[
        Literal["output", "train", "test"], Annotated[str, Field(min_length=1, max_length=200)]
    ] = Field(default_factory=dict)
    data: str | None = Field(default=None, description="external steps: the produced content")


class TransformationOut(BaseModel):
    """A recorded transformation and its output versions."""

    transformation_id: str
    type: str
    params: dict[str, Any]
    source_version_ids: list[str]
    output_version_ids: dict[str, str]
    fitted_params: dict[str, Any]
    replayable: bool
    code_hash: str | None
    created_by: str
    created_at: datetime
    outputs: dict[str, VersionOut]


class ReplayBody(BaseModel):
    """Body of ``POST /versions/{version_id}/replay``."""

    source_version_id: str
    data: str | None = Field(default=None, description="new source content (CSV / JSON lines)")
    data_version_id: str | None = Field(default=None, description="or a stored version")


class ReplayOut(BaseModel):
    """The outcome of a replay."""

    target_version_id: str
    source_version_id: str
    sha256: str
    size_bytes: int
    row_count: int
    target_sha256: str
    matches_target: bool
    steps: list[str]


class ReproducibilityOut(BaseModel):
    """Whether a version can be rebuilt from its roots."""

    version_id: str
    reproducible: bool
    chain: list[str]
    missing_objects: list[dict[str, str]]
    non_replayable_steps: list[dict[str, Any]]
    steps: list[dict[str, Any]]


class UsageBody(BaseModel):
    """Body of the usages route."""

    experiment_id: str = Field(min_length=1, max_length=200)
    purpose: Name = Field(default="training", min_length=1, max_length=50)


class UsageOut(BaseModel):
    """A recorded usage."""

    experiment_id: str
    dataset_id: str
    version_id: str
    purpose: str
    recorded_by: str
    recorded_at: datetime


class UsagesQuery(BaseModel):
    """Query of ``GET /datasets/{id}/usages``."""

    experiment_id: str = Field(min_length=1)


class UsageList(BaseModel):
    """Usages of a dataset by one experiment."""

    usages: list[UsageOut]


class ReconstructQuery(BaseModel):
    """Query of ``GET /datasets/{id}/reconstruct``: at most one of ``as_of`` (default: now) and
    ``experiment_id``."""

    as_of: datetime | None = None
    experiment_id: str | None = None


class ReconstructionOut(BaseModel):
    """A version to rebuild from and its download URL."""

    version: VersionOut
    download_url: str
    usage: UsageOut | None


class ReconstructList(BaseModel):
    """Versions to rebuild from."""

    reconstructions: list[ReconstructionOut]


class RejectionOut(BaseModel):
    """An incoming file that was moved to ``rejected/`` instead of becoming a version."""

    source_key: str
    etag: str
    rejected_key: str
    reason: str
    rejected_at: datetime


class RejectionList(BaseModel):
    """Recent rejections."""

    rejections: list[RejectionOut]


class RejectionsQuery(BaseModel):
    """Query of ``GET /dataset-rejections``."""

    limit: int = Field(default=100, ge=1, le=1000)


def dataset_out(dataset: Dataset) -> dict[str, Any]:
    """JSON shape of a dataset."""
    declared = dataset.declared_schema
    return {
        **dataset.__dict__,
        "declared_schema": declared.to_dict() if declared else None,
        "retention": dataset.retention.to_dict() if dataset.retention else None,
        "drift_limits": dataset.drift_limits.to_dict() if dataset.drift_limits else None,
    }


def version_out(version: DatasetVersion, created: bool | None = None) -> dict[str, Any]:
    """JSON shape of a version (the storage key stays internal)."""
    shown = {key: value for key, value in version.__dict__.items() if key != "storage_key"}
    shown["schema"] = version.schema.to_dict() if version.schema else None
    if created is not None:
        shown["created"] = created
    return shown


def _principal(ctx: RequestContext) -> Any:
    assert ctx.principal is not None
    return ctx.principal


def _content(body: CreateVersionBody) -> bytes:
    if (body.data is None) == (body.data_base64 is None):
        raise ValidationError("give exactly one of 'data' or 'data_base64'")
    if body.data is not None:
        return body.data.encode("utf-8")
    try:
        return base64.b64decode(body.data_base64 or "", validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("data_base64 is not valid base64") from None


@api.route(
    "/datasets", "POST", role="writer", body=CreateDatasetBody, response=DatasetOut, status=201
)
def create_dataset(ctx: RequestContext) -> dict[str, Any]:
    """Create a dataset (unique name; the caller owns it)."""
    body: CreateDatasetBody = ctx.body
    dataset = get_dataset_service().create_dataset(
        _principal(ctx),
        body.name,
        body.access_groups,
        body.format,
        body.compatibility,
        body.description,
        body.schema_.to_domain() if body.schema_ else None,
        body.drift_limits.to_domain() if body.drift_limits else None,
    )
    return dataset_out(dataset)


@api.route("/datasets", "GET", query=DatasetListQuery, response=DatasetList)
def list_datasets(ctx: RequestContext) -> dict[str, Any]:
    """List the datasets the caller may read, by name, a page at a time (limit, next_token)."""
    query: DatasetListQuery = ctx.query
    found, token = get_dataset_service().list_datasets(
        _principal(ctx), query.limit, query.next_token
    )
    return {"datasets": [dataset_out(dataset) for dataset in found], "next_token": token}


@api.route("/datasets/{dataset_id}", "GET", response=DatasetOut)
def get_dataset(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Get a dataset."""
    return dataset_out(get_dataset_service().readable(_principal(ctx), dataset_id))


@api.route("/datasets/{dataset_id}/access", "PUT", role="writer", body=AccessBody,
           response=DatasetOut)  # fmt: skip
def set_dataset_access(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Replace the groups that may see the dataset (its owner and admins always may)."""
    groups = ctx.body.access_groups
    return dataset_out(get_dataset_service().set_access_groups(_principal(ctx), dataset_id, groups))


@api.route(
    "/datasets/{dataset_id}/versions",
    "POST",
    role="writer",
    body=CreateVersionBody,
    response=VersionOut,
    status=201,
    responses={200: "identical content: the existing version"},
)
def create_version(ctx: RequestContext, dataset_id: str) -> Any:
    """Create a version from inline content (201), or get the one with identical content (200)."""
    body: CreateVersionBody = ctx.body
    request = VersionRequest(
        schema=body.schema_.to_domain() if body.schema_ else None,
        parent_version_ids=[body.parent_version_id] if body.parent_version_id else [],
        tags=dict(body.tags),
        format=None if body.format is None else DatasetFormat(body.format),
    )
    outcome = get_dataset_service().create_version(
        _principal(ctx), dataset_id, _content(body), request
    )
    shown = version_out(outcome.version, outcome.created)
    return shown if outcome.created else ApiResponse(shown, 200)


@api.route(
    "/datasets/{dataset_id}/versions/{version}/restore",
    "POST",
    role="writer",
    response=VersionOut,
    status=201,
    responses={200: "the latest version already holds this content: nothing written"},
)
def restore_version(ctx: RequestContext, dataset_id: str, version: str) -> Any:
    """Make an earlier version current again: a new version pointing to the same stored object
    (no copy), recorded in lineage as restored_from the old one."""
    outcome = get_dataset_service().restore_version(_principal(ctx), dataset_id, version)
    shown = version_out(outcome.version, outcome.created)
    return shown if outcome.created else ApiResponse(shown, 200)


@api.route(
    "/datasets/{dataset_id}/uploads",
    "POST",
    role="writer",
    body=UploadBody,
    response=UploadOut,
    status=201,
    responses={200: "the dataset already has this sha256: nothing to upload"},
)
def create_upload(ctx: RequestContext, dataset_id: str) -> Any:
    """Presigned PUT URL(s) for a file of any size; the S3 trigger makes it a version.

    With ``sha256``: ``exists`` (200) when the dataset already has that content, else a
    direct, S3-verified PUT into content-addressed storage (201).
    """
    body: UploadBody = ctx.body
    upload = get_dataset_service().create_upload(
        _principal(ctx), dataset_id, body.filename, body.size_bytes, body.sha256
    )
    shown = {**upload.__dict__, "method": "PUT"}
    return ApiResponse(shown, 200) if upload.status == "exists" else shown


@api.route(
    "/datasets/{dataset_id}/uploads/complete",
    "POST",
    role="writer",
    body=CompleteUploadBody,
    response=CompleteUploadOut,
    status=202,
)
def complete_upload(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Complete a multipart upload with the parts' ETags; the S3 trigger makes it a version."""
    body: CompleteUploadBody = ctx.body
    get_dataset_service().complete_upload(
        _principal(ctx),
        dataset_id,
        body.key,
        body.upload_id,
        [(part.part_number, part.etag) for part in body.parts],
    )
    return {"key": body.key, "status": "completed"}


@api.route("/datasets/{dataset_id}/versions", "GET", query=VersionsQuery, response=VersionList)
def list_versions(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """List versions (ascending; limit, offset, as_of)."""
    query: VersionsQuery = ctx.query
    page, total = get_dataset_service().list_versions(
        _principal(ctx), dataset_id, query.limit, query.offset, query.as_of
    )
    following = query.offset + len(page)
    return {
        "versions": [version_out(version) for version in page],
        "total": total,
        "limit": query.limit,
        "offset": query.offset,
        "next_offset": following if following < total else None,
    }


@api.route(
    "/datasets/{dataset_id}/versions/{version}", "GET", query=VersionQuery, response=VersionOut
)
def get_version(ctx: RequestContext, dataset_id: str, version: str) -> dict[str, Any]:
    """Get a version by number, id or tag (as_of: where the tag pointed then)."""
    query: VersionQuery = ctx.query
    found = get_dataset_service().version(_principal(ctx), dataset_id, version, query.as_of)
    return version_out(found)


@api.route("/datasets/{dataset_id}/versions/{version}/profile", "GET", response=ProfileOut)
def get_profile(ctx: RequestContext, dataset_id: str, version: str) -> dict[str, Any]:
    """The column profile of a version (number, id or tag): counts, nulls, distinct values,
    numeric moments, quantiles and histogram, top values; 404 for a format not profiled."""
    return get_dataset_service().profile(_principal(ctx), dataset_id, version)


@api.route("/datasets/{dataset_id}/drift", "GET", query=CompareQuery, response=DriftOut)
def drift(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Per-column drift from version a to b (PSI; KS or chi-square with p-values) and the
    schema diff; a and b are numbers, ids or tags."""
    query: CompareQuery = ctx.query
    return get_dataset_service().drift(_principal(ctx), dataset_id, query.a, query.b)


@api.route(
    "/datasets/{dataset_id}/versions/{version}", "DELETE", role="writer", response=VersionOut
)
def delete_version(ctx: RequestContext, dataset_id: str, version: str) -> dict[str, Any]:
    """Delete a version: a tombstone (reads answer 410; it stays listed and in lineage); its
    bytes go once no live version points to them. 409 if tagged or used by an experiment."""
    deleted = get_dataset_service().delete_version(_principal(ctx), dataset_id, version)
    return version_out(deleted)


@api.route(
    "/datasets/{dataset_id}/retention", "PUT", role="writer", body=RetentionIn, response=DatasetOut
)
def set_retention(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Set the dataset's retention policy (both fields null: keep every version)."""
    body: RetentionIn = ctx.body
    policy = (
        None
        if body.keep_last is None and body.keep_days is None
        else RetentionPolicy(body.keep_last, body.keep_days)
    )
    return dataset_out(get_dataset_service().set_retention(_principal(ctx), dataset_id, policy))


@api.route(
    "/datasets/{dataset_id}/drift-limits",
    "PUT",
    role="writer",
    body=DriftLimitsIn,
    response=DatasetOut,
)
def set_drift_limits(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Set the drift limits new versions are checked against (psi and p_value null: none)."""
    body: DriftLimitsIn = ctx.body
    limits = body.to_domain()
    return dataset_out(get_dataset_service().set_drift_limits(_principal(ctx), dataset_id, limits))


@api.route("/content/{sha256}/erase", "POST", role="admin", response=EraseOut)
def erase_content(ctx: RequestContext, sha256: str) -> dict[str, Any]:
    """Erase content everywhere (a GDPR request): every live version of any dataset holding
    this sha256 is deleted (tags and usages notwithstanding) and its bytes are deleted now."""
    deleted, collected = get_dataset_service().erase_content(_principal(ctx), sha256)
    return {
        "sha256": sha256.lower(),
        "deleted_version_ids": [version.version_id for version in deleted],
        "deleted_objects": collected.deleted,
    }


@api.route("/datasets/{dataset_id}/tags/{tag}", "PUT", role="writer", body=TagBody, response=TagOut)
def move_tag(ctx: RequestContext, dataset_id: str, tag: str) -> dict[str, Any]:
    """Point a tag (a named ref) at a version, recording who moved it, when and from where."""
    body: TagBody = ctx.body
    moved = get_dataset_service().move_tag(_principal(ctx), dataset_id, tag, body.version)
    return dict(moved.__dict__)


@api.route("/datasets/{dataset_id}/tags", "GET", response=TagList)
def list_tags(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Where every tag of the dataset points."""
    found = get_dataset_service().tags(_principal(ctx), dataset_id)
    return {"tags": [dict(move.__dict__) for move in found]}


@api.route("/datasets/{dataset_id}/tags/{tag}", "GET", query=VersionQuery, response=TagHistoryOut)
def get_tag(ctx: RequestContext, dataset_id: str, tag: str) -> dict[str, Any]:
    """A tag: where it points (as_of: pointed then) and every move, oldest first."""
    query: VersionQuery = ctx.query
    current, history = get_dataset_service().tag(_principal(ctx), dataset_id, tag, query.as_of)
    return {**current.__dict__, "history": [dict(move.__dict__) for move in history]}


@api.route("/datasets/{dataset_id}/versions/{version}/content", "GET", response=ContentOut)
def get_content(ctx: RequestContext, dataset_id: str, version: str) -> dict[str, Any]:
    """Presigned GET URL of a version's content."""
    from chalicelib.core.config import get_settings

    found, url = get_dataset_service().content_url(_principal(ctx), dataset_id, version)
    return {
        "version_id": found.version_id,
        "sha256": found.sha256,
        "size_bytes": found.size_bytes,
        "url": url,
        "expires_in": get_settings().presign_seconds,
    }


@api.route("/datasets/{dataset_id}/compare", "GET", query=CompareQuery, response=CompareOut)
def compare_versions(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Schema, row-count and row-level differences between versions a and b."""
    query: CompareQuery = ctx.query
    return get_dataset_service().compare(_principal(ctx), dataset_id, query.a, query.b)


@api.route("/lineage/{version_id}", "GET", query=LineageQuery, response=LineageOut)
def get_lineage(ctx: RequestContext, version_id: str) -> dict[str, Any]:
    """Upstream / downstream lineage of a version (max_depth bounds the traversal)."""
    query: LineageQuery = ctx.query
    views = get_dataset_service().lineage(
        _principal(ctx), version_id, query.direction, query.max_depth
    )
    return {"version_id": version_id, **views}


@api.route(
    "/datasets/{dataset_id}/transformations",
    "POST",
    role="writer",
    body=TransformationBody,
    response=TransformationOut,
    status=201,
)
def apply_transformation(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Apply a declarative transformation to source versions; record outputs and lineage."""
    body: TransformationBody = ctx.body
    applied = get_dataset_service().apply_transformation(
        _principal(ctx),
        dataset_id,
        body.transformation,
        body.source_version_ids,
        body.tags,
        {str(role): dataset for role, dataset in body.output_dataset_ids.items()},
        None if body.data is None else body.data.encode("utf-8"),
    )
    return {
        **applied.record.__dict__,
        "outputs": {
            role: version_out(outcome.version, outcome.created)
            for role, outcome in applied.outputs.items()
        },
    }


@api.route(
    "/versions/{version_id}/replay", "POST", role="writer", body=ReplayBody, response=ReplayOut
)
def replay(ctx: RequestContext, version_id: str) -> dict[str, Any]:
    """Re-apply the recorded chain from a source version to this one on new data."""
    body: ReplayBody = ctx.body
    result = get_dataset_service().replay(
        _principal(ctx),
        version_id,
        body.source_version_id,
        None if body.data is None else body.data.encode("utf-8"),
        body.data_version_id,
    )
    return {
        "target_version_id": version_id,
        "source_version_id": body.source_version_id,
        "sha256": result.sha256,
        "size_bytes": result.size_bytes,
        "row_count": result.row_count,
        "target_sha256": result.target_sha256,
        "matches_target": result.matches_target,
        "steps": result.steps,
    }


@api.route("/versions/{version_id}/reproducibility", "GET", response=ReproducibilityOut)
def reproducibility(ctx: RequestContext, version_id: str) -> dict[str, Any]:
    """Report missing source objects and non-replayable steps in a version's chain."""
    return get_dataset_service().reproducibility(_principal(ctx), version_id).__dict__


@api.route(
    "/datasets/{dataset_id}/versions/{version}/usages",
    "POST",
    role="writer",
    body=UsageBody,
    response=UsageOut,
    status=201,
)
def record_usage(ctx: RequestContext, dataset_id: str, version: str) -> dict[str, Any]:
    """Record that an experiment used this version (idempotent)."""
    body: UsageBody = ctx.body
    usage = get_dataset_service().record_usage(
        _principal(ctx), dataset_id, version, body.experiment_id, body.purpose
    )
    return dict(usage.__dict__)


@api.route("/datasets/{dataset_id}/usages", "GET", query=UsagesQuery, response=UsageList)
def list_usages(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Usages of this dataset recorded by one experiment."""
    query: UsagesQuery = ctx.query
    found = get_dataset_service().usages(_principal(ctx), dataset_id, query.experiment_id)
    return {"usages": [dict(usage.__dict__) for usage in found]}


@api.route(
    "/datasets/{dataset_id}/reconstruct", "GET", query=ReconstructQuery, response=ReconstructList
)
def reconstruct(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """The version(s) to rebuild from: as of a time (default now), or as used by an experiment."""
    query: ReconstructQuery = ctx.query
    found = get_dataset_service().reconstruct(
        _principal(ctx), dataset_id, query.as_of, query.experiment_id
    )
    return {
        "reconstructions": [
            {
                "version": version_out(item.version),
                "download_url": item.download_url,
                "usage": dict(item.usage.__dict__) if item.usage else None,
            }
            for item in found
        ]
    }


@api.route(
    "/dataset-rejections", "GET", role="admin", query=RejectionsQuery, response=RejectionList
)
def list_rejections(ctx: RequestContext) -> dict[str, Any]:
    """Incoming files moved to rejected/ and why (operators; newest first)."""
    query: RejectionsQuery = ctx.query
    found = get_dataset_service().list_rejections(_principal(ctx), query.limit)
    return {"rejections": [dict(item.__dict__) for item in found]}
