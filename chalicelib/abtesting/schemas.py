"""Request and response schemas of the experimentation routes (``/experiments``, ``/layers``,
``/holdouts``, ``/stats``).

Requests are strict pydantic models (unknown fields are 400). Every response is a
:class:`DomainOut` built from the domain object it shows with ``XOut.from_domain(obj)``: each
declared field is read from the object's attribute of the same name (``Decimal`` as its string,
an enum as its value, nested dataclasses as the nested model), and only what is computed or
named differently is passed by the class's own ``from_domain``. The model declares each field
once; the route returns ``XOut.from_domain(obj).body()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, ConfigDict, Field

from chalicelib.abtesting.bayes import BayesianResult
from chalicelib.abtesting.cuped import CupedResult
from chalicelib.abtesting.models import LAYER_BUCKETS
from chalicelib.core.schema import Schema
from chalicelib.core.shaping import mirrored
from chalicelib.core.text import Name, Text

DECIMAL_TEXT = r"^[0-9]+(\.[0-9]+)?$"
NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
StatusName = Literal["draft", "running", "paused", "concluded", "rolled_back"]


class _Strict(Schema):
    model_config = ConfigDict(extra="forbid")


def plain(value: Any) -> Any:
    """A domain value as the response schemas read it: an enum as its value, ``Decimal`` as its
    string, a dataclass as a mapping of its fields, tuples and sets as lists (recursively)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    return value


class DomainOut(Schema):
    """A response schema built from the domain object it shows (the one way responses are
    built: ``XOut.from_domain(obj).body()``)."""

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """The response for ``obj``: each declared field is ``computed[name]`` when given, else
        ``obj``'s attribute of that name, read through :func:`plain` (a nested dataclass fills
        the nested model; fields the model does not declare are left out).

        Args:
            obj: The domain object (``None`` when every field is computed).
            **computed: Values of fields that are derived or named differently.
        """
        data = {
            name: plain(computed[name] if name in computed else getattr(obj, name))
            for name in cls.model_fields
        }
        return cls.model_validate(data)

    def body(self) -> dict[str, Any]:
        """The response body as Python values (``core.jsonutil`` writes the JSON: ISO-8601
        datetimes, NaN and infinities as ``null``)."""
        return self.model_dump()


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


class LayerSliceOut(DomainOut):
    """The slice of a layer an experiment takes."""

    layer_id: str
    start: int
    end: int


class HoldoutRefOut(DomainOut):
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


class CovariateSourceIn(_Strict):
    """A dataset version CUPED covariates are joined from by user id (README "CUPED")."""

    dataset_id: str = Field(min_length=1, max_length=128)
    version: str = Field(
        min_length=1, max_length=128, description="a version number, id (dv-…) or tag"
    )
    user_column: Name = Field(min_length=1, max_length=256)
    covariate_column: Name = Field(min_length=1, max_length=256)


class CovariateSourceOut(DomainOut):
    """Where an experiment's CUPED covariates are joined from."""

    dataset_id: str
    version_id: str
    version_number: int
    user_column: str
    covariate_column: str


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
    covariate_source: CovariateSourceIn | None = Field(
        default=None,
        description="join each outcome's CUPED covariate from a dataset version by user_id",
    )
    segment_correction: Literal["holm", "bh"] = Field(
        default="holm",
        description="correction across segment tests: holm (familywise) or bh (false discovery "
        "rate)",
    )


class AccessBody(_Strict):
    """Body of ``PUT /experiments/{id}/access``: who may see it besides its owner."""

    access_groups: list[Annotated[Name, Field(min_length=1, max_length=200)]] = Field(max_length=50)


class VariantOut(DomainOut):
    """A variant with its configured and its effective (state-dependent) weight."""

    variant_id: str
    model_id: str
    model_version: int
    traffic_weight: str
    effective_weight: str
    is_control: bool


class RampOut(DomainOut):
    """Ramp schedule and progress."""

    steps: list[str]
    interval_minutes: int
    min_requests_per_variant: int
    current_step: int
    last_ramp_at: datetime | None


class BanditOut(DomainOut):
    """Bandit settings and last reweighting."""

    floor: str
    interval_minutes: int
    samples: int
    weights_updated_at: datetime | None


class AnalysisSettingsOut(DomainOut):
    """How the experiment is analysed."""

    method: str
    minimum_detectable_effect: float
    power: float
    tuning_sample_size: int
    planned_sample_size: int | None


class PriorOut(DomainOut):
    """Priors of the Bayesian reading."""

    alpha: float
    beta: float
    mean: float | None
    sd: float | None


class DecisionOut(DomainOut):
    """Which engine decides, its risk threshold and the priors."""

    engine: Literal["frequentist", "bayesian"]
    risk_threshold: float
    prior: PriorOut


class MetricSpecOut(DomainOut):
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


class PhaseOut(DomainOut):
    """Weights in force from ``started_at`` until the next phase."""

    phase: int
    started_at: datetime
    reason: Literal["start", "ramp", "reweight", "pause", "resume", "end"]
    weights: dict[str, str]


class ExperimentOut(DomainOut):
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
    covariate_source: CovariateSourceOut | None

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """An experiment (``obj``: :class:`~chalicelib.abtesting.models.Experiment`) with its
        effective weights, ramp and bandit progress, settings and allocation history."""
        effective = obj.effective_weights()
        ramp, bandit, settings = obj.ramp, obj.bandit, obj.analysis
        return super().from_domain(
            obj,
            variants=[
                VariantOut.from_domain(v, effective_weight=effective[v.variant_id])
                for v in obj.variants
            ],
            ramp=None
            if ramp is None
            else RampOut.from_domain(
                ramp, current_step=obj.ramp_step, last_ramp_at=obj.last_ramp_at
            ),
            bandit=None
            if bandit is None
            else BanditOut.from_domain(bandit, weights_updated_at=obj.weights_updated_at),
            analysis=settings,
            decision=settings.decision,
            metrics=settings.metrics,
            correction=settings.correction,
            allocation_history=[PhaseOut.from_domain(p, phase=p.index) for p in obj.phases],
            current_phase=obj.phase,
            dimensions={d.name: {"max_values": d.max_values} for d in obj.segments.dimensions},
            segment_correction=obj.segments.correction,
            **computed,
        )


class ExperimentList(DomainOut):
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


class RouteOut(DomainOut):
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


class RoutingVariantOut(DomainOut):
    """One variant of a routing config, in layout order (treatments first, the control last)."""

    variant_id: str
    model_id: str
    model_version: int
    weight: str


class FixedChoiceOut(DomainOut):
    """The one variant everyone gets (paused, rolled back, concluded)."""

    variant_id: str
    model_version: int


class LayerConfigOut(DomainOut):
    """The experiment's slice of its layer, with the layer's hash salt."""

    layer_id: str
    salt: str
    buckets: int
    start: int
    end: int


class RoutingConfigOut(DomainOut):
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
    user_id: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="the unit whose covariate an experiment with a covariate_source joins",
    )  # fmt: skip


class OutcomeBatch(_Strict):
    """A batch of up to 1,000 outcomes."""

    outcomes: list[OutcomeIn] = Field(min_length=1, max_length=1000)


class OutcomeReceiptOut(DomainOut):
    """How many outcomes were counted now and how many were repeats."""

    accepted: int
    duplicates: int


class VariantMetricsOut(DomainOut):
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

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """One variant's aggregates (``obj``: ``ExperimentMetrics``)."""
        return super().from_domain(obj, latency_mean_ms=obj.latency.mean, **computed)


class MetricsOut(DomainOut):
    """Metrics per variant."""

    experiment_id: str
    variants: dict[str, VariantMetricsOut]


class GuardrailOut(DomainOut):
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


_BayesianFields: Any = mirrored(
    BayesianResult, DomainOut, exclude={"metric_name"},
    model=Literal["beta_binomial", "normal"], credible_interval=list[float] | None,
)  # fmt: skip


class BayesianReadingOut(_BayesianFields):
    """A Bayesian reading (see the README's "Bayesian results")."""


class BayesianOut(BayesianReadingOut):
    """The Bayesian reading of the primary metric (see the README's "Bayesian results")."""

    decision: Literal["better", "keep_control", "inconclusive", "no_data"]

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """The Bayesian reading of a treatment (``obj``: ``TreatmentAnalysis`` with a reading)
        and the decision it gives."""
        return super().from_domain(obj.bayesian, decision=obj.bayesian_decision, **computed)


_CupedFields: Any = mirrored(
    CupedResult, DomainOut, exclude={"metric_name"},
    statistic=float | None, confidence_interval=list[float],
)  # fmt: skip


class CupedOut(_CupedFields):
    """The CUPED-adjusted comparison (OLS of the metric on treatment + centred covariate)."""


class EstimateOut(DomainOut):
    """One arm's estimate of a declared metric."""

    value: float
    variance: float
    n: int


class MetricComparisonOut(DomainOut):
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


class VerdictOut(DomainOut):
    """One decision engine's recommendation."""

    recommendation: Literal["continue", "conclude_winner", "conclude_no_difference"]
    recommended_winner: str | None
    reason: str


class TreatmentOut(DomainOut):
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

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """One treatment (``obj``: ``TreatmentAnalysis``): its significance result with the
        corrected p-value, guardrails, Bayesian reading and CUPED comparison."""
        return super().from_domain(
            obj.significance,
            variant_id=obj.variant_id,
            adjusted_p_value=obj.adjusted_p_value,
            improves=obj.improves,
            guardrails=obj.guardrails,
            bayesian=None if obj.bayesian is None else BayesianOut.from_domain(obj),
            cuped=obj.cuped,
            **computed,
        )


class PhaseRatioOut(DomainOut):
    """The SRM check of one allocation phase against its own weights."""

    phase: int | None
    checked: bool
    chi_square: float | None
    p_value: float | None
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]


class SampleRatioOut(DomainOut):
    """Sample-ratio-mismatch check: per allocation phase, Bonferroni over the phases."""

    checked: bool
    chi_square: float | None
    p_value: float | None
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]
    phases: list[PhaseRatioOut]


class AnalysisOut(DomainOut):
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

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """An experiment's analysis (``obj``: ``ExperimentAnalysis``)."""
        treatments = [TreatmentOut.from_domain(t) for t in obj.treatments]
        return super().from_domain(obj, treatments=treatments, **computed)


class SegmentTestOut(DomainOut):
    """One treatment against the control within one segment, on one metric."""

    dimension: str
    value: str
    variant_id: str
    metric: str
    kind: Literal["primary", "proportion", "mean", "ratio"]
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

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """One segment test (``obj``: ``SegmentTest``): the arms' counts, the significance
        result and the direction of a significant difference."""
        result = obj.significance
        return super().from_domain(
            obj,
            control_count=obj.control.request_count,
            treatment_count=obj.treatment.request_count,
            control_value=result.control_value,
            treatment_value=result.treatment_value,
            effect_size=result.effect_size,
            test=result.test,
            statistic=result.statistic,
            p_value=result.p_value,
            confidence_interval=result.confidence_interval,
            **computed,
        )


class UntestedMetricOut(DomainOut):
    """A declared metric without segment tests, and why."""

    metric: str
    kind: str
    reason: str


class SegmentValueOut(DomainOut):
    """One segment of a dimension: its metrics per variant (all phases)."""

    value: str
    variants: dict[str, VariantMetricsOut]


class DimensionOut(DomainOut):
    """A declared dimension and its segments."""

    name: str
    max_values: int
    segments: list[SegmentValueOut]


class SegmentsOut(DomainOut):
    """Segment tests of every metric, corrected across metrics x segments x treatments, with
    the top and the flagged tests."""

    experiment_id: str
    primary_metric: str
    metrics: list[str]
    untested: list[UntestedMetricOut]
    method: Literal["sequential", "fixed"]
    correction: Literal["holm", "bh"]
    alpha: float
    dimensions: list[DimensionOut]
    tests: list[SegmentTestOut]
    top: list[SegmentTestOut]
    flagged: list[SegmentTestOut]

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """Segment results (``obj``: ``SegmentAnalysis``): each dimension's segments with
        their metrics per variant, and the tests."""
        dimensions = [
            DimensionOut.from_domain(
                d,
                segments=[
                    SegmentValueOut.from_domain(
                        None,
                        value=value,
                        variants={k: VariantMetricsOut.from_domain(m) for k, m in found.items()},
                    )
                    for value, found in obj.segments.get(d.name, {}).items()
                ],
            )
            for d in obj.dimensions
        ]
        tests = {
            name: [SegmentTestOut.from_domain(t) for t in getattr(obj, name)]
            for name in ("tests", "top", "flagged")
        }
        return super().from_domain(obj, dimensions=dimensions, **tests, **computed)


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


class RollbackPolicyOut(DomainOut):
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


class CheckOut(DomainOut):
    """The monitor's latest canary check of an experiment."""

    tick: str
    outcome: Literal["pass", "fail", "inconclusive"]
    reason: str
    consecutive_failures: int
    checks: int
    checked_at: datetime
    variants: list[dict[str, Any]]


class ChecksOut(DomainOut):
    """The latest check (``null`` before the monitor's first) and the policy it applies."""

    experiment_id: str
    latest: CheckOut | None
    failure_limit: int


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


# ---- layers and holdouts ------------------------------------------------------------------


SHARE_TEXT = r"^[0](\.[0-9]{1,6})?$"  # a number: 0, or 0. and up to 6 digits

Groups = list[Annotated[Name, Field(min_length=1, max_length=200)]]


class CreateLayerBody(_Strict):
    """Body of ``POST /layers``."""

    name: Name = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=2000)
    access_groups: Groups | None = Field(
        default=None, max_length=50, description="who may see it; default: the caller's groups"
    )


class ResizeSliceBody(_Strict):
    """Body of ``POST /experiments/{id}/resize-slice``: the new ``[start, end)``."""

    start: int = Field(ge=0, lt=LAYER_BUCKETS)
    end: int = Field(gt=0, le=LAYER_BUCKETS)


class LayerAccessBody(_Strict):
    """Body of ``PUT /layers/{id}/access``."""

    access_groups: Groups = Field(max_length=50)


class SliceOut(DomainOut):
    """A taken slice; ``experiment_id`` is ``null`` when the caller may not read it;
    ``free_at``: when a released slice's buckets become free (``null`` while it is held)."""

    start: int
    end: int
    experiment_id: str | None
    free_at: datetime | None


class LayerOut(DomainOut):
    """A layer: its taken slices and its free bucket ranges (of 10,000)."""

    layer_id: str
    name: str
    description: str
    owner: str
    access_groups: list[str]
    created_at: datetime
    updated_at: datetime
    buckets: int
    slices: list[SliceOut]
    free: list[list[int]]
    revision: int

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """A layer (``obj``: ``Layer``); the caller passes ``slices`` as it may see them."""
        free = [list(pair) for pair in obj.free(datetime.now(timezone.utc))]
        return super().from_domain(obj, buckets=LAYER_BUCKETS, free=free, **computed)


class LayerList(DomainOut):
    """Layers, newest first."""

    layers: list[LayerOut]


class DeletedOut(DomainOut):
    """What a deletion removed."""

    id: str
    deleted: bool


class CreateHoldoutBody(_Strict):
    """Body of ``POST /holdouts``."""

    name: Name = Field(min_length=1, max_length=200)
    share: str = Field(pattern=SHARE_TEXT, description='share of all users, e.g. "0.05" (<= 0.5)')
    layer_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20, description="only these layers' experiments; [] all"
    )


class HoldoutOut(DomainOut):
    """A holdout: its share, salt and scope."""

    holdout_id: str
    name: str
    share: str
    salt: str
    layer_ids: list[str]
    owner: str
    created_at: datetime

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """A holdout (``obj``: ``Holdout``) with its hash salt."""
        return super().from_domain(obj, salt=obj.ref().salt, **computed)


class HoldoutList(DomainOut):
    """Holdouts, oldest first."""

    holdouts: list[HoldoutOut]


class HoldoutAnalysisQuery(_Strict):
    """Query of ``GET /holdouts/{id}/analysis``."""

    metric: str = Field(
        default="conversion_rate", pattern=NAME,
        description="a rate (conversion_rate, success_rate, error_rate), latency_ms or a custom "
        "metric",
    )  # fmt: skip
    method: Literal["sequential", "fixed"] = Field(
        default="sequential", description="sequential: always valid, read it any time"
    )
    confidence_level: float = Field(default=0.95, gt=0, lt=1, allow_inf_nan=False)


class CoveredExperimentOut(DomainOut):
    """One experiment the holdout covers: what it ships and the requests counted."""

    experiment_id: str
    status: StatusName
    shipped: list[str]
    holdout_requests: int
    exposed_requests: int
    shared_holdout: bool


class HoldoutAnalysisOut(DomainOut):
    """Holdout users against users of shipped variants (``difference`` = exposed − holdout)."""

    holdout_id: str
    metric: str
    method: Literal["sequential", "fixed"]
    alpha: float
    experiments: list[CoveredExperimentOut]
    holdout: EstimateOut | None
    exposed: EstimateOut | None
    holdout_requests: int
    exposed_requests: int
    difference: float | None
    relative_change: float | None
    interval: list[float | None] | None
    p_value: float
    significant: bool
    direction: Literal["better", "worse", "none"]
    test: str
    bayesian: BayesianReadingOut | None

    @classmethod
    def from_domain(cls, obj: Any, /, **computed: Any) -> Self:
        """A holdout analysis (``obj``: ``HoldoutAnalysis``) with its comparison's numbers."""
        found = obj.comparison
        numbers = {k: getattr(found, k) for k in ("difference", "relative_change", "interval")}
        return super().from_domain(
            obj, **numbers, p_value=found.p_value, test=found.test, **computed
        )
