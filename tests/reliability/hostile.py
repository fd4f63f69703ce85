"""Hostile strategies for the API fuzz: what an attacker sends instead of what the schema says.

A hostile case starts from a schema-valid case (so that it gets past the parts of validation
it does not attack) and replaces one thing with a hostile value:

* one node of the JSON body (or the whole body) with raw JSON text: arrays and objects nested
  65 to 100,000 levels deep (balanced or not), numbers of 39 to 5,000 digits, ``1e999``,
  ``NaN``, ``Infinity``, strings holding control, bidirectional-formatting or lone surrogate
  characters, and strings of up to a megabyte;
* one query value or path parameter with a 1,000-digit numeral, ``nan``/``inf``, control and
  bidirectional characters, or a 20,000-character string.

The body is sent as raw bytes (``json.dumps`` could not even encode a 3,000-deep list).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

DEPTHS = (65, 3_000, 100_000)
# NUL, ESC, DEL, NEL (C1), RLO, LRI, PDI, ALM, the line separator, a BOM.
CONTROLS = ["\x00", "\x1b", "\x7f", "\x85", "\u202e", "\u2066", "\u2069", "\u061c", "\u2028"]
CONTROLS += ["\ufeff"]
SENTINEL = "\u2063hostile\u2063"
_URL_STRUCTURE = str.maketrans("", "", "?#/")


def _deep(depth: int, closed: bool, object_form: bool) -> str:
    opener, inner, closer = ('{"a":', "1", "}") if object_form else ("[", "", "]")
    return opener * depth + inner + (closer * depth if closed else "")


_control_text = st.lists(
    st.sampled_from(CONTROLS) | st.characters(codec="utf-8"), min_size=1, max_size=40
).map(lambda chars: "".join(chars) + CONTROLS[len(chars) % len(CONTROLS)])

# Raw JSON text that replaces one node of a body.
hostile_json = st.one_of(
    st.builds(_deep, st.sampled_from(DEPTHS), st.booleans(), st.booleans()),
    st.integers(39, 5_000).map(lambda digits: "9" * digits),
    st.sampled_from(
        ["-" + "1" * 1_000, "0." + "1" * 1_000, "1e999", "-1e400", "1e-400"]
        + ["NaN", "Infinity", "-Infinity", "9" * 1_000 + "e999"]
    ),
    _control_text.map(json.dumps),
    st.sampled_from(['"\\ud800"', '"x\\udfffy"', '{"\\ud83d": 1}']),
    st.sampled_from([100_000, 1_000_000]).map(lambda size: json.dumps("x" * size)),
)

# Plain text for a query value or a path parameter.
hostile_text = st.one_of(
    st.integers(39, 5_000).map(lambda digits: "9" * digits),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e400"]),
    _control_text,
    st.just("x" * 20_000),
)


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node of a JSON value (the root first) as a path of keys and indexes."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _nodes(item, (*path, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {
            key: _replace(item, rest, new) if key == head else item for key, item in value.items()
        }
    return [_replace(item, rest, new) if i == head else item for i, item in enumerate(value)]


@dataclass
class Attack:
    """One hostile change to a case."""

    where: str  # "body", "query" or "path"
    name: str  # the query or path parameter, or the body path as text
    value: str  # raw JSON text (body) or plain text (query, path)

    def body_bytes(self, body: Any, path: tuple[Any, ...]) -> bytes:
        """``body`` with the node at ``path`` replaced by the raw hostile text."""
        marked = json.dumps(_replace(body, path, SENTINEL))
        return marked.replace(json.dumps(SENTINEL), self.value, 1).encode("utf-8", "surrogatepass")


@st.composite
def attack(draw: Any, body: Any, has_body: bool, query: list[str], path: list[str]) -> Any:
    """A hostile change to a case with this body and these query and path parameter names.

    Returns ``(Attack, body path)``; the body path is only meaningful for body attacks.
    """
    # The body carries the most structure: it is attacked twice as often as a parameter.
    places = (["body", "body"] if has_body else []) + (["query"] if query else [])
    places += ["path"] if path else []
    where = draw(st.sampled_from(places))
    if where == "body":
        nodes = _nodes(body) if body is not None else [()]
        node = draw(st.sampled_from(nodes))
        return Attack("body", "/".join(map(str, node)), draw(hostile_json)), node
    names = query if where == "query" else path
    value = draw(hostile_text)
    if where == "path":
        # schemathesis leaves "?" and "#" unencoded in a path and "/" splits it: those would
        # send another URL (another route), not a hostile value for this parameter.
        value = value.translate(_URL_STRUCTURE) or "x"
    return Attack(where, draw(st.sampled_from(names)), value), ()
