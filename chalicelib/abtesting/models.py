"""A/B testing domain: experiments, variants, metrics, statistics results and rollback policy.

Traffic weights are :class:`~decimal.Decimal` everywhere (strings in JSON); datetimes are
timezone-aware UTC.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from fractions import Fraction

from chalicelib.core.moments import merged_moments


class ExperimentStatus(str, Enum):
    """Lifecycle of an experiment."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    CONCLUDED = "concluded"
    ROLLED_BACK = "rolled_back"


class TrafficAllocationStrategy(str, Enum):
    """How traffic is split between variants."""

    PERCENTAGE = "percentage"
    RAMPING = "ramping"
    MAB = "mab"


class RecommendedAction(str, Enum):
    """What the statistics suggest doing next."""

    CONTINUE = "continue"
    CONCLUDE_WINNER = "conclude_winner"
    CONCLUDE_NO_DIFFERENCE = "conclude_no_difference"


# Metrics that are proportions (tested with the two-proportion z-test).
RATE_METRICS = frozenset({"conversion_rate", "success_rate", "error_rate"})
# Metrics where a higher value is worse (guardrails, winners, rollback).
LOWER_IS_BETTER = frozenset(
    {"error_rate", "latency_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}
)


@dataclass(frozen=True)
class ModelVariant:
    """One arm of an experiment: a model version and its share of traffic.

    Attributes:
        variant_id: Unique within the experiment.
        model_id: Registered model id.
        model_version: Version number in the registry.
        traffic_weight: Share of traffic (all variants sum to exactly 1).
        is_control: Exactly one variant is the control.
    """

    variant_id: str
    model_id: str
    model_version: int
    traffic_weight: Decimal
    is_control: bool = False


@dataclass(frozen=True)
class RampSchedule:
    """Treatment shares a ramping experiment moves through, one step per interval.

    Attributes:
        steps: Increasing treatment shares, e.g. ``0.05, 0.25, 0.5, 1``.
        interval_minutes: Minimum time between two steps.
        min_requests_per_variant: Requests each variant needs before the next step.
    """

    steps: tuple[Decimal, ...]
    interval_minutes: int = 60
    min_requests_per_variant: int = 100


@dataclass(frozen=True)
class BanditConfig:
    """Thompson-sampling settings of a multi-armed-bandit experiment.

    Attributes:
        floor: Smallest weight any arm keeps.
        interval_minutes: Minimum time between two reweightings.
        samples: Monte Carlo draws used to estimate each arm's win probability.
    """

    floor: Decimal = Decimal("0.01")
    interval_minutes: int = 5
    samples: int = 20_000


class AnalysisMethod(str, Enum):
    """How the analysis decides."""

    SEQUENTIAL = "sequential"
    FIXED = "fixed"


class DecisionEngine(str, Enum):
    """Which reading of the data decides (``conclude``, the recommendation)."""

    FREQUENTIST = "frequentist"
    BAYESIAN = "bayesian"


@dataclass(frozen=True)
class BayesianPrior:
    """Priors of the Bayesian reading (see :mod:`chalicelib.abtesting.bayes`).

    Attributes:
        alpha: ``Beta(alpha, beta)`` prior of each arm's rate (default uniform ``Beta(1, 1)``).
        beta: See ``alpha``.
        mean: Mean of a normal prior on each arm's mean (``None`` with ``sd``: flat).
        sd: Standard deviation of that prior.
    """

    alpha: float = 1.0
    beta: float = 1.0
    mean: float | None = None
    sd: float | None = None


@dataclass(frozen=True)
class DecisionSettings:
    """How the analysis decides.

    Attributes:
        engine: ``frequentist`` (default: the analysis method's test) or ``bayesian`` (expected
            loss below ``risk_threshold``).
        risk_threshold: Largest expected loss, relative to the control's posterior mean, at
            which the Bayesian engine ships a treatment (or keeps the control).
        prior: Priors of the Bayesian reading (shown with either engine).
    """

    engine: DecisionEngine = DecisionEngine.FREQUENTIST
    risk_threshold: float = 0.0025
    prior: BayesianPrior = field(default_factory=BayesianPrior)


@dataclass(frozen=True)
class MetricSpec:
    """A metric an experiment declares (see :mod:`chalicelib.abtesting.metrics`).

    Attributes:
        name: The metric's name (for proportion, mean and quantile also the named outcome
            value it reads, unless ``source`` says otherwise).
        kind: ``proportion``, ``mean``, ``ratio`` or ``quantile``.
        role: ``primary``, ``secondary`` or ``guardrail``.
        source: The outcome value read (a custom metric or ``conversion_rate``,
            ``success_rate``, ``error_rate``, ``latency_ms``); default ``name``.
        numerator: A ratio's numerator (a named outcome value).
        denominator: A ratio's denominator.
        quantile: A quantile metric's level in (0, 1).
        cap_lower: Values below are recorded as this (winsorising).
        cap_upper: Values above are recorded as this.
        lower_is_better: Direction (default: lower for error rate and latencies).
        rollback: A guardrail the canary monitor also judges: significantly worse (always-valid
            test, Holm over such guardrails) fails the check, which can roll back.
    """

    name: str
    kind: str
    role: str = "secondary"
    source: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    quantile: float | None = None
    cap_lower: float | None = None
    cap_upper: float | None = None
    lower_is_better: bool | None = None
    rollback: bool = False


@dataclass(frozen=True)
class AnalysisSettings:
    """How an experiment is analysed.

    Attributes:
        method: ``sequential`` (default: always-valid p-values and confidence sequences, safe to
            read at any time) or ``fixed`` (fixed-horizon tests, which may recommend only once
            both arms reached the planned sample size).
        minimum_detectable_effect: Smallest relative change worth detecting (0.1 = 10 %); it
            sets the planned sample size and the equivalence margin.
        power: Power the planned sample size gives against that effect.
        tuning_sample_size: Requests per arm at which the sequential confidence sequences are
            tightest (GrowthBook's tuning parameter).
        planned_sample_size: Requests per arm the fixed-horizon test waits for; ``None``
            plans it from the control's observed rate (or spread) at every analysis.
        decision: Which engine decides, its risk threshold and the Bayesian priors.
        metrics: Declared metrics (primary, secondary, guardrail), analysed together.
        correction: Multiple-testing correction over declared metrics and treatments:
            ``holm`` (family-wise error), ``bh`` (false discovery rate) or ``none``.
    """

    method: AnalysisMethod = AnalysisMethod.SEQUENTIAL
    minimum_detectable_effect: float = 0.1
    power: float = 0.8
    tuning_sample_size: int = 5000
    planned_sample_size: int | None = None
    decision: DecisionSettings = field(default_factory=DecisionSettings)
    metrics: tuple[MetricSpec, ...] = ()
    correction: str = "holm"


@dataclass(frozen=True)
class Dimension:
    """An attribute outcomes may carry to be analysed per segment (see :mod:`.segments`).

    Attributes:
        name: The attribute key in an outcome's ``attributes``.
        max_values: Distinct values kept; later new values count as ``"(other)"``.
    """

    name: str
    max_values: int = 20


@dataclass(frozen=True)
class SegmentSettings:
    """The dimensions an experiment is segmented by and how segment tests are corrected.

    Attributes:
        dimensions: At most three declared dimensions.
        correction: ``holm`` (familywise error) or ``bh`` (Benjamini-Hochberg, false discovery
            rate) across every segment test of an analysis.
    """

    dimensions: tuple[Dimension, ...] = ()
    correction: str = "holm"


@dataclass(frozen=True)
class CovariateSource:
    """Where an experiment's CUPED covariates are joined from (see :mod:`.covariates`).

    Attributes:
        dataset_id: The dataset.
        version_id: The version (resolved from a number, id or tag at creation).
        version_number: Its number (for messages and the response).
        user_column: The column holding user ids (outcomes carry ``user_id``).
        covariate_column: The column holding each user's pre-experiment value.
    """

    dataset_id: str
    version_id: str
    version_number: int
    user_column: str
    covariate_column: str


@dataclass(frozen=True)
class CovariateRequest:
    """A caller's request to join covariates from a dataset version (resolved and checked with
    the caller's rights into a :class:`CovariateSource`).

    Attributes:
        dataset_id: The dataset.
        version: A version number (``"3"``), id (``"dv-…"``) or tag.
        user_column: The column holding user ids.
        covariate_column: The column holding each user's pre-experiment value.
    """

    dataset_id: str
    version: str
    user_column: str
    covariate_column: str


class PhaseReason(str, Enum):
    """Why a new allocation phase began."""

    START = "start"
    RAMP = "ramp"
    REWEIGHT = "reweight"
    PAUSE = "pause"
    RESUME = "resume"
    END = "end"


@dataclass(frozen=True)
class AllocationPhase:
    """The weights in force from ``started_at`` until the next phase.

    Attributes:
        index: 0, 1, 2, ... in order.
        started_at: When the weights took effect.
        reason: What began it (start, ramp, reweight, pause, resume, end).
        weights: Effective weights per variant (the control gets everything while paused).
    """

    index: int
    started_at: datetime
    reason: PhaseReason
    weights: dict[str, Decimal]

    @property
    def compares(self) -> bool:
        """Whether two or more arms had traffic (a phase the analysis and SRM can use)."""
        return sum(1 for weight in self.weights.values() if weight > 0) >= 2


LAYER_BUCKETS = 10_000
"""Buckets of every layer's hash space (a slice is ``[start, end)`` of them)."""


@dataclass(frozen=True)
class LayerSlice:
    """The part of a layer's hash space an experiment takes: buckets ``[start, end)``.

    Attributes:
        layer_id: The layer (its id is its hash salt).
        start: First bucket (0 ≤ start < end; ``start == end`` once the experiment released
            its slice: no user is in it).
        end: One past the last bucket (≤ ``LAYER_BUCKETS``).
        free_at: On a layer, when a released slice's buckets may be taken again (``None``: the
            slice is held).
    """

    layer_id: str
    start: int
    end: int
    free_at: datetime | None = None

    def overlaps(self, other: LayerSlice) -> bool:
        """Whether the two slices share a bucket of the same layer."""
        return self.layer_id == other.layer_id and self.start < other.end and other.start < self.end

    def held(self, now: datetime | None) -> bool:
        """Whether the slice still keeps its buckets at ``now`` (``None``: as if never free)."""
        return self.free_at is None or now is None or now < self.free_at


@dataclass(frozen=True)
class Layer:
    """A named hash space whose experiments are mutually exclusive.

    Attributes:
        layer_id: Generated id; also the salt of the layer's hash.
        name: Human name.
        description: Free text.
        owner: Principal that created it.
        access_groups: Groups whose members may read it (and, as writers, place experiments
            in it or change it).
        created_at: Creation time.
        updated_at: Last change.
        slices: The slices taken, by experiment id (never overlapping).
        revision: Bumped on every change; slice reservations are conditional on it.
    """

    layer_id: str
    name: str
    description: str
    owner: str
    access_groups: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    slices: dict[str, LayerSlice] = field(default_factory=dict)
    revision: int = 0

    def held(self, now: datetime | None = None) -> dict[str, LayerSlice]:
        """The slices that keep their buckets at ``now`` (released ones until their
        ``free_at``; ``None``: every slice)."""
        return {key: s for key, s in self.slices.items() if s.held(now)}

    def free(self, now: datetime | None = None) -> list[tuple[int, int]]:
        """The bucket ranges ``[start, end)`` no slice holds at ``now``, in order."""
        found, position = [], 0
        for taken in sorted(self.held(now).values(), key=lambda s: s.start):
            if taken.start > position:
                found.append((position, taken.start))
            position = max(position, taken.end)
        if position < LAYER_BUCKETS:
            found.append((position, LAYER_BUCKETS))
        return found


@dataclass(frozen=True)
class HoldoutRef:
    """A holdout as an experiment carries it (captured when the experiment is created).

    Attributes:
        holdout_id: The holdout.
        salt: Its hash salt (its id).
        share: The share of users it holds out.
    """

    holdout_id: str
    salt: str
    share: Decimal


@dataclass(frozen=True)
class Holdout:
    """A fixed share of users who see only the controls of the experiments it covers.

    Attributes:
        holdout_id: Generated id; also the salt of its hash (independent of every layer's and
            experiment's).
        name: Human name.
        share: The share of users held out (``Decimal`` in (0, 0.5]).
        layer_ids: The layers whose experiments it covers; empty: every experiment.
        owner: The admin that created it.
        created_at: Creation time.
    """

    holdout_id: str
    name: str
    share: Decimal
    layer_ids: tuple[str, ...]
    owner: str
    created_at: datetime

    def covers(self, layer_id: str | None) -> bool:
        """Whether an experiment in that layer (``None``: in no layer) is covered."""
        return not self.layer_ids or layer_id in self.layer_ids

    def ref(self) -> HoldoutRef:
        """What an experiment it covers carries."""
        return HoldoutRef(self.holdout_id, self.holdout_id, self.share)


@dataclass(frozen=True)
class Experiment:
    """An A/B test or canary rollout of model versions.

    Attributes:
        experiment_id: Generated id.
        name: Human name.
        description: Free text.
        variants: The arms; exactly one is the control.
        status: Lifecycle status.
        allocation_strategy: percentage, ramping or mab.
        start_time: When it was first started.
        end_time: When it was concluded or rolled back.
        minimum_sample_size: Requests per variant before a conclusion is trusted.
        confidence_level: E.g. 0.95.
        primary_metric: The metric that decides the winner.
        guardrail_metrics: Metrics that must not degrade.
        created_at: Creation time.
        updated_at: Last change.
        salt: Hash salt of the assignment (defaults to the id).
        owner: Principal that created it.
        ramp: Ramp schedule (ramping only).
        ramp_step: Index of the current ramp step.
        last_ramp_at: When the ramp last moved (or the experiment started).
        bandit: Bandit settings (mab only).
        weights_updated_at: When bandit weights were last recomputed.
        winning_variant_id: Set on conclusion.
        rollback_reason: Why it was rolled back.
        rollback_details: Metric, variant, observed value and threshold of the rollback.
        revision: Bumped on every change; conditional writes compare it.
        analysis: How the experiment is analysed (method, effect, power, tuning).
        phases: Allocation history: the weights in force over time.
        conclusion_reason: What the conclusion did and why (promoted or not).
        access_groups: Groups whose members may read (and, with the writer role, change) it;
            see :mod:`chalicelib.core.access`.
        layer: The slice of a layer it takes (``None``: it is in no layer).
        targeting: The condition a request's attributes must meet to be in it (``None``:
            every request), see :func:`chalicelib.abtesting.assignment.compile_condition`.
        holdouts: The holdouts covering it (captured when it was created).
        segments: Declared dimensions of outcomes and the segment tests' correction.
        covariate_source: The dataset version CUPED covariates are joined from by user id
            (``None``: outcomes carry their covariate, if any).
    """

    experiment_id: str
    name: str
    description: str
    variants: tuple[ModelVariant, ...]
    status: ExperimentStatus
    allocation_strategy: TrafficAllocationStrategy
    start_time: datetime | None
    end_time: datetime | None
    minimum_sample_size: int
    confidence_level: float
    primary_metric: str
    guardrail_metrics: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    salt: str = ""
    owner: str = ""
    ramp: RampSchedule | None = None
    ramp_step: int = 0
    last_ramp_at: datetime | None = None
    bandit: BanditConfig | None = None
    weights_updated_at: datetime | None = None
    winning_variant_id: str | None = None
    rollback_reason: str | None = None
    rollback_details: dict[str, object] = field(default_factory=dict)
    revision: int = 0
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    phases: tuple[AllocationPhase, ...] = ()
    conclusion_reason: str | None = None
    access_groups: tuple[str, ...] = ()
    layer: LayerSlice | None = None
    targeting: dict[str, object] | None = None
    holdouts: tuple[HoldoutRef, ...] = ()
    segments: SegmentSettings = field(default_factory=SegmentSettings)
    covariate_source: CovariateSource | None = None

    @property
    def control(self) -> ModelVariant:
        """The control variant."""
        return next(v for v in self.variants if v.is_control)

    @property
    def treatments(self) -> tuple[ModelVariant, ...]:
        """Every non-control variant, in declared order."""
        return tuple(v for v in self.variants if not v.is_control)

    def effective_weights(self) -> dict[str, Decimal]:
        """Where traffic actually goes now: the control while paused or rolled back, the winner
        once concluded, else the configured weights."""
        if self.status in (ExperimentStatus.PAUSED, ExperimentStatus.ROLLED_BACK):
            target = self.control.variant_id
        elif self.status is ExperimentStatus.CONCLUDED:
            target = self.winning_variant_id or self.control.variant_id
        else:
            return {v.variant_id: v.traffic_weight for v in self.variants}
        return {v.variant_id: Decimal(1 if v.variant_id == target else 0) for v in self.variants}

    @property
    def phase(self) -> int:
        """Index of the allocation phase in force (0 before the start)."""
        return self.phases[-1].index if self.phases else 0

    def variant(self, variant_id: str) -> ModelVariant | None:
        """The variant with that id, or ``None``."""
        return next((v for v in self.variants if v.variant_id == variant_id), None)


@dataclass(frozen=True)
class SufficientStats:
    """Count, sum and centred sum of squares of a continuous metric (mergeable, enough for Welch).

    ``m2`` is the sum of squared deviations from the mean, the quantity Welford's and Chan's
    algorithms carry; the variance is ``m2 / (count - 1)``. Built from raw sums
    (``SufficientStats(n, total, total_sq)``) it is derived with exact rational arithmetic from
    the given floats; the repository builds it with :meth:`from_moments` from exact Decimal sums,
    so values such as ``1e9 + N(0, 1)`` keep their variance (``sum x^2 - (sum x)^2 / n`` in
    floats would cancel to 0).

    Attributes:
        count: Number of values.
        total: Sum of the values.
        total_sq: Sum of their squares (informational; ``m2`` decides the variance).
        m2: Sum of squared deviations from the mean (``None``: derive it from the sums).
        center: The mean when it is known more exactly than ``total / count``.
    """

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    m2: float | None = None
    center: float | None = None

    @classmethod
    def from_moments(cls, count: int, mean: float, m2: float) -> SufficientStats:
        """Statistics from a count, a mean and a centred sum of squares."""
        if count <= 0:
            return cls()
        total = mean * count
        return cls(count, total, m2 + total * mean, max(m2, 0.0), mean)

    @classmethod
    def from_values(cls, values: Iterable[float]) -> SufficientStats:
        """The corrected two-pass algorithm with exactly rounded sums (``math.fsum``): stable for
        values far from zero, where running (Welford) updates drift by an ulp per value."""
        data = [float(v) for v in values]
        if not data:
            return cls()
        mean = math.fsum(data) / len(data)
        deviations = [v - mean for v in data]
        correction = math.fsum(deviations)
        m2 = math.fsum(d * d for d in deviations) - correction * correction / len(data)
        return cls.from_moments(len(data), mean + correction / len(data), m2)

    def merge(self, other: SufficientStats) -> SufficientStats:
        """Chan et al.'s pairwise combination (exact in the centred form)."""
        if not other.count:
            return self
        if not self.count:
            return other
        mean, m2 = merged_moments(
            self.count,
            self.mean or 0.0,
            self.centered,
            other.count,
            other.mean or 0.0,
            other.centered,
        )
        return SufficientStats.from_moments(self.count + other.count, mean, m2)

    @property
    def mean(self) -> float | None:
        """Arithmetic mean, or ``None`` without data."""
        if not self.count:
            return None
        return self.center if self.center is not None else self.total / self.count

    @property
    def centered(self) -> float:
        """Sum of squared deviations from the mean (0 without data)."""
        if self.m2 is not None:
            return self.m2
        if self.count < 1:
            return 0.0
        exact = Fraction(self.total_sq) - Fraction(self.total) ** 2 / self.count
        return max(float(exact), 0.0)

    @property
    def variance(self) -> float | None:
        """Unbiased sample variance, or ``None`` with fewer than two values."""
        if self.count < 2:
            return None
        return self.centered / (self.count - 1)


@dataclass(frozen=True)
class CupedSums:
    """Exact sums over the outcomes that carried a pre-experiment covariate ``x`` and a value
    ``y`` of the primary metric: enough for CUPED (see :mod:`chalicelib.abtesting.cuped`), and
    mergeable by addition.

    Attributes:
        n: Outcomes with both.
        sx: Sum of ``x``.
        sxx: Sum of ``x^2``.
        sy: Sum of ``y``.
        syy: Sum of ``y^2``.
        sxy: Sum of ``x y``.
    """

    n: Decimal = Decimal(0)
    sx: Decimal = Decimal(0)
    sxx: Decimal = Decimal(0)
    sy: Decimal = Decimal(0)
    syy: Decimal = Decimal(0)
    sxy: Decimal = Decimal(0)

    def __add__(self, other: CupedSums) -> CupedSums:
        return CupedSums(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[Decimal, ...]:
        """``(n, sx, sxx, sy, syy, sxy)``."""
        return (self.n, self.sx, self.sxx, self.sy, self.syy, self.sxy)


@dataclass(frozen=True)
class ExperimentMetrics:
    """Aggregated outcomes of one variant.

    Attributes:
        variant_id: The variant.
        request_count: Outcomes recorded.
        success_count: Outcomes with ``success=True``.
        error_count: Outcomes with ``success=False``.
        latency_p50_ms: Median latency (from the log-bucket histogram; ≤ 2 % relative error).
        latency_p95_ms: 95th percentile latency.
        latency_p99_ms: 99th percentile latency.
        conversion_rate: Converted / outcomes that reported ``converted``.
        custom_metrics: Mean of each custom metric.
        converted_count: Outcomes with ``converted=True``.
        conversion_trials: Outcomes that reported ``converted`` at all.
        latency: Sufficient statistics of latency.
        custom_stats: Sufficient statistics of each custom metric.
        latency_histogram: The merged log-bucket latency histogram (bucket index → count).
        cuped: Sums over outcomes with a covariate, for CUPED.
        declared_sums: Counters of declared ratio (``r:``) and quantile (``q:``) metrics.
    """

    variant_id: str
    request_count: int = 0
    success_count: int = 0
    error_count: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    conversion_rate: float | None = None
    custom_metrics: dict[str, float] = field(default_factory=dict)
    converted_count: int = 0
    conversion_trials: int = 0
    latency: SufficientStats = field(default_factory=SufficientStats)
    custom_stats: dict[str, SufficientStats] = field(default_factory=dict)
    latency_histogram: dict[int, int] = field(default_factory=dict)
    cuped: CupedSums = field(default_factory=CupedSums)
    declared_sums: dict[str, Decimal] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        """Successes / requests."""
        return self.success_count / self.request_count if self.request_count else None

    @property
    def error_rate(self) -> float | None:
        """Errors / requests."""
        return self.error_count / self.request_count if self.request_count else None

    def proportion(self, metric: str) -> tuple[int, int]:
        """``(successes, trials)`` of a rate metric.

        Raises:
            KeyError: ``metric`` is not a rate.
        """
        if metric == "conversion_rate":
            return self.converted_count, self.conversion_trials
        if metric == "success_rate":
            return self.success_count, self.request_count
        if metric == "error_rate":
            return self.error_count, self.request_count
        raise KeyError(metric)

    def continuous(self, metric: str) -> SufficientStats:
        """Sufficient statistics of ``latency_ms`` or a custom metric (empty if unknown)."""
        if metric in {"latency_ms", "latency"}:
            return self.latency
        return self.custom_stats.get(metric, SufficientStats())

    def value(self, metric: str) -> float | None:
        """The point value of any metric by name (``None`` when there is no data)."""
        if metric in RATE_METRICS:
            successes, trials = self.proportion(metric)
            return successes / trials if trials else None
        if metric in {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}:
            return getattr(self, metric)
        return self.continuous(metric).mean


@dataclass(frozen=True)
class Outcome:
    """One observed result of a routed request.

    Attributes:
        variant_id: The variant that served the request.
        request_id: Idempotency key: a retried outcome with the same id counts once.
        success: Whether the model call succeeded.
        latency_ms: Model latency in milliseconds.
        converted: Whether the user converted (``None`` when not reported).
        custom_metrics: Named numeric observations.
        phase: Allocation phase the request was routed in (as ``/route`` answered it); ``None``
            means the phase in force when the outcome is recorded.
        covariate: The unit's pre-experiment value of the metric (or of anything correlated
            with it), for CUPED; ``None`` when unknown.
        attributes: Values of the experiment's declared dimensions (``{"country": "BR"}``).
        declared: Counter increments of the experiment's declared ratio and quantile metrics
            (set by the engine from ``custom_metrics``; see :mod:`metrics`).
        user_id: The unit, for an experiment that joins covariates from a dataset version
            (see :mod:`.covariates`); not stored.
    """

    variant_id: str
    request_id: str
    success: bool
    latency_ms: float
    converted: bool | None = None
    custom_metrics: dict[str, float] = field(default_factory=dict)
    phase: int | None = None
    covariate: float | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    declared: dict[str, Decimal] = field(default_factory=dict)
    user_id: str | None = None


@dataclass(frozen=True)
class OutcomeReceipt:
    """What a batch of outcomes did.

    Attributes:
        accepted: Outcomes counted now.
        duplicates: Outcomes whose request id was already counted (ignored).
    """

    accepted: int
    duplicates: int


@dataclass(frozen=True)
class SignificanceResult:
    """A comparison of one treatment with the control on one metric.

    Attributes:
        metric_name: The metric compared.
        test: ``two_proportion_z`` or ``welch_t``.
        control_value: Control's rate or mean.
        treatment_value: Treatment's rate or mean.
        is_significant: p-value below ``1 - confidence_level``.
        p_value: Two-sided p-value.
        confidence_interval: CI of ``treatment - control``.
        effect_size: Relative lift ``(treatment - control) / control`` (``None`` if control is 0).
        sample_size_adequate: Both arms reached the minimum sample size.
        recommended_action: continue / conclude_winner / conclude_no_difference.
        statistic: z or t statistic.
        method: ``sequential`` (always valid) or ``fixed`` (fixed horizon).
        decision: ``better``, ``worse``, ``equivalent``, ``no_difference``, ``inconclusive``,
            ``underpowered`` or ``no_data`` (see the README's "What a decision means").
        planned_sample_size: Requests per arm at which the test reaches the configured power
            against the minimum detectable effect (``None`` when it cannot be planned).
        alpha: Level of the test and of the interval (after the multiple-comparison split).
    """

    metric_name: str
    test: str
    control_value: float | None
    treatment_value: float | None
    is_significant: bool
    p_value: float
    confidence_interval: tuple[float, float]
    effect_size: float | None
    sample_size_adequate: bool
    recommended_action: RecommendedAction
    statistic: float = math.nan
    method: str = "fixed"
    decision: str = ""
    planned_sample_size: int | None = None
    alpha: float | None = None


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail metric, treatment against control.

    Attributes:
        metric_name: The metric.
        control_value: Control's value (``None`` without data).
        treatment_value: Treatment's value (``None`` without data).
        relative_change: ``(treatment - control) / control`` (inf when control is 0).
        degraded: There is evidence (an always-valid test) that the treatment is worse than
            the control by more than the threshold.
        has_data: Both arms have a value.
        outcome: ``pass`` (evidence it is not worse by that much), ``fail`` (``degraded``) or
            ``inconclusive``.
        test: The test used.
        interval: Confidence sequence of the tested contrast (positive means worse).
    """

    metric_name: str
    control_value: float | None
    treatment_value: float | None
    relative_change: float | None
    degraded: bool
    has_data: bool
    outcome: str = "inconclusive"
    test: str = ""
    interval: tuple[float, float] = (-math.inf, math.inf)


@dataclass(frozen=True)
class SampleRatioResult:
    """Sample-ratio-mismatch check: observed counts against the configured weights.

    Attributes:
        chi_square: Pearson's statistic.
        p_value: Upper tail of chi-square with k - 1 degrees of freedom.
        mismatch: p-value below the alarm level (default 0.001).
        observed: Requests per variant.
        expected: Expected requests per variant from the weights.
        checked: Whether any phase had two or more arms with traffic to compare.
        phases: One result per allocation phase (its own weights), when computed per phase.
        phase: The allocation phase this result is about (``None`` for the combined result).
    """

    chi_square: float
    p_value: float
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]
    checked: bool = True
    phases: tuple[SampleRatioResult, ...] = ()
    phase: int | None = None


@dataclass(frozen=True)
class RollbackPolicy:
    """When an experiment is rolled back automatically (stored in DynamoDB).

    Every check compares each treatment (canary) with the control (see
    :mod:`chalicelib.abtesting.judge`); absolute caps are opt-in and also need evidence.

    Attributes:
        experiment_id: The experiment.
        error_rate_threshold: Opt-in absolute cap: fail when the always-valid lower confidence
            bound of the canary's error rate is above it (``None``: no cap).
        latency_degradation_threshold: Relative tolerance of the latency percentile: fail when
            more of the canary's requests than of the control's exceed ``(1 + this)`` times
            the control's percentile, with evidence.
        min_requests_before_rollback: Requests *each* arm (control and canary) needs before a
            check can pass or fail.
        latency_percentile: Which percentile the latency rule compares (p50, p95, p99).
        enabled: Whether the monitor checks this experiment.
        error_rate_tolerance: Relative tolerance of the error rate: fail when the canary's
            error rate is above ``(1 + this)`` times the control's, with evidence.
        latency_threshold_ms: Opt-in absolute cap of the latency percentile in milliseconds.
        alpha: Level of every always-valid test of a check (one-sided use of the two-sided
            confidence sequence, so the chance of a false fail is at most ``alpha / 2``-ish and
            never above ``alpha``, however many checks run).
        tuning_sample_size: Requests per arm at which the confidence sequences are tightest.
        failure_limit: Consecutive failed checks that roll back (Argo Rollouts' semantics).
    """

    experiment_id: str
    error_rate_threshold: float | None = None
    latency_degradation_threshold: float = 0.20
    min_requests_before_rollback: int = 100
    latency_percentile: str = "p95"
    enabled: bool = True
    error_rate_tolerance: float = 0.20
    latency_threshold_ms: float | None = None
    alpha: float = 0.05
    tuning_sample_size: int = 1000
    failure_limit: int = 1


@dataclass(frozen=True)
class RollbackDecision:
    """Why an experiment should be rolled back.

    Attributes:
        variant_id: The offending treatment.
        metric: The metric that crossed its threshold.
        observed: The observed value.
        threshold: The threshold it crossed.
        reason: Human-readable sentence naming all of the above.
        details: The test, its confidence bounds and the counts behind them (stored with the
            rollback).
    """

    variant_id: str
    metric: str
    observed: float
    threshold: float
    reason: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class CanaryState:
    """The monitor's last canary check of an experiment (stored, one item per experiment).

    Attributes:
        experiment_id: The experiment.
        tick: The scheduled tick the check belongs to (a redelivered tick is not counted twice).
        outcome: ``pass``, ``fail`` or ``inconclusive`` (the worst treatment's).
        reason: Why, naming the tests, numbers and bounds.
        consecutive_failures: Failed checks in a row, this one included.
        checks: Checks recorded so far.
        checked_at: When it was recorded.
        variants: Each treatment's check (criteria, bounds), as JSON-friendly dicts.
    """

    experiment_id: str
    tick: str
    outcome: str
    reason: str
    consecutive_failures: int
    checks: int
    checked_at: datetime
    variants: tuple[dict[str, object], ...] = ()


def new_experiment_id() -> str:
    """A new experiment id: ``exp-`` and 16 random hex digits."""
    return f"exp-{uuid.uuid4().hex[:16]}"
