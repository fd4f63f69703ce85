"""JSON encoding rules: Decimal as string, UTC ISO datetimes, enums, dataclasses, no NaN."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.core import jsonutil
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


# ---- reading untrusted JSON (jsonutil.loads), against the standard library as the oracle -----

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def _depth(value: object) -> int:
    """Reference nesting depth, by recursion over the parsed value."""
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None, database=None)
@given(value=_json_values, ascii_only=st.booleans())
def test_bounded_loads_agrees_with_json_loads_and_measures_depth_exactly(
    value: object, ascii_only: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    depth = _depth(value)
    assert jsonutil.nesting_depth(text, 64) == min(depth, 65)
    assert jsonutil.loads(text, max_depth=max(depth, 0)) == json.loads(text)
    if depth:
        with pytest.raises(jsonutil.JsonLimitExceeded, match=f"deeper than {depth - 1} levels"):
            jsonutil.loads(text, max_depth=depth - 1)


@settings(max_examples=100, deadline=None, database=None)
@given(value=_json_values, few=st.sampled_from([0, 1, 2, 3, 256]))
def test_strings_are_found_alike_quote_by_quote_and_by_one_split(value: object, few: int) -> None:
    """The first quotes are found one by one, the rest of the text split at once; wherever
    the switch falls, what lies outside strings is the standard library's reading."""
    text = json.dumps(value)
    with patch.object(jsonutil, "_FEW_QUOTES", few):
        assert jsonutil.nesting_depth(text, 64) == min(_depth(value), 65)
        assert jsonutil.loads(text, max_depth=65) == json.loads(text)
        assert jsonutil._outside_strings(text) == text.split('"')[::2]


@settings(max_examples=100, deadline=None, database=None)
@given(value=_json_values, ascii_only=st.booleans())
def test_a_value_beside_one_long_string_of_escapes_reads_as_the_standard_library_reads_it(
    value: object, ascii_only: bool
) -> None:
    """Text whose few strings hold nearly all of it (an inline CSV) is read from its quotes
    without a scan for escapes; what it parses to and how deep it nests stay exact."""
    text = json.dumps({"csv": "1,2\n" * 5_000, "v": value}, ensure_ascii=ascii_only)
    depth = _depth(value) + 1
    assert jsonutil.nesting_depth(text, 64) == min(depth, 65)
    assert jsonutil.loads(text, max_depth=depth) == json.loads(text)
    with pytest.raises(jsonutil.JsonLimitExceeded, match=f"deeper than {depth - 1} levels"):
        jsonutil.loads(text, max_depth=depth - 1)


def test_a_long_string_of_escapes_is_still_checked_for_lone_surrogates_and_long_numbers() -> None:
    csv = json.dumps("1,2\n" * 5_000)[1:-1]
    lone = '{"data": "' + csv + '\\ud800"}'
    with pytest.raises(jsonutil.JsonLimitExceeded, match="lone UTF-16 surrogate"):
        jsonutil.loads(lone)
    paired = '{"data": "' + csv + '\\ud83d\\ude00", "k": "\\u00e9"}'
    assert jsonutil.loads(paired) == json.loads(paired)
    # Outside strings (not JSON), an escaped backslash is dropped before digits are counted,
    # as in any other text: the two runs of 20 digits are one of 40.
    digits = '{"data": "' + csv + '", "n": ' + "1" * 20 + "\\\\" + "1" * 20 + "}"
    with pytest.raises(jsonutil.JsonLimitExceeded, match="more than 38 digits"):
        jsonutil.loads(digits)


def test_a_deep_body_after_many_strings_or_one_long_one_is_still_refused() -> None:
    deep = "[" * 65 + "1" + "]" * 65
    many = json.dumps({"names": [f"n{i}" for i in range(1_000)]})[:-1] + ', "x": ' + deep + "}"
    long_csv = json.dumps({"data": "1,2\n" * 100_000 + "[" * 100})[:-1] + ', "x": ' + deep + "}"
    for text in (many, long_csv):
        with pytest.raises(jsonutil.JsonLimitExceeded, match="deeper than 64 levels"):
            jsonutil.loads(text)
    fine = json.dumps({"data": "a\nb\n" * 1_000 + '\\"' + "[" * 100, "n": [[1]]})
    assert jsonutil.nesting_depth(fine, 64) == 3
    assert jsonutil.loads(fine) == json.loads(fine)


@pytest.mark.parametrize("depth", [64, 65, 3_000, 100_000])
def test_nesting_is_bounded_before_parsing_at_any_depth(depth: int) -> None:
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        text = opener * depth + "1" + closer * depth
        if depth <= 64:
            assert jsonutil.nesting_depth(text, 64) == depth
            jsonutil.loads(text)
        else:
            with pytest.raises(jsonutil.JsonLimitExceeded, match="deeper than 64 levels"):
                jsonutil.loads(text)


@pytest.mark.parametrize(
    "text",
    ["[" * 5_000, "]" * 10 + "[" * 5_000, '{"a":' * 5_000, "[[]"],
)
def test_unbalanced_deep_text_is_invalid_json_not_a_recursion_error(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        jsonutil.loads(text)
    assert not isinstance(caught.value, RecursionError)


def test_brackets_inside_strings_and_escapes_do_not_count() -> None:
    text = json.dumps({"a": "[" * 500 + '\\"[' + "{" * 500, "b": ['"]]]', "\\", "\\\\"]})
    assert jsonutil.nesting_depth(text, 64) == 2
    assert jsonutil.loads(text) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9" * 4001, "more than 38 digits"),
        ('{"n": -' + "1" * 39 + "}", "more than 38 digits"),
        ('{"n": 0.' + "1" * 39 + "}", "more than 38 digits"),
        ('{"n": 1e999}', "outside the range of a double"),
        ('{"n": -1E+400}', "outside the range of a double"),
        ('{"n": 1e-400}', "outside the range of a double"),
        ('{"n": NaN}', "NaN is not a JSON number"),
        ('{"n": [Infinity]}', "Infinity is not a JSON number"),
        ('{"n": -Infinity}', "-Infinity is not a JSON number"),
        ('{"s": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"\\udfff": 1}', "lone UTF-16 surrogate"),
    ],
)
def test_numbers_beyond_dynamodb_or_double_and_lone_surrogates_are_refused(
    text: str, message: str
) -> None:
    with pytest.raises(jsonutil.JsonLimitExceeded, match=message):
        jsonutil.loads(text)


def test_numbers_at_the_limits_and_escaped_pairs_are_kept() -> None:
    text = '{"i": %s, "f": 1.7976931348623157e308, "t": 5e-324, "z": 0e-999, "e": "\\ud83d\\ude00"}'
    value = jsonutil.loads(text % ("9" * 38))
    assert value == {"i": 10**38 - 1, "f": 1.7976931348623157e308, "t": 5e-324, "z": 0.0, "e": "😀"}
    assert jsonutil.loads('"\\\\ud800"') == "\\ud800"  # an escaped backslash, not an escape
    # digits inside strings are text, not numbers
    assert jsonutil.loads(json.dumps({"s": "9" * 5000})) == {"s": "9" * 5000}


def test_data_mode_keeps_numbers_as_written_but_still_bounds_depth() -> None:
    lenient = {"max_digits": None, "finite": False}
    assert jsonutil.loads('{"a": NaN, "b": 1e999}', **lenient)["b"] == float("inf")
    assert jsonutil.loads('{"a": %s}' % ("7" * 400), **lenient)["a"] == int("7" * 400)
    with pytest.raises(jsonutil.JsonLimitExceeded):
        jsonutil.loads("[" * 65 + "]" * 65, **lenient)


def test_bytes_in_utf8_and_utf16_are_decoded_and_invalid_utf8_is_refused() -> None:
    assert jsonutil.loads('{"a": "é"}'.encode()) == {"a": "é"}
    assert jsonutil.loads('{"a": "é"}'.encode("utf-16")) == {"a": "é"}
    with pytest.raises(ValueError):
        jsonutil.loads(b'{"a": "\xff"}')


# ---- numbers after validation (core.http.check_numbers), against a plain recursive oracle ----

_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
_nested = st.recursive(
    _numbers,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=40,
)


def _bad_number(value: object) -> bool:
    """Reference: is there a non-finite float or an integer of 39+ digits anywhere?"""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int):
        return abs(value) >= 10**38
    items = value.values() if isinstance(value, dict) else value
    return any(_bad_number(item) for item in items)


@settings(max_examples=400, deadline=None, database=None)
@given(value=_nested)
def test_check_numbers_refuses_exactly_what_the_oracle_finds(value: object) -> None:
    from chalicelib.core.errors import ValidationError
    from chalicelib.core.http import check_numbers

    if _bad_number(value):
        with pytest.raises(ValidationError, match="not a finite number|more than 38 digits"):
            check_numbers(value, "body")
    else:
        check_numbers(value, "body")


def test_check_numbers_names_the_field_in_rows_of_numbers() -> None:
    from chalicelib.core.errors import ValidationError
    from chalicelib.core.http import check_numbers

    rows = [[0.5] * 30 for _ in range(1_000)]
    check_numbers({"rows": rows}, "body")
    rows[700][29] = float("nan")
    with pytest.raises(ValidationError, match=r"body\.rows\.700\.29: nan"):
        check_numbers({"rows": rows}, "body")
    rows[700][29] = 1e308  # finite: fine, even though a row's sum overflows
    check_numbers({"rows": [[1e308, 1e308], [-(10**37), 10**37]]}, "body")


_LINE_PARTS = st.sampled_from(
    [
        '{"a": 1}',
        ' {"t": "say \\"hi\\", [[{"}\t\r',
        "[1, [2, [3]]]",
        '"x"',
        "12",
        "null",
        '{"d": ' + "[" * 70 + "]" * 70 + "}",
        '{"n": NaN}',
        '{"n": 1e999}',
        "9" * 50,
        '{"s": "\\ud800"}',
        '{"s": "\\\\", "e": "\\ud83d\\ude00"}',
        '{"a": "x',
        'x"}',
        '{"a": [1',
        '2]}, {"c": 3}',
        "}",
        "",
        " ",
        '\ufeff{"a": 1}',
        '{"a": 1} {"b": 2}',
        '{"a": 1},',
        "\\",
        '"\\',
        "[" * 100,
        "[" * 256 + "]" * 256,  # a depth that wraps around a byte (256 -> 0)
        '{"w": ' + "[" * 127 + "]" * 127 + "}",
        "]" * 256 + "[" * 256,
        "]" * 3 + "[" * 3,
        "[1",
        "2]",
        "3, 4",
        '"ab',
        'cd"',
        "1], [2",
    ]
)


@settings(max_examples=800, deadline=None, database=None)
@given(lines=st.lists(_LINE_PARTS, min_size=1, max_size=6), lenient=st.booleans())
def test_lines_parsed_at_once_are_what_each_line_parses_to_alone(
    lines: list[str], lenient: bool
) -> None:
    """``loads_lines`` answers the lines' values exactly when ``loads`` (and ``json.loads``)
    accepts every line alone, and ``None`` as soon as one is refused or not JSON: merged
    neighbours (``{"a": [1`` then ``2]}, {"c": 3}``), strings or brackets left open across a
    line end, a byte-order mark and values past the bounds included."""
    bounds = {"max_digits": None, "finite": False} if lenient else {}
    alone: list[object] | None = []
    for line in lines:
        try:
            value = jsonutil.loads(line, max_depth=64, **bounds)
        except ValueError:
            alone = None
            break
        assert alone is not None
        assert json.dumps(value) == json.dumps(json.loads(line))
        alone.append(value)
    found = jsonutil.loads_lines("\n".join(lines), max_depth=64, **bounds)
    assert (found is None) == (alone is None)
    if alone is not None:
        assert json.dumps(found) == json.dumps(alone)
