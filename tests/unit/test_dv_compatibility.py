"""Confluent Schema Registry's seven compatibility modes: every row of the README's table is run
here, with the schemas each row names, against every mode's column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chalicelib.dataversion.errors import SchemaEvolutionError
from chalicelib.dataversion.models import CompatibilityMode, DatasetSchema
from chalicelib.dataversion.schema import validate_against_history

README = Path(__file__).resolve().parents[2] / "README.md"
MODES = [mode.value for mode in CompatibilityMode]


def schema(
    columns: dict[str, str], nullable: tuple[str, ...] = (), pk: tuple[str, ...] = ("id",)
) -> DatasetSchema:
    return DatasetSchema(columns=columns, nullable=list(nullable), primary_key=list(pk))


BASE = {"id": "int", "score": "float", "name": "string"}

# The README row → the schemas of the earlier versions (oldest first) and of the new version.
ROWS: dict[str, list[DatasetSchema]] = {
    "add a nullable column": [
        schema(BASE),
        schema({**BASE, "country": "string"}, nullable=("country",)),
    ],
    "add a required column": [schema(BASE), schema({**BASE, "country": "string"})],
    "drop a nullable column": [
        schema(BASE, nullable=("name",)),
        schema({"id": "int", "score": "float"}),
    ],
    "drop a required column": [schema(BASE), schema({"id": "int", "score": "float"})],
    "rename a nullable column": [
        schema(BASE, nullable=("name",)),
        schema({"id": "int", "score": "float", "full_name": "string"}, nullable=("full_name",)),
    ],
    "rename a required column": [
        schema(BASE),
        schema({"id": "int", "score": "float", "full_name": "string"}),
    ],
    "widen int → long": [schema(BASE), schema({**BASE, "id": "long"})],
    "widen float → double": [schema(BASE), schema({**BASE, "score": "double"})],
    "narrow double → float": [
        schema({**BASE, "score": "double"}),
        schema(BASE),
    ],
    "change int → string": [schema(BASE), schema({**BASE, "id": "string"})],
    "make a required column nullable": [schema(BASE), schema(BASE, nullable=("score",))],
    "make a nullable column required": [schema(BASE, nullable=("score",)), schema(BASE)],
    "change the primary key": [schema(BASE), schema(BASE, pk=("name",))],
    "nullable int a → a dropped → nullable string a (each step compatible, first → last not)": [
        schema({**BASE, "a": "int"}, nullable=("a",)),
        schema(BASE),
        schema({**BASE, "a": "string"}, nullable=("a",)),
    ],
}


def readme_table() -> dict[str, dict[str, bool]]:
    """The table under "Compatibility modes" in the README: row → mode → accepted."""
    text = README.read_text()
    start = text.index("| change, earlier versions → new version |")
    lines = []
    for line in text[start:].splitlines():
        if not line.strip().startswith("|"):
            break
        lines.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, rows = lines[0], lines[2:]
    assert header[1:] == MODES, header
    return {
        row[0]: {mode: cell == "yes" for mode, cell in zip(MODES, row[1:], strict=True)}
        for row in rows
    }


def accepted(history: list[DatasetSchema], mode: str) -> bool:
    *earlier, new = history
    try:
        validate_against_history(list(earlier), new, CompatibilityMode(mode))
    except SchemaEvolutionError:
        return False
    return True


def test_the_readme_table_has_exactly_the_rows_tested_here() -> None:
    assert list(readme_table()) == list(ROWS)


@pytest.mark.parametrize("row", list(ROWS))
def test_every_row_of_the_readme_table_holds_in_every_mode(row: str) -> None:
    expected = readme_table()[row]
    found = {mode: accepted(ROWS[row], mode) for mode in MODES}
    assert found == expected


def test_intermediate_rows_of_a_transitive_history_are_each_compatible() -> None:
    """The transitive row's steps pass one by one; only the whole history fails."""
    history = ROWS[next(row for row in ROWS if row.startswith("nullable int a"))]
    for mode in ("backward", "forward", "full"):
        for before, after in zip(history, history[1:], strict=False):
            assert accepted([before, after], mode)
        assert not accepted(history, f"{mode}_transitive")


def test_a_transitive_refusal_names_the_earlier_version() -> None:
    history = ROWS[
        "nullable int a → a dropped → nullable string a (each step compatible, first → last not)"
    ]
    with pytest.raises(SchemaEvolutionError) as raised:
        validate_against_history(history[:-1], history[-1], CompatibilityMode.FULL_TRANSITIVE)
    assert raised.value.details == [
        "against version 1: column 'a' changed type int -> string: breaks backward and forward "
        "compatibility"
    ]


def test_versions_without_a_schema_are_skipped() -> None:
    assert validate_against_history([None], schema(BASE)) == []
    assert validate_against_history([schema(BASE), None], schema(BASE)) == []


def test_mode_properties() -> None:
    assert CompatibilityMode.FULL_TRANSITIVE.directions == {"backward", "forward"}
    assert CompatibilityMode.NONE.directions == frozenset()
    assert CompatibilityMode.FORWARD_TRANSITIVE.transitive
    assert not CompatibilityMode.FORWARD.transitive
    assert re.fullmatch(r"[a-z_]+", CompatibilityMode.BACKWARD_TRANSITIVE.value)
