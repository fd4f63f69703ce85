"""HTTP routes of the experimentation service (``/experiments``).

Weights are JSON strings (``"0.25"``); they must sum to exactly 1. Malformed input is 400,
inconsistent input (weights, controls, unknown model versions) 422, a wrong state 409.
Every route goes through :mod:`chalicelib.abtesting.facade`, which checks the caller against the
experiment: one the caller may not read is a 404, exactly as for one that does not exist.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from chalicelib.abtesting import facade
from chalicelib.abtesting.explain_schemas import (
    ExplanationGuardrailsBody,
    ExplanationGuardrailsOut,
    ExplanationInputsBody,
    PostedReceiptOut,
    guardrails_out,
)
from chalicelib.abtesting.models import (
    LOWER_IS_BETTER,
    AllocationPhase,
    AnalysisMethod,
    AnalysisSettings,
    BanditConfig,
    BayesianPrior,
    DecisionEngine,
    DecisionSettings,
    Dimension,
    Experiment,
    ExperimentMetrics,
    LayerSlice,
    MetricSpec,
    ModelVariant,
    Outcome,
    RampSchedule,
    SegmentSettings,
)
from chalicelib.abtesting.statistics import SampleSizePlan, plan_sample_size
from chalicelib.core.config import get_settings
from chalicelib.core.http import ApiBlueprint, ApiResponse, RequestContext
from chalicelib.core.principal import Principal
from chalicelib.core.text import Name, Text

api = ApiBlueprint(__name__, tag="experiments")

DECIMAL_TEXT = r"^[0-9]+(\.[0-9]+)?$"
NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
StatusName = Literal["draft", "running", "paused", "concluded", "rolled_back"]


def _principal(ctx: RequestContext) -> Principal:
    assert ctx.principal is not None
    return ctx.principal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantIn(_Strict):
    """One arm: a registered model version and its traffic share."""

    variant_id: Name = Field(min_length=1, max_length=64)
    model_id: str = Field(min_length=1, max_length=128)
    model_version: int = Field(ge=1)
    traffic_weight: str = Field(pattern=DECIMAL_TEXT, max_length=40, description='e.g. "0.25"')
    is_control: bool = False


class RampIn(_Strict):
    """Ramp schedule: treatment shares, one step per interval while guardrails are healthy."""

    steps: list[Annotated[str, Field(pattern=DECIMAL_TEXT, max_length=40)]] = Field(
        min_length=1, max_length=50, description='treatment shares, e.g. ["0.05", "0.25", "1"]'
    )
    interval_minutes: int = Field(default=60, ge=1, le=10_080)
    min_requests_per_variant: int = Field(default=100, ge=0)


class BanditIn(_Strict):
    """Thompson-sampling settings."""

    floor: str = Field(default="0.01", pattern=DECIMAL_TEXT, max_length=20)
    interval_minutes: int = Field(default=5, ge=1, le=10_080)
    samples: int = Field(default=20_000, ge=100, le=200_000)


class AnalysisIn(_Strict):
    """How the experiment is analysed (see the README's "What a decision means")."""

    method: Literal["sequential", "fixed"] = Field(
        default="sequential",
        description="sequential: always-valid, read it any time; fixed: a fixed-horizon test "
        "that recommends nothing before the planned sample size",
    )
    minimum_detectable_effect: float = Field(
        default=0.1, gt=0, lt=10, allow_inf_nan=False, description="relative: 0.1 = 10 %"
    )
    power: float = Field(default=0.8, gt=0, lt=1, allow_inf_nan=False)
    tuning_sample_size: int = Field(
        default=5000, ge=1, le=10**12, description="requests per arm where the sequence is tightest"
    )
    planned_sample_size: int | None = Field(
        default=None, ge=1, le=10**12, description="fixed: requests per arm to wait for"
    )


class PriorIn(_Strict):
    """Priors of the Bayesian reading (the same for every arm)."""

    alpha: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False,
                         description="Beta(alpha, beta) prior of a rate")  # fmt: skip
    beta: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)
    mean: float | None = Field(
        default=None, allow_inf_nan=False, ge=-1e12, le=1e12,
        description="normal prior on each arm's mean (with sd); default flat",
    )  # fmt: skip
    sd: float | None = Field(default=None, gt=0, le=1e12, allow_inf_nan=False)


class DecisionIn(_Strict):
    """Which engine decides (the recommendation and ``conclude``), its threshold and priors."""

    engine: Literal["frequentist", "bayesian"] = "frequentist"
    risk_threshold: float = Field(
        default=0.0025, gt=0, lt=1, allow_inf_nan=False,
        description="largest expected loss (relative to the control) the bayesian engine ships",
    )  # fmt: skip
    prior: PriorIn = Field(default_factory=PriorIn)


def _exact_integer(value: Any) -> Any:
    """Refuses a JSON integer beyond 2**53 before float() rounds it (2**53 + 1 would become
    2**53 and pass the bound, and targeting would admit it where local assignment, comparing
    the exact integer, does not)."""
    if type(value) is int and abs(value) > 2**53:
        raise ValueError("a number is at most 2**53 in absolute value")
    return value


AttributeValue = Annotated[
    Annotated[str, Field(max_length=256)]
    | Annotated[float, Field(allow_inf_nan=False, ge=-(2**53), le=2**53)]
    | bool,
    BeforeValidator(_exact_integer),
]


class LayerSliceIn(_Strict):
    """The slice of a layer an experiment takes: buckets ``[start, end)`` of 10,000."""

    layer_id: str = Field(min_length=1, max_length=64)
    start: int = Field(ge=0, le=10_000)
    end: int = Field(ge=0, le=10_000, description="one past the last bucket")


class LayerSliceOut(BaseModel):
    """The slice of a layer an experiment takes."""

    layer_id: str
    start: int
    end: int


class HoldoutRefOut(BaseModel):
    """A holdout covering the experiment (captured when it was created)."""

    holdout_id: str
    salt: str
    share: str


class DimensionIn(_Strict):
    """A dimension outcomes may carry (``attributes``), analysed per segment."""

    max_values: int = Field(
        default=20, ge=1, le=20, description="distinct values kept; later ones count as (other)"
    )


DimensionName = Annotated[str, Field(pattern=NAME)]


class MetricIn(_Strict):
    """A declared metric (see the README's "Many metrics")."""

    name: Name = Field(min_length=1, max_length=64, pattern=NAME)
    kind: Literal["proportion", "mean", "ratio", "quantile"]
    role: Literal["primary", "secondary", "guardrail"] = "secondary"
    source: Name | None = Field(default=None, min_length=1, max_length=64, pattern=NAME,
                                description="the outcome value read; default: name")  # fmt: skip
    numerator: Name | None = Field(default=None, min_length=1, max_length=64, pattern=NAME)
    denominator: Name | None = Field(default=None, min_length=1, max_length=64, pattern=NAME)
    quantile: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    cap_lower: float | None = Field(default=None, allow_inf_nan=False, ge=-1e12, le=1e12)
    cap_upper: float | None = Field(default=None, allow_inf_nan=False, ge=-1e12, le=1e12)
    lower_is_better: bool | None = None
    rollback: bool = Field(
        default=False, description="guardrail only: the canary monitor may roll back on it"
    )


class CreateExperimentBody(_Strict):
    """Body of ``POST /experiments``."""

    name: Name = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=2000)
    variants: list[VariantIn] = Field(min_length=1, max_length=20)
    allocation_strategy: Literal["percentage", "ramping", "mab"] = "percentage"
    minimum_sample_size: int = Field(default=1000, ge=1)
    confidence_level: float = Field(default=0.95, gt=0, lt=1)
    primary_metric: str = Field(default="conversion_rate", pattern=NAME)
    guardrail_metrics: list[Annotated[Name, Field(max_length=64)]] = Field(
        default_factory=list, max_length=20
    )
    ramp: RampIn | None = None
    bandit: BanditIn | None = None
    analysis: AnalysisIn | None = None
    decision: DecisionIn | None = None
    metrics: list[MetricIn] = Field(
        default_factory=list, max_length=10, description="declared metrics, analysed together"
    )
    correction: Literal["holm", "bh", "none"] = Field(
        default="holm", description="multiple-testing correction over metrics and treatments"
    )
    access_groups: list[Annotated[Name, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=50, description="who may see it; default: the caller's groups"
    )
    layer: LayerSliceIn | None = Field(
        default=None, description="a slice of a layer: no other experiment of it sees its users"
    )
    targeting: dict[str, Any] | None = Field(
        default=None,
        description="who is eligible: {all|any: [...]} of {attribute, equals|in|gt/gte/lt/lte}",
    )
    dimensions: dict[DimensionName, DimensionIn] = Field(
        default_factory=dict,
        max_length=3,
        description='up to 3 outcome attributes analysed per segment, e.g. {"country": '
        '{"max_values": 20}}',
    )
    segment_correction: Literal["holm", "bh"] = Field(
        default="holm",
        description="correction across segment tests: holm (familywise) or bh (false discovery "
        "rate)",
    )


class AccessBody(_Strict):
    """Body of ``PUT /experiments/{id}/access``: who may see it besides its owner."""

    access_groups: list[Annotated[Name, Field(min_length=1, max_length=200)]] = Field(max_length=50)


class VariantOut(BaseModel):
    """A variant with its configured and its effective (state-dependent) weight."""

    variant_id: str
    model_id: str
    model_version: int
    traffic_weight: str
    effective_weight: str
    is_control: bool


class RampOut(BaseModel):
    """Ramp schedule and progress."""

    steps: list[str]
    interval_minutes: int
    min_requests_per_variant: int
    current_step: int
    last_ramp_at: datetime | None


class BanditOut(BaseModel):
    """Bandit settings and last reweighting."""

    floor: str
    interval_minutes: int
    samples: int
    weights_updated_at: datetime | None


class AnalysisSettingsOut(BaseModel):
    """How the experiment is analysed."""

    method: str
    minimum_detectable_effect: float
    power: float
    tuning_sample_size: int
    planned_sample_size: int | None


class PriorOut(BaseModel):
    """Priors of the Bayesian reading."""

    alpha: float
    beta: float
    mean: float | None
    sd: float | None


class DecisionOut(BaseModel):
    """Which engine decides, its risk threshold and the priors."""

    engine: Literal["frequentist", "bayesian"]
    risk_threshold: float
    prior: PriorOut


class MetricSpecOut(BaseModel):
    """A declared metric."""

    name: str
    kind: str
    role: str
    source: str | None
    numerator: str | None
    denominator: str | None
    quantile: float | None
    cap_lower: float | None
    cap_upper: float | None
    lower_is_better: bool | None
    rollback: bool


class PhaseOut(BaseModel):
    """Weights in force from ``started_at`` until the next phase."""

    phase: int
    started_at: datetime
    reason: Literal["start", "ramp", "reweight", "pause", "resume", "end"]
    weights: dict[str, str]


class ExperimentOut(BaseModel):
    """An experiment."""

    experiment_id: str
    name: str
    description: str
    status: StatusName
    allocation_strategy: str
    variants: list[VariantOut]
    start_time: datetime | None
    end_time: datetime | None
    minimum_sample_size: int
    confidence_level: float
    primary_metric: str
    guardrail_metrics: list[str]
    created_at: datetime
    updated_at: datetime
    owner: str
    access_groups: list[str]
    ramp: RampOut | None
    bandit: BanditOut | None
    winning_variant_id: str | None
    rollback_reason: str | None
    rollback_details: dict[str, Any]
    revision: int
    analysis: AnalysisSettingsOut
    decision: DecisionOut
    metrics: list[MetricSpecOut]
    correction: str
    allocation_history: list[PhaseOut]
    current_phase: int
    conclusion_reason: str | None
    layer: LayerSliceOut | None
    targeting: dict[str, Any] | None
    holdouts: list[HoldoutRefOut]
    dimensions: dict[str, DimensionIn]
    segment_correction: Literal["holm", "bh"]


class ExperimentList(BaseModel):
    """Experiments, newest first."""

    experiments: list[ExperimentOut]


class ListQuery(_Strict):
    """Query of ``GET /experiments``."""

    status: StatusName | None = None


class ConcludeBody(_Strict):
    """Body of ``POST /experiments/{id}/conclude`` (``{}`` lets the analysis pick)."""

    winning_variant_id: str | None = Field(default=None, max_length=64)


class RollbackBody(_Strict):
    """Body of ``POST /experiments/{id}/rollback``."""

    reason: Text = Field(min_length=1, max_length=1000)


class RouteBody(_Strict):
    """Body of ``POST /experiments/{id}/route``."""

    request_id: str = Field(min_length=1, max_length=256)
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    sticky: bool = True
    attributes: dict[Annotated[str, Field(pattern=NAME)], AttributeValue] | None = Field(
        default=None, max_length=50, description="what the experiment's targeting tests"
    )


class RouteOut(BaseModel):
    """The assignment (send ``phase`` back with the outcome). A request kept out of the
    experiment gets the control's ``model_version``: a holdout user under the variant
    ``holdout``, an ineligible or outside-layer request under no variant (``null``, not an
    exposure: record no outcome for it)."""

    experiment_id: str
    request_id: str
    variant_id: str | None
    model_version: int
    phase: int
    exposure: Literal["experiment", "holdout", "ineligible", "outside_layer"]


class RoutingVariantOut(BaseModel):
    """One variant of a routing config, in layout order (treatments first, the control last)."""

    variant_id: str
    model_id: str
    model_version: int
    weight: str


class FixedChoiceOut(BaseModel):
    """The one variant everyone gets (paused, rolled back, concluded)."""

    variant_id: str
    model_version: int


class LayerConfigOut(BaseModel):
    """The experiment's slice of its layer, with the layer's hash salt."""

    layer_id: str
    salt: str
    buckets: int
    start: int
    end: int


class RoutingConfigOut(BaseModel):
    """What a client needs to assign users locally with the service's hashing."""

    experiment_id: str
    revision: int
    status: StatusName
    allocation_strategy: str
    hash: Literal["blake2b-64"]
    salt: str
    variants: list[RoutingVariantOut]
    fixed: FixedChoiceOut | None
    blocked: str | None
    sticky_store: bool
    ttl_seconds: float
    layer: LayerConfigOut | None
    holdouts: list[HoldoutRefOut]
    targeting: dict[str, Any] | None


class OutcomeIn(_Strict):
    """One outcome (``request_id`` is the idempotency key)."""

    variant_id: str = Field(min_length=1, max_length=64)
    request_id: str = Field(min_length=1, max_length=256)
    success: bool
    latency_ms: float = Field(ge=0, le=1e7)
    converted: bool | None = None
    custom_metrics: dict[Annotated[Name, Field(min_length=1, max_length=200)], float] = Field(
        default_factory=dict, max_length=20
    )
    phase: int | None = Field(
        default=None, ge=0, le=1_000_000, description="the phase /route answered; default: now"
    )
    covariate: float | None = Field(
        default=None, ge=-1e6, le=1e6, allow_inf_nan=False, strict=True,
        description="the unit's pre-experiment value, for CUPED (6 decimals kept)",
    )  # fmt: skip
    attributes: dict[
        Annotated[Name, Field(min_length=1, max_length=64)],
        Annotated[Name, Field(min_length=1, max_length=64)],
    ] = Field(
        default_factory=dict,
        max_length=3,
        description='values of the experiment\'s declared dimensions, e.g. {"country": "BR"}',
    )


class OutcomeBatch(_Strict):
    """A batch of up to 1,000 outcomes."""

    outcomes: list[OutcomeIn] = Field(min_length=1, max_length=1000)


class OutcomeReceiptOut(BaseModel):
    """How many outcomes were counted now and how many were repeats."""

    accepted: int
    duplicates: int


class VariantMetricsOut(BaseModel):
    """Aggregated outcomes of one variant."""

    variant_id: str
    request_count: int
    success_count: int
    error_count: int
    success_rate: float | None
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    latency_mean_ms: float | None
    conversion_rate: float | None
    converted_count: int
    conversion_trials: int
    custom_metrics: dict[str, float]


class MetricsOut(BaseModel):
    """Metrics per variant."""

    experiment_id: str
    variants: dict[str, VariantMetricsOut]


class GuardrailOut(BaseModel):
    """One guardrail check (``degraded``: evidence the treatment is worse than allowed)."""

    metric_name: str
    control_value: float | None
    treatment_value: float | None
    relative_change: float | None
    degraded: bool
    has_data: bool
    outcome: Literal["pass", "fail", "inconclusive"]
    test: str
    interval: list[float | None]


class BayesianOut(BaseModel):
    """The Bayesian reading of the primary metric (see the README's "Bayesian results")."""

    model: Literal["beta_binomial", "normal"]
    prior: str
    control_mean: float
    treatment_mean: float
    chance_to_win: float
    expected_loss_treatment: float
    expected_loss_control: float
    risk_treatment: float | None
    risk_control: float | None
    relative_lift: float | None
    credible_interval: list[float] | None
    credible_level: float
    lower_is_better: bool
    decision: Literal["better", "keep_control", "inconclusive", "no_data"]


class CupedOut(BaseModel):
    """The CUPED-adjusted comparison (OLS of the metric on treatment + centred covariate)."""

    units_control: int
    units_treatment: int
    theta: float
    correlation: float
    unadjusted_effect: float
    unadjusted_standard_error: float
    effect: float
    standard_error: float
    variance_reduction: float
    statistic: float | None
    p_value: float
    confidence_interval: list[float]
    degrees_of_freedom: int


class EstimateOut(BaseModel):
    """One arm's estimate of a declared metric."""

    value: float
    variance: float
    n: int


class MetricComparisonOut(BaseModel):
    """One declared metric, one treatment against the control."""

    metric_name: str
    kind: str
    role: str
    variant_id: str
    control: EstimateOut | None
    treatment: EstimateOut | None
    difference: float | None
    relative_change: float | None
    interval: list[float | None] | None
    p_value: float
    adjusted_p_value: float
    significant: bool
    direction: Literal["better", "worse", "none"]
    test: str


class VerdictOut(BaseModel):
    """One decision engine's recommendation."""

    recommendation: Literal["continue", "conclude_winner", "conclude_no_difference"]
    recommended_winner: str | None
    reason: str


class TreatmentOut(BaseModel):
    """One treatment against the control on the primary metric."""

    variant_id: str
    metric_name: str
    test: str
    control_value: float | None
    treatment_value: float | None
    statistic: float | None
    p_value: float | None
    adjusted_p_value: float | None
    is_significant: bool
    confidence_interval: list[float | None]
    effect_size: float | None
    sample_size_adequate: bool
    recommended_action: str
    improves: bool
    guardrails: list[GuardrailOut]
    method: Literal["sequential", "fixed"]
    decision: Literal[
        "better", "worse", "equivalent", "no_difference", "inconclusive", "underpowered", "no_data"
    ]
    planned_sample_size: int | None
    alpha: float | None
    bayesian: BayesianOut | None
    cuped: CupedOut | None


class PhaseRatioOut(BaseModel):
    """The SRM check of one allocation phase against its own weights."""

    phase: int | None
    checked: bool
    chi_square: float | None
    p_value: float | None
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]


class SampleRatioOut(BaseModel):
    """Sample-ratio-mismatch check: per allocation phase, Bonferroni over the phases."""

    checked: bool
    chi_square: float | None
    p_value: float | None
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]
    phases: list[PhaseRatioOut]


class AnalysisOut(BaseModel):
    """Significance per treatment, guardrails, SRM and a recommendation."""

    experiment_id: str
    primary_metric: str
    control_variant_id: str
    treatments: list[TreatmentOut]
    sample_ratio: SampleRatioOut
    recommendation: Literal["continue", "conclude_winner", "conclude_no_difference"]
    recommended_winner: str | None
    warnings: list[str]
    method: Literal["sequential", "fixed"]
    reason: str
    decision_engine: Literal["frequentist", "bayesian"]
    verdicts: dict[str, VerdictOut]
    risk_threshold: float | None
    metrics: list[MetricComparisonOut]
    correction: str


class SegmentTestOut(BaseModel):
    """One treatment against the control within one segment, on the primary metric."""

    dimension: str
    value: str
    variant_id: str
    control_count: int
    treatment_count: int
    control_value: float | None
    treatment_value: float | None
    difference: float | None
    effect_size: float | None
    test: str
    statistic: float | None
    p_value: float | None
    adjusted_p_value: float
    significant: bool
    direction: Literal["better", "worse"] | None
    confidence_interval: list[float | None]
    flagged: bool
    flag_reason: str | None


class SegmentValueOut(BaseModel):
    """One segment of a dimension: its metrics per variant (all phases)."""

    value: str
    variants: dict[str, VariantMetricsOut]


class DimensionOut(BaseModel):
    """A declared dimension and its segments."""

    name: str
    max_values: int
    segments: list[SegmentValueOut]


class SegmentsOut(BaseModel):
    """Segment tests, corrected across segments, with the top and the flagged segments."""

    experiment_id: str
    primary_metric: str
    method: Literal["sequential", "fixed"]
    correction: Literal["holm", "bh"]
    alpha: float
    dimensions: list[DimensionOut]
    tests: list[SegmentTestOut]
    top: list[SegmentTestOut]
    flagged: list[SegmentTestOut]


class AnalysisQuery(_Strict):
    """Query of ``GET /experiments/{id}/analysis``."""

    method: Literal["sequential", "fixed"] | None = Field(
        default=None, description="default: the experiment's method"
    )


class RollbackPolicyBody(_Strict):
    """Body of ``PUT /experiments/{id}/rollback-policy`` (the canary judge's settings)."""

    error_rate_threshold: float | None = Field(
        default=None, ge=0, le=1, description="opt-in cap; needs evidence (lower bound above it)"
    )
    latency_degradation_threshold: float = Field(
        default=0.20, ge=0, le=100, description="relative tolerance of the latency percentile"
    )
    min_requests_before_rollback: int = Field(
        default=100, ge=1, le=1_000_000_000, description="per arm, control and canary"
    )
    latency_percentile: Literal["p50", "p95", "p99"] = "p95"
    enabled: bool = True
    error_rate_tolerance: float = Field(
        default=0.20, ge=0, le=100, description="relative: fail above (1 + this) x control"
    )
    latency_threshold_ms: float | None = Field(
        default=None, gt=0, le=1e7, description="opt-in cap of the percentile; needs evidence"
    )
    alpha: float = Field(default=0.05, gt=0, lt=0.5, allow_inf_nan=False)
    tuning_sample_size: int = Field(default=1000, ge=1, le=10**12)
    failure_limit: int = Field(default=1, ge=1, le=1000, description="consecutive failed checks")


class RollbackPolicyOut(BaseModel):
    """A stored rollback policy."""

    experiment_id: str
    error_rate_threshold: float | None
    latency_degradation_threshold: float
    min_requests_before_rollback: int
    latency_percentile: str
    enabled: bool
    error_rate_tolerance: float
    latency_threshold_ms: float | None
    alpha: float
    tuning_sample_size: int
    failure_limit: int


class CheckOut(BaseModel):
    """The monitor's latest canary check of an experiment."""

    tick: str
    outcome: Literal["pass", "fail", "inconclusive"]
    reason: str
    consecutive_failures: int
    checks: int
    checked_at: datetime
    variants: list[dict[str, Any]]


class ChecksOut(BaseModel):
    """The latest check (``null`` before the monitor's first) and the policy it applies."""

    experiment_id: str
    latest: CheckOut | None
    failure_limit: int


def experiment_out(experiment: Experiment) -> dict[str, Any]:
    """The JSON shape of an experiment."""
    effective = experiment.effective_weights()
    ramp = experiment.ramp
    bandit = experiment.bandit
    return {
        "experiment_id": experiment.experiment_id,
        "name": experiment.name,
        "description": experiment.description,
        "status": experiment.status.value,
        "allocation_strategy": experiment.allocation_strategy.value,
        "variants": [
            {
                "variant_id": v.variant_id,
                "model_id": v.model_id,
                "model_version": v.model_version,
                "traffic_weight": str(v.traffic_weight),
                "effective_weight": str(effective[v.variant_id]),
                "is_control": v.is_control,
            }
            for v in experiment.variants
        ],
        "start_time": experiment.start_time,
        "end_time": experiment.end_time,
        "minimum_sample_size": experiment.minimum_sample_size,
        "confidence_level": experiment.confidence_level,
        "primary_metric": experiment.primary_metric,
        "guardrail_metrics": list(experiment.guardrail_metrics),
        "created_at": experiment.created_at,
        "updated_at": experiment.updated_at,
        "owner": experiment.owner,
        "access_groups": list(experiment.access_groups),
        "ramp": None
        if ramp is None
        else {
            "steps": [str(s) for s in ramp.steps],
            "interval_minutes": ramp.interval_minutes,
            "min_requests_per_variant": ramp.min_requests_per_variant,
            "current_step": experiment.ramp_step,
            "last_ramp_at": experiment.last_ramp_at,
        },
        "bandit": None
        if bandit is None
        else {
            "floor": str(bandit.floor),
            "interval_minutes": bandit.interval_minutes,
            "samples": bandit.samples,
            "weights_updated_at": experiment.weights_updated_at,
        },
        "winning_variant_id": experiment.winning_variant_id,
        "rollback_reason": experiment.rollback_reason,
        "rollback_details": experiment.rollback_details,
        "revision": experiment.revision,
        "analysis": _settings_out(experiment.analysis),
        "decision": _decision_out(experiment.analysis.decision),
        "metrics": [dict(spec.__dict__) for spec in experiment.analysis.metrics],
        "correction": experiment.analysis.correction,
        "allocation_history": [_phase_out(p) for p in experiment.phases],
        "current_phase": experiment.phase,
        "conclusion_reason": experiment.conclusion_reason,
        "layer": None if experiment.layer is None else experiment.layer.__dict__,
        "targeting": experiment.targeting,
        "holdouts": [
            {"holdout_id": h.holdout_id, "salt": h.salt, "share": str(h.share)}
            for h in experiment.holdouts
        ],
        "dimensions": {
            d.name: {"max_values": d.max_values} for d in experiment.segments.dimensions
        },
        "segment_correction": experiment.segments.correction,
    }


def _settings_out(settings: AnalysisSettings) -> dict[str, Any]:
    fields = {
        k: v for k, v in settings.__dict__.items() if k not in ("decision", "metrics", "correction")
    }
    return {**fields, "method": settings.method.value}


def _decision_out(decision: DecisionSettings) -> dict[str, Any]:
    return {
        "engine": decision.engine.value,
        "risk_threshold": decision.risk_threshold,
        "prior": dict(decision.prior.__dict__),
    }


def _phase_out(phase: AllocationPhase) -> dict[str, Any]:
    return {
        "phase": phase.index,
        "started_at": phase.started_at,
        "reason": phase.reason.value,
        "weights": {name: str(weight) for name, weight in phase.weights.items()},
    }


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


def _metrics_out(found: ExperimentMetrics) -> dict[str, Any]:
    return {
        "variant_id": found.variant_id,
        "request_count": found.request_count,
        "success_count": found.success_count,
        "error_count": found.error_count,
        "success_rate": found.success_rate,
        "error_rate": found.error_rate,
        "latency_p50_ms": found.latency_p50_ms,
        "latency_p95_ms": found.latency_p95_ms,
        "latency_p99_ms": found.latency_p99_ms,
        "latency_mean_ms": found.latency.mean,
        "conversion_rate": found.conversion_rate,
        "converted_count": found.converted_count,
        "conversion_trials": found.conversion_trials,
        "custom_metrics": found.custom_metrics,
    }


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
    )
    return ApiResponse(experiment_out(experiment), status=201)


@api.route("/experiments", "GET", query=ListQuery, response=ExperimentList)
def list_experiments(ctx: RequestContext) -> dict[str, Any]:
    """Lists the experiments the caller may read (optionally one status)."""
    found = facade.list_experiments(_principal(ctx), ctx.query.status)
    return {"experiments": [experiment_out(e) for e in found]}


@api.route("/experiments/{experiment_id}", "GET", response=ExperimentOut)
def get_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """One experiment."""
    return experiment_out(facade.readable_experiment(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/access", "PUT", role="writer", body=AccessBody,
           response=ExperimentOut)  # fmt: skip
def set_experiment_access(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Replace the groups that may see the experiment (its owner and admins always may)."""
    groups = ctx.body.access_groups
    return experiment_out(facade.set_access_groups(_principal(ctx), experiment_id, groups))


@api.route("/experiments/{experiment_id}/start", "POST", role="writer", response=ExperimentOut)
def start_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """draft → running."""
    return experiment_out(facade.start(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/pause", "POST", role="writer", response=ExperimentOut)
def pause_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """running → paused (all traffic to control)."""
    return experiment_out(facade.pause(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/resume", "POST", role="writer", response=ExperimentOut)
def resume_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """paused → running."""
    return experiment_out(facade.resume(_principal(ctx), experiment_id))


@api.route("/experiments/{experiment_id}/conclude", "POST", role="writer", body=ConcludeBody,
           response=ExperimentOut)  # fmt: skip
def conclude_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Concludes; the winner gets all traffic and is promoted to production."""
    winner = ctx.body.winning_variant_id
    return experiment_out(facade.conclude(_principal(ctx), experiment_id, winner))


@api.route("/experiments/{experiment_id}/rollback", "POST", role="writer", body=RollbackBody,
           response=ExperimentOut)  # fmt: skip
def rollback_experiment(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Rolls back now: all traffic to control, the reason stored."""
    return experiment_out(facade.rollback(_principal(ctx), experiment_id, ctx.body.reason))


@api.route("/experiments/{experiment_id}/route", "POST", body=RouteBody, response=RouteOut)
def route_request(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Assigns a request (sticky per user id) to a variant, or keeps it out (targeting,
    holdout, layer)."""
    body: RouteBody = ctx.body
    variant_id, version, phase, exposure = facade.decide(
        _principal(ctx), experiment_id, body.request_id, body.user_id, body.sticky, body.attributes
    )
    return {
        "experiment_id": experiment_id,
        "request_id": body.request_id,
        "variant_id": variant_id,
        "model_version": version,
        "phase": phase,
        "exposure": exposure,
    }


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
                o.phase, o.covariate, o.attributes)
        for o in items
    ]  # fmt: skip
    receipt = facade.record_outcomes(_principal(ctx), experiment_id, outcomes)
    return {"accepted": receipt.accepted, "duplicates": receipt.duplicates}


@api.route("/experiments/{experiment_id}/metrics", "GET", response=MetricsOut)
def experiment_metrics(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Aggregated outcomes per variant."""
    found = facade.metrics(_principal(ctx), experiment_id)
    return {
        "experiment_id": experiment_id,
        "variants": {name: _metrics_out(m) for name, m in found.items()},
    }


@api.route("/experiments/{experiment_id}/analysis", "GET", query=AnalysisQuery,
           response=AnalysisOut)  # fmt: skip
def experiment_analysis(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Significance per treatment (sequential by default, stratified by allocation phase),
    guardrails, SRM per phase and a recommendation with its reason."""
    analysis = facade.analysis(_principal(ctx), experiment_id, ctx.query.method)
    return {
        "experiment_id": analysis.experiment_id,
        "primary_metric": analysis.primary_metric,
        "control_variant_id": analysis.control_variant_id,
        "treatments": [_treatment_out(t) for t in analysis.treatments],
        "sample_ratio": _ratio_out(analysis.sample_ratio),
        "recommendation": analysis.recommendation.value,
        "recommended_winner": analysis.recommended_winner,
        "warnings": analysis.warnings,
        "method": analysis.method,
        "reason": analysis.reason,
        "decision_engine": analysis.decision_engine,
        "verdicts": {
            name: {**v.__dict__, "recommendation": v.recommendation.value}
            for name, v in analysis.verdicts.items()
        },
        "risk_threshold": analysis.risk_threshold,
        "metrics": [_comparison_out(item) for item in analysis.metrics],
        "correction": analysis.correction,
    }


@api.route("/experiments/{experiment_id}/segments", "GET", query=AnalysisQuery,
           response=SegmentsOut)  # fmt: skip
def experiment_segments(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """The primary metric per segment of each declared dimension, tested per treatment with the
    declared correction across segments; the top segments and those that disagree with the
    overall result (flagged)."""
    found = facade.segments(_principal(ctx), experiment_id, ctx.query.method)
    return {
        "experiment_id": found.experiment_id,
        "primary_metric": found.primary_metric,
        "method": found.method,
        "correction": found.correction,
        "alpha": found.alpha,
        "dimensions": [
            {
                "name": d.name,
                "max_values": d.max_values,
                "segments": [
                    {"value": value, "variants": {k: _metrics_out(m) for k, m in metrics.items()}}
                    for value, metrics in found.segments.get(d.name, {}).items()
                ],
            }
            for d in found.dimensions
        ],
        "tests": [_segment_test_out(t) for t in found.tests],
        "top": [_segment_test_out(t) for t in found.top],
        "flagged": [_segment_test_out(t) for t in found.flagged],
    }


def _segment_test_out(test: Any) -> dict[str, Any]:
    result = test.significance
    direction = None
    if test.significant and test.difference:
        up = test.difference > 0
        direction = "worse" if up == (result.metric_name in LOWER_IS_BETTER) else "better"
    return {
        "dimension": test.dimension,
        "value": test.value,
        "variant_id": test.variant_id,
        "control_count": test.control.request_count,
        "treatment_count": test.treatment.request_count,
        "control_value": result.control_value,
        "treatment_value": result.treatment_value,
        "difference": test.difference,
        "effect_size": result.effect_size,
        "test": result.test,
        "statistic": None if result.statistic is None else _finite(result.statistic),
        "p_value": result.p_value,
        "adjusted_p_value": test.adjusted_p_value,
        "significant": test.significant,
        "direction": direction,
        "confidence_interval": [_finite(v) for v in result.confidence_interval],
        "flagged": test.flagged,
        "flag_reason": test.flag_reason,
    }


def _comparison_out(item: Any) -> dict[str, Any]:
    data = dict(item.__dict__)
    for arm in ("control", "treatment"):
        data[arm] = None if item.__dict__[arm] is None else dict(item.__dict__[arm].__dict__)
    data["interval"] = None if item.interval is None else [_finite(v) for v in item.interval]
    return data


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _treatment_out(item: Any) -> dict[str, Any]:
    result = item.significance
    return {
        **{k: v for k, v in result.__dict__.items() if k != "confidence_interval"},
        "variant_id": item.variant_id,
        "confidence_interval": [_finite(v) for v in result.confidence_interval],
        "statistic": None if result.statistic is None else _finite(result.statistic),
        "recommended_action": result.recommended_action.value,
        "adjusted_p_value": item.adjusted_p_value,
        "improves": item.improves,
        "guardrails": [
            {**g.__dict__, "interval": [_finite(v) for v in g.interval]} for g in item.guardrails
        ],
        "bayesian": _bayesian_out(item),
        "cuped": _cuped_out(item.cuped),
    }


def _cuped_out(found: Any) -> dict[str, Any] | None:
    if found is None:
        return None
    data = {k: v for k, v in found.__dict__.items() if k != "metric_name"}
    data["statistic"] = _finite(found.statistic)
    data["confidence_interval"] = list(found.confidence_interval)
    return data


def _bayesian_out(item: Any) -> dict[str, Any] | None:
    reading = item.bayesian
    if reading is None:
        return None
    found = {k: v for k, v in reading.__dict__.items() if k != "metric_name"}
    interval = reading.credible_interval
    found["credible_interval"] = None if interval is None else list(interval)
    return {**found, "decision": item.bayesian_decision}


def _ratio_out(srm: Any) -> dict[str, Any]:
    phases = [{k: v for k, v in r.__dict__.items() if k != "phases"} for r in srm.phases]
    return {**{k: v for k, v in srm.__dict__.items() if k not in ("phases", "phase")},
            "phases": phases}  # fmt: skip


@api.route("/experiments/{experiment_id}/rollback-policy", "PUT", role="writer",
           body=RollbackPolicyBody, response=RollbackPolicyOut)  # fmt: skip
def put_rollback_policy(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """Stores the automatic-rollback policy of an experiment."""
    policy = facade.put_policy(_principal(ctx), experiment_id, **ctx.body.model_dump())
    return policy.__dict__


@api.route("/experiments/{experiment_id}/rollback-policy", "GET", response=RollbackPolicyOut)
def get_rollback_policy(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """The rollback policy in force (the default one when none was stored)."""
    return facade.get_policy(_principal(ctx), experiment_id).__dict__


@api.route("/experiments/{experiment_id}/checks", "GET", response=ChecksOut)
def latest_check(ctx: RequestContext, experiment_id: str) -> dict[str, Any]:
    """The monitor's latest canary check: pass / fail / inconclusive, the tests, numbers and
    bounds per treatment, and the run of consecutive failures."""
    state, policy = facade.latest_check(_principal(ctx), experiment_id)
    latest = None
    if state is not None:
        latest = {k: v for k, v in state.__dict__.items() if k != "experiment_id"}
        latest["variants"] = list(state.variants)
    return {"experiment_id": experiment_id, "latest": latest, "failure_limit": policy.failure_limit}


class SampleSizeQuery(_Strict):
    """Query of ``GET /stats/sample-size``."""

    baseline_rate: float = Field(gt=0, lt=1, allow_inf_nan=False)
    minimum_detectable_effect: float = Field(
        allow_inf_nan=False, description="relative change to detect: 0.1 = +10 %"
    )
    confidence_level: float = Field(default=0.95, gt=0, lt=1, allow_inf_nan=False)
    power: float = Field(default=0.8, gt=0, lt=1, allow_inf_nan=False)
    variants: int = Field(default=2, ge=2, le=100)
    daily_traffic: int | None = Field(default=None, ge=1)
    method: Literal["sequential", "fixed"] = Field(
        default="sequential", description="the analysis the plan is for"
    )
    tuning_sample_size: int = Field(default=5000, ge=1, le=10**12)


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
        body.dataset_version_id, body.action, body.sample_size, body.seed, body.source,
        body.reevaluate_minutes,
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
