"""HTTP routes of the experimentation service (``/experiments``).

Weights are JSON strings (``"0.25"``); they must sum to exactly 1. Malformed input is 400,
inconsistent input (weights, controls, unknown model versions) 422, a wrong state 409.
Every route goes through :mod:`chalicelib.abtesting.facade`, which checks the caller against the
experiment: one the caller may not read is a 404, exactly as for one that does not exist.

Request and response schemas live in :mod:`chalicelib.abtesting.schemas`; a route parses with
them, calls the facade and answers ``XOut.from_domain(obj).body()``.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from chalicelib.abtesting import facade
from chalicelib.abtesting.explain_schemas import (
    ExplanationGuardrailsBody,
    ExplanationGuardrailsOut,
    ExplanationInputsBody,
    PostedReceiptOut,
    guardrails_out,
)
from chalicelib.abtesting.models import (
    AnalysisMethod,
    AnalysisSettings,
    BanditConfig,
    BayesianPrior,
    CovariateRequest,
    DecisionEngine,
    DecisionSettings,
    Dimension,
    Experiment,
    LayerSlice,
    MetricSpec,
    ModelVariant,
    Outcome,
    RampSchedule,
    SegmentSettings,
)
from chalicelib.abtesting.schemas import (
    AccessBody,
    AnalysisIn,
    AnalysisOut,
    AnalysisQuery,
    CheckOut,
    ChecksOut,
    ConcludeBody,
    CreateExperimentBody,
    DecisionIn,
    ExperimentList,
    ExperimentOut,
    ListQuery,
    MetricIn,
    MetricsOut,
    OutcomeBatch,
    OutcomeIn,
    OutcomeReceiptOut,
    ResizeSliceBody,
    RollbackBody,
    RollbackPolicyBody,
    RollbackPolicyOut,
    RouteBody,
    RouteOut,
    RoutingConfigOut,
    SampleSizeQuery,
    SegmentsOut,
    VariantIn,
    VariantMetricsOut,
)
from chalicelib.abtesting.statistics import SampleSizePlan, plan_sample_size
from chalicelib.core.config import get_settings
from chalicelib.core.http import ApiBlueprint, ApiResponse, RequestContext
from chalicelib.core.principal import Principal

api = ApiBlueprint(__name__, tag="experiments")


def _principal(ctx: RequestContext) -> Principal:
    assert ctx.principal is not None
    return ctx.principal


def _shown(ctx: RequestContext, experiment: Experiment) -> dict[str, Any]:
    """An experiment's response body, as the caller may see it (:func:`facade.shown`)."""
    return ExperimentOut.from_domain(facade.shown(_principal(ctx), experiment)).body()


def _variant(body: VariantIn) -> ModelVariant:
    return ModelVariant(
        body.variant_id, body.model_id, body.model_version, Decimal(body.traffic_weight),
        body.is_control,
    )  # fmt: skip


def _analysis_settings(
    body: AnalysisIn | None,
    decision: DecisionIn | None = None,
    metrics: list[MetricIn] | None = None,
    correction: str = "holm",
) -> AnalysisSettings | None:
    metrics = metrics or []
    if body is None and decision is None and not metrics and correction == "holm":
        return None
    body = body or AnalysisIn()
    chosen = DecisionSettings()
    if decision is not None:
        prior = decision.prior
        chosen = DecisionSettings(
            DecisionEngine(decision.engine), decision.risk_threshold,
            BayesianPrior(prior.alpha, prior.beta, prior.mean, prior.sd),
        )  # fmt: skip
    return AnalysisSettings(
        AnalysisMethod(body.method), body.minimum_detectable_effect, body.power,
        body.tuning_sample_size, body.planned_sample_size, chosen,
        tuple(MetricSpec(**m.model_dump()) for m in metrics), correction,
    )  # fmt: skip


@api.route("/experiments", "POST", role="writer", body=CreateExperimentBody,
           response=ExperimentOut, status=201)  # fmt: skip
def create_experiment(ctx: RequestContext) -> ApiResponse:
    """Creates a draft experiment."""
    body: CreateExperimentBody = ctx.body
    ramp = None
    if body.ramp is not None:
        steps = tuple(Decimal(step) for step in body.ramp.steps)
        ramp = RampSchedule(steps, body.ramp.interval_minutes, body.ramp.min_requests_per_variant)
    bandit = None
    if body.bandit is not None:
        bandit = BanditConfig(
            Decimal(body.bandit.floor), body.bandit.interval_minutes, body.bandit.samples
        )
    experiment = facade.create_experiment(
        _principal(ctx),
        name=body.name,
        variants=[_variant(v) for v in body.variants],
        access_groups=body.access_groups,
        description=body.description,
        allocation_strategy=body.allocation_strategy,
        minimum_sample_size=body.minimum_sample_size,
        confidence_level=body.confidence_level,
        primary_metric=body.primary_metric,
        guardrail_metrics=body.guardrail_metrics,
        ramp=ramp,
        bandit=bandit,
        analysis=_analysis_settings(body.analysis, body.decision, body.metrics, body.correction),
        layer=None if body.layer is None else LayerSlice(**body.layer.model_dump()),
        targeting=body.targeting,
        segments=SegmentSettings(
            tuple(Dimension(name, d.max_values) for name, d in body.dimensions.items()),
            body.segment_correction,
        ),
        covariate_request=None
        if body.covariate_source is None
        else CovariateRequest(**body.covariate_source.model_dump()),
    )
    return ApiResponse(_shown(ctx, experiment), status=201)


@api.route("/experiments", "GET", query=ListQuery, response=ExperimentList)
def list_experiments(ctx: RequestContext) -> dict[str, Any]:
    """Lists the experiments the caller may read (optionally one status)."""
    principal = _principal(ctx)
    found = facade.list_experiments(principal, ctx.query.status)
    shown = [ExperimentOut.from_domain(facade.shown(principal, e)) for e in found]
    return ExperimentList.from_domain(None, experiments=shown).body()


@api.route("/experiments/{experiment_id}", "GET", response=ExperimentOut)
def get_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """One experiment."""
    return _shown(ctx, facade.readable_experiment(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/access", "PUT", role="writer", body=AccessBody,
           response=ExperimentOut)  # fmt: skip
def set_experiment_access(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Replace the groups that may see the experiment (its owner and admins always may)."""
    groups = ctx.body.access_groups
    return _shown(ctx, facade.set_access_groups(_principal(ctx), experiment_id, groups))


@api.route("/experiments/{experiment_id}/start", "POST", role="writer", response=ExperimentOut)
def start_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """draft → running."""
    return _shown(ctx, facade.start(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/pause", "POST", role="writer", response=ExperimentOut)
def pause_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """running → paused (all traffic to control)."""
    return _shown(ctx, facade.pause(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/resume", "POST", role="writer", response=ExperimentOut)
def resume_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """paused → running."""
    return _shown(ctx, facade.resume(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/conclude", "POST", role="writer", body=ConcludeBody,
           response=ExperimentOut)  # fmt: skip
def conclude_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Concludes; the winner gets all traffic and is promoted to production."""
    winner = ctx.body.winning_variant_id
    return _shown(ctx, facade.conclude(_principal(ctx), experiment_id, winner))


@api.route("/experiments/{experiment_id}/resize-slice", "POST", role="writer",
           body=ResizeSliceBody, response=ExperimentOut)  # fmt: skip
def resize_slice(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Moves a draft's layer slice, or grows a running or paused experiment's slice into free
    buckets (it must contain the old one: no exposed user moves)."""
    body: ResizeSliceBody = ctx.body
    found = facade.resize_slice(_principal(ctx), experiment_id, body.start, body.end)
    return ExperimentOut.from_domain(found).body()


@api.route("/experiments/{experiment_id}/release-slice", "POST", role="writer",
           response=ExperimentOut)  # fmt: skip
def release_slice(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Gives up a concluded, rolled-back or draft experiment's layer slice: nobody is routed
    to it any more, and the layer frees the buckets after two route-cache periods."""
    return _shown(ctx, facade.release_slice(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/rollback", "POST", role="writer", body=RollbackBody,
           response=ExperimentOut)  # fmt: skip
def rollback_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Rolls back now: all traffic to control, the reason stored."""
    return _shown(ctx, facade.rollback(_principal(ctx), experiment_id, ctx.body.reason))


@api.route("/experiments/{experiment_id}/route", "POST", body=RouteBody, response=RouteOut)
def route_request(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Assigns a request (sticky per user id) to a variant, or keeps it out (targeting,
    holdout, layer)."""
    body: RouteBody = ctx.body
    variant_id, version, phase, exposure = facade.decide(
        _principal(ctx), experiment_id, body.request_id, body.user_id, body.sticky, body.attributes
    )
    return RouteOut.from_domain(
        None, experiment_id=experiment_id, request_id=body.request_id, variant_id=variant_id,
        model_version=version, phase=phase, exposure=exposure,
    ).body()  # fmt: skip


def _etag(document: dict[str, Any]) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


@api.route("/experiments/{experiment_id}/routing-config", "GET", response=RoutingConfigOut,
           responses={304: "unchanged since the ETag sent in If-None-Match"})  # fmt: skip
def get_routing_config(ctx: RequestContext, experiment_id: str) -> ApiResponse:
    """The routing config for local assignment (ETag; 304 when If-None-Match matches)."""
    ttl = get_settings().route_cache_ttl_seconds
    config = {**facade.routing_config(_principal(ctx), experiment_id), "ttl_seconds": ttl}
    etag = _etag(config)
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={max(int(ttl), 0)}"}
    if _matches(ctx.headers.get("if-none-match", ""), etag):
        return ApiResponse(None, 304, headers)
    return ApiResponse(config, 200, headers)


@api.route("/experiments/{experiment_id}/outcomes", "POST", role="writer",
           body=OutcomeIn | OutcomeBatch, response=OutcomeReceiptOut)  # fmt: skip
def record_outcomes(ctx: RequestContext, experiment_id: str) -> dict[str, int]:
    """Records one outcome or ``{"outcomes": [...]}``; repeated request ids count once."""
    items = ctx.body.outcomes if isinstance(ctx.body, OutcomeBatch) else [ctx.body]
    outcomes = [
        Outcome(o.variant_id, o.request_id, o.success, o.latency_ms, o.converted, o.custom_metrics,
                o.phase, o.covariate, o.attributes, user_id=o.user_id)
        for o in items
    ]  # fmt: skip
    receipt = facade.record_outcomes(_principal(ctx), experiment_id, outcomes)
    return OutcomeReceiptOut.from_domain(receipt).body()


@api.route("/experiments/{experiment_id}/metrics", "GET", response=MetricsOut)
def experiment_metrics(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Aggregated outcomes per variant."""
    found = facade.metrics(_principal(ctx), experiment_id)
    variants = {name: VariantMetricsOut.from_domain(m) for name, m in found.items()}
    return MetricsOut.from_domain(None, experiment_id=experiment_id, variants=variants).body()


@api.route("/experiments/{experiment_id}/analysis", "GET", query=AnalysisQuery,
           response=AnalysisOut)  # fmt: skip
def experiment_analysis(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Significance per treatment (sequential by default, stratified by allocation phase),
    guardrails, SRM per phase and a recommendation with its reason."""
    analysis = facade.analysis(_principal(ctx), experiment_id, ctx.query.method)
    return AnalysisOut.from_domain(analysis).body()


@api.route("/experiments/{experiment_id}/segments", "GET", query=AnalysisQuery,
           response=SegmentsOut)  # fmt: skip
def experiment_segments(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """The primary metric per segment of each declared dimension, tested per treatment with the
    declared correction across segments; the top segments and those that disagree with the
    overall result (flagged)."""
    found = facade.segments(_principal(ctx), experiment_id, ctx.query.method)
    return SegmentsOut.from_domain(found).body()


@api.route("/experiments/{experiment_id}/rollback-policy", "PUT", role="writer",
           body=RollbackPolicyBody, response=RollbackPolicyOut)  # fmt: skip
def put_rollback_policy(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Stores the automatic-rollback policy of an experiment."""
    policy = facade.put_policy(_principal(ctx), experiment_id, **ctx.body.model_dump())
    return RollbackPolicyOut.from_domain(policy).body()


@api.route("/experiments/{experiment_id}/rollback-policy", "GET", response=RollbackPolicyOut)
def get_rollback_policy(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """The rollback policy in force (the default one when none was stored)."""
    return RollbackPolicyOut.from_domain(facade.get_policy(_principal(ctx), experiment_id)).body()


@api.route("/experiments/{experiment_id}/checks", "GET", response=ChecksOut)
def latest_check(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """The monitor's latest canary check: pass / fail / inconclusive, the tests, numbers and
    bounds per treatment, and the run of consecutive failures."""
    state, policy = facade.latest_check(_principal(ctx), experiment_id)
    latest = None if state is None else CheckOut.from_domain(state)
    return ChecksOut.from_domain(policy, experiment_id=experiment_id, latest=latest).body()


@api.route(
    "/stats/sample-size",
    "GET",
    query=SampleSizeQuery,
    response=SampleSizePlan,
    responses={422: "no sample size: a rate leaves (0, 1), or the effect is zero or too small"},
)
def sample_size(ctx: RequestContext) -> dict[str, Any]:
    """Requests per arm (and days, given daily traffic) to detect a relative change of a rate."""
    query: SampleSizeQuery = ctx.query
    return plan_sample_size(**query.model_dump()).__dict__


# ---- explanation guardrails (schemas in explain_schemas) ----------------------------------


@api.route(
    "/experiments/{experiment_id}/explanation-guardrails",
    "PUT",
    role="writer",
    body=ExplanationGuardrailsBody,
    response=ExplanationGuardrailsOut,
    responses={
        409: "the experiment is concluded or rolled back",
        422: "a bad guardrail, action or sample size; an unknown feature",
    },
)
def put_explanation_guardrails(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Declares the experiment's explanation guardrails (replacing earlier ones): the monitor
    compares each treatment's global SHAP attribution with the control's on a sample of a
    dataset version's rows, and holds the ramp or rolls back when one fails."""
    body: ExplanationGuardrailsBody = ctx.body
    declaration = facade.put_explanation_guardrails(
        _principal(ctx), experiment_id,
        [g.model_dump(exclude_none=True) for g in body.explanation_guardrails],
        body.dataset_version_id, action=body.action, sample_size=body.sample_size,
        seed=body.seed, source=body.source, reevaluate_minutes=body.reevaluate_minutes,
    )  # fmt: skip
    return guardrails_out(declaration, None)


@api.route("/experiments/{experiment_id}/explanation-inputs", "POST", role="writer",
           body=ExplanationInputsBody, response=PostedReceiptOut,
           responses={422: "a row that is not flat, finite and small"})  # fmt: skip
def post_explanation_inputs(ctx: RequestContext, experiment_id: str) -> dict[str, int]:
    """Offers served inputs to the experiment's uniform sample (the smallest 500 hashes of the
    request ids), which ``posted_inputs`` explanation guardrails explain; retries are harmless."""
    body: ExplanationInputsBody = ctx.body
    receipt = facade.post_explanation_inputs(
        _principal(ctx), experiment_id, [(i.request_id, i.input_data) for i in body.inputs]
    )
    return receipt.__dict__


@api.route("/experiments/{experiment_id}/explanation-guardrails", "GET",
           response=ExplanationGuardrailsOut)  # fmt: skip
def get_explanation_guardrails(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """The declared explanation guardrails and their latest evaluation: status, each arm's
    attribution and top features, and every guardrail's result with its numbers."""
    return guardrails_out(*facade.explanation_guardrails(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/explanation-guardrails", "DELETE", role="writer",
           status=204)  # fmt: skip
def delete_explanation_guardrails(ctx: RequestContext, experiment_id: str) -> None:
    """Removes the experiment's explanation guardrails (the ramp is no longer held by them)."""
    facade.remove_explanation_guardrails(_principal(ctx), experiment_id)
