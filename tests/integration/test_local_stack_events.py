"""The local stack finds an app's scheduled, S3 and SQS handlers on the app object and runs them
with Lambda's event shapes; it starts and stops cleanly."""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from chalice import Chalice, Cron, Rate

from chalicelib.core.config import get_settings
from chalicelib.core.errors import ValidationError
from synapse_local.stack import PROJECT_DIR, LocalStack


def wait_for(predicate: Callable[[], bool], limit: float = 15.0) -> bool:
    """Polls ``predicate`` until it holds or ``limit`` seconds pass (a bound, not a measurement)."""
    pause = threading.Event()
    for _ in range(int(limit / 0.05)):
        if predicate():
            return True
        pause.wait(0.05)
    return predicate()


def test_stop_restores_the_environment_and_closes_the_port() -> None:
    before = os.environ.get("AWS_ENDPOINT_URL")
    token = "local-test-admin-token-0001"
    with LocalStack(admin_token=token, run_schedules=False, run_pumps=False) as stack:
        url = stack.url
        assert os.environ["AWS_ENDPOINT_URL"] == stack.endpoint_url
        whoami = requests.get(
            f"{url}/auth/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert whoami.status_code == 200
        assert whoami.json()["roles"] == ["admin"]

    assert os.environ.get("AWS_ENDPOINT_URL") == before
    assert not stack.started
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=5)


def test_stop_asks_every_pump_to_stop_before_waiting_for_any() -> None:
    """Each pump's thread may sit in a long poll: asked all at once, the polls end together
    (waiting for one pump at a time let the others keep polling, a poll's wait each)."""
    calls: list[tuple[str, str]] = []

    class Pump:
        def __init__(self, name: str) -> None:
            self.name = name

        def request_stop(self) -> None:
            calls.append(("asked", self.name))

        def stop(self) -> None:
            calls.append(("waited", self.name))

    stack = LocalStack(run_schedules=False)
    stack.sqs_pumps = [Pump("jobs"), Pump("monitor")]  # type: ignore[list-item]
    stack.s3_pump = Pump("s3")  # type: ignore[assignment]
    stack.stop()
    assert calls == [
        ("asked", "jobs"), ("asked", "monitor"), ("asked", "s3"),
        ("waited", "jobs"), ("waited", "monitor"), ("waited", "s3"),
    ]  # fmt: skip
    assert stack.sqs_pumps == [] and stack.s3_pump is None


def test_the_app_module_is_imported_from_the_project_directory_wherever_the_stack_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``python -m synapse_local`` names the app module (``"app"``): started from another
    directory, the stack puts the project directory first on ``sys.path``, and serves it with
    the project's ``.chalice/config.json`` (its ``local`` stage)."""
    import app as app_module

    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != str(PROJECT_DIR)])
    stack = LocalStack(app="app", run_schedules=False, run_pumps=False)
    stack._load_app()
    assert sys.path[0] == str(PROJECT_DIR)
    assert Path(app_module.__file__).resolve() == PROJECT_DIR / "app.py"
    assert stack.app is app_module.app
    local = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())["stages"]["local"]
    config = stack._chalice_config()
    assert (config.chalice_stage, config.lambda_timeout) == ("local", local["lambda_timeout"])


def test_too_short_admin_token_fails_the_start_and_leaves_nothing_running() -> None:
    before = os.environ.get("AWS_ENDPOINT_URL")
    stack = LocalStack(admin_token="short", run_schedules=False, run_pumps=False)

    with pytest.raises(ValidationError):
        stack.start()

    assert os.environ.get("AWS_ENDPOINT_URL") == before
    assert not stack.started


class EventApp:
    """A Chalice app with one handler of each kind, recording what they receive."""

    def __init__(self) -> None:
        settings = get_settings()
        self.app = Chalice(app_name="events-test")
        self.ticks: list[Any] = []
        self.tick_failures = 1
        self.weekly: list[Any] = []
        self.files: list[tuple[str, str]] = []
        self.file_failures = 1
        self.jobs: list[str] = []
        app = self.app

        @app.route("/ping")
        def ping() -> dict[str, bool]:
            return {"pong": True}

        @app.schedule(Rate(1, unit=Rate.HOURS), name="tick")
        def tick(event: Any) -> None:
            if self.tick_failures:
                self.tick_failures -= 1
                raise RuntimeError("first tick fails")
            self.ticks.append(event)

        @app.schedule(Cron(0, 3, "?", "*", "SUN", "*"), name="weekly")
        def weekly(event: Any) -> None:
            self.weekly.append(event)

        @app.on_s3_event(
            bucket=settings.data_bucket, prefix="incoming/", suffix=".csv", name="ingest"
        )
        def ingest(event: Any) -> None:
            if self.file_failures:
                self.file_failures -= 1
                raise RuntimeError("first delivery fails")
            self.files.append((event.bucket, event.key))

        @app.on_sqs_message(queue=settings.explanation_jobs_queue, batch_size=2, name="worker")
        def worker(event: Any) -> None:
            self.jobs.extend(record.body for record in event)


@pytest.fixture(scope="module")
def events() -> Iterator[tuple[LocalStack, EventApp]]:
    recorder = EventApp()
    stack = LocalStack(
        app=recorder.app,
        schedule_seconds=0.2,
        pump_options={"retry_delay_seconds": 0, "wait_seconds": 1},
    )
    with stack:
        yield stack, recorder


def test_every_handler_kind_is_discovered_on_the_app(events: Any) -> None:
    stack, _ = events

    assert {job.name for job in stack.scheduler.jobs} == {"tick", "weekly"}
    assert [route.name for route in stack.s3_pump.routes] == ["ingest"]
    assert [pump.name for pump in stack.sqs_pumps] == ["worker"]
    assert stack.sqs_pumps[0].max_messages == 2
    assert "ingest <- s3://" in stack.describe()


def test_app_routes_are_served_over_http(events: Any) -> None:
    stack, _ = events

    assert requests.get(f"{stack.url}/ping", timeout=10).json() == {"pong": True}


def test_scheduled_handler_gets_a_cloudwatch_scheduled_event_and_survives_a_failure(
    events: Any,
) -> None:
    stack, recorder = events

    assert wait_for(lambda: len(recorder.ticks) >= 2)

    tick = next(job for job in stack.scheduler.jobs if job.name == "tick")
    assert tick.failures == 1
    event = recorder.ticks[0].to_dict()
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"][0].endswith(":rule/events-test-local-tick")
    assert event["time"].endswith("Z")


def test_override_applies_to_cron_schedules_too(events: Any) -> None:
    _, recorder = events

    assert wait_for(lambda: len(recorder.weekly) >= 1)


def test_s3_handler_gets_decoded_key_after_a_failed_first_delivery(events: Any) -> None:
    stack, recorder = events
    bucket = get_settings().data_bucket
    key = f"incoming/sales 2026+Q1 €{uuid.uuid4().hex[:4]}.csv"
    s3 = boto3.client("s3", endpoint_url=stack.endpoint_url, region_name="us-east-1")

    s3.put_object(Bucket=bucket, Key=key, Body=b"a\n1\n")
    s3.put_object(Bucket=bucket, Key="incoming/ignored.json", Body=b"{}")

    assert wait_for(lambda: (bucket, key) in recorder.files)
    assert stack.s3_pump.failures >= 1
    assert all(found.endswith(".csv") for _, found in recorder.files)


def test_sqs_handler_gets_messages_sent_to_its_queue(events: Any) -> None:
    stack, recorder = events
    sqs = boto3.client("sqs", endpoint_url=stack.endpoint_url, region_name="us-east-1")
    bodies = [f"job-{uuid.uuid4().hex[:6]}" for _ in range(3)]

    for body in bodies:
        sqs.send_message(QueueUrl=stack.resources.jobs_queue_url, MessageBody=body)

    assert wait_for(lambda: set(bodies) <= set(recorder.jobs))
