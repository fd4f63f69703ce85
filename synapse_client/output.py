"""What the CLI prints: human tables, JSON for scripts, and progress on stderr.

Progress goes to stderr so that ``--json`` output on stdout stays parseable. On a terminal a
bar is redrawn in place; elsewhere (CI logs, pipes) a line is printed at every 10% step.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def dumps(data: Any) -> str:
    """Indented JSON (what ``--json`` prints)."""
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned text table with a header (``-`` for missing values)."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    header = [column.upper() for column in columns]
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]  # fmt: skip
    return "\n".join(lines)


def pairs(data: dict[str, Any], keys: Sequence[str]) -> str:
    """``key: value`` lines for the given keys."""
    width = max(len(k) for k in keys)
    return "\n".join(f"{k.ljust(width)}  {_cell(data.get(k))}" for k in keys)


def human_bytes(count: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # pragma: no cover - the loop always returns


class ProgressBar:
    """A byte or step progress display on ``stream`` (stderr by default).

    Args:
        stream: Where to draw.
        enabled: ``False`` draws nothing (``--quiet``).
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._phase = ""
        self._step = -1
        self._started = time.monotonic()
        self.lines = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        """Reports ``done`` of ``total`` in ``phase``."""
        if not self.enabled:
            return
        if phase != self._phase:
            self._finish_line()
            self._phase, self._step, self._started = phase, -1, time.monotonic()
        fraction = 1.0 if total <= 0 else min(done / total, 1.0)
        if self.tty:
            self._draw(phase, done, total, fraction)
            return
        step = int(fraction * 10)
        if step > self._step:
            self._step = step
            self.stream.write(f"{phase}: {step * 10:3d}% ({human_bytes(done)} of "
                              f"{human_bytes(total)})\n")  # fmt: skip
            self.stream.flush()
            self.lines += 1

    def _draw(self, phase: str, done: int, total: int, fraction: float) -> None:
        width = 30
        filled = int(fraction * width)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = human_bytes(done / elapsed) + "/s"
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{phase:<8} [{bar}] {fraction * 100:5.1f}% {human_bytes(done)} {rate}")
        self.stream.flush()
        self.lines += 1

    def _finish_line(self) -> None:
        if self.tty and self._phase:
            self.stream.write("\n")
            self.stream.flush()

    def close(self) -> None:
        """Ends the current line."""
        if self.enabled:
            self._finish_line()
        self._phase = ""
