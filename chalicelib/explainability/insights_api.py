"""HTTP routes of the global views and of explanations watched over time (issue 16).

``POST /explanations/drift``, ``/explanations/bias``, ``/explanations/permutation-importance``
and ``/explanations/partial-dependence`` (:mod:`chalicelib.explainability.insights`). Every
model and dataset version a request names is checked with the caller's rights first (404 as for
one that does not exist). The work is synchronous and bounded: each side of a drift request is
estimated like ``POST /explanations/global`` and refused (422 ``too_expensive``) over the
synchronous limit; permutation importance and partial dependence are refused over
``MAX_MODEL_ROWS`` rows asked of the model.

This module imports no shap, lime, scikit-learn or numpy.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.core.http import ApiBlueprint, RequestContext
from chalicelib.core.text import Name

api = ApiBlueprint(__name__, tag="explainability")

MAX_ROWS = 1_000
MAX_MODEL_ROWS = 100_000
SIDE_ROWS = 50
Row = dict[str, Any]


class ModelRef(BaseModel):
    """A model version (``None``: the production version)."""

    model_id: str = Field(min_length=1, max_length=200)
    model_version: int | None = Field(default=None, ge=1)


class Side(ModelRef):
    """One attribution of a drift request: over ``inputs``, a ``dataset_version_id`` (its first
    rows) or, with neither, the version's baseline over its background rows."""

    inputs: list[Row] | None = Field(default=None, min_length=1, max_length=SIDE_ROWS)
    dataset_version_id: str | None = Field(default=None, max_length=200)
    max_rows: int = Field(default=SIDE_ROWS, ge=1, le=SIDE_ROWS)


class DriftBody(BaseModel):
    """Body of ``POST /explanations/drift``."""

    baseline: Side
    current: Side
    top_k: int = Field(default=10, ge=1, le=1000)
    threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class FeatureChange(BaseModel):
    """One feature's attributions on both sides."""

    feature: str
    baseline: float | None
    current: float | None
    change: float | None
    baseline_rank: int | None
    current_rank: int | None


class DriftOut(BaseModel):
    """Clarify's NDCG between two global attributions, with per-feature changes."""

    ndcg: float
    top_k: int
    threshold: float
    drifted: bool
    baseline_top: list[str]
    current_top: list[str]
    features: list[FeatureChange]
    baseline_attribution: dict[str, float]
    current_attribution: dict[str, float]


class LabelledBody(ModelRef):
    """Inputs with their observed labels."""

    inputs: list[Row] = Field(min_length=1, max_length=MAX_ROWS)
    labels: list[Name | float | int] = Field(min_length=1, max_length=MAX_ROWS)


class BiasBody(ModelRef):
    """Body of ``POST /explanations/bias``: either ``inputs`` with their ``labels`` and
    ``facet`` values, or a ``dataset_version_id`` with its ``label_column`` and declared
    ``facet_column``. The rows whose facet value is in ``facet_values`` form Clarify's group d."""

    inputs: list[Row] | None = Field(default=None, min_length=1, max_length=MAX_ROWS)
    labels: list[Name | float | int] | None = Field(default=None, min_length=1, max_length=MAX_ROWS)
    facet: list[Name | float | int] | None = Field(default=None, min_length=1, max_length=MAX_ROWS)
    facet_name: Name = Field(default="facet", min_length=1, max_length=200)
    dataset_version_id: str | None = Field(default=None, max_length=200)
    label_column: Name | None = Field(default=None, min_length=1, max_length=200)
    facet_column: Name | None = Field(default=None, min_length=1, max_length=200)
    facet_values: list[Name | float | int] = Field(min_length=1, max_length=100)
    positive_label: Name | float | int


class BiasOut(BaseModel):
    """Clarify's pre- and post-training bias metrics."""

    facet: str
    facet_values: list[Any]
    counts: dict[str, int]
    pre_training: dict[str, float | None]
    post_training: dict[str, float | None]
    undefined: dict[str, str]


class PermutationBody(LabelledBody):
    """Body of ``POST /explanations/permutation-importance``."""

    n_repeats: int = Field(default=5, ge=1, le=50)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class PermutationOut(BaseModel):
    """Mean and standard deviation of the score's drop per shuffled feature."""

    model_id: str
    model_version: int
    scoring: str
    baseline_score: float
    importances: dict[str, float]
    std: dict[str, float]
    n_repeats: int


class DependenceBody(ModelRef):
    """Body of ``POST /explanations/partial-dependence``."""

    feature: str = Field(min_length=1, max_length=200)
    inputs: list[Row] = Field(min_length=1, max_length=MAX_ROWS)
    grid_resolution: int = Field(default=20, ge=2, le=100)
    grid: list[float] | None = Field(default=None, min_length=1, max_length=100)
    class_name: str | None = Field(default=None, max_length=200)


class DependenceOut(BaseModel):
    """The partial dependence (``average``) and every input's ICE curve (``individual``)."""

    model_id: str
    model_version: int
    feature: str
    explained_class: str | None
    grid_values: list[float]
    average: list[float]
    individual: list[list[float]]


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
    return _finite(
        _insights(service).attribution_drift(
            sides[0], sides[1], body.top_k, body.threshold, seed=body.seed
        )
    )


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
    return _finite(report.to_dict())


@api.route(
    "/explanations/permutation-importance", "POST", body=PermutationBody, response=PermutationOut
)
def permutation_importance(ctx: RequestContext) -> Any:
    """scikit-learn's permutation importance of each feature (accuracy or R²)."""
    body, service = ctx.body, _service()
    service.authorize(ctx.principal, body.model_id, body.model_version)
    features = len(service.model_loader.describe(body.model_id, body.model_version).feature_names)
    _check_rows(len(body.inputs), body.n_repeats * features + 1, "permutation importance")
    return _finite(
        _insights(service).permutation_importance(
            body.model_id, body.model_version, body.inputs, body.labels, body.n_repeats, body.seed
        )
    )


@api.route("/explanations/partial-dependence", "POST", body=DependenceBody, response=DependenceOut)
def partial_dependence(ctx: RequestContext) -> Any:
    """Partial dependence and ICE curves of one feature."""
    body, service = ctx.body, _service()
    service.authorize(ctx.principal, body.model_id, body.model_version)
    points = len(body.grid) if body.grid is not None else body.grid_resolution
    _check_rows(len(body.inputs), points, "partial dependence")
    return _finite(
        _insights(service).partial_dependence(
            body.model_id,
            body.model_version,
            body.feature,
            body.inputs,
            body.grid_resolution,
            body.class_name,
            body.grid,
        )
    )
