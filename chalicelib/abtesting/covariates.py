"""CUPED covariates joined from a dataset version by user id.

An experiment may name a dataset version (by number, id or tag when it is created; the version's
id is what it keeps), the column holding user ids and the column holding each user's
pre-experiment value. Outcomes then carry ``user_id`` instead of ``covariate``: when they are
recorded, the service looks the user up in that version and counts the value as the outcome's
covariate, exactly as if the outcome had carried it (the same CUPED sums, the same analysis).
A user the version does not list counts without a covariate (CUPED uses only outcomes with one,
as for carried covariates).

Why the join happens when outcomes are recorded, not when the analysis is read: the counters
keep sums per arm (``sum x y`` among them), never per-unit rows, so a covariate named after
outcomes were counted has nothing to pair with. The source is therefore fixed at creation.

The version is read once per process through the dataversion domain's public facade (versions
never change), checked against its sha256, and refused when it could not be a covariate table:

* more than :data:`MAX_ROWS` rows or :data:`MAX_BYTES` bytes (413 ``covariates_too_large``);
* a column it does not have (422 ``unknown_column``);
* no row, an empty user id, a value that is not a finite number within ``±cuped.LIMIT`` (422
  ``invalid_covariate``), or a user id listed twice (422 ``duplicate_user_id``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.abtesting import cuped
from chalicelib.abtesting.models import CovariateSource
from chalicelib.core.errors import NotFound, PayloadTooLarge, UnprocessableEntity
from chalicelib.core.text import visible

MAX_ROWS = 200_000
"""Largest covariate table (rows): a per-process dict of that many users is about 30 MB."""
MAX_BYTES = 32 * 1024 * 1024
"""Largest covariate version (bytes), checked before it is read."""
CACHED_TABLES = 4
RECHECK_SECONDS = 60.0
"""How long a process joins a table it holds before checking its version still exists."""


class InvalidCovariates(UnprocessableEntity):
    """A dataset version that cannot serve as a covariate table."""

    code = "invalid_covariate"


@dataclass(frozen=True)
class VersionRecords:
    """What the join needs of a dataset version.

    Attributes:
        columns: The version's columns.
        records: Every record (column → value; CSV values are strings).
        total: How many records the version holds.
    """

    columns: list[str]
    records: list[dict[str, Any]]
    total: int


def check_size(size_bytes: int, row_count: int | None) -> None:
    """Refuses a version too large to be a covariate table before reading it.

    Raises:
        PayloadTooLarge: Over :data:`MAX_BYTES` bytes or :data:`MAX_ROWS` rows (413).
    """
    if size_bytes > MAX_BYTES or (row_count is not None and row_count > MAX_ROWS):
        raise PayloadTooLarge(
            f"a covariate version may hold at most {MAX_ROWS} rows and {MAX_BYTES} bytes "
            f"(this one: {row_count if row_count is not None else 'unknown'} rows, "
            f"{size_bytes} bytes)",
            code="covariates_too_large",
        )


def covariate_table(found: VersionRecords, source: CovariateSource) -> dict[str, float]:
    """``{user id: covariate}`` from a version's records.

    Raises:
        PayloadTooLarge: More than :data:`MAX_ROWS` records.
        InvalidCovariates: No row, a missing column, an empty user id, a value that is not a finite
            number within ``±cuped.LIMIT``, or a user id listed twice.
    """
    if found.total > MAX_ROWS:
        check_size(0, found.total)
    for column in (source.user_column, source.covariate_column):
        if column not in found.columns:
            raise InvalidCovariates(
                f"dataset {source.dataset_id} version {source.version_number} has no column "
                f"'{visible(column)}'",
                code="unknown_column",
            )
    table: dict[str, float] = {}
    for row, record in enumerate(found.records, start=1):
        user = _user_id(record.get(source.user_column), row)
        if user in table:
            raise InvalidCovariates(
                f"user id '{visible(user)}' is listed twice (row {row}); a covariate table "
                "holds one value per user",
                code="duplicate_user_id",
            )
        table[user] = _number(record.get(source.covariate_column), row, source.covariate_column)
    if not table:  # a wrong version or tag, most likely: CUPED would silently never apply
        raise InvalidCovariates(
            f"dataset {source.dataset_id} version {source.version_number} lists no user"
        )
    return table


def _user_id(value: object, row: int) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise InvalidCovariates(f"row {row}: the user id must be a non-empty string or integer")
    return str(value)


def _number(value: object, row: int, column: str) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or abs(number) > cuped.LIMIT:
        raise InvalidCovariates(
            f"row {row}: '{visible(column)}' must be a finite number within "
            f"±{cuped.LIMIT:g} (got {visible(str(value))[:40]!r})"
        )
    return number


class CovariatesGone(NotFound):
    """The covariate version was deleted (erased) after the table was read."""

    code = "covariates_gone"


class CovariateTables:
    """Covariate tables by source, read once per process (versions never change), each checked
    again every :data:`RECHECK_SECONDS` to still exist: an erased version stops being joined
    (its values leave the process) within that time.

    Args:
        read: Reads a version's records as the system (a dataversion facade call).
        live: Whether a source's version still exists (``None``: never checked again).
        monotonic: The clock the checks are timed by.
    """

    def __init__(
        self,
        read: Callable[[CovariateSource], VersionRecords],
        live: Callable[[CovariateSource], bool] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._live = live
        self._monotonic = monotonic
        self._tables: dict[CovariateSource, tuple[dict[str, float], float]] = {}
        self._lock = threading.Lock()

    def table(self, source: CovariateSource) -> Mapping[str, float]:
        """The source's ``{user id: covariate}`` (read and checked on first use).

        Raises:
            CovariatesGone: The version was deleted since it was read (the table is dropped).
        """
        with self._lock:
            held = self._tables.get(source)
        now = self._monotonic()
        if held is not None:
            return self._checked(source, held, now)
        found = covariate_table(self._read(source), source)
        with self._lock:
            if len(self._tables) >= CACHED_TABLES:
                self._tables.clear()
            self._tables[source] = (found, now)
        return found

    def _checked(
        self, source: CovariateSource, held: tuple[dict[str, float], float], now: float
    ) -> dict[str, float]:
        table, checked_at = held
        if self._live is None or now - checked_at < RECHECK_SECONDS:
            return table
        if not self._live(source):
            with self._lock:
                self._tables.pop(source, None)
            raise CovariatesGone(f"covariate version {source.version_id} was deleted")
        with self._lock:
            self._tables[source] = (table, now)
        return table
