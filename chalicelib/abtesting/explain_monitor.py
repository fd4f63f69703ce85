"""The experiment monitor's explanation guardrails: declare, evaluate on ticks, decide.

Each monitor tick, for a running experiment with declared guardrails
(:mod:`chalicelib.abtesting.explain_guardrails`), :meth:`ExplanationGuardrailMonitor.check`
moves one evaluation per declaration along, never waiting for an explanation:

1. No evaluation of the current declaration yet: read a seeded uniform sample of
   ``sample_size`` rows of the declared dataset version (dataversion facade) or, with the
   ``posted_inputs`` source, the experiment's bottom-k sample of posted inputs (nothing happens
   until it holds ``sample_size`` rows: the ramp is held, ``waiting``), submit one global SHAP
   attribution job per arm on those same rows (explainability facade) and record the evaluation
   as ``pending`` (conditionally: two monitors at once record one).
2. ``pending``: read the jobs. Any still queued or running: nothing changes (decided on a later
   tick). Any failed: ``error`` with the job's message. All done: every guardrail is checked on
   every treatment against the control and the evaluation becomes ``passed`` or ``failed``
   (conditionally, so one monitor decides and publishes ``ExplanationGuardrailsEvaluated``).
3. The verdict: the ramp steps only after ``passed`` (pending, error and failed all hold it);
   ``failed`` with ``action: rollback`` rolls the experiment back with the failed guardrails as
   the reason (a conditional transition, tried on every tick until it is not running).

A new declaration (a new revision) starts over at 1. A declaration is evaluated once unless it
sets ``reevaluate_minutes``: that long after each decision a new round starts at 1 (the sample
of posted inputs may have changed; a dataset version's seed is the same, so its rows are too),
and while it is pending the monitor keeps acting on the previous round's decision, so a passing
ramp is not held by its own re-evaluation and a held one steps again once a round passes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.abtesting.explain_guardrails import (
    DEFAULT_SAMPLE,
    ExplanationEvaluation,
    ExplanationGuardrails,
    check_reevaluation,
    check_source,
    evaluate,
    parse_guardrails,
    top_features,
)
from chalicelib.abtesting.explain_inputs import PostedInputs
from chalicelib.abtesting.models import Experiment, ExperimentStatus
from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import Conflict, SynapseError
from chalicelib.core.observability import logger

if TYPE_CHECKING:
    from chalicelib.abtesting.ports import ExplanationGuardrailRecords

EVENT = "ExplanationGuardrailsEvaluated"


class AttributionPort(Protocol):
    """Submits and reads global attribution jobs (the explainability facade)."""

    def submit(self, model_id: str, model_version: int, inputs: list[dict[str, Any]],
               seed: int) -> str: ...  # fmt: skip

    def job(self, job_id: str) -> Any: ...


class FacadeAttributions:
    """:class:`AttributionPort` through the explainability facade (as the system)."""

    def submit(self, model_id: str, model_version: int, inputs: list[dict[str, Any]],
               seed: int) -> str:  # fmt: skip
        """Submits one attribution job; returns its id."""
        from chalicelib.explainability.facade import submit_attribution_as_system

        return submit_attribution_as_system(model_id, model_version, inputs, seed)

    def job(self, job_id: str) -> Any:
        """The job's status and attribution."""
        from chalicelib.explainability.facade import attribution_job_as_system

        return attribution_job_as_system(job_id)


def sample_rows_as_system(version_id: str, rows: int, seed: int) -> list[dict[str, Any]]:
    """A seeded uniform sample of a dataset version's records (the dataversion facade)."""
    from chalicelib.dataversion.facade import sample_records_as_system

    return list(sample_records_as_system(version_id, rows, seed).records)


def feature_names_as_system(model_id: str, version: int) -> list[str]:
    """A registered model version's feature names (the registry facade)."""
    from chalicelib.registry.facade import as_system

    return list(as_system().get_version(model_id, version).feature_names)


@dataclass(frozen=True)
class Verdict:
    """What the explanation guardrails ask of the monitor this tick.

    Attributes:
        hold: The ramp must not step.
        rollback_reason: Roll back with this reason (``None``: do not).
        details: Stored with the rollback.
        status: The evaluation's status (``None``: nothing declared).
    """

    hold: bool = False
    rollback_reason: str | None = None
    details: dict[str, Any] | None = None
    status: str | None = None


def _value(raw: Any) -> Any:
    """A CSV cell as a number when it reads as one (JSON-lines values are kept)."""
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def _same(raw: Any) -> Any:
    """A posted value as posted."""
    return raw


class ExplanationGuardrailMonitor:
    """Declares and evaluates explanation guardrails.

    Args:
        store: The guardrail items (default: DynamoDB's ``ExplanationGuardrailStore``; tests
            pass :class:`~chalicelib.abtesting.memory.InMemoryExplanationGuardrailStore`).
        attributions: Attribution jobs (default: the explainability facade).
        sample_rows: ``(version_id, rows, seed) -> records`` (default: dataversion facade).
        feature_names: ``(model_id, version) -> names`` (default: the registry facade).
        event_bus: Receives ``ExplanationGuardrailsEvaluated`` (default: the shared bus).
        clock: Time source.
        posted: The posted-inputs samples (default: over ``ExplanationInputStore``).
    """

    def __init__(
        self,
        store: ExplanationGuardrailRecords | None = None,
        attributions: AttributionPort | None = None,
        sample_rows: Callable[[str, int, int], list[dict[str, Any]]] | None = None,
        feature_names: Callable[[str, int], list[str]] | None = None,
        event_bus: Any = None,
        clock: Clock | None = None,
        posted: PostedInputs | None = None,
    ) -> None:
        if store is None:
            from chalicelib.abtesting.repository import ExplanationGuardrailStore

            store = ExplanationGuardrailStore()
        if event_bus is None:
            from chalicelib.core.events import get_event_bus

            event_bus = get_event_bus()
        self.store: ExplanationGuardrailRecords = store
        self.attributions = attributions or FacadeAttributions()
        self.sample_rows = sample_rows or sample_rows_as_system
        self.feature_names = feature_names or feature_names_as_system
        self.event_bus = event_bus
        self.clock = clock or SystemClock()
        self._posted = posted
        self._feature_cache: dict[tuple[str, int], tuple[str, ...]] = {}

    @property
    def posted(self) -> PostedInputs:
        """The posted-inputs samples (created on first use)."""
        if self._posted is None:
            self._posted = PostedInputs()
        return self._posted

    def features(self, experiment: Experiment) -> tuple[str, ...]:
        """Every feature of the experiment's models, in arm order (model versions never change,
        so each is read once per process)."""
        names: dict[str, None] = {}
        for variant in experiment.variants:
            key = (variant.model_id, variant.model_version)
            if key not in self._feature_cache:
                self._feature_cache[key] = tuple(self.feature_names(*key))
            names.update(dict.fromkeys(self._feature_cache[key]))
        return tuple(names)

    def post_inputs(self, experiment: Experiment, inputs: list[tuple[str, Any]]) -> Any:
        """Offers served inputs to the experiment's posted-inputs sample; each row must hold
        every feature of its models (see :meth:`PostedInputs.post`)."""
        return self.posted.post(experiment.experiment_id, inputs, self.features(experiment))

    # ---- declaring ---------------------------------------------------------------------------

    def declare(
        self,
        experiment: Experiment,
        guardrails: list[dict[str, Any]],
        dataset_version_id: str | None,
        action: str = "hold",
        sample_size: int = DEFAULT_SAMPLE,
        seed: int = 0,
        declared_by: str = "",
        source: str = "dataset_version",
        reevaluate_minutes: int | None = None,
    ) -> ExplanationGuardrails:
        """Stores the experiment's explanation guardrails (replacing earlier ones, whose
        evaluation is dropped: the next tick evaluates the new ones).

        The caller's rights on the models and the dataset version are checked before (the
        abtesting facade); here the declaration is checked against the models' features.

        Raises:
            UnprocessableEntity: Bad guardrails, action, sample size or source; a feature a
                treatment's model does not have.
            Conflict: The experiment is concluded or rolled back.
        """
        if experiment.status in (ExperimentStatus.CONCLUDED, ExperimentStatus.ROLLED_BACK):
            raise Conflict(
                f"experiment {experiment.experiment_id} is {experiment.status.value}: "
                "its explanation guardrails can no longer change"
            )
        features = {
            t.variant_id: self.feature_names(t.model_id, t.model_version)
            for t in experiment.treatments
        }
        check_source(source, dataset_version_id)
        check_reevaluation(reevaluate_minutes)
        parsed = parse_guardrails(guardrails, action, sample_size, features)
        declaration = ExplanationGuardrails(
            experiment.experiment_id, parsed, action, dataset_version_id or "", sample_size,
            seed, uuid.uuid4().hex, self.clock.now(), declared_by, source, reevaluate_minutes,
        )  # fmt: skip
        self.store.put(
            experiment.experiment_id, declaration.revision, declaration.as_dict(),
            declaration.declared_at,
        )  # fmt: skip
        return declaration

    def get(
        self, experiment_id: str
    ) -> tuple[ExplanationGuardrails, ExplanationEvaluation | None] | None:
        """The declaration and its latest evaluation (``None`` before the first tick), or
        ``None`` when nothing is declared."""
        found = self.store.get(experiment_id)
        if found is None:
            return None
        declaration, evaluation = found
        return (
            ExplanationGuardrails.from_dict(declaration),
            ExplanationEvaluation.from_dict(evaluation) if evaluation else None,
        )

    def remove(self, experiment_id: str) -> bool:
        """Drops the declaration (the ramp is no longer held by it); ``False`` if none."""
        return bool(self.store.delete(experiment_id))

    # ---- the monitor -------------------------------------------------------------------------

    def check(self, experiment: Experiment, tick: str) -> Verdict:
        """One monitor tick's step for ``experiment`` (see the module's docstring); it never
        waits for a job."""
        found = self.get(experiment.experiment_id)
        if found is None:
            return Verdict()
        declaration, evaluation = found
        if evaluation is None:
            evaluation = self._start(experiment, declaration, tick)
            if evaluation is None:
                return Verdict(hold=True, status="waiting")
        elif evaluation.status == "pending":
            evaluation = self._collect(experiment, declaration, evaluation)
        elif self._due(declaration, evaluation):
            evaluation = self._start(experiment, declaration, tick, evaluation) or evaluation
        return _verdict(declaration, evaluation)

    def _due(self, declaration: ExplanationGuardrails, evaluation: ExplanationEvaluation) -> bool:
        """Whether a decided evaluation should be repeated now."""
        minutes = declaration.reevaluate_minutes
        if minutes is None or evaluation.finished_at is None:
            return False
        return self.clock.now() >= evaluation.finished_at + timedelta(minutes=minutes)

    def _start(
        self,
        experiment: Experiment,
        declaration: ExplanationGuardrails,
        tick: str,
        previous: ExplanationEvaluation | None = None,
    ) -> ExplanationEvaluation | None:
        now = self.clock.now()
        rounds: dict[str, Any] = (
            {"round": previous.round + 1, "previous": previous.status} if previous else {}
        )
        try:
            records = self._rows(experiment, declaration)
            if records is None:
                return None  # too few posted inputs yet: decided on a later tick
            jobs, rows = self._submit(experiment, declaration, records)
            evaluation = ExplanationEvaluation(declaration.revision, "pending", tick, now,
                                               jobs=jobs, sample_rows=rows, **rounds)  # fmt: skip
        except SynapseError as error:
            if error.status >= 500:
                raise
            evaluation = ExplanationEvaluation(
                declaration.revision, "error", tick, now, now,
                reason=f"explanation guardrails could not start: {error}", **rounds,
            )  # fmt: skip
        if self.store.start(experiment.experiment_id, declaration.revision,
                            evaluation.as_dict(), now):  # fmt: skip
            if evaluation.status == "error":
                self._publish(experiment, declaration, evaluation)
            return evaluation
        return self._latest(experiment.experiment_id, evaluation)

    def _rows(
        self, experiment: Experiment, declaration: ExplanationGuardrails
    ) -> list[dict[str, Any]] | None:
        """The rows to explain, or ``None`` while the posted inputs are fewer than asked."""
        if declaration.source == "posted_inputs":
            found = self.posted.sample(experiment.experiment_id, declaration.sample_size)
            return found if len(found) >= declaration.sample_size else None
        records = self.sample_rows(
            declaration.dataset_version_id, declaration.sample_size, declaration.seed
        )
        if not records:
            raise _no_rows(declaration.dataset_version_id)
        return records

    def _submit(
        self,
        experiment: Experiment,
        declaration: ExplanationGuardrails,
        records: list[dict[str, Any]],
    ) -> tuple[dict[str, str], int]:
        jobs = {}
        for variant in experiment.variants:
            names = self.feature_names(variant.model_id, variant.model_version)
            missing = [n for n in names if any(n not in record for record in records)]
            if missing:
                where = declaration.dataset_version_id or "the posted inputs"
                raise _missing_column(where, missing[0], variant)
            # Posted inputs keep the JSON types they were served with (a category "02139" stays
            # a string); a dataset version's CSV cells are parsed (see :func:`_value`).
            cell = _value if declaration.source == "dataset_version" else _same
            inputs = [{n: cell(record.get(n)) for n in names} for record in records]
            jobs[variant.variant_id] = self.attributions.submit(
                variant.model_id, variant.model_version, inputs, declaration.seed
            )
        return jobs, len(records)

    def _collect(
        self,
        experiment: Experiment,
        declaration: ExplanationGuardrails,
        evaluation: ExplanationEvaluation,
    ) -> ExplanationEvaluation:
        states = {variant: self.attributions.job(job) for variant, job in evaluation.jobs.items()}
        if not all(state.finished for state in states.values()):
            return evaluation
        now = self.clock.now()
        failed = {v: s for v, s in states.items() if s.status != "succeeded"}
        if failed:
            variant, state = sorted(failed.items())[0]
            message = (state.error or {}).get("message", "the job failed")
            decided = replace(
                evaluation,
                status="error",
                finished_at=now,
                reason=f"the attribution of variant {variant} failed: {message}",
            )
        else:
            decided = self._decide(experiment, declaration, evaluation, states, now)
        if self.store.finish(experiment.experiment_id, declaration.revision,
                             decided.as_dict(), now):  # fmt: skip
            self._publish(experiment, declaration, decided)
            return decided
        return self._latest(experiment.experiment_id, decided)

    def _decide(
        self,
        experiment: Experiment,
        declaration: ExplanationGuardrails,
        evaluation: ExplanationEvaluation,
        states: dict[str, Any],
        now: datetime,
    ) -> ExplanationEvaluation:
        attributions = {v: dict(s.attribution or {}) for v, s in states.items()}
        control = attributions[experiment.control.variant_id]
        treatments = {t.variant_id: attributions[t.variant_id] for t in experiment.treatments}
        results = evaluate(declaration.guardrails, control, treatments)
        failed = [r for r in results if not r.passed]
        return replace(
            evaluation,
            status="failed" if failed else "passed",
            finished_at=now,
            attributions=attributions,
            top_features={v: top_features(a) for v, a in attributions.items()},
            results=results,
            reason="; ".join(r.reason for r in failed),
        )

    def _latest(self, experiment_id: str, fallback: ExplanationEvaluation) -> ExplanationEvaluation:
        """What another monitor recorded first (or, if the declaration went, ``fallback``)."""
        found = self.get(experiment_id)
        if found is None or found[1] is None or found[1].revision != fallback.revision:
            return fallback
        return found[1]

    def _publish(
        self,
        experiment: Experiment,
        declaration: ExplanationGuardrails,
        evaluation: ExplanationEvaluation,
    ) -> None:
        self.event_bus.publish(
            EVENT,
            {
                "experiment_id": experiment.experiment_id,
                "revision": declaration.revision,
                "status": evaluation.status,
                "action": declaration.action,
                "reason": evaluation.reason,
            },
        )
        if evaluation.status != "passed":
            logger.warning(
                "explanation guardrails did not pass",
                extra={"experiment_id": experiment.experiment_id, "status": evaluation.status},
            )


def _verdict(declaration: ExplanationGuardrails, evaluation: ExplanationEvaluation) -> Verdict:
    if evaluation.status == "pending" and evaluation.previous is not None:
        # A re-evaluation: keep acting on the last decision until this round is decided.
        return Verdict(hold=evaluation.previous != "passed", status="pending")
    if evaluation.status == "passed":
        return Verdict(status="passed")
    if evaluation.status == "failed" and declaration.action == "rollback":
        # The experiment's rollback reason and details are read by every reader of the
        # experiment, who may not read its models: they name no feature, rank or NDCG (the
        # evaluation, behind the models' rights, has them).
        failed = evaluation.failed_results
        variants = sorted({r.variant_id for r in failed})
        reason = (
            f"explanation guardrails failed: {len(failed)} of {len(evaluation.results)} "
            f"checks on variant(s) {', '.join(variants)}; the evaluation is at "
            f"/experiments/{declaration.experiment_id}/explanation-guardrails"
        )
        details = {
            "metric": "explanation_guardrails",
            "kind": "explanation_guardrail",
            "revision": declaration.revision,
            "dataset_version_id": declaration.dataset_version_id,
            "sample_rows": evaluation.sample_rows,
            "failed": [{"variant_id": r.variant_id, "type": r.guardrail["type"]} for r in failed],
        }
        return Verdict(True, reason, details, evaluation.status)
    return Verdict(hold=True, status=evaluation.status)


def _no_rows(version_id: str) -> SynapseError:
    from chalicelib.core.errors import UnprocessableEntity

    return UnprocessableEntity(f"dataset version '{version_id}' has no rows to explain")


def _missing_column(where: str, column: str, variant: Any) -> SynapseError:
    from chalicelib.core.errors import UnprocessableEntity

    posted = where == "the posted inputs"
    name = f"{where} have" if posted else f"dataset version '{where}' has"
    return UnprocessableEntity(
        f"{name} no column '{column}' (a feature of variant "
        f"{variant.variant_id}'s model {variant.model_id} version {variant.model_version})"
    )
