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
from chalicelib.core.tables import create_all_tables
from chalicelib.dataversion.storage import CAS_PREFIX, INCOMING_PREFIX


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
        s3_events_queue_url: Queue receiving the data bucket's ``incoming/`` notifications.
        jobs_queue_url: Queue of asynchronous explanation jobs.
    """

    tables: list[str]
    buckets: list[str]
    event_bus: str
    s3_events_queue_url: str
    jobs_queue_url: str


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


def _create_queue(name: str) -> tuple[str, str]:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    arn = attributes["Attributes"]["QueueArn"]
    return url, arn


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
    s3_url, s3_arn = _create_queue(s3_events_queue_name())
    jobs_url, _ = _create_queue(settings.explanation_jobs_queue)
    _notify_incoming(settings.data_bucket, s3_arn)
    return Resources(tables, buckets, settings.event_bus_name, s3_url, jobs_url)


def describe(resources: Resources) -> str:
    """A short JSON description for logs."""
    return json.dumps(resources.__dict__, indent=2)
