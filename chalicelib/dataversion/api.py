"""HTTP routes of the dataset versioning service (their schemas: :mod:`.schemas`).

Access: a caller who may not read a dataset gets 404 for it (as if it did not exist); readers
get 403 on writes. Large files go through ``POST /datasets/{id}/uploads`` (presigned PUT under
``incoming/``); the S3 trigger turns the uploaded object into a version.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from chalicelib.core.errors import ValidationError
from chalicelib.core.http import ApiBlueprint, ApiResponse, RequestContext
from chalicelib.dataversion.models import DatasetFormat, RetentionPolicy
from chalicelib.dataversion.schemas import (
    AccessBody,
    CompareOut,
    CompareQuery,
    CompleteUploadBody,
    CompleteUploadOut,
    ContentOut,
    CreateDatasetBody,
    CreateVersionBody,
    DatasetList,
    DatasetListQuery,
    DatasetOut,
    DriftLimitsIn,
    DriftOut,
    EraseOut,
    LineageOut,
    LineageQuery,
    ProfileOut,
    ReconstructList,
    ReconstructQuery,
    RejectionList,
    RejectionsQuery,
    ReplayBody,
    ReplayOut,
    ReproducibilityOut,
    RetentionIn,
    TagBody,
    TagHistoryOut,
    TagList,
    TagOut,
    TransformationBody,
    TransformationOut,
    UploadBody,
    UploadOut,
    UsageBody,
    UsageList,
    UsageOut,
    UsagesQuery,
    VersionList,
    VersionOut,
    VersionQuery,
    VersionsQuery,
    shaped,
)
from chalicelib.dataversion.service import get_dataset_service
from chalicelib.dataversion.versioning import VersionRequest

api = ApiBlueprint(__name__, tag="datasets")


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
    return shaped(DatasetOut, dataset)


@api.route("/datasets", "GET", query=DatasetListQuery, response=DatasetList)
def list_datasets(ctx: RequestContext) -> dict[str, Any]:
    """List the datasets the caller may read, by name, a page at a time (limit, next_token)."""
    query: DatasetListQuery = ctx.query
    found, token = get_dataset_service().list_datasets(
        _principal(ctx), query.limit, query.next_token
    )
    return shaped(DatasetList, datasets=found, next_token=token)


@api.route("/datasets/{dataset_id}", "GET", response=DatasetOut)
def get_dataset(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Get a dataset."""
    return shaped(DatasetOut, get_dataset_service().readable(_principal(ctx), dataset_id))


@api.route("/datasets/{dataset_id}/access", "PUT", role="writer", body=AccessBody,
           response=DatasetOut)  # fmt: skip
def set_dataset_access(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Replace the groups that may see the dataset (its owner and admins always may)."""
    groups = ctx.body.access_groups
    changed = get_dataset_service().set_access_groups(_principal(ctx), dataset_id, groups)
    return shaped(DatasetOut, changed)


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
    shown = shaped(VersionOut, outcome.version, created=outcome.created)
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
    shown = shaped(VersionOut, outcome.version, created=outcome.created)
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
    shown = shaped(UploadOut, upload, method="PUT")
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
    return shaped(CompleteUploadOut, key=body.key, status="completed")


@api.route("/datasets/{dataset_id}/versions", "GET", query=VersionsQuery, response=VersionList)
def list_versions(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """List versions (ascending; limit, offset, as_of)."""
    query: VersionsQuery = ctx.query
    page, total = get_dataset_service().list_versions(
        _principal(ctx), dataset_id, query.limit, query.offset, query.as_of
    )
    following = query.offset + len(page)
    return shaped(
        VersionList,
        versions=page,
        total=total,
        limit=query.limit,
        offset=query.offset,
        next_offset=following if following < total else None,
    )


@api.route(
    "/datasets/{dataset_id}/versions/{version}", "GET", query=VersionQuery, response=VersionOut
)
def get_version(ctx: RequestContext, dataset_id: str, version: str) -> dict[str, Any]:
    """Get a version by number, id or tag (as_of: where the tag pointed then)."""
    query: VersionQuery = ctx.query
    found = get_dataset_service().version(_principal(ctx), dataset_id, version, query.as_of)
    return shaped(VersionOut, found)


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
    return shaped(VersionOut, deleted)


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
    changed = get_dataset_service().set_retention(_principal(ctx), dataset_id, policy)
    return shaped(DatasetOut, changed)


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
    changed = get_dataset_service().set_drift_limits(_principal(ctx), dataset_id, limits)
    return shaped(DatasetOut, changed)


@api.route("/content/{sha256}/erase", "POST", role="admin", response=EraseOut)
def erase_content(ctx: RequestContext, sha256: str) -> dict[str, Any]:
    """Erase content everywhere (a GDPR request): every live version of any dataset holding
    this sha256 is deleted (tags and usages notwithstanding) and its bytes are deleted now."""
    deleted, collected = get_dataset_service().erase_content(_principal(ctx), sha256)
    return shaped(
        EraseOut,
        sha256=sha256.lower(),
        deleted_version_ids=[version.version_id for version in deleted],
        deleted_objects=collected.deleted,
    )


@api.route("/datasets/{dataset_id}/tags/{tag}", "PUT", role="writer", body=TagBody, response=TagOut)
def move_tag(ctx: RequestContext, dataset_id: str, tag: str) -> dict[str, Any]:
    """Point a tag (a named ref) at a version, recording who moved it, when and from where."""
    body: TagBody = ctx.body
    moved = get_dataset_service().move_tag(_principal(ctx), dataset_id, tag, body.version)
    return shaped(TagOut, moved)


@api.route("/datasets/{dataset_id}/tags", "GET", response=TagList)
def list_tags(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Where every tag of the dataset points."""
    found = get_dataset_service().tags(_principal(ctx), dataset_id)
    return shaped(TagList, tags=found)


@api.route("/datasets/{dataset_id}/tags/{tag}", "GET", query=VersionQuery, response=TagHistoryOut)
def get_tag(ctx: RequestContext, dataset_id: str, tag: str) -> dict[str, Any]:
    """A tag: where it points (as_of: pointed then) and every move, oldest first."""
    query: VersionQuery = ctx.query
    current, history = get_dataset_service().tag(_principal(ctx), dataset_id, tag, query.as_of)
    return shaped(TagHistoryOut, current, history=history)


@api.route("/datasets/{dataset_id}/versions/{version}/content", "GET", response=ContentOut)
def get_content(ctx: RequestContext, dataset_id: str, version: str) -> dict[str, Any]:
    """Presigned GET URL of a version's content."""
    from chalicelib.core.config import get_settings

    found, url = get_dataset_service().content_url(_principal(ctx), dataset_id, version)
    return shaped(ContentOut, found, url=url, expires_in=get_settings().presign_seconds)


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
    outputs = {
        role: shaped(VersionOut, outcome.version, created=outcome.created)
        for role, outcome in applied.outputs.items()
    }
    return shaped(TransformationOut, applied.record, outputs=outputs)


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
    return shaped(
        ReplayOut,
        result,
        target_version_id=version_id,
        source_version_id=body.source_version_id,
    )


@api.route("/versions/{version_id}/reproducibility", "GET", response=ReproducibilityOut)
def reproducibility(ctx: RequestContext, version_id: str) -> dict[str, Any]:
    """Report missing source objects and non-replayable steps in a version's chain."""
    report = get_dataset_service().reproducibility(_principal(ctx), version_id)
    return shaped(ReproducibilityOut, report)


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
    return shaped(UsageOut, usage)


@api.route("/datasets/{dataset_id}/usages", "GET", query=UsagesQuery, response=UsageList)
def list_usages(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """Usages of this dataset recorded by one experiment."""
    query: UsagesQuery = ctx.query
    found = get_dataset_service().usages(_principal(ctx), dataset_id, query.experiment_id)
    return shaped(UsageList, usages=found)


@api.route(
    "/datasets/{dataset_id}/reconstruct", "GET", query=ReconstructQuery, response=ReconstructList
)
def reconstruct(ctx: RequestContext, dataset_id: str) -> dict[str, Any]:
    """The version(s) to rebuild from: as of a time (default now), or as used by an experiment."""
    query: ReconstructQuery = ctx.query
    found = get_dataset_service().reconstruct(
        _principal(ctx), dataset_id, query.as_of, query.experiment_id
    )
    return shaped(ReconstructList, reconstructions=found)


@api.route(
    "/dataset-rejections", "GET", role="admin", query=RejectionsQuery, response=RejectionList
)
def list_rejections(ctx: RequestContext) -> dict[str, Any]:
    """Incoming files moved to rejected/ and why (operators; newest first)."""
    query: RejectionsQuery = ctx.query
    found = get_dataset_service().list_rejections(_principal(ctx), query.limit)
    return shaped(RejectionList, rejections=found)
