"""Schema hashing, inference and evolution rules per compatibility mode."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.dataversion.errors import SchemaEvolutionError, SchemaMismatch, UnreadableContent
from chalicelib.dataversion.models import CompatibilityMode, DatasetFormat, DatasetSchema
from chalicelib.dataversion.schema import (
    ContentInspector,
    cell_value,
    check_declared,
    decode_pieces,
    evolution_report,
    merge_types,
    parse_json_record,
    parse_json_records,
    validate_schema_evolution,
)

B, F, FULL, NONE = (
    CompatibilityMode.BACKWARD,
    CompatibilityMode.FORWARD,
    CompatibilityMode.FULL,
    CompatibilityMode.NONE,
)


def schema(columns: dict[str, str], nullable: list[str] | None = None, pk: list[str] | None = None):
    return DatasetSchema(columns=columns, nullable=nullable or [], primary_key=pk or [])


BASE = schema({"id": "int", "score": "float", "name": "string"}, pk=["id"])


def allowed(new: DatasetSchema, mode: CompatibilityMode) -> bool:
    try:
        validate_schema_evolution(BASE, new, mode)
    except SchemaEvolutionError:
        return False
    return True


def test_schema_hash_ignores_column_order() -> None:
    a = schema({"id": "int", "score": "float"}, nullable=["score"])
    b = schema({"score": "float", "id": "int"}, nullable=["score"])
    assert a.compute_hash() == b.compute_hash()
    assert a.compute_hash() != schema({"id": "int", "score": "double"}).compute_hash()
    assert a.compute_hash() != schema({"id": "int", "score": "float"}).compute_hash()


def test_adding_a_nullable_column_is_fine_in_every_mode() -> None:
    new = schema({**BASE.columns, "country": "string"}, nullable=["country"], pk=["id"])
    assert all(allowed(new, mode) for mode in (B, F, FULL, NONE))
    assert validate_schema_evolution(BASE, new, FULL) == ["nullable column 'country' was added"]


def test_adding_a_required_column_breaks_backward_only() -> None:
    new = schema({**BASE.columns, "country": "string"}, pk=["id"])
    assert (allowed(new, B), allowed(new, F), allowed(new, FULL), allowed(new, NONE)) == (
        False,
        True,
        False,
        True,
    )


def test_dropping_a_column_breaks_forward_only() -> None:
    new = schema({"id": "int", "score": "float"}, pk=["id"])
    assert (allowed(new, B), allowed(new, F), allowed(new, FULL)) == (True, False, False)


@pytest.mark.parametrize("wider", ["long", "float", "double"])
def test_widening_int_is_backward_compatible_only(wider: str) -> None:
    new = schema({**BASE.columns, "id": wider}, pk=["id"])
    assert (allowed(new, B), allowed(new, F), allowed(new, FULL)) == (True, False, False)


def test_narrowing_is_forward_compatible_only() -> None:
    new = schema({**BASE.columns, "score": "int"}, pk=["id"])
    assert (allowed(new, B), allowed(new, F), allowed(new, FULL)) == (False, True, False)


def test_unrelated_type_change_breaks_both() -> None:
    new = schema({**BASE.columns, "name": "int"}, pk=["id"])
    assert (allowed(new, B), allowed(new, F), allowed(new, NONE)) == (False, False, True)


def test_renaming_is_a_drop_plus_an_add() -> None:
    new = schema({"id": "int", "score": "float", "full_name": "string"}, pk=["id"])
    changes, problems = evolution_report(BASE, new, FULL)
    assert len(changes) == 2
    assert any("'name' was dropped" in p and "forward" in p for p in problems)
    assert any("'full_name' was added" in p and "backward" in p for p in problems)


def test_changing_the_primary_key_is_always_breaking() -> None:
    new = schema(dict(BASE.columns), pk=["name"])
    assert (allowed(new, B), allowed(new, F), allowed(new, FULL)) == (False, False, False)


def test_nullability_changes() -> None:
    looser = schema(dict(BASE.columns), nullable=["score"], pk=["id"])
    assert (allowed(looser, B), allowed(looser, F)) == (True, False)
    validate_schema_evolution(looser, BASE, F)
    with pytest.raises(SchemaEvolutionError):
        validate_schema_evolution(looser, BASE, B)


def test_the_error_lists_every_problem() -> None:
    new = schema({"id": "string", "extra": "int"}, pk=["extra"])
    with pytest.raises(SchemaEvolutionError) as raised:
        validate_schema_evolution(BASE, new, FULL)
    assert raised.value.status == 422
    assert len(raised.value.details) == 5  # 2 drops, 1 required add, 1 retype, the key


def inspect(data: bytes, fmt: DatasetFormat = DatasetFormat.CSV, rows: int = 100, chunk: int = 7):
    inspector = ContentInspector(fmt, rows)
    for start in range(0, len(data), chunk):
        inspector.feed(data[start : start + chunk])
    return inspector.finish()


def test_inference_types_and_nullability() -> None:
    count, inferred, sampled = inspect(b"a,b,c,d,e\n1,2.5,true,x,\n-3,4,FALSE,,\n")
    assert count == 2 and sampled is None
    assert inferred.columns == {"a": "int", "b": "float", "c": "bool", "d": "string", "e": "string"}
    assert inferred.nullable == ["d", "e"]


DIGITS = "0123456789"
# Digits Python's int() and float() read and pyarrow does not: Arabic-Indic, full-width,
# Devanagari, mathematical bold.
UNICODE_DIGITS = "\u0660\u0663\u0669\uff10\uff11\uff19\u0966\u096f\U0001d7ce\U0001d7d7"
PADDING = st.sampled_from(["", "", " ", "  ", "\t", " \t", "\xa0", "\u2003", "\r", "\x0b"])
WORDS = ["nan", "inf", "infinity", "true", "false", "infin", "na"]


def _any_case(word: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(word, flips, strict=False))


_DIGIT_RUN = st.text(st.sampled_from(DIGITS + "_" + UNICODE_DIGITS[:3]), min_size=1, max_size=4)
_NUMBER_BODY = st.one_of(
    _DIGIT_RUN,
    st.builds(lambda a, b: f"{a}.{b}", _DIGIT_RUN, _DIGIT_RUN | st.just("")),
    st.builds(lambda b: f".{b}", _DIGIT_RUN),
    st.builds(lambda a, e, x: f"{a}{e}{x}", _DIGIT_RUN, st.sampled_from("eE"), _DIGIT_RUN),
    st.builds(
        lambda x, h: f"0{x}{h}",
        st.sampled_from("xX"),
        st.text(st.sampled_from("0123456789abcdefABCDEFg"), max_size=18),
    ),
    st.builds(_any_case, st.sampled_from(WORDS), st.lists(st.booleans(), max_size=8)),
    st.sampled_from(
        ["0", "1", "00", "True", "FALSE", "9223372036854775807", "9223372036854775808"]
        + ["18446744073709551616", "0" * 25 + "7", "1e5_0", "1__0", "1_000", "2024-01-01"]
        + ["12:00", "x", ""]
    ),
    st.text(st.sampled_from(UNICODE_DIGITS + "\u066b."), min_size=1, max_size=3),
)
# Cells that look like numbers to someone: signs, underscores, padding, exponents, special
# words in any case, hexadecimal, Unicode digits, int64 limits (strategies built once).
NUMERIC_LOOKING_CELLS = st.builds(
    lambda before, sign, body, after: before + sign + body + after,
    PADDING,
    st.sampled_from(["", "", "-", "+"]),
    _NUMBER_BODY,
    PADDING,
)


def pyarrow_csv(body: bytes) -> Any:
    """The table pyarrow reads, with only an empty cell null (as here)."""
    import pyarrow.csv as pacsv

    return pacsv.read_csv(
        io.BytesIO(body),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(null_values=[""]),
    )


OURS_FOR_ARROW = {"int64": "int", "double": "float", "bool": "bool"}  # any other: string


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    columns=st.lists(
        st.lists(NUMERIC_LOOKING_CELLS, min_size=1, max_size=4), min_size=1, max_size=4
    )
)
def test_inferred_csv_types_are_what_pyarrow_infers(columns: list[list[str]]) -> None:
    """Each column's type is the one pyarrow's CSV reader infers for the same bytes (its
    date and time types are strings here): ``1_000``, ``+5``, padded numbers, any-case
    ``nan``/``inf``, hexadecimal, Unicode digits, ``1``/``0`` beside ``true``, int64 limits.
    An int or float cell's value is pyarrow's too."""
    header = [f"c{i}" for i in range(len(columns))]
    rows = list(itertools.zip_longest(*columns, fillvalue=""))
    out = io.StringIO(newline="")
    csv.writer(out).writerows([header, *rows])
    body = out.getvalue().encode()
    table = pyarrow_csv(body)
    _, inferred, _ = inspect(body, chunk=4096)  # (chunking has its own tests)
    assert inferred is not None
    for name in header:
        arrow = OURS_FOR_ARROW.get(str(table.schema.field(name).type), "string")
        assert inferred.columns[name] == arrow, (name, table.column(name).to_pylist())
        if arrow in ("int", "float"):
            cells = [row[header.index(name)] for row in rows]
            ours = [value_or_overflow(cell, arrow) for cell in cells]
            assert json.dumps(ours) == json.dumps(table.column(name).to_pylist())


def value_or_overflow(cell: str, kind: str) -> Any:
    """Our value of a cell (``None`` if empty); digits beyond a double (pyarrow: an infinity)
    are refused with ``OverflowError``, shown here as the infinity."""
    try:
        return cell_value(cell, kind) if cell else None
    except OverflowError:
        return -math.inf if "-" in cell else math.inf


def test_python_only_number_spellings_are_strings_as_pyarrow_reads_them() -> None:
    """The attacker's cells: ``float()`` and ``int()`` read them, pyarrow does not."""
    for cell in ["1_000", "1__0", "١٢٣", "１２", "12\xa0", "0x1.8p1"]:
        body = f"a\n{cell}\n".encode()
        assert str(pyarrow_csv(body).schema.field("a").type) == "string"
        assert inspect(body)[1].columns == {"a": "string"}, cell
    _, inferred, _ = inspect(b"a,b,c,d\n 12 ,+5,0x10,1\n-3,nan,0XfF,true\n")
    assert inferred.columns == {"a": "int", "b": "float", "c": "int", "d": "bool"}


def test_json_lines_numbers_are_ascii_and_strings_of_digits_stay_strings() -> None:
    """JSON's grammar has ASCII digits only: a number written in Arabic-Indic digits is refused
    (as ``json`` and pyarrow refuse it, nothing written), a string of them is a string, as
    pyarrow.json types it."""
    import pyarrow.json as pajson

    lines = '{"a": "\u0661\u0662\u0663", "b": "12", "c": 12, "d": "1_000", "e": 1.5}\n'
    table = pajson.read_json(io.BytesIO(lines.encode()))
    arrow = {f.name: OURS_FOR_ARROW.get(str(f.type), "string") for f in table.schema}
    assert inspect(lines.encode(), DatasetFormat.JSON)[1].columns == arrow
    assert arrow == {"a": "string", "b": "string", "c": "int", "d": "string", "e": "float"}
    bad = '{"a": \u0661\u0662\u0663}\n'.encode()
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad)
    with pytest.raises(Exception, match="JSON"):  # pyarrow.lib.ArrowInvalid
        pajson.read_json(io.BytesIO(bad))
    with pytest.raises(UnreadableContent, match="JSON record 1 is not valid JSON"):
        inspect(bad, DatasetFormat.JSON)


def test_a_byte_order_mark_after_the_first_bytes_is_read_as_csv_and_json_read_it() -> None:
    """Only the stream's first bytes can be a byte-order mark (the scanner drops it); at the
    start of a later record it is a character: ``csv`` keeps it in the cell (``\ufeff2`` is
    no int) and ``json`` refuses the line, so the version is refused as for any bad record."""
    body = b"a\n1\n\xef\xbb\xbf2\n"
    read = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert read[2] == ["\ufeff2"]
    _, inferred, _ = inspect(body)
    assert inferred is not None and inferred.columns == {"a": "string"}
    lines = b'{"a": 1}\n\xef\xbb\xbf{"a": 2}\n'
    with pytest.raises(json.JSONDecodeError, match="BOM"):
        [json.loads(line) for line in lines.decode("utf-8-sig").splitlines()]
    with pytest.raises(UnreadableContent, match="JSON record 2 is not valid JSON"):
        inspect(lines, DatasetFormat.JSON)


def test_a_field_longer_than_the_csv_modules_default_limit_is_read() -> None:
    """``csv`` refuses a field over 128 KiB unless the process raised its limit (a global that
    some tests raise, so the outcome hung on test order): the service reads fields as long as
    a record it samples, whatever the setting was, in the schema's head and the profile."""
    from chalicelib.dataversion.content import ContentObserver
    from chalicelib.dataversion.profile import decode_profile

    previous = csv.field_size_limit(131_072)
    try:
        body = b"a,b\n1," + b"x" * 200_000 + b"\n2,y\n"
        count, inferred, _ = inspect(body, chunk=65_536)
        assert count == 2 and inferred is not None
        assert inferred.columns == {"a": "int", "b": "string"}
        observer = ContentObserver(DatasetFormat.CSV, 100, 100)
        observer.see(body)
        profile = decode_profile(observer.result().profile or b"")
        assert profile["note"] is None and profile["columns"][1]["distinct"] == 2
    finally:
        csv.field_size_limit(previous)


def test_merging_types_does_not_depend_on_their_order() -> None:
    kinds = [None, "int", "bool", "float", "string"]
    for size in range(1, 5):
        for combination in itertools.product(kinds, repeat=size):
            merged = set()
            for order in itertools.permutations(combination):
                result: str | None = None
                for kind in order:
                    result = merge_types(result, kind)
                merged.add(result)
            assert len(merged) == 1, combination


def test_rows_are_counted_beyond_the_inference_sample() -> None:
    body = b"a\n" + b"".join(f"{i}\n".encode() for i in range(1000)) + b"x\n"
    count, inferred, sampled = inspect(body, rows=10, chunk=64)
    assert count == 1001
    assert inferred.columns == {"a": "int"}
    assert sampled is not None and sampled < 1001


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 1_048_576 + 17, 3 * 1_048_576])
def test_rows_of_large_random_csv_are_counted_as_csv_reads_them(size: int) -> None:
    import csv
    import random

    rng = random.Random(size)
    body = b"h\n" + bytes(rng.choices(b'ab\n\r"', weights=[30, 30, 5, 2, 1], k=size))
    csv.field_size_limit(2**31 - 1)
    rows = [r for r in csv.reader(io.StringIO(body.decode(), newline="")) if r]
    assert inspect(body, rows=10, chunk=1_000_003)[0] == len(rows) - 1


def test_large_chunks_count_rows_exactly() -> None:
    row = b"1,0.5\n"
    body = b"a,b\n" + row * 200_000
    assert inspect(body, rows=10, chunk=1_000_003)[0] == 200_000


def test_crlf_and_missing_final_newline() -> None:
    assert inspect(b"a,b\r\n1,2\r\n3,4")[0] == 2
    assert inspect(b"")[0:2] == (0, None)


def test_json_lines_with_quotes_inside_strings_count_exactly() -> None:
    body = b'{"t": "say \\"hi\\"", "n": 1}\n{"t": "x", "n": null}\n'
    count, inferred, _ = inspect(body, DatasetFormat.JSON)
    assert count == 2
    assert inferred.columns == {"t": "string", "n": "int"} and inferred.nullable == ["n"]


def test_json_lines_end_only_at_newline_not_at_unicode_line_separators() -> None:
    body = '{"t": "a\u2028b\u0085c\u2029", "n": 1}\n{"t": "x", "n": 2}\n'.encode()
    count, inferred, _ = inspect(body, DatasetFormat.JSON)
    assert count == 2 and inferred.columns == {"t": "string", "n": "int"}


@pytest.mark.parametrize("chunk", [1_048_576, 8 * 1_048_576, 16 * 1_048_576])
@pytest.mark.parametrize("fmt", [DatasetFormat.CSV, DatasetFormat.JSON])
def test_a_first_line_over_the_limit_is_unreadable_whatever_the_chunking(
    chunk: int, fmt: DatasetFormat
) -> None:
    from chalicelib.dataversion.schema import MAX_FIRST_LINE_BYTES

    if fmt is DatasetFormat.CSV:  # 64 names of 128 KiB (the csv module's field limit)
        names = [b"c%02d" % i + b"x" * (131_072 - 3) for i in range(64)]
        at_limit = b",".join(names)[:-63] + b"\n" + b",".join([b"1"] * 64) + b"\n"
    else:
        pad = b"x" * (MAX_FIRST_LINE_BYTES - len(b'{"a": 1, "p": ""}'))
        at_limit = b'{"a": 1, "p": "' + pad + b'"}\n{"a": 2, "p": ""}\n'
    assert at_limit.index(b"\n") == MAX_FIRST_LINE_BYTES
    assert inspect(at_limit, fmt, chunk=chunk)[0] == (1 if fmt is DatasetFormat.CSV else 2)
    over = at_limit.replace(b"x", b"xx", 1)
    for body in (over, over.split(b"\n")[0]):  # with or without further lines
        with pytest.raises(UnreadableContent, match="longer than 8388608 bytes"):
            inspect(body, fmt, chunk=chunk)


def test_opaque_formats_are_not_inspected() -> None:
    for fmt in (DatasetFormat.TFRECORD, DatasetFormat.NUMPY, DatasetFormat.PICKLE):
        assert inspect(b"\x00\x01", fmt) == (None, None, None)


def parquet_bytes(rows: int = 50, **write: Any) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("score", pa.float64()),
            pa.field("label", pa.string()),
            pa.field("flag", pa.bool_()),
        ]
    )
    table = pa.table(
        {
            "id": list(range(rows)),
            "score": [i / 7 for i in range(rows)],
            "label": ["a", None] * (rows // 2) + ["b"] * (rows % 2),
            "flag": [i % 3 == 0 for i in range(rows)],
        },
        schema=schema,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, **write)
    return sink.getvalue()


@pytest.mark.parametrize("chunk", [1, 13, 4096, 10**9])
def test_parquet_row_count_and_schema_come_from_the_footer(chunk: int) -> None:
    data = parquet_bytes(1001, row_group_size=100)
    count, inferred, sampled = inspect(data, DatasetFormat.PARQUET, chunk=chunk)
    assert count == 1001 and sampled is None
    assert inferred.columns == {"id": "long", "score": "double", "label": "string", "flag": "bool"}
    assert inferred.nullable == ["score", "label", "flag"]


def test_parquet_footer_beyond_the_kept_tail_leaves_schema_and_count_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chalicelib.dataversion import schema as schema_module

    monkeypatch.setattr(schema_module, "PARQUET_TAIL_BYTES", 64)
    assert inspect(parquet_bytes(), DatasetFormat.PARQUET, chunk=16) == (None, None, None)


def test_content_that_is_not_parquet_is_unreadable() -> None:
    data = parquet_bytes()
    for broken in (b"", b"\x00\x01", b"id,score\n1,2\n", data[:-1], b"XXXX" + data[4:]):
        with pytest.raises(UnreadableContent):
            inspect(broken, DatasetFormat.PARQUET)


def test_malformed_content_is_unreadable() -> None:
    with pytest.raises(UnreadableContent):
        inspect(b"a,b\n1,2,3\n")
    with pytest.raises(UnreadableContent):
        inspect(b'{"a": 1}\nnot json\n', DatasetFormat.JSON)
    with pytest.raises(UnreadableContent):
        inspect(b"a,a\n1,2\n")
    with pytest.raises(UnreadableContent):
        inspect(b"\xff\xfe,a\n")


def test_declared_schema_check_names_columns() -> None:
    inferred = schema({"id": "int", "score": "float", "extra": "string"}, nullable=["score"])
    declared = schema({"id": "long", "score": "float", "gone": "int"})
    with pytest.raises(SchemaMismatch) as raised:
        check_declared(declared, inferred)
    text = raised.value.message
    assert "'gone'" in text and "'extra'" in text and "'score' is not nullable" in text
    check_declared(
        schema({"id": "double", "score": "float", "extra": "string"}, ["score"]), inferred
    )


_RECORD_PIECES = [
    b'{"a": 1}',
    b' {"b": "x\\"y"}\r',
    b'{"a": [1',
    b'2]}, {"c": 3}',
    b"[1]",
    b"\xef\xbb\xbf" + b'{"bom": 1}',
    b'{"bad": "\xff"}',
    b'{"d": ' + b"[" * 70 + b"]" * 70 + b"}",
    b'{"n": NaN}',
]


@pytest.mark.parametrize("decode", ["utf-8", "utf-8-sig"])
def test_json_records_parsed_together_are_parsed_one_by_one(decode: str) -> None:
    """Every ordered pair and triple of pieces: the same records, or the same first error,
    as parse_json_record on each piece in order (the pre-batch behaviour)."""

    def one(piece: bytes) -> str:
        try:
            return piece.decode(decode)
        except UnicodeDecodeError as exc:
            raise UnreadableContent(f"content is not UTF-8 text: {exc}") from None

    for size in (1, 2, 3):
        for pieces in itertools.product(_RECORD_PIECES, repeat=size):
            numbers = [7 * n + 1 for n in range(size)]
            try:
                expected: Any = [
                    parse_json_record(one(p), n, "record", 64)
                    for p, n in zip(pieces, numbers, strict=True)
                ]
            except UnreadableContent as exc:
                expected = exc.message
            try:
                found: Any = parse_json_records(list(pieces), numbers, 64, one)
            except UnreadableContent as exc:
                found = exc.message
            assert repr(found) == repr(expected)


@pytest.mark.parametrize("decode", ["utf-8", "utf-8-sig"])
def test_pieces_decoded_together_read_as_decoded_one_by_one(decode: str) -> None:
    pieces = [b"a,\xc3\xa9", b"\xef\xbb\xbfb", b"c", b"\xc3", b"\xa9"]
    for size in (1, 2, 3):
        for chosen in itertools.product(pieces, repeat=size):
            try:
                expected: Any = "\n".join(p.decode(decode) for p in chosen)
            except UnicodeDecodeError as exc:
                expected = str(exc)
            try:
                found: Any = decode_pieces(list(chosen), lambda p: p.decode(decode))
            except UnicodeDecodeError as exc:
                found = str(exc)
            assert found == expected
