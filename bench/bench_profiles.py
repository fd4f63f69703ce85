"""Ingest with column profiles vs without: the same pass over the same file, in the same run.

The ingest pass (``content.ContentObserver``: sha256, exact record count, schema head, and with
profiles the seeded uniform sample of 10,000 records and the profile computed from it at the
end) runs over a CSV and a JSON-lines file read in 8 MiB chunks from the page cache. Each
configuration runs ``REPEATS`` times, alternating (with, without, with, ...), and the median
wall time of the whole pass (feeding every chunk, then ``result()``, which builds the profile)
is reported: MB/s with profiles against MB/s without. Issue 15's limit: profiles may slow
ingest by at most 20 % (ratio >= 0.8). Raw ``hashlib.sha256`` over the same bytes is shown for
scale. MB = 10^6 bytes. Usage: ``.venv/bin/python bench/bench_profiles.py [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIB = 1024 * 1024
CHUNK = 8 * MIB
REPEATS = 5
LIMIT = 0.8  # profiles may cost at most 20 % of the pass's throughput


def block(fmt: str, seed: int = 7) -> bytes:
    """8 MiB of random records: numbers, a category, text with quotes and a flag."""
    rng = random.Random(seed)
    rows: list[str] = []
    length = 0
    while length < CHUNK:
        values = (
            rng.randint(0, 10**9),
            round(rng.gauss(50.0, 12.0), 6),
            rng.choice(["north", "south", "east", "west"]),
            f"item {rng.randint(0, 5000)}",
            rng.random() < 0.5,
        )
        if fmt == "csv":
            row = f'{values[0]},{values[1]},{values[2]},"{values[3]}, ok",{values[4]}\n'
        else:
            keys = ("id", "score", "region", "label", "flag")
            row = json.dumps(dict(zip(keys, values, strict=True))) + "\n"
        rows.append(row)
        length += len(row)
    return "".join(rows).encode()


def write(path: Path, fmt: str, size: int) -> None:
    data = block(fmt)
    with path.open("wb") as out:
        written = out.write(b"id,score,region,label,flag\n") if fmt == "csv" else 0
        while written + len(data) <= size:
            written += out.write(data)


def one_pass(path: Path, fmt: str, profile_rows: int) -> tuple[float, dict[str, Any]]:
    """Seconds for one ingest pass over ``path`` and what it learned."""
    from chalicelib.dataversion import content
    from chalicelib.dataversion.models import DatasetFormat

    started = time.perf_counter()
    observer = content.ContentObserver(DatasetFormat(fmt), 10_000, profile_rows)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            observer.see(chunk)
    content = observer.result()
    seconds = time.perf_counter() - started
    return seconds, {"rows": content.row_count, "profiled": content.profile is not None}


def raw_sha256(path: Path) -> float:
    digest = hashlib.sha256()
    started = time.perf_counter()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return time.perf_counter() - started


def measure(path: Path, fmt: str) -> dict[str, Any]:
    one_pass(path, fmt, 10_000)  # warm: imports, page cache
    timings: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(REPEATS):
        for name, rows in (("with", 10_000), ("without", 0)):
            seconds, learned = one_pass(path, fmt, rows)
            if learned["profiled"] != (rows > 0):
                raise RuntimeError(f"profile {'missing' if rows else 'made'}: {learned}")
            timings[name].append(seconds)
    size = path.stat().st_size
    return {
        "bytes": size,
        "with_seconds": timings["with"],
        "without_seconds": timings["without"],
        "with_mb_s": size / 1e6 / statistics.median(timings["with"]),
        "without_mb_s": size / 1e6 / statistics.median(timings["without"]),
        "raw_sha256_mb_s": size / 1e6 / min(raw_sha256(path) for _ in range(3)),
    }


def rows_for(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for fmt, found in results.items():
        ratio = found["with_mb_s"] / found["without_mb_s"]
        rows.append(
            {
                "figure": f"Ingest pass with column profiles vs without, "
                f"{found['bytes'] / MIB:.0f} MiB {fmt}, MB/s",
                "ours": round(found["with_mb_s"], 1),
                "peer": round(found["without_mb_s"], 1),
                "peer_name": "the same pass without profiles",
                "ratio": round(ratio, 3),
                "unit": "MB/s",
                "target": f">= {LIMIT} (slowdown <= 20%)",
                "met": ratio >= LIMIT,
                "note": f"median of {REPEATS} alternating runs; raw sha256 "
                f"{found['raw_sha256_mb_s']:.0f} MB/s",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB files instead of 512 MiB")
    parser.add_argument("--mib", type=int, help="file size in MiB (overrides --quick)")
    parser.add_argument("--formats", default="csv,json", help="comma-separated: csv,json")
    args = parser.parse_args()
    size = (args.mib or (128 if args.quick else 512)) * MIB
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-profiles-") as tmp:
        for fmt in args.formats.split(","):
            path = Path(tmp) / f"data.{fmt}"
            write(path, fmt, size)
            results[fmt] = measure(path, fmt)
            path.unlink()
            print(f"{fmt}: {json.dumps(results[fmt])}", flush=True)
    report("profiles", rows_for(results), {**machine_meta(), "raw": results})


if __name__ == "__main__":
    main()
