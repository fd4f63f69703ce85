"""HTTP routes of the model registry (schemas in :mod:`chalicelib.registry.schemas`).

Every route goes through :mod:`chalicelib.registry.facade`, which checks the caller against the
model (owner, ``access_groups``, admin): a model the caller may not read is a 404, exactly as
for one that does not exist.
"""

from __future__ import annotations

from typing import Any

from chalicelib.core.errors import ValidationError
from chalicelib.core.http import ApiBlueprint, RequestContext
from chalicelib.core.principal import Principal
from chalicelib.core.shaping import shaped
from chalicelib.registry import facade
from chalicelib.registry.models import ModelVersion
from chalicelib.registry.schemas import (
    AccessBody,
    CreateModelBody,
    ModelList,
    ModelOut,
    RegisterVersionBody,
    StageBody,
    UploadOut,
    VersionList,
    VersionOut,
)
from chalicelib.registry.service import VersionSpec, decode_artifact

api = ApiBlueprint(__name__, tag="models")


def _version(version: ModelVersion, principal: Principal | None = None) -> dict[str, Any]:
    """A version's response (the S3 keys stay internal: ``VersionOut`` does not declare them).

    With a ``principal``, a background dataset version the caller may not read is shown as
    ``null``: its id is not the caller's to see.
    """
    background = version.background_dataset_version_id
    if principal is not None and not facade.background_visible(principal, version):
        background = None
    return shaped(VersionOut, version, background_dataset_version_id=background)


def _principal(ctx: RequestContext) -> Principal:
    assert ctx.principal is not None
    return ctx.principal


def parse_version(text: str) -> int:
    """A version path parameter as a positive int.

    Raises:
        ValidationError: Not a positive integer.
    """
    if not text.isdigit() or int(text) < 1:
        raise ValidationError(f"version must be a positive integer; got '{text}'")
    return int(text)


@api.route("/models", "POST", role="writer", body=CreateModelBody, response=ModelOut, status=201)
def create_model(ctx: RequestContext) -> dict[str, Any]:
    """Create a model (unique name)."""
    body: CreateModelBody = ctx.body
    created = facade.create_model(_principal(ctx), body.name, body.description, body.access_groups)
    return shaped(ModelOut, created)


@api.route("/models", "GET", response=ModelList)
def list_models(ctx: RequestContext) -> dict[str, Any]:
    """List the models the caller may read."""
    return shaped(ModelList, models=facade.list_models(_principal(ctx)))


@api.route("/models/{model_id}", "GET", response=ModelOut)
def get_model(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """Get a model."""
    return shaped(ModelOut, facade.readable_model(_principal(ctx), model_id))


@api.route("/models/{model_id}/access", "PUT", role="writer", body=AccessBody, response=ModelOut)
def set_model_access(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """Replace the groups that may see the model (its owner and admins always may)."""
    body: AccessBody = ctx.body
    return shaped(ModelOut, facade.set_access_groups(_principal(ctx), model_id, body.access_groups))


@api.route("/models/{model_id}/uploads", "POST", role="writer", response=UploadOut, status=201)
def create_model_upload(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """Presigned PUT URL for an artifact larger than the request body limit."""
    key, url = facade.create_upload(_principal(ctx), model_id)
    from chalicelib.core.config import get_settings

    return shaped(
        UploadOut, upload_key=key, url=url, method="PUT", expires_in=get_settings().presign_seconds
    )


@api.route(
    "/models/{model_id}/versions",
    "POST",
    role="writer",
    body=RegisterVersionBody,
    response=VersionOut,
    status=201,
)
def register_version(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """Register a new version from a skops artifact (pickle/joblib are refused with 422)."""
    body: RegisterVersionBody = ctx.body
    spec = VersionSpec(
        format=body.format,
        task=body.task,
        feature_names=tuple(body.feature_names),
        class_names=tuple(body.class_names),
        background_dataset_version_id=body.background_dataset_version_id,
        background_sample=None
        if body.background_sample is None
        else tuple(tuple(row) for row in body.background_sample),
        description=body.description,
        metadata=tuple(sorted(body.metadata.items())),
    )
    artifact = None if body.artifact_base64 is None else decode_artifact(body.artifact_base64)
    version = facade.register_version(
        _principal(ctx), model_id, spec, artifact, body.artifact_upload_key
    )
    return _version(version)


@api.route("/models/{model_id}/versions", "GET", response=VersionList)
def list_versions(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """List versions of a model."""
    principal = _principal(ctx)
    found = facade.list_versions(principal, model_id)
    return shaped(VersionList, versions=[_version(v, principal) for v in found])


@api.route("/models/{model_id}/versions/{version}", "GET", response=VersionOut)
def get_version(ctx: RequestContext, model_id: str, version: str) -> dict[str, Any]:
    """Get a model version."""
    principal = _principal(ctx)
    return _version(facade.readable_version(principal, model_id, parse_version(version)), principal)


@api.route(
    "/models/{model_id}/versions/{version}/stage",
    "POST",
    role="writer",
    body=StageBody,
    response=VersionOut,
)
def set_stage(ctx: RequestContext, model_id: str, version: str) -> dict[str, Any]:
    """Move a version to staging, production (archives the previous one) or archived."""
    body: StageBody = ctx.body
    principal = _principal(ctx)
    found = facade.set_stage(principal, model_id, parse_version(version), body.stage)
    return _version(found, principal)
