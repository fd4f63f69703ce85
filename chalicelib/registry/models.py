"""Registry domain: registered models, their versions and stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class ModelStage(str, Enum):
    """Lifecycle stage of a model version (one production version per model)."""

    NONE = "none"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class ModelTask(str, Enum):
    """What a model predicts; decides how it is explained."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    TEXT_CLASSIFICATION = "text_classification"
    IMAGE_CLASSIFICATION = "image_classification"


class ArtifactFormat(str, Enum):
    """Accepted artifact formats. Pickle and joblib are refused (they execute code on load)."""

    SKOPS = "skops"
    XGBOOST_JSON = "xgboost_json"
    XGBOOST_UBJ = "xgboost_ubj"
    LIGHTGBM_TEXT = "lightgbm_text"


REFUSED_FORMATS = {"pickle", "pkl", "joblib", "cloudpickle", "dill"}


@dataclass(frozen=True)
class RegisteredModel:
    """A named model with numbered versions.

    Attributes:
        model_id: Generated id.
        name: Unique name.
        description: Free text.
        owner: Principal that created it.
        latest_version: Highest version number (0 when none).
        production_version: The version in production, if any.
        generation: Bumped on every registration or stage change; caches key on it.
        created_at: Creation time (UTC).
        updated_at: Last change (UTC).
        access_groups: Groups whose members may read (and, with the writer role, change) it;
            see :mod:`chalicelib.core.access`.
    """

    model_id: str
    name: str
    description: str
    owner: str
    latest_version: int
    production_version: int | None
    generation: int
    created_at: datetime
    updated_at: datetime
    access_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelAccess:
    """Who may read a model: the part of a :class:`RegisteredModel` that an access check reads
    (an explanation's cache hit checks it on every request, so only these are read).

    Attributes:
        model_id: The model.
        owner: Principal that created it.
        access_groups: Groups whose members may read it; see :mod:`chalicelib.core.access`.
    """

    model_id: str
    owner: str
    access_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelVersion:
    """One immutable artifact of a model.

    Attributes:
        model_id: Owning model.
        version: 1, 2, 3, ... per model.
        format: Artifact format (``skops``).
        task: What the model predicts.
        feature_names: Input feature names, in order.
        class_names: Class labels for classifiers.
        artifact_key: S3 key in the models bucket.
        artifact_sha256: Content hash of the artifact.
        artifact_size: Bytes.
        stage: Current stage.
        background_dataset_version_id: Dataset version used as explanation background.
        background_sample_key: S3 key of a background sample stored with the model, if any.
        description: Free text.
        metadata: Free-form string metadata (training run, metrics, ...).
        created_at: Registration time (UTC).
        updated_at: Last stage change (UTC).
    """

    model_id: str
    version: int
    format: str
    task: ModelTask
    feature_names: list[str]
    class_names: list[str]
    artifact_key: str
    artifact_sha256: str
    artifact_size: int
    stage: ModelStage
    background_dataset_version_id: str | None
    background_sample_key: str | None
    description: str
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def has_background_sample(self) -> bool:
        """Whether a background sample is stored with the model."""
        return self.background_sample_key is not None
