"""HTTP routes of the explainability service.

Bounded work: every request is estimated before it runs (``chalicelib.explainability.budget``).
Each route answers directly when the estimate fits ``SYNAPSE_EXPLAIN_SYNC_SECONDS`` (and, for
``/explanations/batch``, ``/explanations/global`` and ``/explanations/dependence``, up to
``SYNC_ROW_LIMIT`` (50) inputs); more work, more inputs, a ``dataset_version_id`` or
``"asynchronous": true`` return 202 with a job id to poll at ``GET /explanations/jobs/{job_id}``;
an estimate over ``SYNAPSE_EXPLAIN_JOB_SECONDS`` is a 422 ``too_expensive`` naming the estimate
and the limit. At most 10,000 inputs per request.

Access: the model (and its background dataset version, and a request's ``dataset_version_id``)
must be readable by the caller, checked before the cache; otherwise 404, as for ones that do not
exist. Jobs are their submitter's (and admins'); clearing a model's cache needs write access to it.

This module imports no shap, lime, scikit-learn or numpy: they load on the first explanation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from chalicelib.core.http import ApiBlueprint, ApiResponse, RequestContext
from chalicelib.core.principal import Principal
from chalicelib.explainability.models import (
    MAX_JOB_ROWS,
    BatchRequest,
    DependenceRequest,
    ExplanationRequest,
    GlobalRequest,
    Submitted,
)

api = ApiBlueprint(__name__, tag="explainability")

TypeName = Literal["shap", "lime", "integrated_gradients", "attention"]
MethodName = Literal["mean", "median", "max", "percentile_95"]
ACCEPTED = {202: "Accepted: the work runs as an asynchronous job (poll the job)"}


class ShapParams(BaseModel):
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


class ContributionOut(BaseModel):
    """One feature's contribution."""

    feature_name: str
    feature_value: Any
    contribution: float
    condition: str | None = None


class ExplanationOut(BaseModel):
    """One explanation (see ``PredictionExplanation``)."""

    explanation_id: str
    prediction_id: str | None
    model_id: str
    model_version: int
    explanation_type: str
    input_kind: Literal["tabular", "text", "image"]
    algorithm: str
    output_space: Literal["probability", "log_odds", "margin", "raw"]
    explained_class: str | None
    base_prediction: float
    actual_prediction: float
    feature_contributions: list[ContributionOut]
    top_positive_features: list[str]
    top_negative_features: list[str]
    additivity_error: float | None
    local_fidelity: float | None
    local_prediction: float | None
    interactions: dict[str, Any] | None
    segments: list[list[int]] | None
    parameters: dict[str, Any]
    created_at: datetime
    computation_time_ms: float
    cached: bool


class BatchOut(BaseModel):
    """Explanations of a batch, in input order."""

    count: int
    explanations: list[ExplanationOut]


class StabilityOut(BaseModel):
    """Top-k stability of feature rankings."""

    top_k: int
    n_explanations: int
    top_k_frequency: dict[str, float]
    mean_pairwise_jaccard: float | None


class InteractionOut(BaseModel):
    """Two features whose contributions are correlated across explanations."""

    feature_a: str
    feature_b: str
    correlation: float


class SegmentOut(BaseModel):
    """Importances within one range of predictions."""

    lower: float
    upper: float
    count: int
    feature_importances: dict[str, float]


class GlobalOut(BaseModel):
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


class DependenceOut(BaseModel):
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


class JobAcceptedOut(BaseModel):
    """A submitted job, with the request's estimated seconds of computation."""

    job_id: str
    kind: str
    status: str
    status_url: str
    estimated_seconds: float | None = None


class JobOut(BaseModel):
    """A job's status and, once it succeeded, its result."""

    job_id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    attempts: int
    created_at: datetime
    updated_at: datetime
    result: Any = None
    error: dict[str, Any] | None = None


class InvalidateQuery(BaseModel):
    """Query of ``DELETE /models/{model_id}/explanations``."""

    version: int | None = Field(default=None, ge=1)


class InvalidateOut(BaseModel):
    """How many cached explanations were removed."""

    model_id: str
    model_version: int | None
    removed: int


class CacheStatsOut(BaseModel):
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


def get_explanation_service() -> Any:
    """The process-wide service, imported on first use: the service pulls in numpy, which the
    API function's cold start should not pay for routes that never explain anything."""
    from chalicelib.explainability.service import get_explanation_service as getter

    return getter()


def _principal(ctx: RequestContext) -> Principal:
    assert ctx.principal is not None
    return ctx.principal


def _answer(result: dict[str, Any] | Submitted) -> Any:
    if isinstance(result, Submitted):
        job = result.job
        body = {
            "job_id": job.job_id,
            "kind": job.kind,
            "status": job.status,
            "status_url": f"/explanations/jobs/{job.job_id}",
            "estimated_seconds": result.estimated_seconds,
        }
        return ApiResponse(body, 202, {"Location": body["status_url"]})
    return result


@api.route("/explanations", "POST", body=ExplainBody, response=ExplanationOut, responses=ACCEPTED)
def explain(ctx: RequestContext) -> Any:
    """Explains one prediction with SHAP or LIME (tabular, text or image input); a job when
    its estimate is over the synchronous limit."""
    request = ExplanationRequest.from_dict(ctx.body.model_dump())
    service = get_explanation_service()
    found = service.explain_or_submit(request, principal=_principal(ctx))
    return _answer(found if isinstance(found, Submitted) else found.to_dict())


@api.route("/explanations/batch", "POST", body=BatchBody, response=BatchOut, responses=ACCEPTED)
def explain_batch(ctx: RequestContext) -> Any:
    """Explains many predictions with one explainer (a job above 50 inputs or the limit)."""
    service = get_explanation_service()
    request = BatchRequest.from_dict(ctx.body.model_dump())
    return _answer(service.explain_batch(request, principal=_principal(ctx)))


@api.route("/explanations/global", "POST", body=GlobalBody, response=GlobalOut, responses=ACCEPTED)
def explain_global(ctx: RequestContext) -> Any:
    """Global importance with stability and interactions (a job above 50 inputs or the limit)."""
    service = get_explanation_service()
    request = GlobalRequest.from_dict(ctx.body.model_dump())
    return _answer(service.global_importance(request, principal=_principal(ctx)))


@api.route(
    "/explanations/dependence",
    "POST",
    body=DependenceBody,
    response=DependenceOut,
    responses=ACCEPTED,
)
def explain_dependence(ctx: RequestContext) -> Any:
    """SHAP dependence-plot data for one feature (a job above 50 inputs or the limit)."""
    service = get_explanation_service()
    request = DependenceRequest.from_dict(ctx.body.model_dump())
    return _answer(service.dependence(request, principal=_principal(ctx)))


@api.route("/explanations/jobs/{job_id}", "GET", response=JobOut)
def get_job(ctx: RequestContext, job_id: str) -> Any:
    """Status and result of an explanation job (its submitter, their groups and admins)."""
    job = get_explanation_service().get_job(job_id, _principal(ctx))
    return {
        "job_id": job.job_id,
        "kind": job.kind,
        "status": job.status,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "result": job.result,
        "error": job.error,
    }


@api.route(
    "/models/{model_id}/explanations",
    "DELETE",
    role="writer",
    query=InvalidateQuery,
    response=InvalidateOut,
)
def invalidate_explanations(ctx: RequestContext, model_id: str) -> Any:
    """Removes cached explanations of a model (``?version=`` for one version)."""
    version = ctx.query.version
    removed = get_explanation_service().invalidate(model_id, version, _principal(ctx))
    return {"model_id": model_id, "model_version": version, "removed": removed}


@api.route("/explanations/cache/stats", "GET", response=CacheStatsOut)
def cache_stats(ctx: RequestContext) -> Any:
    """Hits, misses, hit rate and size of the answering instance's cache."""
    return get_explanation_service().cache_stats()
