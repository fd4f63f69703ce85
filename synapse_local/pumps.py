"""Queue pumps: the local stand-ins for Lambda's S3 and SQS triggers.

In AWS, S3 invokes the ``@app.on_s3_event`` function and the Lambda SQS poller invokes the
``@app.on_sqs_message`` function. Locally nothing does, so the local stack routes the data bucket's
notifications to an SQS queue (see :mod:`synapse_local.bootstrap`) and these pumps long-poll
the queues and call the app's registered handlers with the event shapes Lambda would pass.

Delivery is at-least-once, as in AWS: a message is deleted only after every handler it was
delivered to returned; when a handler raises, the message is made visible again after
``retry_delay_seconds`` and redelivered.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from chalicelib.core.config import region

log = logging.getLogger("synapse.local.pumps")

LambdaHandler = Callable[[dict[str, Any], Any], Any]
"""A Lambda-style handler: ``handler(event, context)`` (Chalice's registered handlers are)."""

DEFAULT_S3_EVENTS = ("s3:ObjectCreated:*",)
LOCAL_ACCOUNT = "123456789012"


def lambda_context(function_name: str, timeout_seconds: int = 300, memory_mb: int = 1024) -> Any:
    """A Lambda context object like the one Lambda passes (Chalice's local implementation)."""
    from chalice.local import LambdaContext

    return LambdaContext(function_name, memory_mb, max_runtime_ms=timeout_seconds * 1000)


def _default_sqs_client() -> Any:
    from chalicelib.core import aws

    return aws.client("sqs")


class QueuePump:
    """Long-polls one SQS queue, on demand (:meth:`poll_once`) or in a thread (:meth:`start`).

    Args:
        queue_url: The queue to poll.
        sqs_client: A boto3 SQS client (default: the shared one from :mod:`chalicelib.core.aws`).
        name: Used for the thread name, the Lambda context and log lines.
        max_messages: Messages received per poll (1-10).
        wait_seconds: Long-poll wait; also bounds how long :meth:`stop` waits for the thread.
        retry_delay_seconds: How soon a message whose handler failed becomes visible again.
    """

    def __init__(
        self,
        queue_url: str,
        sqs_client: Any = None,
        *,
        name: str = "pump",
        max_messages: int = 10,
        wait_seconds: int = 1,
        retry_delay_seconds: int = 5,
    ) -> None:
        self.queue_url = queue_url
        self._sqs = sqs_client
        self.name = name
        self.max_messages = max(1, min(10, max_messages))
        self.wait_seconds = wait_seconds
        self.retry_delay_seconds = retry_delay_seconds
        self.delivered = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def sqs(self) -> Any:
        """The SQS client in use."""
        if self._sqs is None:
            self._sqs = _default_sqs_client()
        return self._sqs

    def poll_once(self, wait_seconds: int | None = None) -> int:
        """Receives one batch and hands it to the handler(s).

        Args:
            wait_seconds: Long-poll wait for this call (default: the pump's ``wait_seconds``).

        Returns:
            The number of records delivered to a handler that returned without raising.
        """
        wait = self.wait_seconds if wait_seconds is None else wait_seconds
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.max_messages,
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        delivered = self._handle(messages)
        self.delivered += delivered
        return delivered

    def _handle(self, messages: list[dict[str, Any]]) -> int:
        raise NotImplementedError

    def _delete(self, messages: Sequence[dict[str, Any]]) -> None:
        if not messages:
            return
        entries = [
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
            for index, message in enumerate(messages)
        ]
        result = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        for failed in result.get("Failed", []):
            log.warning("%s: could not delete a message: %s", self.name, failed)

    def _release(self, messages: Sequence[dict[str, Any]]) -> None:
        """Makes failed messages visible again after ``retry_delay_seconds`` (redelivery)."""
        self.failures += len(messages)
        for message in messages:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=self.retry_delay_seconds,
            )

    def start(self) -> QueuePump:
        """Starts polling in a daemon thread; returns ``self``."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"pump-{self.name}", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Asks the thread to stop after its current long poll, without waiting for it: a caller
        stopping several pumps asks them all first, so their polls end together rather than one
        after another (:meth:`stop` then waits)."""
        self._stop.set()

    def stop(self, timeout: float | None = None) -> None:
        """Asks the thread to stop and waits for it (at most ``timeout`` seconds)."""
        self.request_stop()
        if self._thread is not None:
            limit = timeout if timeout is not None else self.wait_seconds + 30
            self._thread.join(limit)
            if self._thread.is_alive():
                log.warning("%s: thread still running after %.0f s", self.name, limit)
            self._thread = None

    @property
    def running(self) -> bool:
        """Whether the polling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the pump must survive anything a handler or moto does
                log.exception("%s: polling failed; retrying", self.name)
                self._stop.wait(1.0)


@dataclass(frozen=True)
class S3Route:
    """One ``@app.on_s3_event`` handler and the notification filter it was declared with.

    Attributes:
        handler: ``handler(event, context)``.
        name: The Lambda function name.
        bucket: Only records of this bucket (``None``: any bucket).
        prefix: Only keys starting with this (decoded) prefix.
        suffix: Only keys ending with this (decoded) suffix.
        events: S3 event name patterns, e.g. ``s3:ObjectCreated:*``.
    """

    handler: LambdaHandler
    name: str = "s3_event"
    bucket: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    events: tuple[str, ...] = DEFAULT_S3_EVENTS

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether S3 would have invoked this handler for ``record``."""
        s3 = record.get("s3", {})
        if self.bucket is not None and s3.get("bucket", {}).get("name") != self.bucket:
            return False
        key = unquote_plus(s3.get("object", {}).get("key", ""))
        if self.prefix and not key.startswith(self.prefix):
            return False
        if self.suffix and not key.endswith(self.suffix):
            return False
        event_name = "s3:" + record.get("eventName", "")
        return any(fnmatch.fnmatchcase(event_name, pattern) for pattern in self.events)


def complete_s3_record(record: dict[str, Any]) -> dict[str, Any]:
    """Fills the fields of a real S3 notification record that moto leaves out.

    The object key stays URL-encoded the way S3 encodes it: form encoding (space as ``+``) with
    ``/`` left as is. moto's ``quote_plus`` also encodes ``/``, so the key is re-encoded here.
    Chalice's ``S3Event.key`` decodes it with ``unquote_plus``.
    """
    full = json.loads(json.dumps(record))
    full.setdefault("eventSource", "aws:s3")
    full.setdefault("awsRegion", region())
    full.setdefault("userIdentity", {"principalId": "AWS:LOCALSTACK"})
    full.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    full.setdefault(
        "responseElements",
        {"x-amz-request-id": uuid.uuid4().hex[:16].upper(), "x-amz-id-2": uuid.uuid4().hex},
    )
    s3 = full.setdefault("s3", {})
    s3.setdefault("s3SchemaVersion", "1.0")
    s3_object = s3.setdefault("object", {})
    s3_object.setdefault("sequencer", uuid.uuid4().hex[:18].upper())
    s3_object["key"] = quote_plus(unquote_plus(s3_object.get("key", "")), safe="/")
    return full


class S3EventPump(QueuePump):
    """Delivers S3 notifications from a queue to ``@app.on_s3_event`` handlers.

    ``s3:TestEvent`` messages (sent when a notification is configured) are deleted unseen. Each
    record goes, as ``{"Records": [record]}``, to every route whose filter matches it.

    Args:
        queue_url: The queue the bucket notification feeds.
        handler: A handler receiving every record (``None`` when ``routes`` are given).
        sqs_client: A boto3 SQS client (default: the shared one).
        bucket: Filter for ``handler``: only this bucket.
        prefix: Filter for ``handler``: only keys with this prefix.
        suffix: Filter for ``handler``: only keys with this suffix.
        events: Filter for ``handler``: event name patterns (default ``s3:ObjectCreated:*``).
        name: Function name of ``handler``.
        routes: Further handlers with their own filters.
        **options: ``wait_seconds``, ``retry_delay_seconds``, ``max_messages`` (see QueuePump).
    """

    def __init__(
        self,
        queue_url: str,
        handler: LambdaHandler | None = None,
        sqs_client: Any = None,
        *,
        bucket: str | None = None,
        prefix: str | None = None,
        suffix: str | None = None,
        events: Iterable[str] | None = None,
        name: str = "s3_event",
        routes: Iterable[S3Route] = (),
        **options: Any,
    ) -> None:
        super().__init__(queue_url, sqs_client, name=name, **options)
        self.routes: list[S3Route] = list(routes)
        if handler is not None:
            patterns = tuple(events) if events else DEFAULT_S3_EVENTS
            self.routes.insert(0, S3Route(handler, name, bucket, prefix, suffix, patterns))
        self.test_events_skipped = 0

    @classmethod
    def for_app(
        cls, app: Any, queue_url: str, sqs_client: Any = None, **options: Any
    ) -> S3EventPump:
        """A pump for every ``@app.on_s3_event`` handler registered on a Chalice app."""
        from chalice.app import S3EventConfig

        routes = [
            S3Route(
                handler=app.handler_map[source.name],
                name=source.name,
                bucket=source.bucket,
                prefix=source.prefix,
                suffix=source.suffix,
                events=tuple(source.events or DEFAULT_S3_EVENTS),
            )
            for source in app.event_sources
            if isinstance(source, S3EventConfig)
        ]
        return cls(queue_url, None, sqs_client, routes=routes, name="s3-events", **options)

    def _handle(self, messages: list[dict[str, Any]]) -> int:
        done: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        delivered = 0
        for message in messages:
            count, ok = self._deliver_message(message)
            delivered += count
            (done if ok else failed).append(message)
        self._delete(done)
        self._release(failed)
        return delivered

    def _deliver_message(self, message: dict[str, Any]) -> tuple[int, bool]:
        """Returns (records delivered, whether the message may be deleted)."""
        try:
            body = json.loads(message["Body"])
        except ValueError:
            log.error("%s: dropping a message that is not JSON: %.200s", self.name, message["Body"])
            return 0, True
        if body.get("Event") == "s3:TestEvent":
            self.test_events_skipped += 1
            return 0, True
        delivered, ok = 0, True
        for record in body.get("Records", []):
            routes = [route for route in self.routes if route.matches(record)]
            if not routes:
                log.debug("%s: no handler for %s", self.name, record.get("s3", {}).get("object"))
            for route in routes:
                if self._invoke(route, record):
                    delivered += 1
                else:
                    ok = False
        return delivered, ok

    def _invoke(self, route: S3Route, record: dict[str, Any]) -> bool:
        event = {"Records": [complete_s3_record(record)]}
        try:
            route.handler(event, lambda_context(route.name))
        except Exception:  # noqa: BLE001 - a failing handler means redelivery, as in AWS
            key = record.get("s3", {}).get("object", {}).get("key")
            log.exception("%s: handler %s failed for key %s", self.name, route.name, key)
            return False
        return True


def _lambda_message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """boto3's ``MessageAttributes`` in the shape Lambda's SQS records use."""
    converted = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value["DataType"],
        }
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        converted[name] = item
    return converted


class SqsPump(QueuePump):
    """Delivers messages of one queue to an ``@app.on_sqs_message`` handler.

    Like the Lambda SQS poller: up to ``batch_size`` messages per invocation as
    ``{"Records": [...]}``; the whole batch is deleted when the handler returns and made visible
    again when it raises.

    Args:
        queue_url: The queue to poll.
        handler: ``handler(event, context)``.
        sqs_client: A boto3 SQS client (default: the shared one).
        name: The Lambda function name.
        batch_size: Messages per invocation (1-10, as the decorator's ``batch_size``).
        queue_arn: The queue's ARN for ``eventSourceARN`` (looked up when omitted).
        **options: ``wait_seconds``, ``retry_delay_seconds`` (see QueuePump).
    """

    def __init__(
        self,
        queue_url: str,
        handler: LambdaHandler,
        sqs_client: Any = None,
        *,
        name: str = "sqs_message",
        batch_size: int = 1,
        queue_arn: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(queue_url, sqs_client, name=name, max_messages=batch_size, **options)
        self.handler = handler
        self._queue_arn = queue_arn

    @property
    def queue_arn(self) -> str:
        """The queue's ARN."""
        if self._queue_arn is None:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
            )
            self._queue_arn = attributes["Attributes"]["QueueArn"]
        return self._queue_arn

    def record(self, message: dict[str, Any]) -> dict[str, Any]:
        """A received message in the shape of a Lambda SQS event record."""
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": _lambda_message_attributes(message.get("MessageAttributes", {})),
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": region(),
        }

    def _handle(self, messages: list[dict[str, Any]]) -> int:
        event = {"Records": [self.record(message) for message in messages]}
        try:
            self.handler(event, lambda_context(self.name))
        except Exception:  # noqa: BLE001 - a failing handler means redelivery, as in AWS
            log.exception("%s: handler failed for %d message(s)", self.name, len(messages))
            self._release(messages)
            return 0
        self._delete(messages)
        return len(messages)


def queue_url_for(sqs_client: Any, queue: str | None, queue_arn: str | None) -> str:
    """The URL of a queue named by name or ARN, created if the local stack lacks it."""
    name = queue or (queue_arn or "").rsplit(":", 1)[-1]
    try:
        return sqs_client.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs_client.exceptions.QueueDoesNotExist:
        log.warning("queue %s does not exist locally; creating it", name)
        return sqs_client.create_queue(QueueName=name)["QueueUrl"]


def sqs_pumps_for_app(app: Any, sqs_client: Any = None, **options: Any) -> list[SqsPump]:
    """An :class:`SqsPump` for every ``@app.on_sqs_message`` handler registered on a Chalice app."""
    from chalice.app import SQSEventConfig

    sqs = sqs_client or _default_sqs_client()
    return [
        SqsPump(
            queue_url_for(sqs, source.queue, source.queue_arn),
            app.handler_map[source.name],
            sqs,
            name=source.name,
            batch_size=source.batch_size,
            queue_arn=source.queue_arn,
            **options,
        )
        for source in app.event_sources
        if isinstance(source, SQSEventConfig)
    ]
