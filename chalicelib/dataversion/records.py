"""Exact record boundaries of CSV and JSON-lines streams, counted and sampled in one pass.

A **CSV record** is what Python's :mod:`csv` module yields (excel dialect, text decoded as UTF-8
and read with ``newline=""``), minus the empty records of blank lines. The rules that decide it:

* a line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (CR-only files count);
* a line with no character before its end is blank and is no record;
* a ``"`` opens a quoted field only at the start of a field (after a ``,``, at the start of a
  record); inside, ``""`` is a quote and line ends belong to the field; a ``"`` anywhere else is
  an ordinary character (``5"`` is the two characters ``5"``, as ``csv`` reads it);
* a quoted field left open at the end of the data ends the last record (``csv`` does so too).

A **JSON-lines record** is a line (ended by ``\\n``; JSON strings cannot hold a raw line end) with
something other than JSON whitespace (space, tab, ``\\r``) on it.

The scanner works on slices of at most 1 MiB with numpy: where a slice has no ``"`` it counts
line ends with vectorised comparisons; where it has quotes it finds the runs of consecutive
quotes and decides, for all of them at once, which open or close a field (a run at the start of a
field toggles the quoted state when it is of odd length; a run elsewhere is literal when outside
a field and toggles when inside), then keeps the line ends outside quoted fields. No Python loop
runs per byte, per line or per quote.

The :class:`RecordSampler` receives the byte range of each record it asks for: the first records
(the head, from which schemas are inferred) and a seeded uniform reservoir of the rest
(Li's Algorithm L, with its skips drawn in vectorised batches), so that profiles and explanation
backgrounds see a uniform sample without reading the content twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from chalicelib.dataversion.fields import FieldCheck
from chalicelib.dataversion.sample_store import SampleStore, last_of_each

SLICE_BYTES = 1 << 20
QUOTE, COMMA, LF, CR, SPACE, TAB = 34, 44, 10, 13, 32, 9
BOM = b"\xef\xbb\xbf"
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_ONE, _TOP = np.uint64(1), np.uint64(63)
_PREFIX = np.uint64(0x0101010101010101)  # times 8 byte counts: their running sums, bytewise
_UNIT_BITS = 64  # bits of a packed word
# The k-th set bit (counting from the least significant) of every byte value: where the k-th
# line end lies inside a byte of a packed mask.
_NTH_BIT = np.full((256, 8), 8, dtype=np.int64)
for _value in range(256):
    _bits = [bit for bit in range(8) if _value & (1 << bit)]
    _NTH_BIT[_value, : len(_bits)] = _bits


@dataclass
class _Carry:
    """What one slice hands to the next."""

    in_quote: bool = False
    pending: int = 0  # length of a run of quotes that reached the end of the previous slice
    pending_opens: bool = False  # whether that run starts at the start of a field
    prev_term: bool = True  # the previous byte ended a line outside quotes (or none came yet)
    last_byte: int = -1  # the previous byte (-1: the start of the data)
    line_content: bool = False  # JSON lines: the current line has a non-whitespace byte


class _Ends:
    """The records that end in one slice: how many, and where (on demand)."""

    def __init__(self, count: int, positions: np.ndarray | None = None) -> None:
        self.count = count
        self._positions = positions
        self._words: np.ndarray | None = None
        self._per_word: np.ndarray | None = None  # set bits of each word

    @classmethod
    def of_words(cls, words: np.ndarray) -> _Ends:
        """Ends marked by the set bits of packed words (bit ``i`` of word ``w``: byte
        ``64 * w + i``)."""
        per_word = np.bitwise_count(words)
        found = cls(int(per_word.sum(dtype=np.int64)))
        found._words, found._per_word = words, per_word
        return found

    def packed(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The ends as packed words and the set bits of each word (``None``: they are listed
        as positions)."""
        if self._positions is not None:
            return None
        assert self._words is not None and self._per_word is not None
        return self._words, self._per_word

    def locate(self, indices: np.ndarray) -> np.ndarray:
        """The positions of the ``indices``-th ends (0-based, ascending)."""
        packed = self.packed()
        if packed is None:
            assert self._positions is not None
            return self._positions[indices]
        if len(indices) >= self.count:  # every end wanted: unpacking them all is as cheap
            self._positions = _bit_positions(packed[0])
            return self._positions[indices]
        return _nth_set_bits(*packed, indices)


def _nth_set_bits(words: np.ndarray, per_word: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The positions of the ``indices``-th set bits of packed ``words`` (``per_word``: the
    set bits of each)."""
    word, rank = _word_and_rank(per_word, indices)
    return word * 64 + _bit_in_word(words[word], rank)


def _word_and_rank(per_word: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The word holding each ``indices``-th set bit and the bit's rank among its word's.

    The running count is held in 32 bits while it fits (a chunk's 131,072 words: 70 µs,
    where a fresh 64-bit one took about 1 ms, most of it page faults), and searched with
    indices of its own type (else numpy converts the whole count to compare them)."""
    wide = np.int32 if len(per_word) * _UNIT_BITS < 2**31 else np.int64
    cumulative = np.cumsum(per_word, dtype=wide)
    word = np.searchsorted(cumulative, indices.astype(wide, copy=False), side="right")
    return word, indices - cumulative[word] + per_word[word]


def _bit_in_word(values: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """The position of the ``rank``-th set bit in each of the words ``values``."""
    octets = values.view(np.uint8).reshape(-1, 8)
    # Set bits per octet, summed octet by octet in one multiplication (no sum passes 64, so
    # none carries into the next octet): octet k of ``through`` counts octets 0..k.
    through = (np.bitwise_count(octets).view("<u8").ravel() * _PREFIX).view(np.uint8)
    through = through.reshape(-1, 8)
    # The octet holding the bit: how many octets end at or before it (a row of 8 flags read
    # as one word and counted).
    octet = np.bitwise_count((through <= rank[:, None]).view("<u8").ravel()).astype(np.int64)
    rows = np.arange(len(values))
    earlier = np.where(octet > 0, through[rows, np.maximum(octet - 1, 0)], 0)
    return octet * 8 + _NTH_BIT[octets[rows, octet], rank - earlier]


@dataclass
class RangeClaim:
    """Wanted records that end in one slice (and lie in its chunk), handed to a sampler
    before they are located: where they start and stop is looked up at the end of the chunk
    for the records that stay in the sample, for all claims at once
    (:func:`claimed_ranges`), a few numpy calls per chunk instead of per slice.

    Attributes:
        ends: The slice's record ends.
        local: The records' ends among them (ascending).
        lo: Where the slice starts in the chunk.
        first_start: Where the first record starts relative to the slice when it is the
            slice's first (after the previous slice's last end: in this slice, or before it
            in the same chunk), else ``None``.
        most_bytes: The bytes from the first record's start to the slice's end: no record
            is longer, nor all of them together.
        skip_blank: Moves starts past blank lines (the scanner's, for its format).
        exact_bytes: The records' bytes, once counted.
    """

    ends: _Ends
    local: np.ndarray
    lo: int
    first_start: int | None
    most_bytes: int
    skip_blank: Callable[[np.ndarray, np.ndarray, np.ndarray], None]
    exact_bytes: int | None = None

    def __post_init__(self) -> None:
        self.ends.packed()  # a plain slice's mask of bytes is packed now, not held


def claimed_ranges(
    claims: list[RangeClaim], data: bytes, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where the claimed records that ``keep`` marks (one flag per record, the claims' end to
    end) start in the chunk ``data`` and how long they are, in order; blank lines before a
    record are skipped as ``lstrip`` skips them."""
    sizes = np.array([len(claim.local) for claim in claims], dtype=np.int64)
    owner = np.repeat(np.arange(len(claims)), sizes)[keep]
    chosen = np.concatenate([claim.local for claim in claims])[keep]
    count = len(chosen)
    # Each record's own end, then the end before it (where it starts).
    whose = np.concatenate((owner, owner))
    found = _find_ends(
        [claim.ends for claim in claims], np.concatenate((chosen, np.maximum(chosen - 1, 0))), whose
    )
    found += np.array([claim.lo for claim in claims], dtype=np.int64)[whose]
    stops, starts = found[:count], found[count:] + 1
    overridden = [at for at, claim in enumerate(claims) if claim.first_start is not None]
    if overridden and count:
        kept_before = np.cumsum(keep) - 1  # a record's place among the kept ones
        firsts = (np.cumsum(sizes) - sizes)[overridden].tolist()
        for at, first in zip(overridden, firsts, strict=True):
            if keep[first]:
                claim = claims[at]
                starts[kept_before[first]] = claim.lo + (claim.first_start or 0)
    if claims:
        claims[0].skip_blank(np.frombuffer(data, dtype=np.uint8), starts, stops)
    return starts, stops - starts


def _find_ends(ends: list[_Ends], indices: np.ndarray, whose: np.ndarray) -> np.ndarray:
    """The positions of the ``indices``-th ends of the slices ``whose`` names (each in its
    own slice): listed ends looked up in their lists laid end to end, packed ones found by
    one search over the words of those slices laid end to end."""
    if len(ends) == 1:
        return ends[0].locate(indices)
    found = np.empty(len(indices), dtype=np.int64)
    listed = np.array([part.packed() is None for part in ends])
    by_list = listed[whose]
    for wanted, group in ((by_list, np.flatnonzero(listed)), (~by_list, np.flatnonzero(~listed))):
        if not len(group) or not wanted.any():
            continue
        parts = [ends[at] for at in group.tolist()]
        counts = np.array([part.count for part in parts], dtype=np.int64)
        place = np.zeros(len(ends), dtype=np.int64)
        place[group] = np.arange(len(group))
        where = place[whose[wanted]]
        at = indices[wanted] + (np.cumsum(counts) - counts)[where]
        found[wanted] = _lay_out(parts, at, where, listed[group[0]])
    return found


def _lay_out(parts: list[_Ends], at: np.ndarray, where: np.ndarray, listed: bool) -> np.ndarray:
    """The ``at``-th ends of ``parts`` laid end to end, each as a position in its own slice
    (``where``: the part each belongs to)."""
    if listed:
        lists = [part._positions for part in parts if part._positions is not None]
        return np.concatenate(lists)[at]
    packed = [_packed(part) for part in parts]
    per_word = np.concatenate([counts for _, counts in packed])
    word_counts = np.array([len(counts) for _, counts in packed], dtype=np.int64)
    word, rank = _word_and_rank(per_word, at)
    word -= (np.cumsum(word_counts) - word_counts)[where]  # in its own slice
    values = np.empty(len(word), dtype=np.uint64)
    for part, (words, _) in enumerate(packed):  # each slice's words read where they are
        mine = where == part
        values[mine] = words[word[mine]]
    return word * 64 + _bit_in_word(values, rank)


def _packed(ends: _Ends) -> tuple[np.ndarray, np.ndarray]:
    packed = ends.packed()
    assert packed is not None
    return packed


def _as_numbers(numbers: Iterable[int]) -> np.ndarray:
    """Record numbers as an int64 array (a range or an array without a Python loop)."""
    if isinstance(numbers, np.ndarray):
        return numbers.astype(np.int64, copy=False)
    if isinstance(numbers, range):
        return np.arange(numbers.start, numbers.stop, numbers.step, dtype=np.int64)
    return np.fromiter(numbers, dtype=np.int64)


def _whole(pieces: list[bytes | None]) -> list[bytes] | None:
    """The pieces if none is missing (a record too long to keep), else ``None``."""
    whole = [piece for piece in pieces if piece is not None]
    return whole if len(whole) == len(pieces) else None


def _lengths(pieces: list[bytes]) -> np.ndarray:
    return np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))


def _bit_positions(words: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))


def _words(mask: np.ndarray) -> np.ndarray:
    """A boolean mask packed into 64-bit words, byte ``i`` as bit ``i % 64`` of word ``i // 64``."""
    packed = np.packbits(mask, bitorder="little")
    if len(packed) % 8:
        packed = np.concatenate((packed, np.zeros(8 - len(packed) % 8, dtype=np.uint8)))
    return packed.view("<u8")


def _before(words: np.ndarray, first: bool) -> np.ndarray:
    """Bit ``i`` set where bit ``i - 1`` of ``words`` is (``first`` for the very first bit)."""
    shifted = words << _ONE
    shifted[1:] |= words[:-1] >> _TOP
    if first:
        shifted[0] |= _ONE
    return shifted


def _after(words: np.ndarray) -> np.ndarray:
    """Bit ``i`` set where bit ``i + 1`` of ``words`` is (clear for the last bit)."""
    shifted = words >> _ONE
    shifted[:-1] |= words[1:] << _TOP
    return shifted


def _inside(quotes: np.ndarray, initial: bool) -> tuple[np.ndarray, bool]:
    """For every byte, the parity of the quotes before it (``initial`` included), and the
    parity after the last byte."""
    prefix = quotes.copy()
    for step in (1, 2, 4, 8, 16, 32):
        prefix ^= prefix << np.uint64(step)
    parity = (np.bitwise_count(quotes) & _ONE).astype(np.int64)
    carried = (np.cumsum(parity) - parity + int(initial)) & 1
    inside = (prefix ^ quotes) ^ np.where(carried == 1, _ALL, np.uint64(0))
    return inside, bool((int(parity.sum()) + int(initial)) & 1)


def _last_set(words: np.ndarray, limit: int) -> int:
    """The position of the highest set bit below ``limit``, or -1."""
    nonzero = np.flatnonzero(words)
    if not len(nonzero):
        return -1
    word = int(nonzero[-1])
    found = word * 64 + int(words[word]).bit_length() - 1
    return found if found < limit else -1


class RecordScanner:
    """Counts the records of a CSV or JSON-lines stream exactly, chunk by chunk.

    Args:
        fmt: ``"csv"`` or ``"json"``.
        sampler: Receives the bytes of the records it asks for (optional).
        fields: Whether to check that every CSV record has as many fields as the header
            (:attr:`fields` keeps the first that does not).
    """

    def __init__(
        self, fmt: str, sampler: RecordSampler | TeeSampler | None = None, fields: bool = False
    ) -> None:
        if fmt not in ("csv", "json"):
            raise ValueError(f"records of {fmt!r} content are not scanned")
        self.fmt = fmt
        self.sampler = sampler
        self.fields = FieldCheck() if fields and fmt == "csv" else None
        self._mask = np.empty(0, dtype=bool)
        self._blank = b" \t\r\n" if fmt == "json" else b"\r\n"
        self._is_blank = np.zeros(256, dtype=bool)
        self._is_blank[list(self._blank)] = True
        self.records = 0
        self.offset = 0  # bytes scanned (after a leading byte-order mark)
        self._carry = _Carry()
        self._prefix = b""  # the first bytes, held back until a byte-order mark is ruled out
        self._started = False
        self._record_start = 0  # where the piece of the record in progress starts
        self._partial: list[bytes] = []  # its bytes so far, when the sampler wants it
        self._partial_size = 0
        self._partial_start = 0
        self._chunk: bytes | None = None  # the chunk being fed

    # ---- feeding ----------------------------------------------------------------------------

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Takes the next bytes of the stream."""
        data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        if not self._started:
            data = self._strip_bom(data)
            if not self._started:
                return
        view = np.frombuffer(data, dtype=np.uint8)
        self._chunk = data
        for start in range(0, len(data), SLICE_BYTES):
            end = min(start + SLICE_BYTES, len(data))
            self._slice(data, view[start:end], start, end)
        self._chunk = None
        if isinstance(self.sampler, RecordSampler):
            self.sampler.end_chunk()  # copies (or holds) what it takes of the chunk's bytes

    def _strip_bom(self, data: bytes) -> bytes:
        self._prefix += data
        if len(self._prefix) < len(BOM) and BOM.startswith(self._prefix):
            return b""
        self._started = True
        rest = self._prefix[len(BOM) :] if self._prefix.startswith(BOM) else self._prefix
        self._prefix = b""
        return rest

    def finish(self) -> int:
        """Ends the stream; returns the number of records (a CSV header included)."""
        if not self._started:  # fewer bytes than a byte-order mark: they are data
            self._started = True
            rest, self._prefix = self._prefix, b""
            if rest:
                self._slice(rest, np.frombuffer(rest, dtype=np.uint8), 0, len(rest))
        carry = self._carry
        if self.fmt == "csv" and carry.pending:
            carry.in_quote = _after_run(carry.in_quote, carry.pending, carry.pending_opens)
            carry.pending = 0
        last = carry.line_content if self.fmt == "json" else not carry.prev_term
        last = last and self.offset > self._record_start
        if self.fields is not None:
            self.fields.finish(self.records if last else None)
        if last:
            ends = _Ends(1, np.zeros(1, dtype=np.int64))
            self._end_records(ends, b"", 0, self.offset)
        if isinstance(self.sampler, RecordSampler):
            self.sampler.flush()
        return self.records

    # ---- one slice --------------------------------------------------------------------------

    def _slice(self, data: bytes, view: np.ndarray, lo: int, hi: int) -> None:
        if self.fmt == "json":
            ends, last_outside = self._json_ends(data, view, lo, hi)
        else:
            ends, last_outside = self._csv_ends(data, view, lo, hi)
        base = self.offset
        self.offset += hi - lo
        self._end_records(ends, data, lo, base, view)
        if last_outside >= 0:
            self._record_start = max(self._record_start, base + last_outside + 1)
        self._keep_partial(data, lo, hi, base)

    def _end_records(
        self, ends: _Ends, data: bytes, lo: int, base: int, view: np.ndarray | None = None
    ) -> None:
        """Counts the records ending in this slice and hands the wanted ones to the sampler."""
        first = self.records
        self.records += ends.count
        if not ends.count:
            return
        start, stop = first, self.records
        while self.sampler is not None and start < stop:
            # A head that fills in this slice answers for its room; the records after it are
            # asked for again, of the reservoir that then starts (only its picks are cut).
            sampler = self.sampler
            again = not isinstance(sampler, RecordSampler) or sampler.filling
            wanted = _as_numbers(sampler.wanted(start, stop - start))
            if not len(wanted):
                break
            start = int(wanted[-1]) + 1
            if wanted[0] == first and self._record_start < base - lo:  # in an earlier chunk
                sampler.take_many([first], self._cut(ends, wanted[:1] - first, data, lo, base))
                wanted = wanted[1:]
            if len(wanted) and not self._hand_ranges(ends, wanted, first, (data, lo, view), base):
                pieces = self._cut(ends, wanted - first, data, lo, base)
                sampler.take_many(wanted.tolist(), pieces)
            if not again:  # a reservoir answered for the whole slice
                break
        self._partial, self._partial_size = [], 0

    def _hand_ranges(
        self,
        ends: _Ends,
        wanted: np.ndarray,
        first: int,
        where: tuple[bytes, int, np.ndarray | None],
        base: int,
    ) -> bool:
        """Hands the wanted records to a uniform sampler past its head as byte ranges of the
        chunk (no ``bytes`` object per record): each ends in this slice and lies wholly in
        the chunk.

        Args:
            where: The chunk's bytes, where the slice starts in them, and the slice's array.
        """
        sampler, (data, lo, view) = self.sampler, where
        if view is None or self._chunk is not data:
            return False
        if not isinstance(sampler, RecordSampler) or sampler.filling:
            return False
        local = wanted - first
        # (one begun in an earlier chunk was handed on alone)
        first_start = self._record_start - base if local[0] == 0 else None
        most = len(view) - min(first_start or 0, 0)
        claim = RangeClaim(ends, local, lo, first_start, most, self._skip_blank_lines)
        return sampler.take_ranges(wanted, data, claim)

    def _skip_blank_lines(self, view: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> None:
        """Moves each record's start past the blank lines before it (what ``lstrip`` does to
        a cut record): a byte at a time for all records at once (a CRLF line end leaves its
        ``\n`` before the next record), then what is left of a longer run record by record."""
        last = len(view) - 1
        for _ in range(_BLANK_ROUNDS + 1):
            blank = self._is_blank[view[np.minimum(starts, last)]] & (starts < stops)
            if not blank.any():
                return
            if _ < _BLANK_ROUNDS:
                starts[blank] += 1
        for at in np.flatnonzero(blank).tolist():
            start, stop = int(starts[at]), int(stops[at])
            starts[at] = stop - len(view[start:stop].tobytes().lstrip(self._blank))

    def _cut(
        self, ends: _Ends, local: np.ndarray, data: bytes, lo: int, base: int
    ) -> list[bytes | None]:
        """The bytes of the records that end at the ``local``-th ends of the slice (ascending):
        a record after the slice's first lies wholly in it, from the end before it; the first
        may have begun in an earlier slice."""
        count = len(local)
        found = ends.locate(np.concatenate((local, np.maximum(local - 1, 0)))).tolist()
        blank = self._blank
        pieces: list[bytes | None] = [
            data[lo + before + 1 : lo + position].lstrip(blank)
            for position, before in zip(found[:count], found[count:], strict=True)
        ]
        if local[0] == 0:
            pieces[0] = self._piece(data, lo, base, self._record_start, base + found[0])
        return pieces

    def _piece(self, data: bytes, lo: int, base: int, start: int, end: int) -> bytes | None:
        """The bytes of one record, its line end excluded (and the blank lines before it: line
        ends, and for JSON lines the whitespace they may hold)."""
        if start >= base:
            piece = data[lo + start - base : lo + end - base]
        elif self._partial_size < 0 or self._partial_start != start:
            return None  # the record outgrew the sampler's limit
        else:
            piece = b"".join(self._partial) + data[lo : lo + end - base]
        return piece.lstrip(self._blank)

    def _keep_partial(self, data: bytes, lo: int, hi: int, base: int) -> None:
        """Keeps the bytes of the record in progress if the sampler will want it."""
        if self._partial_start != self._record_start:
            self._partial, self._partial_size = [], 0
            self._partial_start = self._record_start
        if self.sampler is None or not self.sampler.would_take(self.records):
            self._partial, self._partial_size = [], 0
            return
        start = lo + max(self._record_start - base, 0)
        if self._partial_size < 0 or start >= hi:
            return
        self._partial.append(data[start:hi])
        self._partial_size += hi - start
        if self._partial_size > self.sampler.max_record_bytes:
            self._partial, self._partial_size = [], -1

    # ---- CSV --------------------------------------------------------------------------------

    def _csv_ends(self, data: bytes, view: np.ndarray, lo: int, hi: int) -> tuple[_Ends, int]:
        """The records ending in this slice and the position of its last line end outside
        quotes (-1 if none)."""
        carry = self._carry
        has_quote = data.find(b'"', lo, hi) >= 0
        if carry.pending or (has_quote and data[hi - 1] == QUOTE):
            return self._run_ends(data, view, lo, hi)
        if carry.in_quote and not has_quote:  # the whole slice lies inside a quoted field
            carry.prev_term, carry.last_byte = False, data[hi - 1]
            return _Ends(0), -1
        if not has_quote and not carry.in_quote:
            plain = self._plain_ends(data, view, lo, hi)
            if plain is not None:
                return plain
        terms = _words(view == LF)
        if data.find(b"\r", lo, hi) >= 0:
            terms |= _words(view == CR)
        quoted = None
        if has_quote:
            inside = self._parity_inside(view, terms)
            if inside is None:
                return self._run_ends(data, view, lo, hi)
            quoted, in_quote = inside
            terms &= ~quoted
        else:
            in_quote = False
        ends = _Ends.of_words(terms & ~_before(terms, carry.prev_term))
        if self._checks_fields():
            self._fields_of_words(view, ends, quoted)
        size = hi - lo
        carry.prev_term = bool((int(terms[(size - 1) // 64]) >> ((size - 1) % 64)) & 1)
        carry.in_quote, carry.last_byte = in_quote, data[hi - 1]
        last = _last_set(terms, size) if self.sampler is not None else -1
        return ends, last

    def _plain_ends(
        self, data: bytes, view: np.ndarray, lo: int, hi: int
    ) -> tuple[_Ends, int] | None:
        """The common case at memory speed: a slice with no quote, no ``\r`` and no blank line
        (``None`` otherwise), where every ``\n`` ends a record; positions only on demand."""
        carry = self._carry
        if data.find(b"\r", lo, hi) >= 0 or (carry.prev_term and data[lo] == LF):
            return None
        newlines = _words(self._equal(view, LF))  # packed: the field check and sampler use them
        if (newlines & _before(newlines, False)).any():
            return None
        ends = _Ends.of_words(newlines)
        if self._checks_fields():
            self._fields_of_words(view, ends, None)
        carry.prev_term = data[hi - 1] == LF
        carry.last_byte = data[hi - 1]
        return ends, (data.rfind(b"\n", lo, hi) - lo if ends.count else -1)

    def _equal(self, view: np.ndarray, byte: int) -> np.ndarray:
        """Where the slice holds ``byte``, in a mask reused from slice to slice (a fresh one
        costs page faults that take longer than the comparison)."""
        if len(self._mask) < len(view):
            self._mask = np.empty(len(view), dtype=bool)
        return np.equal(view, byte, out=self._mask[: len(view)])

    def _checks_fields(self) -> bool:
        return self.fields is not None and not self.fields.done

    def _fields_of_words(self, view: np.ndarray, ends: _Ends, inside: np.ndarray | None) -> None:
        """Checks the field counts of the records ending in a slice, given as packed words
        (``inside``: the bytes inside quoted fields, if any)."""
        commas = _words(self._equal(view, COMMA))
        if inside is not None:
            commas &= ~inside
        assert self.fields is not None
        words, per_word = _packed(ends)
        self.fields.words(commas, words, self.records, per_word)

    def _parity_inside(self, view: np.ndarray, terms: np.ndarray) -> tuple[np.ndarray, bool] | None:
        """Which bytes lie inside quoted fields, by the parity of the quotes before them, if
        every quote of the slice opens a field at its start, closes it before a delimiter, a
        line end or a quote, or is half of a ``""`` pair; ``None`` otherwise (a literal quote:
        the slice is scanned run by run)."""
        carry = self._carry
        quotes = _words(view == QUOTE)
        inside, in_quote = _inside(quotes, carry.in_quote)
        starts = _words(view == COMMA) | terms
        start_before = carry.last_byte in (COMMA, LF, CR, -1)
        opening = quotes & ~inside
        closing = quotes & inside
        bad_open = opening & ~(_before(starts, start_before) | _before(quotes, False))
        bad_close = closing & ~(_after(starts) | _after(quotes))
        if bad_open.any() or bad_close.any():
            return None
        return inside, in_quote

    def _run_ends(self, data: bytes, view: np.ndarray, lo: int, hi: int) -> tuple[_Ends, int]:
        """The general scan: every run of quotes decides its role from where it starts."""
        carry = self._carry
        starts, lengths, opens = self._runs(view, hi - lo)
        state_after = _states(carry.in_quote, lengths, opens)
        term = view == LF
        if data.find(b"\r", lo, hi) >= 0:
            term |= view == CR
        tpos = np.flatnonzero(term)
        inside = _quoted(tpos, starts, state_after, carry.in_quote)
        outside = tpos[~inside]
        adjacent = np.empty(len(outside), dtype=bool)
        if len(outside):
            adjacent[0] = outside[0] == 0 and carry.prev_term
            adjacent[1:] = outside[1:] == outside[:-1] + 1
        ends = outside[~adjacent]
        if self._checks_fields():
            commas = np.flatnonzero(view == COMMA)
            quoted = _quoted(commas, starts, state_after, carry.in_quote)
            assert self.fields is not None
            self.fields.positions(commas[~quoted], ends, self.records)
        carry.in_quote = bool(state_after[-1]) if len(state_after) else carry.in_quote
        carry.prev_term = bool(len(outside)) and int(outside[-1]) == hi - lo - 1
        carry.last_byte = data[hi - 1]
        return _Ends(len(ends), ends), int(outside[-1]) if len(outside) else -1

    def _runs(self, view: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The runs of quotes of the slice that are complete, as (start, length, whether the run
        starts at the start of a field); a run that reaches the end of the slice is held back
        until the next one (or the end of the data) tells its length."""
        carry = self._carry
        quotes = np.flatnonzero(view == QUOTE)
        if len(quotes):
            breaks = np.flatnonzero(np.diff(quotes) != 1) + 1
            starts = quotes[np.concatenate(([0], breaks))]
            ends = quotes[np.concatenate((breaks - 1, [len(quotes) - 1]))] + 1
        else:
            starts = ends = np.empty(0, dtype=np.int64)
        lengths = ends - starts
        previous = np.where(
            starts > 0, view[np.maximum(starts - 1, 0)].astype(np.int16), carry.last_byte
        )
        opens = (previous == COMMA) | (previous == LF) | (previous == CR) | (previous == -1)
        if carry.pending:
            if len(starts) and starts[0] == 0:
                lengths[0] += carry.pending
                opens[0] = carry.pending_opens
            else:
                carry.in_quote = _after_run(carry.in_quote, carry.pending, carry.pending_opens)
            carry.pending = 0
        if len(starts) and ends[-1] == size:
            carry.pending, carry.pending_opens = int(lengths[-1]), bool(opens[-1])
            return starts[:-1], lengths[:-1], opens[:-1]
        return starts, lengths, opens

    # ---- JSON lines -------------------------------------------------------------------------

    def _json_ends(self, data: bytes, view: np.ndarray, lo: int, hi: int) -> tuple[_Ends, int]:
        """Line ends of lines with content, and the last line end of the slice."""
        carry = self._carry
        newlines = np.flatnonzero(view == LF)
        if not len(newlines):
            carry.line_content = carry.line_content or _has_content(data[lo:hi])
            return _Ends(0), -1
        content = _lines_with_content(data, view, newlines, carry.line_content, lo)
        carry.line_content = _has_content(data[lo + int(newlines[-1]) + 1 : hi])
        ends = newlines[content]
        return _Ends(len(ends), ends), int(newlines[-1])


def _quoted(
    positions: np.ndarray, starts: np.ndarray, state_after: np.ndarray, initial: bool
) -> np.ndarray:
    """Whether each byte at ``positions`` lies inside a quoted field, from the state after each
    run of quotes (runs starting at ``starts``) and the state the slice began in."""
    if not len(state_after):
        return np.full(len(positions), initial, dtype=bool)
    before = np.searchsorted(starts, positions)
    after = state_after[np.maximum(before - 1, 0)]
    return np.where(before > 0, after, int(initial)).astype(bool)


def _after_run(in_quote: bool, length: int, opens: bool) -> bool:
    """The quoted state after one run of quotes."""
    odd = length % 2 == 1
    if in_quote or opens:
        return in_quote != odd
    return False


def _states(initial: bool, lengths: np.ndarray, opens: np.ndarray) -> np.ndarray:
    """The quoted state after each run of quotes, for all runs at once.

    Inside a quoted field a run of odd length closes it (``""`` pairs are quotes); outside, a
    run at the start of a field opens one and closes it again when it is of even length, and a
    run elsewhere is literal. So a run at the start of a field or of even length maps the state
    through ``state xor odd``; a run of odd length that is not at a field start resets it to
    "outside". The state after run ``r`` is the parity of the toggles since the last reset.
    """
    if not len(lengths):
        return np.empty(0, dtype=np.int64)
    odd = (lengths & 1).astype(bool)
    toggles = (odd & opens).astype(np.int64)
    resets = odd & ~opens
    index = np.arange(len(lengths))
    last_reset = np.maximum.accumulate(np.where(resets, index, -1))
    counted = np.cumsum(toggles)
    before_reset = np.where(last_reset >= 0, counted[np.maximum(last_reset, 0)], 0)
    base = np.where(last_reset >= 0, 0, int(initial))
    return (base + counted - before_reset) & 1


def _has_content(data: bytes) -> bool:
    return bool(data.strip(b" \t\r"))


def _lines_with_content(
    data: bytes, view: np.ndarray, newlines: np.ndarray, carried: bool, lo: int
) -> np.ndarray:
    """For each line end of the slice, whether its line holds anything but JSON whitespace."""
    content = np.empty(len(newlines), dtype=bool)
    content[0] = carried or _has_content(data[lo : lo + int(newlines[0])])
    if len(newlines) > 1:
        first = view[newlines[:-1] + 1]
        direct = (first != SPACE) & (first != TAB) & (first != CR) & (first != LF)
        content[1:] = direct
        unsure = np.flatnonzero(~direct & (first != LF))
        for index in unsure.tolist():  # lines that start with whitespace: look at each
            line = data[lo + int(newlines[index]) + 1 : lo + int(newlines[index + 1])]
            content[index + 1] = _has_content(line)
    return content


class RecordSampler:
    """The head of a stream and a seeded uniform sample of its records.

    Records are numbered from 0 in stream order; the first ``skip`` (a CSV header) are not
    sampled but kept in :attr:`skipped`. The head is the first records, up to ``size`` of them
    or ``head_bytes`` of record bytes, whichever comes first; after it (unless ``reservoir`` is
    off: then the head is all there is) the sample stays that large and stays uniform
    (Algorithm L: record ``i`` replaces a random member with probability ``len(head) / i``), so
    its memory follows the head's. Records longer than ``max_record_bytes`` are never sampled
    (:attr:`too_long` lists them), and a replacement that would take the sample over
    ``max_sample_bytes`` is skipped.

    Args:
        size: Most records kept (at least 1).
        seed: Seed of the random choices: the same records and seed give the same sample.
        skip: Leading records that are not data (1 for a CSV header).
        head_bytes: Most bytes of records in the head.
        max_record_bytes: Longest record sampled.
        max_sample_bytes: Most bytes the sample holds.
        reservoir: Whether records after the head are sampled.
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        skip: int = 0,
        head_bytes: int = 8 * 1024 * 1024,
        max_record_bytes: int = 8 * 1024 * 1024,
        max_sample_bytes: int = 64 * 1024 * 1024,
        reservoir: bool = True,
    ) -> None:
        self.size = max(int(size), 1)
        self.seed = seed
        self.skip = skip
        self.head_bytes = head_bytes
        self.max_record_bytes = max_record_bytes
        self.max_sample_bytes = max_sample_bytes
        self.reservoir = reservoir
        self.skipped: list[bytes | None] = []
        self.too_long: list[int] = []
        self.filling = True
        self.head_records = 0
        self.head: list[tuple[int, bytes]] = []
        self.head_too_long: list[int] = []
        self._slots: list[tuple[int, bytes]] = []  # the head, while it fills
        self._held = 0
        self._store: SampleStore | None = None  # the sample past the head
        # Records handed over as ranges of the current chunk, copied in at its end.
        self._pending: list[tuple[np.ndarray, np.ndarray, RangeClaim]] = []
        self._pending_data: bytes | None = None
        self._pending_bytes = 0  # of the pending and the previous chunk's records
        # The previous chunk's records (and bytes, and their count), held until this chunk's
        # picks are known: a slot picked again needs no copy of its earlier record.
        self._previous: tuple[list[tuple[np.ndarray, np.ndarray, RangeClaim]], bytes, int]
        self._previous = ([], b"", 0)
        self._next = -1
        self._log_w = 0.0
        self._rng: np.random.Generator | None = None
        # Drawn picks not yet passed: record numbers (ascending) and the slot each replaces.
        self._at = np.empty(0, dtype=np.int64)
        self._slot = np.empty(0, dtype=np.int64)
        self._cursor = 0
        # The picks wanted() last offered: the drawn picks, where they started, the offer.
        self._offered: tuple[np.ndarray, int, np.ndarray] = (self._at, 0, self._at)

    def wants_any(self, first: int, count: int) -> bool:
        """Whether any record numbered ``first`` … ``first + count - 1`` is wanted."""
        if first < self.skip or self.filling:
            return True
        if self._rng is None:
            return False
        self._extend(first + count)
        self._pass(first)
        return self._cursor < len(self._at) and int(self._at[self._cursor]) < first + count

    def would_take(self, index: int) -> bool:
        """Whether record ``index``, still in progress, will be wanted."""
        return self.wants_any(index, 1)

    def wanted(self, first: int, count: int) -> Iterable[int]:
        """The numbers of the wanted records among ``first`` … ``first + count - 1``."""
        if self.filling or first < self.skip:  # the head: at most what it has room for
            room = max(self.skip - first, 0) + self.size - len(self._slots)
            return range(first, first + min(count, room))
        if self._rng is None:
            return ()
        self._extend(first + count)
        self._pass(first)
        end = int(np.searchsorted(self._at, first + count))
        self._offered = (self._at, self._cursor, self._at[self._cursor : end])
        return self._offered[2]

    def _pass(self, index: int) -> None:
        """Drops the picks before record ``index`` (records that were not delivered)."""
        if self._cursor < len(self._at) and self._at[self._cursor] < index:
            self._cursor = int(np.searchsorted(self._at, index))

    def take(self, index: int, piece: bytes | None) -> None:
        """Receives the bytes of a wanted record (``None``: it was too long to keep)."""
        fits = piece is not None and len(piece) <= self.max_record_bytes
        if index < self.skip:
            self.skipped.append(piece if fits else None)
            return
        if not fits:
            self.too_long.append(index)
        if self.filling:
            if fits:
                self._fill(index, piece or b"")
            return
        if self._rng is None:
            return
        self.flush()  # records handed over as ranges came before this one
        self._extend(index + 1)
        self._pass(index)
        if self._cursor >= len(self._at) or int(self._at[self._cursor]) != index:
            return
        slot = int(self._slot[self._cursor])
        self._cursor += 1
        if not fits:
            return
        store = self._store
        assert store is not None and piece is not None
        if self._held - int(store.length[slot]) + len(piece) <= self.max_sample_bytes:
            store.put_pieces(np.array([slot]), np.array([index]), [piece])
            self._held = store.live

    def take_many(self, indices: list[int], pieces: list[bytes | None]) -> None:
        """Receives the bytes of wanted records, in ascending order (as :meth:`take` one by
        one; past the head, in one pass over the picks they answer)."""
        self.flush()
        taken = 0
        while taken < len(indices) and (self.filling or indices[taken] < self.skip):
            if indices[taken] >= self.skip:  # the head: filled in one step while all fit
                filled = self._fill_many(indices, pieces, taken)
                if filled > taken:
                    taken = filled
                    continue
            self.take(indices[taken], pieces[taken])
            taken += 1
        if taken:  # the rest came after the head (all of them: it was still filling)
            indices, pieces = self._picked(indices[taken:], pieces[taken:])
        if not indices:
            return
        if self._rng is None:
            self._take_each(indices, pieces)
            return
        numbers = np.asarray(indices, dtype=np.int64)
        whole = _whole(pieces)
        cursor = self._picks_are(numbers) if whole is not None else -1
        if whole is None or cursor < 0 or not self._fits(_lengths(whole)):
            self._take_each(indices, pieces)
            return
        assert self._store is not None
        self._store.put_pieces(self._slot[cursor : cursor + len(numbers)], numbers, whole)
        self._held, self._cursor = self._store.live, cursor + len(numbers)

    def take_ranges(self, numbers: np.ndarray, data: bytes, claim: RangeClaim) -> bool:
        """Receives the wanted records ``numbers`` (ascending) as byte ranges of ``data``
        (``claim``: where they end, located when the chunk's records are copied), copying
        only those that stay in the sample, when they are exactly the reservoir's next picks,
        none is too long and all of them together keep the sample within
        ``max_sample_bytes`` (so that none would be refused one by one); ``False`` (nothing
        taken) otherwise: hand them to :meth:`take_many`.
        """
        if self.filling or self._rng is None or int(numbers[0]) < self.skip:
            return False
        if self._pending and data is not self._pending_data:
            self.flush()
        most = claim.most_bytes
        if most > self.max_record_bytes or not self._fits_bytes(most):
            # Near a limit: the claim's own lengths decide, against exact pending bytes.
            self._settle(data)
            lengths = claimed_ranges([claim], data, np.ones(len(numbers), dtype=bool))[1]
            if not self._fits(lengths):
                return False
            claim.exact_bytes = most = int(lengths.sum())
        cursor = self._picks_are(numbers)
        if cursor < 0:
            return False
        end = cursor + len(numbers)
        self._pending.append((self._slot[cursor:end], numbers, claim))
        self._pending_data = data
        self._pending_bytes += most
        self._cursor = end
        return True

    def _settle(self, data: bytes) -> None:
        """Copies the previous chunk's records (all of them, as a flush at its end would have)
        and counts the exact bytes of the pending claims (they counted as their slices)."""
        self._copy_previous(drop_picked_again=False)
        for _, numbers, claim in self._pending:
            if claim.exact_bytes is None:
                keep = np.ones(len(numbers), dtype=bool)
                claim.exact_bytes = int(claimed_ranges([claim], data, keep)[1].sum())
                self._pending_bytes += claim.exact_bytes - claim.most_bytes

    def flush(self) -> None:
        """Copies the records handed over as byte ranges into the sample (every way in but
        :meth:`take_ranges` calls it first, so records arrive in order): the previous chunk's,
        then the pending ones."""
        self._copy_previous(drop_picked_again=True)
        if self._pending:
            assert self._pending_data is not None
            self._put(self._pending, self._pending_data, [])
        self._pending, self._pending_data, self._pending_bytes = [], None, 0

    def end_chunk(self) -> None:
        """The scanner's chunk ends: the previous chunk's records are copied, but those whose
        slots this chunk picked again (they would be replaced at once); this chunk's are held
        (with its bytes) until the next chunk's picks are known."""
        self._copy_previous(drop_picked_again=True)
        if self._pending:
            assert self._pending_data is not None
            self._previous = (self._pending, self._pending_data, self._pending_bytes)
            self._pending, self._pending_data = [], None

    def _copy_previous(self, drop_picked_again: bool) -> None:
        entries, data, size = self._previous
        if not entries:
            return
        self._previous = ([], b"", 0)
        later = [slots for slots, _, _ in self._pending] if drop_picked_again else []
        self._put(entries, data, later)
        self._pending_bytes -= size

    def _put(
        self,
        entries: list[tuple[np.ndarray, np.ndarray, RangeClaim]],
        data: bytes,
        later: list[np.ndarray],
    ) -> None:
        """Locates and copies the last record picked for each slot of ``entries``, but for
        slots the ``later`` picks take again."""
        assert self._store is not None
        slots = np.concatenate([slots for slots, _, _ in entries])
        numbers = np.concatenate([numbers for _, numbers, _ in entries])
        keep = np.zeros(len(slots), dtype=bool)
        keep[last_of_each(slots)] = True
        if later:
            again = np.zeros(len(self._slots), dtype=bool)
            again[np.concatenate(later)] = True
            keep &= ~again[slots]
        if keep.any():
            claims = [claim for _, _, claim in entries]
            starts, lengths = claimed_ranges(claims, data, keep)
            self._store.put_distinct(slots[keep], numbers[keep], data, starts, lengths)
        self._held = self._store.live

    def _picks_are(self, numbers: np.ndarray) -> int:
        """Where the picks ``numbers`` (ascending) start among the drawn ones, or -1 if they
        are not exactly the next picks."""
        drawn, cursor, offered = self._offered
        if numbers is offered and drawn is self._at and cursor == self._cursor:
            return cursor  # handed back as wanted() offered them
        self._extend(int(numbers[-1]) + 1)
        self._pass(int(numbers[0]))
        cursor = self._cursor
        if not np.array_equal(self._at[cursor : cursor + len(numbers)], numbers):
            return -1
        return cursor

    def _fits_bytes(self, most: int) -> bool:
        """Whether ``most`` more bytes keep the sample within its byte limit even if nothing
        they replace were given back."""
        return self._held + self._pending_bytes + most <= self.max_sample_bytes

    def _fits(self, lengths: np.ndarray) -> bool:
        """Whether records of these lengths may all replace members (none too long, the
        sample within its byte limit even if nothing they replace were given back)."""
        held = self._held + self._pending_bytes
        return (
            int(lengths.max()) <= self.max_record_bytes
            and held + int(lengths.sum()) <= self.max_sample_bytes
        )

    def _take_each(self, indices: list[int], pieces: list[bytes | None]) -> None:
        for index, piece in zip(indices, pieces, strict=True):
            self.take(index, piece)

    def _picked(
        self, indices: list[int], pieces: list[bytes | None]
    ) -> tuple[list[int], list[bytes | None]]:
        """Of records handed over after the head filled, the reservoir's picks, when every
        other one fits (:meth:`take` would only pass it); else all of them, taken one by one."""
        if self._rng is None or not indices:
            return indices, pieces
        whole = _whole(pieces)
        if whole is None or int(_lengths(whole).max()) > self.max_record_bytes:
            return indices, pieces
        self._extend(indices[-1] + 1)
        self._pass(indices[0])
        chosen = np.flatnonzero(np.isin(np.asarray(indices), self._at[self._cursor :])).tolist()
        return [indices[at] for at in chosen], [pieces[at] for at in chosen]

    def _fill_many(self, indices: list[int], pieces: list[bytes | None], taken: int) -> int:
        """Puts the records from ``taken`` on in the head at once, as :meth:`take` would one
        by one (up to the record that fills it), when none is missing or too long; returns
        where the records left start (``taken``: nothing was put)."""
        whole = _whole(pieces[taken:])
        if not whole:
            return taken
        lengths = _lengths(whole)
        if int(lengths.max()) > self.max_record_bytes:
            return taken
        held = self._held + np.cumsum(lengths)
        full = int(np.searchsorted(held, self.head_bytes))  # the first to reach head_bytes
        last = min(self.size - len(self._slots) - 1, full, len(whole) - 1)
        end = taken + last + 1
        self._slots.extend(zip(indices[taken:end], whole[: last + 1], strict=True))
        self._held = int(held[last])
        if len(self._slots) >= self.size or self._held >= self.head_bytes:
            self._end_head(indices[end - 1])
        return end

    def _fill(self, index: int, piece: bytes) -> None:
        self._slots.append((index, piece))
        self._held += len(piece)
        if len(self._slots) >= self.size or self._held >= self.head_bytes:
            self._end_head(index)

    def _end_head(self, last: int) -> None:
        """Ends the head at record ``last``: later records replace sampled ones (if wanted)."""
        self.filling = False
        self.head_records = len(self._slots)
        self.head = list(self._slots)  # the first records, before any is replaced
        self.head_too_long = list(self.too_long)
        if not self.reservoir:
            return
        self._store = SampleStore(self._slots)
        self._rng = np.random.default_rng(self.seed)
        self._log_w = math.log(max(self._rng.random(), _TINY)) / len(self._slots)
        self._next = last

    def _extend(self, until: int) -> None:
        """Draws picks (record number, slot) until one lies at or past ``until``, and about as
        many again ahead (to ``2 * until``), several batches at a time."""
        if self._rng is None or self._next >= until:
            return
        found_at, found_slot = [self._at[self._cursor :]], [self._slot[self._cursor :]]
        while self._next < until:
            picks, slots = self._draw(_batches_to(self._next, 2 * until, len(self._slots)))
            found_at.append(picks)
            found_slot.append(slots)
        self._at, self._slot = np.concatenate(found_at), np.concatenate(found_slot)
        self._cursor = 0

    def _draw(self, batches: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``batches`` batches of Algorithm L's picks, each of :data:`_BATCH`: the
        random numbers drawn batch by batch in the same order, the arithmetic done for all
        batches at once row by row (the same operations on the same numbers, so the same
        picks as drawing one batch at a time; only the running weight is carried across
        rows, in Python, as it was across calls)."""
        rng, size = self._rng, len(self._slots)
        assert rng is not None
        skips_u = np.empty((batches, _BATCH))
        weights_u = np.empty((batches, _BATCH))
        slots = np.empty((batches, _BATCH), dtype=np.int64)
        for row in range(batches):
            rng.random(out=skips_u[row])
            rng.random(out=weights_u[row])
            slots[row] = rng.integers(0, size, _BATCH)
        steps = np.log(np.maximum(weights_u, _TINY)) / size
        within = np.cumsum(steps, axis=1)  # each row's running sum, as the row alone gives
        log_w = np.zeros((batches, _BATCH))
        log_w[:, 1:] = within[:, :-1]
        carry = self._log_w
        for row in range(batches):  # a row starts where the previous one's weight ended
            log_w[row] += carry
            carry = float(log_w[row, -1] + steps[row, -1])
        self._log_w = carry
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            gaps = np.floor(np.log(np.maximum(skips_u, _TINY)) / np.log1p(-np.exp(log_w)))
        gaps = np.clip(np.nan_to_num(gaps, nan=_FAR, posinf=_FAR), 0, _FAR).astype(np.int64)
        picks = self._next + np.cumsum(gaps.ravel() + 1)
        self._next = int(picks[-1])
        return picks, slots.ravel()

    def sample(self) -> list[tuple[int, bytes]]:
        """The sampled records (number, bytes) in stream order."""
        self.flush()
        return self._store.records() if self._store is not None else sorted(self._slots)

    def sample_columns(self) -> tuple[list[int], list[bytes]]:
        """The sampled records' numbers and bytes, in stream order (:meth:`sample` as two
        lists, without a tuple per record)."""
        self.flush()
        if self._store is not None:
            return self._store.columns()
        ordered = sorted(self._slots)
        return [number for number, _ in ordered], [piece for _, piece in ordered]

    @property
    def complete(self) -> bool:
        """Whether the sample holds every data record (the head never filled up)."""
        return self.filling and not self.too_long


class HeadView:
    """The head a non-reservoir sampler of ``size`` records would hold, read from a uniform
    sampler with the same byte limits and at least that many records (its head is the same
    first records, kept when its reservoir starts replacing them): one sampler in the scan
    serves the schema's head and the uniform sample.

    Args:
        sampler: The uniform sampler.
        size: Records in the head (at most ``sampler.size``).
    """

    def __init__(self, sampler: RecordSampler, size: int) -> None:
        self._sampler = sampler
        self.size = size

    @property
    def skipped(self) -> list[bytes | None]:
        """The leading records that are not data."""
        return self._sampler.skipped

    def _slots(self) -> list[tuple[int, bytes]]:
        sampler = self._sampler
        return sampler._slots if sampler.filling else sampler.head

    def sample(self) -> list[tuple[int, bytes]]:
        """The head records (number, bytes) in stream order."""
        slots = self._slots()  # filled in stream order: already sorted
        return slots[: self.size]

    @property
    def too_long(self) -> list[int]:
        """Records of the head that were too long to keep."""
        sampler = self._sampler
        found = sampler.too_long if sampler.filling else sampler.head_too_long
        slots = self._slots()
        last = slots[self.size - 1][0] if len(slots) >= self.size else None
        return [index for index in found if last is None or index < last]

    @property
    def complete(self) -> bool:
        """Whether the head holds every data record."""
        sampler = self._sampler
        return sampler.filling and not sampler.too_long and len(sampler._slots) < self.size


class TeeSampler:
    """Two samplers fed from one scan: each receives the records it asks for.

    The scanner sees one sampler; this one wants what either wants and hands each record to
    the samplers that wanted it (a record too long for one of them reaches it as ``None``, as
    it would alone). So the schema's head and a uniform sample are drawn in the same pass.

    Args:
        first: One sampler.
        second: The other.
    """

    def __init__(self, first: RecordSampler, second: RecordSampler) -> None:
        self.parts = (first, second)
        self.max_record_bytes = max(first.max_record_bytes, second.max_record_bytes)
        self._asked: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * 2
        self._cursors = [0, 0]

    def wants_any(self, first: int, count: int) -> bool:
        """Whether either sampler wants a record numbered ``first`` … ``first + count - 1``."""
        return any(part.wants_any(first, count) for part in self.parts)

    def would_take(self, index: int) -> bool:
        """Whether either sampler will want record ``index``, still in progress."""
        return any(part.would_take(index) for part in self.parts)

    def wanted(self, first: int, count: int) -> np.ndarray:
        """The numbers either sampler wants among ``first`` … ``first + count - 1``."""
        asked = [_as_numbers(part.wanted(first, count)) for part in self.parts]
        self._asked, self._cursors = asked, [0, 0]
        return np.union1d(asked[0], asked[1])

    def take_many(self, indices: list[int], pieces: list[bytes | None]) -> None:
        """Hands records' bytes (ascending) to the samplers that asked for them."""
        for index, piece in zip(indices, pieces, strict=True):
            self.take(index, piece)

    def take(self, index: int, piece: bytes | None) -> None:
        """Hands a record's bytes to the samplers that asked for it."""
        for which, part in enumerate(self.parts):
            asked, cursor = self._asked[which], self._cursors[which]
            if cursor < len(asked) and int(asked[cursor]) == index:
                self._cursors[which] = cursor + 1
                fits = piece is not None and len(piece) <= part.max_record_bytes
                part.take(index, piece if fits else None)


_BLANK_ROUNDS = 3  # blank bytes before a record skipped for all records at once
_TINY = 1e-300
_FAR = 2**40  # a gap of a trillion records: no later record is picked
_BATCH = 1024
_MOST_BATCHES = 32


def _batches_to(start: int, target: int, size: int) -> int:
    """About how many batches of Algorithm L's picks take a sample of ``size`` from record
    ``start`` to record ``target`` (``size · ln(target / start)`` picks), at least 1."""
    expected = size * math.log(max(target, 1) / max(start, 1, size))
    return min(max(math.ceil(expected / _BATCH), 1), _MOST_BATCHES)


__all__ = ["HeadView", "RecordSampler", "RecordScanner", "TeeSampler"]
