"""The dependency-free Parquet footer reader, against files written by pyarrow and hand-built
Thrift compact-protocol footers (pyarrow is a test-only dependency)."""

from __future__ import annotations

import ast
import datetime
import decimal
import io
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chalicelib.dataversion import parquet
from chalicelib.dataversion.errors import UnreadableContent
from chalicelib.dataversion.models import COLUMN_TYPES
from chalicelib.dataversion.parquet import (
    MAGIC,
    ParquetMetadata,
    footer_size,
    parse_footer,
    read_metadata,
)
from tests.helpers.parquet import (
    BINARY,
    DOUBLE,
    FALSE,
    I8,
    I16,
    I32,
    I64,
    INT_COLUMN,
    LIST,
    MAP,
    SET,
    STRUCT,
    TRUE,
    column_chunk,
    element,
    file_of,
    footer,
    lst,
    root,
    row_group,
    struct,
    text,
    uvarint,
    zz,
)

# ---------------------------------------------------------------- pyarrow files

OUR_TYPE = {
    "BOOLEAN": "bool",
    "INT32": "int",
    "INT64": "long",
    "INT96": "string",
    "FLOAT": "float",
    "DOUBLE": "double",
    "BYTE_ARRAY": "string",
    "FIXED_LEN_BYTE_ARRAY": "string",
}


def write(table: pa.Table, **options) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)
    return buf.getvalue()


def footer_of(data: bytes) -> bytes:
    size = footer_size(data[-8:])
    return data[-8 - size : -8]


def expected(data: bytes) -> ParquetMetadata:
    """What pyarrow itself says, in our terms."""
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    columns, nullable = {}, []
    for i in range(meta.num_columns):
        column = meta.schema.column(i)
        repeated = column.max_repetition_level > 0
        columns[column.path] = "string" if repeated else OUR_TYPE[column.physical_type]
        if column.max_definition_level > 0:
            nullable.append(column.path)
    return ParquetMetadata(meta.num_rows, columns, nullable, meta.created_by)


def check(data: bytes) -> ParquetMetadata:
    got = read_metadata(data)
    assert got == expected(data)
    assert parse_footer(footer_of(data)) == got
    assert set(got.columns.values()) <= set(COLUMN_TYPES)
    return got


EVERY_TYPE = pa.table(
    {
        "flag": pa.array([True, False, None]),
        "i32": pa.array([1, None, 3], pa.int32()),
        "i64": pa.array([1, 2, 3], pa.int64()),
        "f32": pa.array([1.5, 2.5, None], pa.float32()),
        "f64": pa.array([1.5, 2.5, 3.5], pa.float64()),
        "text": pa.array(["a", None, "c"]),
        "blob": pa.array([b"a", b"b", b"c"]),
        "ts": pa.array([datetime.datetime(2026, 1, 1)] * 3, pa.timestamp("us")),
        "day": pa.array([datetime.date(2026, 1, 1)] * 3, pa.date32()),
        "dec": pa.array([decimal.Decimal("1.25")] * 3, pa.decimal128(5, 2)),
        "dec_wide": pa.array([decimal.Decimal("1.25")] * 3, pa.decimal128(30, 2)),
    }
)


def test_every_physical_type_maps_by_physical_type():
    got = check(write(EVERY_TYPE))
    assert got.num_rows == 3
    assert got.columns == {
        "flag": "bool",
        "i32": "int",
        "i64": "long",
        "f32": "float",
        "f64": "double",
        "text": "string",
        "blob": "string",
        "ts": "long",
        "day": "int",
        "dec": "string",
        "dec_wide": "string",
    }
    assert got.nullable == list(got.columns)
    assert got.created_by.startswith("parquet-cpp-arrow")


def test_decimals_stored_as_integers_and_int96_timestamps():
    table = pa.table(
        {
            "d9": pa.array([decimal.Decimal("1.25")], pa.decimal128(9, 2)),
            "d18": pa.array([decimal.Decimal("1.25")], pa.decimal128(18, 2)),
            "legacy_ts": pa.array([datetime.datetime(2026, 1, 1)], pa.timestamp("ns")),
        }
    )
    data = write(table, store_decimal_as_integer=True, use_deprecated_int96_timestamps=True)
    assert check(data).columns == {"d9": "int", "d18": "long", "legacy_ts": "string"}


def test_required_and_nullable_columns():
    schema = pa.schema(
        [pa.field("id", pa.int64(), nullable=False), pa.field("note", pa.string(), nullable=True)]
    )
    got = check(write(pa.table({"id": [1, 2], "note": ["x", None]}, schema=schema)))
    assert got.columns == {"id": "long", "note": "string"}
    assert got.nullable == ["note"]


def test_struct_columns_are_dotted_leaf_paths():
    inner = pa.struct([pa.field("z", pa.string(), nullable=False)])
    point = pa.struct([pa.field("x", pa.float64(), nullable=False), pa.field("y", inner)])
    schema = pa.schema([pa.field("p", point, nullable=False), pa.field("q", point)])
    rows = [{"x": 1.0, "y": {"z": "a"}}]
    got = check(write(pa.table({"p": rows, "q": rows}, schema=schema)))
    assert got.columns == {
        "p.x": "double",
        "p.y.z": "string",
        "q.x": "double",
        "q.y.z": "string",
    }
    assert got.nullable == ["p.y.z", "q.x", "q.y.z"]


def test_list_and_map_columns_are_opaque_nullable_strings():
    schema = pa.schema(
        [
            pa.field("tags", pa.list_(pa.field("item", pa.int64(), nullable=False)), False),
            pa.field("attrs", pa.map_(pa.string(), pa.float64())),
            pa.field("pts", pa.list_(pa.struct([("x", pa.int32()), ("y", pa.int32())]))),
        ]
    )
    table = pa.table(
        {"tags": [[1, 2]], "attrs": [[("a", 1.0)]], "pts": [[{"x": 1, "y": 2}]]}, schema=schema
    )
    got = check(write(table))
    assert got.columns == {
        "tags.list.element": "string",
        "attrs.key_value.key": "string",
        "attrs.key_value.value": "string",
        "pts.list.element.x": "string",
        "pts.list.element.y": "string",
    }
    assert got.nullable == list(got.columns)


def test_multiple_row_groups_count_every_row():
    data = write(pa.table({"n": list(range(10_007))}), row_group_size=1_000)
    assert pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups == 11
    assert check(data).num_rows == 10_007


def test_zero_rows():
    got = check(write(EVERY_TYPE.slice(0, 0)))
    assert got.num_rows == 0
    assert len(got.columns) == EVERY_TYPE.num_columns


def test_zero_columns():
    data = write(pa.table({}))
    assert read_metadata(data) == ParquetMetadata(0, {}, [], expected(data).created_by)


def test_many_columns_and_row_groups_parse_exactly():
    # How fast this parses is measured in bench/bench_parquet.py, not asserted here.
    table = pa.table({f"c{i:04d}": pa.array([i, None], pa.float64()) for i in range(1_500)})
    data = write(table, row_group_size=1)
    assert pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups == 2
    got = parse_footer(footer_of(data))
    assert len(got.columns) == 1_500
    assert got == expected(data)


def test_footer_size_from_a_tail_only():
    data = write(EVERY_TYPE)
    size = footer_size(data[-8:])
    assert int.from_bytes(data[-8:-4], "little") == size
    assert footer_size(data[-(size + 8) :], file_size=len(data)) == size
    assert data[-4:] == MAGIC


def test_module_uses_only_the_standard_library():
    tree = ast.parse(Path(parquet.__file__).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules == {
        "__future__",
        "collections.abc",
        "dataclasses",
        "math",
        "struct",
        "typing",
        "chalicelib.dataversion.errors",
    }


# ---------------------------------------------------------------- malformed files


SMALL = write(pa.table({"id": pa.array([1, 2], pa.int32()), "name": ["a", None]}))


def test_every_truncation_of_a_footer_is_unreadable():
    metadata = footer_of(SMALL)
    for cut in range(len(metadata)):
        with pytest.raises(UnreadableContent):
            parse_footer(metadata[:cut])


def test_every_truncation_of_a_file_is_unreadable():
    for cut in range(len(SMALL)):
        with pytest.raises(UnreadableContent):
            read_metadata(SMALL[:cut])


@pytest.mark.parametrize("seed", range(300))
def test_random_bytes_are_unreadable(seed):
    rng = random.Random(seed)
    noise = rng.randbytes(rng.randrange(0, 400))
    with pytest.raises(UnreadableContent):
        parse_footer(noise)
    framed = MAGIC + noise + len(noise).to_bytes(4, "little") + MAGIC
    with pytest.raises(UnreadableContent):
        read_metadata(framed)


def test_corrupted_footers_parse_or_are_unreadable():
    metadata = bytearray(footer_of(SMALL))
    rng = random.Random(7)
    outcomes = {"parsed": 0, "unreadable": 0}
    for _ in range(2_000):
        corrupt = bytearray(metadata)
        for _ in range(rng.randrange(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        try:
            got = parse_footer(bytes(corrupt))
        except UnreadableContent as exc:
            assert exc.message.startswith("Parquet")
            outcomes["unreadable"] += 1
        else:
            assert set(got.columns.values()) <= set(COLUMN_TYPES)
            outcomes["parsed"] += 1
    assert outcomes["parsed"] and outcomes["unreadable"]


def test_wrong_magic():
    with pytest.raises(UnreadableContent, match="not PAR1"):
        footer_size(SMALL[:-4] + b"PARE")
    with pytest.raises(UnreadableContent, match="start with PAR1"):
        read_metadata(b"PAR0" + SMALL[4:])


def test_tail_too_short():
    with pytest.raises(UnreadableContent, match="needs 8"):
        footer_size(SMALL[-7:])


def test_footer_longer_than_the_file():
    too_long = SMALL[:-8] + (len(SMALL) - 11).to_bytes(4, "little") + MAGIC
    with pytest.raises(UnreadableContent, match="does not fit"):
        read_metadata(too_long)
    assert footer_size(too_long) == len(SMALL) - 11
    assert footer_size(SMALL, file_size=len(SMALL)) == len(footer_of(SMALL))


def test_negative_footer_length():
    with pytest.raises(UnreadableContent, match="negative"):
        footer_size(b"\xff\xff\xff\xffPAR1")


# ---------------------------------------------------------------- hand-built footers


def unreadable(metadata: bytes, match: str) -> None:
    with pytest.raises(UnreadableContent, match=match):
        parse_footer(metadata)


def test_hand_built_footer():
    got = parse_footer(
        footer([root(1), INT_COLUMN], num_rows=2**40, extra=[(6, BINARY, text("me"))])
    )
    assert got == ParquetMetadata(2**40, {"n": "long"}, [], "me")


def test_unknown_fields_of_every_type_are_skipped():
    deep = struct((1, STRUCT, struct((1, LIST, lst(I32, [zz(1)])))))
    extra = [
        (7, TRUE, b""),
        (8, FALSE, b""),
        (9, I8, b"\x7f"),
        (10, I16, zz(-300)),
        (11, I32, zz(70_000)),
        (12, I64, zz(-(2**62))),
        (13, DOUBLE, b"\x00" * 8),
        (14, BINARY, text(b"\xff\x00")),
        (15, LIST, lst(BINARY, [text("k")] * 20)),
        (16, SET, lst(TRUE, [b"\x01", b"\x02"])),
        (
            17,
            MAP,
            uvarint(2) + bytes([BINARY << 4 | FALSE]) + text("a") + b"\x01" + text("b") + b"\x00",
        ),
        (18, MAP, uvarint(0)),
        (19, STRUCT, deep),
        (300, I32, zz(1)),
        (-4, STRUCT, struct()),
    ]
    element_extra = [
        (10, STRUCT, struct((1, STRUCT, struct()))),
        (2, I32, zz(16)),
        (42, BINARY, text("x")),
    ]
    column = element("n", ptype=7, rep=0, extra=element_extra)
    got = parse_footer(footer([root(1), column], extra=sorted(extra)))
    assert got == ParquetMetadata(5, {"n": "string"}, [], None)


def _chunk_with_encoding_stats(encoding_stats: bytes) -> bytes:
    """A column chunk whose metadata carries an unknown-to-us list (field 13, as pyarrow's
    encoding statistics), which the parse skips."""
    meta = [(1, I32, zz(2)), (5, I64, zz(1)), (7, I64, zz(1)), (9, I64, zz(4))]
    return struct((3, STRUCT, struct(*meta, (13, LIST, encoding_stats))))


GOOD_STATS = lst(STRUCT, [struct((1, I32, zz(0)), (2, I32, zz(1)))] * 2)


def _repeated_chunks(last: bytes = GOOD_STATS) -> bytes:
    chunks = [_chunk_with_encoding_stats(GOOD_STATS)] * 2 + [_chunk_with_encoding_stats(last)]
    groups = [row_group(1, [chunk]) for chunk in chunks]
    return footer([root(1), INT_COLUMN], num_rows=3, groups=groups)


def test_a_value_skipped_again_byte_for_byte_reads_as_the_first_time():
    """The parse skips a value equal to one skipped before by its length; one that differs,
    even after an identical start, is decoded and checked in full."""
    got = parse_footer(_repeated_chunks())
    assert got == ParquetMetadata(3, {"n": "long"}, [], None)
    bad = lst(STRUCT, [struct((1, I32, zz(0)), (2, I32, zz(1))), b"\x1d"])
    unreadable(_repeated_chunks(last=bad), "unknown Thrift compact type id 13")
    short = lst(STRUCT, [struct((1, I32, zz(0)), (2, I32, zz(1)))] * 3)
    assert parse_footer(_repeated_chunks(last=short)) == got
    metadata = _repeated_chunks()
    for cut in range(len(metadata)):
        with pytest.raises(UnreadableContent):
            parse_footer(metadata[:cut])


def test_trailing_bytes_after_the_struct_are_ignored():
    assert parse_footer(footer([root(1), INT_COLUMN]) + b"signature").columns == {"n": "long"}


def test_bytes_not_utf8_in_created_by_are_replaced():
    got = parse_footer(footer([root(0)], extra=[(6, BINARY, text(b"w\xff"))]))
    assert got.created_by == "w\ufffd"


def test_missing_repetition_counts_as_nullable_and_repeated_leaves_are_strings():
    elements = [root(3), element("a", ptype=1), element("b", ptype=0, rep=2), INT_COLUMN]
    got = parse_footer(footer(elements))
    assert got.columns == {"a": "int", "b": "string", "n": "long"}
    assert got.nullable == ["a", "b"]


def test_empty_groups_have_no_leaves():
    elements = [root(3), element("g", rep=1, children=0), element("h", rep=0), INT_COLUMN]
    assert parse_footer(footer(elements)).columns == {"n": "long"}


def test_typed_element_with_children_is_a_group():
    elements = [root(1), element("g", ptype=1, rep=0, children=1), INT_COLUMN]
    assert parse_footer(footer(elements)).columns == {"g.n": "long"}


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        (struct((3, I64, zz(1))), "no schema"),
        (footer([]), "no schema"),
        (struct((2, LIST, lst(STRUCT, [root(0)]))), "no num_rows"),
        (footer([root(0)], num_rows=-1), "negative num_rows"),
        (struct((3, BINARY, text("x"))), "field 3 is a binary, expected i64"),
        (struct((2, LIST, lst(I32, [zz(1)]))), "list of i32, not structs"),
        (footer([root(1), element("n", ptype=8, rep=0)]), "unknown type 8"),
        (footer([root(1), element("n", ptype=-1, rep=0)]), "unknown type -1"),
        (footer([root(1), element("n", ptype=1, rep=3)]), "unknown repetition 3"),
        (footer([root(1), struct((1, I32, zz(1)))]), "no name"),
        (footer([root(-1)]), "negative num_children"),
        (footer([root(2**31)]), "i32 out of range"),
        (footer([root(1), element(b"\xff", ptype=1, rep=0)]), "not UTF-8"),
        (footer([element("schema", ptype=1)]), "root is a column"),
        (footer([root(2), INT_COLUMN]), "num_children overrun"),
        (footer([root(1), INT_COLUMN, INT_COLUMN]), "3 elements, num_children account for 2"),
        (footer([root(2), INT_COLUMN, INT_COLUMN]), "column 'n' twice"),
        (b"\x1d", "unknown Thrift compact type id 13"),
        (struct((1, LIST, b"\x1e")), "unknown Thrift compact type id 14"),
        (struct((1, MAP, b"\x01\xf1")), "unknown Thrift compact type id 15"),
        (struct((1, LIST, b"\x10")), "unknown Thrift compact type id 0"),
        (struct((1, LIST, b"\xf5\x80\x80\x04")), "container of 65536 elements"),
        (struct((1, BINARY, uvarint(100) + b"abc")), "100 bytes needed, 4 left"),
        (b"\x16" + b"\xff" * 10 + b"\x01", "longer than 64 bits"),
        (b"\x16" + b"\xff" * 9 + b"\x7f", "longer than 64 bits"),
        (b"", "truncated"),
        # unknown lists skipped in a tight loop check each element as any other skip does
        (struct((9, LIST, lst(BINARY, [text("ok"), uvarint(50) + b"ab"]))), "50 bytes needed"),
        (struct((9, LIST, lst(I64, [zz(1), b"\xff" * 10 + b"\x01"]))), "longer than 64 bits"),
        (struct((9, SET, lst(STRUCT, [struct(), b"\x1d"]))), "compact type id 13"),
        (struct((9, LIST, b"\xfc\x05" + struct())), "container of 5 elements in 2 bytes"),
    ],
)
def test_malformed_footers(metadata, match):
    unreadable(metadata, match)


def test_deeply_nested_unknown_values_are_bounded():
    nested = struct()
    for _ in range(200):
        nested = struct((1, STRUCT, nested))
    unreadable(struct((9, STRUCT, nested)), "deeper than 64")
    nested_lists = lst(I32, [])
    for _ in range(200):
        nested_lists = lst(LIST, [nested_lists])
    unreadable(struct((9, LIST, nested_lists)), "deeper than 64")
    nested_structs = lst(STRUCT, [struct()])
    for _ in range(200):
        nested_structs = lst(STRUCT, [struct((1, LIST, nested_structs))])
    unreadable(struct((9, LIST, nested_structs)), "deeper than 64")


def test_deeply_nested_schema_is_bounded():
    depth = 100
    groups = [element(f"g{i}", rep=0, children=1) for i in range(depth)]
    unreadable(footer([root(1), *groups, INT_COLUMN]), "deeper than 64")
    ok = [element(f"g{i}", rep=0, children=1) for i in range(parquet.MAX_DEPTH - 1)]
    got = parse_footer(footer([root(1), *ok, INT_COLUMN]))
    assert list(got.columns) == [".".join([f"g{i}" for i in range(len(ok))] + ["n"])]


def test_column_limit():
    leaves = [element(f"c{i}", ptype=1, rep=0) for i in range(parquet.MAX_COLUMNS)]
    assert len(parse_footer(footer([root(len(leaves)), *leaves])).columns) == 10_000
    leaves.append(element("one_more", ptype=1, rep=0))
    unreadable(footer([root(len(leaves)), *leaves]), "more than 10000 columns")


def test_schema_element_limit(monkeypatch):
    monkeypatch.setattr(parquet, "MAX_SCHEMA_ELEMENTS", 2)
    unreadable(
        footer([root(2), INT_COLUMN, element("m", ptype=1, rep=0)]),
        "has 3 elements \\(at most 2\\)",
    )


# ---------------------------------------------------------------- row counts the file can hold


def test_a_file_of_a_few_bytes_claiming_2_63_rows_is_refused():
    metadata = footer([root(1), INT_COLUMN], num_rows=2**63 - 1, groups=[])
    data = file_of(metadata)
    assert len(data) <= 64
    with pytest.raises(UnreadableContent, match=f"claims {2**63 - 1} rows but its 0 row groups"):
        read_metadata(data)


@pytest.mark.parametrize(
    ("num_rows", "groups", "match"),
    [
        (5, [row_group(3), row_group(3)], "claims 5 rows but its 2 row groups hold 6"),
        (5, [row_group(-1, [column_chunk(0, 1)]), row_group(6)], "row group 0 has a negative"),
        (2**62, [row_group(2**62, [column_chunk(2**62, 10)])], "values in 10 bytes"),
        (10, [row_group(10, [column_chunk(10, 5), column_chunk(4, 5)])], "a column holds 4 values"),
        (3, [row_group(3, [])], "claims 3 rows but has no column data"),
        (3, [row_group(3, [struct((2, I64, zz(4)))])], "only encrypted columns"),
        (3, [row_group(3, [column_chunk(3, 9, path="other.parquet")])], "other files"),
        (3, [row_group(3, [struct((3, STRUCT, struct((5, I64, zz(3)))))])], "lacks total_comp"),
        (3, [row_group(3, [column_chunk(3, -9)])], "negative count, size or offset"),
        (3, [struct((3, I64, zz(3)))], "row group 0 lacks its columns"),
    ],
)
def test_row_counts_the_row_groups_do_not_hold_are_refused(num_rows, groups, match):
    unreadable(footer([root(1), INT_COLUMN], num_rows=num_rows, groups=groups), match)


def test_column_data_must_lie_inside_the_file():
    data = b"\x00" * 40  # where the column chunk's bytes sit: offsets 4 to 44
    inside = footer([root(1), INT_COLUMN], num_rows=3, groups=[row_group(3, [column_chunk(3, 40)])])
    assert read_metadata(file_of(inside, data)).num_rows == 3
    for chunk, match in [
        (column_chunk(3, 41), "claim 41 bytes; the file holds 40"),
        (column_chunk(3, 30, offset=20), "bytes 20-50, outside the file's data \\(4-44\\)"),
        (column_chunk(3, 10, offset=0), "bytes 0-10, outside"),
        (column_chunk(3, 10, offset=30, dictionary=2), "bytes 2-12, outside"),
    ]:
        metadata = footer([root(1), INT_COLUMN], num_rows=3, groups=[row_group(3, [chunk])])
        with pytest.raises(UnreadableContent, match=match):
            read_metadata(file_of(metadata, data))
        parse_footer(metadata)  # without the file's size only the counts are checked


def _variety() -> dict[str, tuple[pa.Table, dict]]:
    lists = pa.table({"l": [[], None, [1, 2, 3], []] * 250})
    nulls = pa.table({"a": pa.array([None] * 1000, pa.int64()), "b": list(range(1000))})
    mapped = pa.array([[("a", 1.0)], None, []] * 10, pa.map_(pa.string(), pa.float64()))
    return {
        "every type": (EVERY_TYPE, {}),
        "empty": (EVERY_TYPE.slice(0, 0), {}),
        "no columns": (pa.table({}), {}),
        "all null": (nulls, {"row_group_size": 7}),
        "lists": (lists, {"data_page_version": "2.0"}),
        "map": (pa.table({"m": mapped}), {"row_group_size": 7, "compression": "zstd"}),
        "one dictionary value": (pa.table({"c": ["same"] * 100_000}), {}),
        "no dictionary": (pa.table({"c": ["x"] * 1000}), {"use_dictionary": False}),
        "many row groups": (pa.table({"n": list(range(5_000))}), {"row_group_size": 3}),
    }


@pytest.mark.parametrize("name", list(_variety()))
def test_files_written_by_pyarrow_pass_the_row_count_checks(name):
    table, options = _variety()[name]
    data = write(table, **options)
    got = read_metadata(data)
    assert got.num_rows == pq.ParquetFile(io.BytesIO(data)).metadata.num_rows == table.num_rows
    assert got == expected(data)


def _arrow_leaf_paths(fields: list[pa.Field], prefix: str = "") -> list[str]:
    """Leaf paths from pyarrow's own reading of the schema, segments with a dot quoted."""
    paths = []
    for field in fields:
        name = f"`{field.name}`" if "." in field.name else field.name
        if pa.types.is_struct(field.type):
            paths += _arrow_leaf_paths(list(field.type), f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def test_a_top_level_dotted_column_beside_a_struct_field_of_the_same_path_is_read():
    """pyarrow writes and reads a top-level ``a.b`` beside a struct ``a{b}``; they are two
    columns: ```a.b``` (quoted, as Spark writes such names) and ``a.b``."""
    table = pa.table({"a.b": [1, 2], "a": pa.array([{"b": "x"}, {"b": "y"}])})
    data = write(table)
    read_back = pq.read_table(io.BytesIO(data))
    assert read_back.num_rows == 2 and read_back.column_names == ["a.b", "a"]
    got = read_metadata(data)
    assert list(got.columns) == _arrow_leaf_paths(list(read_back.schema)) == ["`a.b`", "a.b"]
    assert got.columns == {"`a.b`": "long", "a.b": "string"} and got.num_rows == 2
    assert parquet._segment("x`y") == "`x``y`"


def test_unsigned_columns_statistics_are_their_unsigned_minimum_and_maximum():
    """Unsigned integers are stored in INT32/INT64 and ordered unsigned: their statistics read
    as signed gave a uint32 column holding 5 and 4,000,000,000 the range 5 to -294,967,296.
    Oracle: the data's own min and max (pyarrow.compute) over two row groups whose signed
    order disagrees with the unsigned one."""
    import pyarrow.compute as pc

    table = pa.table(
        {
            "u8": pa.array([3, 250, 7, 200], pa.uint8()),
            "u32": pa.array([5, 4_000_000_000, 2**31, 9], pa.uint32()),
            "u64": pa.array([2**64 - 1, 12, 2**63, 40], pa.uint64()),
            "i64": pa.array([-(2**63), 12, 2**63 - 1, -1], pa.int64()),
        }
    )
    statistics = read_metadata(write(table, row_group_size=2)).statistics
    for name in table.column_names:
        bounds = pc.min_max(table[name]).as_py()
        assert (statistics[name].low, statistics[name].high) == (
            float(bounds["min"]),
            float(bounds["max"]),
        ), name
