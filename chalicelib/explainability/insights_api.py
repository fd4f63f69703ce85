"""HTTP routes of the global views and of explanations watched over time (issue 16).

``POST /explanations/drift``, ``/explanations/bias``, ``/explanations/permutation-importance``
and ``/explanations/partial-dependence`` (:mod:`chalicelib.explainability.insights`). Every
model and dataset version a request names is checked with the caller's rights first (404 as for
one that does not exist). The work is synchronous and bounded: each side of a drift request is
estimated like ``POST /explanations/global`` and refused (422 ``too_expensive``) over the
synchronous limit; permutation importance and partial dependence are refused over
``MAX_MODEL_ROWS`` rows asked of the model.

Schemas are in :mod:`chalicelib.explainability.insights_schemas`. This module imports no shap,
lime, scikit-learn or numpy.
"""

from __future__ import annotations

from typing import Any

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.core.http import ApiBlueprint, RequestContext
from chalicelib.core.shaping import shaped
from chalicelib.explainability.insights_schemas import (
    BiasBody,
    BiasOut,
    DependenceBody,
    DependenceOut,
    DriftBody,
    DriftOut,
    PermutationBody,
    PermutationOut,
    Side,
)

api = ApiBlueprint(__name__, tag="explainability")

MAX_MODEL_ROWS = 100_000


def _service() -> Any:
    from chalicelib.explainability.service import get_explanation_service

    return get_explanation_service()


def _insights(service: Any) -> Any:
    from chalicelib.explainability.insights import ModelInsights

    return ModelInsights(service.shap)


def _finite(result: Any) -> Any:
    """The result if every number in it is finite; else 422 ``not_finite`` (inputs near a
    double's limits can overflow the model's arithmetic)."""
    from chalicelib.explainability.service import require_finite

    return require_finite(result)


def _check_rows(rows: int, per_row: int, what: str) -> None:
    if rows * per_row > MAX_MODEL_ROWS:
        raise UnprocessableEntity(
            f"{what} would ask the model for {rows * per_row:,} rows, over the limit of "
            f"{MAX_MODEL_ROWS:,}; send fewer inputs or a smaller grid / fewer repeats",
            code="too_expensive",
            details={"model_rows": rows * per_row, "limit": MAX_MODEL_ROWS},
        )


def _side(service: Any, ctx: RequestContext, side: Side, seed: int) -> dict[str, Any]:
    """A drift side authorized, resolved to inputs and estimated as a global request."""
    from chalicelib.explainability.budget import decide
    from chalicelib.explainability.errors import TooExpensive
    from chalicelib.explainability.models import GlobalRequest

    service.authorize(ctx.principal, side.model_id, side.model_version, side.dataset_version_id)
    descriptor = service.model_loader.describe(side.model_id, side.model_version)
    inputs = side.inputs
    if inputs is None:
        insights = _insights(service)
        inputs = insights.side_rows(side.model_id, side.model_version, side.dataset_version_id)
        inputs = inputs[: side.max_rows]
    payload = {
        "model_id": side.model_id,
        "model_version": descriptor.version,
        "inputs": inputs,
        "seed": seed,
    }
    request = GlobalRequest(side.model_id, descriptor.version, inputs=inputs, seed=seed)
    cost = service.planner.static(request, descriptor)
    if decide(cost, service.limits) == "job":
        raise TooExpensive.over(
            cost, service.limits.sync_seconds, "SYNAPSE_EXPLAIN_SYNC_SECONDS (drift is synchronous)"
        )
    return {**payload, "model_version": descriptor.version}


@api.route("/explanations/drift", "POST", body=DriftBody, response=DriftOut)
def attribution_drift(ctx: RequestContext) -> Any:
    """Feature-attribution drift: Clarify's NDCG between two global SHAP attributions (two
    model versions, or one version on two input samples or dataset versions)."""
    body, service = ctx.body, _service()
    sides = [_side(service, ctx, side, body.seed) for side in (body.baseline, body.current)]
    drift = _insights(service).attribution_drift(
        sides[0], sides[1], body.top_k, body.threshold, seed=body.seed
    )
    return _finite(shaped(DriftOut, drift))


@api.route("/explanations/bias", "POST", body=BiasBody, response=BiasOut)
def bias(ctx: RequestContext) -> Any:
    """Clarify's bias metrics of a classifier's predictions for a declared facet."""
    body, service = ctx.body, _service()
    given = body.inputs is not None and body.labels is not None and body.facet is not None
    stored = body.dataset_version_id is not None and body.label_column and body.facet_column
    if given == bool(stored):
        raise ValidationError(
            "give either inputs, labels and facet, or dataset_version_id, label_column and "
            "facet_column"
        )
    service.authorize(ctx.principal, body.model_id, body.model_version, body.dataset_version_id)
    insights = _insights(service)
    if given:
        report = insights.bias(
            body.model_id,
            body.model_version,
            body.inputs,
            body.labels,
            body.facet,
            body.facet_values,
            body.positive_label,
            body.facet_name,
        )
    else:
        report = insights.bias_on_dataset(
            body.model_id,
            body.model_version,
            body.dataset_version_id,
            body.label_column,
            body.facet_column,
            body.facet_values,
            body.positive_label,
        )
    return _finite(shaped(BiasOut, report))


@api.route(
    "/explanations/permutation-importance", "POST", body=PermutationBody, response=PermutationOut
)
def permutation_importance(ctx: RequestContext) -> Any:
    """scikit-learn's permutation importance of each feature (accuracy or R²)."""
    body, service = ctx.body, _service()
    service.authorize(ctx.principal, body.model_id, body.model_version)
    features = len(service.model_loader.describe(body.model_id, body.model_version).feature_names)
    _check_rows(len(body.inputs), body.n_repeats * features + 1, "permutation importance")
    found = _insights(service).permutation_importance(
        body.model_id, body.model_version, body.inputs, body.labels, body.n_repeats, body.seed
    )
    return _finite(shaped(PermutationOut, found))


@api.route("/explanations/partial-dependence", "POST", body=DependenceBody, response=DependenceOut)
def partial_dependence(ctx: RequestContext) -> Any:
    """Partial dependence and ICE curves of one feature."""
    body, service = ctx.body, _service()
    service.authorize(ctx.principal, body.model_id, body.model_version)
    points = len(body.grid) if body.grid is not None else body.grid_resolution
    _check_rows(len(body.inputs), points, "partial dependence")
    found = _insights(service).partial_dependence(
        body.model_id,
        body.model_version,
        body.feature,
        body.inputs,
        body.grid_resolution,
        body.class_name,
        body.grid,
    )
    return _finite(shaped(DependenceOut, found))
