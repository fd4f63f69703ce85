"""Runs the experiment monitor as deployed: the schedule fans out, the SQS worker checks."""

from __future__ import annotations

from typing import Any


def run_monitor(client: Any, when: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    """One scheduled tick at ``when``: invokes ``experiment_monitor`` (the fan-out), then
    ``experiment_monitor_worker`` for every message it queued (as the Lambda SQS poller would),
    deleting each after its handler returned.

    Returns:
        ``{"fan_out": <schedule payload>, "checked", "rolled_back", "ramped", "reweighted",
        "errors"}`` summed over the worker invocations.
    """
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    event["time"] = when
    fanned = client.lambda_.invoke("experiment_monitor", event).payload
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName=get_settings().experiment_monitor_queue)["QueueUrl"]
    total: dict[str, Any] = {"fan_out": fanned, "checked": 0, "rolled_back": [], "ramped": [],
                             "reweighted": [], "errors": []}  # fmt: skip
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            sqs_event = client.events.generate_sqs_event([message["Body"]])
            report = client.lambda_.invoke("experiment_monitor_worker", sqs_event).payload
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            total["checked"] += report["checked"]
            for key in ("rolled_back", "ramped", "reweighted", "errors"):
                total[key] += report[key]
    return total
