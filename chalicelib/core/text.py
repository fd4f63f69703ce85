"""One rule for the text clients name things with, used by every request schema.

A **name** (a dataset, model, experiment or variant name, a tag, a group, a principal, a feature
or column name, a file name) is one line of visible text: no C0 or C1 control character (NUL,
ESC, DEL, U+0085, ...), no bidirectional formatting character (U+202E RIGHT-TO-LEFT OVERRIDE and
its kin, which make a name display as something else) and no line or paragraph separator.
A **text** (a description, a reason) may also hold tabs and line breaks.

Use the annotated types in pydantic models::

    class CreateModelBody(BaseModel):
        name: Name = Field(min_length=1, max_length=200)
        description: Text = Field(default="", max_length=2000)

A refused value is a 400 naming the field, the character (as ``U+XXXX``, never echoed raw) and
its position. The rule is also published as the field's ``pattern`` in ``GET /openapi.json``,
so that clients and fuzzers know it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

# Bidirectional formatting characters: ALM, LRM, RLM, LRE/RLE/PDF/LRO/RLO, LRI/RLI/FSI/PDI.
_BIDI = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_NAME_FORBIDDEN = r"\u0000-\u001f\u007f-\u009f" + _BIDI + r"\u2028\u2029"
_TEXT_FORBIDDEN = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f" + _BIDI


def name_pattern(also: str = "") -> str:
    """The JSON-schema pattern of a name (``also``: further forbidden characters, escaped)."""
    return f"^[^{_NAME_FORBIDDEN}{also}]*$"


NAME_PATTERN = name_pattern()
TEXT_PATTERN = f"^[^{_TEXT_FORBIDDEN}]*$"
_NAME_BAD = re.compile(f"[{_NAME_FORBIDDEN}]")
_TEXT_BAD = re.compile(f"[{_TEXT_FORBIDDEN}]")


def _refuse(value: str, bad: re.Pattern[str], what: str) -> str:
    found = bad.search(value)
    if found is None:
        return value
    raise PydanticCustomError(
        "forbidden_character",
        "{what} may not hold control or bidirectional-formatting characters; "
        "found {char} at position {position}",
        {"what": what, "char": f"U+{ord(found.group()):04X}", "position": found.start()},
    )


def check_name(value: str) -> str:
    """Returns ``value`` if it is a valid name.

    Raises:
        PydanticCustomError: It holds a control, bidirectional-formatting or line-separator
            character (pydantic reports it as a 400 naming the field).
    """
    return _refuse(value, _NAME_BAD, "a name")


def check_text(value: str) -> str:
    """Returns ``value`` if it is valid free text (tabs and line breaks allowed).

    Raises:
        PydanticCustomError: It holds another control or a bidirectional-formatting character.
    """
    return _refuse(value, _TEXT_BAD, "text")


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid name (``None`` if it is), for checks outside pydantic."""
    found = _NAME_BAD.search(value)
    if found is None:
        return None
    return f"control or bidirectional-formatting character U+{ord(found.group()):04X}"


def visible(value: str) -> str:
    """``value`` with every character a name may not hold written as ``\\uXXXX`` (for error
    messages that quote what a client sent)."""
    return _NAME_BAD.sub(lambda found: f"\\u{ord(found.group()):04x}", value)


Name = Annotated[
    str, AfterValidator(check_name), Field(json_schema_extra={"pattern": NAME_PATTERN})
]
Text = Annotated[
    str, AfterValidator(check_text), Field(json_schema_extra={"pattern": TEXT_PATTERN})
]
