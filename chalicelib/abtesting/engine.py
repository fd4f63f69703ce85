"""The experimentation engine: create, run and conclude experiments; route; record outcomes.

State changes are conditional DynamoDB updates on ``status`` (see the repository), so a wrong
state is a 409 and of two concurrent transitions exactly one succeeds. Ramp steps and bandit
reweighting are conditional on the experiment's ``revision``, so a monitor run repeated or run
twice at once changes the weights once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Protocol

from chalicelib.abtesting import correction, covariates, cuped
from chalicelib.abtesting import metrics as declared
from chalicelib.abtesting.aggregate import merge_counters
from chalicelib.abtesting.assignment import HOLDOUT, Attributes, InvalidCondition, compile_condition
from chalicelib.abtesting.bandit import thompson_weights
from chalicelib.abtesting.covariates import CovariateTables, VersionRecords
from chalicelib.abtesting.errors import (
    ExperimentStateConflict,
    InvalidExperiment,
    slice_changed,
    unknown_model_version,
)
from chalicelib.abtesting.holdout_analysis import (
    MAX_COVERED_EXPERIMENTS,
    HoldoutAnalysis,
    analyze_holdout,
)
from chalicelib.abtesting.layers import LayerService, check_slice, get_layer_service
from chalicelib.abtesting.models import (
    RATE_METRICS,
    AllocationPhase,
    AnalysisMethod,
    AnalysisSettings,
    BanditConfig,
    CovariateSource,
    DecisionSettings,
    Experiment,
    ExperimentMetrics,
    ExperimentStatus,
    LayerSlice,
    MetricSpec,
    ModelVariant,
    Outcome,
    OutcomeReceipt,
    PhaseReason,
    RampSchedule,
    RecommendedAction,
    SegmentSettings,
    TrafficAllocationStrategy,
    new_experiment_id,
)
from chalicelib.abtesting.outcomes_repository import OutcomeStore, SegmentPlan
from chalicelib.abtesting.ports import ExperimentRecords, OutcomeCounters
from chalicelib.abtesting.repository import AssignmentStore, ExperimentRepository, history_fits
from chalicelib.abtesting.routing import AssignmentStorePort, TrafficRouter, routing_config
from chalicelib.abtesting.segments import (
    SegmentAnalysis,
    analyze_segments,
    check_attributes,
    check_settings,
)
from chalicelib.abtesting.statistics import (
    ExperimentAnalysis,
    PhaseMetrics,
    StatisticalAnalyzer,
    comparable_pairs,
    metrics_from_counters,
)
from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.config import get_settings
from chalicelib.core.errors import Conflict, NotFound, SynapseError, UnprocessableEntity
from chalicelib.core.events import EventBus, get_event_bus
from chalicelib.core.observability import logger
from chalicelib.core.singleton import lazy

S = ExperimentStatus
METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
BANDIT_METRICS = frozenset({"conversion_rate", "success_rate"})
# Custom metric values are bounded so that sums of squares stay exact DynamoDB numbers.
MAX_CUSTOM_VALUE = 1e12
# Allocation phases an experiment keeps (ramp steps, reweights, pauses, and their JSON within
# repository.HISTORY_BYTES), so counters and the experiment item stay bounded. A full history
# stops the ramp and the bandit (their weights stay) and refuses pauses (409); room is always
# kept for a pause's resume and for the final phase, so conclude and roll back always work.
MAX_PHASES = 500
# A targeting condition is stored on the experiment's item (and served in its routing config).
MAX_TARGETING_BYTES = 16_384
# Statuses in which an experiment may give up its layer slice (nobody exposed is moved).
RELEASABLE = frozenset({S.DRAFT, S.CONCLUDED, S.ROLLED_BACK})


class ModelRegistryPort(Protocol):
    """The two registry methods the engine uses."""

    def get_version(self, model_id: str, version: int) -> Any:
        """A version (raises a NotFound subclass when unknown)."""

    def set_stage(self, model_id: str, version: int, stage: str) -> Any:
        """Moves a version to a stage (``production`` archives the previous one)."""


def _check_weights(variants: Sequence[ModelVariant]) -> None:
    for variant in variants:
        weight = variant.traffic_weight
        if not isinstance(weight, Decimal) or not weight.is_finite():
            raise InvalidExperiment(f"variant {variant.variant_id}: weight must be a Decimal")
        if not Decimal(0) <= weight <= Decimal(1):
            raise InvalidExperiment(f"variant {variant.variant_id}: weight must be in [0, 1]")
    total = sum((Fraction(v.traffic_weight) for v in variants), Fraction(0))
    if total != 1:
        shown = " + ".join(str(v.traffic_weight) for v in variants)
        raise InvalidExperiment(f"traffic weights must sum to exactly 1; {shown} = {float(total)}")


def _check_variants(variants: Sequence[ModelVariant]) -> None:
    if len(variants) < 2:
        raise InvalidExperiment("an experiment needs at least two variants")
    ids = [v.variant_id for v in variants]
    if len(set(ids)) != len(ids):
        raise InvalidExperiment("variant ids must be unique")
    if any(not METRIC_NAME.match(vid) for vid in ids):
        raise InvalidExperiment("variant ids must be 1-64 letters, digits, '_', '.', '-'")
    if HOLDOUT in ids:
        raise InvalidExperiment(f"the variant id '{HOLDOUT}' is reserved for holdout users")
    controls = sum(1 for v in variants if v.is_control)
    if controls != 1:
        raise InvalidExperiment(f"exactly one variant must be the control; found {controls}")
    _check_weights(variants)


def _check_metrics(primary: str, guardrails: Iterable[str]) -> None:
    for name in (primary, *guardrails):
        if not METRIC_NAME.match(name):
            raise InvalidExperiment(f"metric name '{name}' is not valid")


def _check_ramp(variants: Sequence[ModelVariant], ramp: RampSchedule | None) -> None:
    if ramp is None or not ramp.steps:
        raise InvalidExperiment("a ramping experiment needs a ramp schedule")
    if len(variants) != 2:
        raise InvalidExperiment(
            "a ramping experiment has exactly one treatment and the control "
            "(so a ramp only ever moves users from control into the treatment)"
        )
    steps = list(ramp.steps)
    if any(not Decimal(0) < s <= Decimal(1) for s in steps):
        raise InvalidExperiment("ramp steps must be in (0, 1]")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise InvalidExperiment("ramp steps must strictly increase")
    if ramp.interval_minutes < 1 or ramp.min_requests_per_variant < 0:
        raise InvalidExperiment("ramp interval >= 1 minute and min_requests_per_variant >= 0")
    treatment = next(v for v in variants if not v.is_control)
    if treatment.traffic_weight != steps[0]:
        raise InvalidExperiment(
            f"the treatment's weight ({treatment.traffic_weight}) must equal the first ramp "
            f"step ({steps[0]})"
        )


def _check_bandit(variants: Sequence[ModelVariant], bandit: BanditConfig, primary: str) -> None:
    if primary not in BANDIT_METRICS:
        raise InvalidExperiment("a bandit's primary metric must be conversion_rate or success_rate")
    if bandit.floor < 0 or bandit.floor * len(variants) > 1:
        raise InvalidExperiment("the bandit floor times the number of arms must be at most 1")
    if any(v.traffic_weight < bandit.floor for v in variants):
        raise InvalidExperiment(f"every arm starts at or above the floor {bandit.floor}")
    if bandit.interval_minutes < 1 or bandit.samples < 100:
        raise InvalidExperiment("bandit interval >= 1 minute and samples >= 100")


def _check_analysis(analysis: AnalysisSettings) -> None:
    planned = analysis.planned_sample_size
    checks = (
        0 < analysis.minimum_detectable_effect < 10,
        0 < analysis.power < 1,
        analysis.tuning_sample_size >= 1,
        planned is None or planned >= 1,
    )
    if not all(checks):
        raise InvalidExperiment(
            "analysis: minimum_detectable_effect in (0, 10), power in (0, 1), "
            "tuning_sample_size >= 1 and planned_sample_size >= 1"
        )
    _check_decision(analysis.decision)
    _check_declared_metrics(analysis.metrics, analysis.correction)


def _check_no_twin(primary: str, specs: Sequence[MetricSpec]) -> None:
    """Refuses a declared metric named as the primary metric (it would be tested twice)."""
    if any(spec.name == primary for spec in specs):
        raise InvalidExperiment(
            f"metric '{primary}' is the primary metric, tested already; declare it under "
            "another name (with source) or leave it out"
        )


def _check_spec(spec: MetricSpec) -> None:
    names = [n for n in (spec.name, spec.source, spec.numerator, spec.denominator) if n]
    if not all(METRIC_NAME.match(n) for n in names):
        raise InvalidExperiment(f"metric '{spec.name}': names must be 1-64 letters, digits, _.-")
    if spec.kind not in declared.KINDS or spec.role not in declared.ROLES:
        raise InvalidExperiment(
            f"metric '{spec.name}': kind is one of {', '.join(declared.KINDS)} and role one of "
            f"{', '.join(declared.ROLES)}"
        )
    if spec.rollback and spec.role != "guardrail":
        raise InvalidExperiment(f"metric '{spec.name}': only a guardrail can roll back")
    if spec.kind == "ratio" and not (spec.numerator and spec.denominator):
        raise InvalidExperiment(f"metric '{spec.name}': a ratio needs numerator and denominator")
    if spec.kind == "quantile" and not (spec.quantile is not None and 0 < spec.quantile < 1):
        raise InvalidExperiment(f"metric '{spec.name}': a quantile needs quantile in (0, 1)")
    caps = [c for c in (spec.cap_lower, spec.cap_upper) if c is not None]
    if not all(math.isfinite(c) for c in caps) or (len(caps) == 2 and caps[0] > caps[1]):
        raise InvalidExperiment(f"metric '{spec.name}': caps must be finite, lower <= upper")


def _check_declared_metrics(specs: Sequence[MetricSpec], method: str) -> None:
    if len(specs) > declared.MAX_METRICS:
        raise InvalidExperiment(f"at most {declared.MAX_METRICS} declared metrics")
    if method not in correction.METHODS:
        raise InvalidExperiment(f"correction is one of {', '.join(correction.METHODS)}")
    if len({s.name for s in specs}) != len(specs):
        raise InvalidExperiment("declared metric names must be unique")
    if sum(1 for s in specs if s.role == "primary") > 1:
        raise InvalidExperiment("at most one declared metric is primary")
    for spec in specs:
        _check_spec(spec)


def _apply_declared(outcome: Outcome, specs: Sequence[MetricSpec]) -> Outcome:
    """The outcome with declared caps applied; refuses values a declared metric cannot count."""
    if not specs:
        return outcome
    values = dict(outcome.custom_metrics)
    for spec in specs:
        if spec.kind == "ratio":
            for name in (spec.numerator, spec.denominator):
                if name in values and not abs(values[name]) <= declared.RATIO_LIMIT:
                    raise InvalidExperiment(
                        f"metric '{spec.name}': {name} must be within ±{declared.RATIO_LIMIT:g}"
                    )
            continue
        source = spec.source or spec.name
        if source not in values:
            continue
        if spec.kind == "proportion" and values[source] not in (0, 1):
            raise InvalidExperiment(f"metric '{spec.name}': {source} must be 0 or 1")
        values[source] = declared.capped(spec, values[source])
    extra = {}
    for spec in specs:
        extra.update(declared.increments(values, spec))
    return replace(outcome, custom_metrics=values, declared=extra)


def _check_decision(decision: DecisionSettings) -> None:
    prior = decision.prior
    finite = all(
        isinstance(v, int | float) and math.isfinite(v)
        for v in (decision.risk_threshold, prior.alpha, prior.beta)
    )
    if not finite or not 0 < decision.risk_threshold < 1 or prior.alpha <= 0 or prior.beta <= 0:
        raise InvalidExperiment(
            "decision: risk_threshold in (0, 1) and prior alpha, beta finite and > 0"
        )
    if (prior.mean is None) != (prior.sd is None):
        raise InvalidExperiment("decision: prior mean and sd go together (both or neither)")
    if prior.sd is not None and not (
        math.isfinite(prior.sd) and prior.sd > 0 and math.isfinite(prior.mean or 0.0)
    ):
        raise InvalidExperiment("decision: prior sd must be finite and > 0, its mean finite")


def _check_covariates(outcomes: Sequence[Outcome], metric: str) -> None:
    """A covariate is finite with ``|x| <= cuped.LIMIT``, and so is the metric value it pairs
    with (the CUPED sums stay exact DynamoDB numbers)."""
    for outcome in outcomes:
        x = outcome.covariate
        if x is None:
            continue
        value = cuped.response_value(outcome, metric)
        if not (isinstance(x, int | float) and abs(x) <= cuped.LIMIT) or (
            value is not None and not abs(value) <= cuped.LIMIT
        ):
            raise InvalidExperiment(
                f"outcome {outcome.request_id}: covariate and the {metric} value it pairs with "
                f"must be finite with |value| <= {cuped.LIMIT:g}"
            )


def _check_targeting(targeting: dict[str, Any] | None) -> None:
    if targeting is None:
        return
    try:
        compile_condition(targeting)
    except InvalidCondition as exc:
        raise InvalidExperiment(str(exc), code="invalid_targeting") from None
    size = len(json.dumps(targeting, separators=(",", ":")).encode())
    if size > MAX_TARGETING_BYTES:
        raise InvalidExperiment(
            f"targeting: a condition is at most {MAX_TARGETING_BYTES} bytes of JSON; got {size}",
            code="invalid_targeting",
        )


def _phase(experiment: Experiment, reason: PhaseReason, when: datetime) -> AllocationPhase:
    """The phase that begins when ``experiment`` (as it will be after the change) takes effect."""
    return AllocationPhase(len(experiment.phases), when, reason, experiment.effective_weights())


def _history_has_room(experiment: Experiment, keep: int) -> bool:
    """Whether a new phase fits in the allocation history with room for ``keep`` more (by count
    and by stored bytes)."""
    fits_count = len(experiment.phases) + 1 + keep <= MAX_PHASES
    return fits_count and history_fits(experiment, 1 + keep)


def _seed(experiment: Experiment) -> int:
    text = f"{experiment.experiment_id}:{experiment.revision}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


class ABTestingEngine:
    """Experiments over model versions: lifecycle, routing, outcomes, metrics and analysis.

    Args:
        repository: Experiments and policies (DynamoDB by default; tests pass
            :class:`~chalicelib.abtesting.memory.InMemoryExperimentRepository`).
        registry: Model registry (``get_version``, ``set_stage``).
        event_bus: Lifecycle events.
        clock: Time source.
        outcomes: Outcome counters.
        assignments: Sticky bandit assignments.
        route_cache_ttl: Seconds an experiment config is cached (default from settings).
        monotonic: Cache time source (tests pass a fake).
        layers: Layers and holdouts (default: the process-wide service).
        covariate_records: Reads a covariate version's records (default: through the
            dataversion facade).
        covariate_live: Whether a covariate version still exists, asked every
            ``covariates.RECHECK_SECONDS`` for a table held (default: through the dataversion
            facade; never asked when ``covariate_records`` is given without it).
    """

    def __init__(
        self,
        repository: ExperimentRecords | None = None,
        registry: ModelRegistryPort | None = None,
        event_bus: EventBus | None = None,
        clock: Clock | None = None,
        outcomes: OutcomeCounters | None = None,
        assignments: AssignmentStorePort | None = None,
        route_cache_ttl: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        layers: LayerService | None = None,
        covariate_records: Callable[[CovariateSource], VersionRecords] | None = None,
        covariate_live: Callable[[CovariateSource], bool] | None = None,
    ) -> None:
        self._layers = layers
        self.covariates = (
            CovariateTables(covariate_records, covariate_live, monotonic)
            if covariate_records is not None
            else CovariateTables(_covariate_records, covariate_live or _covariate_live, monotonic)
        )
        self.repository = repository or ExperimentRepository()
        self._registry = registry
        self.event_bus = event_bus or get_event_bus()
        self.clock = clock or SystemClock()
        self.outcomes = outcomes or OutcomeStore()
        ttl = get_settings().route_cache_ttl_seconds if route_cache_ttl is None else route_cache_ttl
        self.router = TrafficRouter(
            self.repository.get,
            assignments or AssignmentStore(),
            ttl_seconds=ttl,
            monotonic=monotonic,
            clock=self.clock,
        )

    @property
    def layers(self) -> LayerService:
        """Layers and holdouts."""
        if self._layers is None:
            self._layers = get_layer_service()
        return self._layers

    @property
    def registry(self) -> ModelRegistryPort:
        if self._registry is None:
            from chalicelib.registry import facade

            self._registry = facade.as_system()
        return self._registry

    # ----------------------------------------------------------------- creation and reads

    def create_experiment(
        self,
        name: str,
        variants: Sequence[ModelVariant],
        description: str = "",
        allocation_strategy: TrafficAllocationStrategy | str = "percentage",
        minimum_sample_size: int = 1000,
        confidence_level: float = 0.95,
        primary_metric: str = "conversion_rate",
        guardrail_metrics: Sequence[str] = (),
        ramp: RampSchedule | None = None,
        bandit: BanditConfig | None = None,
        owner: str = "",
        analysis: AnalysisSettings | None = None,
        access_groups: Sequence[str] = (),
        layer: LayerSlice | None = None,
        targeting: dict[str, Any] | None = None,
        segments: SegmentSettings | None = None,
        covariate_source: CovariateSource | None = None,
        experiment_id: str | None = None,
    ) -> Experiment:
        """Validates and stores a draft experiment.

        ``owner`` and ``access_groups`` decide who sees it (:mod:`chalicelib.core.access`);
        callers are checked by :mod:`chalicelib.abtesting.facade`, not here.

        Args:
            analysis: Analysis method (default sequential), minimum detectable effect, power,
                sequential tuning and an optional declared plan (see :class:`AnalysisSettings`).
            layer: The slice of a layer it takes (reserved here; never overlapping another's).
            targeting: The condition on request attributes that decides eligibility.
            segments: Up to three dimensions outcomes may carry and the correction of the
                segment tests (see :mod:`chalicelib.abtesting.segments`).
            covariate_source: A dataset version CUPED covariates are joined from by user id
                (see :mod:`chalicelib.abtesting.covariates`); read and checked here.
            experiment_id: The id to store it under (default a new one, :func:`new_experiment_id`):
                given when something is recorded for it before it is stored.

        Raises:
            InvalidExperiment: Not exactly one control, weights not summing to exactly 1, an
                unknown model version, an inconsistent ramp, bandit or analysis, a slice outside
                the layer or a targeting condition outside the grammar (422).
            SliceTaken: The slice overlaps another experiment's in the layer (409).
        """
        strategy = TrafficAllocationStrategy(allocation_strategy)
        if not name.strip():
            raise InvalidExperiment("name must not be empty")
        if not 0 < confidence_level < 1 or minimum_sample_size < 1:
            raise InvalidExperiment("confidence_level in (0, 1) and minimum_sample_size >= 1")
        _check_variants(variants)
        _check_metrics(primary_metric, guardrail_metrics)
        analysis = analysis or AnalysisSettings()
        _check_analysis(analysis)
        _check_no_twin(primary_metric, analysis.metrics)
        segments = segments or SegmentSettings()
        check_settings(segments)
        if strategy is TrafficAllocationStrategy.RAMPING:
            _check_ramp(variants, ramp)
        if strategy is TrafficAllocationStrategy.MAB:
            bandit = bandit or BanditConfig()
            _check_bandit(variants, bandit, primary_metric)
        _check_targeting(targeting)
        if layer is not None:
            check_slice(layer)
        self._check_model_versions(variants)
        if covariate_source is not None:
            self.covariates.table(covariate_source)  # a version that cannot serve: 413/422
        now = self.clock.now()
        experiment_id = experiment_id or new_experiment_id()
        experiment = Experiment(
            experiment_id=experiment_id,
            name=name.strip(),
            description=description,
            variants=tuple(variants),
            status=S.DRAFT,
            allocation_strategy=strategy,
            start_time=None,
            end_time=None,
            minimum_sample_size=minimum_sample_size,
            confidence_level=confidence_level,
            primary_metric=primary_metric,
            guardrail_metrics=tuple(guardrail_metrics),
            created_at=now,
            updated_at=now,
            salt=experiment_id,
            owner=owner,
            ramp=ramp if strategy is TrafficAllocationStrategy.RAMPING else None,
            bandit=bandit if strategy is TrafficAllocationStrategy.MAB else None,
            analysis=analysis,
            access_groups=tuple(sorted(set(access_groups))),
            layer=layer,
            targeting=targeting,
            holdouts=self.layers.holdouts_for(None if layer is None else layer.layer_id),
            segments=segments,
            covariate_source=covariate_source,
        )
        self._store_new(experiment)
        self._publish("ExperimentCreated", experiment)
        return experiment

    def _store_new(self, experiment: Experiment) -> None:
        """Reserves the experiment's layer slice, then stores it (freeing the slice if the
        store fails, so a failed creation leaves the layer as it was)."""
        layer = experiment.layer
        if layer is not None:
            self.layers.reserve(experiment.experiment_id, layer)
        try:
            self.repository.create(experiment)
        except Exception:
            if layer is not None:
                self.layers.release(experiment.experiment_id, layer.layer_id)
            raise

    def _check_model_versions(self, variants: Sequence[ModelVariant]) -> None:
        for variant in variants:
            try:
                self.registry.get_version(variant.model_id, variant.model_version)
            except NotFound:
                raise unknown_model_version(
                    variant.variant_id, variant.model_id, variant.model_version
                ) from None

    def get_experiment(self, experiment_id: str) -> Experiment:
        """The experiment (404 if unknown)."""
        return self.repository.get(experiment_id)

    def cached_experiment(self, experiment_id: str) -> Experiment:
        """The experiment as this instance caches it for routing and outcomes (at most
        ``route_cache_ttl`` seconds old; 404 if unknown)."""
        return self._config(experiment_id)

    def set_access_groups(self, experiment_id: str, access_groups: Sequence[str]) -> Experiment:
        """Replaces who may see an experiment (its owner stays).

        Raises:
            ExperimentNotFound: Unknown experiment.
            Referenced: A dataset readable by a group the change drops records a usage of the
                experiment (see :mod:`chalicelib.core.references`).
        """
        from chalicelib.core import references

        groups = sorted(set(access_groups))
        dropped = set(self.repository.get(experiment_id).access_groups) - set(groups)
        target = references.Ref("experiment", experiment_id)
        with references.narrowing(target, dropped, {"dataset": _dataset_groups}):
            experiment = self.repository.set_access_groups(experiment_id, groups, self.clock.now())
        self._forget(experiment_id)
        self._publish("ExperimentAccessChanged", experiment, access_groups=groups)
        return experiment

    def list_experiments(self, status: ExperimentStatus | str | None = None) -> list[Experiment]:
        """Experiments, newest first, optionally with one status."""
        return self.repository.list_experiments(S(status) if status is not None else None)

    # ----------------------------------------------------------------- lifecycle

    def start_experiment(self, experiment_id: str) -> Experiment:
        """draft → running (409 from any other state, and for a draft whose layer slice was
        released, even by a release that lands while it starts); the first allocation phase
        begins."""
        now = self.clock.now()
        found = self.repository.get(experiment_id).layer
        if found is not None and found.start == found.end:
            raise slice_changed(experiment_id)
        experiment = self._transition(
            experiment_id,
            [S.DRAFT],
            S.RUNNING,
            PhaseReason.START,
            if_layer=found,
            start_time=now,
            last_ramp_at=now,
            weights_updated_at=now,
        )
        self._publish("ExperimentStarted", experiment)
        return experiment

    def pause_experiment(self, experiment_id: str) -> Experiment:
        """running → paused; all traffic goes to the control while paused, in a phase of its own
        that the analysis and the SRM check leave out (exposure is not counted)."""
        current = self.repository.get(experiment_id)
        if current.status is S.RUNNING and not _history_has_room(current, keep=2):
            raise ExperimentStateConflict(
                f"the allocation history is full ({len(current.phases)} phases): the experiment "
                "cannot be paused any more; conclude it or roll it back"
            )
        experiment = self._transition(experiment_id, [S.RUNNING], S.PAUSED, PhaseReason.PAUSE)
        self._publish("ExperimentPaused", experiment)
        return experiment

    def resume_experiment(self, experiment_id: str) -> Experiment:
        """paused → running with the weights it had (a new allocation phase)."""
        experiment = self._transition(experiment_id, [S.PAUSED], S.RUNNING, PhaseReason.RESUME)
        self._publish("ExperimentResumed", experiment)
        return experiment

    resume = resume_experiment

    def conclude_experiment(
        self, experiment_id: str, winning_variant_id: str | None = None
    ) -> Experiment:
        """running/paused → concluded.

        With ``winning_variant_id`` that variant gets all traffic and its model version is
        promoted to production. Without it, the always-valid (sequential) analysis decides:
        a decisive winner (``conclude_winner``: significant at any look, guardrails healthy, no
        SRM) is promoted and named in the response and the event; otherwise the experiment is
        concluded *without promoting anything* and everyone stays on the control's model. The
        stored ``conclusion_reason`` says which and why. If the registry refuses a promotion,
        the experiment is put back as it was.

        Raises:
            InvalidExperiment: Unknown winning variant.
            ExperimentStateConflict: Not running or paused.
        """
        current = self.repository.get(experiment_id)
        if current.status not in (S.RUNNING, S.PAUSED):
            raise ExperimentStateConflict(
                f"experiment {experiment_id} is {current.status.value}; "
                "only a running or paused experiment can be concluded"
            )
        winner, reason = self._conclusion(current, winning_variant_id)
        experiment = self._transition(
            experiment_id,
            [current.status],
            S.CONCLUDED,
            PhaseReason.END,
            end_time=self.clock.now(),
            winning_variant_id=winner.variant_id if winner else None,
            conclusion_reason=reason,
        )
        if winner is not None:
            self._promote(experiment_id, current, winner)
        detail: dict[str, Any] = {
            "winning_variant_id": winner.variant_id if winner else None,
            "promoted": winner is not None,
            "reason": reason,
        }
        if winner is not None:
            detail.update(model_id=winner.model_id, model_version=winner.model_version)
        self._publish("ExperimentConcluded", experiment, **detail)
        return experiment

    def _conclusion(
        self, current: Experiment, winning_variant_id: str | None
    ) -> tuple[ModelVariant | None, str]:
        """The variant to promote (``None``: nothing) and the reason stored with the conclusion."""
        if winning_variant_id is not None:
            chosen = current.variant(winning_variant_id)
            if chosen is None:
                raise InvalidExperiment(f"unknown winning variant '{winning_variant_id}'")
            return chosen, f"{chosen.variant_id} promoted: chosen by the caller"
        analysis = self.analyze_experiment(current.experiment_id, AnalysisMethod.SEQUENTIAL)
        engine = (
            "Bayesian (expected loss)"
            if analysis.decision_engine == "bayesian"
            else ("always-valid")
        )
        if (
            analysis.recommendation is RecommendedAction.CONCLUDE_WINNER
            and analysis.recommended_winner is not None
        ):
            winner = current.variant(analysis.recommended_winner)
            return winner, f"{analysis.recommended_winner} promoted: {analysis.reason}"
        control = current.control
        return None, (
            f"concluded without promoting anything: no decisive winner in the {engine} "
            f"analysis; everyone stays on the control's model ({control.model_id} version "
            f"{control.model_version}). {analysis.reason}"
        )

    def _promote(self, experiment_id: str, before: Experiment, winner: ModelVariant) -> None:
        try:
            self.registry.set_stage(winner.model_id, winner.model_version, "production")
        except Exception:
            back = PhaseReason.RESUME if before.status is S.RUNNING else PhaseReason.PAUSE
            self._transition(
                experiment_id,
                [S.CONCLUDED],
                before.status,
                back,
                end_time=None,
                winning_variant_id=None,
                conclusion_reason=None,
            )
            raise

    def mark_rolled_back(
        self, experiment_id: str, reason: str, details: dict[str, Any], automatic: bool
    ) -> Experiment:
        """running (or paused, when manual) → rolled_back with the reason stored.

        Raises:
            ExperimentStateConflict: Already rolled back, concluded or a draft.
        """
        allowed = [S.RUNNING] if automatic else [S.RUNNING, S.PAUSED]
        experiment = self._transition(
            experiment_id,
            allowed,
            S.ROLLED_BACK,
            PhaseReason.END,
            end_time=self.clock.now(),
            rollback_reason=reason,
            rollback_details=details,
        )
        self._publish("ExperimentRolledBack", experiment, reason=reason, automatic=automatic)
        return experiment

    def _transition(
        self,
        experiment_id: str,
        allowed: Sequence[ExperimentStatus],
        target: ExperimentStatus,
        reason: PhaseReason,
        if_layer: LayerSlice | None = None,
        **changes: Any,
    ) -> Experiment:
        """A conditional status change that also appends the allocation phase it begins (with
        ``if_layer``: only while the experiment's slice is that one).

        The phase's weights are the effective weights after the change (the variants cannot
        change meanwhile: ramps and reweights need a running experiment and the revision).
        """
        now = self.clock.now()
        current = self.repository.get(experiment_id)
        projected = replace(
            current,
            status=target,
            winning_variant_id=changes.get("winning_variant_id", current.winning_variant_id),
        )
        changes["phase"] = _phase(projected, reason, now)
        experiment = self.repository.transition(
            experiment_id, allowed, target, now, if_layer=if_layer, **changes
        )
        self._forget(experiment_id)
        return experiment

    def _forget(self, experiment_id: str) -> None:
        self.router.invalidate(experiment_id)

    def _publish(self, detail_type: str, experiment: Experiment, **extra: Any) -> None:
        detail = {
            "experiment_id": experiment.experiment_id,
            "name": experiment.name,
            "status": experiment.status.value,
            "weights": {k: str(v) for k, v in experiment.effective_weights().items()},
            **extra,
        }
        self.event_bus.publish(detail_type, detail)

    # ----------------------------------------------------------------- routing and outcomes

    def route_request(
        self,
        experiment_id: str,
        request_id: str,
        user_id: str | None = None,
        sticky: bool = True,
        attributes: Attributes | None = None,
    ) -> tuple[str, int]:
        """``(variant_id, model_version)`` for a request (see :mod:`routing` for the rules; a
        request the targeting, a holdout or the layer keeps out gets the control's; use
        :meth:`decide_request` to learn whether it is in the experiment)."""
        return self.router.route(experiment_id, request_id, user_id, sticky, attributes)

    def decide_request(
        self,
        experiment_id: str,
        request_id: str,
        user_id: str | None = None,
        sticky: bool = True,
        attributes: Attributes | None = None,
    ) -> tuple[str | None, int, int, str]:
        """``(variant_id or None, model_version, phase, exposure)``: the assignment with the
        request's attributes (targeting), saying whether it is in the experiment
        (``exposure``: ``experiment``, ``holdout``, ``ineligible`` or ``outside_layer``)."""
        return self.router.decide(experiment_id, request_id, user_id, sticky, attributes)

    def routing_config(self, experiment_id: str) -> dict[str, Any]:
        """The experiment's routing config, read fresh (what local assignment runs on)."""
        return routing_config(self.repository.get(experiment_id))

    def assign_request(
        self,
        experiment_id: str,
        request_id: str,
        user_id: str | None = None,
        sticky: bool = True,
    ) -> tuple[str, int, int]:
        """``(variant_id, model_version, phase)``: :meth:`route_request` plus the allocation
        phase, which the client sends back with the outcome."""
        return self.router.assign(experiment_id, request_id, user_id, sticky)

    def _config(self, experiment_id: str) -> Experiment:
        """The experiment from the router's cache (one cached copy per instance)."""
        return self.router.experiment(experiment_id)

    def record_outcome(
        self,
        experiment_id: str,
        variant_id: str,
        request_id: str,
        success: bool,
        latency_ms: float,
        converted: bool | None = None,
        custom_metrics: dict[str, float] | None = None,
        covariate: float | None = None,
        attributes: dict[str, str] | None = None,
        user_id: str | None = None,
    ) -> OutcomeReceipt:
        """Records one outcome; a retry with the same ``request_id`` counts once (``covariate``:
        the unit's pre-experiment value, for CUPED; ``user_id``: the unit whose covariate an
        experiment with a ``covariate_source`` joins).

        ``attributes`` holds values of the experiment's declared dimensions (an undeclared key
        or a malformed value is a 422 and nothing is stored)."""
        outcome = Outcome(
            variant_id, request_id, success, latency_ms, converted, dict(custom_metrics or {}),
            covariate=covariate, attributes=dict(attributes or {}), user_id=user_id,
        )  # fmt: skip
        return self.record_outcomes(experiment_id, [outcome])

    def record_outcomes(self, experiment_id: str, outcomes: Sequence[Outcome]) -> OutcomeReceipt:
        """Records a batch (≈ one DynamoDB write request per 98 outcomes), idempotently.

        Outcomes without a ``phase`` count in the allocation phase in force now (as this
        instance's cached config knows it); with one, in that phase.

        Raises:
            InvalidExperiment: A variant is not part of the experiment, or a phase that does not
                exist (nothing is stored).
            ExperimentStateConflict: The experiment is still a draft.
        """
        experiment = self._config(experiment_id)
        if experiment.status is S.DRAFT:
            raise Conflict(f"experiment {experiment_id} has not been started", code="invalid_state")
        if any((o.phase or 0) > experiment.phase for o in outcomes):
            # a newer phase than the cached config knows
            experiment = self.router.refresh(experiment_id).experiment
        outcomes = [
            o if o.phase is not None else replace(o, phase=experiment.phase) for o in outcomes
        ]
        known = {v.variant_id for v in experiment.variants}
        if experiment.holdouts:
            known.add(HOLDOUT)
        for outcome in outcomes:
            if not 0 <= (outcome.phase or 0) <= experiment.phase:
                raise InvalidExperiment(
                    f"allocation phase {outcome.phase} does not exist (the latest is "
                    f"{experiment.phase})"
                )
            if outcome.variant_id not in known:
                raise InvalidExperiment(f"variant '{outcome.variant_id}' is not in the experiment")
            if not 0 <= outcome.latency_ms < math.inf:
                raise InvalidExperiment("latency_ms must be a finite, non-negative number")
            check_attributes(experiment.segments.dimensions, outcome.attributes)
            for name, value in outcome.custom_metrics.items():
                if not METRIC_NAME.match(name) or not abs(value) <= MAX_CUSTOM_VALUE:
                    raise InvalidExperiment(
                        f"custom metric '{name}': name must be 1-64 letters, digits, '_', '.', "
                        f"'-' and the value finite with |value| <= {MAX_CUSTOM_VALUE:g}"
                    )
        outcomes = self._join_covariates(experiment.covariate_source, outcomes)
        _check_covariates(outcomes, experiment.primary_metric)
        specs = experiment.analysis.metrics
        outcomes = [_apply_declared(o, specs) for o in outcomes]
        return self.outcomes.record(
            experiment_id, list(outcomes), self.clock.now(), experiment.primary_metric,
            _segment_plan(experiment),
        )  # fmt: skip

    def resize_slice(self, experiment_id: str, start: int, end: int) -> Experiment:
        """Moves a draft's layer slice anywhere free, or grows a running or paused experiment's
        slice into free buckets: ``[start, end)`` must contain the slice it has, so every user
        it exposed stays in it (users of the added buckets were ``outside_layer``, never
        exposed, and join). The layer is reserved first; if the experiment then changed, the
        old slice is put back.

        Raises:
            UnprocessableEntity: The experiment takes no slice (422 ``no_layer_slice``), or the
                range is not ``0 <= start < end <= 10000`` (422).
            Conflict: It shrinks or moves the slice of an experiment that exposed users
                (409 ``slice_would_move_users``); the experiment is concluded, rolled back or
                its slice was released (409 ``invalid_state``); the buckets overlap another
                experiment's slice (409 ``layer_slice_taken``).
        """
        experiment = self.repository.get(experiment_id)
        found = self._resizable(experiment)
        wanted = replace(found, start=start, end=end)
        check_slice(wanted)
        exposed = experiment.status is not S.DRAFT
        if exposed and not (start <= found.start and found.end <= end):
            raise Conflict(
                f"[{start}, {end}) does not contain [{found.start}, {found.end}): users the "
                f"experiment exposed would move; a running slice may only grow",
                code="slice_would_move_users",
            )
        self.layers.reserve(experiment_id, wanted, replacing=found)
        try:
            updated = self.repository.transition(
                experiment_id, [experiment.status], experiment.status, self.clock.now(),
                if_layer=found, layer=wanted,
            )  # fmt: skip
        except Exception:
            # a subset of what is held: always fits
            self.layers.reserve(experiment_id, found, replacing=wanted)
            raise
        self._forget(experiment_id)
        self._publish("LayerSliceResized", updated, layer_id=found.layer_id, start=start, end=end)
        return updated

    @staticmethod
    def _resizable(experiment: Experiment) -> LayerSlice:
        """The slice of an experiment that may still change (see :meth:`resize_slice`)."""
        found = experiment.layer
        if found is None:
            raise UnprocessableEntity(
                f"experiment {experiment.experiment_id} takes no layer slice",
                code="no_layer_slice",
            )
        if experiment.status not in (S.DRAFT, S.RUNNING, S.PAUSED) or found.start == found.end:
            raise Conflict(
                f"experiment {experiment.experiment_id} is {experiment.status.value}"
                + (" and released its slice" if found.start == found.end else "")
                + "; only a draft, running or paused experiment's slice changes",
                code="invalid_state",
            )
        return found

    def release_slice(self, experiment_id: str) -> Experiment:
        """Gives up a concluded, rolled-back or draft experiment's layer slice.

        The experiment keeps an empty slice (``start == end``: every request is
        ``outside_layer`` and gets the control's model version, not the winner's); the layer
        holds the buckets for two route-cache periods more (instances and clients holding the
        old config stop routing them to this experiment by then) and then lets any experiment
        take them. Idempotent.

        Raises:
            UnprocessableEntity: The experiment takes no slice (422 ``no_layer_slice``).
            Conflict: It is running or paused: releasing would move users already exposed
                (409 ``invalid_state``).
        """
        experiment = self.repository.get(experiment_id)
        found = experiment.layer
        if found is None:
            raise UnprocessableEntity(
                f"experiment {experiment_id} takes no layer slice", code="no_layer_slice"
            )
        if experiment.status not in RELEASABLE:
            raise Conflict(
                f"experiment {experiment_id} is {experiment.status.value}; a slice is released "
                "once the experiment is concluded or rolled back (or while a draft): releasing "
                "it now would move users already exposed",
                code="invalid_state",
            )
        now = self.clock.now()
        if found.start != found.end:
            experiment = self.repository.transition(
                experiment_id, [experiment.status], experiment.status, now,
                layer=replace(found, end=found.start),
            )  # fmt: skip
            self._forget(experiment_id)
        free_at = now + timedelta(seconds=2 * get_settings().route_cache_ttl_seconds)
        self.layers.free_later(experiment_id, found.layer_id, free_at)
        self._publish("LayerSliceReleased", experiment, layer_id=found.layer_id,
                      start=found.start, end=found.end, free_at=free_at.isoformat())  # fmt: skip
        return experiment

    def _join_covariates(
        self, source: CovariateSource | None, outcomes: Sequence[Outcome]
    ) -> list[Outcome]:
        """Each outcome with the covariate of its ``user_id`` in the source's version, matched
        as text as the table's ids are (the Python API's ``user_id=7`` finds the version's
        ``7`` as HTTP's ``"7"`` does; none for a user it does not list, or while the version
        cannot be read: the outcomes are counted all the same); the outcomes as they are
        without a source.

        Raises:
            InvalidExperiment: An outcome carries its own covariate (422).
        """
        if source is None:
            return list(outcomes)
        carried = next((o for o in outcomes if o.covariate is not None), None)
        if carried is not None:
            raise InvalidExperiment(
                f"outcome {carried.request_id}: this experiment joins covariates from a dataset "
                "version by user id; send user_id, not covariate",
                code="covariate_not_allowed",
            )
        try:
            table = self.covariates.table(source)
        except SynapseError as exc:
            logger.warning("covariates unavailable", extra={"reason": str(exc)})
            return list(outcomes)
        return [
            replace(o, covariate=table.get(str(o.user_id))) if o.user_id is not None else o
            for o in outcomes
        ]

    def get_experiment_metrics(self, experiment_id: str) -> dict[str, ExperimentMetrics]:
        """Aggregated outcomes per variant over every phase (zeros without data)."""
        return self.experiment_data(experiment_id)[1]

    def get_phase_metrics(self, experiment_id: str) -> list[PhaseMetrics]:
        """Outcomes per allocation phase and variant, with each phase's weights."""
        return self.experiment_data(experiment_id)[2]

    def experiment_data(
        self, experiment_id: str, experiment: Experiment | None = None
    ) -> tuple[Experiment, dict[str, ExperimentMetrics], list[PhaseMetrics]]:
        """The experiment, its totals per variant and its metrics per phase (one counter
        query).

        An experiment stored before phases existed counts as one phase at its current weights.
        """
        experiment = experiment or self._config(experiment_id)
        counters = self.outcomes.read_phases(experiment_id)
        variant_ids = [v.variant_id for v in experiment.variants]
        phases = list(experiment.phases) or [
            AllocationPhase(0, experiment.start_time or experiment.created_at, PhaseReason.START,
                            {v.variant_id: v.traffic_weight for v in experiment.variants})
        ]  # fmt: skip
        per_phase = [
            PhaseMetrics(
                phase,
                {
                    name: metrics_from_counters(name, counters.get(phase.index, {}).get(name, {}))
                    for name in variant_ids
                },
            )
            for phase in phases
        ]
        totals = {
            name: metrics_from_counters(
                name, merge_counters(c.get(name, {}) for c in counters.values())
            )
            for name in variant_ids + ([HOLDOUT] if experiment.holdouts else [])
        }
        return experiment, totals, per_phase

    def analyze_holdout(
        self,
        holdout_id: str,
        metric: str = "conversion_rate",
        method: AnalysisMethod | str = AnalysisMethod.SEQUENTIAL,
        confidence_level: float = 0.95,
        experiments: Sequence[Experiment] | None = None,
    ) -> HoldoutAnalysis:
        """The cumulative effect of what the experiments a holdout covers ship: holdout users
        against users of shipped variants (see :mod:`chalicelib.abtesting.holdout_analysis`).

        Args:
            holdout_id: The holdout (404 if unknown).
            metric: A rate, ``latency_ms`` or a custom metric.
            method: ``sequential`` (always valid) or ``fixed``.
            confidence_level: ``1 - alpha``.
            experiments: The experiments to consider (default: all); those the holdout does not
                cover are left out.

        Raises:
            UnprocessableEntity: More than ``MAX_COVERED_EXPERIMENTS`` experiments are covered.
        """
        self.layers.get_holdout(holdout_id)
        candidates = self.list_experiments() if experiments is None else experiments
        covered = [e for e in candidates if any(h.holdout_id == holdout_id for h in e.holdouts)]
        if len(covered) > MAX_COVERED_EXPERIMENTS:
            raise UnprocessableEntity(
                f"the holdout covers {len(covered)} experiments; at most "
                f"{MAX_COVERED_EXPERIMENTS} are analysed together"
            )
        data = [(e, self.experiment_data(e.experiment_id, e)[1]) for e in covered]
        return analyze_holdout(
            holdout_id, data, metric, AnalysisMethod(method).value, 1 - confidence_level
        )

    def analyze_experiment(
        self, experiment_id: str, method: AnalysisMethod | str | None = None
    ) -> ExperimentAnalysis:
        """Significance per treatment (stratified by allocation phase), guardrails, SRM per
        phase and a recommendation, by the experiment's method unless ``method`` is given."""
        experiment = self.repository.get(experiment_id)
        _, totals, phases = self.experiment_data(experiment_id, experiment)
        analyzer = StatisticalAnalyzer(
            experiment.confidence_level, experiment.minimum_sample_size, experiment.analysis
        )
        return analyzer.analyze(experiment, totals, phases, method)

    def segment_phases(self, experiment: Experiment) -> dict[str, dict[str, list[PhaseMetrics]]]:
        """Metrics per dimension, segment value and allocation phase (one query)."""
        counters = self.outcomes.read_segments(experiment.experiment_id)
        phases = _phases_of(experiment)
        return {
            dimension: {
                value: [
                    PhaseMetrics(
                        phase,
                        {
                            v.variant_id: metrics_from_counters(
                                v.variant_id, by_phase.get(phase.index, {}).get(v.variant_id, {})
                            )
                            for v in experiment.variants
                        },
                    )
                    for phase in phases
                ]
                for value, by_phase in values.items()
            }
            for dimension, values in counters.items()
        }

    def analyze_segments(
        self, experiment_id: str, method: AnalysisMethod | str | None = None
    ) -> SegmentAnalysis:
        """The primary metric per segment of every declared dimension, tested per treatment
        with the declared correction across segments, the top segments and those that disagree
        with the overall result (see :mod:`chalicelib.abtesting.segments`)."""
        experiment = self.repository.get(experiment_id)
        _, totals, phases = self.experiment_data(experiment_id, experiment)
        analyzer = StatisticalAnalyzer(
            experiment.confidence_level, experiment.minimum_sample_size, experiment.analysis
        )
        overall = analyzer.analyze(experiment, totals, phases, method)
        return analyze_segments(experiment, overall, self.segment_phases(experiment), method)

    # ----------------------------------------------------------------- scheduled work

    def advance_ramp(self, experiment_id: str) -> Experiment | None:
        """Moves a running ramp one step when its interval passed and guardrails are healthy.

        Returns:
            The experiment after the step, or ``None`` when not due, finished, holding
            (guardrail degraded or too few requests) or another run moved it first.
        """
        experiment = self.repository.get(experiment_id)
        ramp = experiment.ramp
        if (
            experiment.status is not S.RUNNING
            or ramp is None
            or experiment.ramp_step + 1 >= len(ramp.steps)
        ):
            return None
        now = self.clock.now()
        due = (experiment.last_ramp_at or now) + timedelta(minutes=ramp.interval_minutes)
        if now < due or not _history_has_room(experiment, keep=3):
            return None  # not due, or the history is full: the ramp stays at this step
        if self.ramp_hold_reason(experiment) is not None:
            return None
        step = experiment.ramp_step + 1
        share = ramp.steps[step]
        variants = tuple(
            replace(v, traffic_weight=(Decimal(1) - share) if v.is_control else share)
            for v in experiment.variants
        )
        updated = self.repository.update_allocation(
            experiment_id,
            experiment.revision,
            now,
            variants=variants,
            ramp_step=step,
            last_ramp_at=now,
            phase=_phase(replace(experiment, variants=variants), PhaseReason.RAMP, now),
        )
        if updated is None:
            return None
        self._forget(experiment_id)
        self._publish("RampAdvanced", updated, step=step, treatment_weight=str(share))
        return updated

    def ramp_hold_reason(self, experiment: Experiment) -> str | None:
        """Why the ramp must hold (too little data, evidence that a guardrail degraded), or
        ``None``. Guardrails use the always-valid test, stratified by ramp step."""
        ramp = experiment.ramp
        _, metrics, phases = self.experiment_data(experiment.experiment_id, experiment)
        needed = ramp.min_requests_per_variant if ramp else 0
        for variant_id, found in metrics.items():
            if found.request_count < needed and variant_id != HOLDOUT:
                return f"{variant_id} has {found.request_count} requests; {needed} needed"
        control_id = experiment.control.variant_id
        control = metrics[control_id]
        analyzer = StatisticalAnalyzer(
            experiment.confidence_level, experiment.minimum_sample_size, experiment.analysis
        )
        for treatment in experiment.treatments:
            pairs = comparable_pairs(phases, control_id, treatment.variant_id)
            checks = analyzer.check_guardrail_metrics(
                control, metrics[treatment.variant_id], experiment.guardrail_metrics,
                strata=pairs or None,
            )  # fmt: skip
            degraded = [c.metric_name for c in checks if c.degraded]
            if degraded:
                return f"{treatment.variant_id}: guardrails degraded: {', '.join(degraded)}"
        return None

    def update_bandit_weights(self, experiment_id: str) -> Experiment | None:
        """Recomputes a running bandit's weights by Thompson sampling when its interval passed.

        Returns:
            The experiment with new weights, or ``None`` when not due or another run won.
        """
        experiment = self.repository.get(experiment_id)
        bandit = experiment.bandit
        if experiment.status is not S.RUNNING or bandit is None:
            return None
        now = self.clock.now()
        last = experiment.weights_updated_at or now
        if now < last + timedelta(minutes=bandit.interval_minutes):
            return None
        if not _history_has_room(experiment, keep=3):
            return None  # the allocation history is full: the bandit keeps its weights
        metrics = self.get_experiment_metrics(experiment_id)
        arms = []
        for variant in experiment.variants:
            successes, trials = metrics[variant.variant_id].proportion(experiment.primary_metric)
            arms.append((successes, trials - successes))
        weights = thompson_weights(arms, bandit.floor, bandit.samples, _seed(experiment))
        variants = tuple(
            replace(v, traffic_weight=w) for v, w in zip(experiment.variants, weights, strict=True)
        )
        if variants == experiment.variants:
            return None  # same weights: no new phase
        phase = _phase(replace(experiment, variants=variants), PhaseReason.REWEIGHT, now)
        updated = self.repository.update_allocation(
            experiment_id, experiment.revision, now, variants=variants, weights_updated_at=now,
            phase=phase,
        )  # fmt: skip
        if updated is None:
            return None
        self._forget(experiment_id)
        self._publish("WeightsUpdated", updated)
        return updated


def _covariate_records(source: CovariateSource) -> VersionRecords:
    """Every record of a covariate version, read as the system (the reference was checked
    with its creator's rights), refused unread when it is too large."""
    from chalicelib.dataversion import facade as datasets

    version = datasets.version_as_system(source.version_id)
    covariates.check_size(version.size_bytes, version.row_count)
    found = datasets.sample_records_as_system(source.version_id, covariates.MAX_ROWS + 1)
    # only the two columns the join needs: a wide CSV's whole-row dicts cost ~7x more memory
    wanted = [c for c in dict.fromkeys((source.user_column, source.covariate_column))
              if c in found.columns]  # fmt: skip
    columns = zip(*(found.values(c) for c in wanted), strict=True)
    records = [dict(zip(wanted, row, strict=True)) for row in columns] if wanted else []
    return VersionRecords(found.columns, records, found.total)


def _covariate_live(source: CovariateSource) -> bool:
    """Whether a covariate version still exists (an erasure deletes it)."""
    from chalicelib.dataversion import facade as datasets

    try:
        return not datasets.version_as_system(source.version_id).deleted
    except NotFound:
        return False


def _dataset_groups(dataset_id: str) -> list[str] | None:
    """Who may read a dataset that records a usage of an experiment."""
    from chalicelib.dataversion import facade as datasets

    return datasets.access_groups_as_system(dataset_id)


def _segment_plan(experiment: Experiment) -> SegmentPlan:
    """What outcomes of ``experiment`` count per segment: the declared dimensions, the primary
    metric when it is a custom one, and the custom values and ratios of the declared metrics
    (quantiles have no segment counters; built-in rates and latency are always counted)."""
    metric = experiment.primary_metric
    primary = None if _builtin(metric) else metric
    specs = experiment.analysis.metrics
    sources = (s.source or s.name for s in specs if s.kind in ("proportion", "mean"))
    return SegmentPlan(
        experiment.segments.dimensions,
        primary,
        tuple(dict.fromkeys(s for s in sources if not _builtin(s) and s != primary)),
        tuple(s.name for s in specs if s.kind == "ratio"),
    )


def _builtin(metric: str) -> bool:
    """Whether segment counters keep ``metric`` anyway (a rate or a latency)."""
    return metric in RATE_METRICS or metric.startswith("latency")


def _phases_of(experiment: Experiment) -> list[AllocationPhase]:
    """The allocation phases (one at the current weights for experiments stored before)."""
    return list(experiment.phases) or [
        AllocationPhase(0, experiment.start_time or experiment.created_at, PhaseReason.START,
                        {v.variant_id: v.traffic_weight for v in experiment.variants})
    ]  # fmt: skip


@lazy
def get_ab_engine() -> ABTestingEngine:
    """The process-wide experimentation engine."""
    return ABTestingEngine()
