"""Automatic rollback by the canary judge, and the experiment monitor.

Every check compares each treatment with the control with always-valid tests (see
:mod:`~chalicelib.abtesting.judge`): pass, fail or inconclusive. The latest check and the run of
consecutive failures are stored per experiment, once per monitor tick (a redelivered tick is not
counted twice); ``failure_limit`` consecutive failed checks roll the experiment back (Argo
Rollouts' analysis semantics). A rollback is the conditional transition running → rolled_back,
so two monitors checking at once roll back once and publish one event; the stored reason names
the test, the numbers and the confidence bound.

Policies live in DynamoDB (the Lambda is stateless); an experiment without a stored policy is
checked with the default policy. The monitor also advances ramps and reweights bandits; every
step is conditional, so running it often, twice at once or after a crash is harmless.

Declared explanation guardrails (:mod:`~chalicelib.abtesting.explain_monitor`) are evaluated on
the same ticks after the canary check: a failed ``rollback`` guardrail rolls back, and a ramp
steps only once they passed.

Scale: the scheduled ``experiment_monitor`` only lists running experiment ids and fans them out
to the monitor queue in messages of ``MONITOR_BATCH`` ids (:meth:`AutoRollbackManager.fan_out`);
the SQS-triggered ``experiment_monitor_worker`` checks them (:meth:`check_experiments`), so one
tick's work is spread over as many invocations as the fleet needs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Unpack

from chalicelib.abtesting import metrics as declared
from chalicelib.abtesting.aggregate import merge_metrics
from chalicelib.abtesting.engine import ABTestingEngine, get_ab_engine
from chalicelib.abtesting.explain_guardrails import ExplanationGuardrails, GuardrailOptions
from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor
from chalicelib.abtesting.judge import (
    PERCENTILES,
    CanaryCheck,
    CheckOutcome,
    Criterion,
    judge_canary,
)
from chalicelib.abtesting.models import (
    CanaryState,
    Experiment,
    ExperimentMetrics,
    ExperimentStatus,
    RollbackDecision,
    RollbackPolicy,
)
from chalicelib.abtesting.ports import CanaryCheckRecords
from chalicelib.abtesting.repository import CanaryCheckStore, MonitorQueue
from chalicelib.abtesting.statistics import comparable_pairs
from chalicelib.core.errors import Conflict, UnprocessableEntity
from chalicelib.core.observability import logger
from chalicelib.core.singleton import lazy

MONITOR_BATCH = 25
"""Experiments per monitor message (each takes a few DynamoDB calls to check)."""


def tick_id(when: datetime) -> str:
    """The sortable id of a monitor tick (UTC, microseconds)."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class MonitorReport:
    """What one monitor run did (logged by the scheduled handler).

    Attributes:
        checked: Running experiments examined.
        rolled_back: Experiments rolled back now.
        ramped: Experiments whose ramp advanced.
        reweighted: Bandits whose weights changed.
        errors: Experiments whose check failed (retried on the next run).
        outcomes: Checks per outcome (pass, fail, inconclusive).
    """

    checked: int = 0
    rolled_back: list[str] = field(default_factory=list)
    ramped: list[str] = field(default_factory=list)
    reweighted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "checked": self.checked,
            "rolled_back": self.rolled_back,
            "ramped": self.ramped,
            "reweighted": self.reweighted,
            "errors": self.errors,
            "outcomes": self.outcomes,
        }


def _decision(check: CanaryCheck, policy: RollbackPolicy, failures: int) -> RollbackDecision:
    """The rollback a failed check leads to, with the details stored on the experiment."""
    first = check.failed[0]
    details: dict[str, object] = {
        "variant_id": check.variant_id,
        "metric": first.metric,
        "kind": first.kind,
        "test": first.test,
        "observed": first.observed,
        "reference": first.reference,
        "threshold": first.threshold,
        **{k: v for k, v in first.as_dict().items() if k in ("lower_bound", "upper_bound")},
        "alpha": policy.alpha,
        "consecutive_failures": failures,
        "failure_limit": policy.failure_limit,
        "control_requests": check.control_requests,
        "canary_requests": check.canary_requests,
        "criteria": [c.as_dict() for c in check.criteria],
    }
    reason = (
        f"{check.reason} ({failures} consecutive failed check{'s' if failures != 1 else ''}, "
        f"failure_limit {policy.failure_limit})"
    )
    return RollbackDecision(
        variant_id=check.variant_id,
        metric=first.metric,
        observed=first.observed if first.observed is not None else float("nan"),
        threshold=first.threshold,
        reason=reason,
        details=details,
    )


def _with_declared_guardrails(
    experiment: Experiment,
    phases: list[Any],
    checks: list[CanaryCheck],
    policy: RollbackPolicy,
) -> list[CanaryCheck]:
    """Adds a criterion per declared ``rollback`` guardrail: the always-valid test of the
    declared metric (Holm over those guardrails and the treatments, at the policy's alpha) fails
    when the treatment is significantly worse, else it is inconclusive."""
    specs = [s for s in experiment.analysis.metrics if s.role == "guardrail" and s.rollback]
    if not specs:
        return checks
    control_id = experiment.control.variant_id
    pairs = {}
    for treatment in experiment.treatments:
        found = comparable_pairs(phases, control_id, treatment.variant_id)
        if found:
            pairs[treatment.variant_id] = (
                merge_metrics(control_id, [c for c, _ in found]),
                merge_metrics(treatment.variant_id, [t for _, t in found]),
            )
    comparisons = declared.compare_all(specs, pairs, "holm", "sequential", policy.alpha,
                                       policy.tuning_sample_size)  # fmt: skip
    return [_add_criteria(check, comparisons, policy) for check in checks]


def _add_criteria(
    check: CanaryCheck, comparisons: list[Any], policy: RollbackPolicy
) -> CanaryCheck:
    enough = min(check.control_requests, check.canary_requests) >= (
        policy.min_requests_before_rollback
    )
    criteria = list(check.criteria)
    for found in comparisons:
        if found.variant_id != check.variant_id:
            continue
        failed = enough and found.direction == "worse"
        outcome = CheckOutcome.FAIL if failed else CheckOutcome.INCONCLUSIVE
        interval = found.interval or (float("-inf"), float("inf"))
        verdict = "fail" if failed else "inconclusive"
        criteria.append(
            Criterion(
                found.metric_name,
                "declared_guardrail",
                outcome,
                f"always-valid mSPRT on the declared {found.kind} metric, Holm over declared "
                "rollback guardrails",
                found.treatment.value if found.treatment else None,
                found.control.value if found.control else None,
                0.0,
                interval,
                f"variant {check.variant_id}: {verdict}: {found.metric_name} "
                f"{found.treatment.value if found.treatment else None} vs control "
                f"{found.control.value if found.control else None}, adjusted p "
                f"{found.adjusted_p_value:.3g}",
            )  # fmt: skip
        )
    failed = [c for c in criteria if c.outcome is CheckOutcome.FAIL]
    if failed and check.outcome is not CheckOutcome.FAIL:
        return replace(check, outcome=CheckOutcome.FAIL, criteria=tuple(criteria),
                       reason="; ".join(c.reason for c in failed))  # fmt: skip
    if check.outcome is CheckOutcome.PASS and len(criteria) > len(check.criteria):
        return replace(check, outcome=CheckOutcome.INCONCLUSIVE, criteria=tuple(criteria))
    return replace(check, criteria=tuple(criteria))


def _overall(checks: list[CanaryCheck]) -> str:
    outcomes = {c.outcome for c in checks}
    if CheckOutcome.FAIL in outcomes:
        return CheckOutcome.FAIL.value
    if outcomes == {CheckOutcome.PASS}:
        return CheckOutcome.PASS.value
    return CheckOutcome.INCONCLUSIVE.value


class AutoRollbackManager:
    """Judges canaries, rolls back, and runs the experiment monitor.

    Args:
        engine: The experimentation engine (its repository, metrics and transitions).
        checks: Store of the latest check per experiment (DynamoDB by default; tests pass
            :class:`~chalicelib.abtesting.memory.InMemoryCanaryCheckStore`).
        queue: The monitor's fan-out queue.
        explanations: The explanation guardrails (default: over the shared stores and the
            explainability facade, created on first use).
    """

    def __init__(
        self,
        engine: ABTestingEngine | None = None,
        checks: CanaryCheckRecords | None = None,
        queue: MonitorQueue | None = None,
        explanations: ExplanationGuardrailMonitor | None = None,
    ) -> None:
        self.engine = engine or get_ab_engine()
        self.checks = checks or CanaryCheckStore()
        self.queue = queue or MonitorQueue()
        self._explanations = explanations
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def register_experiment(
        self,
        experiment_id: str,
        error_rate_threshold: float | None = None,
        latency_degradation_threshold: float = 0.20,
        min_requests_before_rollback: int = 100,
        latency_percentile: str = "p95",
        enabled: bool = True,
        error_rate_tolerance: float = 0.20,
        latency_threshold_ms: float | None = None,
        alpha: float = 0.05,
        tuning_sample_size: int = 1000,
        failure_limit: int = 1,
    ) -> RollbackPolicy:
        """Stores the rollback policy of an experiment (replacing any earlier one).

        See :class:`~chalicelib.abtesting.models.RollbackPolicy` for the fields. Caps
        (``error_rate_threshold``, ``latency_threshold_ms``) are opt-in.

        Raises:
            ExperimentNotFound: Unknown experiment.
            UnprocessableEntity: Thresholds out of range.
        """
        self.engine.get_experiment(experiment_id)
        policy = RollbackPolicy(
            experiment_id, error_rate_threshold, latency_degradation_threshold,
            min_requests_before_rollback, latency_percentile, enabled, error_rate_tolerance,
            latency_threshold_ms, alpha, tuning_sample_size, failure_limit,
        )  # fmt: skip
        _validate(policy)
        self.engine.repository.save_policy(policy)
        return policy

    def get_policy(self, experiment_id: str) -> RollbackPolicy:
        """The stored policy, or the default one."""
        return self.engine.repository.get_policy(experiment_id) or RollbackPolicy(experiment_id)

    @property
    def explanations(self) -> ExplanationGuardrailMonitor:
        """The explanation guardrails the monitor evaluates (declare, read, remove)."""
        if self._explanations is None:
            self._explanations = ExplanationGuardrailMonitor(
                event_bus=self.engine.event_bus, clock=self.engine.clock
            )
        return self._explanations

    def register_explanation_guardrails(
        self,
        experiment_id: str,
        guardrails: list[dict[str, Any]],
        dataset_version_id: str | None,
        **options: Unpack[GuardrailOptions],
    ) -> ExplanationGuardrails:
        """Declares an experiment's explanation guardrails (as the system: the Python API
        trusts its caller; HTTP goes through the facade's access checks).

        See :mod:`chalicelib.abtesting.explain_guardrails` for the guardrails; ``options``
        (:class:`~chalicelib.abtesting.explain_guardrails.GuardrailOptions`: ``action="hold"``,
        ``sample_size=100``, ``seed=0``, ``source="dataset_version"``,
        ``reevaluate_minutes=None``) as :meth:`ExplanationGuardrailMonitor.declare` takes them;
        with ``source="posted_inputs"`` the rows are the inputs posted with
        ``self.explanations.post_inputs`` (:mod:`chalicelib.abtesting.explain_inputs`).

        Raises:
            ExperimentNotFound: Unknown experiment.
            UnprocessableEntity: Bad guardrails, action, sample size or an unknown feature.
            Conflict: The experiment is concluded or rolled back.
        """
        experiment = self.engine.get_experiment(experiment_id)
        return self.explanations.declare(experiment, guardrails, dataset_version_id, **options)

    def get_check(self, experiment_id: str) -> CanaryState | None:
        """The latest recorded check of an experiment (``None`` before the first)."""
        return self.checks.get(experiment_id)

    # ------------------------------------------------------------------ judging

    def judge(
        self, experiment: Experiment, policy: RollbackPolicy | None = None
    ) -> list[CanaryCheck]:
        """Each treatment's check against the control now (nothing stored)."""
        policy = policy or self.get_policy(experiment.experiment_id)
        _, _, phases = self.engine.experiment_data(experiment.experiment_id, experiment)
        control_id = experiment.control.variant_id
        checks = []
        for treatment in experiment.treatments:
            pairs = comparable_pairs(phases, control_id, treatment.variant_id)
            if not pairs:
                empty = ExperimentMetrics(control_id), ExperimentMetrics(treatment.variant_id)
                pairs = [empty]
            checks.append(judge_canary(treatment.variant_id, pairs, policy))
        return _with_declared_guardrails(experiment, phases, checks, policy)

    def evaluate(self, experiment: Experiment) -> RollbackDecision | None:
        """The rollback the current check calls for if its failures reached the limit, or
        ``None`` (a single check, as if it were the ``failure_limit``-th failure in a row)."""
        policy = self.get_policy(experiment.experiment_id)
        if not policy.enabled:
            return None
        for check in self.judge(experiment, policy):
            if check.outcome is CheckOutcome.FAIL:
                return _decision(check, policy, policy.failure_limit)
        return None

    def check_rollback_conditions(self, experiment_id: str) -> str | None:
        """A reason naming the test, numbers and bound of a failing check, or ``None``."""
        experiment = self.engine.get_experiment(experiment_id)
        if experiment.status is not ExperimentStatus.RUNNING:
            return None
        decision = self.evaluate(experiment)
        return decision.reason if decision else None

    def check(
        self, experiment: Experiment, tick: datetime
    ) -> tuple[CanaryState | None, RollbackDecision | None]:
        """One monitor check: judge, record it for ``tick``, and say whether to roll back.

        Returns:
            The recorded state (``None`` when the policy is disabled) and the rollback decision
            once ``failure_limit`` consecutive checks failed.
        """
        policy = self.get_policy(experiment.experiment_id)
        if not policy.enabled:
            return None, None
        checks = self.judge(experiment, policy)
        outcome = _overall(checks)
        chosen = [c for c in checks if c.outcome.value == outcome] or checks
        reason = "; ".join(c.reason for c in chosen) or "no treatments"
        state = self.checks.record(
            experiment.experiment_id, tick_id(tick), outcome, reason,
            [c.as_dict() for c in checks], self.engine.clock.now(),
        )  # fmt: skip
        failing = [c for c in checks if c.outcome is CheckOutcome.FAIL]
        if state.outcome != "fail" or not failing:
            return state, None
        if state.consecutive_failures < policy.failure_limit:
            return state, None
        return state, _decision(failing[0], policy, state.consecutive_failures)

    # ------------------------------------------------------------------ rolling back

    def execute_rollback(
        self,
        experiment_id: str,
        reason: str,
        details: dict[str, Any] | None = None,
        automatic: bool = True,
    ) -> bool:
        """Rolls back (all traffic to control, reason stored, one event).

        Returns:
            ``True`` if this call rolled it back; ``False`` if it was no longer running
            (another check or a person acted first).
        """
        try:
            self.engine.mark_rolled_back(experiment_id, reason, details or {}, automatic)
        except Conflict:
            return False
        logger.warning("experiment rolled back", extra={"experiment_id": experiment_id})
        return True

    def rollback_now(self, experiment_id: str, reason: str) -> Experiment:
        """A manual rollback (running or paused).

        Raises:
            ExperimentStateConflict: Not running or paused.
        """
        return self.engine.mark_rolled_back(
            experiment_id, reason, {"metric": "manual"}, automatic=False
        )

    # ------------------------------------------------------------------ the monitor

    def run_once(self, tick: datetime | None = None) -> MonitorReport:
        """One monitor pass over every running experiment in this process: judge and roll
        back, ramp, reweight (what :meth:`fan_out` spreads over the worker invocations)."""
        tick = tick or self.engine.clock.now()
        report = MonitorReport()
        for experiment in self.engine.list_experiments(ExperimentStatus.RUNNING):
            self._guarded(experiment, report, tick)
        return report

    def fan_out(self, tick: datetime | None = None) -> dict[str, Any]:
        """The scheduled tick: lists running experiment ids (one index query) and sends them to
        the monitor queue, ``MONITOR_BATCH`` per message.

        Returns:
            ``{"tick", "running", "messages"}``.
        """
        tick = tick or self.engine.clock.now()
        ids = self.engine.repository.running_ids()
        stamp = tick_id(tick)
        bodies = [
            json.dumps({"tick": stamp, "experiment_ids": ids[start : start + MONITOR_BATCH]})
            for start in range(0, len(ids), MONITOR_BATCH)
        ]
        sent = self.queue.send(bodies) if bodies else 0
        return {"tick": stamp, "running": len(ids), "messages": sent}

    def check_experiments(self, experiment_ids: Iterable[str], tick: datetime) -> MonitorReport:
        """What a monitor message asks: the experiments still running are checked (judge and
        roll back, ramp, reweight); each failure is logged and left to the next tick."""
        report = MonitorReport()
        for experiment_id in experiment_ids:
            try:
                experiment = self.engine.get_experiment(experiment_id)
            except Exception:  # noqa: BLE001 - a vanished or unreadable one must not stop the rest
                logger.exception("monitor read failed", extra={"experiment_id": experiment_id})
                report.errors.append(experiment_id)
                continue
            if experiment.status is ExperimentStatus.RUNNING:
                self._guarded(experiment, report, tick)
        return report

    def _guarded(self, experiment: Experiment, report: MonitorReport, tick: datetime) -> None:
        report.checked += 1
        try:
            self._monitor(experiment, report, tick)
        except Exception:  # noqa: BLE001 - one bad experiment must not stop the others
            logger.exception("monitor failed", extra={"experiment_id": experiment.experiment_id})
            report.errors.append(experiment.experiment_id)

    def _monitor(self, experiment: Experiment, report: MonitorReport, tick: datetime) -> None:
        experiment_id = experiment.experiment_id
        state, decision = self.check(experiment, tick)
        if state is not None:
            report.outcomes[state.outcome] = report.outcomes.get(state.outcome, 0) + 1
        if decision is not None:
            if self.execute_rollback(experiment_id, decision.reason, decision.details):
                report.rolled_back.append(experiment_id)
            return
        verdict = self.explanations.check(experiment, tick_id(tick))
        if verdict.rollback_reason is not None:
            if self.execute_rollback(experiment_id, verdict.rollback_reason, verdict.details):
                report.rolled_back.append(experiment_id)
            return
        held = verdict.hold
        if experiment.ramp is not None and not held and self.engine.advance_ramp(experiment_id):
            report.ramped.append(experiment_id)
        if experiment.bandit is not None and self.engine.update_bandit_weights(experiment_id):
            report.reweighted.append(experiment_id)

    def start_monitoring(self, interval: float = 60.0) -> None:
        """Runs :meth:`run_once` every ``interval`` seconds in a daemon thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), name="experiment-monitor", daemon=True
        )
        self._thread.start()

    def stop_monitoring(self, timeout: float = 10.0) -> None:
        """Stops the monitor thread and waits for the current pass to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def monitoring(self) -> bool:
        """Whether the monitor thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the loop survives storage hiccups
                logger.exception("monitor pass failed")
            self._stop.wait(interval)


def _validate(policy: RollbackPolicy) -> None:
    checks = (
        policy.error_rate_threshold is None or 0 <= policy.error_rate_threshold <= 1,
        policy.latency_degradation_threshold >= 0,
        0 <= policy.error_rate_tolerance <= 100,
        policy.latency_threshold_ms is None or policy.latency_threshold_ms > 0,
        policy.min_requests_before_rollback >= 1,
        policy.latency_percentile in PERCENTILES,
        0 < policy.alpha < 0.5,
        policy.tuning_sample_size >= 1,
        policy.failure_limit >= 1,
    )
    if not all(checks):
        raise UnprocessableEntity(
            "rollback policy: error_rate_threshold in [0, 1], latency tolerance >= 0, "
            "error_rate_tolerance in [0, 100], latency_threshold_ms > 0, "
            "min_requests_before_rollback >= 1, percentile p50/p95/p99, alpha in (0, 0.5), "
            "tuning_sample_size >= 1, failure_limit >= 1"
        )


@lazy
def get_rollback_manager() -> AutoRollbackManager:
    """The process-wide rollback manager."""
    return AutoRollbackManager()
