"""Decision quality at full size: our always-valid decisions vs the naive peer, side by side.

The naive peer is what the service did before and what a careful user would otherwise do: a
fixed-horizon z-test (statsmodels' ``proportions_ztest``, two-sided for the analysis, one-sided
"canary worse" for the canary) re-checked at every tick, acting on the first ``p < 0.05``. Both
see exactly the same simulated data (seeded).

* A/A analysis: identical arms at 10 %, read at 39 looks from 1,000 to 20,000 users per arm:
  how often "significant" is reported at some look (target ≤ α = 5 %).
* Power: a true +10 % / +5 % lift on 10 %, 40 looks up to our planned sample size (the sequential
  plan, ``GET /stats/sample-size``): how often the treatment is found better (target ≥ 80 %).
* A/A canary: 2 %, 3.5 % and 5.5 % errors on both arms, 100 requests per arm per check, 60
  checks: how often it is rolled back (target ≤ 1 %).
* Regression: the canary gets 10 % of 1,000 requests per check with 3× the control's 2 % error
  rate: median canary requests until the rollback.

Ours is the service's own code (``StatisticalAnalyzer.calculate_significance`` and the canary
judge with the default policy). Usage: ``.venv/bin/python bench/bench_decisions.py [--quick]``;
writes ``bench/results/decisions.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALPHA = 0.05


def _z_p(
    x_t: np.ndarray, x_c: np.ndarray, n_t: np.ndarray, n_c: np.ndarray, one_sided: bool
) -> Any:
    """statsmodels' pooled two-proportion z-test, vectorised over looks (same formula as
    ``proportions_ztest``, which the naive peer calls at every tick)."""
    from scipy import stats

    pooled = (x_t + x_c) / (n_t + n_c)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (x_t / n_t - x_c / n_c) / se, 0.0)
    return stats.norm.sf(z) if one_sided else 2 * stats.norm.sf(np.abs(z))


def _rates(variant: str, converted: int, trials: int) -> Any:
    from chalicelib.abtesting.models import ExperimentMetrics

    return ExperimentMetrics(variant, trials, converted_count=converted, conversion_trials=trials)


def peeking(sims: int, lift: float, looks: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Share of runs declared significant (better, when ``lift`` > 0) at some look, and the
    requests per arm when it happened."""
    from chalicelib.abtesting.statistics import StatisticalAnalyzer

    analyzer = StatisticalAnalyzer(minimum_sample_size=int(looks[0]))
    step = np.diff(np.concatenate([[0], looks]))
    control = rng.binomial(step, 0.1, (sims, len(looks))).cumsum(axis=1)
    treatment = rng.binomial(step, 0.1 * (1 + lift), (sims, len(looks))).cumsum(axis=1)
    p_naive = _z_p(treatment, control, looks, looks, one_sided=False)
    naive_hit = (p_naive < ALPHA) & ((treatment > control) if lift > 0 else True)
    ours_hits, ours_at = 0, []
    for sim in range(sims):
        for look, n in enumerate(looks):
            result = analyzer.calculate_significance(
                _rates("c", int(control[sim, look]), int(n)),
                _rates("t", int(treatment[sim, look]), int(n)),
                "conversion_rate",
            )
            hit = result.decision == "better" if lift > 0 else result.is_significant
            if hit:
                ours_hits += 1
                ours_at.append(int(n))
                break
    naive_any = naive_hit.any(axis=1)
    naive_at = looks[naive_hit.argmax(axis=1)][naive_any]
    return {
        "ours": ours_hits / sims, "naive": float(naive_any.mean()),
        "ours_median_n": float(np.median(ours_at)) if ours_at else None,
        "naive_median_n": float(np.median(naive_at)) if naive_any.any() else None,
    }  # fmt: skip


def canary(
    sims: int, rates: tuple[float, float], per_check: tuple[int, int], checks: int,
    rng: np.random.Generator,
) -> dict[str, Any]:  # fmt: skip
    """Share of runs rolled back and canary requests at the rollback, ours vs the naive peer."""
    from chalicelib.abtesting.judge import CheckOutcome, judge_canary
    from chalicelib.abtesting.models import ExperimentMetrics, RollbackPolicy

    policy = RollbackPolicy("bench")
    n_c, n_t = per_check
    control = rng.binomial(n_c, rates[0], (sims, checks)).cumsum(axis=1)
    treatment = rng.binomial(n_t, rates[1], (sims, checks)).cumsum(axis=1)
    seen_c = n_c * np.arange(1, checks + 1)
    seen_t = n_t * np.arange(1, checks + 1)
    naive_fail = _z_p(treatment, control, seen_t, seen_c, one_sided=True) < ALPHA
    ours_at: list[int] = []
    for sim in range(sims):
        for check in range(checks):
            pair = (
                ExperimentMetrics("c", int(seen_c[check]), error_count=int(control[sim, check])),
                ExperimentMetrics("t", int(seen_t[check]), error_count=int(treatment[sim, check])),
            )
            if judge_canary("t", [pair], policy).outcome is CheckOutcome.FAIL:
                ours_at.append(int(seen_t[check]))
                break
    naive_any = naive_fail.any(axis=1)
    naive_at = seen_t[naive_fail.argmax(axis=1)][naive_any]
    return {
        "ours": len(ours_at) / sims, "naive": float(naive_any.mean()),
        "ours_median_n": float(np.median(ours_at)) if ours_at else None,
        "naive_median_n": float(np.median(naive_at)) if naive_any.any() else None,
    }  # fmt: skip


def _row(figure: str, ours: Any, peer: Any, unit: str, target: str, met: bool | None,
         note: str = "") -> dict[str, Any]:  # fmt: skip
    ratio = (
        ours / peer
        if isinstance(ours, float | int) and isinstance(peer, float | int) and peer
        else None
    )
    found = {"figure": figure, "ours": ours, "peer": peer, "ratio": ratio, "unit": unit,
             "target": target, "met": met, "peer_name": "z-test re-checked every tick"}  # fmt: skip
    return {**found, "note": note} if note else found


def run(quick: bool, seed: int) -> list[dict[str, Any]]:
    """Every figure as result rows."""
    from chalicelib.abtesting.statistics import StatisticalAnalyzer

    rng = np.random.default_rng(seed)
    sims = 300 if quick else 2000
    rows = []
    aa = peeking(sims, 0.0, np.arange(1000, 20001, 500), rng)
    rows.append(_row(f"A/A false-winner rate, 39 looks 1k-20k per arm ({sims} runs)", aa["ours"],
                     aa["naive"], "share", "≤ 0.05", aa["ours"] <= ALPHA))  # fmt: skip
    for lift in (0.10, 0.05):
        planned = StatisticalAnalyzer().calculate_sample_size_requirement(
            0.1, lift, method="sequential"
        )
        looks = np.linspace(planned / 40, planned, 40).astype(int)
        found = peeking(sims, lift, looks, rng)
        rows.append(_row(
            f"power at +{lift:.0%} on 10 %, 40 looks to the planned {planned:,} per arm",
            found["ours"], found["naive"], "share", "≥ 0.80", found["ours"] >= 0.8,
            f"median requests per arm at detection: ours {found['ours_median_n']:,.0f}, "
            f"naive {found['naive_median_n']:,.0f} (which pays with its false-winner rate)",
        ))  # fmt: skip
    for rate in (0.02, 0.035, 0.055):
        found = canary(sims, (rate, rate), (100, 100), 60, rng)
        rows.append(_row(f"A/A canary at {rate:.1%} errors, 60 checks of 100 per arm: rolled back",
                         found["ours"], found["naive"], "share", "≤ 0.01",
                         found["ours"] <= 0.01))  # fmt: skip
    regression = canary(sims, (0.02, 0.06), (900, 100), 60, rng)
    rows.append(_row(
        "3× error-rate regression of a 10 % canary: median canary requests to roll back",
        regression["ours_median_n"], regression["naive_median_n"], "requests", "reported",
        regression["ours"] == 1.0,
        f"rolled back in {regression['ours']:.1%} of runs (naive {regression['naive']:.1%}); "
        "the naive peer is faster because it also rolls back healthy canaries (rows above)",
    ))  # fmt: skip
    return rows


def main() -> None:
    """Runs the simulations and writes ``bench/results/decisions.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 runs per figure, not 2,000")
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run(args.quick, args.seed)
    meta = {**machine_meta(), "seed": args.seed, "quick": args.quick,
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    report("decisions", rows, meta)


if __name__ == "__main__":
    main()
