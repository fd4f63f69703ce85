"""Asynchronous explanation jobs: a job item in DynamoDB plus a message on the jobs queue.

Submitting stores the job as ``queued`` and sends ``{"job_id": ...}`` to the queue; the
SQS-triggered worker (``handlers.handle_job_messages``, also run by the local stack's pump)
moves it to ``running`` and then ``succeeded`` with the result or ``failed`` with the error.
Transitions are conditional, so a redelivered message for a finished job does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import SynapseError
from chalicelib.core.observability import logger
from chalicelib.explainability.errors import ExplanationJobNotFound
from chalicelib.explainability.repository import ExplanationRepository, JobRecord

JOB_KINDS = ("batch", "global", "dependence")
MAX_ATTEMPTS = 3

Executor = Callable[[str, dict[str, Any]], Any]


class ExplanationJobs:
    """Submits, runs and reports explanation jobs.

    Args:
        repository: Job items and large results.
        executor: Computes a job: ``executor(kind, payload) -> JSON-ready result``.
        clock: Time source.
    """

    def __init__(
        self, repository: ExplanationRepository, executor: Executor, clock: Clock | None = None
    ) -> None:
        self.repository = repository
        self.executor = executor
        self.clock = clock or SystemClock()

    def submit(self, kind: str, payload: dict[str, Any], owner: str = "") -> JobRecord:
        """Stores a queued job and sends its message; nothing is left behind if sending fails."""
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind '{kind}'")
        now = self.clock.now()
        record = JobRecord(
            job_id=f"job-{uuid.uuid4().hex}",
            kind=kind,
            status="queued",
            owner=owner,
            request=payload,
            result=None,
            error=None,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        self.repository.create_job(record)
        try:
            self.repository.enqueue_job(record.job_id)
        except Exception:
            self.repository.delete_job(record.job_id)
            raise
        return record

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        """A job; with ``owner`` given, someone else's job is reported as not found."""
        record = self.repository.get_job(job_id)
        if owner is not None and record.owner != owner:
            raise ExplanationJobNotFound(f"explanation job '{job_id}' not found")
        return record

    def run(self, job_id: str) -> str:
        """Runs a job (idempotent); returns its final status or ``skipped``.

        Client errors (a ``SynapseError``) fail the job for good. Other errors are re-raised so
        the queue redelivers the message, until ``MAX_ATTEMPTS`` is reached.
        """
        if not self.repository.start_job(job_id, self.clock.now()):
            return "skipped"
        record = self.repository.get_job(job_id)
        try:
            result = self.executor(record.kind, record.request)
        except SynapseError as error:
            self._fail(job_id, {**error.to_dict(), "status": error.status})
            return "failed"
        except Exception as exc:
            logger.exception("explanation job failed", extra={"job_id": job_id})
            if record.attempts < MAX_ATTEMPTS:
                raise
            self._fail(job_id, {"error": "internal_error", "message": type(exc).__name__})
            return "failed"
        self.repository.finish_job(job_id, "succeeded", self.clock.now(), result=result)
        return "succeeded"

    def _fail(self, job_id: str, error: dict[str, Any]) -> None:
        self.repository.finish_job(job_id, "failed", self.clock.now(), error=error)
