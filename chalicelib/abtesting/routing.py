"""The routing hot path: deterministic, sticky assignment of requests to variants.

How a request is assigned:

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
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from fractions import Fraction
from hashlib import blake2b
from typing import Protocol

from chalicelib.abtesting.errors import ExperimentNotRunning
from chalicelib.abtesting.models import Experiment, ExperimentStatus, TrafficAllocationStrategy
from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.config import get_settings

SCALE = 2**64
Choice = tuple[str, int]


def thresholds(weights: list[Fraction]) -> list[int]:
    """Integer thresholds ``ceil(cumulative * 2**64)`` of weights given as exact fractions."""
    found, total = [], Fraction(0)
    for weight in weights:
        total += weight
        found.append(math.ceil(total * SCALE))
    return found


def unit_hash(salt: str, key: str) -> int:
    """The 64-bit hash of ``salt:key`` (a point ``h / 2**64`` of the unit interval)."""
    return int.from_bytes(blake2b(f"{salt}:{key}".encode(), digest_size=8).digest(), "big")


class RouteTable:
    """One experiment's routing state, precomputed on config load.

    Attributes:
        prefix: ``salt + ":"``.
        thresholds: Integer cumulative thresholds in layout order.
        choices: ``(variant_id, model_version)`` in layout order.
        fixed: The single choice when the state sends everyone to one variant.
        persist: Whether first assignments of users are stored (running bandits).
        blocked: Why routing is refused (draft), else ``None``.
    """

    __slots__ = ("prefix", "thresholds", "choices", "by_id", "fixed", "persist", "blocked")

    def __init__(self, experiment: Experiment) -> None:
        layout = [*experiment.treatments, experiment.control]
        self.prefix = f"{experiment.salt}:"
        self.choices: list[Choice] = [(v.variant_id, v.model_version) for v in layout]
        self.by_id = dict(self.choices)
        self.thresholds = thresholds([Fraction(v.traffic_weight) for v in layout])
        self.fixed: Choice | None = None
        self.blocked: str | None = None
        status = experiment.status
        control = (experiment.control.variant_id, experiment.control.model_version)
        if status in (ExperimentStatus.PAUSED, ExperimentStatus.ROLLED_BACK):
            self.fixed = control
        elif status is ExperimentStatus.CONCLUDED:
            winner = experiment.winning_variant_id or control[0]
            self.fixed = (winner, self.by_id[winner])
        elif status is ExperimentStatus.DRAFT:
            self.blocked = f"experiment {experiment.experiment_id} has not been started"
        self.persist = experiment.allocation_strategy is TrafficAllocationStrategy.MAB

    def pick(self, key: str) -> Choice:
        """The variant whose interval holds the hash of ``key``."""
        point = int.from_bytes(blake2b((self.prefix + key).encode(), digest_size=8).digest(), "big")
        return self.choices[bisect_right(self.thresholds, point)]


class AssignmentStorePort(Protocol):
    """What the router needs to keep bandit users sticky (see ``repository.AssignmentStore``)."""

    def get_or_assign(self, experiment_id: str, user_id: str, variant_id: str, when: object) -> str:
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
        self, experiment_id: str, request_id: str, user_id: str | None = None, sticky: bool = True
    ) -> Choice:
        """``(variant_id, model_version)`` for a request; see the module docstring."""
        cached = self._tables.get(experiment_id)
        if cached is None or cached[0] <= self._monotonic():
            table = self.refresh(experiment_id)
        else:
            table = cached[1]
        if table.fixed is not None:
            return table.fixed
        if table.blocked is not None:
            raise ExperimentNotRunning(table.blocked)
        if user_id is None or not sticky:
            return table.pick(request_id)
        if table.persist:
            return self._sticky(experiment_id, user_id, table)
        return table.pick(user_id)

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
