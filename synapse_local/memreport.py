"""The Python memory a running local stack holds, reported on request (for
``bench/bench_local_stack.py``).

The resident set size of a process says little about a few hundred operations: the allocator
keeps and reuses freed pages, so RSS moves in steps of megabytes whatever the operations
retain. With ``SYNAPSE_LOCAL_MEMORY_REPORT`` set to a file path, each ``SIGUSR1`` makes the stack
collect garbage and write ``<sequence> <bytes>`` to that file (atomically): the bytes Python
allocations hold, traced by :mod:`tracemalloc` from the first signal on (so tracing costs
nothing before a measurement starts). Off unless the variable is set.
"""

from __future__ import annotations

import gc
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

ENV = "SYNAPSE_LOCAL_MEMORY_REPORT"


def install(path: str | None = None, quiet: Any = None) -> bool:
    """Reports to ``path`` (default: ``SYNAPSE_LOCAL_MEMORY_REPORT``) on ``SIGUSR1``; returns
    whether it was installed (main thread only, as every signal handler).

    Args:
        path: The report file.
        quiet: A lock held while the stack builds something it then drops (the persistence
            snapshot, whose texts would count as held): a report waits for it (30 s at most).
    """
    target = path if path is not None else os.environ.get(ENV, "")
    if not target:
        return False
    sequence = [0]
    previous: list[tracemalloc.Snapshot] = []

    def report(signum: int, frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(1)
        waited = quiet is not None and quiet.acquire(timeout=30)
        try:
            gc.collect()
            sequence[0] += 1
            snapshot = tracemalloc.take_snapshot()
            traced = tracemalloc.get_traced_memory()[0]
        finally:
            if waited:
                quiet.release()
        grown = _largest_growth(snapshot, previous[0]) if previous else []
        previous[:] = [snapshot]
        write(target, sequence[0], traced, grown)

    signal.signal(signal.SIGUSR1, report)
    return True


def _largest_growth(now: tracemalloc.Snapshot, before: tracemalloc.Snapshot) -> list[str]:
    """The source lines whose allocations grew most since ``before`` (where to look)."""
    return [
        f"{stat.size_diff} {stat.traceback[0].filename}:{stat.traceback[0].lineno}"
        for stat in now.compare_to(before, "lineno")[:5]
        if stat.size_diff > 0
    ]


def write(target: str, sequence: int, traced: int, grown: list[str] | None = None) -> None:
    """Writes one report (its first line ``<sequence> <bytes>``, then where memory grew most
    since the last report) so that a reader never sees half of it."""
    temporary = f"{target}.tmp"
    lines = [f"{sequence} {traced}", *(grown or [])]
    Path(temporary).write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temporary, target)


def read(target: str) -> tuple[int, int] | None:
    """The last report (sequence, traced bytes), or ``None`` before the first."""
    try:
        sequence, traced = Path(target).read_text(encoding="utf-8").splitlines()[0].split()
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return int(sequence), int(traced)


def growth(target: str) -> list[str]:
    """Where memory grew most before the last report (``<bytes> <file>:<line>``)."""
    try:
        return Path(target).read_text(encoding="utf-8").splitlines()[1:]
    except FileNotFoundError:
        return []
