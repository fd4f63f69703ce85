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
        self.value: np.ndarray = np.empty(size, dtype=wide)
        self.need = np.empty(size, dtype=np.uint8)
        self.delimiters = np.empty(size, dtype=np.uint8)
        self.per_e = np.empty(0, dtype=np.uint8)  # the set bits of each word of the ends
        self.count = np.empty(size, dtype=np.uint8)
        self.below = np.empty(size, dtype=_UNIT)
        self.mask = np.empty(size, dtype=_UNIT)
        self.rest = np.empty(size, dtype=_UNIT)
        self.off = np.empty(size, dtype=bool)
        self.more = np.empty(size, dtype=bool)


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

    def words(
        self, delimiters: np.ndarray, ends: np.ndarray, first: int, ends_per_word: np.ndarray
    ) -> None:
        """Checks a slice given as packed words (bit ``i`` of word ``w``: byte ``64 * w + i``).

        Args:
            delimiters: Delimiters outside quoted fields.
            ends: Record ends (one bit per record, blank lines excluded).
            first: The number of the first record ending in the slice (0: the header).
            ends_per_word: The set bits of each 64-bit word of ``ends`` (the scanner
                counts them for its own use: ``np.bitwise_count``).
        """
        if self.expected is None:  # the header ends here (or later): count it exactly
            self.positions(_positions(delimiters), _positions(ends), first)
            return
        opened, k = self.open, self.expected
        units_d, units_e = delimiters.view(_UNIT), ends.view(_UNIT)
        if not len(units_e):
            return
        bound = abs(opened) + (k + 1) * _UNIT_BITS * len(units_e)
        work = self._work(len(units_e), np.int64 if bound >= 2**31 else np.int32)
        step, start = work.step, work.start
        per_e = work.per_e = ends_per_word
        np.multiply(per_e, k, out=step, dtype=work.wide)
        np.subtract(np.bitwise_count(units_d, out=work.delimiters), step, out=step)
        # S at each unit's start: the steps before it, from the open record's delimiters.
        step[0] += opened
        start[0] = opened
        np.cumsum(step[:-1], out=start[1:], dtype=work.wide)
        last = int(step[-1]) if len(step) > 1 else int(step[0]) - opened
        self.open = int(start[-1]) + last
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
        (each round over all units: cheaper than listing the units that have one more).

        ``S`` at a unit's start lies in ``0 … k`` while every record so far was right (it is
        the delimiters of a record in progress), else a record is wrong (the exact check
        finds which). Then the ``r``-th end of a unit (from 0) is right when the delimiters
        below it in the unit are ``k·(r+1) − S``, which fits a byte for small ``k``; ends
        and delimiters never share a byte, so ``d & (e − 1)`` holds exactly the delimiters
        below the lowest end. While every unit has one more end no round needs a mask of
        the units that do."""
        per_e, start = work.per_e, work.start
        rounds, unmasked = int(per_e.max()), int(per_e.min())
        if not rounds:
            return True
        if int(start.min()) < 0 or int(start.max()) > k:
            return False
        need = work.need if k * rounds < 256 else work.value
        np.subtract(k, start, out=need, casting="unsafe")
        rest, below, count = units_e, work.below, work.count
        for index in range(rounds):
            np.subtract(rest, 1, out=below)  # each unit's lowest end cleared, the bits below set
            np.bitwise_count(np.bitwise_and(units_d, below, out=work.mask), out=count)
            off = np.not_equal(count, need, out=work.off)
            if index >= unmasked:  # only the units that have this end
                np.logical_and(off, np.greater(per_e, index, out=work.more), out=off)
            if off.any():
                return False
            if index + 1 < rounds:  # the next end becomes the lowest
                need += k
                rest = np.bitwise_and(rest, below, out=work.rest)
        return True

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
