"""Simulated users hitting an experiment over HTTP: route, "serve", report outcomes in batches.

Every request is assigned by ``POST /experiments/{id}/route`` (sticky per user id); the variant's
behaviour (error rate, latency, conversion rate) is a simulation parameter chosen by the story,
and the outcome is posted with ``POST /experiments/{id}/outcomes`` in batches. Nothing here
computes a metric: the demo reads them back from the API.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from demo.client import Api, ApiError


@dataclass
class Behaviour:
    """How a variant behaves in the simulation.

    Attributes:
        error_rate: Probability that serving fails.
        latency_ms: Median latency (log-normal, sigma 0.35).
        conversion_rate: Probability that a served user converts (``None``: not reported).
    """

    error_rate: float
    latency_ms: float
    conversion_rate: float | None = None


@dataclass
class TrafficStats:
    """What the simulator sent (for progress only; the demo reports the API's numbers)."""

    routed: Counter[str] = field(default_factory=Counter)
    outcome_posts: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Requests routed."""
        return sum(self.routed.values())


class Traffic:
    """Simulated traffic against one experiment.

    Args:
        api: The API client.
        experiment_id: The experiment.
        behaviours: Variant id → behaviour (mutable: a story can change it mid-run).
        seed: Seed of the simulation.
        threads: Concurrent simulated clients.
        batch_size: Outcomes per ``POST .../outcomes``.
        users: Size of the user population (user ids are sticky).
    """

    def __init__(
        self,
        api: Api,
        experiment_id: str,
        behaviours: dict[str, Behaviour],
        seed: int = 7,
        threads: int = 4,
        batch_size: int = 50,
        users: int = 20_000,
    ) -> None:
        self.api = api
        self.experiment_id = experiment_id
        self.behaviours = behaviours
        self.seed = seed
        self.threads = threads
        self.batch_size = batch_size
        self.users = users
        self.stats = TrafficStats()
        self._lock = threading.Lock()
        self._issued = 0
        self._run = 0

    def run(
        self,
        max_requests: int,
        rate: float | None = None,
        tick: Callable[[], bool] | None = None,
        tick_seconds: float = 1.0,
        progress: Any = None,
    ) -> TrafficStats:
        """Sends up to ``max_requests`` (at most ``rate`` per second) until ``tick`` says stop.

        Routing runs on ``threads`` threads; outcomes go through one poster thread, batch after
        batch (concurrent batches would only contend for the same counter items).

        Args:
            max_requests: Upper bound on routed requests in this run.
            rate: Requests per second over all threads (``None``: as fast as possible).
            tick: Called every ``tick_seconds`` from this thread; returning ``True`` stops.
            tick_seconds: Period of ``tick``.
            progress: A tqdm bar advanced by routed requests.
        """
        stop = threading.Event()
        outbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._issued, self._run = 0, self._run + 1
        workers = [
            threading.Thread(
                target=self._worker,
                args=(index, max_requests, rate, stop, progress, outbox),
                name=f"traffic-{index}",
                daemon=True,
            )
            for index in range(self.threads)
        ]
        poster = threading.Thread(target=self._poster, args=(outbox,), name="outcomes")
        poster.start()
        for worker in workers:
            worker.start()
        try:
            while any(worker.is_alive() for worker in workers):
                for worker in workers:
                    worker.join(tick_seconds / len(workers))
                if tick is not None and tick():
                    break
        finally:
            stop.set()
            for worker in workers:
                worker.join()
            outbox.put(None)
            poster.join()
        if tick is not None:
            tick()
        return self.stats

    def _ticket(self, max_requests: int) -> bool:
        with self._lock:
            if self._issued >= max_requests:
                return False
            self._issued += 1
            return True

    def _worker(
        self,
        index: int,
        max_requests: int,
        rate: float | None,
        stop: threading.Event,
        progress: Any,
        outbox: queue.Queue[dict[str, Any] | None],
    ) -> None:
        rng = random.Random(f"{self.seed}:{self._run}:{index}")
        period = self.threads / rate if rate else 0.0
        next_at = time.monotonic()
        while not stop.is_set() and self._ticket(max_requests):
            if period:
                next_at += period
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
            outbox.put(self._one(rng))
            if progress is not None:
                progress.update(1)

    def _poster(self, outbox: queue.Queue[dict[str, Any] | None]) -> None:
        done = False
        while not done:
            first = outbox.get()
            if first is None:
                break
            pending = [first]
            while len(pending) < self.batch_size:
                try:
                    item = outbox.get(timeout=0.2)
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                pending.append(item)
            self._flush(pending)

    def _one(self, rng: random.Random) -> dict[str, Any]:
        request_id = uuid.UUID(int=rng.getrandbits(128)).hex
        user_id = f"user-{rng.randrange(self.users)}"
        routed = self.api.post(
            f"/experiments/{self.experiment_id}/route",
            {"request_id": request_id, "user_id": user_id},
        )
        variant = routed["variant_id"]
        behaviour = self.behaviours[variant]
        failed = rng.random() < behaviour.error_rate
        outcome: dict[str, Any] = {
            "variant_id": variant,
            "request_id": request_id,
            "success": not failed,
            "latency_ms": round(behaviour.latency_ms * rng.lognormvariate(0.0, 0.35), 3),
        }
        if behaviour.conversion_rate is not None:
            outcome["converted"] = (not failed) and rng.random() < behaviour.conversion_rate
        with self._lock:
            self.stats.routed[variant] += 1
        return outcome

    def _flush(self, outcomes: list[dict[str, Any]]) -> None:
        try:
            receipt = self.api.post(
                f"/experiments/{self.experiment_id}/outcomes", {"outcomes": outcomes}
            )
        except ApiError as exc:
            with self._lock:
                self.stats.rejected.append(str(exc))
            return
        with self._lock:
            self.stats.outcome_posts += 1
            self.stats.duplicates += receipt["duplicates"]
