"""A dependency-free reader of Parquet footers: the schema and the exact row count of a file.

A Parquet file is laid out as::

    PAR1 | column data ... | FileMetaData | footer length (4 bytes, little-endian) | PAR1

``FileMetaData`` is a Thrift struct in the *compact protocol*. Only the footer is needed for the
schema and the row count, so the ingest reads the last bytes of an object, asks
:func:`footer_size` how long the metadata is, and hands exactly those bytes to
:func:`parse_footer`. pyarrow is deliberately not used: it does not fit in the Lambda package.

Every malformed input raises :class:`~chalicelib.dataversion.errors.UnreadableContent` (422)
with a message; sizes and nesting depth are bounded so hostile footers cannot exhaust memory,
time or the stack. The row count is only believed when the file could hold it: the row groups'
counts must add up to it, every row group with rows must hold column data with at least one
value per row, a page (whose value count is an i32) holds at most 2^31 - 1 values per byte, and
the column data must lie inside the file (a 57-byte file claiming 2^63 - 1 rows is refused).
Encrypted footers (``PARE`` magic) are not supported and are reported as unreadable. Bytes after
the end of the ``FileMetaData`` struct (the footer signature of files with encrypted columns but
a plaintext footer) are ignored; a row group with rows must have at least one plaintext column.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from chalicelib.dataversion.errors import UnreadableContent

MAGIC = b"PAR1"
MAX_DEPTH = 64
MAX_COLUMNS = 10_000
MAX_SCHEMA_ELEMENTS = 100_000

# Thrift compact-protocol type ids.
_STOP, _TRUE, _FALSE, _I8, _I16, _I32, _I64, _DOUBLE = 0, 1, 2, 3, 4, 5, 6, 7
_BINARY, _LIST, _SET, _MAP, _STRUCT = 8, 9, 10, 11, 12
_BOOLS = (_TRUE, _FALSE)
_TYPE_NAMES = {
    _TRUE: "bool",
    _FALSE: "bool",
    _I8: "i8",
    _I16: "i16",
    _I32: "i32",
    _I64: "i64",
    _DOUBLE: "double",
    _BINARY: "binary",
    _LIST: "list",
    _SET: "set",
    _MAP: "map",
    _STRUCT: "struct",
}

# Parquet physical type (index) → our column type. Logical types are not consulted.
_PHYSICAL_TYPES = ("bool", "int", "long", "string", "float", "double", "string", "string")
_REQUIRED, _OPTIONAL, _REPEATED = 0, 1, 2
_I32_RANGE = range(-(2**31), 2**31)


@dataclass(frozen=True)
class ColumnStatistics:
    """What the footer's statistics say about one leaf column over every row group.

    Attributes:
        nulls: Null values in the column, summed over the row groups (``None``: a row group's
            statistics do not say).
        low: Its smallest value, for the numeric physical types (INT32, INT64, FLOAT, DOUBLE,
            read as signed numbers; ``None``: unknown, or no value).
        high: Its largest value, likewise.
    """

    nulls: int | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class ParquetMetadata:
    """What the footer of a Parquet file says about its content.

    Attributes:
        num_rows: Exact number of rows in the file.
        columns: Leaf column path → column type (one of ``COLUMN_TYPES``), in file order.
            Top-level leaves are named as-is; leaves inside groups are dotted paths
            (``a.b.c``), as Parquet tools show column paths; a name holding a ``.`` or a
            backquote is written in backquotes (```a.b```), as Spark does.
        nullable: Leaf column paths that may hold nulls, in file order.
        created_by: The writer's self-description (e.g. ``parquet-cpp-arrow version 26.0.1``).
        statistics: Leaf column path → its statistics from the row groups' column chunks, for
            the columns that are not repeated (lists, maps) and whose chunks all carry
            statistics.
    """

    num_rows: int
    columns: dict[str, str]
    nullable: list[str]
    created_by: str | None = None
    statistics: dict[str, ColumnStatistics] = field(default_factory=dict, compare=False)


def footer_size(tail: bytes, file_size: int | None = None) -> int:
    """The length of the ``FileMetaData`` of a Parquet file, from the end of the file.

    Args:
        tail: The last bytes of the file (at least 8; the whole file is fine).
        file_size: The file's total size, if known; a footer that cannot fit in it is rejected.

    Returns:
        The number of bytes of ``FileMetaData`` that precede the last 8 bytes of the file.

    Raises:
        UnreadableContent: Fewer than 8 bytes, no trailing ``PAR1``, or a footer longer than
            the file.
    """
    if len(tail) < 8:
        raise UnreadableContent(f"not a Parquet file: {len(tail)} bytes, the footer needs 8")
    if tail[-4:] != MAGIC:
        raise UnreadableContent(f"not a Parquet file: ends with {bytes(tail[-4:])!r}, not PAR1")
    size = int.from_bytes(tail[-8:-4], "little")
    if size >= 2**31:
        raise UnreadableContent(f"Parquet footer length {size - 2**32} is negative")
    if file_size is not None and size + 12 > file_size:
        raise UnreadableContent(
            f"Parquet footer length {size} does not fit in a file of {file_size} bytes"
        )
    return size


def read_metadata(data: bytes) -> ParquetMetadata:
    """Parses the footer of a complete Parquet file held in memory.

    Args:
        data: The whole file.

    Raises:
        UnreadableContent: The bytes are not a readable Parquet file.
    """
    if data[:4] != MAGIC:
        raise UnreadableContent("not a Parquet file: it does not start with PAR1")
    size = footer_size(data, file_size=len(data))
    return parse_footer(data[-8 - size : -8], file_size=len(data))


def parse_footer(metadata: bytes, file_size: int | None = None) -> ParquetMetadata:
    """Decodes a Thrift-compact ``FileMetaData`` into the schema and row count.

    Column types come from the *physical* type of each leaf: BOOLEAN → bool, INT32 → int,
    INT64 → long, FLOAT → float, DOUBLE → double, BYTE_ARRAY / FIXED_LEN_BYTE_ARRAY / INT96 →
    string. Logical annotations are not consulted, so dates and 32-bit decimals are ``int``,
    timestamps, times and 64-bit decimals ``long``, unsigned integers their signed width, and
    wide decimals, UUIDs and legacy INT96 timestamps ``string``.

    A leaf is nullable when it or any enclosing group (not the root) is OPTIONAL, or when its
    repetition is missing. A REPEATED leaf, or any leaf inside a REPEATED group (lists and
    maps), is reported as an opaque ``string`` and as nullable.

    Args:
        metadata: Exactly the ``FileMetaData`` bytes (see :func:`footer_size`).
        file_size: The whole file's size, when known: the column data the row groups point at
            must then lie between the leading ``PAR1`` and the footer.

    Raises:
        UnreadableContent: The bytes are not a well-formed ``FileMetaData``, a required field
            is missing, the schema is inconsistent, it has more than ``MAX_COLUMNS`` leaves, or
            its row counts are not what the row groups (and the file) can hold.
    """
    fields = _read_struct(_Reader(metadata), _FILE_FIELDS, depth=0)
    if 2 not in fields or not fields[2]:
        raise UnreadableContent("Parquet footer has no schema")
    if 3 not in fields:
        raise UnreadableContent("Parquet footer has no num_rows")
    if fields[3] < 0:
        raise UnreadableContent(f"Parquet footer has a negative num_rows ({fields[3]})")
    flattener = _flatten(fields[2])
    data_end = None if file_size is None else file_size - 8 - len(metadata)
    groups = fields.get(4, _RowGroups())
    _check_row_groups(fields[3], groups, data_end)
    statistics = {
        name: found.statistics()
        for name, found in zip(flattener.columns, groups.columns, strict=False)
        if name not in flattener.repeated and found.known
    }
    return ParquetMetadata(
        fields[3], flattener.columns, flattener.nullable, fields.get(6), statistics
    )


class _Reader:
    """A cursor over Thrift compact-protocol bytes that never reads past the end."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    def remaining(self) -> int:
        """Bytes not yet read."""
        return len(self._data) - self._pos

    def byte(self) -> int:
        """One unsigned byte."""
        if self._pos >= len(self._data):
            raise UnreadableContent("Parquet footer is truncated")
        self._pos += 1
        return self._data[self._pos - 1]

    def take(self, size: int) -> bytes:
        """``size`` raw bytes."""
        if size > self.remaining():
            raise UnreadableContent(
                f"Parquet footer is truncated: {size} bytes needed, {self.remaining()} left"
            )
        self._pos += size
        return self._data[self._pos - size : self._pos]

    def varint(self) -> int:
        """An unsigned LEB128 varint of at most 64 bits."""
        result = 0
        for shift in range(0, 70, 7):
            octet = self.byte()
            result |= (octet & 0x7F) << shift
            if octet < 0x80:
                if result >> 64:
                    break
                return result
        raise UnreadableContent("Parquet footer has a varint longer than 64 bits")

    def zigzag(self) -> int:
        """A zigzag-encoded signed integer (i16, i32 and i64 share the encoding)."""
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def i32(self) -> int:
        """A zigzag-encoded i32, range-checked."""
        value = self.zigzag()
        if value not in _I32_RANGE:
            raise UnreadableContent(f"Parquet footer has an i32 out of range ({value})")
        return value

    def binary(self) -> bytes:
        """A length-prefixed byte string."""
        return self.take(self.varint())

    def size(self, size: int) -> int:
        """Checks a container size: every element takes at least one byte."""
        if size > self.remaining():
            raise UnreadableContent(
                f"Parquet footer has a container of {size} elements in {self.remaining()} bytes"
            )
        return size

    def list_header(self) -> tuple[int, int]:
        """The element type and size of a list or set."""
        header = self.byte()
        size = header >> 4
        if size == 15:
            size = self.varint()
        return _check_type(header & 0x0F), self.size(size)

    def map_header(self) -> tuple[int, int, int]:
        """The key type, value type and size of a map."""
        size = self.size(self.varint())
        if size == 0:
            return _STOP, _STOP, 0
        types = self.byte()
        return _check_type(types >> 4), _check_type(types & 0x0F), size

    def field_header(self, last_id: int) -> tuple[int, int]:
        """The compact type and id of the next struct field (type ``_STOP`` at the end)."""
        header = self.byte()
        ctype = header & 0x0F
        if ctype == _STOP:
            return _STOP, 0
        delta = header >> 4
        return _check_type(ctype), last_id + delta if delta else self.zigzag()


def _check_type(ctype: int) -> int:
    """Rejects compact type ids that do not exist."""
    if ctype not in _TYPE_NAMES:
        raise UnreadableContent(f"Parquet footer has an unknown Thrift compact type id {ctype}")
    return ctype


def _check_depth(depth: int) -> None:
    """Bounds nesting so that hostile input cannot exhaust the stack."""
    if depth > MAX_DEPTH:
        raise UnreadableContent(f"Parquet footer is nested deeper than {MAX_DEPTH} levels")


def _skip(reader: _Reader, ctype: int, depth: int) -> None:
    """Skips one value of a struct field; booleans live in the field header and take no byte."""
    _check_depth(depth)
    if ctype in (_I16, _I32, _I64):
        reader.varint()
    elif ctype == _I8:
        reader.take(1)
    elif ctype == _DOUBLE:
        reader.take(8)
    elif ctype == _BINARY:
        reader.binary()
    elif ctype in (_LIST, _SET):
        _skip_list(reader, depth)
    elif ctype == _MAP:
        _skip_map(reader, depth)
    elif ctype == _STRUCT:
        _read_struct(reader, {}, depth)


def _skip_element(reader: _Reader, ctype: int, depth: int) -> None:
    """Skips one element of a list, set or map; a boolean element is one byte."""
    if ctype in _BOOLS:
        reader.take(1)
    else:
        _skip(reader, ctype, depth)


def _skip_list(reader: _Reader, depth: int) -> None:
    """Skips a list or set."""
    etype, size = reader.list_header()
    for _ in range(size):
        _skip_element(reader, etype, depth + 1)


def _skip_map(reader: _Reader, depth: int) -> None:
    """Skips a map."""
    ktype, vtype, size = reader.map_header()
    for _ in range(size):
        _skip_element(reader, ktype, depth + 1)
        _skip_element(reader, vtype, depth + 1)


_FieldSpec = dict[int, tuple[int, Callable[[_Reader, int], Any]]]


def _read_struct(reader: _Reader, spec: _FieldSpec, depth: int) -> dict[int, Any]:
    """Reads a struct: the fields in ``spec`` (id → compact type, reader), skipping the rest."""
    _check_depth(depth)
    values: dict[int, Any] = {}
    ctype, field_id = reader.field_header(0)
    while ctype != _STOP:
        if field_id in spec:
            values[field_id] = _read_field(reader, spec[field_id], ctype, field_id, depth)
        else:
            _skip(reader, ctype, depth + 1)
        ctype, field_id = reader.field_header(field_id)
    return values


def _read_field(
    reader: _Reader,
    expected: tuple[int, Callable[[_Reader, int], Any]],
    ctype: int,
    fid: int,
    depth: int,
) -> Any:
    """Reads one known field after checking its compact type."""
    want, read = expected
    if ctype != want:
        raise UnreadableContent(
            f"Parquet footer field {fid} is a {_TYPE_NAMES[ctype]}, expected {_TYPE_NAMES[want]}"
        )
    return read(reader, depth + 1)


def _read_i32(reader: _Reader, depth: int) -> int:
    """An i32 field value."""
    return reader.i32()


def _read_i64(reader: _Reader, depth: int) -> int:
    """An i64 field value."""
    return reader.zigzag()


def _read_name(reader: _Reader, depth: int) -> str:
    """A schema element name: strict UTF-8."""
    raw = reader.binary()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableContent("Parquet schema has a column name that is not UTF-8") from None


def _read_text(reader: _Reader, depth: int) -> str:
    """Free text (``created_by``): invalid UTF-8 is replaced, not rejected."""
    return reader.binary().decode("utf-8", errors="replace")


def _read_bytes(reader: _Reader, depth: int) -> bytes:
    """A binary field value (a statistic's encoded value)."""
    return reader.binary()


@dataclass(frozen=True)
class _Element:
    """The parts of a Parquet ``SchemaElement`` the flattening needs."""

    name: str
    physical: int | None
    repetition: int | None
    num_children: int

    @property
    def is_leaf(self) -> bool:
        """A typed element without children (as Arrow decides; an untyped one is a group)."""
        return self.num_children == 0 and self.physical is not None


_ELEMENT_FIELDS: _FieldSpec = {
    1: (_I32, _read_i32),
    3: (_I32, _read_i32),
    4: (_BINARY, _read_name),
    5: (_I32, _read_i32),
}


def _read_element(reader: _Reader, depth: int) -> _Element:
    """Reads and validates one ``SchemaElement``."""
    fields = _read_struct(reader, _ELEMENT_FIELDS, depth)
    if 4 not in fields:
        raise UnreadableContent("Parquet schema element has no name")
    element = _Element(fields[4], fields.get(1), fields.get(3), fields.get(5, 0))
    if element.physical is not None and not 0 <= element.physical < len(_PHYSICAL_TYPES):
        raise UnreadableContent(
            f"Parquet column {element.name!r} has unknown type {element.physical}"
        )
    if element.repetition is not None and element.repetition not in (0, 1, 2):
        raise UnreadableContent(
            f"Parquet column {element.name!r} has unknown repetition {element.repetition}"
        )
    if element.num_children < 0:
        raise UnreadableContent(f"Parquet group {element.name!r} has negative num_children")
    return element


def _read_schema(reader: _Reader, depth: int) -> list[_Element]:
    """Reads ``list<SchemaElement>``."""
    etype, size = reader.list_header()
    if etype != _STRUCT:
        raise UnreadableContent(f"Parquet schema is a list of {_TYPE_NAMES[etype]}, not structs")
    if size > MAX_SCHEMA_ELEMENTS:
        raise UnreadableContent(
            f"Parquet schema has {size} elements (at most {MAX_SCHEMA_ELEMENTS})"
        )
    return [_read_element(reader, depth + 1) for _ in range(size)]


# ---- row groups: what the file physically holds ---------------------------------------------

# A data page counts its values in an i32, and takes at least one byte.
MAX_PAGE_VALUES = 2**31 - 1
_DATA_START = len(MAGIC)


@dataclass
class _Chunks:
    """What the column chunks of one row group add up to (kept as totals: a footer may list
    millions of chunks)."""

    count: int = 0
    plain: int = 0
    compressed: int = 0
    min_values: int | None = None
    start: int | None = None
    end: int = 0
    external: bool = False
    # (physical type, Statistics, num_values) of each chunk, in column order, until the row
    # group is merged into the file's column totals (see _read_row_groups).
    stats: list[tuple[int | None, dict[int, Any] | None, int]] = field(default_factory=list)

    def add(self, chunk: dict[int, Any]) -> None:
        """Adds one ``ColumnChunk`` (its ``file_path`` and ``ColumnMetaData``)."""
        self.count += 1
        self.external = self.external or bool(chunk.get(1))
        meta = chunk.get(3)
        self.stats.append((None, None, 0) if meta is None else (meta.get(1), meta.get(12), 0))
        if meta is None:  # an encrypted column: its metadata is not in plaintext
            return
        missing = [name for fid, name in _REQUIRED_META.items() if fid not in meta]
        if missing:
            raise UnreadableContent(f"Parquet column chunk metadata lacks {', '.join(missing)}")
        values, size, data_offset = meta[5], meta[7], meta[9]
        dictionary_offset = meta.get(11, 0)
        if min(values, size, data_offset, dictionary_offset) < 0:
            raise UnreadableContent("Parquet column chunk has a negative count, size or offset")
        if values > MAX_PAGE_VALUES * size:
            raise UnreadableContent(
                f"Parquet column chunk claims {values} values in {size} bytes "
                f"(a page holds at most {MAX_PAGE_VALUES} values and takes at least a byte)"
            )
        self.stats[-1] = (meta.get(1), meta.get(12), values)
        self.plain += 1
        self.compressed += size
        self.min_values = values if self.min_values is None else min(self.min_values, values)
        if values:  # writers leave the data page offset of an empty chunk at 0
            start = dictionary_offset if 0 < dictionary_offset < data_offset else data_offset
            self.start = start if self.start is None else min(self.start, start)
            self.end = max(self.end, start + size)


# Physical types whose statistics decode to numbers: INT32, INT64, FLOAT, DOUBLE.
_NUMERIC_FORMATS = {1: "<i", 2: "<q", 4: "<f", 5: "<d"}


class _ColumnTotals:
    """One leaf column's statistics merged over the row groups read so far."""

    def __init__(self) -> None:
        self.known = True  # every chunk so far carried its null count
        self.nulls = 0
        self.ranged = True  # every chunk with values so far carried a decodable min and max
        self.low: float | None = None
        self.high: float | None = None

    def merge(self, physical: int | None, stats: dict[int, Any] | None, values: int) -> None:
        """Adds one column chunk's statistics."""
        if stats is None or 3 not in stats:
            self.known = False
            return
        self.nulls += stats[3]
        if values - stats[3] <= 0:
            return  # no value: no range to add
        low = _decoded(physical, stats.get(6, stats.get(2)))
        high = _decoded(physical, stats.get(5, stats.get(1)))
        if low is None or high is None:
            self.ranged = False
            return
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

    def statistics(self) -> ColumnStatistics:
        """The merged statistics."""
        if not self.ranged:
            return ColumnStatistics(self.nulls)
        return ColumnStatistics(self.nulls, self.low, self.high)


def _decoded(physical: int | None, raw: bytes | None) -> float | None:
    """A numeric statistic (plain-encoded, little-endian) as a float; ``None`` otherwise."""
    layout = _NUMERIC_FORMATS.get(physical or -1)
    if layout is None or raw is None or len(raw) != struct.calcsize(layout):
        return None
    value = float(struct.unpack(layout, raw)[0])
    return value if math.isfinite(value) else None


class _RowGroups(list[tuple[int, "_Chunks"]]):
    """The row groups (num_rows, chunk totals), and every leaf column's merged statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[_ColumnTotals] = []

    def add(self, rows: int, chunks: _Chunks) -> None:
        """Adds a row group, merging its chunks' statistics column by column."""
        for index, (physical, stats, values) in enumerate(chunks.stats):
            if index >= MAX_COLUMNS:
                break
            if index == len(self.columns):
                self.columns.append(_ColumnTotals())
            self.columns[index].merge(physical, stats, values)
        for missing in self.columns[len(chunks.stats) :]:
            missing.known = False
        chunks.stats = []
        self.append((rows, chunks))


_REQUIRED_META = {5: "num_values", 7: "total_compressed_size", 9: "data_page_offset"}
_STATISTICS_FIELDS: _FieldSpec = {
    1: (_BINARY, _read_bytes),
    2: (_BINARY, _read_bytes),
    3: (_I64, _read_i64),
    5: (_BINARY, _read_bytes),
    6: (_BINARY, _read_bytes),
}


def _read_statistics(reader: _Reader, depth: int) -> dict[int, Any]:
    """A chunk's ``Statistics``: null count and encoded min/max (new and legacy fields)."""
    return _read_struct(reader, _STATISTICS_FIELDS, depth)


_META_FIELDS: _FieldSpec = {
    1: (_I32, _read_i32),
    5: (_I64, _read_i64),
    7: (_I64, _read_i64),
    9: (_I64, _read_i64),
    11: (_I64, _read_i64),
    12: (_STRUCT, _read_statistics),
}


def _read_column_meta(reader: _Reader, depth: int) -> dict[int, Any]:
    """The counts, size and offsets of one ``ColumnMetaData``."""
    return _read_struct(reader, _META_FIELDS, depth)


_CHUNK_FIELDS: _FieldSpec = {
    1: (_BINARY, _read_text),
    3: (_STRUCT, _read_column_meta),
}


def _read_chunks(reader: _Reader, depth: int) -> _Chunks:
    """Reads ``list<ColumnChunk>`` into totals."""
    etype, size = reader.list_header()
    if etype != _STRUCT:
        raise UnreadableContent(f"Parquet row group columns are {_TYPE_NAMES[etype]}, not structs")
    totals = _Chunks()
    for _ in range(size):
        totals.add(_read_struct(reader, _CHUNK_FIELDS, depth + 1))
    return totals


_ROW_GROUP_FIELDS: _FieldSpec = {
    1: (_LIST, _read_chunks),
    3: (_I64, _read_i64),
}


def _read_row_groups(reader: _Reader, depth: int) -> _RowGroups:
    """Reads ``list<RowGroup>``: (num_rows, column chunk totals) of each."""
    etype, size = reader.list_header()
    if etype != _STRUCT:
        raise UnreadableContent(f"Parquet row groups are {_TYPE_NAMES[etype]}, not structs")
    groups = _RowGroups()
    for index in range(size):
        fields = _read_struct(reader, _ROW_GROUP_FIELDS, depth + 1)
        if 1 not in fields or 3 not in fields:
            raise UnreadableContent(f"Parquet row group {index} lacks its columns or num_rows")
        groups.add(fields[3], fields[1])
    return groups


def _check_row_groups(
    num_rows: int, groups: list[tuple[int, _Chunks]], data_end: int | None
) -> None:
    """Refuses a row count the row groups do not add up to, or that the file cannot hold."""
    total = 0
    for index, (rows, chunks) in enumerate(groups):
        if rows < 0:
            raise UnreadableContent(f"Parquet row group {index} has a negative num_rows ({rows})")
        _check_group(index, rows, chunks)
        total += rows
    if total != num_rows:
        raise UnreadableContent(
            f"Parquet footer claims {num_rows} rows but its {len(groups)} row groups hold {total}"
        )
    if data_end is not None:
        _check_extent(groups, data_end)


def _check_group(index: int, rows: int, chunks: _Chunks) -> None:
    if chunks.external:
        raise UnreadableContent(
            f"Parquet row group {index} keeps column data in other files (file_path); "
            "only self-contained files can be versioned"
        )
    if rows == 0:
        return
    if chunks.plain == 0:
        held = "no column data" if chunks.count == 0 else "only encrypted columns"
        raise UnreadableContent(f"Parquet row group {index} claims {rows} rows but has {held}")
    if chunks.min_values is not None and chunks.min_values < rows:
        raise UnreadableContent(
            f"Parquet row group {index} claims {rows} rows but a column holds "
            f"{chunks.min_values} values (every row has at least one)"
        )


def _check_extent(groups: list[tuple[int, _Chunks]], data_end: int) -> None:
    """The column data must lie between the leading magic and the footer."""
    room = max(data_end - _DATA_START, 0)
    compressed = sum(chunks.compressed for _, chunks in groups)
    if compressed > room:
        raise UnreadableContent(
            f"Parquet column chunks claim {compressed} bytes; the file holds {room} bytes of data"
        )
    for index, (_, chunks) in enumerate(groups):
        if chunks.start is not None and (chunks.start < _DATA_START or chunks.end > data_end):
            raise UnreadableContent(
                f"Parquet row group {index} points at bytes {chunks.start}-{chunks.end}, "
                f"outside the file's data ({_DATA_START}-{data_end})"
            )


_FILE_FIELDS: _FieldSpec = {
    2: (_LIST, _read_schema),
    3: (_I64, _read_i64),
    4: (_LIST, _read_row_groups),
    6: (_BINARY, _read_text),
}


@dataclass(frozen=True)
class _Scope:
    """Where the flattening is: the path prefix and what the enclosing groups imply."""

    prefix: str
    optional: bool
    repeated: bool


class _Flattener:
    """Turns the depth-first ``list<SchemaElement>`` back into leaf column paths."""

    def __init__(self, elements: list[_Element]) -> None:
        self.elements = elements
        self.pos = 1
        self.columns: dict[str, str] = {}
        self.nullable: list[str] = []
        self.repeated: set[str] = set()

    def children(self, count: int, scope: _Scope, depth: int) -> None:
        """Consumes the next ``count`` subtrees, which are the children of one group."""
        _check_depth(depth)
        for _ in range(count):
            if self.pos >= len(self.elements):
                raise UnreadableContent("Parquet schema is inconsistent: num_children overrun it")
            element = self.elements[self.pos]
            self.pos += 1
            self.node(element, scope, depth)

    def node(self, element: _Element, scope: _Scope, depth: int) -> None:
        """Records a leaf, or descends into a group."""
        child = _Scope(
            prefix=f"{scope.prefix}{_segment(element.name)}",
            optional=scope.optional or element.repetition != _REQUIRED,
            repeated=scope.repeated or element.repetition == _REPEATED,
        )
        if element.is_leaf:
            self.leaf(child, _PHYSICAL_TYPES[element.physical or 0])
        else:
            self.children(
                element.num_children, replace(child, prefix=child.prefix + "."), depth + 1
            )

    def leaf(self, scope: _Scope, column_type: str) -> None:
        """Records one leaf column."""
        if scope.prefix in self.columns:
            raise UnreadableContent(f"Parquet schema has the column {scope.prefix!r} twice")
        if len(self.columns) >= MAX_COLUMNS:
            raise UnreadableContent(f"Parquet schema has more than {MAX_COLUMNS} columns")
        self.columns[scope.prefix] = "string" if scope.repeated else column_type
        if scope.repeated:
            self.repeated.add(scope.prefix)
        if scope.optional:
            self.nullable.append(scope.prefix)


def _segment(name: str) -> str:
    """One segment of a column path: as-is, or in backquotes (a backquote doubled) when it
    holds a ``.`` or a backquote, as Spark writes such names, so that a top-level column
    ``a.b`` (```a.b```) and the field ``b`` of a struct ``a`` (``a.b``) stay distinct."""
    if "." in name or "`" in name:
        return "`" + name.replace("`", "``") + "`"
    return name


def _flatten(elements: list[_Element]) -> _Flattener:
    """Leaf column path → type, and the nullable and repeated leaves, from a flattened
    schema."""
    root = elements[0]
    if root.is_leaf:
        raise UnreadableContent("Parquet schema root is a column, not a group")
    flattener = _Flattener(elements)
    flattener.children(root.num_children, _Scope("", optional=False, repeated=False), depth=1)
    if flattener.pos != len(elements):
        raise UnreadableContent(
            f"Parquet schema is inconsistent: {len(elements)} elements, "
            f"num_children account for {flattener.pos}"
        )
    return flattener
