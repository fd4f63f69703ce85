"""The interfaces of the explainability service's storage: the explanation cache's items and
generations, and asynchronous jobs (DynamoDB, S3 and SQS in
:mod:`chalicelib.explainability.repository`), with in-memory implementations in
:mod:`chalicelib.explainability.in_memory` for tests of the cache and job logic that need no AWS.

Both implementations pass one contract suite (``tests/unit/test_repository_contracts.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from chalicelib.explainability.repository import CachedItem, JobRecord


class ExplanationCacheStore(Protocol):
    """Cached explanations by (model, content hash), and each model's generations."""

    def cache_get(self, model_id: str, cache_key: str, now: datetime) -> CachedItem | None:
        """A live cached item, or ``None`` (missing or expired)."""

    def cache_get_many(
        self, model_id: str, cache_keys: list[str], now: datetime
    ) -> dict[str, CachedItem]:
        """The live cached items among ``cache_keys``, by key."""

    def cache_put_many(self, items: list[CachedItem], now: datetime) -> int:
        """Stores items, skipping those too large to store; returns how many were stored."""

    def cache_put(self, item: CachedItem, now: datetime) -> bool:
        """Stores an item; ``False`` when it is too large to store."""

    def cache_generations(self, model_id: str) -> dict[int | None, int]:
        """A model's generations: ``None`` → the model's, version → that version's."""

    def bump_cache_generation(self, model_id: str, model_version: int | None = None) -> int:
        """Adds one to a model's (or one version's) generation atomically; returns it."""

    def cache_delete_model(self, model_id: str, model_version: int | None = None) -> set[str]:
        """Deletes a model's cached items (one version or all); returns the deleted keys."""


class ExplanationJobStore(Protocol):
    """Asynchronous jobs, moved between statuses under conditions, and their queue."""

    def create_job(self, record: JobRecord) -> None:
        """Stores a new job with no attempts, result or error.

        Raises:
            Conflict: The id exists.
        """

    def delete_job(self, job_id: str) -> None:
        """Removes a job (no error if absent)."""

    def get_job(self, job_id: str) -> JobRecord:
        """A job with its result.

        Raises:
            ExplanationJobNotFound: Unknown id.
        """

    def start_job(self, job_id: str, now: datetime, lease_until: datetime) -> bool:
        """Moves a queued job, or a running one whose lease has passed, to running until
        ``lease_until`` (one more attempt); ``False`` otherwise."""

    def release_job(self, job_id: str, now: datetime) -> None:
        """Puts a running job back to queued (nothing for a job in another status)."""

    def finish_job(
        self, job_id: str, status: str, now: datetime, result: Any = None, error: Any = None
    ) -> None:
        """Moves a running job to ``status`` with its result or error.

        Raises:
            Conflict: The job is not running.
        """

    def enqueue_job(self, job_id: str) -> None:
        """Queues the job's message for the worker."""
