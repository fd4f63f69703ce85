"""The explainability service's storage in memory:
:class:`~chalicelib.explainability.ports.ExplanationCacheStore` and
:class:`~chalicelib.explainability.ports.ExplanationJobStore` for tests of the cache and job
logic without AWS (the pattern of Chalice's ``InMemoryTodoDB``). Same results and errors as the
DynamoDB repository (one contract suite runs against both); each operation is atomic under one
lock, as a conditional write is in DynamoDB, and payloads go in and out as JSON, as they are
stored. (:mod:`chalicelib.explainability.memory` is something else: the loaded models' byte
budget.)"""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import datetime
from typing import Any

from chalicelib.core.errors import Conflict
from chalicelib.core.rows import Rows
from chalicelib.explainability.errors import ExplanationJobNotFound
from chalicelib.explainability.repository import CachedItem, JobRecord, cache_blob


def _json(value: Any) -> Any:
    """``value`` as it reads back from stored JSON (a copy; tuples become lists)."""
    return json.loads(json.dumps(value))


class InMemoryExplanationRepository:
    """Cache items, generations and jobs in dicts; queued job ids in :attr:`queued`."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], CachedItem] = {}
        self._generations: dict[tuple[str, int | None], int] = {}
        self._jobs: Rows[str, JobRecord] = Rows(
            lambda key: ExplanationJobNotFound(f"explanation job '{key}' not found")
        )
        self.queued: list[str] = []
        self._lock = threading.Lock()

    # --- cache -------------------------------------------------------------------------------
    def cache_get(self, model_id: str, cache_key: str, now: datetime) -> CachedItem | None:
        """A live cached item, or ``None`` (missing or expired)."""
        return self.cache_get_many(model_id, [cache_key], now).get(cache_key)

    def cache_get_many(
        self, model_id: str, cache_keys: list[str], now: datetime
    ) -> dict[str, CachedItem]:
        """The live cached items among ``cache_keys``, by key."""
        with self._lock:
            found = [self._items.get((model_id, key)) for key in dict.fromkeys(cache_keys)]
        return {
            item.cache_key: dataclasses.replace(item, payload=_json(item.payload))
            for item in found
            if item is not None and item.expires_at > now
        }

    def cache_put_many(self, items: list[CachedItem], now: datetime) -> int:
        """Stores items, skipping those too large to store; returns how many were stored."""
        return sum(self.cache_put(item, now) for item in items)

    def cache_put(self, item: CachedItem, now: datetime) -> bool:
        """Stores an item; ``False`` when it is too large to store."""
        if cache_blob(item) is None:
            return False
        expires_at = item.expires_at.replace(microsecond=0)  # a TTL attribute: whole seconds
        stored = dataclasses.replace(item, payload=_json(item.payload), expires_at=expires_at)
        with self._lock:
            self._items[(item.model_id, item.cache_key)] = stored
        return True

    def cache_generations(self, model_id: str) -> dict[int | None, int]:
        """A model's generations: ``None`` → the model's, version → that version's."""
        with self._lock:
            return {v: n for (m, v), n in self._generations.items() if m == model_id}

    def bump_cache_generation(self, model_id: str, model_version: int | None = None) -> int:
        """Adds one to a model's (or one version's) generation atomically; returns it."""
        key = (model_id, model_version)
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            return self._generations[key]

    def cache_delete_model(self, model_id: str, model_version: int | None = None) -> set[str]:
        """Deletes a model's cached items (one version or all); returns the deleted keys."""
        with self._lock:
            doomed = [
                key
                for key, item in self._items.items()
                if key[0] == model_id and model_version in (None, item.model_version)
            ]
            for key in doomed:
                del self._items[key]
        return {cache_key for _, cache_key in doomed}

    # --- jobs --------------------------------------------------------------------------------
    def create_job(self, record: JobRecord) -> None:
        """Stores a new job with no attempts, result or error.

        Raises:
            Conflict: The id exists.
        """
        stored = dataclasses.replace(
            record, request=_json(record.request), result=None, error=None, attempts=0,
            lease_until=None,
        )  # fmt: skip
        with self._lock:
            self._jobs.add(record.job_id, stored, f"job '{record.job_id}' already exists")

    def delete_job(self, job_id: str) -> None:
        """Removes a job (no error if absent)."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def get_job(self, job_id: str) -> JobRecord:
        """A job with its result.

        Raises:
            ExplanationJobNotFound: Unknown id.
        """
        with self._lock:
            found = self._jobs.stored(job_id)
        return dataclasses.replace(
            found, request=_json(found.request), result=_json(found.result),
            error=_json(found.error),
        )  # fmt: skip

    def start_job(self, job_id: str, now: datetime, lease_until: datetime) -> bool:
        """Moves a queued job, or a running one whose lease has passed, to running until
        ``lease_until`` (one more attempt); ``False`` otherwise."""
        with self._lock:
            job = self._jobs.get(job_id)
            lapsed = (
                job is not None
                and job.status == "running"
                and (job.lease_until is None or job.lease_until < now)
            )
            if job is None or not (job.status == "queued" or lapsed):
                return False
            self._jobs[job_id] = dataclasses.replace(
                job, status="running", attempts=job.attempts + 1, updated_at=now,
                lease_until=lease_until,
            )  # fmt: skip
            return True

    def release_job(self, job_id: str, now: datetime) -> None:
        """Puts a running job back to queued (nothing for a job in another status)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status == "running":
                self._jobs[job_id] = dataclasses.replace(
                    job, status="queued", updated_at=now, lease_until=None
                )

    def finish_job(
        self, job_id: str, status: str, now: datetime, result: Any = None, error: Any = None
    ) -> None:
        """Moves a running job to ``status`` with its result or error.

        Raises:
            Conflict: The job is not running.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status != "running":
                raise Conflict(f"job '{job_id}' is not running")
            self._jobs[job_id] = dataclasses.replace(
                job, status=status, updated_at=now, lease_until=None,
                result=job.result if result is None else _json(result),
                error=job.error if error is None else _json(error),
            )  # fmt: skip

    def enqueue_job(self, job_id: str) -> None:
        """Queues the job's message for the worker (appends its id to :attr:`queued`)."""
        with self._lock:
            self.queued.append(job_id)
