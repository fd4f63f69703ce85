"""Reading stored versions back: verified against their sha256, and sampled uniformly.

Every read of a version's content for a transformation, a replay, a comparison or an
explanation background hashes the bytes it read and refuses them when they differ from the
version's ``sha256`` (:class:`~chalicelib.dataversion.errors.ContentIntegrityError`, 409): bytes
overwritten under a content address (an emulator, an operator) are never silently used.

:func:`sample_records` streams a CSV or JSON-lines version once: records are cut exactly as
Python's ``csv`` and ``json`` read them (quoted line ends, blank lines inside quotes) and a
seeded uniform reservoir sample of at most ``max_rows`` is kept (the same seed, the same rows),
instead of the first rows.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from chalicelib.core.config import max_json_depth
from chalicelib.core.errors import UnprocessableEntity
from chalicelib.dataversion.errors import ContentIntegrityError, DatasetVersionGone
from chalicelib.dataversion.models import DatasetFormat, DatasetVersion
from chalicelib.dataversion.schema import (
    csv_reader,
    decode_pieces,
    decode_record,
    parse_json_records,
)
from chalicelib.dataversion.storage import DataStore

if TYPE_CHECKING:
    from chalicelib.dataversion.records import RecordSampler

DEFAULT_SAMPLE_ROWS = 10_000


@dataclass
class RecordSample:
    """Records of a version.

    A CSV sample keeps the rows ``csv`` read and makes the records (dicts) only when they are
    asked for: a profile reads its columns straight from the rows.

    Attributes:
        columns: The CSV header, or the JSON keys in order of first appearance in the sample.
        row_numbers: Each record's number among the version's records (0-based).
        total: How many records the version holds.
    """

    columns: list[str]
    row_numbers: list[int]
    total: int
    _records: list[dict[str, Any]] | None = field(default=None, repr=False)
    _rows: list[list[str]] | None = field(default=None, repr=False)
    _width: int | None = field(default=None, repr=False)

    @classmethod
    def of_records(
        cls, columns: list[str], records: list[dict[str, Any]], numbers: list[int], total: int
    ) -> RecordSample:
        """A sample of parsed records (JSON lines)."""
        return cls(columns, numbers, total, _records=records)

    @classmethod
    def of_rows(
        cls, columns: list[str], rows: list[list[str]], numbers: list[int], total: int
    ) -> RecordSample:
        """A sample of CSV rows under the header ``columns``."""
        return cls(columns, numbers, total, _rows=rows)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The sampled records (column → value; CSV values are strings), in file order (a CSV
        row's cells under the header's names, a repeated name holding its last cell)."""
        if self._records is None:
            names = self.columns
            self._records = [dict(zip(names, row, strict=False)) for row in self._rows or []]
        return self._records

    @property
    def size(self) -> int:
        """How many records the sample holds."""
        return (
            len(self._rows)
            if self._records is None and self._rows is not None
            else len(self.records)
        )

    def values(self, name: str) -> list[Any]:
        """One column's value in each record, ``None`` where a record has none (as
        ``record.get(name)`` over :attr:`records`)."""
        rows = self._rows
        if rows is None or self._records is not None or self._narrowest() < len(self.columns):
            # record.get(name) for each record (short CSV rows: as dicts read them)
            return list(map(dict.get, self.records, repeat(name)))
        where = {column: index for index, column in enumerate(self.columns)}  # a name's last
        if name not in where:
            return [None] * len(rows)
        return list(map(itemgetter(where[name]), rows))

    def _narrowest(self) -> int:
        if self._width is None:
            self._width = min(map(len, self._rows or []), default=0)
        return self._width


def check_digest(version: DatasetVersion, digest: str) -> None:
    """Refuses bytes that do not hash to the version's sha256.

    Raises:
        ContentIntegrityError: They differ (409).
    """
    if digest != version.sha256:
        raise ContentIntegrityError(
            f"the stored content of version {version.version_id} hashes to {digest}, not its "
            f"sha256 {version.sha256}; it is not used"
        )


def _check_live(version: DatasetVersion) -> None:
    if version.deleted:
        raise DatasetVersionGone(f"version {version.version_id} was deleted")


def read_verified(store: DataStore, version: DatasetVersion) -> bytes:
    """The whole content of a version, checked against its sha256 (callers check the size).

    Raises:
        ContentIntegrityError: The stored bytes differ from the version's content.
    """
    _check_live(version)
    data = store.read(version.storage_key)
    check_digest(version, hashlib.sha256(data).hexdigest())
    return data


def sample_records(
    store: DataStore, version: DatasetVersion, max_rows: int = DEFAULT_SAMPLE_ROWS, seed: int = 0
) -> RecordSample:
    """A seeded uniform sample of a CSV or JSON-lines version's records, read in one pass.

    Raises:
        UnprocessableEntity: Another format, or content that is not UTF-8 / valid records.
        ContentIntegrityError: The stored bytes differ from the version's content.
    """
    _check_live(version)
    if version.format not in (DatasetFormat.CSV, DatasetFormat.JSON):
        raise UnprocessableEntity(
            f"version {version.version_id} is {version.format.value}; only csv and json lines "
            "versions can be read as records"
        )
    from chalicelib.dataversion.records import RecordSampler, RecordScanner

    is_csv = version.format is DatasetFormat.CSV
    sampler = RecordSampler(size=max_rows, seed=seed, skip=1 if is_csv else 0)
    scanner = RecordScanner(version.format.value, sampler)
    digest = hashlib.sha256()
    for chunk in store.iter_object(version.storage_key):
        digest.update(chunk)
        scanner.feed(chunk)
    total = scanner.finish()
    check_digest(version, digest.hexdigest())
    return records_of(sampler, total, version.format)


def records_of(sampler: RecordSampler, total: int, fmt: DatasetFormat) -> RecordSample:
    """The records a sampler drew from a scan of ``total`` records (a CSV header included),
    parsed as :mod:`csv` or :mod:`json` read them.

    Raises:
        UnprocessableEntity: Content that is not UTF-8 or not valid records.
    """
    indices, pieces = sampler.sample_columns()
    numbers = [index - sampler.skip for index in indices]
    if fmt is DatasetFormat.CSV:
        columns, rows = _csv_rows(sampler.skipped[0] if sampler.skipped else None, pieces)
        return RecordSample.of_rows(columns, rows, numbers, max(total - 1, 0))
    records = parse_json_records(
        pieces, [index + 1 for index in indices], max_json_depth(), decode_record
    )
    return RecordSample.of_records(_columns(records), records, numbers, total)


def _columns(records: list[dict[str, Any]]) -> list[str]:
    """Every key of the records, in the order each first appears: the first record's keys
    when no record has another (one union of key sets instead of a walk over every key)."""
    if records and len(set().union(*records)) == len(records[0]):
        return list(records[0])
    return list(dict.fromkeys(chain.from_iterable(records)))


def _csv_rows(header: bytes | None, pieces: list[bytes]) -> tuple[list[str], list[list[str]]]:
    """The header and rows ``csv`` reads from records cut by the scanner (which already left
    out the line ends before each record)."""
    if header is None:
        return [], []
    text = decode_pieces([header, *pieces], decode_record)
    try:
        rows = list(csv_reader(text))
    except csv.Error as exc:
        raise UnprocessableEntity(f"CSV is malformed: {exc}") from None
    return rows[0], rows[1:]
