"""The CSV cell typing that versions stored before pyarrow's rule hold in their schemas.

Until CSV cells were typed as pyarrow's CSV reader types them, a cell was an ``int`` when it
matched ``[+-]?\\d+`` (any Unicode digits), a ``bool`` when it was ``true``/``false`` in any
case, a ``float`` when Python's ``float()`` read it, else a ``string``. Such schemas are kept
as they were stored; a new version is checked against them as that rule would have typed the
new data, so that data of the same kind is no incompatible change (``+5`` is an int to that
rule and a float to pyarrow; ``١٢٣`` an int to that rule and text to pyarrow).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from chalicelib.dataversion.models import DatasetSchema
from chalicelib.dataversion.schema import header_columns, merge_types

# The rule a version's schema was typed by; versions stored before it carry none.
CELL_TYPING = "pyarrow"
_INT = re.compile(r"^[+-]?\d+$")
_BOOLS = {"true": True, "false": False}


def _legacy_value_type(text: str) -> str:
    """The type the rule before pyarrow's gave one non-empty CSV cell."""
    if _INT.match(text):
        return "int"
    if text.lower() in _BOOLS:
        return "bool"
    try:
        float(text)
    except ValueError:
        return "string"
    return "float"


def legacy_csv_types(header: list[str], rows: list[list[str]]) -> dict[str, str]:
    """Each column's type by the rule before pyarrow's (a repeated name merges its columns;
    an all-empty column is ``string``), each distinct cell typed once."""
    types: dict[str, str | None] = dict.fromkeys(header)
    for name, cells in header_columns(header, rows):
        for cell in set(cells):
            if cell:
                types[name] = merge_types(types[name], _legacy_value_type(cell))
    return {name: kind or "string" for name, kind in types.items()}


def legacy_cell_value(text: str, kind: str) -> Any:
    """A non-empty CSV cell's value as the rule before pyarrow's read it in a column of type
    ``kind``: Python's ``int()`` and ``float()``, a boolean in any case.

    Raises:
        ValueError: The cell is not of that type.
    """
    if kind in ("int", "long"):
        return int(text)
    if kind in ("float", "double"):
        return float(text)
    if kind == "bool":
        if text.lower() not in _BOOLS:
            raise ValueError(f"{text!r} is not a bool")
        return _BOOLS[text.lower()]
    return text


def retyped(stored: DatasetSchema, legacy: dict[str, str], now: DatasetSchema) -> DatasetSchema:
    """A schema typed by the rule before pyarrow's, as pyarrow's rule types data of the kind
    new data is: a column whose stored type the old rule gives the new data takes the type
    pyarrow's rule gives it; any other column keeps its stored type."""
    columns = {
        name: now.columns[name] if name in now.columns and legacy.get(name) == kind else kind
        for name, kind in stored.columns.items()
    }
    return replace(stored, columns=columns)


__all__ = ["CELL_TYPING", "legacy_cell_value", "legacy_csv_types", "retyped"]
