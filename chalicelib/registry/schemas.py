"""Request and response schemas of the model registry routes (the routes are in
:mod:`chalicelib.registry.api`); responses are built with
:func:`~chalicelib.core.shaping.shaped` from the domain objects
(:class:`~chalicelib.registry.models.RegisteredModel`,
:class:`~chalicelib.registry.models.ModelVersion`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from chalicelib.core.schema import Schema
from chalicelib.core.text import Name, Text

Scalar = float | int | str | bool | None


GroupName = Annotated[Name, Field(min_length=1, max_length=200)]


class CreateModelBody(Schema):
    """Body of ``POST /models`` (``access_groups`` default: the caller's groups)."""

    name: Name = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=2000)
    access_groups: list[GroupName] | None = Field(default=None, max_length=50)


class AccessBody(Schema):
    """Body of ``PUT /models/{model_id}/access``: who may see the model besides its owner."""

    access_groups: list[GroupName] = Field(max_length=50)


class ModelOut(Schema):
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


class ModelList(Schema):
    """All models."""

    models: list[ModelOut]


class RegisterVersionBody(Schema):
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


class VersionOut(Schema):
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


class VersionList(Schema):
    """Every version of a model."""

    versions: list[VersionOut]


class StageBody(Schema):
    """Body of the stage route."""

    stage: Literal["staging", "production", "archived"]


class UploadOut(Schema):
    """A presigned upload for a large artifact."""

    upload_key: str
    url: str
    method: str
    expires_in: int
