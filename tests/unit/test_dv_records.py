"""Record counting and sampling checked against independent readers: Python's ``csv`` and
``json`` modules decide what a record is; the scanner must agree on every generated stream,
however it is cut into chunks and slices."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.dataversion import records
from chalicelib.dataversion.models import DatasetFormat
from chalicelib.dataversion.records import RecordSampler, RecordScanner
from chalicelib.dataversion.schema import ContentInspector

csv.field_size_limit(sys.maxsize)
SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)

# Pieces a CSV stream is made of, stray quotes and every line end included.
CSV_PIECES = st.sampled_from(
    [
        b"a",
        b"12",
        b",",
        b'"',
        b'""',
        b'"quoted, with comma"',
        b'"line one\nline two"',
        b'"blank\n\ninside"',
        b'"cr\r\ronly"',
        b'5"',
        b" ",
        b"\n",
        b"\r\n",
        b"\r",
        b"\n\n",
        b"\xc3\xa9",
    ]
)
# JSON lines: each line a record or JSON whitespace, ended by "\n" (the last maybe not).
JSON_LINES = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b'{"a": 1}',
                b' {"t": "say \\"hi\\", \\n is no line end"}\t',
                b'{"u": "\xe2\x80\xa8 \xc2\x85"}\r',
                b"",
                b" ",
                b"\t",
                b"\r",
                b" \r\t ",
            ]
        ),
        st.booleans(),
    ),
    max_size=120,
)


def csv_rows(data: bytes) -> list[list[str]]:
    """What ``csv`` reads: the excel dialect over text opened with ``newline=""``."""
    text = data.decode("utf-8-sig")
    return [row for row in csv.reader(io.StringIO(text, newline="")) if row]


def json_records(data: bytes) -> list[object]:
    """What ``json`` reads line by line; a line json reads as nothing (``[line]`` is ``[]``)
    is no record."""
    lines = data.decode("utf-8-sig").split("\n")
    return [json.loads(line) for line in lines if json.loads(f"[{line}]") != []]


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def scan(data: bytes, fmt: str, chunk: int, sampler: RecordSampler | None = None) -> int:
    scanner = RecordScanner(fmt, sampler)
    for part in chunks(data, chunk):
        scanner.feed(part)
    return scanner.finish()


def piece_row(piece: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(piece.lstrip(b"\r\n").decode(), newline="")))


@pytest.fixture(params=[64, 1 << 20], ids=["64-byte slices", "1-MiB slices"])
def slices(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(records, "SLICE_BYTES", request.param)
    return request.param


@SETTINGS
@given(parts=st.lists(CSV_PIECES, max_size=120), chunk=st.integers(1, 300))
def test_csv_records_are_counted_and_cut_exactly_as_csv_reads_them(
    slices: int, parts: list[bytes], chunk: int
) -> None:
    data = b"".join(parts)
    expected = csv_rows(data)
    sampler = RecordSampler(size=10_000)
    assert scan(data, "csv", chunk, sampler) == len(expected)
    assert [piece_row(piece) for _, piece in sampler.sample()] == expected


@SETTINGS
@given(lines=JSON_LINES, chunk=st.integers(1, 300))
def test_json_lines_records_are_counted_and_cut_exactly_as_json_reads_them(
    slices: int, lines: list[tuple[bytes, bool]], chunk: int
) -> None:
    data = b"".join(
        line + (b"\n" if ended or i < len(lines) - 1 else b"")
        for i, (line, ended) in enumerate(lines)
    )
    expected = json_records(data)
    sampler = RecordSampler(size=10_000)
    assert scan(data, "json", chunk, sampler) == len(expected)
    pieces = [piece for _, piece in sampler.sample()]
    assert [json.loads(piece) for piece in pieces] == expected
    assert not any(piece[:1].isspace() for piece in pieces)


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        (b"a,b\n1,2\n\n3,4\n\n", 2),  # blank lines between and after records
        (b"a,b\n1,2\n3,4\n\n\n\n", 2),  # trailing blank lines
        (b'a,b\n1,5"\n2,6"\n3,7', 3),  # quotes inside unquoted fields are characters
        (b'a,b\n1,"x', 1),  # one stray quote opens a field the data never closes
        (b"a,b\r1,2\r3,4\r", 2),  # CR-only line ends
        (b'a,b\n1,"line one\nline two"\n2,"\n\n"\n', 2),  # line ends inside quotes
        (b"\xef\xbb\xbfa,b\r\n1,2\r\n", 1),  # byte-order mark and CRLF
    ],
)
def test_the_issue_examples_count_as_csv_reads_them(body: bytes, rows: int) -> None:
    assert len(csv_rows(body)) - 1 == rows
    count, _, _ = inspect(body, DatasetFormat.CSV)
    assert count == rows


def test_json_lines_with_blank_and_whitespace_lines_count_only_records() -> None:
    body = b'{"a": 1}\n\n  \n\t\r\n{"a": 2}\r\n\n'
    assert len(json_records(body)) == 2
    assert inspect(body, DatasetFormat.JSON)[0] == 2


def inspect(body: bytes, fmt: DatasetFormat, rows: int = 100, chunk: int = 3):
    inspector = ContentInspector(fmt, rows)
    for part in chunks(body, chunk):
        inspector.feed(part)
    return inspector.finish()


def test_schema_inference_reads_quoted_line_ends_in_the_head() -> None:
    body = b'id,text\n1,"first\nsecond"\n2,"x"\n'
    count, schema, sampled = inspect(body, DatasetFormat.CSV, rows=1, chunk=5)
    assert count == 2 and sampled == 1
    assert schema is not None and schema.columns == {"id": "int", "text": "string"}


def test_a_json_error_names_the_record_past_blank_lines() -> None:
    from chalicelib.dataversion.errors import UnreadableContent

    with pytest.raises(UnreadableContent, match="JSON record 2 "):
        inspect(b'{"a": 1}\n\n\n{"a": \n', DatasetFormat.JSON)


@SETTINGS
@given(
    parts=st.lists(CSV_PIECES, max_size=300),
    chunk=st.integers(1, 200),
    size=st.integers(1, 6),
    skip=st.integers(0, 2),
    seed=st.integers(0, 1000),
)
def test_a_reservoir_sample_holds_exact_records_with_their_numbers(
    slices: int, parts: list[bytes], chunk: int, size: int, skip: int, seed: int
) -> None:
    data = b"".join(parts)
    expected = csv_rows(data)
    sampler = RecordSampler(size=size, skip=skip, seed=seed)
    assert scan(data, "csv", chunk, sampler) == len(expected)
    sample = sampler.sample()
    assert len(sample) == min(size, max(len(expected) - skip, 0))
    assert all(piece_row(piece) == expected[index] for index, piece in sample)
    assert [piece_row(piece) for piece in sampler.skipped] == expected[:skip]


class CountingSampler(RecordSampler):
    """Counts the records that replace a member of the sample (each handed over alone)."""

    replaced = 0

    def take(self, index: int, piece: bytes | None) -> None:
        before = None if self.filling else self.sample()
        super().take(index, piece)
        if before is not None and self.sample() != before:
            self.replaced += 1

    def take_ranges(self, *args: object) -> bool:
        return False  # as bytes, one by one

    def take_many(self, indices: list[int], pieces: list[bytes | None]) -> None:
        for index, piece in zip(indices, pieces, strict=True):  # one by one, each counted
            self.take(index, piece)


def test_records_handed_over_in_batches_give_the_sample_one_by_one_gives() -> None:
    body = b"".join(b"%d\n" % i for i in range(20_000))
    for seed in range(20):
        batched, single = RecordSampler(size=50, seed=seed), CountingSampler(size=50, seed=seed)
        scan(body, "csv", 1000, batched)
        scan(body, "csv", 1000, single)
        assert batched.sample() == single.sample() and batched.head == single.head


def test_a_head_filled_in_one_batch_holds_what_take_one_by_one_puts_in_it() -> None:
    """More records than the head has room for, in one take_many, some of them too long or
    missing: the head, its end and the reservoir's picks after it are take()'s."""
    rng = np.random.default_rng(11)
    for case in range(300):
        size, head_bytes = int(rng.integers(1, 40)), int(rng.integers(1, 400))
        count = int(rng.integers(1, 80))
        pieces: list[bytes | None] = [b"x" * int(n) for n in rng.integers(0, 30, count)]
        if case % 3 == 0:  # a record too long (or cut off) somewhere in the batch
            pieces[int(rng.integers(0, count))] = None if case % 2 else b"y" * 50
        kwargs = {"size": size, "seed": case, "skip": 1, "head_bytes": head_bytes}
        batched = RecordSampler(**kwargs, max_record_bytes=40)
        single = CountingSampler(**kwargs, max_record_bytes=40)
        batched.take_many(list(range(count)), pieces)
        single.take_many(list(range(count)), pieces)
        assert (batched.head, batched.head_records) == (single.head, single.head_records)
        assert (batched.filling, batched.too_long) == (single.filling, single.too_long)
        assert batched.sample() == single.sample() and batched.skipped == single.skipped


def test_the_reservoir_is_uniform_and_replaces_as_often_as_algorithm_r() -> None:
    """Over 300 seeds, 5,000 records, 20 kept: every tenth of the stream holds a tenth of the
    sample (chi-square, 9 degrees of freedom, p > 0.001), and replacements average
    k (H_n - H_k), the expectation of Vitter's Algorithm R (within 5%)."""
    from scipy import stats

    n, k, seeds = 5_000, 20, 300
    body = b"".join(b"%d\n" % i for i in range(n))
    tenths = np.zeros(10)
    replaced = []
    for seed in range(seeds):
        sampler = CountingSampler(size=k, seed=seed)
        scan(body, "csv", 256, sampler)
        numbers = np.array([int(piece) for _, piece in sampler.sample()])
        assert len(numbers) == k and len(set(numbers.tolist())) == k
        tenths += np.bincount(numbers * 10 // n, minlength=10)
        replaced.append(sampler.replaced)
    assert stats.chisquare(tenths).pvalue > 0.001
    expected = k * sum(1 / i for i in range(k + 1, n + 1))
    assert math.isclose(float(np.mean(replaced)), expected, rel_tol=0.05)


class PieceSampler(RecordSampler):
    """Receives every record as a ``bytes`` object (the path a tee or a spanning record
    takes), never as a byte range of the slice."""

    def take_ranges(self, *args: object) -> bool:
        return False


@SETTINGS
@given(
    parts=st.lists(CSV_PIECES, max_size=300),
    lines=JSON_LINES,
    chunk=st.integers(1, 200),
    size=st.integers(1, 6),
    seed=st.integers(0, 1000),
)
def test_records_handed_over_as_byte_ranges_give_the_sample_bytes_give(
    slices: int,
    parts: list[bytes],
    lines: list[tuple[bytes, bool]],
    chunk: int,
    size: int,
    seed: int,
) -> None:
    """Blank lines, CRLF and whitespace before records are skipped in the ranges exactly as
    ``lstrip`` skips them in a cut record; both paths hold the same records with the same
    numbers, and against one by one (``take``)."""
    json_body = b"".join(line + (b"\n" if ended else b"") for line, ended in lines)
    for fmt, data in (("csv", b"".join(parts)), ("json", json_body)):
        ranges, pieces = RecordSampler(size=size, seed=seed), PieceSampler(size=size, seed=seed)
        single = CountingSampler(size=size, seed=seed)
        assert scan(data, fmt, chunk, ranges) == scan(data, fmt, chunk, pieces)
        scan(data, fmt, chunk, single)
        assert ranges.sample() == pieces.sample() == single.sample()
        assert ranges.head == pieces.head == single.head


def test_a_sample_store_that_drops_dead_buffers_keeps_the_same_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chalicelib.dataversion import sample_store

    monkeypatch.setattr(sample_store, "MIN_GARBAGE_BYTES", 64)
    body = b"".join(b"%d,row\n" % i for i in range(30_000))
    compacted, plain = RecordSampler(size=40, seed=5), CountingSampler(size=40, seed=5)
    scan(body, "csv", 4096, compacted)
    scan(body, "csv", 4096, plain)
    assert compacted.sample() == plain.sample()
    assert [piece_row(piece) for _, piece in compacted.sample()] == [
        [str(index), "row"] for index, _ in compacted.sample()
    ]


def test_a_batch_past_the_byte_limit_is_taken_one_by_one_as_before() -> None:
    body = b"".join(b"%d\n" % i for i in range(20_000))
    for limit in (60, 200, 10_000):
        limited = RecordSampler(size=50, seed=2, max_sample_bytes=limit)
        single = CountingSampler(size=50, seed=2, max_sample_bytes=limit)
        scan(body, "csv", 1000, limited)
        scan(body, "csv", 1000, single)
        assert limited.sample() == single.sample()
        assert sum(len(piece) for _, piece in limited.sample()) <= max(limit, 250)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(3, 30),
    room=st.floats(0.8, 1.4),
    chunk=st.sampled_from([4096, 65536]),
)
def test_records_of_varied_length_near_the_byte_limit_give_the_one_by_one_sample(
    monkeypatch: pytest.MonkeyPatch, seed: int, size: int, room: float, chunk: int
) -> None:
    """A byte limit about what ``size`` records of 1 to 120 bytes hold keeps the sample near
    it for the whole pass: picks handed over as byte ranges, held for the next chunk and
    copied in full near the limit, keep the records ``take`` one by one keeps. 1,000 records
    (66 KiB: 2 or 17 chunks) find a ``_fits_bytes`` or ``_fits`` that forgets the held bytes as
    often per example as 3,000 did."""
    monkeypatch.setattr(records, "SLICE_BYTES", 64)
    lengths = np.random.default_rng(seed).integers(0, 120, size=1_000)
    body = b"".join(b"%d,%s\n" % (i, b"x" * int(n)) for i, n in enumerate(lengths))
    limit = int(size * 65 * room)
    held = RecordSampler(size=size, seed=seed, max_sample_bytes=limit)
    single = CountingSampler(size=size, seed=seed, max_sample_bytes=limit)
    scan(body, "csv", chunk, held)
    scan(body, "csv", chunk, single)
    assert held.sample() == single.sample()


@pytest.mark.parametrize("size", [1, 7])
def test_a_replacement_that_fills_the_sample_to_its_byte_limit_exactly_is_kept(size: int) -> None:
    """Records of one length, a byte limit of exactly ``size`` of them: every replacement
    keeps the sample at the limit, so the sample is the unlimited one; one byte less refuses
    every replacement, so the sample stays the head. One by one and in batches alike."""
    body = b"".join(b"%05d\n" % i for i in range(3_000))
    free = RecordSampler(size=size, seed=5)
    scan(body, "csv", 4096, free)
    width = len(free.sample()[0][1])
    assert {len(piece) for _, piece in free.sample()} == {width}
    assert free.sample() != free.head  # the reservoir replaced something
    for limit, expected in ((size * width, free.sample()), (size * width - 1, free.head)):
        for sampler in (RecordSampler, CountingSampler):
            bounded = sampler(size=size, seed=5, max_sample_bytes=limit)
            scan(body, "csv", 4096, bounded)
            assert bounded.sample() == expected, (sampler.__name__, limit)


def test_the_batched_reservoir_is_uniform() -> None:
    """The records placed a slice at a time (byte ranges, a slot picked twice keeping its
    later record): over 300 seeds, 20,000 records in 64 KiB chunks, 20 kept, every tenth of
    the stream holds a tenth of the sample (chi-square, 9 degrees of freedom, p > 0.001)."""
    from scipy import stats

    n, k, seeds = 20_000, 20, 300
    body = b"".join(b"%d\n" % i for i in range(n))
    tenths = np.zeros(10)
    for seed in range(seeds):
        sampler = RecordSampler(size=k, seed=seed)
        scan(body, "csv", 1 << 16, sampler)
        numbers = np.array([int(piece) for _, piece in sampler.sample()])
        assert len(set(numbers.tolist())) == k
        tenths += np.bincount(numbers * 10 // n, minlength=10)
    assert stats.chisquare(tenths).pvalue > 0.001


def test_the_same_seed_gives_the_same_sample() -> None:
    body = b"".join(b"%d\n" % i for i in range(5_000))
    first, second = RecordSampler(size=20, seed=3), RecordSampler(size=20, seed=3)
    scan(body, "csv", 777, first)
    scan(body, "csv", 4096, second)
    assert first.sample() == second.sample()
    other = RecordSampler(size=20, seed=4)
    scan(body, "csv", 777, other)
    assert other.sample() != first.sample()


def test_records_longer_than_the_limit_are_never_sampled() -> None:
    body = b"short\n" + b"x" * 100 + b"\nend\n"
    sampler = RecordSampler(size=10, max_record_bytes=50)
    assert scan(body, "csv", 7, sampler) == 3
    assert [index for index, _ in sampler.sample()] == [0, 2]
    assert sampler.too_long == [1] and not sampler.complete


def test_a_head_only_sampler_stops_after_the_head() -> None:
    body = b"".join(b"%d\n" % i for i in range(1_000))
    sampler = RecordSampler(size=10, reservoir=False)
    assert scan(body, "csv", 64, sampler) == 1_000
    assert [int(piece) for _, piece in sampler.sample()] == list(range(10))


def test_other_formats_are_not_scanned() -> None:
    with pytest.raises(ValueError, match="parquet"):
        RecordScanner("parquet")


def test_a_tee_hands_each_sampler_what_it_would_take_alone() -> None:
    """Heads that fill in the middle of a slice (the rest of the slice is asked for again):
    through a tee, a head-only sampler and a reservoir hold what each holds fed alone."""
    from chalicelib.dataversion.records import TeeSampler

    body = b"".join(b"%d,x\r\n" % i for i in range(20_000))
    for chunk in (333, 4096, 1 << 20):
        head, uniform = RecordSampler(size=70, reservoir=False), RecordSampler(size=30, seed=1)
        scan(body, "csv", chunk, TeeSampler(head, uniform))
        head_alone, uniform_alone = (
            RecordSampler(size=70, reservoir=False),
            RecordSampler(size=30, seed=1),
        )
        scan(body, "csv", chunk, head_alone)
        scan(body, "csv", chunk, uniform_alone)
        assert head.sample() == head_alone.sample()
        single = CountingSampler(size=30, seed=1)
        scan(body, "csv", chunk, single)
        assert uniform.sample() == uniform_alone.sample() == single.sample()


def test_long_runs_of_blank_lines_before_picked_records_are_skipped_as_lstrip_does() -> None:
    """Four blank CRLF lines (8 bytes) before every record: more than the rounds skipped for
    all records at once, the rest record by record; the same records as cut bytes and as
    take() one by one."""
    for fmt, body in (
        ("csv", b"".join(b"%d,x\r\n\r\n\r\n\r\n\r\n" % i for i in range(5_000))),
        ("json", b"".join(b'{"i": %d}\n \t\n\r\n\n' % i for i in range(5_000))),
    ):
        ranges, pieces = RecordSampler(size=40, seed=9), PieceSampler(size=40, seed=9)
        single = CountingSampler(size=40, seed=9)
        for sampler in (ranges, pieces, single):
            assert scan(body, fmt, 3000, sampler) == 5_000
        assert ranges.sample() == pieces.sample() == single.sample()
        assert all(not piece[:1].isspace() for _, piece in ranges.sample())


def test_a_head_ended_by_its_byte_limit_hands_on_only_the_reservoirs_picks() -> None:
    """A head that ends on bytes before its record count, inside a batch: the batch's later
    records reach the reservoir as take() one by one would hand them."""
    body = b"".join(b"%d,%s\n" % (i, b"y" * (i % 7)) for i in range(20_000))
    for chunk in (500, 1 << 16):
        batched = RecordSampler(size=60, seed=4, head_bytes=300)
        single = CountingSampler(size=60, seed=4, head_bytes=300)
        scan(body, "csv", chunk, batched)
        scan(body, "csv", chunk, single)
        assert batched.head == single.head and len(batched.head) < 60
        assert batched.sample() == single.sample()


def one_batch_at_a_time(records: int, size: int, seed: int) -> list[int]:
    """The record numbers a seeded reservoir of ``size`` keeps of ``records`` (numbered from
    0), by Algorithm L with its skips drawn 1,024 at a time, one batch after another: the
    draws that define which records a seed picks, replayed record by record."""
    members = list(range(min(size, records)))
    if records <= size:
        return members
    rng = np.random.default_rng(seed)
    log_w = math.log(max(rng.random(), 1e-300)) / size
    last = size - 1
    while True:
        skips = np.maximum(rng.random(1024), 1e-300)
        weights = np.maximum(rng.random(1024), 1e-300)
        slots = rng.integers(0, size, 1024)
        steps = np.log(weights) / size
        running = log_w + np.concatenate(([0.0], np.cumsum(steps)[:-1]))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            gaps = np.floor(np.log(skips) / np.log1p(-np.exp(running)))
        gaps = np.clip(np.nan_to_num(gaps, nan=2**40, posinf=2**40), 0, 2**40).astype(np.int64)
        log_w = float(running[-1] + steps[-1])
        for gap, slot in zip(gaps.tolist(), slots.tolist(), strict=True):
            last += gap + 1
            if last >= records:
                return sorted(members)
            members[slot] = last


@pytest.mark.parametrize("size", [1, 7, 300])
def test_the_reservoir_keeps_the_records_its_batches_drawn_one_at_a_time_pick(size: int) -> None:
    """Picks drawn several batches at once, ahead of the stream, are the picks drawn one
    batch at a time when the stream reaches them (the same records for the same seed)."""
    for records_count in (size + 1, 5_000, 200_000):
        body = b"".join(b"%d\n" % i for i in range(records_count))
        for seed in (0, 11):
            sampler = RecordSampler(size=size, seed=seed)
            scan(body, "csv", 1 << 16, sampler)
            kept = [int(piece) for _, piece in sampler.sample()]
            assert kept == one_batch_at_a_time(records_count, size, seed)


def test_picks_located_for_many_slices_at_once_are_the_records_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks of many slices (4 KiB slices in 64 KiB chunks; records spanning slices; dense
    picks early, sparse later): the records located at the end of each chunk are the ones
    taken one by one and the ones cut as bytes."""
    monkeypatch.setattr(records, "SLICE_BYTES", 4096)
    for fmt, body in (
        ("csv", b"".join(b'%d,"v\n%s"\r\n' % (i, b"w" * (i % 13)) for i in range(60_000))),
        (
            "json",
            b"".join(b'{"i": %d, "s": "%s"}\n\n' % (i, b"x" * (i % 9)) for i in range(60_000)),
        ),
    ):
        for seed in (1, 2):
            ranges, pieces = RecordSampler(size=50, seed=seed), PieceSampler(size=50, seed=seed)
            single = CountingSampler(size=50, seed=seed)
            for sampler in (ranges, pieces, single):
                assert scan(body, fmt, 1 << 16, sampler) == 60_000
            assert ranges.sample() == pieces.sample() == single.sample()


def first_ragged(rows: list[list[str]]) -> tuple[int, int] | None:
    """The first record after the header whose field count differs from the header's, as
    ``csv`` reads them: (its number from 1, its fields)."""
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(rows[0]):
            return number, len(row)
    return None


def scan_fields(data: bytes, chunk: int) -> tuple[int, RecordScanner]:
    scanner = RecordScanner("csv", fields=True)
    for part in chunks(data, chunk):
        scanner.feed(part)
    return scanner.finish(), scanner


@SETTINGS
@given(parts=st.lists(CSV_PIECES, max_size=120), chunk=st.integers(1, 300))
def test_csv_field_counts_are_checked_as_csv_reads_them(
    slices: int, parts: list[bytes], chunk: int
) -> None:
    """Any stream of CSV pieces (stray quotes, quoted commas and line ends, blank lines, CR,
    CRLF): the first record with a field count other than the header's is the one ``csv``
    reads so, wherever the chunks and slices cut it."""
    data = b"".join(parts)
    expected = csv_rows(data)
    count, scanner = scan_fields(data, chunk)
    assert count == len(expected) and scanner.fields is not None
    assert scanner.fields.bad == first_ragged(expected)


CELL_TEXT = st.text(alphabet='ab,"\r\n 1', max_size=6)


@SETTINGS
@given(
    width=st.integers(1, 5),
    rows=st.lists(st.lists(CELL_TEXT, min_size=5, max_size=5), min_size=1, max_size=60),
    ragged=st.none() | st.tuples(st.integers(0, 59), st.sampled_from([-1, 1, 2])),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    blank=st.booleans(),
    chunk=st.integers(1, 500),
)
def test_a_ragged_record_is_found_wherever_it_lies_as_csv_reads_it(
    slices: int,
    width: int,
    rows: list[list[str]],
    ragged: tuple[int, int] | None,
    ending: str,
    blank: bool,
    chunk: int,
) -> None:
    """Files ``csv.writer`` writes (quoted commas, quotes and line ends in cells; LF, CRLF or
    CR line ends; blank lines between records), right or with one record a field short or
    long: the scanner finds what ``csv`` reads, across 64-byte and 1 MiB slices."""
    table = [row[:width] for row in [[f"c{i}" for i in range(5)], *rows]]
    if ragged is not None and ragged[0] < len(rows) and width + ragged[1] >= 1:
        row = table[ragged[0] + 1]
        table[ragged[0] + 1] = (row + ["x", "y"])[: width + ragged[1]]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=ending + (ending if blank else ""))
    writer.writerows(table)
    data = out.getvalue().encode()
    expected = csv_rows(data)
    _, scanner = scan_fields(data, chunk)
    assert scanner.fields is not None and scanner.fields.bad == first_ragged(expected)


def test_a_ragged_record_among_thousands_of_columns_is_found() -> None:
    """2,500 columns (the running sum is then kept in 64-bit integers): a record with one
    field short, past the first 1 MiB slice, is found as ``csv`` reads it."""
    row = ",".join(["7"] * 2_500).encode() + b"\n"
    body = row * 300 + b",".join([b"7"] * 2_499) + b"\n" + row * 3
    expected = csv_rows(body)
    assert first_ragged(expected) == (300, 2_499)
    _, scanner = scan_fields(body, 1 << 16)
    assert scanner.fields is not None and scanner.fields.bad == (300, 2_499)
    _, scanner = scan_fields(row * 400, 1 << 16)
    assert scanner.fields is not None and scanner.fields.bad is None


def short_rows(rng: np.random.Generator, count: int) -> list[list[str]]:
    """Rows of four cells of 0-9 characters (4-40 bytes a record: 1 to 16 record ends in a
    64-byte unit, so units with fewer ends than the slice's most)."""
    return [["x" * int(size) for size in rng.integers(0, 10, size=4)] for _ in range(count)]


@pytest.mark.parametrize("extra", [-1, 1, 256, -3])
def test_a_ragged_record_among_short_rows_of_any_length_is_found(slices: int, extra: int) -> None:
    """Rows of four fields and 4-40 bytes, one of them a field short, a field long, 256
    fields long (its delimiters, counted in a byte, would wrap around to the right count)
    or with a single field: at 40 seeded places, the first ragged record is the one ``csv``
    reads."""
    rng = np.random.default_rng(extra + 1000)
    for _ in range(40):
        table = [["a", "b", "c", "d"], *short_rows(rng, 300)]
        at = int(rng.integers(1, len(table)))
        table[at] = (table[at] + ["y"] * max(extra, 0))[: 4 + extra]
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\n").writerows(table)
        data = out.getvalue().encode()
        expected = first_ragged(csv_rows(data))
        assert expected == (at, 4 + extra)
        for chunk in (1 << 16, 777):
            _, scanner = scan_fields(data, chunk)
            assert scanner.fields is not None and scanner.fields.bad == expected
