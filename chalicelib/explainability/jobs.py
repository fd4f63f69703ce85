"""Asynchronous explanation jobs: a job item in DynamoDB plus a message on the jobs queue.

Submitting stores the job as ``queued`` and sends ``{"job_id": ...}`` to the queue; the
SQS-triggered worker (``handlers.handle_job_messages``, also run by the local stack's pump)
moves it to ``running`` and then ``succeeded`` with the result or ``failed`` with the error.
Transitions are conditional, so a redelivered message for a finished job does nothing.

A job never runs past its function's timeout: it runs under a deadline (the function's remaining
time, or ``SYNAPSE_EXPLAIN_JOB_SECONDS`` if less, minus a safety margin; see :mod:`.budget`), is
refused at once when its measured estimate does not fit (``failed``, ``too_expensive``) and stops
at the deadline otherwise (``failed``, ``deadline_exceeded``). A running job holds a lease until
its deadline plus the margin: a redelivered message for a live job is skipped, and a job whose
function died without recording anything (killed, out of memory) is reported ``failed``
(``job_lost``) once its lease has passed, and is not started again after ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from chalicelib.core import access
from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import Conflict, SynapseError
from chalicelib.core.observability import logger
from chalicelib.core.principal import Principal
from chalicelib.explainability.budget import SAFETY_SECONDS, Limits, bounded, job_allowance
from chalicelib.explainability.errors import ExplanationJobNotFound
from chalicelib.explainability.ports import ExplanationJobStore
from chalicelib.explainability.repository import JobRecord

JOB_KINDS = ("explain", "batch", "global", "dependence")
MAX_ATTEMPTS = 3

Executor = Callable[[str, dict[str, Any]], Any]


def _missing(job_id: str) -> Callable[[], ExplanationJobNotFound]:
    return lambda: ExplanationJobNotFound(f"explanation job '{job_id}' not found")


class ExplanationJobs:
    """Submits, runs and reports explanation jobs.

    Args:
        repository: Job items and large results.
        executor: Computes a job: ``executor(kind, payload) -> JSON-ready result`` (it runs under
            the job's allowance, :func:`.budget.current`).
        clock: Time source.
        limits: The work limits (default: from the environment).
    """

    def __init__(
        self,
        repository: ExplanationJobStore,
        executor: Executor,
        clock: Clock | None = None,
        limits: Callable[[], Limits] | None = None,
    ) -> None:
        self.repository = repository
        self.executor = executor
        self.clock = clock or SystemClock()
        self.limits = limits or Limits

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

    def get(self, job_id: str, principal: Principal | str | None = None) -> JobRecord:
        """A job. With a ``principal`` (or an owner's name), a job the caller may not read
        (someone else's, unless the caller is an admin) is reported as not found.

        A running job whose lease has passed is recorded as ``failed`` (``job_lost``) first.
        """
        record = self.repository.get_job(job_id)
        if isinstance(principal, str):
            if record.owner != principal:
                raise _missing(job_id)()
        elif principal is not None:
            access.require_read(principal, record, _missing(job_id))
        now = self.clock.now()
        if record.status == "running" and record.lease_until and record.lease_until < now:
            lost = {
                "error": "job_lost",
                "message": "the job's function stopped before recording a result (timeout or "
                "out of memory) and its deadline has passed",
            }
            if self._finish(job_id, "failed", error=lost):
                record = self.repository.get_job(job_id)
        return record

    def run(self, job_id: str, seconds_available: float | None = None) -> str:
        """Runs a job (idempotent) within ``seconds_available`` (the function's remaining time;
        ``None``: only the job limit); returns its final status or ``skipped``.

        Client errors (a ``SynapseError``: invalid input, ``too_expensive``,
        ``deadline_exceeded``) fail the job for good. Other errors put it back to ``queued`` and
        are re-raised so the queue redelivers the message, until ``MAX_ATTEMPTS``.
        """
        allowance = job_allowance(seconds_available, self.limits())
        lease = self.clock.now() + timedelta(seconds=allowance.limit_seconds + SAFETY_SECONDS)
        if not self.repository.start_job(job_id, self.clock.now(), lease):
            return "skipped"
        record = self.repository.get_job(job_id)
        if record.attempts > MAX_ATTEMPTS:
            self._fail(job_id, _abandoned(record.attempts - 1))
            return "failed"
        try:
            with bounded(allowance):
                result = self.executor(record.kind, record.request)
        except SynapseError as error:
            self._fail(job_id, {**error.to_dict(), "status": error.status})
            return "failed"
        except Exception as exc:
            logger.exception("explanation job failed", extra={"job_id": job_id})
            if record.attempts < MAX_ATTEMPTS:
                self.repository.release_job(job_id, self.clock.now())
                raise
            self._fail(job_id, {"error": "internal_error", "message": type(exc).__name__})
            return "failed"
        return "succeeded" if self._finish(job_id, "succeeded", result=result) else "skipped"

    def _fail(self, job_id: str, error: dict[str, Any]) -> None:
        self._finish(job_id, "failed", error=error)

    def _finish(self, job_id: str, status: str, result: Any = None, error: Any = None) -> bool:
        """Records the outcome; ``False`` if the job was no longer running (another attempt or a
        reader finished it)."""
        try:
            self.repository.finish_job(job_id, status, self.clock.now(), result=result, error=error)
        except Conflict:
            return False
        return True


def _abandoned(attempts: int) -> dict[str, Any]:
    return {
        "error": "job_lost",
        "message": f"the job was started {attempts} times without recording a result (its "
        "function was stopped: timeout or out of memory); it is not started again",
    }
