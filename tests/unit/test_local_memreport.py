"""The local stack's memory report (``synapse_local.memreport``, read by the local stack bench):
on SIGUSR1 it writes the Python memory held, traced from the first signal on, and where it grew.

Oracle: an allocation this test makes and keeps (a known number of bytes) between two reports.
"""

from __future__ import annotations

import os
import signal
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from synapse_local import memreport


@pytest.fixture
def restored() -> Iterator[None]:
    handler = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, handler)
    tracemalloc.stop()


def test_a_report_counts_what_was_kept_since_the_last_and_names_where(
    tmp_path: Path, restored: None
) -> None:
    target = str(tmp_path / "memory.txt")
    assert memreport.read(target) is None
    assert memreport.install(target, quiet=threading.Lock())
    os.kill(os.getpid(), signal.SIGUSR1)
    first = memreport.read(target)
    assert first is not None and first[0] == 1
    kept = [bytearray(4 * 2**20)]  # 4 MiB held across the next report
    os.kill(os.getpid(), signal.SIGUSR1)
    second = memreport.read(target)
    assert second is not None and second[0] == 2
    assert 4 * 2**20 <= second[1] - first[1] < 5 * 2**20
    assert memreport.growth(target)[0].split()[1].startswith(f"{__file__}:")
    assert len(kept[0]) == 4 * 2**20


def test_without_a_report_file_nothing_is_installed(
    monkeypatch: pytest.MonkeyPatch, restored: None
) -> None:
    monkeypatch.delenv(memreport.ENV, raising=False)
    assert memreport.install() is False
    assert memreport.growth("/nonexistent/memory.txt") == []
