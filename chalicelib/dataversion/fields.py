"""The field count of every CSV record, checked in the record scan's pass.

A record's fields are its delimiters outside quoted fields plus one (what :mod:`csv` reads: a
``,`` inside quotes, or a quoted line end, is part of a field). Every record must have as many
as the header; the first that does not is kept, to be refused with its number.

The scanner hands over each slice's delimiters outside quotes and the ends of its records
(blank lines are no records), as packed bit words when it has them. The check then needs no
record positions: over 64-byte units, the running sum ``S`` of ``+1`` per delimiter and
``-k`` per record end (``k``: the header's delimiters) must be exactly ``k`` just before every
record end (``S`` is the delimiters of the record in progress while every record so far was
right). ``S`` at each unit's start comes from a cumulative sum of the units' delimiter and end
counts, and the delimiters before a unit's end from one masked popcount; a round checks the
first end of every unit, the next round the second (records shorter than 64 bytes), and so
on. The arrays are reused from slice to slice. Record positions are listed only to name a
record that is wrong (or in the slice where the header ends).
"""

from __future__ import annotations

import numpy as np

_UNIT = np.uint64  # the scanner's packed words: 64 bytes a unit
_UNIT_BITS = np.dtype(_UNIT).itemsize * 8


def _positions(words: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))


class _Work:
    """Arrays the unit check reuses from slice to slice (fresh ones cost page faults that
    took longer than the arithmetic)."""

    def __init__(self, size: int, wide: type) -> None:
        self.wide = wide
        self.step: np.ndarray = np.empty(size, dtype=wide)
        self.start: np.ndarray = np.empty(size, dtype=wide)
        self.count = np.empty(size, dtype=np.uint8)
        self.low = np.empty(size, dtype=_UNIT)
        self.small = np.empty(size, dtype=_UNIT)
        self.flags = np.empty(size, dtype=bool)
        self.spare = np.empty(size, dtype=bool)
        self.rest = np.empty(size, dtype=_UNIT)


class FieldCheck:
    """The fields of every CSV record against the header's, slice by slice."""

    def __init__(self) -> None:
        self.expected: int | None = None  # the header's delimiters
        self.open = 0  # delimiters of the record in progress
        self.bad: tuple[int, int] | None = None  # (record number, its fields), the first wrong
        self._scratch: _Work | None = None

    @property
    def done(self) -> bool:
        """Whether a wrong record was found (later slices need no check)."""
        return self.bad is not None

    def words(self, delimiters: np.ndarray, ends: np.ndarray, first: int) -> None:
        """Checks a slice given as packed words (bit ``i`` of word ``w``: byte ``64 * w + i``).

        Args:
            delimiters: Delimiters outside quoted fields.
            ends: Record ends (one bit per record, blank lines excluded).
            first: The number of the first record ending in the slice (0: the header).
        """
        if self.expected is None:  # the header ends here (or later): count it exactly
            self.positions(_positions(delimiters), _positions(ends), first)
            return
        opened, k = self.open, self.expected
        units_d, units_e = delimiters.view(_UNIT), ends.view(_UNIT)
        bound = abs(opened) + (k + 1) * _UNIT_BITS * len(units_e)
        work = self._work(len(units_e), np.int64 if bound >= 2**31 else np.int32)
        step, start, count = work.step, work.start, work.count
        np.copyto(step, np.bitwise_count(units_d, out=count))
        ends_k = np.multiply(np.bitwise_count(units_e, out=count), k, out=start, dtype=work.wide)
        np.subtract(step, ends_k, out=step)
        np.cumsum(step, out=start)
        self.open = opened + int(start[-1]) if len(start) else opened
        np.subtract(start, step, out=start)
        if opened:
            start += opened
        if not self._units_right(units_d, units_e, work, k):
            self.open = opened
            self.positions(_positions(delimiters), _positions(ends), first)

    def _work(self, size: int, wide: type) -> _Work:
        if self._scratch is None or len(self._scratch.step) != size or self._scratch.wide != wide:
            self._scratch = _Work(size, wide)
        return self._scratch

    @staticmethod
    def _units_right(units_d: np.ndarray, units_e: np.ndarray, work: _Work, k: int) -> bool:
        """Whether ``S`` is ``k`` before every end (``work.start``: ``S`` at each unit's
        start), a round per end of a unit: the first ends of all units, then the second, …
        (each round over all units: cheaper than listing the units that have one more)."""
        rest, low, below, count, wrong = work.rest, work.low, work.small, work.count, work.flags
        np.copyto(rest, units_e)
        wrong[:] = False
        for index in range(_UNIT_BITS):
            np.bitwise_and(rest, np.negative(rest, out=low), out=low)  # each unit's next end
            np.bitwise_and(units_d, np.subtract(low, 1, out=below), out=below)
            np.add(work.start, np.bitwise_count(below, out=count), out=work.step)
            if index:
                work.step -= k * index
            off = np.not_equal(work.step, k, out=work.spare)
            np.logical_or(wrong, np.logical_and(off, low, out=off), out=wrong)  # where an end
            if not np.bitwise_xor(rest, low, out=rest).any():
                break
        return not wrong.any()

    def positions(self, delimiters: np.ndarray, ends: np.ndarray, first: int) -> None:
        """Checks a slice given as the ascending positions of its delimiters outside quotes
        and of its record ends (see :meth:`words`)."""
        if not len(ends):
            self.open += len(delimiters)
            return
        before = np.searchsorted(delimiters, ends)
        per_record = np.diff(before, prepend=0)
        per_record[0] += self.open
        if self.expected is None:
            self.expected = int(per_record[0])
        wrong = np.flatnonzero(per_record != self.expected)
        if len(wrong):
            self.bad = (first + int(wrong[0]), int(per_record[wrong[0]]) + 1)
        self.open = len(delimiters) - int(before[-1])

    def finish(self, last: int | None) -> None:
        """Ends the stream; ``last`` is the number of a last record without a line end."""
        if last is not None and not self.done:
            self.positions(np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64), last)


__all__ = ["FieldCheck"]
