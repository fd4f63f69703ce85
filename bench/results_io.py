"""The one place the benches write their results, in the format ``run_all.py`` collects.

Every ``bench/bench_*.py`` writes ``bench/results/<bench>.json`` through :func:`write_results`:
``{"bench": ..., "meta": ..., "rows": [...]}`` with one :class:`Row` per reported figure. The
benches run as scripts (``python bench/bench_x.py``), so ``bench/`` is on ``sys.path`` and they
import this module as ``results_io``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, NotRequired, TypedDict

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
COLUMNS = ("figure", "ours", "peer", "ratio", "unit", "target", "met")


class Row(TypedDict):
    """One reported figure: ours next to a peer's, and whether the target is met.

    Attributes:
        figure: What was measured, as shown in the table.
        ours: The project's value (``None`` if it could not be measured).
        peer: The peer's value, or ``None`` when there is no peer.
        ratio: ``ours / peer`` (``None`` without a peer).
        unit: The unit of ``ours`` and ``peer``.
        target: The target, as text.
        met: Whether the target is met (``None``: not decidable).
        peer_name: What the peer is (optional).
        note: Anything a reader needs to interpret the row (optional).

    A bench may add its own fields after these; the runner keeps them in ``all.json``.
    """

    figure: str
    ours: Any
    peer: Any
    ratio: float | None
    unit: str
    target: str
    met: bool | None
    peer_name: NotRequired[str]
    note: NotRequired[str]


def _jsonable(value: Any) -> Any:
    """Fallback for ``json.dumps``: numpy scalars as their Python value, anything else as text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def machine_meta() -> dict[str, Any]:
    """What every bench records about the machine it ran on.

    Returns:
        The Python version, the machine type, the platform string, the CPU count and the load
        average (empty where the OS has none) at the time of the call.
    """
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else [],
    }


def write_results(bench: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """Writes ``bench/results/<bench>.json``.

    Args:
        bench: The bench's short name (``"routing"`` for ``bench_routing.py``); also the file name.
        rows: The result rows in the shared format (see :class:`Row`).
        meta: Run parameters and machine facts (see :func:`machine_meta`).

    Returns:
        The path written.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{bench}.json"
    payload = {"bench": bench, "meta": meta, "rows": rows}
    out.write_text(json.dumps(payload, indent=2, default=_jsonable), encoding="utf-8")
    return out


def cell(value: Any) -> str:
    """A value as a markdown table cell (numbers rounded for reading, ``–`` for none)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as markdown table lines, then their notes (``bench/results.md`` shows the same)."""
    lines = [
        "| figure | ours | peer | ratio | unit | target | met? |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        peer = cell(r.get("peer"))
        if r.get("peer_name") and r.get("peer") is not None:
            peer = f"{peer} ({r['peer_name']})"
        lines.append(
            f"| {cell(r.get('figure'))} | {cell(r.get('ours'))} | {peer} | "
            f"{cell(r.get('ratio'))} | {cell(r.get('unit'))} | {cell(r.get('target'))} | "
            f"{cell(r.get('met'))} |"
        )
    notes = [f"- {r['figure']}: {r['note']}" for r in rows if r.get("note")]
    return lines + (["", "Notes:", "", *notes] if notes else [])


def report(bench: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """Prints the table, writes ``bench/results/<bench>.json`` and says where."""
    print("\n".join(table(rows)))
    out = write_results(bench, rows, meta)
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return out
