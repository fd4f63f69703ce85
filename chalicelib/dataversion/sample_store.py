"""The bytes of a reservoir sample, kept as ranges of a few buffers instead of one object each.

Past its head, a :class:`~chalicelib.dataversion.records.RecordSampler` replaces members of its
sample about ``k·ln(N/k)`` times over ``N`` records (70,000 times for 10,000 of 2.5 million).
Cut one by one, each replacement cost a ``bytes`` object, a tuple and a list store in Python,
which was most of what profiles added to the ingest pass. Here the records that replace members
in one chunk of the stream are joined into one buffer, and each member is a
(buffer, offset, length) in three arrays; a member replaced twice in the same batch keeps its
last record. Buffers no member points into are dropped when the dead bytes outgrow the live
ones (and 8 MiB), so the memory stays bounded by about twice the sample's.
"""

from __future__ import annotations

import numpy as np

MIN_GARBAGE_BYTES = 8 * 1024 * 1024


class SampleStore:
    """Numbered records in ``size`` slots, each slot's bytes a range of a shared buffer.

    Args:
        records: The initial members (record number, bytes), one per slot.
    """

    def __init__(self, records: list[tuple[int, bytes]]) -> None:
        self._buffers: list[bytes] = []
        self.index = np.zeros(len(records), dtype=np.int64)
        self.length = np.zeros(len(records), dtype=np.int64)
        self._offset = np.zeros(len(records), dtype=np.int64)
        self._buffer = np.zeros(len(records), dtype=np.int64)
        self._stored = 0
        self.live = 0
        self._load(records)

    def _load(self, records: list[tuple[int, bytes]]) -> None:
        pieces = [piece for _, piece in records]
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        self.index[:] = [number for number, _ in records]
        self.length[:] = lengths
        self._offset[:] = np.cumsum(lengths) - lengths
        self._buffer[:] = 0
        self._buffers = [b"".join(pieces)]
        self._stored = self.live = int(lengths.sum())

    def put_pieces(self, slots: np.ndarray, numbers: np.ndarray, pieces: list[bytes]) -> None:
        """Puts records in slots, in order (a slot named twice keeps the later record)."""
        keep = last_of_each(slots)
        chosen = [pieces[at] for at in keep.tolist()]
        lengths = np.fromiter(map(len, chosen), dtype=np.int64, count=len(chosen))
        self._add(slots[keep], numbers[keep], b"".join(chosen), lengths)

    def put_distinct(
        self,
        slots: np.ndarray,
        numbers: np.ndarray,
        data: bytes,
        starts: np.ndarray,
        lengths: np.ndarray,
    ) -> None:
        """Puts the records ``data[starts[i] : starts[i] + lengths[i]]`` in ``slots[i]``, each
        slot named once."""
        # Slicing and joining beats a numpy gather here (an index per byte is 8 bytes), and
        # slices of a memoryview (no copy each, one copy by join) beat slices of the bytes.
        view = memoryview(data)
        blob = b"".join(
            [
                view[start:stop]
                for start, stop in zip(starts.tolist(), (starts + lengths).tolist(), strict=True)
            ]
        )
        self._add(slots, numbers, blob, lengths)

    def _add(
        self, slots: np.ndarray, numbers: np.ndarray, blob: bytes, lengths: np.ndarray
    ) -> None:
        self.live += int(lengths.sum() - self.length[slots].sum())
        self.index[slots] = numbers
        self.length[slots] = lengths
        self._offset[slots] = np.cumsum(lengths) - lengths
        self._buffer[slots] = len(self._buffers)
        self._buffers.append(blob)
        self._stored += len(blob)
        if self._stored - self.live > max(self.live, MIN_GARBAGE_BYTES):
            self._load(self._members(slice(None)))  # slot by slot: slots keep their members

    def records(self) -> list[tuple[int, bytes]]:
        """The members (record number, bytes) in record order."""
        return self._members(np.argsort(self.index, kind="stable"))

    def columns(self) -> tuple[list[int], list[bytes]]:
        """The members' record numbers and bytes, in record order."""
        order = np.argsort(self.index, kind="stable")
        buffers = self._buffers
        pieces = [
            buffers[buffer][offset:stop]
            for buffer, offset, stop in zip(
                self._buffer[order].tolist(),
                self._offset[order].tolist(),
                (self._offset[order] + self.length[order]).tolist(),
                strict=True,
            )
        ]
        return self.index[order].tolist(), pieces

    def _members(self, order: np.ndarray | slice) -> list[tuple[int, bytes]]:
        buffers = self._buffers
        return [
            (number, buffers[buffer][offset : offset + length])
            for number, buffer, offset, length in zip(
                self.index[order].tolist(),
                self._buffer[order].tolist(),
                self._offset[order].tolist(),
                self.length[order].tolist(),
                strict=True,
            )
        ]


def last_of_each(slots: np.ndarray) -> np.ndarray:
    """The positions in ``slots`` of the last occurrence of each slot named, by slot (the
    largest position naming each slot, kept by ``maximum.at``: no sort)."""
    if not len(slots):
        return np.empty(0, dtype=np.int64)
    last = np.full(int(slots.max()) + 1, -1, dtype=np.int64)
    np.maximum.at(last, slots, np.arange(len(slots), dtype=np.int64))
    return last[last >= 0]


__all__ = ["SampleStore", "last_of_each"]
