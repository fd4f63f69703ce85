"""Column profiles checked against independent readers and summaries: hypothesis-generated CSV
and JSON-lines tables (quoted line ends, blanks, NaN, huge numbers, unicode) are read back with
``csv`` / ``json`` and summarised with ``statistics``, numpy and ``collections.Counter``; the
profile computed in the scanning pass, however the stream is cut, must agree."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import statistics
from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chalicelib.dataversion.models import DatasetFormat
from chalicelib.dataversion.profile import (
    HISTOGRAM_BINS,
    MAX_PROFILE_BYTES,
    MAX_PROFILED_COLUMNS,
    MAX_VALUE_CHARS,
    QUANTILES,
    TOP_VALUES,
    Moments,
    column_profile,
    decode_profile,
    encode_profile,
    profile_of_scan,
)
from chalicelib.dataversion.records import RecordSampler, RecordScanner, TeeSampler
from chalicelib.dataversion.schema import ContentInspector

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
NUMBER = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(-1e150, 1e150, allow_nan=False).map(repr),
    st.sampled_from(["NaN", "inf", "-inf", "1e400", "0.1", "-0"]),
)
TEXT = st.one_of(
    st.sampled_from(["a", "b", 'say "hi"', "comma, inside", "two\nlines", "blank\n\nline", "é"]),
    st.text(alphabet="xyz \u00e9\u4e2d\r\n,\"'", min_size=1, max_size=8),
)
CELL = st.one_of(NUMBER, TEXT, st.just(""))


def profile_of(data: bytes, fmt: DatasetFormat, chunk: int, head: int = 10_000) -> dict[str, Any]:
    inspector = ContentInspector(fmt, head, uniform_rows=10_000)
    for start in range(0, len(data), chunk):
        inspector.feed(data[start : start + chunk])
    inspector.finish()
    assert inspector.uniform is not None
    return profile_of_scan(inspector.uniform, inspector.records, fmt)[0]


def as_number(value: Any) -> float | None:
    numbers = column_numbers([value]) if value not in (None, "") else None
    return numbers[0] if numbers else None


def arrow_numbers(texts: list[str]) -> list[float] | None:
    """The cells as numbers if pyarrow's CSV reader types their column int64 or float64 (only
    an empty cell null), else ``None``."""
    import pyarrow.csv as pacsv

    if not texts:
        return []
    body = "a\n" + "".join('"' + text.replace('"', '""') + '"\n' for text in texts)
    table = pacsv.read_csv(
        io.BytesIO(body.encode()),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(null_values=[""]),
    )
    if str(table.schema.field("a").type) not in ("int64", "double"):
        return None
    return [float(number) for number in table.column("a").to_pylist()]


def column_numbers(present: list[Any]) -> list[float] | None:
    """A column's present values as numbers, strings read as pyarrow reads their column."""
    if any(isinstance(v, bool) or not isinstance(v, int | float | str) for v in present):
        return None
    texts = [v for v in present if isinstance(v, str)]
    found = arrow_numbers(texts)
    if found is None:
        return None
    read = iter(found)
    return [next(read) if isinstance(v, str) else float(v) for v in present]


def histogram(finite: list[float]) -> dict[str, list] | None:
    try:
        counts, edges = np.histogram(np.array(finite), bins=HISTOGRAM_BINS)
    except ValueError:  # numpy cannot cut the range into distinct edges
        return None
    if not math.isfinite(max(finite) - min(finite)):
        return None
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def expected_column(values: list[Any]) -> dict[str, Any]:
    """The profile of a column, computed the plain way."""
    present = [v for v in values if v not in (None, "")]
    found: dict[str, Any] = {"count": len(present), "nulls": len(values) - len(present)}
    numbers = column_numbers(present)
    if present and numbers is not None:
        finite = [n for n in numbers if n is not None and math.isfinite(n)]
        found.update(kind="numeric", non_finite=len(present) - len(finite))
        found["distinct"] = len({("nan" if n != n else n) for n in numbers})
        if finite:
            found.update(min=min(finite), max=max(finite), mean=statistics.fmean(finite))
            found["std"] = statistics.stdev(finite) if len(finite) > 1 else None
            found["quantiles"] = np.quantile(np.array(finite), QUANTILES).tolist()
            found["histogram"] = histogram(finite)
        return found
    if not present:
        return {**found, "kind": "empty", "distinct": 0}
    texts = [v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in present]
    counts = Counter(texts)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_VALUES]
    shown = [v if len(v) <= MAX_VALUE_CHARS else v[: MAX_VALUE_CHARS - 1] + "…" for v, _ in top]
    found.update(kind="categorical", distinct=len(counts))
    found["top"] = [{"value": s, "count": c} for s, (_, c) in zip(shown, top, strict=True)]
    return found


def check(profile: dict[str, Any], names: list[str], rows: list[dict[str, Any]]) -> None:
    assert profile["rows"] == len(rows) and profile["profiled_rows"] == len(rows)
    assert not profile["sampled"] and profile["note"] is None
    assert [c["name"] for c in profile["columns"]] == names
    for column in profile["columns"]:
        expected = expected_column([row.get(column["name"]) for row in rows])
        for key, value in expected.items():
            if key in ("mean", "std") and value is not None:
                assert math.isclose(column[key], value, rel_tol=1e-9, abs_tol=1e-300), key
            elif key == "quantiles":
                assert np.allclose(column[key], value, rtol=1e-12, atol=0), key
            else:
                assert column[key] == value, (key, column, expected)


@SETTINGS
@given(
    width=st.integers(1, 4),
    cells=st.lists(st.lists(CELL, min_size=4, max_size=4), max_size=40),
    kinds=st.lists(st.booleans(), min_size=4, max_size=4),
    blanks=st.booleans(),
    chunk=st.integers(1, 200),
)
def test_csv_profiles_agree_with_csv_statistics_numpy_and_counter(
    width: int, cells: list[list[str]], kinds: list[bool], blanks: bool, chunk: int
) -> None:
    names = [f"c{i}" for i in range(width)]
    out = io.StringIO()
    # "\r\n" ends each row, so csv.writer quotes any field holding "\r" or "\n".
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    for row in cells:  # some columns numbers only, so that both kinds are exercised
        cooked = [c if not kinds[i] or as_number(c) is not None else "" for i, c in enumerate(row)]
        writer.writerow(cooked[:width])
        if blanks:
            out.write("\n")  # a blank line is no record
    data = out.getvalue().encode("utf-8")
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    rows = [row for row in rows if any(v is not None for v in row.values())]
    check(profile_of(data, DatasetFormat.CSV, chunk), names, rows)


JSON_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**18), 10**18),
    st.floats(-1e150, 1e150, allow_nan=False),
    st.text(max_size=6),
    st.just({"k": [1, "é"]}),
)


@SETTINGS
@given(
    records=st.lists(
        st.dictionaries(st.sampled_from(["a", "b", "ü"]), JSON_VALUE, max_size=3), max_size=40
    ),
    chunk=st.integers(1, 200),
)
def test_json_lines_profiles_agree_with_json_statistics_numpy_and_counter(
    records: list[dict[str, Any]], chunk: int
) -> None:
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    data = ("\n \n".join(lines) + "\n").encode("utf-8") if lines else b""
    parsed = [json.loads(line) for line in data.decode().split("\n") if line.strip()]
    names = list(dict.fromkeys(key for record in parsed for key in record))
    check(profile_of(data, DatasetFormat.JSON, chunk), names, parsed)


@SETTINGS
@given(
    lines=st.lists(st.sampled_from([b"1,x", b'"a\nb",2', b"", b"3,\xc3\xa9"]), max_size=300),
    size=st.integers(1, 40),
    chunk=st.integers(1, 100),
)
def test_the_tee_gives_each_sampler_what_it_would_draw_alone(
    lines: list[bytes], size: int, chunk: int
) -> None:
    data = b"h,g\n" + b"\n".join(lines)

    def draw(*samplers: RecordSampler) -> None:
        scanner = RecordScanner("csv", samplers[0] if len(samplers) == 1 else TeeSampler(*samplers))
        for start in range(0, len(data), chunk):
            scanner.feed(data[start : start + chunk])
        scanner.finish()

    def head() -> RecordSampler:
        return RecordSampler(size=size, skip=1, reservoir=False, max_record_bytes=5)

    alone_head, alone_uniform = head(), RecordSampler(size=size, skip=1, seed=4)
    draw(alone_head)
    draw(alone_uniform)
    both_head, both_uniform = head(), RecordSampler(size=size, skip=1, seed=4)
    draw(both_head, both_uniform)
    assert both_head.sample() == alone_head.sample() and both_head.too_long == alone_head.too_long
    assert both_uniform.sample() == alone_uniform.sample()
    assert both_uniform.skipped == alone_uniform.skipped == [b"h,g"]


def test_moments_merged_by_block_keep_a_large_offset_exact() -> None:
    rng = np.random.default_rng(1)
    values = 1e9 + rng.normal(0.0, 1e-3, 20_000)  # a naive sum of squares loses every digit
    moments = Moments.of(values)
    assert moments.count == 20_000
    assert math.isclose(moments.mean, statistics.fmean(values.tolist()), rel_tol=1e-15)
    assert moments.std is not None
    assert math.isclose(moments.std, statistics.stdev(values.tolist()), rel_tol=1e-9)
    halves = Moments.of(values[:7_001]).merge(Moments.of(values[7_001:]))
    assert halves.count == 20_000 and math.isclose(halves.mean, moments.mean, rel_tol=1e-15)
    # Two means near 1e9 differ by about 1e-5 and each carries up to 6e-8 of rounding: merging
    # separately computed parts keeps about six digits of the spread (one pass keeps all).
    assert math.isclose(halves.std or 0.0, moments.std, rel_tol=1e-6)
    centred = values - 1e9
    merged = Moments.of(centred[:7_001]).merge(Moments.of(centred[7_001:]))
    assert math.isclose(merged.std or 0.0, statistics.stdev(centred.tolist()), rel_tol=1e-12)
    assert Moments().merge(moments) == moments and moments.merge(Moments()) == moments
    assert Moments.of(np.array([3.0])).std is None


def test_only_the_first_columns_are_profiled() -> None:
    width = MAX_PROFILED_COLUMNS + 6
    data = (",".join(f"c{i}" for i in range(width)) + "\n" + ",".join("1" * width) + "\n").encode()
    profile = profile_of(data, DatasetFormat.CSV, 1 << 20)
    assert len(profile["columns"]) == MAX_PROFILED_COLUMNS and profile["unprofiled_columns"] == 6


def test_the_largest_profile_fits_a_dynamodb_item_and_a_larger_one_drops_columns() -> None:
    rng = random.Random(2)
    wide = "中" * MAX_VALUE_CHARS  # 3 bytes per character
    column = {
        "name": "n" * 100,
        "kind": "numeric",
        "count": 10_000,
        "nulls": 0,
        "distinct": 10_000,
        "non_finite": 0,
        "min": -1.2345678901234567e-300,
        "max": 1.2345678901234567e300,
        "mean": 1.2345678901234567e296,
        "std": 1.2345678901234567e298,
        "quantiles": [rng.random() * 1e300 for _ in QUANTILES],
        "histogram": {
            "edges": [rng.random() for _ in range(HISTOGRAM_BINS + 1)],
            "counts": [9999] * HISTOGRAM_BINS,
        },
        "top": [
            {"value": wide[:-1] + chr(0x4E00 + i) + str(rng.random()), "count": 9999}
            for i in range(TOP_VALUES)
        ],
    }
    columns = [
        {**column, "name": f"{i}" + os.urandom(40).hex()} for i in range(MAX_PROFILED_COLUMNS)
    ]
    profile = {
        "rows": 10**12,
        "profiled_rows": 10_000,
        "sampled": True,
        "unprofiled_columns": 0,
        "columns": columns,
        "note": None,
    }
    blob = encode_profile(profile)
    assert len(blob) <= MAX_PROFILE_BYTES and decode_profile(blob) == profile
    huge = {**profile, "columns": [{**c, "name": os.urandom(4_000).hex()} for c in columns]}
    cut = decode_profile(encode_profile(huge))
    assert len(encode_profile(huge)) <= MAX_PROFILE_BYTES
    kept = len(cut["columns"])
    assert 0 < kept < MAX_PROFILED_COLUMNS and cut["unprofiled_columns"] == len(columns) - kept
    assert cut["columns"] == huge["columns"][:kept]


def test_records_that_are_not_utf8_leave_a_profile_that_says_why() -> None:
    # The schema comes from the first record; the sample reaches the second.
    profile = profile_of(b"a,b\n1,2\n1,\xff\n", DatasetFormat.CSV, 3, head=1)
    assert profile["columns"] == [] and profile["rows"] == 2
    assert profile["note"].startswith("not profiled: content is not UTF-8")


@pytest.mark.parametrize(
    "values",
    [
        [1.97e-190, 0.0],  # the square of the spread underflows float64
        [1e-300, 0.0, 3e-300],
        [5e-324, 0.0],
        [1e200, 3e200],  # the square of the spread overflows float64
        [1e308, -1e308, 1.5],
    ],
)
def test_a_spread_whose_square_is_outside_float64_still_has_its_standard_deviation(
    values: list[float],
) -> None:
    moments = Moments.of(np.array(values))
    assert moments.std is not None
    assert math.isclose(moments.std, statistics.stdev(values), rel_tol=1e-12)
    halves = Moments.of(np.array(values[:1])).merge(Moments.of(np.array(values[1:])))
    assert halves.std is not None
    assert math.isclose(halves.std, statistics.stdev(values), rel_tol=1e-12)


@pytest.mark.parametrize("huge", [1e308, 1e300, 1e20, 2.0**60])
def test_a_mean_whose_large_values_cancel_keeps_the_small_ones(huge: float) -> None:
    """Huge values of both signs that cancel (``1e300,-1e300`` beside ordinary numbers): a
    float sum, numpy's pairwise one included, loses the small values and answered means as
    wrong as 2.7e283 for 0.69, and at 1e308 no mean or std at all. The mean is the exact one
    (``fractions``) over every value, however many blocks they were merged from, the standard
    deviation the exact one (``statistics``) to 1e-9, and the profile shows both."""
    rng = np.random.default_rng(5)
    values = rng.permutation(np.concatenate(([huge, -huge] * 40, rng.normal(3.0, 1.0, 53))))
    exact = float(sum(map(Fraction, values.tolist())) / len(values))
    assert Moments.of(values).mean == pytest.approx(exact, rel=1e-12)
    found = column_profile("x", [repr(value) for value in values.tolist()])
    assert found["mean"] == pytest.approx(exact, rel=1e-12)
    assert found["std"] == pytest.approx(statistics.stdev(values.tolist()), rel=1e-9)


def test_a_csv_sample_reads_columns_from_its_rows_as_its_records_would() -> None:
    """Rows as wide as the header, short rows, a repeated name (its last cell, as a dict
    keeps it) and a name the header lacks: the same values as record.get over the dicts."""
    from chalicelib.dataversion.reader import RecordSample

    names = ["a", "b", "a", "c"]
    for rows in ([["1", "2", "3", "4"], ["5", "6", "7", "8"]], [["1", "2", "3", "4"], ["5"], []]):
        sample = RecordSample.of_rows(names, rows, list(range(len(rows))), 10)
        fresh = RecordSample.of_rows(names, rows, list(range(len(rows))), 10)
        expected = [dict(zip(names, row, strict=False)) for row in rows]
        for name in (*names, "missing"):
            assert sample.values(name) == [record.get(name) for record in expected]
        assert sample.size == len(rows) and fresh.records == expected
        assert fresh.values("a") == sample.values("a")  # from the dicts once they exist


def test_a_column_of_digits_pyarrow_reads_as_text_is_profiled_as_text() -> None:
    """Unicode digits (``float()`` and numpy read ``١٢٣`` as 123) and ``1_000`` are text, as
    pyarrow reads them; padded and hexadecimal ints are numbers, with pyarrow's values."""
    body = "a,b,c\n\u0661\u0662\u0663, 12 ,0x10\n1_000,-3,0xFFFFFFFFFFFFFFFF\n".encode()
    columns = {c["name"]: c for c in profile_of(body, DatasetFormat.CSV, 5)["columns"]}
    assert arrow_numbers(["\u0661\u0662\u0663", "1_000"]) is None
    assert columns["a"]["kind"] == "categorical"
    assert columns["b"]["kind"] == "numeric" and columns["b"]["min"] == -3.0
    assert arrow_numbers(["0x10", "0xFFFFFFFFFFFFFFFF"]) == [16.0, -1.0]
    assert (columns["c"]["min"], columns["c"]["max"]) == (-1.0, 16.0)
    lines = '{"a": "\u0661\u0662\u0663", "b": "12"}\n'.encode()
    columns = {c["name"]: c for c in profile_of(lines, DatasetFormat.JSON, 3)["columns"]}
    assert columns["a"]["kind"] == "categorical" and columns["b"]["kind"] == "numeric"


PLAIN_OR_NOT = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(-1e30, 1e30, allow_nan=False).map(repr),
    st.sampled_from(
        [" 5", "0x1F", "1_000", "\u0661", "1\n2", "3\n", "nan", "+5", ".5", "5.", "1e5"]
        + ["true", "1", "0", "-", "", "x", "12a", "1.5.2", "--1", "1e", "\n"]
    ),
)


@SETTINGS
@given(cells=st.lists(PLAIN_OR_NOT, min_size=1, max_size=30))
@example(cells=["1", "1\n2", "3"])
@example(cells=["x", "1", "2"])
@example(cells=["1", "0", "1.5"])
def test_a_column_is_numeric_exactly_when_pyarrow_reads_its_cells_as_numbers(
    cells: list[str],
) -> None:
    """Plain decimal cells are recognised at once, a column whose first cell is no number at
    once too: the column is numeric exactly when pyarrow's CSV reader types it int64 or
    float64 (a cell holding a line end among plain numbers, padded, hexadecimal, ``1_000``
    and Unicode digits, booleans as ``1``/``0`` beside ``true``)."""
    present = [cell for cell in cells if cell != ""]
    kind = column_profile("a", cells)["kind"]
    if not present:
        assert kind == "empty"
    else:
        assert (kind == "numeric") == (arrow_numbers(present) is not None), present
