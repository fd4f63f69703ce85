"""``core.rows.Rows``: the in-memory repositories' one way to read, add and remove a row."""

from __future__ import annotations

import pytest

from chalicelib.core.errors import Conflict
from chalicelib.core.rows import Rows


class Missing(LookupError):
    pass


def rows() -> Rows[str, dict[str, list[int]]]:
    return Rows(lambda key: Missing(f"no row {key}"))


def test_a_read_is_a_copy_the_caller_may_change() -> None:
    table = rows()
    table.add("a", {"n": [1]}, "taken")
    read = table.read("a")
    read["n"].append(2)
    assert table.read("a") == {"n": [1]}
    assert table.stored("a") is table["a"]


def test_a_missing_key_raises_the_owners_error_with_its_message() -> None:
    table = rows()
    for operation in (table.read, table.stored, table.remove):
        with pytest.raises(Missing, match="no row b"):
            operation("b")


def test_a_taken_key_is_a_conflict_and_keeps_the_first_row() -> None:
    table = rows()
    table.add("a", {"n": [1]}, "a is taken")
    with pytest.raises(Conflict, match="a is taken"):
        table.add("a", {"n": [2]}, "a is taken")
    assert table.remove("a") == {"n": [1]}
    assert "a" not in table
