"""HTTP routes of the model registry.

Every route goes through :mod:`chalicelib.registry.facade`, which checks the caller against the
model (owner, ``access_groups``, admin): a model the caller may not read is a 404, exactly as
for one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from chalicelib.core.errors import ValidationError
from chalicelib.core.http import ApiBlueprint, RequestContext
from chalicelib.core.principal import Principal
from chalicelib.core.text import Name, Text
from chalicelib.registry import facade
from chalicelib.registry.models import ModelVersion, RegisteredModel
from chalicelib.registry.service import VersionSpec, decode_artifact

api = ApiBlueprint(__name__, tag="models")

Scalar = float | int | str | bool | None


GroupName = Annotated[Name, Field(min_length=1, max_length=200)]


class CreateModelBody(BaseModel):
    """Body of ``POST /models`` (``access_groups`` default: the caller's groups)."""

    name: Name = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=2000)
    access_groups: list[GroupName] | None = Field(default=None, max_length=50)


class AccessBody(BaseModel):
    """Body of ``PUT /models/{model_id}/access``: who may see the model besides its owner."""

    access_groups: list[GroupName] = Field(max_length=50)


class ModelOut(BaseModel):
    """A registered model."""

    model_id: str
    name: str
    description: str
    owner: str
    access_groups: list[str]
    latest_version: int
    production_version: int | None
    generation: int
    created_at: datetime
    updated_at: datetime


class ModelList(BaseModel):
    """All models."""

    models: list[ModelOut]


class RegisterVersionBody(BaseModel):
    """Body of ``POST /models/{model_id}/versions``: the artifact inline or by upload key."""

    artifact_base64: str | None = Field(default=None, description="skops file, base64")
    artifact_upload_key: str | None = Field(
        default=None, description="key returned by POST /models/{model_id}/uploads"
    )
    format: str = Field(default="skops", max_length=50)
    task: Literal["classification", "regression", "text_classification", "image_classification"]
    feature_names: list[Annotated[Name, Field(max_length=1000)]] = Field(
        default_factory=list, max_length=10_000
    )
    class_names: list[Annotated[Name, Field(max_length=1000)]] = Field(
        default_factory=list, max_length=10_000
    )
    background_dataset_version_id: str | None = None
    background_sample: list[list[Scalar]] | None = None
    description: Text = Field(default="", max_length=2000)
    metadata: dict[
        Annotated[Name, Field(max_length=200)], Annotated[Text, Field(max_length=2000)]
    ] = Field(default_factory=dict, max_length=100)


class VersionOut(BaseModel):
    """A model version."""

    model_id: str
    version: int
    format: str
    task: str
    feature_names: list[str]
    class_names: list[str]
    artifact_sha256: str
    artifact_size: int
    stage: str
    background_dataset_version_id: str | None
    has_background_sample: bool
    description: str
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime


class VersionList(BaseModel):
    """Every version of a model."""

    versions: list[VersionOut]


class StageBody(BaseModel):
    """Body of the stage route."""

    stage: Literal["staging", "production", "archived"]


class UploadOut(BaseModel):
    """A presigned upload for a large artifact."""

    upload_key: str
    url: str
    method: str
    expires_in: int


def model_out(model: RegisteredModel) -> dict[str, Any]:
    """JSON shape of a model."""
    return {**model.__dict__, "access_groups": list(model.access_groups)}


def version_out(version: ModelVersion, principal: Principal | None = None) -> dict[str, Any]:
    """JSON shape of a version (the S3 keys stay internal).

    With a ``principal``, a background dataset version the caller may not read is shown as
    ``null``: its id is not the caller's to see.
    """
    background = version.background_dataset_version_id
    if principal is not None and not facade.background_visible(principal, version):
        background = None
    return {
        "model_id": version.model_id,
        "version": version.version,
        "format": version.format,
        "task": version.task.value,
        "feature_names": version.feature_names,
        "class_names": version.class_names,
        "artifact_sha256": version.artifact_sha256,
        "artifact_size": version.artifact_size,
        "stage": version.stage.value,
        "background_dataset_version_id": background,
        "has_background_sample": version.has_background_sample,
        "description": version.description,
        "metadata": version.metadata,
        "created_at": version.created_at,
        "updated_at": version.updated_at,
    }


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
    return model_out(created)


@api.route("/models", "GET", response=ModelList)
def list_models(ctx: RequestContext) -> dict[str, Any]:
    """List the models the caller may read."""
    return {"models": [model_out(m) for m in facade.list_models(_principal(ctx))]}


@api.route("/models/{model_id}", "GET", response=ModelOut)
def get_model(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """Get a model."""
    return model_out(facade.readable_model(_principal(ctx), model_id))


@api.route("/models/{model_id}/access", "PUT", role="writer", body=AccessBody, response=ModelOut)
def set_model_access(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """Replace the groups that may see the model (its owner and admins always may)."""
    body: AccessBody = ctx.body
    return model_out(facade.set_access_groups(_principal(ctx), model_id, body.access_groups))


@api.route("/models/{model_id}/uploads", "POST", role="writer", response=UploadOut, status=201)
def create_model_upload(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """Presigned PUT URL for an artifact larger than the request body limit."""
    key, url = facade.create_upload(_principal(ctx), model_id)
    from chalicelib.core.config import get_settings

    return {
        "upload_key": key,
        "url": url,
        "method": "PUT",
        "expires_in": get_settings().presign_seconds,
    }


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
    return version_out(version)


@api.route("/models/{model_id}/versions", "GET", response=VersionList)
def list_versions(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """List versions of a model."""
    principal = _principal(ctx)
    found = facade.list_versions(principal, model_id)
    return {"versions": [version_out(v, principal) for v in found]}


@api.route("/models/{model_id}/versions/{version}", "GET", response=VersionOut)
def get_version(ctx: RequestContext, model_id: str, version: str) -> dict[str, Any]:
    """Get a model version."""
    principal = _principal(ctx)
    return version_out(
        facade.readable_version(principal, model_id, parse_version(version)), principal
    )


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
    return version_out(found, principal)
