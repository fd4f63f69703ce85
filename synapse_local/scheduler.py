"""The local stand-in for EventBridge scheduled rules: runs every ``@app.schedule`` handler.

Each handler runs in its own thread on its ``Rate`` or ``Cron`` (AWS syntax), receiving the
CloudWatch "Scheduled Event" that EventBridge would send. ``SYNAPSE_SCHEDULE_SECONDS`` (or the
``override_seconds`` argument) replaces every schedule with a fixed period, so a demo sees the
experiment monitor act within seconds. A handler that raises is logged and runs again on its next
tick; nothing a handler does stops the runner.
"""

from __future__ import annotations

import calendar
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from chalicelib.core.config import region
from synapse_local.pumps import LOCAL_ACCOUNT, LambdaHandler, lambda_context

log = logging.getLogger("synapse.local.scheduler")

_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {name.upper(): index for index, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
# (low, high, names) for minutes, hours, day of month, month, day of week (1 = SUN), year.
_CRON_FIELDS = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, _MONTHS),
    (1, 7, _DAYS),
    (1970, 2199, {}),
)
_SEARCH_DAYS = 366 * 5


class Schedule(Protocol):
    """When a scheduled handler runs next."""

    def next_after(self, moment: datetime) -> datetime:
        """The first run strictly after ``moment`` (UTC)."""
        ...


@dataclass(frozen=True)
class Every:
    """A fixed period (``rate(...)`` or the override)."""

    seconds: float

    def next_after(self, moment: datetime) -> datetime:
        """``moment`` plus the period."""
        return moment + timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return f"every {self.seconds:g} s"


def _replace_names(text: str, names: dict[str, int]) -> str:
    def number(match: re.Match[str]) -> str:
        if match.group(0) not in names:
            raise ValueError(f"cron field {text!r}: unknown name {match.group(0)!r}")
        return str(names[match.group(0)])

    return re.sub(r"[A-Z]{3}", number, text.upper())


def _parse_cron_field(
    text: str, low: int, high: int, names: dict[str, int]
) -> frozenset[int] | None:
    """The allowed values of one cron field, or ``None`` for any (``*`` / ``?``)."""
    if text in {"*", "?"}:
        return None
    numeric = _replace_names(text, names)
    if not re.fullmatch(r"[0-9*/,-]+", numeric):
        raise ValueError(f"cron field {text!r}: only * ? , - / and values (no L, W, #)")
    values: set[int] = set()
    for part in numeric.split(","):
        spec, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if spec == "*":
            start, stop = low, high
        else:
            first, _, last = spec.partition("-")
            start = int(first)
            stop = int(last) if last else (high if step_text else start)
        if not low <= start <= stop <= high or step < 1:
            raise ValueError(f"cron field {text!r} is outside {low}-{high}")
        values.update(range(start, stop + 1, step))
    return frozenset(values)


class CronSchedule:
    """An EventBridge cron expression (six fields, UTC, minute resolution).

    Args:
        fields: ``minutes hours day-of-month month day-of-week year``.

    Raises:
        ValueError: Malformed expression, or ``L``/``W``/``#`` (not supported locally).
    """

    def __init__(self, fields: str) -> None:
        parts = fields.split()
        if len(parts) != 6:
            raise ValueError(f"cron({fields}) needs 6 fields")
        self.text = fields
        parsed = [_parse_cron_field(p, *spec) for p, spec in zip(parts, _CRON_FIELDS, strict=True)]
        self.minutes, self.hours, self.days, self.months, self.weekdays, self.years = parsed

    @staticmethod
    def _allows(values: frozenset[int] | None, value: int) -> bool:
        return values is None or value in values

    def _day_matches(self, day: datetime) -> bool:
        if not (self._allows(self.years, day.year) and self._allows(self.months, day.month)):
            return False
        aws_weekday = (day.weekday() + 1) % 7 + 1  # Python: Monday 0; AWS: Sunday 1
        if self.days is not None and self.weekdays is not None:
            return day.day in self.days or aws_weekday in self.weekdays
        return self._allows(self.days, day.day) and self._allows(self.weekdays, aws_weekday)

    def _times(self) -> list[tuple[int, int]]:
        hours = sorted(self.hours) if self.hours is not None else range(24)
        minutes = sorted(self.minutes) if self.minutes is not None else range(60)
        return [(hour, minute) for hour in hours for minute in minutes]

    def next_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after ``moment``."""
        start = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        times = self._times()
        for _ in range(_SEARCH_DAYS):
            if self._day_matches(day):
                for hour, minute in times:
                    candidate = day.replace(hour=hour, minute=minute)
                    if candidate >= start:
                        return candidate
            day += timedelta(days=1)
        raise ValueError(f"cron({self.text}) never fires in the next {_SEARCH_DAYS} days")

    def __str__(self) -> str:
        return f"cron({self.text})"


def parse_schedule(expression: Any) -> Schedule:
    """A :class:`Schedule` for a Chalice ``Rate``/``Cron`` or an expression string.

    Raises:
        ValueError: An expression this runner cannot interpret.
    """
    text = expression if isinstance(expression, str) else expression.to_string()
    rate = re.fullmatch(r"rate\((\d+)\s+(minute|hour|day)s?\)", text.strip())
    if rate:
        return Every(int(rate.group(1)) * _UNIT_SECONDS[rate.group(2)])
    cron = re.fullmatch(r"cron\((.+)\)", text.strip())
    if cron:
        return CronSchedule(cron.group(1))
    raise ValueError(f"unknown schedule expression {text!r}")


def scheduled_event(rule_name: str, when: datetime) -> dict[str, Any]:
    """The event EventBridge sends to a scheduled Lambda function."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "time": when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region(),
        "resources": [f"arn:aws:events:{region()}:{LOCAL_ACCOUNT}:rule/{rule_name}"],
        "detail": {},
    }


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class ScheduledJob:
    """One scheduled handler.

    Attributes:
        name: The Lambda function name.
        handler: ``handler(event, context)``.
        schedule: When it runs.
        runs: Invocations that returned.
        failures: Invocations that raised.
    """

    name: str
    handler: LambdaHandler
    schedule: Schedule
    runs: int = 0
    failures: int = 0
    last_result: Any = field(default=None, repr=False)


class ScheduleRunner:
    """Runs scheduled handlers, each in its own thread.

    Args:
        jobs: The handlers and their schedules.
        rule_prefix: Prefix of rule names in events (``<app>-<stage>-``, as Chalice names them).
        now: Time source (UTC).
    """

    def __init__(
        self,
        jobs: Iterable[ScheduledJob],
        *,
        rule_prefix: str = "synapsenet-local-",
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.jobs = list(jobs)
        self.rule_prefix = rule_prefix
        self.now = now
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def for_app(
        cls, app: Any, override_seconds: float | None = None, stage: str = "local"
    ) -> ScheduleRunner:
        """A runner for every ``@app.schedule`` handler of a Chalice app.

        Args:
            app: The Chalice app.
            override_seconds: Run every handler at this period instead of its own schedule.
            stage: Used in the rule names of the events.
        """
        from chalice.app import ScheduledEventConfig

        jobs = []
        for source in app.event_sources:
            if not isinstance(source, ScheduledEventConfig):
                continue
            if override_seconds:
                schedule: Schedule = Every(override_seconds)
            else:
                schedule = parse_schedule(source.schedule_expression)
            jobs.append(ScheduledJob(source.name, app.handler_map[source.name], schedule))
        return cls(jobs, rule_prefix=f"{app.app_name}-{stage}-")

    def invoke(self, job: ScheduledJob, when: datetime | None = None) -> bool:
        """Invokes one handler now; returns whether it succeeded (failures are logged)."""
        event = scheduled_event(self.rule_prefix + job.name, when or self.now())
        try:
            job.last_result = job.handler(event, lambda_context(job.name))
        except Exception:  # noqa: BLE001 - a failing handler must not stop the schedule
            job.failures += 1
            log.exception("scheduled handler %s failed", job.name)
            return False
        job.runs += 1
        log.info("scheduled handler %s ran: %s", job.name, job.last_result)
        return True

    def start(self) -> ScheduleRunner:
        """Starts one daemon thread per job; returns ``self``."""
        self._stop.clear()
        for job in self.jobs:
            thread = threading.Thread(
                target=self._loop, args=(job,), name=f"schedule-{job.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the threads, waiting for a running handler to return (at most ``timeout`` s)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s still running after %.0f s", thread.name, timeout)
        self._threads = []

    def _loop(self, job: ScheduledJob) -> None:
        due = job.schedule.next_after(self.now())
        while not self._stop.wait(max(0.0, (due - self.now()).total_seconds())):
            self.invoke(job, due)
            due = job.schedule.next_after(due)
            now = self.now()
            if due <= now:
                log.warning("scheduled handler %s overran its schedule; skipping ticks", job.name)
                while due <= now:
                    due = job.schedule.next_after(due)
