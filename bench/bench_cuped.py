"""Sample size needed with and without CUPED on simulated correlated data (issue 19).

For each correlation ``rho`` between the pre-experiment covariate ``x`` and the metric ``y``
(both unit variance), ``N`` units per arm are simulated (seeded), their sums go through
``chalicelib.abtesting.cuped.analyze`` exactly as the counters would hold them, and the sample
size per arm needed to detect ``delta = 0.1`` standard deviations at alpha 0.05 with 80 % power
is computed from the measured standard errors, without CUPED (the regression without the
covariate) and with it. Theory: the ratio is ``1 - rho^2``. Then the power is *measured* at each
planned size (``RUNS`` seeded experiments per engine), so the plan is checked, not only derived.

Usage: ``.venv/bin/python bench/bench_cuped.py [--quick]``; prints a table and writes
``bench/results/cuped.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
from decimal import Decimal
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RHOS = (0.3, 0.5, 0.7, 0.9)
DELTA = 0.1
Z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)


def _sums(rng: Any, n: int, rho: float, shift: float) -> Any:
    from chalicelib.abtesting.models import CupedSums

    x = rng.normal(0, 1, n)
    y = shift + rho * x + math.sqrt(1 - rho * rho) * rng.normal(0, 1, n)
    parts = (n, x.sum(), (x * x).sum(), y.sum(), (y * y).sum(), (x * y).sum())
    return CupedSums(*(Decimal(repr(float(v))) for v in parts))


def _needed(standard_error: float, n: int) -> int:
    """Units per arm for 80 % power at DELTA, from an SE measured with ``n`` per arm."""
    return math.ceil(Z * Z * standard_error * standard_error * n / (DELTA * DELTA))


def _power(rng: Any, n: int, rho: float, runs: int, adjusted: bool) -> float:
    from chalicelib.abtesting import cuped

    hits = 0
    for _ in range(runs):
        found = cuped.analyze(_sums(rng, n, rho, 0.0), _sums(rng, n, rho, DELTA))
        if adjusted:
            hits += found.p_value < 0.05
        else:
            hits += abs(found.unadjusted_effect / found.unadjusted_standard_error) > 1.959964
    return hits / runs


def _row(rho: float, units: int, runs: int, rng: Any) -> dict[str, Any]:
    from chalicelib.abtesting import cuped

    found = cuped.analyze(_sums(rng, units, rho, 0.0), _sums(rng, units, rho, 0.0))
    plain = _needed(found.unadjusted_standard_error, units)
    adjusted = _needed(found.standard_error, units)
    ratio = adjusted / plain
    theory = 1 - rho * rho
    power_plain = _power(rng, plain, rho, runs, adjusted=False)
    power_cuped = _power(rng, adjusted, rho, runs, adjusted=True)
    band = 3 * math.sqrt(0.8 * 0.2 / runs)
    met = abs(ratio - theory) <= 0.02 and abs(power_cuped - 0.8) <= band
    return {
        "figure": f"units per arm for 80% power at delta = 0.1 sd, rho = {rho}",
        "ours": adjusted,
        "peer": plain,
        "ratio": round(ratio, 4),
        "unit": "units/arm",
        "target": f"ratio within 0.02 of 1 - rho^2 = {theory:.2f}; power 80% ± {band:.1%}",
        "met": met,
        "peer_name": "no CUPED (same data, regression without the covariate)",
        "note": (
            f"measured on {units:,} simulated units per arm; power measured over {runs} seeded "
            f"experiments at each size: {power_cuped:.1%} with CUPED at {adjusted:,}, "
            f"{power_plain:.1%} without at {plain:,}; variance reduction "
            f"{found.variance_reduction:.4f} (rho^2 = {rho * rho:.2f})"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    units, runs = (50_000, 200) if args.quick else (200_000, 1_000)
    rng = np.random.default_rng(2026)
    rows = [_row(rho, units, runs, rng) for rho in RHOS]
    meta = {**machine_meta(), "units_per_arm": units, "runs": runs, "delta_sd": DELTA}
    report("cuped", rows, meta)


if __name__ == "__main__":
    main()
