"""Schemas: inference from CSV / JSON-lines streams, checks against a declared schema, and the
schema-evolution rules of the compatibility modes.

Inference reads the stream once, alongside hashing: rows are counted exactly over the whole
stream (quote-aware newline counting, which runs at memory speed), while column types are
inferred from the first ``sample_rows`` rows so that ingest keeps up with hashing on large files.
The number of rows the types came from is recorded on the version.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import TYPE_CHECKING, Any, cast

from chalicelib.core import jsonutil
from chalicelib.core.config import max_json_depth
from chalicelib.core.errors import UnprocessableEntity
from chalicelib.core.text import name_problem, visible
from chalicelib.dataversion.errors import SchemaEvolutionError, SchemaMismatch, UnreadableContent
from chalicelib.dataversion.models import (
    COLUMN_TYPES,
    CompatibilityMode,
    DatasetFormat,
    DatasetSchema,
)

if TYPE_CHECKING:
    import _csv

_BOM = b"\xef\xbb\xbf"  # what utf-8-sig strips from the start of a piece
DEFAULT_SAMPLE_ROWS = 10_000
# What a blank JSON line may hold besides its "\n": JSON whitespace, nothing else.
JSON_BLANK = " \t\r"
MAX_SAMPLE_BYTES = 8 * 1024 * 1024
# The longest first line (a CSV header, the first JSON record) a version may have: the schema
# comes from it, and a longer one would leave the version unchecked.
MAX_FIRST_LINE_BYTES = MAX_SAMPLE_BYTES
# The end of a Parquet stream kept for its footer (footers are kilobytes to a few megabytes).
PARQUET_TAIL_BYTES = 16 * 1024 * 1024

# CSV cells are typed as pyarrow's CSV reader infers a column (``pyarrow.csv.read_csv``; only an
# empty cell is null here): ASCII digits only, the spaces and tabs around a number ignored.
_PADDING = " \t"
# An int64: decimal (a ``-`` sign at most), or hexadecimal of at most 16 digits.
_INT = re.compile(r"[ \t]*(?:-?[0-9]+|0[xX][0-9a-fA-F]{1,16})[ \t]*")
_FLOAT = re.compile(
    r"[ \t]*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)[ \t]*",
    re.IGNORECASE,
)
INT64 = (-(2**63), 2**63 - 1)
_INT64_DIGITS = 18  # a decimal of at most 18 digits is an int64 whatever they are
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_BIT_BOOLS = {"1": True, "0": False}  # ints that pyarrow reads as booleans in a boolean column
_NUMERIC_RANK = {"int": 0, "long": 1, "float": 2, "double": 3}
WIDENINGS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
    }
)


def value_type(text: str) -> str | None:
    """The narrowest type of one CSV cell (``None`` for an empty cell), as pyarrow's CSV
    reader types a column holding only that cell."""
    if text == "":
        return None
    return _column_type({text})


def cell_types(cells: Iterable[str | None]) -> set[str | None]:
    """The type of a column of CSV cells, as pyarrow's CSV reader infers it, in a set with
    ``None`` when a cell is empty (``None`` cells are left out): the first of int64, bool and
    float64 that reads every other cell, else string. Each distinct cell is typed once (a
    column of 10,000 rows typed cell by cell cost ~2 µs a cell on every ingest)."""
    distinct = set(cells)
    distinct.discard(None)
    kinds: set[str | None] = set()
    if "" in distinct:
        distinct.discard("")
        kinds.add(None)
    if distinct:
        kinds.add(_column_type(cast(set[str], distinct)))
    return kinds


def _column_type(texts: set[str]) -> str:
    """The type of a column of distinct non-empty cells (see :func:`cell_types`)."""
    others = [text for text in texts if not _is_int(text)]
    if not others:
        return "int"
    if all(text in _BOOLS or text in _BIT_BOOLS for text in texts):
        return "bool"  # "1" and "0" are booleans beside "true" (pyarrow tries bool after int)
    if all(map(_FLOAT.fullmatch, texts)):  # decimal ints too; a hexadecimal one is no float
        return "float"
    return "string"


def _is_int(text: str) -> bool:
    """Whether pyarrow reads the cell as an int64 (a longer decimal is a float64)."""
    if _INT.fullmatch(text) is None:
        return False
    number = text.strip(_PADDING)
    magnitude = number.lstrip("-").lstrip("0")
    if _is_hex(number) or len(magnitude) <= _INT64_DIGITS:
        return True
    return len(magnitude) == _INT64_DIGITS + 1 and INT64[0] <= int(number) <= INT64[1]


def _is_hex(text: str) -> bool:
    return text.strip(_PADDING)[1:2] in ("x", "X")


def column_type(cells: Iterable[str]) -> str:
    """The type of a column of CSV cells (``string`` when every cell is empty)."""
    return next((kind for kind in cell_types(cells) if kind is not None), "string")


def _int_value(number: str) -> int:
    """An int64 cell's value (a hexadecimal one: the int64 of its 64 bits, as pyarrow)."""
    value = int(number, 16) if _is_hex(number) else int(number)
    return value - 2**64 if value > INT64[1] else value


def cell_value(text: str, kind: str) -> Any:
    """The value of a non-empty CSV cell in a column of type ``kind``, as pyarrow reads it (a
    hexadecimal int as the int64 of its 64 bits).

    Raises:
        ValueError: The cell is not of that type (:func:`cell_types`' rules).
        OverflowError: A float written with digits beyond a double's range (pyarrow reads
            it as an infinity; computing with it here is refused instead).
    """
    if kind in ("int", "long") and _is_int(text):
        return _int_value(text.strip(_PADDING))
    if kind in ("float", "double") and _is_hex(text) and _is_int(text):
        return float(_int_value(text.strip(_PADDING)))
    if kind in ("float", "double") and _FLOAT.fullmatch(text):
        number = float(text.strip(_PADDING))
        if math.isinf(number) and not text.strip(_PADDING + "+-").isalpha():
            raise OverflowError(f"{text[:20]!r}… is beyond a double's range")
        return number
    if kind == "bool" and (text in _BOOLS or text in _BIT_BOOLS):
        return _BOOLS.get(text, _BIT_BOOLS.get(text))
    if kind == "string":
        return text
    raise ValueError(f"{text!r} is not a {kind}")


def csv_schema(header: list[str], rows: list[list[str]]) -> DatasetSchema:
    """The schema inferred from CSV rows under ``header``: each column's type merges the
    types of its cells (cells past the header, and a short row's missing ones, are not
    read; an empty cell makes the column nullable; a repeated name merges its columns)."""
    stats = _ColumnStats()
    for name in header:
        stats.types[name] = None
    for name, cells in header_columns(header, rows):
        for kind in cell_types(cells):
            stats.see(name, kind)
    return stats.schema()


def header_columns(
    header: list[str], rows: list[list[str]]
) -> Iterator[tuple[str, tuple[str | None, ...]]]:
    """Each header name with its column's cells, one per row (``None`` where a row is short;
    cells past the header are not read)."""
    columns = zip_longest(*rows, fillvalue=None) if rows else iter(())
    return zip(header, columns, strict=False)


def merge_types(current: str | None, seen: str | None) -> str | None:
    """The narrowest type holding values of both types."""
    if seen is None or current == seen:
        return current
    if current is None:
        return seen
    if current in _NUMERIC_RANK and seen in _NUMERIC_RANK:
        return current if _NUMERIC_RANK[current] >= _NUMERIC_RANK[seen] else seen
    return "string"


def json_value_type(value: Any) -> str | None:
    """The type of one JSON value (objects and arrays count as ``string``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


@dataclass
class _ColumnStats:
    types: dict[str, str | None] = field(default_factory=dict)
    nullable: set[str] = field(default_factory=set)

    def see(self, column: str, kind: str | None) -> None:
        if kind is None:
            self.nullable.add(column)
            self.types.setdefault(column, None)
        else:
            self.types[column] = merge_types(self.types.get(column), kind)

    def schema(self) -> DatasetSchema:
        columns = {name: kind or "string" for name, kind in self.types.items()}
        nullable = [name for name in columns if name in self.nullable]
        return DatasetSchema(columns=columns, nullable=nullable)


class _Tail:
    """The first four and the last ``limit`` (or more) bytes of a stream, kept as references to
    the chunks that hold them (no copies while streaming)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = b""
        self.size = 0
        self._chunks: deque[bytes] = deque()
        self._held = 0

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < 4:
            self.head += bytes(chunk[: 4 - len(self.head)])
        self.size += len(chunk)
        self._chunks.append(chunk)
        self._held += len(chunk)
        while self._held - len(self._chunks[0]) >= self.limit:
            self._held -= len(self._chunks.popleft())

    def bytes(self) -> bytes:
        return b"".join(self._chunks)


class ContentInspector:
    """Consumes a content stream chunk by chunk: counts rows and infers the schema.

    CSV and JSON lines: records counted exactly over the whole stream by
    :class:`~chalicelib.dataversion.records.RecordScanner` (what Python's ``csv`` module and
    ``json`` read: blank lines, quoted line ends, stray quotes, CR-only line ends), types
    inferred from the first ``sample_rows`` records. Parquet: the exact row count and the
    column types and nullability declared in the footer, read from the last
    ``PARQUET_TAIL_BYTES`` of the stream. Other formats are opaque.

    Args:
        fmt: The content format.
        sample_rows: Rows used for type inference (row counting always covers every row).
    """

    def __init__(
        self, fmt: DatasetFormat, sample_rows: int = DEFAULT_SAMPLE_ROWS, uniform_rows: int = 0
    ) -> None:
        self.format = fmt
        self.sample_rows = sample_rows
        self.active = fmt in (DatasetFormat.CSV, DatasetFormat.JSON)
        self._tail = _Tail(PARQUET_TAIL_BYTES) if fmt is DatasetFormat.PARQUET else None
        # numpy comes with the scanner: loaded on the first ingest, not at import (cold start).
        from chalicelib.dataversion.records import (
            HeadView,
            RecordSampler,
            RecordScanner,
            TeeSampler,
        )

        skip = 1 if fmt is DatasetFormat.CSV else 0
        head = RecordSampler(
            size=sample_rows,
            skip=skip,
            head_bytes=MAX_SAMPLE_BYTES,
            max_record_bytes=MAX_FIRST_LINE_BYTES,
            reservoir=False,
        )
        # The seeded uniform sample the reader draws (reader.sample_records), drawn here too.
        self.uniform = RecordSampler(size=uniform_rows, skip=skip) if uniform_rows > 0 else None
        uniform = self.uniform
        sampler: Any = head
        self._head: Any = head
        if uniform is not None and _same_limits(head, uniform) and sample_rows <= uniform_rows:
            sampler = uniform  # its first records are the head: one sampler in the scan
            self._head = HeadView(uniform, sample_rows)
        elif uniform is not None:
            sampler = TeeSampler(head, uniform)
        csv_fields = fmt is DatasetFormat.CSV
        self._scanner = RecordScanner(fmt.value, sampler, csv_fields) if self.active else None
        self.records = 0  # records scanned (a CSV header included), once finished
        self.parquet: Any = None  # the Parquet footer (a parquet.ParquetMetadata), once finished
        # A CSV's header and the rows its types came from, once finished.
        self.csv_head: tuple[list[str], list[list[str]]] | None = None

    def feed(self, chunk: bytes) -> None:
        """Takes the next chunk of the stream."""
        if self._tail is not None:
            self._tail.feed(chunk)
        if self._scanner is not None:
            self._scanner.feed(chunk)

    def finish(self) -> tuple[int | None, DatasetSchema | None, int | None]:
        """Returns (row count, inferred schema, rows the types came from or ``None`` for all).

        Raises:
            UnreadableContent: The content cannot be read, or a column name it holds (a CSV
                header cell, a JSON-lines key, a Parquet leaf) is not a valid name.
        """
        result = self._finish()
        _check_column_names(result[1])
        return result

    def _finish(self) -> tuple[int | None, DatasetSchema | None, int | None]:
        if self._tail is not None:
            self.parquet = _parquet_footer(self._tail)
            if self.parquet is None:  # larger than PARQUET_TAIL_BYTES
                return None, None, None
            found = self.parquet
            columns = DatasetSchema(columns=found.columns, nullable=found.nullable)
            return found.num_rows, columns if found.columns else None, None
        if self._scanner is None:
            return None, None, None
        records = self.records = self._scanner.finish()
        head = self._head
        pieces = [piece for _, piece in head.sample()]
        if self.format is DatasetFormat.CSV:
            if records and head.skipped[0] is None:
                _first_line_too_long(self.format)
            _check_fields(self._scanner.fields)
            header, rows = parse_csv_records(head.skipped[0] if records else None, pieces)
            total = max(records - 1, 0)
            schema = csv_schema(header, rows) if header else None
            self.csv_head = (header, rows) if header else None
            read = len(rows)
        else:
            if 0 in head.too_long:
                _first_line_too_long(self.format)
            depth = max_json_depth()
            numbers = range(1, len(pieces) + 1)
            records_read = parse_json_records(pieces, numbers, depth, decode_record)
            schema = _json_schema(records_read)
            total = records
            read = len(records_read)
        sampled = None if head.complete and read >= total else read
        return total, schema, sampled


def _same_limits(head: Any, uniform: Any) -> bool:
    """Whether a uniform sampler cuts its head as the schema's head sampler would."""
    return (head.head_bytes, head.max_record_bytes, head.skip) == (
        uniform.head_bytes,
        uniform.max_record_bytes,
        uniform.skip,
    )


def _check_column_names(schema: DatasetSchema | None) -> None:
    """Holds the column names read from the data to the rule every client-given name follows
    (no control, bidirectional-formatting or line-separator character).

    Raises:
        UnreadableContent: A column name breaks the rule (the message shows it escaped).
    """
    for name in schema.columns if schema is not None else ():
        problem = name_problem(name)
        if problem is not None:
            raise UnreadableContent(
                f"the column name {visible(name)!r} holds a {problem}; rename the column"
            )


def _check_fields(fields: Any) -> None:
    """Refuses a CSV stream with a record whose field count differs from the header's, found
    anywhere in it (a ``records.FieldCheck``).

    Raises:
        UnreadableContent: Naming the first such record (counted from 1 after the header).
    """
    if fields is not None and fields.bad is not None:
        number, found = fields.bad
        raise UnreadableContent(
            f"CSV record {number} has {found} fields; the header has {fields.expected + 1}"
        )


def _first_line_too_long(fmt: DatasetFormat) -> None:
    """Refuses content whose first record is longer than :data:`MAX_FIRST_LINE_BYTES`.

    The schema (and with it the declared-schema and evolution checks) comes from the first
    record, so content whose header does not fit in the sample is refused on every ingest path
    rather than versioned without a schema.

    Raises:
        UnreadableContent: Always.
    """
    what = "CSV header" if fmt is DatasetFormat.CSV else "first JSON line"
    raise UnreadableContent(
        f"the {what} is longer than {MAX_FIRST_LINE_BYTES} bytes (the limit of a first line); "
        "the schema cannot be read from it"
    )


def _parquet_footer(tail: _Tail) -> Any:
    """The Parquet footer (a ``parquet.ParquetMetadata``: row count, schema, column
    statistics), or ``None`` when it is larger than ``PARQUET_TAIL_BYTES`` (such a file is
    versioned without them).

    Raises:
        UnreadableContent: Not a Parquet file, or a malformed footer.
    """
    from chalicelib.dataversion.parquet import MAGIC, footer_size, parse_footer

    if tail.head != MAGIC:
        raise UnreadableContent("not a Parquet file: it does not start with PAR1")
    data = tail.bytes()
    size = footer_size(data, file_size=tail.size)
    if size + 8 > len(data):
        return None
    return parse_footer(data[-8 - size : -8], file_size=tail.size)


def _json_schema(records: list[dict[str, Any]]) -> DatasetSchema | None:
    if not records:
        return None
    stats = _ColumnStats()
    order: dict[str, None] = {}
    for record in records:
        for key in record:
            order.setdefault(key, None)
    for record in records:
        for key in order:
            stats.see(key, json_value_type(record.get(key)))
    return stats.schema()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableContent(f"content is not UTF-8 text: {exc}") from None


def decode_record(data: bytes) -> str:
    """One record cut by the scanner, which dropped the stream's byte-order mark: a later
    one is a character (``csv`` keeps it in the cell, ``json`` refuses the line)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableContent(f"content is not UTF-8 text: {exc}") from None


def csv_reader(text: str) -> _csv.Reader:
    """``csv.reader`` over ``text`` (excel dialect, read with ``newline=""``) that reads a
    field as long as a record the scanner samples (:data:`MAX_SAMPLE_BYTES`): the module's
    limit is process-wide and 128 KiB unless something raised it."""
    if csv.field_size_limit() < MAX_SAMPLE_BYTES:
        csv.field_size_limit(MAX_SAMPLE_BYTES)
    return csv.reader(io.StringIO(text, newline=""))


def parse_csv_sample(data: bytes, limit: int, complete: bool) -> tuple[list[str], list[list[str]]]:
    """Parses the header and up to ``limit`` rows of a CSV prefix.

    Args:
        data: The first bytes of the stream (or all of it).
        limit: Most rows returned.
        complete: Whether ``data`` is the whole stream (else the last partial row is dropped).
    """
    if not complete:
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut >= 0 else b""
    reader = csv_reader(_decode(data))
    try:
        header = next(reader, [])
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise UnreadableContent(
                    f"CSV row {reader.line_num} has {len(row)} fields; the header has {len(header)}"
                )
            rows.append(row)
            if len(rows) >= limit:
                break
    except csv.Error as exc:
        raise UnreadableContent(f"CSV is malformed: {exc}") from None
    if len(set(header)) != len(header):
        raise UnreadableContent("CSV header has duplicate column names")
    return header, rows


def parse_csv_records(
    header: bytes | None, pieces: list[bytes]
) -> tuple[list[str], list[list[str]]]:
    """Parses a CSV header and records cut at exact record boundaries (see
    :class:`~chalicelib.dataversion.records.RecordScanner`).

    Raises:
        UnreadableContent: Not UTF-8, a record whose field count differs from the header's,
            or duplicate column names.
    """
    if header is None:
        return [], []
    text = decode_pieces([piece.lstrip(b"\r\n") for piece in [header, *pieces]], decode_record)
    reader = csv_reader(text)
    try:
        names = next(reader, [])
        rows = []
        for number, row in enumerate(reader, start=1):
            if len(row) != len(names):
                raise UnreadableContent(
                    f"CSV record {number} has {len(row)} fields; the header has {len(names)}"
                )
            rows.append(row)
    except csv.Error as exc:
        raise UnreadableContent(f"CSV is malformed: {exc}") from None
    if len(set(names)) != len(names):
        raise UnreadableContent("CSV header has duplicate column names")
    return names, rows


def parse_jsonl_sample(data: bytes, limit: int, complete: bool) -> list[dict[str, Any]]:
    """Parses up to ``limit`` records of a JSON-lines prefix (each line one JSON object)."""
    if not complete:
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut >= 0 else b""
    records: list[dict[str, Any]] = []
    depth = max_json_depth()
    # Only "\n" ends a record: JSON strings may hold U+2028, U+0085 and the like.
    for number, line in enumerate(_decode(data).split("\n"), start=1):
        if not line.strip(JSON_BLANK):
            continue
        records.append(parse_json_record(line, number, max_depth=depth))
        if len(records) >= limit:
            break
    return records


def parse_json_record(
    line: str, number: int, unit: str = "line", max_depth: int | None = None
) -> dict[str, Any]:
    """One JSON-lines record: an object nested at most ``SYNAPSE_MAX_JSON_DEPTH`` levels.

    The depth is checked before parsing (see :func:`chalicelib.core.jsonutil.loads`), so a
    record nested thousands of levels deep is refused like any unreadable line. Numbers are
    taken as written (``NaN`` included); their size is checked where they are used.

    Args:
        line: The record's text.
        number: Its number, for messages.
        unit: What the number counts: ``line`` (of the file) or ``record``.
        max_depth: The depth limit, when the caller read ``SYNAPSE_MAX_JSON_DEPTH`` once for
            many records (reading the environment per record cost more than parsing it).

    Raises:
        UnreadableContent: Not JSON, too deep, or not an object.
    """
    try:
        value = jsonutil.loads(
            line,
            max_depth=max_json_depth() if max_depth is None else max_depth,
            max_digits=None,
            finite=False,
        )
    except jsonutil.JsonLimitExceeded as exc:
        raise UnreadableContent(f"JSON {unit} {number} is refused: {exc}") from None
    except ValueError as exc:
        raise UnreadableContent(f"JSON {unit} {number} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UnreadableContent(f"JSON {unit} {number} is not an object")
    return value


def decode_pieces(pieces: list[bytes], decode: Callable[[bytes], str]) -> str:
    """The pieces decoded one by one by ``decode`` and joined by ``\n``, in one decode of
    their join when that is the same text (valid UTF-8 with no byte-order mark, which
    ``utf-8-sig`` would strip from a piece); otherwise piece by piece, so that an error names
    the piece's problem as before."""
    joined = b"\n".join(pieces)
    if _BOM not in joined:
        try:
            return joined.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return "\n".join(decode(piece) for piece in pieces)


def parse_json_records(
    pieces: list[bytes],
    numbers: Iterable[int],
    max_depth: int,
    decode: Callable[[bytes], str],
) -> list[dict[str, Any]]:
    """JSON-lines records (each a line's bytes), as :func:`parse_json_record` parses each:
    decoded and checked in one pass over their joined text when every one is a JSON object
    (:func:`~chalicelib.core.jsonutil.loads_lines`); otherwise one by one, in order, so the
    first record that is refused is named with its ``numbers`` entry, as before.

    Raises:
        UnreadableContent: A record is not UTF-8, not JSON, too deep, or not an object.
    """
    joined = b"\n".join(pieces)
    if _BOM not in joined:
        try:
            text: str | None = joined.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            values = jsonutil.loads_lines(text, max_depth=max_depth, max_digits=None, finite=False)
            if (
                values is not None
                and len(values) == len(pieces)
                and all(type(value) is dict for value in values)
            ):
                return values
    return [
        parse_json_record(decode(piece), number, "record", max_depth)
        for piece, number in zip(pieces, numbers, strict=True)
    ]


def check_declared(declared: DatasetSchema, inferred: DatasetSchema | None) -> None:
    """Checks inferred data types against a declared schema.

    Raises:
        SchemaMismatch: A column is missing, undeclared, of an incompatible type, or has empty
            values while declared non-nullable; the message names the column.
    """
    if inferred is None:
        raise SchemaMismatch("the content has no rows or header to check the declared schema")
    problems = []
    for name, kind in declared.columns.items():
        if name not in inferred.columns:
            problems.append(f"column '{name}' is declared but missing from the data")
            continue
        found = inferred.columns[name]
        if not _fits(found, kind):
            problems.append(f"column '{name}' is declared {kind} but the data holds {found}")
        if inferred.is_nullable(name) and not declared.is_nullable(name):
            problems.append(f"column '{name}' is not nullable but the data has or allows nulls")
    for name in inferred.columns:
        if name not in declared.columns:
            problems.append(f"column '{name}' is in the data but not in the declared schema")
    if problems:
        raise SchemaMismatch("; ".join(problems), details=problems)


def _fits(found: str, declared: str) -> bool:
    if found == declared or declared == "string":
        return True
    return (found, declared) in WIDENINGS


def check_schema_definition(schema: DatasetSchema) -> None:
    """Checks a schema given by a client.

    Raises:
        UnprocessableEntity: Unknown types, or keys naming columns that do not exist.
    """
    for name, kind in schema.columns.items():
        if kind not in COLUMN_TYPES:
            raise UnprocessableEntity(
                f"column '{name}' has unknown type '{kind}'; use one of {', '.join(COLUMN_TYPES)}"
            )
    for label, names in (
        ("primary_key", schema.primary_key),
        ("partition_keys", schema.partition_keys),
        ("nullable", schema.nullable),
    ):
        for name in names:
            if name not in schema.columns:
                raise UnprocessableEntity(f"{label} names unknown column '{name}'")


BOTH = frozenset({"backward", "forward"})


def _column_changes(old: DatasetSchema, new: DatasetSchema) -> Iterable[tuple[str, frozenset[str]]]:
    for name in old.columns:
        if name in new.columns:
            continue
        if old.is_nullable(name):  # readers of the old schema read it as null
            yield f"nullable column '{name}' was dropped", frozenset()
        else:
            yield (
                f"required column '{name}' was dropped (readers of the old schema need it)",
                frozenset({"forward"}),
            )
    for name in new.columns:
        if name in old.columns:
            continue
        if new.is_nullable(name):
            yield f"nullable column '{name}' was added", frozenset()
        else:
            yield (
                f"required column '{name}' was added (old data has no value for it)",
                frozenset({"backward"}),
            )


def _type_changes(old: DatasetSchema, new: DatasetSchema) -> Iterable[tuple[str, frozenset[str]]]:
    for name, before in old.columns.items():
        after = new.columns.get(name)
        if after is None:
            continue
        if after != before:
            if (before, after) in WIDENINGS:
                yield f"column '{name}' widened {before} -> {after}", frozenset({"forward"})
            elif (after, before) in WIDENINGS:
                yield f"column '{name}' narrowed {before} -> {after}", frozenset({"backward"})
            else:
                yield f"column '{name}' changed type {before} -> {after}", BOTH
        was, now = old.is_nullable(name), new.is_nullable(name)
        if was and not now:
            yield f"column '{name}' became required", frozenset({"backward"})
        elif now and not was:
            yield f"column '{name}' became nullable", frozenset({"forward"})


def _key_changes(old: DatasetSchema, new: DatasetSchema) -> Iterable[tuple[str, frozenset[str]]]:
    if list(old.primary_key) != list(new.primary_key):
        yield f"primary key changed {old.primary_key} -> {new.primary_key}", BOTH


def evolution_report(
    old: DatasetSchema, new: DatasetSchema, mode: CompatibilityMode
) -> tuple[list[str], list[str]]:
    """Compares two schemas under a compatibility mode.

    Returns:
        (changes, problems): every change found, and the ones the mode forbids, each with the
        direction it breaks (``backward`` / ``forward``).
    """
    checked = mode.directions
    changes: list[str] = []
    problems: list[str] = []
    for producer in (_column_changes, _type_changes, _key_changes):
        for text, breaks in producer(old, new):
            changes.append(text)
            broken = sorted(breaks & checked)
            if broken:
                problems.append(f"{text}: breaks {' and '.join(broken)} compatibility")
    return changes, problems


def validate_schema_evolution(
    old: DatasetSchema, new: DatasetSchema, mode: CompatibilityMode = CompatibilityMode.BACKWARD
) -> list[str]:
    """Checks that ``new`` may follow ``old`` under ``mode``.

    Returns:
        The changes found (empty when the schemas are equivalent).

    Raises:
        SchemaEvolutionError: Listing every incompatible change (``details``).
    """
    changes, problems = evolution_report(old, new, mode)
    if problems:
        raise SchemaEvolutionError(
            f"schema is not {mode.value}-compatible: " + "; ".join(problems), details=problems
        )
    return changes


def validate_against_history(
    history: list[DatasetSchema | None],
    new: DatasetSchema,
    mode: CompatibilityMode = CompatibilityMode.BACKWARD,
) -> list[str]:
    """Checks that ``new`` may follow the schemas of earlier versions (oldest first, the
    previous version last) under ``mode``: the previous one only, or every one for the
    ``_transitive`` modes (versions without a schema are skipped).

    Returns:
        The changes from the previous schema.

    Raises:
        SchemaEvolutionError: Listing every incompatible change, naming the earlier version
            (``version N``, counted from 1) for a transitive mode.
    """
    known = [(number, old) for number, old in enumerate(history, start=1) if old is not None]
    if not known:
        return []
    changes, problems = evolution_report(known[-1][1], new, mode)
    if mode.transitive:
        problems = []
        for number, old in known:
            found = evolution_report(old, new, mode)[1]
            problems.extend(f"against version {number}: {problem}" for problem in found)
    if problems:
        raise SchemaEvolutionError(
            f"schema is not {mode.value}-compatible: " + "; ".join(problems), details=problems
        )
    return changes
