"""JSON encoding rules: Decimal as string, UTC ISO datetimes, enums, dataclasses, no NaN."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum

import numpy as np
import pytest

from chalicelib.core.clock import FixedClock, ensure_utc, parse_iso, to_iso
from chalicelib.core.jsonutil import dumps


class Color(Enum):
    RED = "red"


@dataclass
class Point:
    x: int


def test_decimal_weights_serialize_as_strings() -> None:
    assert json.loads(dumps({"w": Decimal("0.25")})) == {"w": "0.25"}


def test_rich_values_serialize() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    text = dumps(
        {"t": moment, "c": Color.RED, "p": Point(1), "s": {2, 1}, "a": np.array([1, 2]), "u": (1,)}
    )
    assert json.loads(text) == {
        "t": "2026-01-02T03:04:05+00:00",
        "c": "red",
        "p": {"x": 1},
        "s": [1, 2],
        "a": [1, 2],
        "u": [1],
    }


def test_nan_and_infinity_become_null() -> None:
    assert json.loads(dumps({"a": float("nan"), "b": [float("inf"), 1.5]})) == {
        "a": None,
        "b": [None, 1.5],
    }


def test_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        ensure_utc(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        parse_iso("2026-01-01T00:00:00")
    assert parse_iso("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert to_iso(None) is None


def test_fixed_clock_moves_only_when_told() -> None:
    clock = FixedClock()
    start = clock.now()
    assert clock.advance(minutes=5) - start == (clock.now() - start)
    assert (clock.now() - start).total_seconds() == 300
