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

Schemas are in :mod:`chalicelib.explainability.schemas`. This module imports no shap, lime,
scikit-learn or numpy: they load on the first explanation.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from chalicelib.core.http import ApiBlueprint, ApiResponse, RequestContext
from chalicelib.core.principal import Principal
from chalicelib.core.shaping import shaped
from chalicelib.explainability.models import (
    BatchRequest,
    DependenceRequest,
    ExplanationRequest,
    GlobalRequest,
    Submitted,
)
from chalicelib.explainability.schemas import (
    BatchBody,
    BatchOut,
    CacheStatsOut,
    DependenceBody,
    DependenceOut,
    ExplainBody,
    ExplanationOut,
    GlobalBody,
    GlobalOut,
    InvalidateOut,
    InvalidateQuery,
    JobAcceptedOut,
    JobOut,
)

api = ApiBlueprint(__name__, tag="explainability")

ACCEPTED = {202: "Accepted: the work runs as an asynchronous job (poll the job)"}


def get_explanation_service() -> Any:
    """The process-wide service, imported on first use: the service pulls in numpy, which the
    API function's cold start should not pay for routes that never explain anything."""
    from chalicelib.explainability.service import get_explanation_service as getter

    return getter()


def _principal(ctx: RequestContext) -> Principal:
    assert ctx.principal is not None
    return ctx.principal


def _answer(result: object, model: type[BaseModel]) -> Any:
    """The response: a submitted job's 202 (``JobAcceptedOut``), else ``result`` shaped by
    ``model``."""
    if isinstance(result, Submitted):
        url = f"/explanations/jobs/{result.job.job_id}"
        body = shaped(
            JobAcceptedOut,
            result.job,
            status_url=url,
            estimated_seconds=result.estimated_seconds,
        )
        return ApiResponse(body, 202, {"Location": url})
    return shaped(model, result)


@api.route("/explanations", "POST", body=ExplainBody, response=ExplanationOut, responses=ACCEPTED)
def explain(ctx: RequestContext) -> Any:
    """Explains one prediction with SHAP or LIME (tabular, text or image input); a job when
    its estimate is over the synchronous limit."""
    request = ExplanationRequest.from_dict(ctx.body.model_dump())
    service = get_explanation_service()
    found = service.explain_or_submit(request, principal=_principal(ctx))
    return _answer(found, ExplanationOut)


@api.route("/explanations/batch", "POST", body=BatchBody, response=BatchOut, responses=ACCEPTED)
def explain_batch(ctx: RequestContext) -> Any:
    """Explains many predictions with one explainer (a job above 50 inputs or the limit)."""
    service = get_explanation_service()
    request = BatchRequest.from_dict(ctx.body.model_dump())
    return _answer(service.explain_batch(request, principal=_principal(ctx)), BatchOut)


@api.route("/explanations/global", "POST", body=GlobalBody, response=GlobalOut, responses=ACCEPTED)
def explain_global(ctx: RequestContext) -> Any:
    """Global importance with stability and interactions (a job above 50 inputs or the limit)."""
    service = get_explanation_service()
    request = GlobalRequest.from_dict(ctx.body.model_dump())
    return _answer(service.global_importance(request, principal=_principal(ctx)), GlobalOut)


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
    return _answer(service.dependence(request, principal=_principal(ctx)), DependenceOut)


@api.route("/explanations/jobs/{job_id}", "GET", response=JobOut)
def get_job(ctx: RequestContext, job_id: str) -> Any:
    """Status and result of an explanation job (its submitter, their groups and admins)."""
    return shaped(JobOut, get_explanation_service().get_job(job_id, _principal(ctx)))


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
    return shaped(InvalidateOut, model_id=model_id, model_version=version, removed=removed)


@api.route("/explanations/cache/stats", "GET", response=CacheStatsOut)
def cache_stats(ctx: RequestContext) -> Any:
    """Hits, misses, hit rate and size of the answering instance's cache."""
    return shaped(CacheStatsOut, get_explanation_service().cache_stats())
