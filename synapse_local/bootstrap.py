"""Creates every AWS resource a deployment has, against whatever endpoint boto3 points at.

Used by the local stack (against moto's server) and by the tests (against ``mock_aws``). Tables
come from the PynamoDB models registered in :mod:`chalicelib.core.tables`, the one source of truth.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from chalicelib.core import aws
from chalicelib.core.config import Settings, get_settings, region
from chalicelib.dataversion.storage import CAS_PREFIX, INCOMING_PREFIX
from chalicelib.domains import create_all_tables

# Receives before a message moves to its dead-letter queue, as deployed: S3 invokes the ingest
# functions asynchronously (one try plus Lambda's two retries, then the function's DLQ), and the
# jobs queue's redrive policy allows infra.template.QUEUE_MAX_RECEIVES.
S3_EVENT_ATTEMPTS = 3
JOBS_MAX_RECEIVES = 5


def s3_events_queue_name() -> str:
    """The SQS queue that stands in for the S3 trigger locally."""
    return os.environ.get("S3_EVENTS_QUEUE", "synapse-s3-events")


@dataclass(frozen=True)
class Resources:
    """What the bootstrap created.

    Attributes:
        tables: DynamoDB table names.
        buckets: S3 bucket names.
        event_bus: EventBridge bus name.
        s3_events_queue_url: Queue receiving the data bucket's ``incoming/`` and ``cas/``
            notifications.
        jobs_queue_url: Queue of asynchronous explanation jobs.
        s3_events_dlq_url: Where S3 events go after ``S3_EVENT_ATTEMPTS`` failed deliveries.
        jobs_dlq_url: Where jobs go after ``JOBS_MAX_RECEIVES`` failed deliveries.
        monitor_queue_url: Queue the experiment monitor fans running experiments out to.
        monitor_dlq_url: Where monitor messages go after ``JOBS_MAX_RECEIVES`` receives.
    """

    tables: list[str]
    buckets: list[str]
    event_bus: str
    s3_events_queue_url: str
    jobs_queue_url: str
    s3_events_dlq_url: str
    jobs_dlq_url: str
    monitor_queue_url: str = ""
    monitor_dlq_url: str = ""


def _create_bucket(name: str) -> None:
    s3 = aws.client("s3")
    kwargs: dict[str, object] = {"Bucket": name}
    if region() != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region()}
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(**kwargs)


def _create_bus(name: str) -> None:
    events = aws.client("events")
    with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
        events.create_event_bus(Name=name)


def _queue_arn(url: str) -> str:
    attributes = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def _create_queue(name: str, max_receives: int) -> tuple[str, str, str]:
    """A queue whose messages move to ``<name>-dlq`` after ``max_receives`` receives.

    Returns:
        The queue's URL and ARN, and the dead-letter queue's URL.
    """
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    redrive = {"deadLetterTargetArn": _queue_arn(dlq_url), "maxReceiveCount": str(max_receives)}
    attributes = {"VisibilityTimeout": "60", "RedrivePolicy": json.dumps(redrive)}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, _queue_arn(url), dlq_url


def _notify_incoming(bucket: str, queue_arn: str) -> None:
    """Every new object under ``incoming/`` and every PUT into ``cas/``, as the deployed stack
    subscribes ``dataset_ingest`` and ``dataset_upload``."""
    subscriptions = ((INCOMING_PREFIX, "s3:ObjectCreated:*"), (CAS_PREFIX, "s3:ObjectCreated:Put"))
    aws.client("s3").put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": [events],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
                for prefix, events in subscriptions
            ]
        },
    )


def bootstrap(settings: Settings | None = None) -> Resources:
    """Creates tables, buckets, the event bus, queues and the S3→SQS notification (idempotent)."""
    settings = settings or get_settings()
    tables = create_all_tables()
    buckets = [settings.data_bucket, settings.models_bucket]
    for bucket in buckets:
        _create_bucket(bucket)
    _create_bus(settings.event_bus_name)
    s3_url, s3_arn, s3_dlq = _create_queue(s3_events_queue_name(), S3_EVENT_ATTEMPTS)
    jobs_url, _, jobs_dlq = _create_queue(settings.explanation_jobs_queue, JOBS_MAX_RECEIVES)
    monitor_url, _, monitor_dlq = _create_queue(
        settings.experiment_monitor_queue, JOBS_MAX_RECEIVES
    )
    _notify_incoming(settings.data_bucket, s3_arn)
    return Resources(
        tables, buckets, settings.event_bus_name, s3_url, jobs_url, s3_dlq, jobs_dlq,
        monitor_url, monitor_dlq,
    )  # fmt: skip


def describe(resources: Resources) -> str:
    """A short JSON description for logs."""
    return json.dumps(resources.__dict__, indent=2)
