"""DynamoDB storage of experiments, rollback policies, sticky assignments and outcome counters.

This is the only module of the domain that talks to DynamoDB. Experiments change state only
through conditional updates on ``status`` (and ``revision`` for weight changes), so two
concurrent transitions cannot both succeed. Outcomes are written with ``TransactWriteItems``:
one conditional put per request id into a dedup table plus one ``ADD`` update per
(variant, shard) carrying the chunk's sufficient statistics and latency histogram, so a batch of
N outcomes costs about N / 98 write requests and an outcome is either stored and counted or
neither.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from pynamodb.attributes import (
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.abtesting import cuped, sketch
from chalicelib.abtesting.aggregate import PRECISION, custom_attribute, shift_of
from chalicelib.abtesting.errors import (
    ExperimentNotFound,
    ExperimentStateConflict,
    HoldoutNotFound,
    LayerNotFound,
)
from chalicelib.abtesting.models import (
    AllocationPhase,
    AnalysisMethod,
    AnalysisSettings,
    BanditConfig,
    BayesianPrior,
    CanaryState,
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
    Outcome,
    OutcomeReceipt,
    PhaseReason,
    RampSchedule,
    RollbackPolicy,
    SegmentSettings,
    TrafficAllocationStrategy,
)
from chalicelib.abtesting.segments import MISSING, OTHER, RESERVED
from chalicelib.core import aws
from chalicelib.core.errors import Conflict, ServiceUnavailable
from chalicelib.core.tables import meta, string_list

# Exact arithmetic for the sums a chunk adds (the default context rounds at 28 digits).
_EXACT = decimal.Context(prec=PRECISION)
MAX_TRANSACTION_ACTIONS = 100
METRIC_SHARDS = 16
# ADD clauses per UpdateExpression: DynamoDB allows 4 KB ("#a119 :v119, " is 13 bytes); moto,
# the local stack, parses an expression recursively and fails from about 200 clauses.
MAX_CLAUSES = 120
# Segment counter attributes are "<value><SEP><counter>"; a value never holds a control character.
SEGMENT_SEPARATOR = "\x1f"
REGISTRY_KEY = "values"
# Experiments whose kept segment values an instance remembers (then it forgets them all).
KNOWN_VALUES_CACHE = 10_000
DEDUP_TTL = timedelta(days=7)
WRITE_ATTEMPTS = 8
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "TransactionInProgressException",
        "TransactionConflictException",
    }
)


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


class OutcomeDedupTable(Model):
    """Request ids already counted per experiment; expire after ``DEDUP_TTL``."""

    Meta = meta("OUTCOME_DEDUP_TABLE", "outcome-dedup")

    pk = UnicodeAttribute(hash_key=True)
    variant_id = UnicodeAttribute()
    expires_at = TTLAttribute()


class MetricShardTable(Model):
    """Outcome counters per (experiment, variant, shard); histogram buckets are dynamic ``h*``."""

    Meta = meta("EXPERIMENT_METRICS_TABLE", "experiment-metrics")

    experiment_id = UnicodeAttribute(hash_key=True)
    shard_key = UnicodeAttribute(range_key=True)
    request_count = NumberAttribute(default=0)


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


def gates_to_item(experiment: Experiment) -> dict[str, Any]:
    """The layer slice, targeting and holdouts of an experiment as stored (JSON text)."""
    found = experiment.layer
    layer = None if found is None else json.dumps([found.layer_id, found.start, found.end])
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
        **changes: Any,
    ) -> Experiment:
        """Moves the experiment to ``target`` if its status is one of ``allowed``.

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
        try:
            item.update(actions=actions, condition=ExperimentTable.status.is_in(*allowed_values))
        except UpdateError as exc:
            if not _conditional_failed(exc):
                raise
            stored = self._item(experiment_id)
            if stored.transition_id == token:
                return stored.to_domain()
            current = stored.to_domain()
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


@dataclass
class _VariantDelta:
    """Increments a chunk adds to one (variant, shard) counter item."""

    counts: dict[str, int] = field(default_factory=dict)
    sums: dict[str, Decimal] = field(default_factory=dict)

    def add_count(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    def add_sum(self, name: str, amount: Decimal) -> None:
        self.sums[name] = _EXACT.add(self.sums.get(name, Decimal(0)), amount)

    def observe(self, outcome: Outcome, cuped_metric: str | None = None) -> None:
        latency = self.observe_core(outcome)
        self.add_count(sketch.attribute_name(sketch.bucket_index(float(latency))))
        for name, raw in outcome.custom_metrics.items():
            # Shifted sums (see aggregate): d = value - shift keeps squares small and exact.
            value = Decimal(str(round(float(raw), 6)))
            shift = shift_of(value)
            delta = _EXACT.subtract(value, shift)
            self.add_count(custom_attribute(name, "n", shift))
            self.add_sum(custom_attribute(name, "s", shift), delta)
            self.add_sum(custom_attribute(name, "ss", shift), _EXACT.multiply(delta, delta))
        if outcome.covariate is not None and cuped_metric is not None:
            response = cuped.response_value(outcome, cuped_metric)
            if response is not None:
                for name, amount in cuped.outcome_sums(outcome.covariate, response).items():
                    self.add_sum(name, amount)
        for name, amount in outcome.declared.items():  # declared ratio and quantile metrics
            self.add_sum(name, amount)

    def observe_core(self, outcome: Outcome, prefix: str = "") -> Decimal:
        """Adds the counts, conversions and latency moments (names prefixed); returns the
        latency as stored."""
        self.add_count(prefix + "request_count")
        self.add_count(prefix + ("success_count" if outcome.success else "error_count"))
        if outcome.converted is not None:
            self.add_count(prefix + "conversion_trials")
            if outcome.converted:
                self.add_count(prefix + "converted_count")
        latency = Decimal(str(round(float(outcome.latency_ms), 3)))
        self.add_sum(prefix + "latency_sum", latency)
        self.add_sum(prefix + "latency_sumsq", _EXACT.multiply(latency, latency))
        return latency

    def observe_segment(self, outcome: Outcome, value: str, metric: str | None) -> None:
        """Adds an outcome to segment ``value`` of a dimension item: the core counters and,
        when ``metric`` is a custom metric it carries, that metric's moments. Its shift is
        the value's power of ten (:func:`segment_shift`), so a segment keeps at most a few
        dozen shift groups whatever the values."""
        prefix = value + SEGMENT_SEPARATOR
        self.observe_core(outcome, prefix)
        if metric is None or metric not in outcome.custom_metrics:
            return
        number = Decimal(str(round(float(outcome.custom_metrics[metric]), 6)))
        shift = segment_shift(number)
        delta = _EXACT.subtract(number, shift)
        self.add_count(prefix + custom_attribute(metric, "n", shift))
        self.add_sum(prefix + custom_attribute(metric, "s", shift), delta)
        self.add_sum(prefix + custom_attribute(metric, "ss", shift), _EXACT.multiply(delta, delta))

    def names(self) -> set[str]:
        """The attributes this delta adds to."""
        return {*self.counts, *self.sums}

    def update_expression(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        """One ``ADD`` expression over every attribute (see :meth:`update_parts`)."""
        return _add_expression(list({**self.counts, **self.sums}.items()))

    def update_parts(self) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        """``ADD`` expressions of at most :data:`MAX_CLAUSES` attributes each, so every
        ``UpdateExpression`` stays under DynamoDB's 4 KB; the parts go to distinct shards."""
        merged = list({**self.counts, **self.sums}.items())
        return [
            _add_expression(merged[start : start + MAX_CLAUSES])
            for start in range(0, len(merged), MAX_CLAUSES)
        ]


def _add_expression(items: list[tuple[str, Any]]) -> tuple[str, dict[str, str], dict[str, Any]]:
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    clauses = []
    for position, (name, amount) in enumerate(items):
        names[f"#a{position}"] = name
        # Plain notation: moto reads "1E-8" (how Decimal prints 0.0001 squared) as an integer.
        text = str(amount) if isinstance(amount, int) else format(amount, "f")
        values[f":v{position}"] = {"N": text}
        clauses.append(f"#a{position} :v{position}")
    return "ADD " + ", ".join(clauses), names, values


def segment_shift(value: Decimal) -> Decimal:
    """The shift of a segment's custom metric value: ``±10^e`` with ``10^e <= |value|``."""
    if value == 0:
        return Decimal(0)
    return Decimal(1).scaleb(value.adjusted()).copy_sign(value)


def shard_for(experiment_id: str, first_request_id: str) -> int:
    """The counter shard a chunk goes to (spreads load; any shard is correct)."""
    digest = hashlib.blake2b(f"{experiment_id}:{first_request_id}".encode(), digest_size=2)
    return int.from_bytes(digest.digest(), "big") % METRIC_SHARDS


def counter_key(outcome: Outcome) -> tuple[str, int]:
    """The (variant, allocation phase) whose counters an outcome adds to."""
    return outcome.variant_id, outcome.phase or 0


def shard_key(variant_id: str, phase: int, shard: int) -> str:
    """Range key of a counter item (phase 0 keeps the original ``<variant>#<shard>`` form)."""
    if phase:
        return f"{variant_id}#p{phase}#{shard:02d}"
    return f"{variant_id}#{shard:02d}"


def parse_shard_key(key: str) -> tuple[str, int]:
    """``(variant_id, phase)`` of a counter item's range key."""
    parts = key.split("#")
    if len(parts) == 3 and parts[1].startswith("p") and parts[1][1:].isdigit():
        return parts[0], int(parts[1][1:])
    return parts[0], 0


@dataclass(frozen=True)
class SegmentPlan:
    """What a batch counts per segment besides the variant totals.

    Attributes:
        dimensions: The experiment's declared dimensions.
        metric: A custom primary metric whose moments each segment keeps (``None``: only the
            counts, conversions and latency moments).
    """

    dimensions: tuple[Dimension, ...] = ()
    metric: str | None = None


def segment_partition(experiment_id: str) -> str:
    """Hash key of an experiment's segment counters and kept values (apart from the totals,
    so the analysis query never reads them)."""
    return f"{experiment_id}#segments"


def segment_shard_key(variant_id: str, phase: int, dimension: str, shard: int) -> str:
    """Range key of a segment counter item: one per (variant, phase, dimension, shard)."""
    return f"{variant_id}#p{phase}#{dimension}#{shard:02d}"


def parse_segment_key(key: str) -> tuple[str, int, str]:
    """``(variant_id, phase, dimension)`` of a segment counter item's range key."""
    variant_id, phase, dimension, _ = key.rsplit("#", 3)
    return variant_id, int(phase[1:]), dimension


def _outcome_names(
    outcome: Outcome, plan: SegmentPlan, cuped_metric: str | None = None
) -> dict[tuple[str, ...], set[str]]:
    """The counter attributes an outcome adds to, per update key (unfolded values: folding only
    merges values, so this bounds the chunk's updates)."""
    variant_id, phase = counter_key(outcome)
    main = _VariantDelta()
    main.observe(outcome, cuped_metric)
    found: dict[tuple[str, ...], set[str]] = {(variant_id, str(phase)): main.names()}
    for dimension in plan.dimensions:
        delta = _VariantDelta()
        value = outcome.attributes.get(dimension.name, MISSING)
        delta.observe_segment(outcome, value, plan.metric)
        found[(variant_id, str(phase), dimension.name)] = delta.names()
    return found


def _fits(actions: int, names: dict[tuple[str, ...], set[str]],
          added: dict[tuple[str, ...], set[str]]) -> bool:  # fmt: skip
    """Whether ``actions`` puts plus the updates of ``names`` grown by ``added`` fit one
    transaction, with no key split over more than :data:`METRIC_SHARDS` parts."""
    for key in names.keys() | added.keys():
        old = names.get(key, set())
        count = len(old) + len(added.get(key, set()) - old)
        parts = -(-count // MAX_CLAUSES)
        if parts > METRIC_SHARDS:
            return False
        actions += parts
    return actions <= MAX_TRANSACTION_ACTIONS


def chunk_outcomes(
    outcomes: list[Outcome], plan: SegmentPlan | None = None, cuped_metric: str | None = None
) -> Iterator[list[Outcome]]:
    """Splits outcomes so each chunk fits one transaction: a put per outcome, the update parts
    of each (variant, phase) and of each (variant, phase, dimension), and one update of the kept
    segment values when dimensions are declared."""
    plan = plan or SegmentPlan()
    extra = 1 if plan.dimensions else 0
    chunk: list[Outcome] = []
    names: dict[tuple[str, ...], set[str]] = {}
    for outcome in outcomes:
        added = _outcome_names(outcome, plan, cuped_metric)
        if chunk and not _fits(len(chunk) + 1 + extra, names, added):
            yield chunk
            chunk, names = [], {}
        chunk.append(outcome)
        for key, found in added.items():
            names.setdefault(key, set()).update(found)
    if chunk:
        yield chunk


class OutcomeStore:
    """Idempotent, sharded outcome counters (low-level DynamoDB client for dynamic attributes).

    Args:
        client: A boto3 DynamoDB client (default: the shared one).
        sleep: Backoff sleep (tests pass a no-op).
    """

    def __init__(self, client: Any = None, sleep: Any = time.sleep) -> None:
        self._client = client
        self._sleep = sleep
        # Kept segment values per experiment and dimension, as last read or written here.
        self._known: dict[str, dict[str, set[str]]] = {}

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    def record(
        self,
        experiment_id: str,
        outcomes: list[Outcome],
        now: datetime,
        cuped_metric: str | None = None,
        plan: SegmentPlan | None = None,
    ) -> OutcomeReceipt:
        """Counts each request id once; returns how many were new and how many were repeats.

        With ``cuped_metric``, outcomes that carry a covariate also add the CUPED sums of that
        metric (in the same counter update). With a ``plan`` declaring dimensions, each outcome
        also counts in one segment per dimension (its value, ``(missing)``, or ``(other)``
        beyond the dimension's kept values), in the same transaction.
        """
        plan = plan or SegmentPlan()
        unique: dict[str, Outcome] = {}
        for outcome in outcomes:
            unique.setdefault(outcome.request_id, outcome)
        duplicates = len(outcomes) - len(unique)
        accepted = 0
        expires = int((now + DEDUP_TTL).timestamp())
        for chunk in chunk_outcomes(list(unique.values()), plan, cuped_metric):
            stored, repeated = self._write_chunk(experiment_id, chunk, expires, cuped_metric, plan)
            accepted += stored
            duplicates += repeated
        return OutcomeReceipt(accepted=accepted, duplicates=duplicates)

    def _actions(
        self,
        experiment_id: str,
        chunk: list[Outcome],
        expires: int,
        cuped_metric: str | None = None,
        segments: tuple[SegmentPlan, list[dict[str, str]], dict[str, list[str]]] | None = None,
    ) -> list[Any]:
        dedup_table = OutcomeDedupTable.Meta.table_name
        metrics_table = MetricShardTable.Meta.table_name
        actions: list[Any] = [
            {
                "Put": {
                    "TableName": dedup_table,
                    "Item": {
                        "pk": {"S": f"{experiment_id}#{outcome.request_id}"},
                        "variant_id": {"S": outcome.variant_id},
                        "expires_at": {"N": str(expires)},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for outcome in chunk
        ]
        deltas: dict[tuple[str, int], _VariantDelta] = {}
        for outcome in chunk:
            deltas.setdefault(counter_key(outcome), _VariantDelta()).observe(outcome, cuped_metric)
        shard = shard_for(experiment_id, chunk[0].request_id)
        if segments is not None and segments[2]:
            actions.append(self._registry_action(experiment_id, segments[0], segments[2]))
        for (variant_id, phase), delta in deltas.items():
            for offset, part in enumerate(delta.update_parts()):
                key = shard_key(variant_id, phase, (shard + offset) % METRIC_SHARDS)
                actions.append(_update(metrics_table, experiment_id, key, part))
        if segments is not None:
            actions.extend(self._segment_actions(experiment_id, chunk, segments, shard))
        return actions

    @staticmethod
    def _segment_actions(
        experiment_id: str,
        chunk: list[Outcome],
        segments: tuple[SegmentPlan, list[dict[str, str]], dict[str, list[str]]],
        shard: int,
    ) -> list[Any]:
        plan, values, _ = segments
        deltas: dict[tuple[str, int, str], _VariantDelta] = {}
        for outcome, found in zip(chunk, values, strict=True):
            variant_id, phase = counter_key(outcome)
            for dimension in plan.dimensions:
                key = (variant_id, phase, dimension.name)
                deltas.setdefault(key, _VariantDelta()).observe_segment(
                    outcome, found[dimension.name], plan.metric
                )
        table = MetricShardTable.Meta.table_name
        partition = segment_partition(experiment_id)
        actions: list[Any] = []
        for (variant_id, phase, dimension_name), delta in deltas.items():
            for offset, part in enumerate(delta.update_parts()):
                shard_key = segment_shard_key(
                    variant_id, phase, dimension_name, (shard + offset) % METRIC_SHARDS
                )
                actions.append(_update(table, partition, shard_key, part))
        return actions

    @staticmethod
    def _registry_action(
        experiment_id: str, plan: SegmentPlan, new: dict[str, list[str]]
    ) -> dict[str, Any]:
        """Adds newly kept values to each dimension's set, on condition that no set then holds
        more than its ``max_values`` (fails when another writer filled it meanwhile)."""
        limits = {d.name: d.max_values for d in plan.dimensions}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        adds, conditions = [], []
        for index, (dimension, found) in enumerate(sorted(new.items())):
            names[f"#d{index}"] = f"v:{dimension}"
            values[f":n{index}"] = {"SS": found}
            values[f":m{index}"] = {"N": str(limits[dimension] - len(found))}
            adds.append(f"#d{index} :n{index}")
            conditions.append(f"(attribute_not_exists(#d{index}) OR size(#d{index}) <= :m{index})")
        return {
            "Update": {
                "TableName": MetricShardTable.Meta.table_name,
                "Key": {
                    "experiment_id": {"S": segment_partition(experiment_id)},
                    "shard_key": {"S": REGISTRY_KEY},
                },
                "UpdateExpression": "ADD " + ", ".join(adds),
                "ConditionExpression": " AND ".join(conditions),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _fold(
        self, experiment_id: str, chunk: list[Outcome], plan: SegmentPlan, fresh: bool
    ) -> tuple[list[dict[str, str]], dict[str, list[str]]] | None:
        """Each outcome's value per dimension after folding, and the values to keep newly.

        Returns ``None`` when a dimension would overflow by this instance's memory of the kept
        values and that memory is not ``fresh`` (the caller reads the stored set and asks again).
        """
        if fresh:
            self._known[experiment_id] = self._read_registry(experiment_id)
        known = self._known.get(experiment_id, {})
        values = [
            {d.name: o.attributes.get(d.name, MISSING) for d in plan.dimensions} for o in chunk
        ]
        new: dict[str, list[str]] = {}
        for dimension in plan.dimensions:
            have = known.get(dimension.name, set())
            unseen = [v[dimension.name] for v in values]
            candidates = [v for v in dict.fromkeys(unseen) if v not in have and v not in RESERVED]
            room = max(dimension.max_values - len(have), 0)
            if len(candidates) > room and not fresh:
                return None
            kept = set(candidates[:room])
            for found in values:
                value = found[dimension.name]
                if value not in have and value not in RESERVED and value not in kept:
                    found[dimension.name] = OTHER
            if kept:
                new[dimension.name] = [v for v in candidates if v in kept]
        return values, new

    def _read_registry(self, experiment_id: str) -> dict[str, set[str]]:
        """The stored kept values of each dimension (one consistent read)."""
        item = self.client.get_item(
            TableName=MetricShardTable.Meta.table_name,
            Key={
                "experiment_id": {"S": segment_partition(experiment_id)},
                "shard_key": {"S": REGISTRY_KEY},
            },
            ConsistentRead=True,
        ).get("Item", {})
        return {
            name[2:]: set(value.get("SS", []))
            for name, value in item.items()
            if name.startswith("v:")
        }

    def _remember(self, experiment_id: str, new: dict[str, list[str]]) -> None:
        if len(self._known) >= KNOWN_VALUES_CACHE and experiment_id not in self._known:
            self._known.clear()
        known = self._known.setdefault(experiment_id, {})
        for dimension, values in new.items():
            known.setdefault(dimension, set()).update(values)

    def _segments(
        self, experiment_id: str, pending: list[Outcome], plan: SegmentPlan | None, fresh: bool
    ) -> tuple[tuple[SegmentPlan, list[dict[str, str]], dict[str, list[str]]] | None, bool]:
        """The folded segment values of ``pending`` (``None`` without dimensions) and whether
        the stored kept values had to be read."""
        if plan is None or not plan.dimensions:
            return None, fresh
        folded = self._fold(experiment_id, pending, plan, fresh)
        if folded is None:
            fresh = True
            folded = self._fold(experiment_id, pending, plan, fresh)
            assert folded is not None  # a fresh fold never defers
        return (plan, *folded), fresh

    def _write_chunk(
        self,
        experiment_id: str,
        chunk: list[Outcome],
        expires: int,
        cuped_metric: str | None = None,
        plan: SegmentPlan | None = None,
    ) -> tuple[int, int]:
        """Writes one chunk; drops request ids already counted and retries the rest (after
        reading the kept segment values again when another writer changed them)."""
        from botocore.exceptions import ClientError

        pending, repeated = list(chunk), 0
        fresh = False
        for attempt in range(WRITE_ATTEMPTS):
            segments, fresh = self._segments(experiment_id, pending, plan, fresh)
            try:
                self.client.transact_write_items(
                    TransactItems=self._actions(
                        experiment_id, pending, expires, cuped_metric, segments
                    )
                )
                if segments is not None:
                    self._remember(experiment_id, segments[2])
                return len(pending), repeated
            except ClientError as exc:
                seen = self._already_counted(exc, pending)
                if seen is None:
                    raise
                fresh = segments is not None and _refused_at(exc, len(pending))
                if seen:
                    repeated += len(seen)
                    pending = [o for o in pending if o.request_id not in seen]
                    if not pending:
                        return 0, repeated
                    continue
                if fresh:
                    continue
                self._sleep(min(0.05 * 2**attempt, 1.0) * random.uniform(0.5, 1.0))
        raise ServiceUnavailable("outcome counters are too contended; retry the same request ids")

    @staticmethod
    def _already_counted(exc: Any, pending: list[Outcome]) -> set[str] | None:
        """Request ids whose dedup put failed (already counted); empty set means retry all.

        Returns ``None`` for errors that are not retryable.
        """
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code in RETRYABLE_CODES:
            return set()
        if code != "TransactionCanceledException":
            return None
        reasons = exc.response.get("CancellationReasons") or []
        seen = {
            pending[index].request_id
            for index, reason in enumerate(reasons[: len(pending)])
            if (reason or {}).get("Code") == "ConditionalCheckFailed"
        }
        return seen

    def read(self, experiment_id: str) -> dict[str, dict[str, Any]]:
        """Every counter shard of the experiment merged per variant (all phases).

        Returns:
            ``{variant_id: {"sums": {...}, "histogram": {index: n}}}``.
        """
        merged: dict[str, dict[str, Any]] = {}
        for variants in self.read_phases(experiment_id).values():
            for variant_id, raw in variants.items():
                target = merged.setdefault(variant_id, {"sums": {}, "histogram": {}})
                for name, value in raw["sums"].items():
                    target["sums"][name] = target["sums"].get(name, Decimal(0)) + value
                for index, value in raw["histogram"].items():
                    target["histogram"][index] = target["histogram"].get(index, 0) + value
        return merged

    def read_phases(self, experiment_id: str) -> dict[int, dict[str, dict[str, Any]]]:
        """Every counter shard of the experiment merged per allocation phase and variant (one
        query, paginated).

        Returns:
            ``{phase: {variant_id: {"sums": {...}, "histogram": {index: n}}}}``.
        """
        merged: dict[int, dict[str, dict[str, Any]]] = {}
        paginator = self.client.get_paginator("query")
        pages = paginator.paginate(
            TableName=MetricShardTable.Meta.table_name,
            KeyConditionExpression="experiment_id = :e",
            ExpressionAttributeValues={":e": {"S": experiment_id}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                variant_id, phase = parse_shard_key(item["shard_key"]["S"])
                variants = merged.setdefault(phase, {})
                target = variants.setdefault(variant_id, {"sums": {}, "histogram": {}})
                _merge_item(target, item)
        return merged

    def read_segments(
        self, experiment_id: str
    ) -> dict[str, dict[str, dict[int, dict[str, dict[str, Any]]]]]:
        """Every segment counter of the experiment merged per dimension, value, allocation
        phase and variant (one query of the segment partition, paginated).

        Returns:
            ``{dimension: {value: {phase: {variant_id: {"sums": {...}, "histogram": {}}}}}}``.
        """
        merged: dict[str, dict[str, dict[int, dict[str, dict[str, Any]]]]] = {}
        pages = self.client.get_paginator("query").paginate(
            TableName=MetricShardTable.Meta.table_name,
            KeyConditionExpression="experiment_id = :e",
            ExpressionAttributeValues={":e": {"S": segment_partition(experiment_id)}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                key = item["shard_key"]["S"]
                if key == REGISTRY_KEY:
                    continue
                variant_id, phase, dimension = parse_segment_key(key)
                values = merged.setdefault(dimension, {})
                for name, raw in item.items():
                    value, separator, counter = name.partition(SEGMENT_SEPARATOR)
                    if not separator or "N" not in raw:
                        continue
                    phases = values.setdefault(value, {}).setdefault(phase, {})
                    target = phases.setdefault(variant_id, {"sums": {}, "histogram": {}})
                    sums = target["sums"]
                    sums[counter] = sums.get(counter, Decimal(0)) + Decimal(raw["N"])
        return merged


def _refused_at(exc: Any, index: int) -> bool:
    """Whether the transaction's action at ``index`` (the kept-values update) failed its
    condition."""
    reasons = exc.response.get("CancellationReasons") or []
    return len(reasons) > index and (reasons[index] or {}).get("Code") == "ConditionalCheckFailed"


def _update(table: str, partition: str, key: str, part: tuple[str, Any, Any]) -> dict[str, Any]:
    expression, names, values = part
    return {
        "Update": {
            "TableName": table,
            "Key": {"experiment_id": {"S": partition}, "shard_key": {"S": key}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def _merge_item(target: dict[str, Any], item: dict[str, Any]) -> None:
    for name, raw in item.items():
        if "N" not in raw:
            continue
        value = Decimal(raw["N"])
        index = sketch.parse_attribute(name)
        if index is not None:
            target["histogram"][index] = target["histogram"].get(index, 0) + int(value)
        else:
            target["sums"][name] = target["sums"].get(name, Decimal(0)) + value


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
            slices={key: LayerSlice(self.layer_id, *bounds) for key, bounds in taken.items()},
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
    return json.dumps({key: [s.start, s.end] for key, s in sorted(slices.items())})


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
        """Stores a new holdout."""
        HoldoutTable(
            holdout.holdout_id,
            name=holdout.name,
            share=str(holdout.share),
            layer_ids=list(holdout.layer_ids),
            owner=holdout.owner,
            created_at=holdout.created_at,
        ).save(condition=HoldoutTable.holdout_id.does_not_exist())

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


# The DynamoDB tables this module declares (listed by chalicelib.domains).
TABLES = (
    ExperimentTable,
    RollbackPolicyTable,
    CanaryStateTable,
    AssignmentTable,
    OutcomeDedupTable,
    MetricShardTable,
    LayerTable,
    HoldoutTable,
)
