"""Hand-built Parquet footers: the Thrift compact protocol written out byte by byte, so tests can
make footers pyarrow would never write (absurd counts, unknown fields, malformed structures)."""

from __future__ import annotations

from chalicelib.dataversion import parquet
from chalicelib.dataversion.parquet import MAGIC

STOP, TRUE, FALSE, I8, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zz(n: int) -> bytes:
    return uvarint(n * 2 if n >= 0 else -n * 2 - 1)


def text(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return uvarint(len(raw)) + raw


def struct(*fields: tuple[int, int, bytes]) -> bytes:
    """Fields (id, compact type, payload), with short headers where the delta allows."""
    out, last = bytearray(), 0
    for fid, ctype, payload in fields:
        if 0 < fid - last <= 15:
            out.append((fid - last) << 4 | ctype)
        else:
            out += bytes([ctype]) + zz(fid)
        out += payload
        last = fid
    return bytes(out) + b"\x00"


def lst(etype: int, items: list[bytes]) -> bytes:
    head = bytes([len(items) << 4 | etype]) if len(items) < 15 else bytes([0xF0 | etype])
    return head + (uvarint(len(items)) if len(items) >= 15 else b"") + b"".join(items)


def element(name, ptype=None, rep=None, children=None, extra=()) -> bytes:
    fields = [(1, I32, zz(ptype))] if ptype is not None else []
    fields += [(3, I32, zz(rep))] if rep is not None else []
    fields += [(4, BINARY, text(name))]
    fields += [(5, I32, zz(children))] if children is not None else []
    return struct(*sorted(fields + list(extra)))


def root(n: int) -> bytes:
    return element("schema", children=n)


def column_chunk(values: int, size: int, offset: int = 4, dictionary=None, path=None) -> bytes:
    """A ``ColumnChunk`` with its ``ColumnMetaData`` (type, codec and the counts that matter)."""
    meta = [(1, I32, zz(2)), (4, I32, zz(0)), (5, I64, zz(values)), (6, I64, zz(size))]
    meta += [(7, I64, zz(size)), (9, I64, zz(offset))]
    meta += [(11, I64, zz(dictionary))] if dictionary is not None else []
    fields = [(1, BINARY, text(path))] if path is not None else []
    fields += [(2, I64, zz(offset)), (3, STRUCT, struct(*meta))]
    return struct(*fields)


def row_group(num_rows: int, chunks: list[bytes] | None = None) -> bytes:
    """A ``RowGroup``; by default one chunk just large enough for ``num_rows`` values."""
    if chunks is None:
        chunks = [column_chunk(num_rows, max(1, -(-num_rows // parquet.MAX_PAGE_VALUES)))]
    size = zz(sum(len(chunk) for chunk in chunks))
    return struct((1, LIST, lst(STRUCT, chunks)), (2, I64, size), (3, I64, zz(num_rows)))


def footer(elements: list[bytes], num_rows: int = 5, extra=(), groups=None) -> bytes:
    fields = [(1, I32, zz(2)), (2, LIST, lst(STRUCT, elements)), (3, I64, zz(num_rows))]
    if groups is None:
        groups = [row_group(num_rows)] if num_rows > 0 else []
    fields += [(4, LIST, lst(STRUCT, groups))]
    return struct(*sorted(fields + list(extra)))


INT_COLUMN = element("n", ptype=2, rep=0)


def file_of(metadata: bytes, data: bytes = b"") -> bytes:
    """A whole file: magic, column data, the footer, its length, magic."""
    return MAGIC + data + metadata + len(metadata).to_bytes(4, "little") + MAGIC
