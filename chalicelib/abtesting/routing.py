"""The routing hot path: deterministic, sticky assignment of requests to variants.

The assignment itself is :mod:`chalicelib.abtesting.assignment` (pure, shared byte for byte
with the Python client's local assignment) run on :func:`routing_config`, the document that
``GET /experiments/{id}/routing-config`` serves. How a request is assigned:

* The key is the user id (sticky) or, without one or with ``sticky=False``, the request id.
* ``h`` = the first 8 bytes (big-endian) of ``blake2b(salt + ":" + key)``, i.e. the point
  ``h / 2**64`` of the unit interval.
* On config load each experiment gets integer thresholds ``ceil(c * 2**64)`` of its cumulative
  Decimal weights ``c`` (computed with exact fractions), so ``h < threshold`` is exactly
  ``h / 2**64 < c``; ``bisect`` finds the variant.
* The layout puts treatments first (declared order) and the control last. A ramp only grows the
  treatment's interval ``[0, w)``, so a ramp increase moves users from control into treatment and
  never back.

Stickiness: for percentage and ramping experiments the hash alone is sticky, across calls and
Lambda instances, with no storage. Bandit (``mab``) weights change over time, which would move
users, so a bandit's first assignment of a user id is persisted with a conditional put and later
calls reuse it (an in-memory LRU in front, so a repeat user does not reach DynamoDB).

Caching: experiment configs are cached in memory for ``SYNAPSE_ROUTE_CACHE_TTL`` seconds
(default 5), read once when the router is built. A pause, rollback, conclusion, ramp step or bandit
reweighting made elsewhere takes effect on every instance within that TTL; the instance that made
the change invalidates its own cache at once. Paused and rolled-back experiments send everyone to
the control; a concluded one sends everyone to the winner; a draft refuses to route (409).

Layers, holdouts and targeting gate a request before its variant is chosen (see
:mod:`~chalicelib.abtesting.assignment`): the routing config carries the experiment's layer slice,
the holdouts captured when it was created and its targeting condition, so the service and local
assignment keep the same requests out. A running bandit stores only the users it admits.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from chalicelib.abtesting.assignment import (
    HASH_NAME,
    IN_EXPERIMENT,
    SCALE,
    Assigner,
    Attributes,
    Choice,
    NotRoutable,
    thresholds,
    unit_hash,
)
from chalicelib.abtesting.errors import ExperimentNotRunning
from chalicelib.abtesting.models import (
    LAYER_BUCKETS,
    Experiment,
    ExperimentStatus,
    TrafficAllocationStrategy,
)
from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.config import get_settings

__all__ = ["SCALE", "RouteTable", "TrafficRouter", "routing_config", "thresholds", "unit_hash"]

Assignment = tuple[str, int, int]
"""``(variant_id, model_version, allocation phase)``."""
Decision = tuple[str | None, int, int, str]
"""``(variant_id or None, model_version, allocation phase, exposure)``."""


def _fixed(experiment: Experiment) -> dict[str, Any] | None:
    status = experiment.status
    if status in (ExperimentStatus.PAUSED, ExperimentStatus.ROLLED_BACK):
        target = experiment.control
    elif status is ExperimentStatus.CONCLUDED:
        target = experiment.variant(experiment.winning_variant_id or "") or experiment.control
    else:
        return None
    return {"variant_id": target.variant_id, "model_version": target.model_version}


def _layer(experiment: Experiment) -> dict[str, Any] | None:
    found = experiment.layer
    if found is None:
        return None
    return {"layer_id": found.layer_id, "salt": found.layer_id, "buckets": LAYER_BUCKETS,
            "start": found.start, "end": found.end}  # fmt: skip


def routing_config(experiment: Experiment) -> dict[str, Any]:
    """The routing config of an experiment: everything :class:`Assigner` needs, as JSON.

    ``GET /experiments/{id}/routing-config`` serves it and the router builds its tables from it,
    so the service and a client assigning locally run the same code on the same data.
    """
    layout = [*experiment.treatments, experiment.control]
    blocked = None
    if experiment.status is ExperimentStatus.DRAFT:
        blocked = f"experiment {experiment.experiment_id} has not been started"
    return {
        "experiment_id": experiment.experiment_id,
        "revision": experiment.revision,
        "status": experiment.status.value,
        "allocation_strategy": experiment.allocation_strategy.value,
        "hash": HASH_NAME,
        "salt": experiment.salt,
        "variants": [
            {
                "variant_id": v.variant_id,
                "model_id": v.model_id,
                "model_version": v.model_version,
                "weight": str(v.traffic_weight),
            }
            for v in layout
        ],
        "fixed": _fixed(experiment),
        "blocked": blocked,
        "sticky_store": experiment.allocation_strategy is TrafficAllocationStrategy.MAB,
        "phase": experiment.phase,
        "layer": _layer(experiment),
        "holdouts": [
            {"holdout_id": h.holdout_id, "salt": h.salt, "share": str(h.share)}
            for h in experiment.holdouts
        ],
        "targeting": experiment.targeting,
    }


class RouteTable(Assigner):
    """One experiment's routing state: an :class:`Assigner` built from its routing config, the
    allocation phase its weights belong to, and the experiment it was built from."""

    __slots__ = ("experiment", "phase")

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(routing_config(experiment))
        self.phase = experiment.phase
        self.experiment = experiment


class AssignmentStorePort(Protocol):
    """What the router needs to keep bandit users sticky (see ``repository.AssignmentStore``)."""

    def get_or_assign(
        self, experiment_id: str, user_id: str, variant_id: str, when: datetime
    ) -> str:
        """Stores the variant unless one is stored; returns the stored one."""


class TrafficRouter:
    """Assigns requests to variants with cached experiment configs.

    Args:
        load: Reads an experiment by id (raises ``ExperimentNotFound``).
        assignments: Persists first assignments of bandit users.
        ttl_seconds: Config cache lifetime (default: ``SYNAPSE_ROUTE_CACHE_TTL``, read once here).
        monotonic: Time source of the cache (tests pass a fake).
        clock: Wall clock stamped on stored assignments.
        lru_size: Bandit assignments remembered in memory.
    """

    def __init__(
        self,
        load: Callable[[str], Experiment],
        assignments: AssignmentStorePort | None = None,
        ttl_seconds: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Clock | None = None,
        lru_size: int = 100_000,
    ) -> None:
        self._load_experiment = load
        self._assignments = assignments
        self.ttl_seconds = (
            get_settings().route_cache_ttl_seconds if ttl_seconds is None else ttl_seconds
        )
        self._monotonic = monotonic
        self._clock = clock or SystemClock()
        self._tables: dict[str, tuple[float, RouteTable]] = {}
        self._lru: OrderedDict[tuple[str, str], Choice] = OrderedDict()
        self._lru_size = lru_size
        self._lock = threading.Lock()

    def route(
        self,
        experiment_id: str,
        request_id: str,
        user_id: str | None = None,
        sticky: bool = True,
        attributes: Attributes | None = None,
    ) -> Choice:
        """``(variant_id, model_version)`` for a request (the control's for a request kept out
        of the experiment); see the module docstring."""
        table = self._table(experiment_id)
        if table.needs_store(user_id, sticky):  # a running bandit's user
            variant_id, version, exposure = self._decide(
                experiment_id, table, request_id, user_id, sticky, attributes
            )
            if exposure == IN_EXPERIMENT and variant_id is not None:
                return variant_id, version
            return table.default
        try:
            return table.route(request_id, user_id, sticky, attributes)
        except NotRoutable as exc:
            raise ExperimentNotRunning(str(exc)) from None

    def decide(
        self,
        experiment_id: str,
        request_id: str,
        user_id: str | None = None,
        sticky: bool = True,
        attributes: Attributes | None = None,
    ) -> Decision:
        """``(variant_id or None, model_version, phase, exposure)``: :meth:`assign` that also
        says whether the request is in the experiment (``exposure``, see
        :meth:`Assigner.decide`)."""
        table = self._table(experiment_id)
        found = self._decide(experiment_id, table, request_id, user_id, sticky, attributes)
        return found[0], found[1], table.phase, found[2]

    def _decide(
        self,
        experiment_id: str,
        table: RouteTable,
        request_id: str,
        user_id: str | None,
        sticky: bool,
        attributes: Attributes | None,
    ) -> tuple[str | None, int, str]:
        if not table.gated or table.blocked is not None:
            variant_id, version = self._choose(experiment_id, table, request_id, user_id, sticky)
            return variant_id, version, IN_EXPERIMENT
        if table.needs_store(user_id, sticky) and table.exclusion(str(user_id), attributes) is None:
            return (*self._sticky(experiment_id, str(user_id), table), IN_EXPERIMENT)
        return table.decide(request_id, user_id, sticky, attributes)

    def assign(
        self, experiment_id: str, request_id: str, user_id: str | None = None, sticky: bool = True
    ) -> Assignment:
        """:meth:`route` plus the allocation phase whose weights decided it (clients send it
        back with the outcome, so outcomes count in the phase their request was routed in)."""
        table = self._table(experiment_id)
        return (*self.route(experiment_id, request_id, user_id, sticky), table.phase)

    def _table(self, experiment_id: str) -> RouteTable:
        cached = self._tables.get(experiment_id)
        if cached is None or cached[0] <= self._monotonic():
            return self.refresh(experiment_id)
        return cached[1]

    def _choose(
        self,
        experiment_id: str,
        table: RouteTable,
        request_id: str,
        user_id: str | None,
        sticky: bool,
    ) -> Choice:
        if table.needs_store(user_id, sticky):
            return self._sticky(experiment_id, str(user_id), table)
        try:
            return table.route(request_id, user_id, sticky)
        except NotRoutable as exc:
            raise ExperimentNotRunning(str(exc)) from None

    def experiment(self, experiment_id: str) -> Experiment:
        """The experiment as cached for routing (at most ``ttl_seconds`` old): the one copy an
        instance keeps, which the engine reads too (outcomes, access checks)."""
        return self._table(experiment_id).experiment

    def refresh(self, experiment_id: str) -> RouteTable:
        """Reloads one experiment's config into the cache and returns its route table."""
        table = RouteTable(self._load_experiment(experiment_id))
        self._tables[experiment_id] = (self._monotonic() + self.ttl_seconds, table)
        return table

    def invalidate(self, experiment_id: str) -> None:
        """Drops a cached config (this instance changed the experiment)."""
        self._tables.pop(experiment_id, None)

    def _sticky(self, experiment_id: str, user_id: str, table: RouteTable) -> Choice:
        key = (experiment_id, user_id)
        with self._lock:
            found = self._lru.get(key)
            if found is not None:
                self._lru.move_to_end(key)
                return found
        choice = table.pick(user_id)
        if self._assignments is not None:
            stored = self._assignments.get_or_assign(
                experiment_id, user_id, choice[0], self._clock.now()
            )
            choice = (stored, table.by_id.get(stored, choice[1]))
        with self._lock:
            self._lru[key] = choice
            if len(self._lru) > self._lru_size:
                self._lru.popitem(last=False)
        return choice
