"""The local stack's queue pumps against a real moto server: S3 puts and SQS messages reach the
registered handlers with Lambda's event shapes, at least once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from chalice import Chalice
from moto.server import ThreadedMotoServer

from synapse_local.pumps import S3EventPump, SqsPump, sqs_pumps_for_app
from tests.helpers.net import free_port

REGION = "us-east-1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class Recorder:
    """A Lambda-style handler that records events and can fail a number of times first."""

    def __init__(self, failures: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self.failures = failures

    def __call__(self, event: dict[str, Any], context: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("handler failed")
        self.events.append(event)
        self.contexts.append(context)

    @property
    def keys(self) -> list[str]:
        return [r["s3"]["object"]["key"] for e in self.events for r in e["Records"]]


@pytest.fixture
def notified_bucket(endpoint: str) -> tuple[str, str, Any, Any]:
    """A fresh bucket whose ``incoming/`` puts notify a fresh queue: (bucket, url, s3, sqs)."""
    s3, sqs = client("s3", endpoint), client("sqs", endpoint)
    suffix = uuid.uuid4().hex[:8]
    bucket = f"pump-data-{suffix}"
    s3.create_bucket(Bucket=bucket)
    url = sqs.create_queue(QueueName=f"pump-events-{suffix}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
                }
            ]
        },
    )
    return bucket, url, s3, sqs


def drain(pump: S3EventPump | SqsPump, polls: int = 3) -> int:
    return sum(pump.poll_once(wait_seconds=0) for _ in range(polls))


def test_s3_put_reaches_the_handler_with_the_lambda_event_shape(notified_bucket: Any) -> None:
    bucket, url, s3, sqs = notified_bucket
    recorder = Recorder()
    pump = S3EventPump(url, recorder, sqs, bucket=bucket, prefix="incoming/")

    s3.put_object(Bucket=bucket, Key="incoming/iris.csv", Body=b"a,b\n1,2\n")

    assert drain(pump) == 1
    (event,) = recorder.events
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == bucket
    assert record["s3"]["object"]["key"] == "incoming/iris.csv"
    assert record["s3"]["object"]["size"] == 8
    assert "sequencer" in record["s3"]["object"]
    assert recorder.contexts[0].function_name == "s3_event"


def test_s3_test_event_is_skipped_and_deleted(notified_bucket: Any) -> None:
    _, url, _, sqs = notified_bucket
    recorder = Recorder()
    pump = S3EventPump(url, recorder, sqs)

    assert drain(pump) == 0  # the s3:TestEvent sent when the notification was configured

    assert pump.test_events_skipped == 1
    assert recorder.events == []
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_keys_arrive_url_encoded_as_s3_sends_them_and_chalice_decodes_them(
    notified_bucket: Any,
) -> None:
    bucket, url, s3, sqs = notified_bucket
    app = Chalice(app_name="pump-test")
    seen: list[tuple[str, str]] = []

    @app.on_s3_event(bucket=bucket, prefix="incoming/", name="ingest")
    def ingest(event: Any) -> None:
        seen.append((event.bucket, event.key))

    key = "incoming/my data+v2 ünïcode.csv"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    pump = S3EventPump.for_app(app, url, sqs)

    assert drain(pump) == 1
    assert seen == [(bucket, key)]


def test_raw_key_in_the_event_is_quote_plus_encoded(notified_bucket: Any) -> None:
    bucket, url, s3, sqs = notified_bucket
    recorder = Recorder()
    key = "incoming/a b+c é.csv"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    drain(S3EventPump(url, recorder, sqs))

    (raw,) = recorder.keys
    assert raw == "incoming/a+b%2Bc+%C3%A9.csv"
    assert unquote_plus(raw) == key


def test_handler_filters_by_prefix_suffix_and_bucket(notified_bucket: Any) -> None:
    bucket, url, s3, sqs = notified_bucket
    csv_only, other_bucket = Recorder(), Recorder()
    pump = S3EventPump(url, csv_only, sqs, bucket=bucket, prefix="incoming/", suffix=".csv")
    pump.routes.append(
        S3EventPump(url, other_bucket, sqs, bucket="another-bucket", name="other").routes[0]
    )

    s3.put_object(Bucket=bucket, Key="incoming/a.csv", Body=b"x")
    s3.put_object(Bucket=bucket, Key="incoming/b.parquet", Body=b"x")
    s3.put_object(Bucket=bucket, Key="elsewhere/c.csv", Body=b"x")  # not notified at all

    assert drain(pump) == 1
    assert csv_only.keys == ["incoming/a.csv"]
    assert other_bucket.events == []


def test_failed_handler_gets_the_record_again(notified_bucket: Any) -> None:
    bucket, url, s3, sqs = notified_bucket
    recorder = Recorder(failures=1)
    pump = S3EventPump(url, recorder, sqs, retry_delay_seconds=0)
    s3.put_object(Bucket=bucket, Key="incoming/retry.csv", Body=b"x")

    assert pump.poll_once(wait_seconds=0) == 0  # the test event is skipped, the put fails
    assert pump.failures == 1
    assert recorder.events == []
    assert pump.poll_once(wait_seconds=1) == 1

    assert recorder.keys == ["incoming/retry.csv"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_sqs_message_reaches_the_handler_with_the_lambda_record_shape(endpoint: str) -> None:
    sqs = client("sqs", endpoint)
    url = sqs.create_queue(QueueName=f"jobs-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps({"job_id": "j1"}),
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "shap"}},
    )
    recorder = Recorder()
    pump = SqsPump(url, recorder, sqs, name="explanation_worker")

    assert drain(pump) == 1

    (record,) = recorder.events[0]["Records"]
    assert json.loads(record["body"]) == {"job_id": "j1"}
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(url.rsplit("/", 1)[-1])
    assert record["messageAttributes"]["kind"]["stringValue"] == "shap"
    assert {"messageId", "receiptHandle", "attributes", "md5OfBody"} <= set(record)
    assert record["attributes"]["ApproximateReceiveCount"] == "1"


def test_sqs_pumps_are_built_for_every_registered_handler_and_use_chalice_records(
    endpoint: str,
) -> None:
    sqs = client("sqs", endpoint)
    name = f"work-{uuid.uuid4().hex[:8]}"
    app = Chalice(app_name="pump-test")
    bodies: list[str] = []

    @app.on_sqs_message(queue=name, batch_size=5, name="worker")
    def worker(event: Any) -> None:
        bodies.extend(record.body for record in event)

    (pump,) = sqs_pumps_for_app(app, sqs)  # creates the queue the stack lacks
    assert pump.max_messages == 5
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=pump.queue_url, MessageBody=body)

    assert drain(pump) == 3
    assert sorted(bodies) == ["a", "b", "c"]


def test_failed_sqs_handler_leaves_the_message_for_redelivery(endpoint: str) -> None:
    sqs = client("sqs", endpoint)
    url = sqs.create_queue(QueueName=f"jobs-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="job")
    recorder = Recorder(failures=1)
    pump = SqsPump(url, recorder, sqs, retry_delay_seconds=0)

    assert pump.poll_once(wait_seconds=0) == 0
    assert pump.poll_once(wait_seconds=1) == 1

    (record,) = recorder.events[0]["Records"]
    assert record["attributes"]["ApproximateReceiveCount"] == "2"


def test_pump_thread_delivers_until_stopped(notified_bucket: Any) -> None:
    bucket, url, s3, sqs = notified_bucket
    recorder = Recorder()
    pump = S3EventPump(url, recorder, sqs, wait_seconds=1).start()
    try:
        s3.put_object(Bucket=bucket, Key="incoming/threaded.csv", Body=b"x")
        for _ in range(50):
            if recorder.events:
                break
            pump._stop.wait(0.1)
    finally:
        pump.stop()

    assert recorder.keys == ["incoming/threaded.csv"]
    assert not pump.running


def test_message_that_is_not_an_s3_notification_is_dropped_not_retried_forever(
    endpoint: str,
) -> None:
    sqs = client("sqs", endpoint)
    url = sqs.create_queue(QueueName=f"garbage-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="not json")
    recorder = Recorder()
    pump = S3EventPump(url, recorder, sqs)

    assert pump.poll_once(wait_seconds=0) == 0

    assert recorder.events == []
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert attributes["ApproximateNumberOfMessages"] == "0"


def test_sqs_handler_declared_by_queue_arn_polls_that_queue(endpoint: str) -> None:
    sqs = client("sqs", endpoint)
    name = f"by-arn-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = f"arn:aws:sqs:{REGION}:123456789012:{name}"
    app = Chalice(app_name="pump-test")

    @app.on_sqs_message(queue_arn=arn, name="by_arn")
    def by_arn(event: Any) -> None:
        return None

    (pump,) = sqs_pumps_for_app(app, sqs)

    assert pump.queue_url == url
    assert pump.queue_arn == arn
