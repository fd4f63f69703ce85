"""What bounding hostile JSON costs: the API's body parse against the standard library's.

Every request body goes through ``chalicelib.core.jsonutil.loads`` (nesting depth measured before
parsing, digits and ranges of numbers, lone surrogates) and, once validated, through
``chalicelib.core.http.check_numbers`` (non-finite floats and 39-digit integers that pydantic's
lax mode makes from strings). This bench times both on bodies of the shapes the API takes, up
to the 6 MiB body limit, next to plain ``json.loads`` of the same bytes (the floor: what parsing
cost before) and pydantic's validation (the work that follows either way), in the same run.

Usage: ``.venv/bin/python bench/bench_json_bounds.py [--quick]``; prints a table and writes
``bench/results/json_bounds.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The bounds may add at most this fraction to parse + validation (or this many ms, for bodies
# whose parse takes microseconds).
TARGET_OVERHEAD = 0.5
TARGET_ABSOLUTE_MS = 0.1


def _bodies() -> dict[str, tuple[bytes, Any]]:
    """Name -> (body bytes, pydantic model validating it)."""
    import app  # noqa: F401 - registers every blueprint
    from chalicelib.abtesting.schemas import RouteBody
    from chalicelib.dataversion.schemas import CreateVersionBody
    from chalicelib.registry.schemas import RegisterVersionBody

    rng = random.Random(7)
    artifact = base64.b64encode(rng.randbytes(4_500_000)).decode()
    csv_rows = "\n".join(",".join(f"{rng.random():.6f}" for _ in range(10)) for _ in range(60_000))
    sample = [[rng.random() for _ in range(30)] for _ in range(10_000)]
    features = [f"f{i}" for i in range(30)]
    return {
        "route (45 bytes)": (json.dumps({"request_id": "r-1", "user_id": "u-42"}), RouteBody),
        "artifact, 6 MiB base64": (
            json.dumps({"artifact_base64": artifact, "task": "classification"}),
            RegisterVersionBody,
        ),
        "inline CSV, 6 MiB": (json.dumps({"data": csv_rows}), CreateVersionBody),
        "background sample, 10,000 x 30 floats": (
            json.dumps(
                {
                    "artifact_base64": "AA==",
                    "task": "classification",
                    "feature_names": features,
                    "background_sample": sample,
                }
            ),
            RegisterVersionBody,
        ),
    }


def _median_ms(call: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(name: str, text: str, model: Any, repeats: int) -> dict[str, Any]:
    """One row: bounded parse + number check vs plain parse, with validation alongside."""
    from chalicelib.core import jsonutil
    from chalicelib.core.http import _validators, check_numbers

    raw = text.encode()
    adapter = _validators.get(model)
    parsed = adapter.validate_python(json.loads(raw))
    floor = _median_ms(lambda: json.loads(raw), repeats)
    bounded = _median_ms(lambda: jsonutil.loads(raw), repeats)
    numbers = _median_ms(lambda: check_numbers(parsed, "body"), repeats)
    validation = _median_ms(lambda: adapter.validate_python(json.loads(raw)), repeats)
    added = bounded - floor + numbers
    overhead = added / validation if validation else 0.0
    return {
        "figure": f"body parse + checks, {name} ({len(raw) / 1_048_576:.2f} MiB)",
        "ours": round(bounded + numbers, 3),
        "peer": round(floor, 3),
        "ratio": round((bounded + numbers) / floor, 2) if floor else None,
        "unit": "ms",
        "target": f"added <= {TARGET_OVERHEAD:.0%} of parse+validation or {TARGET_ABSOLUTE_MS} ms",
        "met": overhead <= TARGET_OVERHEAD or added <= TARGET_ABSOLUTE_MS,
        "peer_name": "json.loads",
        "note": f"depth/digit/range scan {bounded - floor:.1f} ms, number check {numbers:.1f} ms, "
        f"json.loads + pydantic {validation:.1f} ms: {overhead:.0%} added",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    rows = [measure(name, text, model, repeats) for name, (text, model) in _bodies().items()]
    report("json_bounds", rows, {**machine_meta(), "repeats": repeats})


if __name__ == "__main__":
    main()
