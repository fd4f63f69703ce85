"""HTTP routes of the model registry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from chalicelib.core.errors import ValidationError
from chalicelib.core.http import ApiBlueprint, RequestContext
from chalicelib.core.text import Name, Text
from chalicelib.registry.models import ModelVersion, RegisteredModel
from chalicelib.registry.service import VersionSpec, decode_artifact, get_model_registry

api = ApiBlueprint(__name__, tag="models")

Scalar = float | int | str | bool | None


class CreateModelBody(BaseModel):
    """Body of ``POST /models``."""

    name: Name = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=2000)


class ModelOut(BaseModel):
    """A registered model."""

    model_id: str
    name: str
    description: str
    owner: str
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
    return dict(model.__dict__)


def version_out(version: ModelVersion) -> dict[str, Any]:
    """JSON shape of a version (the S3 keys stay internal)."""
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
        "background_dataset_version_id": version.background_dataset_version_id,
        "has_background_sample": version.has_background_sample,
        "description": version.description,
        "metadata": version.metadata,
        "created_at": version.created_at,
        "updated_at": version.updated_at,
    }


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
    assert ctx.principal is not None
    registry = get_model_registry()
    return model_out(registry.create_model(body.name, body.description, ctx.principal.principal))


@api.route("/models", "GET", response=ModelList)
def list_models(ctx: RequestContext) -> dict[str, Any]:
    """List models."""
    return {"models": [model_out(m) for m in get_model_registry().list_models()]}


@api.route("/models/{model_id}", "GET", response=ModelOut)
def get_model(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """Get a model."""
    return model_out(get_model_registry().get_model(model_id))


@api.route("/models/{model_id}/uploads", "POST", role="writer", response=UploadOut, status=201)
def create_model_upload(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """Presigned PUT URL for an artifact larger than the request body limit."""
    key, url = get_model_registry().create_upload(model_id)
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
    registry = get_model_registry()
    version = registry.register_version(model_id, spec, artifact, body.artifact_upload_key)
    return version_out(version)


@api.route("/models/{model_id}/versions", "GET", response=VersionList)
def list_versions(ctx: RequestContext, model_id: str) -> dict[str, Any]:
    """List versions of a model."""
    return {"versions": [version_out(v) for v in get_model_registry().list_versions(model_id)]}


@api.route("/models/{model_id}/versions/{version}", "GET", response=VersionOut)
def get_version(ctx: RequestContext, model_id: str, version: str) -> dict[str, Any]:
    """Get a model version."""
    return version_out(get_model_registry().get_version(model_id, parse_version(version)))


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
    found = get_model_registry().set_stage(model_id, parse_version(version), body.stage)
    return version_out(found)
