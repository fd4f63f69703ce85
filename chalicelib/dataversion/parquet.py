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
# ConvertedType UINT_8, UINT_16, UINT_32, UINT_64: INT32/INT64 ordered as unsigned numbers.
_UNSIGNED = frozenset({11, 12, 13, 14})


@dataclass(frozen=True)
class ColumnStatistics:
    """What the footer's statistics say about one leaf column over every row group.

    Attributes:
        nulls: Null values in the column, summed over the row groups (``None``: a row group's
            statistics do not say).
        low: Its smallest value, for the numeric physical types (INT32, INT64, FLOAT, DOUBLE;
            integers annotated unsigned read as unsigned, from the ``min_value`` written in
            their order; ``None``: unknown, or no value).
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
    fields = _read_file_metadata(bytes(metadata))
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
        name: found.statistics(name in flattener.unsigned)
        for name, found in zip(flattener.columns, groups.columns, strict=False)
        if name not in flattener.repeated and found.known
    }
    return ParquetMetadata(
        fields[3], flattener.columns, flattener.nullable, fields.get(6), statistics
    )


# ---- the Thrift compact protocol ------------------------------------------------------------
#
# The decoder works on ``(data, pos)`` pairs with the common cases (one-byte varints, scalar
# fields nobody asked for) handled inline: a 1.4 MB footer holds about half a million fields,
# and a method call per byte made the parse take a second. Reading past the end of ``data``
# raises IndexError, which ``parse_footer`` reports as a truncated footer.

_FieldReader = Callable[["_Source", int, int], tuple[Any, int]]
# field id → (compact type, reader); a ``None`` reader reads an integer (an i32 is
# range-checked) or a binary inline.
_FieldSpec = dict[int, tuple[int, "_FieldReader | None"]]
_INTEGERS = (_I16, _I32, _I64)
# List elements skipped in a tight loop.
_FAST_ELEMENTS = (*_INTEGERS, _BINARY, _STRUCT)
_I32_LOW, _I32_HIGH = -(2**31), 2**31


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 varint of at most 64 bits at ``pos``: (value, next position)."""
    result = 0
    for shift in range(0, 70, 7):
        octet = data[pos]
        pos += 1
        result |= (octet & 0x7F) << shift
        if octet < 0x80:
            if result >> 64:
                break
            return result, pos
    raise UnreadableContent("Parquet footer has a varint longer than 64 bits")


def _zigzag(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag-encoded signed integer (i16, i32 and i64 share the encoding)."""
    octet = data[pos]
    if octet < 0x80:
        return (octet >> 1) ^ -(octet & 1), pos + 1
    value, pos = _varint(data, pos)
    return (value >> 1) ^ -(value & 1), pos


def _skip_varint(data: bytes, pos: int) -> int:
    """The position after a varint (still checked for its 64-bit bound)."""
    if data[pos] < 0x80:
        return pos + 1
    return _varint(data, pos)[1]


def _end_of(data: bytes, pos: int, size: int) -> int:
    """The position after ``size`` raw bytes at ``pos``."""
    left = len(data) - pos
    if size > left:
        raise UnreadableContent(f"Parquet footer is truncated: {size} bytes needed, {left} left")
    return pos + size


def _binary(data: bytes, pos: int) -> tuple[bytes, int]:
    """A length-prefixed byte string."""
    size = data[pos]
    if size < 0x80:
        pos += 1
    else:
        size, pos = _varint(data, pos)
    end = pos + size
    if end > len(data):
        _end_of(data, pos, size)
    return data[pos:end], end


def _check_size(data: bytes, pos: int, size: int) -> int:
    """Checks a container size: every element takes at least one byte."""
    left = len(data) - pos
    if size > left:
        raise UnreadableContent(
            f"Parquet footer has a container of {size} elements in {left} bytes"
        )
    return size


def _list_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """The element type and size of a list or set, and the position after the header."""
    header = data[pos]
    pos += 1
    size = header >> 4
    if size == 15:
        size, pos = _varint(data, pos)
    return _check_type(header & 0x0F), _check_size(data, pos, size), pos


def _check_type(ctype: int) -> int:
    """Rejects compact type ids that do not exist."""
    if ctype not in _TYPE_NAMES:
        raise UnreadableContent(f"Parquet footer has an unknown Thrift compact type id {ctype}")
    return ctype


def _check_depth(depth: int) -> None:
    """Bounds nesting so that hostile input cannot exhaust the stack."""
    if depth > MAX_DEPTH:
        raise UnreadableContent(f"Parquet footer is nested deeper than {MAX_DEPTH} levels")


def _field_id(data: bytes, pos: int, header: int, last_id: int) -> tuple[int, int]:
    """A field header's id: a delta from the last id, or a zigzag varint after the header."""
    delta = header >> 4
    if delta:
        return last_id + delta, pos
    return _zigzag(data, pos)


def _skip(data: bytes, pos: int, ctype: int, depth: int) -> int:
    """Skips one value of a struct field; booleans live in the field header and take no byte."""
    _check_depth(depth)
    if ctype in _INTEGERS:
        return _skip_varint(data, pos)
    if ctype == _BINARY:
        size, pos = _varint(data, pos)
        return _end_of(data, pos, size)
    if ctype == _STRUCT:
        return _skip_struct(data, pos, depth)
    if ctype in (_LIST, _SET):
        return _skip_list(data, pos, depth)
    if ctype == _MAP:
        return _skip_map(data, pos, depth)
    if ctype == _I8:
        return _end_of(data, pos, 1)
    if ctype == _DOUBLE:
        return _end_of(data, pos, 8)
    return pos


def _skip_element(data: bytes, pos: int, ctype: int, depth: int) -> int:
    """Skips one element of a list, set or map; a boolean element is one byte."""
    if ctype in _BOOLS:
        return _end_of(data, pos, 1)
    return _skip(data, pos, ctype, depth)


def _skip_list(data: bytes, pos: int, depth: int) -> int:
    """Skips a list or set; lists of integers, strings and structs in a tight loop."""
    header = data[pos]
    size = header >> 4
    etype = header & 0x0F
    if size == 15 or etype not in _FAST_ELEMENTS:
        etype, size, pos = _list_header(data, pos)
    else:
        pos += 1
    if not size or etype not in _FAST_ELEMENTS:
        for _ in range(size):
            pos = _skip_element(data, pos, etype, depth + 1)
        return pos
    _check_size(data, pos, size)
    _check_depth(depth + 1)
    if etype == _STRUCT:
        for _ in range(size):
            pos = _skip_struct(data, pos, depth + 1)
        return pos
    end = len(data)
    for _ in range(size):
        octet = data[pos]
        if octet < 0x80:
            pos += 1
        else:
            octet, pos = _varint(data, pos)
        if etype == _BINARY:
            if octet > end - pos:
                _end_of(data, pos, octet)
            pos += octet
    return pos


def _skip_map(data: bytes, pos: int, depth: int) -> int:
    """Skips a map."""
    size, pos = _varint(data, pos)
    _check_size(data, pos, size)
    if size == 0:
        return pos
    types = data[pos]
    pos += 1
    ktype, vtype = _check_type(types >> 4), _check_type(types & 0x0F)
    for _ in range(size):
        pos = _skip_element(data, pos, ktype, depth + 1)
        pos = _skip_element(data, pos, vtype, depth + 1)
    return pos


def _skip_struct(data: bytes, pos: int, depth: int) -> int:
    """Skips a struct (its depth already checked): every field, scalars inline."""
    inner = depth + 1
    shallow = inner <= MAX_DEPTH
    while True:
        header = data[pos]
        pos += 1
        ctype = header & 0x0F
        if not ctype:
            return pos
        if ctype > _STRUCT:
            _check_type(ctype)
        if not header >> 4:  # a long field header: the id follows as a zigzag varint
            pos = pos + 1 if data[pos] < 0x80 else _varint(data, pos)[1]
        if shallow and ctype in _INTEGERS:
            pos = pos + 1 if data[pos] < 0x80 else _varint(data, pos)[1]
        elif not shallow or ctype not in _BOOLS:
            pos = _skip(data, pos, ctype, inner)


class _Source:
    """The footer's bytes, and the last value skipped for each (field id, type, depth).

    Column chunks repeat what the parse skips (encodings, encoding statistics, page-size
    histograms), often byte for byte. Skipping reads nothing but the value's own bytes and
    depends on nothing but them, its type and its depth, so bytes equal to a value skipped
    before, at the same depth and type, skip by its length without being decoded again.
    """

    __slots__ = ("data", "skipped")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.skipped: dict[tuple[int, int, int], bytes] = {}

    def skip(self, pos: int, ctype: int, depth: int, field_id: int) -> int:
        """Skips the value of a field the parse does not use."""
        data = self.data
        if depth <= MAX_DEPTH:
            if ctype in _INTEGERS:
                return pos + 1 if data[pos] < 0x80 else _varint(data, pos)[1]
            if ctype in _BOOLS:
                return pos
        if ctype < _LIST:  # a scalar costs less to skip than to remember
            return _skip(data, pos, ctype, depth)
        key = (field_id, ctype, depth)
        seen = self.skipped.get(key)
        if seen is not None and data.startswith(seen, pos):
            return pos + len(seen)
        end = _skip(data, pos, ctype, depth)
        self.skipped[key] = data[pos:end]
        return end


def _read_struct(
    src: _Source, pos: int, spec: _FieldSpec, depth: int
) -> tuple[dict[int, Any], int]:
    """Reads a struct: the fields in ``spec``, skipping the rest."""
    _check_depth(depth)
    data = src.data
    values: dict[int, Any] = {}
    last_id = 0
    while True:
        header = data[pos]
        ctype = header & 0x0F
        if not ctype:
            return values, pos + 1
        if ctype > _STRUCT:
            _check_type(ctype)
        if header >> 4:
            last_id += header >> 4
            pos += 1
        else:
            last_id, pos = _zigzag(data, pos + 1)
        expected = spec.get(last_id)
        if expected is None:
            pos = src.skip(pos, ctype, depth + 1, last_id)
        elif expected[1] is None and ctype == expected[0]:
            values[last_id], pos = _scalar(data, pos, ctype)
        else:
            values[last_id], pos = _known(src, pos, ctype, expected, depth + 1, last_id)


def _known(
    src: _Source,
    pos: int,
    ctype: int,
    expected: tuple[int, _FieldReader | None],
    depth: int,
    field_id: int,
) -> tuple[Any, int]:
    """Reads one known field (not an integer) after checking its compact type."""
    want, read = expected
    if ctype != want:
        raise UnreadableContent(
            f"Parquet footer field {field_id} is a {_TYPE_NAMES[ctype]}, "
            f"expected {_TYPE_NAMES[want]}"
        )
    assert read is not None  # a scalar of the expected type is read by _read_struct
    return read(src, pos, depth)


def _scalar(data: bytes, pos: int, ctype: int) -> tuple[Any, int]:
    """A binary or a zigzag-encoded integer (an i32 range-checked)."""
    if ctype == _BINARY:
        return _binary(data, pos)
    value = 0
    for shift in range(0, 63, 7):  # up to 9 bytes here; longer ones are checked by _varint
        octet = data[pos]
        pos += 1
        value |= (octet & 0x7F) << shift
        if octet < 0x80:
            break
    else:
        value, pos = _varint(data, pos - 9)
    value = (value >> 1) ^ -(value & 1)
    if ctype == _I32 and not _I32_LOW <= value < _I32_HIGH:
        raise UnreadableContent(f"Parquet footer has an i32 out of range ({value})")
    return value, pos


def _read_name(src: _Source, pos: int, depth: int) -> tuple[str, int]:
    """A schema element name: strict UTF-8."""
    raw, pos = _binary(src.data, pos)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError:
        raise UnreadableContent("Parquet schema has a column name that is not UTF-8") from None


def _read_text(src: _Source, pos: int, depth: int) -> tuple[str, int]:
    """Free text (``created_by``): invalid UTF-8 is replaced, not rejected."""
    raw, pos = _binary(src.data, pos)
    return raw.decode("utf-8", errors="replace"), pos


@dataclass(frozen=True)
class _Element:
    """The parts of a Parquet ``SchemaElement`` the flattening needs."""

    name: str
    physical: int | None
    repetition: int | None
    num_children: int
    unsigned: bool = False

    @property
    def is_leaf(self) -> bool:
        """A typed element without children (as Arrow decides; an untyped one is a group)."""
        return self.num_children == 0 and self.physical is not None


_ELEMENT_FIELDS: _FieldSpec = {
    1: (_I32, None),
    3: (_I32, None),
    4: (_BINARY, _read_name),
    5: (_I32, None),
    6: (_I32, None),
}


def _read_element(src: _Source, pos: int, depth: int) -> tuple[_Element, int]:
    """Reads and validates one ``SchemaElement``."""
    fields, pos = _read_struct(src, pos, _ELEMENT_FIELDS, depth)
    if 4 not in fields:
        raise UnreadableContent("Parquet schema element has no name")
    element = _Element(
        fields[4], fields.get(1), fields.get(3), fields.get(5, 0), fields.get(6) in _UNSIGNED
    )
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
    return element, pos


def _read_schema(src: _Source, pos: int, depth: int) -> tuple[list[_Element], int]:
    """Reads ``list<SchemaElement>``."""
    etype, size, pos = _list_header(src.data, pos)
    if etype != _STRUCT:
        raise UnreadableContent(f"Parquet schema is a list of {_TYPE_NAMES[etype]}, not structs")
    if size > MAX_SCHEMA_ELEMENTS:
        raise UnreadableContent(
            f"Parquet schema has {size} elements (at most {MAX_SCHEMA_ELEMENTS})"
        )
    elements = []
    for _ in range(size):
        element, pos = _read_element(src, pos, depth + 1)
        elements.append(element)
    return elements, pos


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
        if 5 not in meta or 7 not in meta or 9 not in meta:
            missing = [name for fid, name in _REQUIRED_META.items() if fid not in meta]
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
_NUMERIC_FORMATS = {
    kind: struct.Struct(layout) for kind, layout in enumerate("?iq?fd") if kind in (1, 2, 4, 5)
}


_INTEGER_SIZES = {1: 4, 2: 8}  # INT32, INT64: bytes of a plain-encoded statistic


class _ColumnTotals:
    """One leaf column's statistics merged over the row groups read so far."""

    def __init__(self) -> None:
        self.known = True  # every chunk so far carried its null count
        self.nulls = 0
        self.ranged = True  # every chunk with values so far carried a decodable min and max
        self.low: float | None = None
        self.high: float | None = None
        # An integer chunk's min_value and max_value, read as unsigned only for a column
        # annotated so (the deprecated min/max were written in signed order even for those).
        self.integer_bounds: list[tuple[bytes | None, bytes | None]] = []

    def merge(self, physical: int | None, stats: dict[int, Any] | None, values: int) -> None:
        """Adds one column chunk's statistics."""
        if stats is None or 3 not in stats:
            self.known = False
            return
        self.nulls += stats[3]
        if values - stats[3] <= 0:
            return  # no value: no range to add
        if physical in _INTEGER_SIZES:
            self.integer_bounds.append((stats.get(6), stats.get(5)))
        low = _decoded(physical, stats.get(6, stats.get(2)))
        high = _decoded(physical, stats.get(5, stats.get(1)))
        if low is None or high is None:
            self.ranged = False
            return
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

    def statistics(self, unsigned: bool = False) -> ColumnStatistics:
        """The merged statistics (``unsigned``: of a column annotated unsigned)."""
        if unsigned:
            return ColumnStatistics(self.nulls, *_unsigned_range(self.integer_bounds))
        if not self.ranged:
            return ColumnStatistics(self.nulls)
        return ColumnStatistics(self.nulls, self.low, self.high)


def _decoded(physical: int | None, raw: bytes | None) -> float | None:
    """A numeric statistic (plain-encoded, little-endian) as a float; ``None`` otherwise."""
    layout = _NUMERIC_FORMATS.get(physical or -1)
    if layout is None or raw is None or len(raw) != layout.size:
        return None
    value = float(layout.unpack(raw)[0])
    return value if math.isfinite(value) else None


def _unsigned_range(
    bounds: list[tuple[bytes | None, bytes | None]],
) -> tuple[float, float] | tuple[()]:
    """The smallest and largest of the chunks' bounds read as unsigned integers; nothing when
    a chunk lacks them (or they are not 4 or 8 bytes) or there is no chunk."""
    lows, highs = [], []
    for low, high in bounds:
        if low is None or high is None or len(low) not in (4, 8) or len(high) != len(low):
            return ()
        lows.append(int.from_bytes(low, "little"))
        highs.append(int.from_bytes(high, "little"))
    return (float(min(lows)), float(max(highs))) if lows else ()


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
    1: (_BINARY, None),
    2: (_BINARY, None),
    3: (_I64, None),
    5: (_BINARY, None),
    6: (_BINARY, None),
}


def _read_statistics(src: _Source, pos: int, depth: int) -> tuple[dict[int, Any], int]:
    """A chunk's ``Statistics``: null count and encoded min/max (new and legacy fields)."""
    return _read_struct(src, pos, _STATISTICS_FIELDS, depth)


_META_FIELDS: _FieldSpec = {
    1: (_I32, None),
    5: (_I64, None),
    7: (_I64, None),
    9: (_I64, None),
    11: (_I64, None),
    12: (_STRUCT, _read_statistics),
}


def _read_column_meta(src: _Source, pos: int, depth: int) -> tuple[dict[int, Any], int]:
    """The counts, size and offsets of one ``ColumnMetaData``."""
    return _read_struct(src, pos, _META_FIELDS, depth)


_CHUNK_FIELDS: _FieldSpec = {
    1: (_BINARY, _read_text),
    3: (_STRUCT, _read_column_meta),
}


def _read_chunks(src: _Source, pos: int, depth: int) -> tuple[_Chunks, int]:
    """Reads ``list<ColumnChunk>`` into totals."""
    etype, size, pos = _list_header(src.data, pos)
    if etype != _STRUCT:
        raise UnreadableContent(f"Parquet row group columns are {_TYPE_NAMES[etype]}, not structs")
    totals = _Chunks()
    for _ in range(size):
        chunk, pos = _read_struct(src, pos, _CHUNK_FIELDS, depth + 1)
        totals.add(chunk)
    return totals, pos


_ROW_GROUP_FIELDS: _FieldSpec = {
    1: (_LIST, _read_chunks),
    3: (_I64, None),
}


def _read_row_groups(src: _Source, pos: int, depth: int) -> tuple[_RowGroups, int]:
    """Reads ``list<RowGroup>``: (num_rows, column chunk totals) of each."""
    etype, size, pos = _list_header(src.data, pos)
    if etype != _STRUCT:
        raise UnreadableContent(f"Parquet row groups are {_TYPE_NAMES[etype]}, not structs")
    groups = _RowGroups()
    for index in range(size):
        fields, pos = _read_struct(src, pos, _ROW_GROUP_FIELDS, depth + 1)
        if 1 not in fields or 3 not in fields:
            raise UnreadableContent(f"Parquet row group {index} lacks its columns or num_rows")
        groups.add(fields[3], fields[1])
    return groups, pos


def _read_file_metadata(data: bytes) -> dict[int, Any]:
    """The ``FileMetaData`` fields the parse uses; reading past the end is a truncated footer."""
    try:
        return _read_struct(_Source(data), 0, _FILE_FIELDS, depth=0)[0]
    except IndexError:
        raise UnreadableContent("Parquet footer is truncated") from None


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
    3: (_I64, None),
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
        self.unsigned: set[str] = set()

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
            if element.unsigned:
                self.unsigned.add(child.prefix)
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
