"""Request and response schemas of the explanation routes (the routes are in
:mod:`chalicelib.explainability.api`); responses are built with
:func:`~chalicelib.core.shaping.shaped` from the domain objects (a
:class:`~chalicelib.explainability.models.PredictionExplanation`, a job record) or from the
JSON result that crossed the explainer boundary (batch, global, dependence).

This module imports no shap, lime, scikit-learn or numpy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from chalicelib.core.schema import Schema
from chalicelib.core.shaping import mirrored
from chalicelib.explainability.models import MAX_JOB_ROWS, PredictionExplanation

TypeName = Literal["shap", "lime", "integrated_gradients", "attention"]
MethodName = Literal["mean", "median", "max", "percentile_95"]


class ShapParams(Schema):
    """Parameters of SHAP explanations."""

    background_sample_size: int = Field(default=100, ge=1, le=10_000)
    background_method: Literal["kmeans", "random"] = "kmeans"
    algorithm: Literal["auto", "tree", "linear", "exact", "kernel"] = "auto"
    class_name: str | None = Field(default=None, max_length=200)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class ExplainParams(ShapParams):
    """Parameters of SHAP and LIME explanations."""

    include_interactions: bool = False
    num_samples: int = Field(default=5000, ge=10, le=20_000)
    num_features: int | None = Field(default=None, ge=1, le=1000)
    segmentation: Literal["slic", "quickshift", "felzenszwalb"] = "slic"
    n_segments: int = Field(default=25, ge=2, le=500)
    # Text and image models: SHAP's Partition explainer budget; the value of hidden superpixels.
    max_evals: int = Field(default=500, ge=10, le=10_000)
    hide_color: float | None = Field(default=None, allow_inf_nan=False)


class ExplainBody(ExplainParams):
    """Body of ``POST /explanations``: ``input_data`` is feature → number for tabular models,
    ``{"text": ...}`` for text models and ``{"image": [[...]]}`` for image models.

    SHAP on text and image models uses ``max_evals`` (model evaluations, default 500),
    ``class_name``, ``seed`` and, for images, ``segmentation``, ``n_segments`` and
    ``hide_color`` (value of switched-off superpixels, LIME's too; default the image's mean)."""

    model_id: str = Field(min_length=1, max_length=200)
    model_version: int | None = Field(default=None, ge=1)
    explanation_type: TypeName = "shap"
    input_data: dict[str, Any]
    prediction_id: str | None = Field(default=None, max_length=200)
    asynchronous: bool = False


class BatchBody(ExplainParams):
    """Body of ``POST /explanations/batch``."""

    model_id: str = Field(min_length=1, max_length=200)
    model_version: int | None = Field(default=None, ge=1)
    explanation_type: TypeName = "shap"
    inputs: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_JOB_ROWS)
    prediction_ids: list[str | None] | None = None
    asynchronous: bool = False


class GlobalBody(ExplainParams):
    """Body of ``POST /explanations/global``: sample ``inputs`` or a ``dataset_version_id``."""

    model_id: str = Field(min_length=1, max_length=200)
    model_version: int | None = Field(default=None, ge=1)
    explanation_type: TypeName = "shap"
    inputs: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=MAX_JOB_ROWS)
    dataset_version_id: str | None = Field(default=None, min_length=1, max_length=200)
    aggregation_method: MethodName = "mean"
    top_k: int = Field(default=5, ge=1, le=100)
    interaction_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prediction_bins: list[float] | None = Field(default=None, min_length=2, max_length=50)
    asynchronous: bool = False


class DependenceBody(ShapParams):
    """Body of ``POST /explanations/dependence``."""

    model_id: str = Field(min_length=1, max_length=200)
    model_version: int | None = Field(default=None, ge=1)
    feature: str = Field(min_length=1, max_length=200)
    interaction_feature: str | None = Field(default="auto", max_length=200)
    inputs: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=MAX_JOB_ROWS)
    dataset_version_id: str | None = Field(default=None, min_length=1, max_length=200)
    asynchronous: bool = False


class ContributionOut(Schema):
    """One feature's contribution."""

    feature_name: str
    feature_value: Any
    contribution: float
    condition: str | None = None


_ExplanationFields: Any = mirrored(PredictionExplanation)


class ExplanationOut(_ExplanationFields):
    """One explanation (see ``PredictionExplanation``)."""

    input_kind: Literal["tabular", "text", "image"]
    output_space: Literal["probability", "log_odds", "margin", "raw"]
    feature_contributions: list[ContributionOut]


class BatchOut(Schema):
    """Explanations of a batch, in input order."""

    count: int
    explanations: list[ExplanationOut]


class StabilityOut(Schema):
    """Top-k stability of feature rankings."""

    top_k: int
    n_explanations: int
    top_k_frequency: dict[str, float]
    mean_pairwise_jaccard: float | None


class InteractionOut(Schema):
    """Two features whose contributions are correlated across explanations."""

    feature_a: str
    feature_b: str
    correlation: float


class SegmentOut(Schema):
    """Importances within one range of predictions."""

    lower: float
    upper: float
    count: int
    feature_importances: dict[str, float]


class GlobalOut(Schema):
    """Global importance with stability and interactions."""

    model_id: str
    model_version: int
    explanation_type: str
    aggregation_method: MethodName
    feature_importances: dict[str, float]
    n_explanations: int
    stability: StabilityOut
    interactions: list[InteractionOut]
    output_space: str
    segments: list[SegmentOut] | None
    created_at: datetime
    computation_time_ms: float


class DependenceOut(Schema):
    """The data of a SHAP dependence plot."""

    model_id: str
    model_version: int
    feature: str
    feature_values: list[float]
    shap_values: list[float]
    interaction_feature: str | None
    interaction_feature_values: list[float] | None
    algorithm: str
    output_space: str
    explained_class: str | None
    base_value: float


class JobAcceptedOut(Schema):
    """A submitted job, with the request's estimated seconds of computation."""

    job_id: str
    kind: str
    status: str
    status_url: str
    estimated_seconds: float | None = None


class JobOut(Schema):
    """A job's status and, once it succeeded, its result."""

    job_id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    attempts: int
    created_at: datetime
    updated_at: datetime
    result: Any = None
    error: dict[str, Any] | None = None


class InvalidateQuery(Schema):
    """Query of ``DELETE /models/{model_id}/explanations``."""

    version: int | None = Field(default=None, ge=1)


class InvalidateOut(Schema):
    """How many cached explanations were removed."""

    model_id: str
    model_version: int | None
    removed: int


class CacheStatsOut(Schema):
    """Cache statistics of the answering instance."""

    hits: int
    misses: int
    hit_rate: float
    size: int
    memory_hits: int
    table_hits: int
    sets: int
    max_entries: int
    ttl_seconds: int
