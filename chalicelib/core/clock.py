"""Clocks: every domain takes one so tests can control time. All times are timezone-aware UTC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current UTC time."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(timezone.utc)


class FixedClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=timezone.utc)

    def now(self) -> datetime:
        """The current fixed time."""
        return self._now

    def advance(self, **delta: float) -> datetime:
        """Moves the clock forward by a ``timedelta(**delta)`` and returns the new time."""
        self._now = self._now + timedelta(**delta)
        return self._now


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def to_iso(moment: datetime | None) -> str | None:
    """ISO-8601 text of a UTC datetime, or ``None``."""
    if moment is None:
        return None
    return ensure_utc(moment).isoformat()


def ensure_utc(moment: datetime) -> datetime:
    """Returns ``moment`` as an aware UTC datetime; naive values are refused.

    Raises:
        ValueError: ``moment`` has no timezone.
    """
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(timezone.utc)


def parse_iso(text: str) -> datetime:
    """Parses ISO-8601 text into an aware UTC datetime (``Z`` accepted; naive refused).

    Raises:
        ValueError: The text is not ISO-8601 or has no timezone.
    """
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ensure_utc(value)
