"""DynamoDB storage of experiments, rollback policies, canary checks, sticky assignments, layers
and holdouts.

With :mod:`chalicelib.abtesting.outcomes_repository` (outcomes and their counters), the only code
of the domain that talks to DynamoDB. Experiments change state only through conditional updates
on ``status`` (and ``revision`` for weight changes), so two concurrent transitions cannot both
succeed.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from pynamodb.attributes import (
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.abtesting import outcomes_repository
from chalicelib.abtesting.errors import (
    ExperimentNotFound,
    ExperimentStateConflict,
    HoldoutNotFound,
    LayerNotFound,
    slice_changed,
)
from chalicelib.abtesting.models import (
    AllocationPhase,
    AnalysisMethod,
    AnalysisSettings,
    BanditConfig,
    BayesianPrior,
    CanaryState,
    CovariateSource,
    DecisionEngine,
    DecisionSettings,
    Dimension,
    Experiment,
    ExperimentStatus,
    Holdout,
    HoldoutRef,
    Layer,
    LayerSlice,
    MetricSpec,
    ModelVariant,
    PhaseReason,
    RampSchedule,
    RollbackPolicy,
    SegmentSettings,
    TrafficAllocationStrategy,
)
from chalicelib.abtesting.outcomes_repository import (  # re-exported: callers' imports keep working
    MetricShardTable as MetricShardTable,
)
from chalicelib.abtesting.outcomes_repository import OutcomeDedupTable as OutcomeDedupTable
from chalicelib.abtesting.outcomes_repository import OutcomeStore as OutcomeStore
from chalicelib.abtesting.outcomes_repository import SegmentPlan as SegmentPlan
from chalicelib.abtesting.outcomes_repository import chunk_outcomes as chunk_outcomes
from chalicelib.core import aws
from chalicelib.core.errors import Conflict, ServiceUnavailable
from chalicelib.core.tables import meta, string_list


class StatusIndex(GlobalSecondaryIndex["ExperimentTable"]):
    """Experiments by status (the monitor queries ``running``)."""

    class Meta:
        index_name = "status-index"
        projection = AllProjection()

    status = UnicodeAttribute(hash_key=True)
    experiment_id = UnicodeAttribute(range_key=True)


class ExperimentTable(Model):
    """One item per experiment. Variants, ramp and bandit settings are JSON text."""

    Meta = meta("EXPERIMENTS_TABLE", "experiments")

    experiment_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    status = UnicodeAttribute()
    allocation_strategy = UnicodeAttribute()
    variants = UnicodeAttribute()
    start_time = UTCDateTimeAttribute(null=True)
    end_time = UTCDateTimeAttribute(null=True)
    minimum_sample_size = NumberAttribute()
    confidence_level = NumberAttribute()
    primary_metric = UnicodeAttribute()
    guardrail_metrics = UnicodeAttribute(default="[]")
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    salt = UnicodeAttribute()
    owner = UnicodeAttribute(default="")
    # Absent on experiments stored before access groups existed: visible to admins only.
    access_groups = string_list()
    ramp = UnicodeAttribute(null=True)
    ramp_step = NumberAttribute(default=0)
    last_ramp_at = UTCDateTimeAttribute(null=True)
    bandit = UnicodeAttribute(null=True)
    weights_updated_at = UTCDateTimeAttribute(null=True)
    winning_variant_id = UnicodeAttribute(null=True)
    rollback_reason = UnicodeAttribute(null=True)
    rollback_details = UnicodeAttribute(null=True)
    revision = NumberAttribute(default=0)
    transition_id = UnicodeAttribute(null=True)
    analysis = UnicodeAttribute(null=True)
    phases = string_list(null=True)
    conclusion_reason = UnicodeAttribute(null=True)
    # Layers, targeting and holdouts (issue 19), JSON text; absent on older experiments.
    layer = UnicodeAttribute(null=True)
    targeting = UnicodeAttribute(null=True)
    holdouts = UnicodeAttribute(null=True)
    segments = UnicodeAttribute(null=True)
    covariate_source = UnicodeAttribute(null=True)
    status_index = StatusIndex()

    def to_domain(self) -> Experiment:
        """The stored experiment as a domain object."""
        return Experiment(
            experiment_id=self.experiment_id,
            name=self.name,
            description=self.description or "",
            variants=variants_from_json(self.variants),
            status=ExperimentStatus(self.status),
            allocation_strategy=TrafficAllocationStrategy(self.allocation_strategy),
            start_time=self.start_time,
            end_time=self.end_time,
            minimum_sample_size=int(self.minimum_sample_size),
            confidence_level=float(self.confidence_level),
            primary_metric=self.primary_metric,
            guardrail_metrics=tuple(json.loads(self.guardrail_metrics or "[]")),
            created_at=self.created_at,
            updated_at=self.updated_at,
            salt=self.salt,
            owner=self.owner or "",
            ramp=_ramp_from_json(self.ramp),
            ramp_step=int(self.ramp_step or 0),
            last_ramp_at=self.last_ramp_at,
            bandit=_bandit_from_json(self.bandit),
            weights_updated_at=self.weights_updated_at,
            winning_variant_id=self.winning_variant_id,
            rollback_reason=self.rollback_reason,
            rollback_details=json.loads(self.rollback_details or "{}"),
            revision=int(self.revision or 0),
            analysis=analysis_from_json(self.analysis),
            phases=tuple(
                phase_from_json(index, text) for index, text in enumerate(self.phases or [])
            ),
            conclusion_reason=self.conclusion_reason,
            access_groups=tuple(self.access_groups or ()),
            **gates_from_item(self.layer, self.targeting, self.holdouts),
            segments=segments_from_json(self.segments),
            covariate_source=covariate_source_from_json(self.covariate_source),
        )


class RollbackPolicyTable(Model):
    """The automatic-rollback policy of an experiment."""

    Meta = meta("ROLLBACK_POLICIES_TABLE", "rollback-policies")

    experiment_id = UnicodeAttribute(hash_key=True)
    error_rate_threshold = NumberAttribute(null=True)
    latency_degradation_threshold = NumberAttribute()
    min_requests_before_rollback = NumberAttribute()
    latency_percentile = UnicodeAttribute(default="p95")
    enabled = NumberAttribute(default=1)
    error_rate_tolerance = NumberAttribute(null=True)
    latency_threshold_ms = NumberAttribute(null=True)
    alpha = NumberAttribute(null=True)
    tuning_sample_size = NumberAttribute(null=True)
    failure_limit = NumberAttribute(null=True)


class CanaryStateTable(Model):
    """The latest canary check of an experiment and its run of consecutive failures."""

    Meta = meta("CANARY_CHECKS_TABLE", "canary-checks")

    experiment_id = UnicodeAttribute(hash_key=True)
    tick = UnicodeAttribute()
    outcome = UnicodeAttribute()
    reason = UnicodeAttribute()
    consecutive_failures = NumberAttribute(default=0)
    checks = NumberAttribute(default=0)
    checked_at = UTCDateTimeAttribute()
    variants = UnicodeAttribute(default="[]")

    def to_domain(self) -> CanaryState:
        """The stored check as a domain object."""
        return CanaryState(
            experiment_id=self.experiment_id,
            tick=self.tick,
            outcome=self.outcome,
            reason=self.reason,
            consecutive_failures=int(self.consecutive_failures or 0),
            checks=int(self.checks or 0),
            checked_at=self.checked_at,
            variants=tuple(json.loads(self.variants or "[]")),
        )


class AssignmentTable(Model):
    """Sticky assignments of users in bandit experiments (written once, conditionally)."""

    Meta = meta("EXPERIMENT_ASSIGNMENTS_TABLE", "experiment-assignments")

    pk = UnicodeAttribute(hash_key=True)
    variant_id = UnicodeAttribute()
    assigned_at = UTCDateTimeAttribute()


def variants_to_json(variants: Iterable[ModelVariant]) -> str:
    """Variants as JSON text (weights as strings, exact)."""
    return json.dumps(
        [
            {
                "variant_id": v.variant_id,
                "model_id": v.model_id,
                "model_version": v.model_version,
                "traffic_weight": str(v.traffic_weight),
                "is_control": v.is_control,
            }
            for v in variants
        ]
    )


def variants_from_json(text: str) -> tuple[ModelVariant, ...]:
    """Parses :func:`variants_to_json` output."""
    return tuple(
        ModelVariant(
            variant_id=item["variant_id"],
            model_id=item["model_id"],
            model_version=int(item["model_version"]),
            traffic_weight=Decimal(item["traffic_weight"]),
            is_control=bool(item["is_control"]),
        )
        for item in json.loads(text)
    )


def analysis_to_json(settings: AnalysisSettings) -> str:
    """Analysis settings as JSON text."""
    return json.dumps(
        {
            "method": settings.method.value,
            "minimum_detectable_effect": settings.minimum_detectable_effect,
            "power": settings.power,
            "tuning_sample_size": settings.tuning_sample_size,
            "planned_sample_size": settings.planned_sample_size,
            "decision": decision_to_dict(settings.decision),
            "metrics": [dict(spec.__dict__) for spec in settings.metrics],
            "correction": settings.correction,
        }
    )


def decision_to_dict(decision: DecisionSettings) -> dict[str, Any]:
    """Decision settings as JSON-ready data."""
    prior = decision.prior
    return {
        "engine": decision.engine.value,
        "risk_threshold": decision.risk_threshold,
        "prior": {"alpha": prior.alpha, "beta": prior.beta, "mean": prior.mean, "sd": prior.sd},
    }


def decision_from_dict(data: dict[str, Any] | None) -> DecisionSettings:
    """Parses :func:`decision_to_dict` output (defaults when absent)."""
    if not data:
        return DecisionSettings()
    prior = data.get("prior") or {}
    mean, sd = prior.get("mean"), prior.get("sd")
    return DecisionSettings(
        engine=DecisionEngine(data.get("engine", "frequentist")),
        risk_threshold=float(data.get("risk_threshold", 0.0025)),
        prior=BayesianPrior(
            float(prior.get("alpha", 1.0)),
            float(prior.get("beta", 1.0)),
            None if mean is None else float(mean),
            None if sd is None else float(sd),
        ),
    )


def analysis_from_json(text: str | None) -> AnalysisSettings:
    """Parses :func:`analysis_to_json` output (defaults for experiments stored before it)."""
    if not text:
        return AnalysisSettings()
    data = json.loads(text)
    planned = data.get("planned_sample_size")
    return AnalysisSettings(
        method=AnalysisMethod(data["method"]),
        minimum_detectable_effect=float(data["minimum_detectable_effect"]),
        power=float(data["power"]),
        tuning_sample_size=int(data["tuning_sample_size"]),
        planned_sample_size=None if planned is None else int(planned),
        decision=decision_from_dict(data.get("decision")),
        metrics=tuple(MetricSpec(**item) for item in data.get("metrics", [])),
        correction=data.get("correction", "holm"),
    )


def segments_to_json(settings: SegmentSettings) -> str | None:
    """Segment settings as JSON text (``None`` when no dimension is declared)."""
    if not settings.dimensions:
        return None
    return json.dumps(
        {
            "dimensions": [[d.name, d.max_values] for d in settings.dimensions],
            "correction": settings.correction,
        }
    )


def segments_from_json(text: str | None) -> SegmentSettings:
    """Parses :func:`segments_to_json` output (no dimensions for experiments without it)."""
    if not text:
        return SegmentSettings()
    data = json.loads(text)
    dimensions = tuple(Dimension(name, int(limit)) for name, limit in data["dimensions"])
    return SegmentSettings(dimensions, data["correction"])


def covariate_source_to_json(source: CovariateSource | None) -> str | None:
    """Where covariates are joined from, as JSON text (``None`` without a source)."""
    return None if source is None else json.dumps(dataclasses.asdict(source))


def covariate_source_from_json(text: str | None) -> CovariateSource | None:
    """Parses :func:`covariate_source_to_json` output."""
    return CovariateSource(**json.loads(text)) if text else None


def phase_to_json(phase: AllocationPhase) -> str:
    """One allocation phase as JSON text (its index is its position in the list)."""
    return json.dumps(
        {
            "started_at": phase.started_at.isoformat(),
            "reason": phase.reason.value,
            "weights": {name: str(weight) for name, weight in phase.weights.items()},
        }
    )


# The allocation history lives on the experiment item (DynamoDB: 400 KB per item; moto, the local
# stack, counts an updated attribute's old and new value together): its JSON is kept under this.
HISTORY_BYTES = 150_000
# Longest weight text a phase can hold: weights and ramp steps are at most 40 characters, the
# control's complement of a step one more.
_WIDEST_WEIGHT = "0." + "9" * 40


def history_bytes(phases: Iterable[AllocationPhase]) -> int:
    """Bytes of the stored JSON of ``phases``."""
    return sum(len(phase_to_json(phase).encode()) for phase in phases)


def history_fits(experiment: Experiment, more: int) -> bool:
    """Whether ``more`` phases of the widest kind still fit in :data:`HISTORY_BYTES`."""
    widest = AllocationPhase(
        len(experiment.phases),
        datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc),
        max(PhaseReason, key=lambda reason: len(reason.value)),
        dict.fromkeys((v.variant_id for v in experiment.variants), Decimal(_WIDEST_WEIGHT)),
    )
    return history_bytes(experiment.phases) + more * history_bytes([widest]) <= HISTORY_BYTES


def phase_from_json(index: int, text: str) -> AllocationPhase:
    """Parses :func:`phase_to_json` output."""
    data = json.loads(text)
    return AllocationPhase(
        index=index,
        started_at=datetime.fromisoformat(data["started_at"]),
        reason=PhaseReason(data["reason"]),
        weights={name: Decimal(weight) for name, weight in data["weights"].items()},
    )


def _ramp_to_json(ramp: RampSchedule | None) -> str | None:
    if ramp is None:
        return None
    return json.dumps(
        {
            "steps": [str(step) for step in ramp.steps],
            "interval_minutes": ramp.interval_minutes,
            "min_requests_per_variant": ramp.min_requests_per_variant,
        }
    )


def _ramp_from_json(text: str | None) -> RampSchedule | None:
    if not text:
        return None
    data = json.loads(text)
    return RampSchedule(
        steps=tuple(Decimal(step) for step in data["steps"]),
        interval_minutes=int(data["interval_minutes"]),
        min_requests_per_variant=int(data["min_requests_per_variant"]),
    )


def _bandit_to_json(bandit: BanditConfig | None) -> str | None:
    if bandit is None:
        return None
    return json.dumps(
        {
            "floor": str(bandit.floor),
            "interval_minutes": bandit.interval_minutes,
            "samples": bandit.samples,
        }
    )


def _bandit_from_json(text: str | None) -> BanditConfig | None:
    if not text:
        return None
    data = json.loads(text)
    return BanditConfig(Decimal(data["floor"]), int(data["interval_minutes"]), int(data["samples"]))


def layer_to_json(found: LayerSlice | None) -> str | None:
    """An experiment's layer slice as stored: ``[layer_id, start, end]``."""
    return None if found is None else json.dumps([found.layer_id, found.start, found.end])


def gates_to_item(experiment: Experiment) -> dict[str, Any]:
    """The layer slice, targeting and holdouts of an experiment as stored (JSON text)."""
    layer = layer_to_json(experiment.layer)
    holdouts = [[h.holdout_id, h.salt, str(h.share)] for h in experiment.holdouts]
    return {
        "layer": layer,
        "targeting": None if experiment.targeting is None else json.dumps(experiment.targeting),
        "holdouts": json.dumps(holdouts) if holdouts else None,
    }


def gates_from_item(layer: str | None, targeting: str | None, holdouts: str | None) -> Any:
    """The keyword arguments of :class:`Experiment` for stored gates."""
    layer_slice = None if layer is None else LayerSlice(*json.loads(layer))
    refs = tuple(
        HoldoutRef(found[0], found[1], Decimal(found[2])) for found in json.loads(holdouts or "[]")
    )
    return {
        "layer": layer_slice,
        "targeting": None if targeting is None else json.loads(targeting),
        "holdouts": refs,
    }


def _save_new(item: Any, key: Any, what: str) -> None:
    """Writes ``item`` unless an item with its ``key`` exists.

    Raises:
        Conflict: One exists (``what`` already exists).
    """
    try:
        item.save(condition=key.does_not_exist())
    except PutError as exc:
        if _conditional_failed(exc):
            raise Conflict(f"{what} already exists") from None
        raise


def _conditional_failed(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


class ExperimentRepository:
    """Reads and writes experiments and rollback policies with conditional writes."""

    def create(self, experiment: Experiment) -> None:
        """Stores a new experiment.

        Raises:
            Conflict: The id is taken.
        """
        item = ExperimentTable(
            experiment.experiment_id,
            name=experiment.name,
            description=experiment.description,
            status=experiment.status.value,
            allocation_strategy=experiment.allocation_strategy.value,
            variants=variants_to_json(experiment.variants),
            minimum_sample_size=experiment.minimum_sample_size,
            confidence_level=experiment.confidence_level,
            primary_metric=experiment.primary_metric,
            guardrail_metrics=json.dumps(list(experiment.guardrail_metrics)),
            created_at=experiment.created_at,
            updated_at=experiment.updated_at,
            salt=experiment.salt,
            owner=experiment.owner,
            access_groups=list(experiment.access_groups),
            ramp=_ramp_to_json(experiment.ramp),
            ramp_step=experiment.ramp_step,
            bandit=_bandit_to_json(experiment.bandit),
            revision=0,
            analysis=analysis_to_json(experiment.analysis),
            phases=[phase_to_json(phase) for phase in experiment.phases] or None,
            **gates_to_item(experiment),
            segments=segments_to_json(experiment.segments),
            covariate_source=covariate_source_to_json(experiment.covariate_source),
        )
        _save_new(item, ExperimentTable.experiment_id, f"experiment {experiment.experiment_id}")

    def get(self, experiment_id: str) -> Experiment:
        """The experiment (strongly consistent read).

        Raises:
            ExperimentNotFound: Unknown id.
        """
        return self._item(experiment_id).to_domain()

    def _item(self, experiment_id: str) -> ExperimentTable:
        try:
            return ExperimentTable.get(experiment_id, consistent_read=True)
        except DoesNotExist:
            raise ExperimentNotFound(f"experiment {experiment_id} does not exist") from None

    def running_ids(self) -> list[str]:
        """Ids of every running experiment (one index query, only the key projected)."""
        items = ExperimentTable.status_index.query(
            ExperimentStatus.RUNNING.value, attributes_to_get=["experiment_id"]
        )
        return [item.experiment_id for item in items]

    def set_access_groups(
        self, experiment_id: str, access_groups: list[str], when: datetime
    ) -> Experiment:
        """Replaces an experiment's access groups (its revision is not bumped: the allocation is
        unchanged).

        Raises:
            ExperimentNotFound: Unknown id.
        """
        item = ExperimentTable(experiment_id)
        try:
            item.update(
                actions=[
                    ExperimentTable.access_groups.set(access_groups),
                    ExperimentTable.updated_at.set(when),
                ],
                condition=ExperimentTable.experiment_id.exists(),
            )
        except UpdateError as exc:
            if _conditional_failed(exc):
                raise ExperimentNotFound(f"experiment {experiment_id} does not exist") from None
            raise
        return item.to_domain()

    def list_experiments(self, status: ExperimentStatus | None = None) -> list[Experiment]:
        """Experiments, newest first; with ``status`` only those (one index query)."""
        if status is None:
            items: Iterable[ExperimentTable] = ExperimentTable.scan()
        else:
            items = ExperimentTable.status_index.query(status.value)
        found = [item.to_domain() for item in items]
        return sorted(found, key=lambda e: e.created_at, reverse=True)

    def transition(
        self,
        experiment_id: str,
        allowed: Iterable[ExperimentStatus],
        target: ExperimentStatus,
        when: datetime,
        *,
        if_layer: LayerSlice | None = None,
        **changes: Any,
    ) -> Experiment:
        """Moves the experiment to ``target`` if its status is one of ``allowed`` (and, with
        ``if_layer``, its slice is still that one).

        Args:
            experiment_id: The experiment.
            allowed: Statuses the transition starts from.
            target: The new status.
            when: Time of the change.
            **changes: Other attributes to set (``variants`` as a tuple of variants).

        Raises:
            ExperimentNotFound: Unknown id.
            ExperimentStateConflict: The status is not one of ``allowed`` (someone else won).
        """
        allowed_values = [status.value for status in allowed]
        # A token written with the change: if the update commits but its response is lost,
        # botocore's retry fails the status condition, and the token tells us the change is ours.
        token = uuid.uuid4().hex
        actions = [
            ExperimentTable.status.set(target.value),
            ExperimentTable.updated_at.set(when),
            ExperimentTable.revision.add(1),
            ExperimentTable.transition_id.set(token),
            *self._change_actions(changes),
        ]
        item = ExperimentTable(experiment_id)
        condition = ExperimentTable.status.is_in(*allowed_values)
        if if_layer is not None:
            condition &= ExperimentTable.layer == layer_to_json(if_layer)
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if not _conditional_failed(exc):
                raise
            stored = self._item(experiment_id)
            if stored.transition_id == token:
                return stored.to_domain()
            current = stored.to_domain()
            if if_layer is not None and current.layer != if_layer:
                raise slice_changed(experiment_id) from None
            raise ExperimentStateConflict(
                f"experiment {experiment_id} is {current.status.value}; "
                f"cannot move to {target.value} (allowed from: {', '.join(allowed_values)})"
            ) from None
        return item.to_domain()

    def update_allocation(
        self, experiment_id: str, expected_revision: int, when: datetime, **changes: Any
    ) -> Experiment | None:
        """Changes weights (ramp step, bandit) of a running experiment at a known revision.

        Returns:
            The updated experiment, or ``None`` when the revision or status changed meanwhile
            (another monitor run or a transition won; nothing was written).
        """
        actions = [
            ExperimentTable.updated_at.set(when),
            ExperimentTable.revision.add(1),
            *self._change_actions(changes),
        ]
        condition = (ExperimentTable.revision == expected_revision) & (
            ExperimentTable.status == ExperimentStatus.RUNNING.value
        )
        item = ExperimentTable(experiment_id)
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return item.to_domain()

    @staticmethod
    def _change_actions(changes: dict[str, Any]) -> list[Any]:
        actions = []
        for name, value in changes.items():
            if name == "phase":
                # Appended atomically: concurrent changes each add their phase, in commit order.
                existing = ExperimentTable.phases | []
                actions.append(ExperimentTable.phases.set(existing.append([phase_to_json(value)])))
                continue
            if name == "variants":
                value = variants_to_json(value)
            elif name == "layer":
                value = layer_to_json(value)
            elif name == "rollback_details":
                value = json.dumps(value)
            attribute = getattr(ExperimentTable, name)
            actions.append(attribute.remove() if value is None else attribute.set(value))
        return actions

    def save_policy(self, policy: RollbackPolicy) -> None:
        """Stores (replaces) the rollback policy of an experiment."""
        RollbackPolicyTable(
            policy.experiment_id,
            error_rate_threshold=policy.error_rate_threshold,
            latency_degradation_threshold=policy.latency_degradation_threshold,
            min_requests_before_rollback=policy.min_requests_before_rollback,
            latency_percentile=policy.latency_percentile,
            enabled=1 if policy.enabled else 0,
            error_rate_tolerance=policy.error_rate_tolerance,
            latency_threshold_ms=policy.latency_threshold_ms,
            alpha=policy.alpha,
            tuning_sample_size=policy.tuning_sample_size,
            failure_limit=policy.failure_limit,
        ).save()

    def get_policy(self, experiment_id: str) -> RollbackPolicy | None:
        """The stored policy, or ``None`` (fields a policy stored before they existed get
        their defaults)."""
        try:
            item = RollbackPolicyTable.get(experiment_id, consistent_read=True)
        except DoesNotExist:
            return None
        default = RollbackPolicy(experiment_id)

        def number(value: Any, fallback: Any, kind: Any = float) -> Any:
            return fallback if value is None else kind(value)

        return RollbackPolicy(
            experiment_id=experiment_id,
            error_rate_threshold=number(item.error_rate_threshold, None),
            latency_degradation_threshold=float(item.latency_degradation_threshold),
            min_requests_before_rollback=int(item.min_requests_before_rollback),
            latency_percentile=item.latency_percentile,
            enabled=bool(item.enabled),
            error_rate_tolerance=number(item.error_rate_tolerance, default.error_rate_tolerance),
            latency_threshold_ms=number(item.latency_threshold_ms, None),
            alpha=number(item.alpha, default.alpha),
            tuning_sample_size=number(item.tuning_sample_size, default.tuning_sample_size, int),
            failure_limit=number(item.failure_limit, default.failure_limit, int),
        )


class CanaryCheckStore:
    """The latest canary check per experiment, recorded once per monitor tick."""

    def record(
        self,
        experiment_id: str,
        tick: str,
        outcome: str,
        reason: str,
        variants: list[dict[str, Any]],
        when: datetime,
    ) -> CanaryState:
        """Stores a check of ``tick`` and counts consecutive failures (one conditional update).

        A tick that was already recorded (a redelivered monitor message) or is older than the
        stored one changes nothing; the stored state is returned.
        """
        failed = outcome == "fail"
        table = CanaryStateTable
        actions: list[Action] = [
            table.tick.set(tick),
            table.outcome.set(outcome),
            table.reason.set(reason),
            table.checked_at.set(when),
            table.variants.set(json.dumps(variants)),
            table.checks.set((table.checks | 0) + 1),
            table.consecutive_failures.set((table.consecutive_failures | 0) + 1)
            if failed
            else table.consecutive_failures.set(0),
        ]
        item = CanaryStateTable(experiment_id)
        try:
            item.update(
                actions=actions, condition=table.tick.does_not_exist() | (table.tick < tick)
            )
        except UpdateError as exc:
            if not _conditional_failed(exc):
                raise
            return CanaryStateTable.get(experiment_id, consistent_read=True).to_domain()
        return item.to_domain()

    def get(self, experiment_id: str) -> CanaryState | None:
        """The latest recorded check, or ``None``."""
        try:
            return CanaryStateTable.get(experiment_id, consistent_read=True).to_domain()
        except DoesNotExist:
            return None


class MonitorQueue:
    """The queue the scheduled monitor fans running experiments out to."""

    def send(self, bodies: list[str]) -> int:
        """Sends message bodies in batches of 10; returns how many were sent.

        Raises:
            ServiceUnavailable: SQS refused some messages after the client's retries.
        """
        from chalicelib.core.config import get_settings

        sqs = aws.client("sqs")
        url = sqs.get_queue_url(QueueName=get_settings().experiment_monitor_queue)["QueueUrl"]
        for start in range(0, len(bodies), 10):
            entries = [
                {"Id": str(index), "MessageBody": body}
                for index, body in enumerate(bodies[start : start + 10])
            ]
            failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed") or []
            if failed:
                raise ServiceUnavailable(f"SQS refused {len(failed)} monitor messages")
        return len(bodies)


class AssignmentStore:
    """Persisted first assignments of users (bandit experiments keep users sticky with it)."""

    def get_or_assign(
        self, experiment_id: str, user_id: str, variant_id: str, when: datetime
    ) -> str:
        """Stores ``variant_id`` for the user unless one is stored; returns the stored one."""
        key = f"{experiment_id}#{user_id}"
        item = AssignmentTable(key, variant_id=variant_id, assigned_at=when)
        try:
            item.save(condition=AssignmentTable.pk.does_not_exist())
            return variant_id
        except PutError as exc:
            if not _conditional_failed(exc):
                raise
        return AssignmentTable.get(key, consistent_read=True).variant_id


# ---- layers and holdouts (issue 19) --------------------------------------------------------


class LayerTable(Model):
    """One item per layer; ``slices`` is JSON ``{experiment_id: [start, end]}``."""

    Meta = meta("EXPERIMENT_LAYERS_TABLE", "experiment-layers")

    layer_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    owner = UnicodeAttribute(default="")
    access_groups = string_list()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    slices = UnicodeAttribute(default="{}")
    revision = NumberAttribute(default=0)

    def to_domain(self) -> Layer:
        """The stored layer as a domain object."""
        taken = json.loads(self.slices or "{}")
        return Layer(
            layer_id=self.layer_id,
            name=self.name,
            description=self.description or "",
            owner=self.owner or "",
            access_groups=tuple(self.access_groups or ()),
            created_at=self.created_at,
            updated_at=self.updated_at,
            slices={key: _slice_from_json(self.layer_id, found) for key, found in taken.items()},
            revision=int(self.revision or 0),
        )


class HoldoutTable(Model):
    """One item per holdout (immutable once created; deleted by an admin)."""

    Meta = meta("EXPERIMENT_HOLDOUTS_TABLE", "experiment-holdouts")

    holdout_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    share = UnicodeAttribute()
    layer_ids = string_list()
    owner = UnicodeAttribute(default="")
    created_at = UTCDateTimeAttribute()

    def to_domain(self) -> Holdout:
        """The stored holdout as a domain object."""
        return Holdout(
            holdout_id=self.holdout_id,
            name=self.name,
            share=Decimal(self.share),
            layer_ids=tuple(self.layer_ids or ()),
            owner=self.owner or "",
            created_at=self.created_at,
        )


def _slices_json(slices: dict[str, LayerSlice]) -> str:
    """``{experiment_id: [start, end]}``, with the ``free_at`` ISO time third once released."""
    return json.dumps(
        {
            key: [s.start, s.end] + ([] if s.free_at is None else [s.free_at.isoformat()])
            for key, s in sorted(slices.items())
        }
    )


def _slice_from_json(layer_id: str, found: list[Any]) -> LayerSlice:
    free_at = datetime.fromisoformat(found[2]) if len(found) > 2 else None
    return LayerSlice(layer_id, int(found[0]), int(found[1]), free_at)


class LayerRepository:
    """Reads and writes layers and holdouts with conditional writes.

    A layer's slices live on the layer's own item, so reserving a slice is one conditional
    update on the layer's ``revision``: of two experiments reaching for overlapping slices at
    once, exactly one writes; the other re-reads, sees the overlap and is refused.
    """

    def create_layer(self, layer: Layer) -> None:
        """Stores a new layer (its id is new)."""
        item = LayerTable(
            layer.layer_id,
            name=layer.name,
            description=layer.description,
            owner=layer.owner,
            access_groups=list(layer.access_groups),
            created_at=layer.created_at,
            updated_at=layer.updated_at,
            slices="{}",
            revision=0,
        )
        _save_new(item, LayerTable.layer_id, f"layer {layer.layer_id}")

    def get_layer(self, layer_id: str) -> Layer:
        """The layer (strongly consistent read).

        Raises:
            LayerNotFound: Unknown id.
        """
        try:
            return LayerTable.get(layer_id, consistent_read=True).to_domain()
        except DoesNotExist:
            raise LayerNotFound(f"layer {layer_id} does not exist") from None

    def list_layers(self) -> list[Layer]:
        """Every layer, newest first."""
        found = [item.to_domain() for item in LayerTable.scan()]
        return sorted(found, key=lambda layer: layer.created_at, reverse=True)

    def update_layer(self, layer: Layer, when: datetime, **changes: Any) -> Layer | None:
        """Writes ``changes`` (``slices``, ``access_groups``) if the layer's revision is still
        ``layer.revision``; ``None`` when another change came first."""
        actions: list[Action] = [
            LayerTable.updated_at.set(when),
            LayerTable.revision.set(layer.revision + 1),
        ]
        if "slices" in changes:
            actions.append(LayerTable.slices.set(_slices_json(changes["slices"])))
        if "access_groups" in changes:
            actions.append(LayerTable.access_groups.set(list(changes["access_groups"])))
        item = LayerTable(layer.layer_id)
        condition = LayerTable.layer_id.exists() & (LayerTable.revision == layer.revision)
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return item.to_domain()

    def delete_layer(self, layer: Layer) -> bool:
        """Deletes the layer if it is unchanged since ``layer`` was read (so no slice was taken
        meanwhile); ``False`` when it changed."""
        condition = LayerTable.revision == layer.revision
        try:
            LayerTable(layer.layer_id).delete(condition=condition)
        except DeleteError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def create_holdout(self, holdout: Holdout) -> None:
        """Stores a new holdout.

        Raises:
            Conflict: The id is taken.
        """
        item = HoldoutTable(
            holdout.holdout_id,
            name=holdout.name,
            share=str(holdout.share),
            layer_ids=list(holdout.layer_ids),
            owner=holdout.owner,
            created_at=holdout.created_at,
        )
        _save_new(item, HoldoutTable.holdout_id, f"holdout {holdout.holdout_id}")

    def get_holdout(self, holdout_id: str) -> Holdout:
        """The holdout.

        Raises:
            HoldoutNotFound: Unknown id.
        """
        try:
            return HoldoutTable.get(holdout_id, consistent_read=True).to_domain()
        except DoesNotExist:
            raise HoldoutNotFound(f"holdout {holdout_id} does not exist") from None

    def list_holdouts(self) -> list[Holdout]:
        """Every holdout, oldest first (the order experiments carry them in)."""
        found = [item.to_domain() for item in HoldoutTable.scan(consistent_read=True)]
        return sorted(found, key=lambda holdout: (holdout.created_at, holdout.holdout_id))

    def delete_holdout(self, holdout_id: str) -> None:
        """Deletes a holdout (404 when unknown)."""
        try:
            HoldoutTable(holdout_id).delete(condition=HoldoutTable.holdout_id.exists())
        except DeleteError as exc:
            if _conditional_failed(exc):
                raise HoldoutNotFound(f"holdout {holdout_id} does not exist") from None
            raise


class ExplanationGuardrailTable(Model):
    """An experiment's explanation guardrails and their latest evaluation (JSON text).

    ``status`` is the evaluation's (absent until the monitor submits its jobs): every change is
    conditional on ``revision`` (and on ``status``), so a redeclaration makes the evaluation of
    the old one unrecordable, and two monitors submit or decide one evaluation once.
    """

    Meta = meta("EXPLANATION_GUARDRAILS_TABLE", "explanation-guardrails")

    experiment_id = UnicodeAttribute(hash_key=True)
    revision = UnicodeAttribute()
    declaration = UnicodeAttribute()
    status = UnicodeAttribute(null=True)
    evaluation = UnicodeAttribute(null=True)
    round = NumberAttribute(null=True)
    updated_at = UTCDateTimeAttribute()


class ExplanationGuardrailStore:
    """The one item per experiment of :class:`ExplanationGuardrailTable`."""

    def put(self, experiment_id: str, revision: str, declaration: dict[str, Any],
            when: datetime) -> None:  # fmt: skip
        """Stores a declaration (a new revision; any earlier evaluation is dropped)."""
        ExplanationGuardrailTable(
            experiment_id, revision=revision, declaration=json.dumps(declaration),
            updated_at=when,
        ).save()  # fmt: skip

    def get(self, experiment_id: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """``(declaration, evaluation or None)``, or ``None`` when none is declared."""
        try:
            item = ExplanationGuardrailTable.get(experiment_id, consistent_read=True)
        except DoesNotExist:
            return None
        evaluation = json.loads(item.evaluation) if item.evaluation else None
        return json.loads(item.declaration), evaluation

    def delete(self, experiment_id: str) -> bool:
        """Removes the declaration; ``False`` if there was none."""
        table = ExplanationGuardrailTable
        try:
            table(experiment_id).delete(condition=table.experiment_id.exists())
        except DeleteError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def start(self, experiment_id: str, revision: str, evaluation: dict[str, Any],
              when: datetime) -> bool:  # fmt: skip
        """Records the first evaluation of ``revision`` (or of its next ``round``, once the
        previous round was decided); ``False`` if another monitor recorded it first or the
        declaration changed."""
        table = ExplanationGuardrailTable
        number = int(evaluation.get("round") or 0)
        condition = (table.revision == revision) & (
            table.status.does_not_exist()
            if number == 0
            else (table.round == number - 1) & table.status.is_in("passed", "failed", "error")
        )
        return self._update(experiment_id, evaluation, when, condition)

    def finish(self, experiment_id: str, revision: str, evaluation: dict[str, Any],
               when: datetime) -> bool:  # fmt: skip
        """Replaces the pending evaluation of ``revision`` by its decision; ``False`` if it
        was decided already or the declaration changed."""
        table = ExplanationGuardrailTable
        number = int(evaluation.get("round") or 0)
        condition = (
            (table.revision == revision) & (table.status == "pending") & (table.round == number)
        )
        return self._update(experiment_id, evaluation, when, condition)

    def _update(self, experiment_id: str, evaluation: dict[str, Any], when: datetime,
                condition: Any) -> bool:  # fmt: skip
        table = ExplanationGuardrailTable
        actions: list[Action] = [
            table.status.set(evaluation["status"]),
            table.evaluation.set(json.dumps(evaluation)),
            table.round.set(int(evaluation.get("round") or 0)),
            table.updated_at.set(when),
        ]
        try:
            table(experiment_id).update(actions=actions, condition=condition)
        except UpdateError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True


class ExplanationInputTable(Model):
    """Inputs posted for an experiment's explanation guardrails: the ones whose key (a hash
    priority, then the request id) is among the smallest ``MAX_POSTED_INPUTS``."""

    Meta = meta("EXPLANATION_INPUTS_TABLE", "explanation-inputs")

    experiment_id = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    row = UnicodeAttribute()


class ExplanationInputStore:
    """The bottom-k sample of posted inputs, one partition per experiment."""

    def keys(self, experiment_id: str, limit: int) -> list[str]:
        """The ``limit`` smallest keys held (ascending)."""
        found = ExplanationInputTable.query(
            experiment_id, limit=limit, scan_index_forward=True, attributes_to_get=["key"],
            consistent_read=True,
        )  # fmt: skip
        return [item.key for item in found]

    def rows(self, experiment_id: str, limit: int) -> list[dict[str, Any]]:
        """The rows of the ``limit`` smallest keys."""
        found = ExplanationInputTable.query(
            experiment_id, limit=limit, scan_index_forward=True, consistent_read=True
        )
        return [json.loads(item.row) for item in found]

    def add(self, experiment_id: str, rows: dict[str, str]) -> None:
        """Writes rows by key (a repeated key is overwritten with the same row)."""
        with ExplanationInputTable.batch_write() as batch:
            for key, row in rows.items():
                batch.save(ExplanationInputTable(experiment_id, key, row=row))

    def trim(self, experiment_id: str, keep: int) -> int:
        """Deletes every row past the ``keep`` smallest keys; returns how many."""
        kept = self.keys(experiment_id, keep)
        if len(kept) < keep:
            return 0
        table = ExplanationInputTable
        extra = list(table.query(experiment_id, table.key > kept[-1], attributes_to_get=["key"]))
        with table.batch_write() as batch:
            for item in extra:
                batch.delete(table(experiment_id, item.key))
        return len(extra)


# The DynamoDB tables this module declares (listed by chalicelib.domains).
TABLES = (
    ExperimentTable,
    RollbackPolicyTable,
    CanaryStateTable,
    AssignmentTable,
    *outcomes_repository.TABLES,
    LayerTable,
    HoldoutTable,
    ExplanationGuardrailTable,
    ExplanationInputTable,
)
