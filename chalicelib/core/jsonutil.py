"""JSON encoding rules shared by every response: Decimal as string, UTC ISO datetimes, no NaN."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _sanitize(value: Any) -> Any:
    """Replaces NaN and infinities (not valid JSON) with ``None``, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _sanitize(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(item) for item in value]
    return value


def dumps(value: Any) -> str:
    """Serializes ``value`` to strict JSON with the project's encoding rules."""
    try:
        return json.dumps(value, default=_default, allow_nan=False, separators=(",", ":"))
    except ValueError:
        plain = json.loads(json.dumps(value, default=_default))
        return json.dumps(_sanitize(plain), allow_nan=False, separators=(",", ":"))


# ---- reading untrusted JSON -----------------------------------------------------------------

# DynamoDB stores numbers with at most 38 significant digits; a longer run of digits in a JSON
# number cannot be stored (and a 4,000-digit integer is no one's measurement).
MAX_NUMBER_DIGITS = 38
DEFAULT_MAX_DEPTH = 64

_BRACKETS = b"[]{}"
# bytes.translate tables: keep only brackets (as "[" and "]"); the shape of numbers (every digit
# as "0", "e"/"E" as "e", signs as "+", anything else " ").
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(_BRACKETS)))


def _shape_table() -> bytes:
    table = bytearray(b" " * 256)
    for digit in b"0123456789":
        table[digit] = ord("0")
    table[ord("e")] = table[ord("E")] = ord("e")
    table[ord("+")] = table[ord("-")] = ord("+")
    return bytes(table)


_SHAPE = _shape_table()
# A number whose exponent has three or more digits may leave the range of a double.
_WIDE_EXPONENT = re.compile(rb"(?<![\d.])-?\d++(?:\.\d++)?[eE][+-]?\d{3,}+")
# The same in a number's shape ("e000" or "e+000"): one re scan, where bytes' own search for
# such short needles crawls through text of long runs of "0" (a matrix of floats).
_WIDE_EXPONENT_SHAPE = re.compile(rb"e\+?000")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_BACKSLASHES = re.compile(r"\\\\")
_ESCAPED_QUOTE = re.compile(r'\\"')
# Any of the three escapes above, in one scan: text without one (most bodies, and inline CSV
# with its thousands of "\n") skips the other two scans.
_NOTABLE_ESCAPE = re.compile(r'\\(?:[\\"]|u[dD][89a-fA-F])')
# Up to this many quotes, the text outside strings is cut out quote by quote (see _quotes).
_FEW_QUOTES = 256
# A skeleton read from a few strings' quotes alone is at most this fraction of the text.
_FEW_STRINGS_SHARE = 64
_NEWLINE = 10


class JsonLimitExceeded(ValueError):
    """JSON that is well-formed or not, but beyond a documented limit (depth, digits, range)."""


def loads(
    text: str | bytes,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_digits: int | None = MAX_NUMBER_DIGITS,
    finite: bool = True,
) -> Any:
    """Parses untrusted JSON with explicit bounds instead of the interpreter's recursion limit.

    Checked before parsing, in C on the text with its strings removed: arrays and objects
    nest at most ``max_depth`` levels, and no number has a run of more than ``max_digits``
    digits (``None``: unchecked). With ``finite``, ``NaN`` and ``Infinity`` (not JSON) and
    numbers outside the range of a double (``1e999``) are refused too. Strings holding a lone
    UTF-16 surrogate (``"\\ud800"``), which cannot be encoded as UTF-8, are always refused.

    Raises:
        JsonLimitExceeded: Too deep, too many digits, out of range or a lone surrogate.
        ValueError: Not JSON (``json.JSONDecodeError``) or not UTF-8/16/32 text.
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode(json.detect_encoding(text))
    skeleton, escaped = _read_skeleton(text)
    _check_depth(skeleton, max_depth)
    shape = skeleton.translate(_SHAPE)
    if max_digits is not None and b"0" * (max_digits + 1) in shape:
        raise JsonLimitExceeded(f"a number has more than {max_digits} digits")
    if finite and _WIDE_EXPONENT_SHAPE.search(shape):
        _check_range(skeleton)
    value = json.loads(text, parse_constant=_refuse_constant if finite else None)
    if _lone_surrogate_in(text, value, escaped):
        raise JsonLimitExceeded("a string holds a lone UTF-16 surrogate (not valid Unicode)")
    return value


def _read_skeleton(text: str) -> tuple[bytes, bool | None]:
    """The skeleton of ``text``, and whether it holds a notable escape (``None``: not looked
    for, the skeleton having been read from a few strings' quotes alone)."""
    quick = _few_strings_skeleton(text)
    if quick is not None:
        return quick, None
    escaped = _has_notable_escape(text)
    return _skeleton(text, escaped), escaped


def _lone_surrogate_in(text: str, value: Any, escaped: bool | None) -> bool:
    """Whether a string of ``value`` holds a lone surrogate that came from an escape."""
    if escaped is None:  # a few strings in a long text: their values cost less than a scan
        return (
            "\\" in text
            and _has_lone_surrogate(value)
            and _SURROGATE_ESCAPE.search(text) is not None
        )
    return escaped and _SURROGATE_ESCAPE.search(text) is not None and _has_lone_surrogate(value)


def loads_lines(
    text: str,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_digits: int | None = MAX_NUMBER_DIGITS,
    finite: bool = True,
) -> list[Any] | None:
    """Each ``\n``-separated line of ``text`` parsed as :func:`loads` parses it alone, in one
    parse of the lines as the elements of an array (``[line,\nline,\n...]``) with the bounds
    checked once over that text.

    The array holds what the lines hold exactly when it parses, has one element per line and
    every line's brackets balance within the line (read from the skeleton, which a successful
    parse shows to be right: no string can span the ``\n`` between lines). A line that held
    more than one value (``1, 2``) would add an element, so the count could only match if
    another line's value ran into the next (``[1`` then ``2]``), which leaves both lines
    unbalanced. Bounds: the array nests one level deeper than its deepest line and no digit
    run crosses a line end. Any failure answers ``None``, and :func:`loads` on each line tells
    which line and why.
    """
    lines = text.count("\n") + 1
    array = "[" + text.replace("\n", ",\n") + "]"
    skeleton = None
    try:
        if max_digits is None and not finite and "\\" not in text:
            if not _plain_lines_fit(text, max_depth):
                return None
        else:
            skeleton = _skeleton(array)
            _check_depth(skeleton, max_depth + 1)
            shape = skeleton.translate(_SHAPE)
            if max_digits is not None and b"0" * (max_digits + 1) in shape:
                return None
            if finite and _WIDE_EXPONENT_SHAPE.search(shape):
                _check_range(skeleton)
        values = json.loads(array, parse_constant=_refuse_constant if finite else None)
    except ValueError:  # JsonLimitExceeded and JSONDecodeError included
        return None
    if len(values) != lines or (skeleton is not None and not _lines_balance(skeleton)):
        return None
    if "\\" in text and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(values):
        return None
    return values


def _plain_lines_fit(text: str, max_depth: int) -> bool:
    """For text without a backslash, where every quote opens or closes a string: whether no
    string runs past a line end and every line's brackets outside strings nest at most
    ``max_depth`` deep, balance within the line and close none it did not open (the checks
    :func:`loads_lines` makes on the skeleton, read from the quotes' parity with numpy
    instead of splitting the text at every quote)."""
    import numpy as np  # only the data paths that parse many lines come here

    raw = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    if not len(raw):
        return True
    inside = np.bitwise_xor.accumulate((raw == ord('"')).view(np.uint8))  # 1 within a string
    folded = raw | 0x20  # "[" -> "{", "]" -> "}" (no other byte lands on either)
    steps = (folded == ord("{")).view(np.int8) - (folded == ord("}")).view(np.int8)
    steps &= inside.view(np.int8) - 1  # brackets inside strings step 0
    # Steps of one: a depth that wraps in int8 first passes max_depth + 1 <= 127 or -1, which
    # fails the check as the exact depth would, so one byte per position is enough below 127.
    depth = np.cumsum(steps, dtype=np.int8 if max_depth < 127 else np.int64)
    ends = np.append(np.flatnonzero(raw == _NEWLINE), len(raw) - 1)
    ends_outside = (inside[ends] == 0) & (depth[ends] == 0)
    return bool(ends_outside.all() and depth.min() >= 0 and depth.max() <= max_depth)


def _lines_balance(skeleton: bytes) -> bool:
    """Whether every line of an array's skeleton closes the brackets it opens and closes none
    it did not open: the depth is 1 at every line end and never below 1 before the last
    ``]``."""
    import numpy as np  # only the data paths that parse many lines come here

    steps = np.zeros(256, dtype=np.int8)
    steps[list(b"[{")], steps[list(b"]}")] = 1, -1
    marks = np.frombuffer(skeleton, dtype=np.uint8)
    depth = np.cumsum(steps[marks], dtype=np.int64)
    return bool((depth[:-1] >= 1).all() and (depth[marks == _NEWLINE] == 1).all())


def nesting_depth(text: str, limit: int) -> int:
    """The deepest nesting of arrays and objects in ``text`` (strings ignored), counted up to
    ``limit + 1``: any deeper text answers ``limit + 1``.

    Raises:
        ValueError: The brackets are not balanced (so the text is not JSON).
    """
    return _bracket_depth(_skeleton(text), limit)


def _has_notable_escape(text: str) -> bool:
    """Whether ``text`` holds an escaped backslash, an escaped quote or a surrogate escape
    (``"\\"`` in text is a memchr; the pattern is searched with re, many times faster than
    str's search)."""
    return "\\" in text and _NOTABLE_ESCAPE.search(text) is not None


def _skeleton(text: str, escaped: bool | None = None) -> bytes:
    """The text outside JSON strings (as UTF-8), every string reduced to ``""``.

    Escaped backslashes, then escaped quotes, are dropped first, so every quote left delimits a
    string and the pieces between quotes alternate outside/inside. All of it runs in C: the cost
    is a few copies of the text outside strings, whatever its shape. (In text that is not JSON
    the pieces may be misread, but only after the point where the parser itself stops.)

    Args:
        text: The JSON text.
        escaped: What :func:`_has_notable_escape` says of ``text``, when already known.
    """
    # Each replace copies the text: only when there is something to drop.
    if escaped is None:
        escaped = _has_notable_escape(text)
    if escaped and _BACKSLASHES.search(text):
        text = text.replace("\\\\", "")
    if escaped and _ESCAPED_QUOTE.search(text):
        text = text.replace('\\"', "")
    return '""'.join(_outside_strings(text)).encode("utf-8", "surrogatepass")


def _few_strings_skeleton(text: str) -> bytes | None:
    """The skeleton of a text with backslashes whose few strings hold nearly all of it (an
    inline CSV and its thousands of ``\\n``), read from its quotes without scanning the
    strings for escapes: when no quote follows a backslash none is escaped, and dropping
    escaped backslashes could change no string's extent, only what lies inside strings (or
    outside them, which is then checked to hold no backslash). ``None`` when that does not
    hold, when there are more than ``_FEW_QUOTES`` quotes, or when the skeleton is more than
    ``1 / _FEW_STRINGS_SHARE`` of the text (so that walking the parsed value is cheap)."""
    if "\\" not in text:
        return None  # nothing to scan for: the ordinary reading costs no scan
    quotes = _quotes(text)
    if quotes is None or any(text[quote - 1 : quote] == "\\" for quote in quotes):
        return None
    outside = '""'.join(_pieces_outside(text, quotes))
    if "\\" in outside or len(outside) * _FEW_STRINGS_SHARE > len(text):
        return None
    return outside.encode("utf-8", "surrogatepass")


def _outside_strings(text: str) -> list[str]:
    """The pieces of ``text`` before the first quote, between each closing quote and the next
    opening one, and after the last closing one: ``text.split('"')[::2]``, without copying
    the strings when there are few (a long string, an inline CSV or a base64 artifact, is
    then never copied)."""
    quotes = _quotes(text)
    if quotes is None:
        return text.split('"')[::2]
    return _pieces_outside(text, quotes)


def _quotes(text: str) -> list[int] | None:
    """Where the quotes of ``text`` are (found with memchr), when there are at most
    ``_FEW_QUOTES`` of them; ``None`` when there are more."""
    found: list[int] = []
    pos = text.find('"')
    while pos >= 0:
        if len(found) == _FEW_QUOTES:
            return None
        found.append(pos)
        pos = text.find('"', pos + 1)
    return found


def _pieces_outside(text: str, quotes: list[int]) -> list[str]:
    """The pieces of ``text`` outside the strings its ``quotes`` delimit (the pieces of
    ``text.split('"')`` at even places)."""
    bounds = [-1, *quotes, len(text)]
    return [text[bounds[i] + 1 : bounds[i + 1]] for i in range(0, len(bounds) - 1, 2)]


def _bracket_depth(skeleton: bytes, limit: int) -> int:
    """Each pass removes the innermost ``[]`` pairs of the bracket skeleton at C speed, so the
    work is at most ``limit + 1`` passes over the text whatever the input."""
    brackets = skeleton.translate(_SQUARE, _NOT_BRACKETS)
    for depth in range(limit + 1):
        if not brackets:
            return depth
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            raise json.JSONDecodeError("unbalanced brackets", "", 0)
        brackets = shorter
    return limit + 1


def _check_depth(skeleton: bytes, max_depth: int) -> None:
    if _bracket_depth(skeleton, max_depth) > max_depth:
        raise JsonLimitExceeded(f"arrays and objects nest deeper than {max_depth} levels")


def _check_range(skeleton: bytes) -> None:
    for match in _WIDE_EXPONENT.finditer(skeleton):
        token = match.group().decode("ascii")
        value = float(token)
        mantissa = token.lower().split("e")[0]
        if not math.isfinite(value) or (value == 0 and mantissa.strip("-0.")):
            raise JsonLimitExceeded(f"the number {token[:40]} is outside the range of a double")


def _refuse_constant(name: str) -> Any:
    raise JsonLimitExceeded(f"{name} is not a JSON number")


def _has_lone_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii() and _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
