"""EventBridge faults: events are retried, kept in the outbox, redelivered by the maintenance
schedule with the same ``event_id`` (at least once), and never turn a committed change into an
error response.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.core.events import EventOutboxTable
from tests.conftest import Http
from tests.reliability.faults import FaultInjector, inject_faults, table_of


@pytest.fixture(scope="module")
def delivered(module_aws: Any) -> str:
    """A queue receiving every event on the bus (an EventBridge rule with an SQS target)."""
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    sqs, events = aws.client("sqs"), aws.client("events")
    url = sqs.create_queue(QueueName="rel-events-capture")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    bus = get_settings().event_bus_name
    events.put_rule(
        Name="rel-capture",
        EventBusName=bus,
        EventPattern=json.dumps({"source": [get_settings().event_source]}),
    )
    events.put_targets(
        Rule="rel-capture", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn["QueueArn"]}]
    )
    return url


@pytest.fixture
def faults(module_http: Http) -> Iterator[FaultInjector]:
    with inject_faults() as injector:
        yield injector


def _received(queue_url: str) -> list[dict[str, Any]]:
    from chalicelib.core import aws

    sqs = aws.client("sqs")
    found = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return found
        for message in batch:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _created_events(events: list[dict[str, Any]], model_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["detail-type"] == "ModelCreated" and e["detail"]["model_id"] == model_id
    ]


def _outboxed(model_id: str) -> list[EventOutboxTable]:
    return [item for item in EventOutboxTable.scan() if model_id in item.detail]


def _create(http: Http) -> str:
    response = http.call("POST", "/models", {"name": f"ev-{uuid.uuid4().hex[:8]}"})
    assert response.status_code == 201, response.data
    return response.data["model_id"]


def _run_maintenance(http: Http) -> Any:
    event = http.client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    return http.client.lambda_.invoke("maintenance", event)


def test_a_transient_eventbridge_failure_is_retried_and_delivered_once(
    module_http: Http, faults: FaultInjector, delivered: str
) -> None:
    _received(delivered)
    faults.fail("eventbridge", "PutEvents", kind="5xx", times=1)
    model_id = _create(module_http)
    assert faults.injected["eventbridge.PutEvents"] == 1
    assert _outboxed(model_id) == []
    assert len(_created_events(_received(delivered), model_id)) == 1


@pytest.mark.parametrize("kind", ["throttle", "5xx"])
def test_an_eventbridge_outage_keeps_the_event_for_the_maintenance_schedule(
    module_http: Http, faults: FaultInjector, delivered: str, kind: str
) -> None:
    _received(delivered)
    faults.fail("eventbridge", "PutEvents", kind=kind)
    model_id = _create(module_http)  # the change is committed; only the event is late
    assert module_http.call("GET", f"/models/{model_id}").status_code == 200
    [kept] = _outboxed(model_id)
    assert kept.detail_type == "ModelCreated"
    assert _created_events(_received(delivered), model_id) == []

    result = _run_maintenance(module_http)  # still down: stays in the outbox
    assert result.payload["events_redelivered"] == 0
    assert len(_outboxed(model_id)) == 1

    faults.clear()
    result = _run_maintenance(module_http)
    assert result.payload["events_redelivered"] >= 1
    assert _outboxed(model_id) == []
    [event] = _created_events(_received(delivered), model_id)
    assert event["detail"]["event_id"] == kept.event_id  # consumers can deduplicate


def test_eventbridge_and_outbox_both_down_do_not_fail_a_committed_change(
    module_http: Http, faults: FaultInjector, caplog: pytest.LogCaptureFixture
) -> None:
    faults.fail("eventbridge", "PutEvents", kind="5xx")
    faults.fail("dynamodb", "PutItem", kind="5xx", when=table_of(EventOutboxTable))
    caplog.clear()
    name = f"ev-{uuid.uuid4().hex[:8]}"
    response = module_http.call("POST", "/models", {"name": name})
    # The model exists, so the answer must say so: a 503 would make the client retry into a 409
    # (or, for a version, register a duplicate).
    assert response.status_code == 201, response.data
    model_id = response.data["model_id"]
    faults.clear()
    assert _outboxed(model_id) == []
    lost = [r for r in caplog.records if "event lost" in r.getMessage()]
    assert len(lost) == 1 and model_id in lost[0].detail
    assert lost[0].detail_type == "ModelCreated" and lost[0].event_id
