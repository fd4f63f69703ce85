"""``make bench``: runs every ``bench/bench_*.py`` (each bounded in time) and writes one table.

Each bench writes ``bench/results/<name>.json`` through ``bench/results_io.py``, in the shared
row format ``{figure, ours, peer, ratio, unit, target, met}`` (plus optional ``peer_name`` and
``note``; see ``results_io.Row``). The runner writes ``bench/results.md`` (the table, the date
and the machine) and ``bench/results/all.json``; each bench's console output goes to
``bench/results/<name>.log``.

Usage: ``.venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--budget SECONDS]``.
``--quick`` passes ``--quick`` to the benches that accept it. The whole run stays under
``--budget`` (default 3600 s, ``make bench BENCH_BUDGET=...``): a bench gets at most its own limit
and what is left of the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from results_io import COLUMNS, RESULTS, ROOT, table

BENCH = ROOT / "bench"
# Seconds each bench may take (default DEFAULT_LIMIT); the runner kills it after that.
LIMITS = {
    "bench_ingest": 330,
    "bench_explanations": 240,
    "bench_explain_budget": 240,
    "bench_outcomes": 150,
    "bench_routing": 120,
    "bench_http": 120,
    "bench_cold_start": 120,
    "bench_statistics": 90,
    "bench_cuped": 90,
    "bench_parquet": 60,
    "bench_json_bounds": 60,
    "bench_decisions": 240,
    "bench_monitor": 300,
    "bench_invocations": 240,
    "bench_explainer_cold_start": 300,
    "bench_local_stack": 1500,
}
DEFAULT_LIMIT = 180
# Run order: cheap and independent first, so a slow bench cannot starve them.
ORDER = [
    "bench_statistics",
    "bench_cuped",
    "bench_decisions",
    "bench_parquet",
    "bench_json_bounds",
    "bench_cold_start",
    "bench_routing",
    "bench_http",
    "bench_outcomes",
    "bench_explanations",
    "bench_ingest",
    "bench_monitor",
    "bench_explain_budget",
    "bench_invocations",
    "bench_explainer_cold_start",
    "bench_local_stack",
]


# ---- reading the benches' JSON ---------------------------------------------------------------


def adapt_generic(data: Any) -> list[dict[str, Any]]:
    """Rows already in the shared format, or anything with a figure name (kept as a note)."""
    found = data.get("rows", data.get("results", [])) if isinstance(data, dict) else data
    if isinstance(found, dict):
        found = [{"figure": key, **value} if isinstance(value, dict) else
                 {"figure": key, "ours": value} for key, value in found.items()]  # fmt: skip
    rows = []
    for r in found if isinstance(found, list) else []:
        if not isinstance(r, dict):
            continue
        if "ours" in r:
            rows.append({**{c: r.get(c) for c in COLUMNS}, **r})
            continue
        extra = {k: v for k, v in r.items() if k not in {"figure", "name"}}
        rows.append(
            {
                "figure": r.get("figure") or r.get("name") or "?",
                "ours": None,
                "peer": None,
                "ratio": None,
                "unit": "",
                "target": r.get("target", ""),
                "met": r.get("met", r.get("meets_target")),
                "note": json.dumps(extra, default=str)[:300],
            }
        )
    return rows


# ---- running ---------------------------------------------------------------------------------


def discover(only: list[str] | None) -> list[Path]:
    """The bench scripts, in ``ORDER`` first, then any others alphabetically."""
    scripts = {p.stem: p for p in BENCH.glob("bench_*.py")}
    names = [n for n in ORDER if n in scripts] + sorted(n for n in scripts if n not in ORDER)
    if only:
        names = [n for n in names if n in only or n.removeprefix("bench_") in only]
    return [scripts[n] for n in names]


def _accepts_quick(script: Path) -> bool:
    return '"--quick"' in script.read_text(encoding="utf-8")


def run_one(script: Path, limit: float, quick: bool) -> dict[str, Any]:
    """Runs one bench in its own process group, killed after ``limit`` seconds."""
    command = [sys.executable, str(script)]
    if quick and _accepts_quick(script):
        command.append("--quick")
    log = RESULTS / f"{script.stem.removeprefix('bench_')}.log"
    started_wall, started = time.time(), time.monotonic()
    print(f"--> {script.name} {' '.join(command[2:])} (limit {limit:.0f} s)", flush=True)
    with log.open("w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=limit)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            status = f"timeout after {limit:.0f} s"
    seconds = time.monotonic() - started
    outputs = sorted(
        p
        for p in RESULTS.glob("*.json")
        if p.name != "all.json" and p.stat().st_mtime >= started_wall
    )
    print(f"    {status} in {seconds:.0f} s; wrote {[p.name for p in outputs]}", flush=True)
    return {
        "bench": script.stem,
        "status": status,
        "seconds": round(seconds, 1),
        "command": " ".join(command[1:]),
        "json": [p.name for p in outputs],
        "log": str(log.relative_to(ROOT)),
    }


def collect(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The normalized rows of the JSON files a bench wrote."""
    rows = []
    for name in run["json"]:
        try:
            data = json.loads((RESULTS / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            rows.append({"figure": f"{name}: unreadable ({exc})", "met": None})
            continue
        for row in adapt_generic(data):
            rows.append({**row, "bench": run["bench"]})
    return rows


# ---- report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    memory = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def markdown(rows: list[dict[str, Any]], runs: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """``bench/results.md``."""
    lines = [
        "# Benchmark results",
        "",
        f"Measured {info['date']} on {info['machine']['cpu']} ({info['machine']['cpus']} CPUs, "
        f"{info['machine']['memory']}), {info['machine']['os']}, Python "
        f"{info['machine']['python']}; load average at start "
        f"{info['machine']['load_average_at_start']} (a shared machine: compare ratios, which "
        f"put ours and the peer in the same run, rather than absolute times). "
        f"`make bench{' QUICK=1' if info['quick'] else ''}`, {info['seconds']:.0f} s in total.",
        "",
        *table(rows),
    ]
    lines += ["", "| bench | status | seconds | results | log |", "|---|---|---:|---|---|"]
    for run in runs:
        lines.append(
            f"| {run['bench']} | {run['status']} | {run['seconds']:.0f} | "
            f"{', '.join(run['json']) or '–'} | {run['log']} |"
        )
    return "\n".join(lines) + "\n" + kept_analyses()


ANALYSES = "## Analyses from separate runs"


def kept_analyses() -> str:
    """The hand-written section of the current ``results.md`` (figures measured outside a
    ``make bench`` run, each with its date and load), carried over to the new file."""
    path = BENCH / "results.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start = text.find(ANALYSES)
    return "" if start < 0 else "\n" + text[start:].rstrip("\n") + "\n"


def report_only() -> int:
    """Rewrites ``results.md`` and ``all.json`` from the last run's JSON files."""
    last = json.loads((RESULTS / "all.json").read_text(encoding="utf-8"))
    runs = last.pop("runs")
    last.pop("rows", None)
    rows = [row for run in runs for row in collect(run)]
    text = markdown(rows, runs, last)
    (BENCH / "results.md").write_text(text, encoding="utf-8")
    (RESULTS / "all.json").write_text(
        json.dumps({**last, "runs": runs, "rows": rows}, indent=2, default=str), encoding="utf-8"
    )
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the benches and writes the reports; exit code 1 if a bench failed or timed out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--budget", type=float, default=3600.0)
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the table from the last run's JSON"
    )
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        return report_only()
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quick": args.quick,
    }
    started = time.monotonic()
    runs, rows = [], []
    for script in discover(args.only):
        left = args.budget - (time.monotonic() - started)
        if left < 20:
            runs.append({"bench": script.stem, "status": "not run (budget spent)", "seconds": 0,
                         "json": [], "log": "–", "command": ""})  # fmt: skip
            continue
        run = run_one(script, min(LIMITS.get(script.stem, DEFAULT_LIMIT), left), args.quick)
        runs.append(run)
        rows += collect(run)
    info["seconds"] = time.monotonic() - started
    text = markdown(rows, runs, info)
    (BENCH / "results.md").write_text(text, encoding="utf-8")
    (RESULTS / "all.json").write_text(
        json.dumps({**info, "runs": runs, "rows": rows}, indent=2, default=str), encoding="utf-8"
    )
    print()
    print(text)
    return 0 if all(run["status"] == "ok" for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
