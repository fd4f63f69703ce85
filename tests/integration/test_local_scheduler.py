"""The local schedule runner: AWS rate/cron expressions, the scheduled event, failure handling."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import pytest
from chalice import Chalice, Cron, Rate

from synapse_local.scheduler import (
    CronSchedule,
    Every,
    ScheduledJob,
    ScheduleRunner,
    parse_schedule,
    scheduled_event,
)

MONDAY_NOON = datetime(2026, 11, 23, 12, 0, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        (Rate(1, unit=Rate.MINUTES), 60),
        (Rate(5, unit=Rate.MINUTES), 300),
        (Rate(2, unit=Rate.HOURS), 7200),
        (Rate(1, unit=Rate.DAYS), 86400),
        ("rate(10 minutes)", 600),
    ],
)
def test_rates_become_fixed_periods(expression: Any, seconds: int) -> None:
    assert parse_schedule(expression) == Every(seconds)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (Cron("0/15", "8-17", "?", "*", "MON-FRI", "*"), datetime(2026, 11, 23, 12, 15)),
        ("cron(0 3 ? * SUN *)", datetime(2026, 11, 29, 3, 0)),
        ("cron(30 9 1 JAN,JUL ? *)", datetime(2027, 1, 1, 9, 30)),
        ("cron(* * * * ? *)", datetime(2026, 11, 23, 12, 1)),
        ("cron(0 12 ? * 2 2027)", datetime(2027, 1, 4, 12, 0)),
        ("cron(0 0 ? * SAT,SUN *)", datetime(2026, 11, 28, 0, 0)),
    ],
)
def test_cron_expressions_fire_at_the_next_matching_minute(expression: Any, expected: Any) -> None:
    assert parse_schedule(expression).next_after(MONDAY_NOON) == expected.replace(
        tzinfo=timezone.utc
    )


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 12 L * ? *)",
        "cron(0 12 ? * 6#3 *)",
        "cron(0 12 * *)",
        "cron(61 * * * ? *)",
        "cron(0 12 ? * FUNDAY *)",
        "every tuesday",
    ],
)
def test_unsupported_or_malformed_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(expression)


def test_a_cron_that_never_fires_is_refused() -> None:
    with pytest.raises(ValueError, match="never fires"):
        CronSchedule("0 0 31 2 ? *").next_after(MONDAY_NOON)


def test_scheduled_event_has_the_eventbridge_shape() -> None:
    event = scheduled_event("synapsenet-local-maintenance", MONDAY_NOON)

    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["time"] == "2026-11-23T12:00:30Z"
    assert event["resources"] == [
        "arn:aws:events:us-east-1:123456789012:rule/synapsenet-local-maintenance"
    ]
    assert event["detail"] == {}


def test_runner_invokes_through_chalice_and_counts_failures() -> None:
    app = Chalice(app_name="sched")
    received: list[Any] = []

    @app.schedule(Rate(1, unit=Rate.MINUTES), name="ok")
    def ok(event: Any) -> str:
        received.append(event)
        return "done"

    @app.schedule("rate(5 minutes)", name="broken")
    def broken(event: Any) -> None:
        raise RuntimeError("boom")

    runner = ScheduleRunner.for_app(app)
    jobs = {job.name: job for job in runner.jobs}

    assert jobs["ok"].schedule == Every(60)
    assert runner.invoke(jobs["ok"], MONDAY_NOON) is True
    assert runner.invoke(jobs["broken"], MONDAY_NOON) is False
    assert (jobs["ok"].runs, jobs["ok"].last_result) == (1, "done")
    assert (jobs["broken"].runs, jobs["broken"].failures) == (0, 1)
    assert received[0].source == "aws.events"
    assert received[0].resources == ["arn:aws:events:us-east-1:123456789012:rule/sched-local-ok"]


def test_override_replaces_every_schedule() -> None:
    app = Chalice(app_name="sched")

    @app.schedule(Cron(0, 3, "?", "*", "SUN", "*"), name="weekly")
    def weekly(event: Any) -> None:
        return None

    (job,) = ScheduleRunner.for_app(app, override_seconds=2.5).jobs

    assert job.schedule == Every(2.5)


def test_runner_thread_keeps_running_after_a_handler_raises() -> None:
    calls: list[int] = []
    done = threading.Event()

    def flaky(event: dict[str, Any], context: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        done.set()

    job = ScheduledJob("flaky", flaky, Every(0.05))
    runner = ScheduleRunner([job]).start()
    try:
        assert done.wait(15)
    finally:
        runner.stop()

    assert job.failures == 1
    assert job.runs >= 1
