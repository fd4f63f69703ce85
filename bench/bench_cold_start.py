"""Cold start: seconds to ``import app`` in a fresh interpreter, and which heavy modules it loads.

Every Lambda cold start imports ``app.py``; the design requires that it loads none of shap, lime,
scikit-learn, numba or pandas. Each run is a new ``python`` process (so nothing is cached in
``sys.modules``) that times the import itself with ``time.perf_counter`` and lists the heavy
modules present afterwards. The peer is ``import shap`` alone, measured the same way. Reported:
medians over the runs (the interpreter's own start-up is excluded from both).

Usage: ``.venv/bin/python bench/bench_cold_start.py [--quick] [--runs N]``; writes
``bench/results/cold_start.json`` (rows: figure, ours, peer, ratio, unit, target, met).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("shap", "lime", "sklearn", "numba", "pandas")
PROBE = """
import json, sys, time
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
heavy = [name for name in {heavy!r} if name in sys.modules]
print(json.dumps({{"seconds": seconds, "heavy": heavy, "modules": len(sys.modules)}}))
"""
TARGET_SECONDS = 1.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        SYNAPSE_METRICS="off",
        POWERTOOLS_LOG_LEVEL="WARNING",
        PYTHONDONTWRITEBYTECODE="0",
    )
    env.pop("AWS_ENDPOINT_URL", None)
    return env


def probe(module: str) -> dict[str, Any]:
    """One fresh interpreter importing ``module``."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(module: str, runs: int) -> dict[str, Any]:
    """Median import seconds over ``runs`` fresh interpreters (one warm-up run first, so the
    bytecode cache exists, as in a deployed package)."""
    probe(module)
    found = [probe(module) for _ in range(runs)]
    return {
        "median_seconds": statistics.median(r["seconds"] for r in found),
        "min_seconds": min(r["seconds"] for r in found),
        "runs": [round(r["seconds"], 4) for r in found],
        "heavy": sorted({name for r in found for name in r["heavy"]}),
        "modules": found[-1]["modules"],
    }


def rows_for(app: dict[str, Any], shap: dict[str, Any]) -> list[dict[str, Any]]:
    """The shared-format result rows."""
    ours, peer = app["median_seconds"], shap["median_seconds"]
    return [
        {
            "figure": "import app (fresh interpreter, median)",
            "ours": round(ours, 4),
            "peer": round(peer, 4),
            "peer_name": "import shap alone",
            "ratio": round(ours / peer, 4) if peer else None,
            "unit": "s",
            "target": f"< {TARGET_SECONDS:g} s",
            "met": ours < TARGET_SECONDS,
        },
        {
            "figure": "heavy modules loaded by import app (" + "/".join(HEAVY) + ")",
            "ours": ", ".join(app["heavy"]) or "none",
            "peer": ", ".join(shap["heavy"]) or "none",
            "peer_name": "import shap alone",
            "ratio": None,
            "unit": "",
            "target": "none",
            "met": not app["heavy"],
        },
    ]


def main() -> None:
    """Measures both imports and writes ``bench/results/cold_start.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 5")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    app = measure("app", runs)
    shap = measure("shap", runs)
    rows = rows_for(app, shap)
    meta = {**machine_meta(), "runs": runs, "app": app, "shap": shap}
    report("cold_start", rows, meta)


if __name__ == "__main__":
    main()
