"""The experiments' storage in memory: :class:`~chalicelib.abtesting.ports.ExperimentRecords`,
:class:`~chalicelib.abtesting.routing.AssignmentStorePort`,
:class:`~chalicelib.abtesting.ports.LayerRecords`,
:class:`~chalicelib.abtesting.ports.OutcomeCounters`,
:class:`~chalicelib.abtesting.ports.CanaryCheckRecords`,
:class:`~chalicelib.abtesting.ports.ExplanationGuardrailRecords` and
:class:`~chalicelib.abtesting.ports.ExplanationInputRecords` for tests of the experimentation
logic without AWS (the pattern of Chalice's ``InMemoryTodoDB``). Same results and errors as the
DynamoDB repositories (one contract suite runs against both); each operation is atomic under one
lock, as a conditional write is in DynamoDB, and every object goes in and out as a copy, as it
would through a table."""

from __future__ import annotations

import copy
import dataclasses
import decimal
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from chalicelib.abtesting.aggregate import PRECISION
from chalicelib.abtesting.errors import (
    ExperimentNotFound,
    ExperimentStateConflict,
    HoldoutNotFound,
    LayerNotFound,
    slice_changed,
)
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
from chalicelib.abtesting.outcomes_repository import (
    SegmentPlan,
    fold_segment_values,
    merge_counters,
    merge_segment_counters,
    segment_deltas,
    variant_deltas,
)
from chalicelib.core.rows import Rows

T = TypeVar("T")


def _copy(value: T) -> T:
    return copy.deepcopy(value)


def _as_created(experiment: Experiment) -> Experiment:
    """What a stored new experiment reads back as: the fields a creation does not write are
    unset, the revision is 0 and the phases are numbered by position."""
    phases = tuple(
        dataclasses.replace(phase, index=index) for index, phase in enumerate(experiment.phases)
    )
    return dataclasses.replace(
        _copy(experiment),
        start_time=None,
        end_time=None,
        last_ramp_at=None,
        weights_updated_at=None,
        winning_variant_id=None,
        rollback_reason=None,
        rollback_details={},
        conclusion_reason=None,
        revision=0,
        phases=phases,
    )


def _changed(experiment: Experiment, when: datetime, changes: dict[str, Any]) -> Experiment:
    """``experiment`` with ``changes`` written and its revision bumped (``phase`` appends an
    allocation phase; ``None`` removes a field, which reads back as its default)."""
    fields: dict[str, Any] = {"updated_at": when, "revision": experiment.revision + 1}
    for name, value in _copy(changes).items():
        if name == "phase":
            phases = fields.get("phases", experiment.phases)
            fields["phases"] = (*phases, dataclasses.replace(value, index=len(phases)))
        elif name == "variants":
            fields[name] = tuple(value)
        elif value is None and name in ("rollback_details", "ramp_step"):
            fields[name] = {} if name == "rollback_details" else 0
        else:
            fields[name] = value
    return dataclasses.replace(experiment, **fields)


class InMemoryExperimentRepository:
    """Experiments and rollback policies in dicts."""

    def __init__(self) -> None:
        self._experiments: Rows[str, Experiment] = Rows(
            lambda key: ExperimentNotFound(f"experiment {key} does not exist")
        )
        self._policies: dict[str, RollbackPolicy] = {}
        self._lock = threading.Lock()

    def create(self, experiment: Experiment) -> None:
        """Stores a new experiment at revision 0.

        Raises:
            Conflict: The id is taken.
        """
        taken = f"experiment {experiment.experiment_id} already exists"
        with self._lock:
            self._experiments.add(experiment.experiment_id, _as_created(experiment), taken)

    def get(self, experiment_id: str) -> Experiment:
        """The experiment.

        Raises:
            ExperimentNotFound: Unknown id.
        """
        with self._lock:
            return self._experiments.read(experiment_id)

    def running_ids(self) -> list[str]:
        """Ids of every running experiment."""
        with self._lock:
            return [
                e.experiment_id
                for e in self._experiments.values()
                if e.status is ExperimentStatus.RUNNING
            ]

    def set_access_groups(
        self, experiment_id: str, access_groups: list[str], when: datetime
    ) -> Experiment:
        """Replaces an experiment's access groups (the revision is unchanged).

        Raises:
            ExperimentNotFound: Unknown id.
        """
        with self._lock:
            changed = dataclasses.replace(
                self._experiments.stored(experiment_id),
                access_groups=tuple(access_groups),
                updated_at=when,
            )
            self._experiments[experiment_id] = changed
            return _copy(changed)

    def list_experiments(self, status: ExperimentStatus | None = None) -> list[Experiment]:
        """Experiments, newest first; with ``status`` only those."""
        with self._lock:
            found = [e for e in self._experiments.values() if status in (None, e.status)]
            return _copy(sorted(found, key=lambda e: e.created_at, reverse=True))

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

        Raises:
            ExperimentNotFound: Unknown id.
            ExperimentStateConflict: The status is not one of ``allowed``, or the slice changed.
        """
        allowed_values = [status.value for status in allowed]
        with self._lock:
            current = self._experiments.stored(experiment_id)
            if if_layer is not None and current.layer != if_layer:
                raise slice_changed(experiment_id)
            if current.status.value not in allowed_values:
                raise ExperimentStateConflict(
                    f"experiment {experiment_id} is {current.status.value}; "
                    f"cannot move to {target.value} (allowed from: {', '.join(allowed_values)})"
                )
            changed = _changed(current, when, {"status": target, **changes})
            self._experiments[experiment_id] = changed
            return _copy(changed)

    def update_allocation(
        self, experiment_id: str, expected_revision: int, when: datetime, **changes: Any
    ) -> Experiment | None:
        """Changes a running experiment at a known revision; ``None`` (nothing written) when
        the revision or the status changed meanwhile."""
        with self._lock:
            current = self._experiments.get(experiment_id)
            if (
                current is None
                or current.revision != expected_revision
                or current.status is not ExperimentStatus.RUNNING
            ):
                return None
            changed = _changed(current, when, changes)
            self._experiments[experiment_id] = changed
            return _copy(changed)

    def save_policy(self, policy: RollbackPolicy) -> None:
        """Stores (replaces) the rollback policy of an experiment."""
        with self._lock:
            self._policies[policy.experiment_id] = _copy(policy)

    def get_policy(self, experiment_id: str) -> RollbackPolicy | None:
        """The stored policy, or ``None``."""
        with self._lock:
            return _copy(self._policies.get(experiment_id))


class InMemoryAssignmentStore:
    """Users' first assignments in a dict."""

    def __init__(self) -> None:
        self._assigned: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get_or_assign(
        self, experiment_id: str, user_id: str, variant_id: str, when: datetime
    ) -> str:
        """Stores ``variant_id`` for the user unless one is stored; returns the stored one."""
        with self._lock:
            return self._assigned.setdefault((experiment_id, user_id), variant_id)


class InMemoryLayerRepository:
    """Layers and holdouts in dicts."""

    def __init__(self) -> None:
        self._layers: Rows[str, Layer] = Rows(
            lambda key: LayerNotFound(f"layer {key} does not exist")
        )
        self._holdouts: Rows[str, Holdout] = Rows(
            lambda key: HoldoutNotFound(f"holdout {key} does not exist")
        )
        self._lock = threading.Lock()

    def create_layer(self, layer: Layer) -> None:
        """Stores a new layer at revision 0 with no slices.

        Raises:
            Conflict: The id is taken.
        """
        stored = dataclasses.replace(_copy(layer), slices={}, revision=0)
        with self._lock:
            self._layers.add(layer.layer_id, stored, f"layer {layer.layer_id} already exists")

    def get_layer(self, layer_id: str) -> Layer:
        """The layer.

        Raises:
            LayerNotFound: Unknown id.
        """
        with self._lock:
            return self._layers.read(layer_id)

    def list_layers(self) -> list[Layer]:
        """Every layer, newest first."""
        with self._lock:
            found = sorted(self._layers.values(), key=lambda layer: layer.created_at, reverse=True)
            return _copy(found)

    def update_layer(self, layer: Layer, when: datetime, **changes: Any) -> Layer | None:
        """Writes ``slices``/``access_groups`` if the layer is still at ``layer.revision``;
        ``None`` when another change came first (or the layer is gone)."""
        fields: dict[str, Any] = {"updated_at": when, "revision": layer.revision + 1}
        if "slices" in changes:
            fields["slices"] = _copy(dict(changes["slices"]))
        if "access_groups" in changes:
            fields["access_groups"] = tuple(changes["access_groups"])
        with self._lock:
            current = self._layers.get(layer.layer_id)
            if current is None or current.revision != layer.revision:
                return None
            changed = dataclasses.replace(current, **fields)
            self._layers[layer.layer_id] = changed
            return _copy(changed)

    def delete_layer(self, layer: Layer) -> bool:
        """Deletes the layer if it is still at ``layer.revision``; ``False`` otherwise."""
        with self._lock:
            current = self._layers.get(layer.layer_id)
            if current is None or current.revision != layer.revision:
                return False
            del self._layers[layer.layer_id]
            return True

    def create_holdout(self, holdout: Holdout) -> None:
        """Stores a new holdout.

        Raises:
            Conflict: The id is taken.
        """
        taken = f"holdout {holdout.holdout_id} already exists"
        with self._lock:
            self._holdouts.add(holdout.holdout_id, _copy(holdout), taken)

    def get_holdout(self, holdout_id: str) -> Holdout:
        """The holdout.

        Raises:
            HoldoutNotFound: Unknown id.
        """
        with self._lock:
            return self._holdouts.read(holdout_id)

    def list_holdouts(self) -> list[Holdout]:
        """Every holdout, oldest first."""
        with self._lock:
            found = sorted(self._holdouts.values(), key=lambda h: (h.created_at, h.holdout_id))
            return _copy(found)

    def delete_holdout(self, holdout_id: str) -> None:
        """Deletes a holdout.

        Raises:
            HoldoutNotFound: Unknown id.
        """
        with self._lock:
            self._holdouts.remove(holdout_id)


Counters = dict[str, Decimal]
_EXACT = decimal.Context(prec=PRECISION)


class InMemoryOutcomeStore:
    """Outcome counters in dicts: the request ids counted, one counter item per (allocation
    phase, variant) and per (variant, phase, dimension), and each dimension's kept values. The
    counts are the DynamoDB store's own (:func:`~.outcomes_repository.variant_deltas`,
    :func:`~.outcomes_repository.segment_deltas`), without its shards and transactions."""

    def __init__(self) -> None:
        self._counted: dict[str, set[str]] = {}
        self._totals: dict[str, dict[tuple[str, int], Counters]] = {}
        self._segments: dict[str, dict[tuple[str, int, str, str], Counters]] = {}
        self._kept: dict[str, dict[str, set[str]]] = {}
        self._lock = threading.Lock()

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
        plan = plan or SegmentPlan()
        with self._lock:
            counted = self._counted.setdefault(experiment_id, set())
            unique: dict[str, Outcome] = {}
            for outcome in outcomes:
                if outcome.request_id not in counted:
                    unique.setdefault(outcome.request_id, outcome)
            new = list(unique.values())
            counted.update(unique)
            totals = self._totals.setdefault(experiment_id, {})
            for key, delta in variant_deltas(new, cuped_metric).items():
                _add(totals.setdefault(key, {}), delta.counts, delta.sums)
            if plan.dimensions and new:
                self._count_segments(experiment_id, new, plan)
        return OutcomeReceipt(accepted=len(new), duplicates=len(outcomes) - len(new))

    def _count_segments(self, experiment_id: str, new: list[Outcome], plan: SegmentPlan) -> None:
        kept = self._kept.setdefault(experiment_id, {})
        folded = fold_segment_values(kept, new, plan, final=True)
        assert folded is not None  # final kept values never defer
        values, added = folded
        for dimension, found in added.items():
            kept.setdefault(dimension, set()).update(found)
        segments = self._segments.setdefault(experiment_id, {})
        for key, delta in segment_deltas(new, values, plan).items():
            _add(segments.setdefault(key, {}), delta.counts, delta.sums)

    def read(self, experiment_id: str) -> dict[str, dict[str, Any]]:
        """The counters merged per variant over every phase."""
        merged: dict[str, dict[str, Any]] = {}
        with self._lock:
            for (variant_id, _), counters in self._totals.get(experiment_id, {}).items():
                merge_counters(merged.setdefault(variant_id, _empty()), counters)
        return merged

    def read_phases(self, experiment_id: str) -> dict[int, dict[str, dict[str, Any]]]:
        """The counters per allocation phase and variant."""
        merged: dict[int, dict[str, dict[str, Any]]] = {}
        with self._lock:
            for (variant_id, phase), counters in self._totals.get(experiment_id, {}).items():
                target = merged.setdefault(phase, {}).setdefault(variant_id, _empty())
                merge_counters(target, counters)
        return merged

    def read_segments(
        self, experiment_id: str
    ) -> dict[str, dict[str, dict[int, dict[str, dict[str, Any]]]]]:
        """The segment counters per dimension, value, allocation phase and variant."""
        merged: dict[str, dict[str, dict[int, dict[str, dict[str, Any]]]]] = {}
        with self._lock:
            for key, counters in self._segments.get(experiment_id, {}).items():
                merge_segment_counters(merged, key, counters)
        return merged


def _empty() -> dict[str, Any]:
    return {"sums": {}, "histogram": {}}


def _add(target: Counters, counts: dict[str, int], sums: dict[str, Decimal]) -> None:
    """Adds to counters as DynamoDB's ``ADD`` does: exactly, to :data:`PRECISION` digits."""
    for name, count in counts.items():
        target[name] = _EXACT.add(target.get(name, Decimal(0)), Decimal(count))
    for name, amount in sums.items():
        target[name] = _EXACT.add(target.get(name, Decimal(0)), amount)


class InMemoryExplanationInputStore:
    """Posted inputs in one dict per experiment, read in key order."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def keys(self, experiment_id: str, limit: int) -> list[str]:
        """The ``limit`` smallest keys held (ascending)."""
        with self._lock:
            return sorted(self._rows.get(experiment_id, {}))[:limit]

    def rows(self, experiment_id: str, limit: int) -> list[dict[str, Any]]:
        """The rows of the ``limit`` smallest keys."""
        with self._lock:
            held = self._rows.get(experiment_id, {})
            return [json.loads(held[key]) for key in sorted(held)[:limit]]

    def add(self, experiment_id: str, rows: dict[str, str]) -> None:
        """Writes rows by key (a repeated key is overwritten)."""
        with self._lock:
            self._rows.setdefault(experiment_id, {}).update(rows)

    def trim(self, experiment_id: str, keep: int) -> int:
        """Deletes every row past the ``keep`` smallest keys; returns how many."""
        with self._lock:
            held = self._rows.get(experiment_id, {})
            extra = sorted(held)[keep:]
            for key in extra:
                del held[key]
            return len(extra)


@dataclass
class _GuardrailItem:
    revision: str
    declaration: str
    status: str | None = None
    evaluation: str | None = None
    round: int | None = None


class InMemoryExplanationGuardrailStore:
    """Explanation guardrail declarations and evaluations, one item (JSON text) per experiment."""

    def __init__(self) -> None:
        self._items: dict[str, _GuardrailItem] = {}
        self._lock = threading.Lock()

    def put(
        self, experiment_id: str, revision: str, declaration: dict[str, Any], when: datetime
    ) -> None:
        """Stores a declaration (a new revision; any earlier evaluation is dropped)."""
        with self._lock:
            self._items[experiment_id] = _GuardrailItem(revision, json.dumps(declaration))

    def get(self, experiment_id: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """``(declaration, evaluation or None)``, or ``None`` when none is declared."""
        with self._lock:
            item = self._items.get(experiment_id)
        if item is None:
            return None
        evaluation = json.loads(item.evaluation) if item.evaluation else None
        return json.loads(item.declaration), evaluation

    def delete(self, experiment_id: str) -> bool:
        """Removes the declaration; ``False`` if there was none."""
        with self._lock:
            return self._items.pop(experiment_id, None) is not None

    def start(
        self, experiment_id: str, revision: str, evaluation: dict[str, Any], when: datetime
    ) -> bool:
        """Records the first evaluation of ``revision`` (or its next ``round`` once the last
        was decided); ``False`` if another monitor did first or the declaration changed."""
        number = int(evaluation.get("round") or 0)

        def ready(item: _GuardrailItem) -> bool:
            if number == 0:
                return item.status is None
            return item.round == number - 1 and item.status in ("passed", "failed", "error")

        return self._record(experiment_id, revision, evaluation, ready)

    def finish(
        self, experiment_id: str, revision: str, evaluation: dict[str, Any], when: datetime
    ) -> bool:
        """Replaces the pending evaluation of ``revision`` by its decision; ``False`` if it was
        decided already or the declaration changed."""
        number = int(evaluation.get("round") or 0)
        return self._record(
            experiment_id, revision, evaluation,
            lambda item: item.status == "pending" and item.round == number,
        )  # fmt: skip

    def _record(
        self,
        experiment_id: str,
        revision: str,
        evaluation: dict[str, Any],
        ready: Callable[[_GuardrailItem], bool],
    ) -> bool:
        with self._lock:
            item = self._items.get(experiment_id)
            if item is None or item.revision != revision or not ready(item):
                return False
            item.status = evaluation["status"]
            item.evaluation = json.dumps(evaluation)
            item.round = int(evaluation.get("round") or 0)
            return True


class InMemoryCanaryCheckStore:
    """The latest canary check per experiment in a dict."""

    def __init__(self) -> None:
        self._checks: dict[str, CanaryState] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            stored = self._checks.get(experiment_id)
            if stored is not None and stored.tick >= tick:
                return _copy(stored)
            failures = (
                (stored.consecutive_failures if stored else 0) + 1 if outcome == "fail" else 0
            )
            self._checks[experiment_id] = CanaryState(
                experiment_id=experiment_id, tick=tick, outcome=outcome, reason=reason,
                consecutive_failures=failures, checks=(stored.checks if stored else 0) + 1,
                checked_at=when, variants=tuple(_copy(variants)),
            )  # fmt: skip
            return _copy(self._checks[experiment_id])

    def get(self, experiment_id: str) -> CanaryState | None:
        """The latest recorded check, or ``None``."""
        with self._lock:
            return _copy(self._checks.get(experiment_id))
