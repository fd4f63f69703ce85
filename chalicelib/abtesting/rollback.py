"""Automatic rollback of canaries and the experiment monitor run by the scheduled function.

Policies live in DynamoDB (the Lambda is stateless); an experiment without a stored policy is
checked with the default policy. A rollback is the conditional transition running → rolled_back,
so two monitors checking at once roll back once and publish one event. The monitor also advances
ramps and reweights bandits; every step is conditional, so running it often, twice at once or
after a crash is harmless, and a run with nothing due costs one index query plus one metrics query
per running experiment.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from chalicelib.abtesting.engine import ABTestingEngine, get_ab_engine
from chalicelib.abtesting.models import (
    Experiment,
    ExperimentMetrics,
    ExperimentStatus,
    RollbackDecision,
    RollbackPolicy,
)
from chalicelib.core.errors import Conflict, UnprocessableEntity
from chalicelib.core.observability import logger
from chalicelib.core.singleton import lazy

PERCENTILES = {"p50": "latency_p50_ms", "p95": "latency_p95_ms", "p99": "latency_p99_ms"}


@dataclass
class MonitorReport:
    """What one monitor run did (logged by the scheduled handler).

    Attributes:
        checked: Running experiments examined.
        rolled_back: Experiments rolled back now.
        ramped: Experiments whose ramp advanced.
        reweighted: Bandits whose weights changed.
        errors: Experiments whose check failed (retried on the next run).
    """

    checked: int = 0
    rolled_back: list[str] = field(default_factory=list)
    ramped: list[str] = field(default_factory=list)
    reweighted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "checked": self.checked,
            "rolled_back": self.rolled_back,
            "ramped": self.ramped,
            "reweighted": self.reweighted,
            "errors": self.errors,
        }


def _error_rule(
    variant_id: str, found: ExperimentMetrics, policy: RollbackPolicy
) -> RollbackDecision | None:
    rate = found.error_rate
    if rate is None or rate <= policy.error_rate_threshold:
        return None
    return RollbackDecision(
        variant_id=variant_id,
        metric="error_rate",
        observed=rate,
        threshold=policy.error_rate_threshold,
        reason=(
            f"variant {variant_id}: error_rate {rate:.4f} exceeds threshold "
            f"{policy.error_rate_threshold:.4f} ({found.error_count} errors in "
            f"{found.request_count} requests)"
        ),
    )


def _latency_rule(
    variant_id: str,
    found: ExperimentMetrics,
    control: ExperimentMetrics,
    policy: RollbackPolicy,
) -> RollbackDecision | None:
    attribute = PERCENTILES[policy.latency_percentile]
    treated, base = getattr(found, attribute), getattr(control, attribute)
    if treated is None or not base:
        return None
    change = (treated - base) / base
    if change <= policy.latency_degradation_threshold:
        return None
    return RollbackDecision(
        variant_id=variant_id,
        metric=f"latency_{policy.latency_percentile}_ms",
        observed=change,
        threshold=policy.latency_degradation_threshold,
        reason=(
            f"variant {variant_id}: latency {policy.latency_percentile} {treated:.1f} ms is "
            f"{change:.1%} above control ({base:.1f} ms); threshold "
            f"{policy.latency_degradation_threshold:.1%}"
        ),
    )


class AutoRollbackManager:
    """Checks rollback conditions, rolls back, and runs the experiment monitor.

    Args:
        engine: The experimentation engine (its repository, metrics and transitions).
    """

    def __init__(self, engine: ABTestingEngine | None = None) -> None:
        self.engine = engine or get_ab_engine()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def register_experiment(
        self,
        experiment_id: str,
        error_rate_threshold: float = 0.05,
        latency_degradation_threshold: float = 0.20,
        min_requests_before_rollback: int = 100,
        latency_percentile: str = "p95",
        enabled: bool = True,
    ) -> RollbackPolicy:
        """Stores the rollback policy of an experiment (replacing any earlier one).

        Raises:
            ExperimentNotFound: Unknown experiment.
            UnprocessableEntity: Thresholds out of range.
        """
        self.engine.get_experiment(experiment_id)
        if not 0 <= error_rate_threshold <= 1 or latency_degradation_threshold < 0:
            raise UnprocessableEntity("error_rate_threshold in [0, 1]; latency threshold >= 0")
        if min_requests_before_rollback < 1 or latency_percentile not in PERCENTILES:
            raise UnprocessableEntity("min_requests_before_rollback >= 1; percentile p50/p95/p99")
        policy = RollbackPolicy(
            experiment_id,
            error_rate_threshold,
            latency_degradation_threshold,
            min_requests_before_rollback,
            latency_percentile,
            enabled,
        )
        self.engine.repository.save_policy(policy)
        return policy

    def get_policy(self, experiment_id: str) -> RollbackPolicy:
        """The stored policy, or the default one."""
        return self.engine.repository.get_policy(experiment_id) or RollbackPolicy(experiment_id)

    def evaluate(self, experiment: Experiment) -> RollbackDecision | None:
        """The first rule a treatment breaks (error rate, then latency), or ``None``."""
        policy = self.get_policy(experiment.experiment_id)
        if not policy.enabled:
            return None
        metrics = self.engine.get_experiment_metrics(experiment.experiment_id)
        control = metrics[experiment.control.variant_id]
        for treatment in experiment.treatments:
            found = metrics[treatment.variant_id]
            if found.request_count < policy.min_requests_before_rollback:
                continue
            decision = _error_rule(treatment.variant_id, found, policy) or _latency_rule(
                treatment.variant_id, found, control, policy
            )
            if decision is not None:
                return decision
        return None

    def check_rollback_conditions(self, experiment_id: str) -> str | None:
        """A reason naming metric, observed value and threshold, or ``None`` when healthy."""
        experiment = self.engine.get_experiment(experiment_id)
        if experiment.status is not ExperimentStatus.RUNNING:
            return None
        decision = self.evaluate(experiment)
        return decision.reason if decision else None

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

    def run_once(self) -> MonitorReport:
        """One monitor pass over every running experiment: rollback, ramp, bandit."""
        report = MonitorReport()
        for experiment in self.engine.list_experiments(ExperimentStatus.RUNNING):
            report.checked += 1
            try:
                self._monitor(experiment, report)
            except Exception:  # noqa: BLE001 - one bad experiment must not stop the others
                logger.exception(
                    "monitor failed", extra={"experiment_id": experiment.experiment_id}
                )
                report.errors.append(experiment.experiment_id)
        return report

    def _monitor(self, experiment: Experiment, report: MonitorReport) -> None:
        experiment_id = experiment.experiment_id
        decision = self.evaluate(experiment)
        if decision is not None:
            details = {
                "variant_id": decision.variant_id,
                "metric": decision.metric,
                "observed": decision.observed,
                "threshold": decision.threshold,
            }
            if self.execute_rollback(experiment_id, decision.reason, details):
                report.rolled_back.append(experiment_id)
            return
        if experiment.ramp is not None and self.engine.advance_ramp(experiment_id):
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


@lazy
def get_rollback_manager() -> AutoRollbackManager:
    """The process-wide rollback manager."""
    return AutoRollbackManager()
