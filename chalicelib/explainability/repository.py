"""DynamoDB and S3 access of the explainability service (the only module that touches them).

Tables:
    ``explanation-cache``: hash key ``model_id``, range key ``cache_key`` (the content hash), so
    one query finds every cached explanation of a model for invalidation. ``expires_at`` is a
    DynamoDB TTL attribute; reads also ignore expired items because TTL deletion is lazy.
    ``explanation-jobs``: one item per asynchronous job with conditional status transitions.
Large job results and requests live in the models bucket under ``explanations/jobs/``.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from chalicelib.core import aws
from chalicelib.core.config import get_settings
from chalicelib.core.errors import Conflict
from chalicelib.core.tables import meta
from chalicelib.explainability.errors import ExplanationJobNotFound

# DynamoDB items are limited to 400 KB; results above this go to S3.
INLINE_RESULT_LIMIT = 350 * 1024
JOB_RETENTION = timedelta(days=7)


class ExplanationCacheTable(Model):
    """One cached explanation (zlib-compressed JSON)."""

    Meta = meta("EXPLANATION_CACHE_TABLE", "explanation-cache")

    model_id = UnicodeAttribute(hash_key=True)
    cache_key = UnicodeAttribute(range_key=True)
    model_version = NumberAttribute()
    payload = BinaryAttribute(legacy_encoding=False)
    created_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()


# The generation item of a model lives in the cache table beside its entries; cache keys are
# hex digests, which sort after "#", so range conditions ``>= "0"`` skip it.
GENERATION_KEY = "#generation"


class ExplanationGenerationItem(Model):
    """A model's explanation generation: bumped by every invalidation and part of every stored
    cache key, so an invalidation reaches every instance (the same table as the entries; not
    listed in ``TABLES``, which creates the table once)."""

    Meta = ExplanationCacheTable.Meta

    model_id = UnicodeAttribute(hash_key=True)
    cache_key = UnicodeAttribute(range_key=True)
    generation = NumberAttribute(default=0)

    @classmethod
    def _get_connection(cls) -> Any:
        # The cache table's own connection: whatever points the listed tables at an endpoint
        # (the local stack, tests) points this item at it too.
        return ExplanationCacheTable._get_connection()


class ExplanationJobTable(Model):
    """An asynchronous explanation job."""

    Meta = meta("EXPLANATION_JOBS_TABLE", "explanation-jobs")

    job_id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    status = UnicodeAttribute()
    owner = UnicodeAttribute(default="")
    request = UnicodeAttribute(null=True)
    # Requests over INLINE_RESULT_LIMIT (an image, thousands of rows) live in the models bucket.
    request_key = UnicodeAttribute(null=True)
    result = UnicodeAttribute(null=True)
    result_key = UnicodeAttribute(null=True)
    error = UnicodeAttribute(null=True)
    attempts = NumberAttribute(default=0)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute(null=True)
    # While running: when the attempt's deadline (plus its safety margin) has passed.
    lease_until = UTCDateTimeAttribute(null=True)


@dataclass(frozen=True)
class CachedItem:
    """A cached explanation as stored."""

    model_id: str
    cache_key: str
    model_version: int
    payload: dict[str, Any]
    expires_at: datetime


@dataclass
class JobRecord:
    """A job as stored (``result`` already fetched from S3 when it was large)."""

    job_id: str
    kind: str
    status: str
    owner: str
    request: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    lease_until: datetime | None = None

    @property
    def access_groups(self) -> tuple[str, ...]:
        """The submitter's groups, kept with the request (``caller``): a job is visible to its
        submitter, those groups and admins, as every resource is (:mod:`chalicelib.core.access`).
        Jobs submitted before callers were kept are their owner's and admins' only."""
        caller = self.request.get("caller") if isinstance(self.request, dict) else None
        return tuple((caller or {}).get("groups") or ())


class ExplanationRepository:
    """Cache items, job items and large job results."""

    # --- cache -------------------------------------------------------------------------------
    def cache_get(self, model_id: str, cache_key: str, now: datetime) -> CachedItem | None:
        """A live cached item, or ``None`` (missing or expired)."""
        try:
            item = ExplanationCacheTable.get(model_id, cache_key, consistent_read=False)
        except DoesNotExist:
            return None
        if item.expires_at <= now:
            return None
        payload = json.loads(zlib.decompress(item.payload))
        return CachedItem(model_id, cache_key, int(item.model_version), payload, item.expires_at)

    def cache_get_many(
        self, model_id: str, cache_keys: list[str], now: datetime
    ) -> dict[str, CachedItem]:
        """The live cached items among ``cache_keys`` (BatchGetItem, 100 keys a request)."""
        found: dict[str, CachedItem] = {}
        wanted = list(dict.fromkeys(cache_keys))
        for item in ExplanationCacheTable.batch_get([(model_id, key) for key in wanted]):
            if item.expires_at > now:
                payload = json.loads(zlib.decompress(item.payload))
                found[item.cache_key] = CachedItem(
                    model_id, item.cache_key, int(item.model_version), payload, item.expires_at
                )
        return found

    def cache_put_many(self, items: list[CachedItem], now: datetime) -> int:
        """Stores items (BatchWriteItem, 25 a request), skipping those too large for DynamoDB;
        returns how many were stored."""
        stored = 0
        with ExplanationCacheTable.batch_write() as batch:
            for item in items:
                blob = cache_blob(item)
                if blob is None:
                    continue
                batch.save(_cache_row(item, blob, now))
                stored += 1
        return stored

    def cache_put(self, item: CachedItem, now: datetime) -> bool:
        """Stores an item; returns ``False`` when it is too large for DynamoDB."""
        blob = cache_blob(item)
        if blob is None:
            return False
        _cache_row(item, blob, now).save()
        return True

    def cache_generations(self, model_id: str) -> dict[int | None, int]:
        """A model's explanation generations: ``None`` → the model's, version → that version's
        (absent: 0). One strongly consistent Query of the model's generation items."""
        found: dict[int | None, int] = {}
        items = ExplanationGenerationItem.query(
            model_id,
            range_key_condition=ExplanationGenerationItem.cache_key.startswith(GENERATION_KEY),
            consistent_read=True,
        )
        for item in items:
            version = item.cache_key[len(GENERATION_KEY) + 1 :]
            found[int(version) if version else None] = int(item.generation or 0)
        return found

    def bump_cache_generation(self, model_id: str, model_version: int | None = None) -> int:
        """Adds one to a model's (or one version's) explanation generation, atomically;
        returns the new value."""
        key = GENERATION_KEY if model_version is None else f"{GENERATION_KEY}#{model_version}"
        item = ExplanationGenerationItem(model_id, key)
        item.update(actions=[ExplanationGenerationItem.generation.add(1)])
        return int(item.generation)

    def cache_delete_model(self, model_id: str, model_version: int | None = None) -> set[str]:
        """Deletes a model's cached items (one version or all); returns the deleted keys."""
        condition = None
        if model_version is not None:
            condition = ExplanationCacheTable.model_version == model_version
        items = ExplanationCacheTable.query(
            model_id,
            range_key_condition=ExplanationCacheTable.cache_key >= "0",
            filter_condition=condition,
            attributes_to_get=["model_id", "cache_key", "model_version"],
        )
        deleted: set[str] = set()
        with ExplanationCacheTable.batch_write() as batch:
            for item in items:
                batch.delete(item)
                deleted.add(item.cache_key)
        return deleted

    # --- jobs --------------------------------------------------------------------------------
    def create_job(self, record: JobRecord) -> None:
        """Stores a new job (409 if the id exists)."""
        text = json.dumps(record.request, separators=(",", ":"))
        request_key = None
        if len(text.encode()) > INLINE_RESULT_LIMIT:
            request_key = f"explanations/jobs/{record.job_id}.request.json"
            self._put_result(request_key, text)
        try:
            ExplanationJobTable(
                record.job_id,
                kind=record.kind,
                status=record.status,
                owner=record.owner,
                request=None if request_key else text,
                request_key=request_key,
                attempts=0,
                created_at=record.created_at,
                updated_at=record.updated_at,
                expires_at=record.created_at + JOB_RETENTION,
            ).save(condition=ExplanationJobTable.job_id.does_not_exist())
        except PutError as exc:
            if _is_conditional(exc):
                raise Conflict(f"job '{record.job_id}' already exists") from None
            raise

    def delete_job(self, job_id: str) -> None:
        """Removes a job (used when its message could not be queued)."""
        with contextlib.suppress(DeleteError):
            ExplanationJobTable(job_id).delete()

    def get_job(self, job_id: str) -> JobRecord:
        """A job with its result (404 if unknown)."""
        try:
            item = ExplanationJobTable.get(job_id, consistent_read=True)
        except DoesNotExist:
            raise ExplanationJobNotFound(f"explanation job '{job_id}' not found") from None
        result = None
        if item.result is not None:
            result = json.loads(item.result)
        elif item.result_key:
            result = self._get_result(item.result_key)
        return JobRecord(
            job_id=item.job_id,
            kind=item.kind,
            status=item.status,
            owner=item.owner,
            request=json.loads(item.request)
            if item.request
            else self._get_result(item.request_key),
            result=result,
            error=json.loads(item.error) if item.error else None,
            attempts=int(item.attempts or 0),
            created_at=item.created_at,
            updated_at=item.updated_at,
            lease_until=item.lease_until,
        )

    def start_job(self, job_id: str, now: datetime, lease_until: datetime) -> bool:
        """Moves a queued job, or a running one whose lease has passed (its attempt died), to
        running until ``lease_until``; ``False`` if it is finished or another attempt holds it."""
        table = ExplanationJobTable
        lapsed = (table.status == "running") & (
            table.lease_until.does_not_exist() | (table.lease_until < now)
        )
        try:
            ExplanationJobTable(job_id).update(
                actions=[
                    table.status.set("running"),
                    table.attempts.add(1),
                    table.updated_at.set(now),
                    table.lease_until.set(lease_until),
                ],
                condition=(table.status == "queued") | lapsed,
            )
        except UpdateError as exc:
            if _is_conditional(exc):
                return False
            raise
        return True

    def release_job(self, job_id: str, now: datetime) -> None:
        """Puts a running job back to queued (its attempt failed and will be retried)."""
        try:
            ExplanationJobTable(job_id).update(
                actions=[
                    ExplanationJobTable.status.set("queued"),
                    ExplanationJobTable.updated_at.set(now),
                    ExplanationJobTable.lease_until.remove(),
                ],
                condition=ExplanationJobTable.status == "running",
            )
        except UpdateError as exc:
            if not _is_conditional(exc):
                raise

    def finish_job(
        self, job_id: str, status: str, now: datetime, result: Any = None, error: Any = None
    ) -> None:
        """Moves a running job to ``succeeded`` (with its result) or ``failed`` (with an error)."""
        actions: list[Action] = [
            ExplanationJobTable.status.set(status),
            ExplanationJobTable.updated_at.set(now),
            ExplanationJobTable.lease_until.remove(),
        ]
        if error is not None:
            actions.append(ExplanationJobTable.error.set(json.dumps(error)))
        if result is not None:
            text = json.dumps(result, separators=(",", ":"))
            if len(text.encode()) > INLINE_RESULT_LIMIT:
                key = f"explanations/jobs/{job_id}.json"
                self._put_result(key, text)
                actions.append(ExplanationJobTable.result_key.set(key))
            else:
                actions.append(ExplanationJobTable.result.set(text))
        try:
            ExplanationJobTable(job_id).update(
                actions=actions, condition=ExplanationJobTable.status == "running"
            )
        except UpdateError as exc:
            if _is_conditional(exc):
                raise Conflict(f"job '{job_id}' is not running") from None
            raise

    def enqueue_job(self, job_id: str) -> None:
        """Sends the job's message to the jobs queue (the SQS-triggered worker runs it)."""
        sqs = aws.client("sqs")
        url = sqs.get_queue_url(QueueName=get_settings().explanation_jobs_queue)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"job_id": job_id}))

    def _put_result(self, key: str, text: str) -> None:
        aws.client("s3").put_object(
            Bucket=get_settings().models_bucket,
            Key=key,
            Body=text.encode(),
            ContentType="application/json",
        )

    def _get_result(self, key: str) -> Any:
        body = aws.client("s3").get_object(Bucket=get_settings().models_bucket, Key=key)["Body"]
        return json.loads(body.read())


def cache_blob(item: CachedItem) -> bytes | None:
    """The item's payload as stored (zlib-compressed JSON), or ``None`` when it is over
    :data:`INLINE_RESULT_LIMIT`."""
    blob = zlib.compress(json.dumps(item.payload, separators=(",", ":")).encode(), 6)
    return None if len(blob) > INLINE_RESULT_LIMIT else blob


def _cache_row(item: CachedItem, blob: bytes, now: datetime) -> ExplanationCacheTable:
    return ExplanationCacheTable(
        item.model_id,
        item.cache_key,
        model_version=item.model_version,
        payload=blob,
        created_at=now,
        expires_at=item.expires_at,
    )


def _is_conditional(exc: Exception) -> bool:
    cause = getattr(exc, "cause_response_code", None)
    return cause == "ConditionalCheckFailedException"


# The DynamoDB tables this module declares (listed by chalicelib.domains).
TABLES = (
    ExplanationCacheTable,
    ExplanationJobTable,
)
