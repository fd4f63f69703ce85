"""The interfaces of the experiments' storage: experiments and rollback policies, layers and
holdouts (DynamoDB in :mod:`chalicelib.abtesting.repository`), outcome counters
(:mod:`chalicelib.abtesting.outcomes_repository`), canary checks, explanation guardrails and their
posted inputs (sticky assignments have theirs in
:class:`chalicelib.abtesting.routing.AssignmentStorePort`), each with an in-memory implementation
in :mod:`chalicelib.abtesting.memory` for tests of the experimentation logic that need no AWS.

Both implementations of each pass one contract suite (``tests/unit/test_repository_contracts.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from chalicelib.abtesting.models import (
    CanaryState,
    Experiment,
    ExperimentStatus,
    Holdout,
    Layer,
    LayerSlice,
    Outcome,
    OutcomeReceipt,
    RollbackPolicy,
)
from chalicelib.abtesting.outcomes_repository import SegmentPlan


class ExperimentRecords(Protocol):
    """Experiments (changed under conditions on their status or revision) and rollback
    policies."""

    def create(self, experiment: Experiment) -> None:
        """Stores a new experiment at revision 0.

        Raises:
            Conflict: The id is taken.
        """

    def get(self, experiment_id: str) -> Experiment:
        """The experiment.

        Raises:
            ExperimentNotFound: Unknown id.
        """

    def running_ids(self) -> list[str]:
        """Ids of every running experiment."""

    def set_access_groups(
        self, experiment_id: str, access_groups: list[str], when: datetime
    ) -> Experiment:
        """Replaces an experiment's access groups (the revision is unchanged).

        Raises:
            ExperimentNotFound: Unknown id.
        """

    def list_experiments(self, status: ExperimentStatus | None = None) -> list[Experiment]:
        """Experiments, newest first; with ``status`` only those."""

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
        """Moves the experiment to ``target`` if its status is one of ``allowed`` (bumping the
        revision; ``phase`` appends an allocation phase, other changes set fields) and, with
        ``if_layer``, if its layer slice is still that one.

        Raises:
            ExperimentNotFound: Unknown id.
            ExperimentStateConflict: The status is not one of ``allowed``, or the slice changed.
        """

    def update_allocation(
        self, experiment_id: str, expected_revision: int, when: datetime, **changes: Any
    ) -> Experiment | None:
        """Changes a running experiment at a known revision; ``None`` (nothing written) when
        the revision or the status changed meanwhile."""

    def save_policy(self, policy: RollbackPolicy) -> None:
        """Stores (replaces) the rollback policy of an experiment."""

    def get_policy(self, experiment_id: str) -> RollbackPolicy | None:
        """The stored policy, or ``None``."""


class LayerRecords(Protocol):
    """Layers (their slices changed under a condition on the layer's revision) and holdouts."""

    def create_layer(self, layer: Layer) -> None:
        """Stores a new layer at revision 0 with no slices.

        Raises:
            Conflict: The id is taken.
        """

    def get_layer(self, layer_id: str) -> Layer:
        """The layer.

        Raises:
            LayerNotFound: Unknown id.
        """

    def list_layers(self) -> list[Layer]:
        """Every layer, newest first."""

    def update_layer(self, layer: Layer, when: datetime, **changes: Any) -> Layer | None:
        """Writes ``slices``/``access_groups`` if the layer is still at ``layer.revision``;
        ``None`` when another change came first (or the layer is gone)."""

    def delete_layer(self, layer: Layer) -> bool:
        """Deletes the layer if it is still at ``layer.revision``; ``False`` otherwise."""

    def create_holdout(self, holdout: Holdout) -> None:
        """Stores a new holdout."""

    def get_holdout(self, holdout_id: str) -> Holdout:
        """The holdout.

        Raises:
            HoldoutNotFound: Unknown id.
        """

    def list_holdouts(self) -> list[Holdout]:
        """Every holdout, oldest first."""

    def delete_holdout(self, holdout_id: str) -> None:
        """Deletes a holdout.

        Raises:
            HoldoutNotFound: Unknown id.
        """


class OutcomeCounters(Protocol):
    """Outcomes counted once per request id into sufficient statistics per allocation phase and
    variant, and per declared segment."""

    def record(
        self,
        experiment_id: str,
        outcomes: list[Outcome],
        now: datetime,
        cuped_metric: str | None = None,
        plan: SegmentPlan | None = None,
    ) -> OutcomeReceipt:
        """Counts each request id once (with the CUPED sums of ``cuped_metric`` and one segment
        per dimension of ``plan``); returns how many were new and how many repeats."""

    def read(self, experiment_id: str) -> dict[str, dict[str, Any]]:
        """The counters merged per variant over every phase:
        ``{variant_id: {"sums": {...}, "histogram": {index: n}}}``."""

    def read_phases(self, experiment_id: str) -> dict[int, dict[str, dict[str, Any]]]:
        """The counters per allocation phase and variant."""

    def read_segments(
        self, experiment_id: str
    ) -> dict[str, dict[str, dict[int, dict[str, dict[str, Any]]]]]:
        """The segment counters per dimension, value, allocation phase and variant."""


class ExplanationInputRecords(Protocol):
    """The bottom-k sample of posted inputs: rows (JSON text) by key, read in key order."""

    def keys(self, experiment_id: str, limit: int) -> list[str]:
        """The ``limit`` smallest keys held (ascending)."""

    def rows(self, experiment_id: str, limit: int) -> list[dict[str, Any]]:
        """The rows of the ``limit`` smallest keys."""

    def add(self, experiment_id: str, rows: dict[str, str]) -> None:
        """Writes rows by key (a repeated key is overwritten)."""

    def trim(self, experiment_id: str, keep: int) -> int:
        """Deletes every row past the ``keep`` smallest keys; returns how many."""


class ExplanationGuardrailRecords(Protocol):
    """One declaration of explanation guardrails per experiment and its latest evaluation,
    recorded under conditions on the declaration's revision and the evaluation's status and
    round (so two monitors submit or decide one evaluation once)."""

    def put(
        self, experiment_id: str, revision: str, declaration: dict[str, Any], when: datetime
    ) -> None:
        """Stores a declaration (a new revision; any earlier evaluation is dropped)."""

    def get(self, experiment_id: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """``(declaration, evaluation or None)``, or ``None`` when none is declared."""

    def delete(self, experiment_id: str) -> bool:
        """Removes the declaration; ``False`` if there was none."""

    def start(
        self, experiment_id: str, revision: str, evaluation: dict[str, Any], when: datetime
    ) -> bool:
        """Records the first evaluation of ``revision`` (or its next ``round`` once the last
        was decided); ``False`` if another monitor did first or the declaration changed."""

    def finish(
        self, experiment_id: str, revision: str, evaluation: dict[str, Any], when: datetime
    ) -> bool:
        """Replaces the pending evaluation of ``revision`` by its decision; ``False`` if it was
        decided already or the declaration changed."""


class CanaryCheckRecords(Protocol):
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
        """Stores a check of ``tick`` (counting consecutive failures) unless that tick or a later
        one is recorded; returns the stored state."""

    def get(self, experiment_id: str) -> CanaryState | None:
        """The latest recorded check, or ``None``."""
