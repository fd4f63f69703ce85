"""Agreement of ``StatisticalAnalyzer`` with statsmodels on random cases.

* Rates, fixed-horizon method: the z statistic vs statsmodels' ``proportions_ztest``, the
  interval vs Newcomb's ``confint_proportions_2indep(compare="diff", method="newcomb")``, and the
  p-value (which inverts Newcomb's interval) vs statsmodels: its interval at level ``1 - p``
  must have a bound at 0.
* Welch's t-test from sufficient statistics (count, sum, sum of squares) vs
  ``statsmodels.stats.weightstats.ttest_ind(usevar="unequal")`` on the raw samples.
* Sample size per arm vs ``NormalIndPower().solve_power(proportion_effectsize(p2, p1))`` rounded up.
  Ours is the closed form ``2 ((z_a + z_b) / h)^2``; statsmodels' two-sided power also counts
  rejections in the opposite tail, so its solution can be smaller by a few parts in 10^5 (a few
  hundred requests at n = 3 million). The bench checks that ours always reaches the requested
  power by statsmodels' own ``power()`` and reports the largest relative difference.
* Holm-Bonferroni vs ``statsmodels.stats.multitest.multipletests(method="holm")``.

Usage: ``.venv/bin/python bench/bench_statistics.py [--quick] [--cases N]``; prints a table and
writes ``bench/results/statistics.json`` (rows: figure, ours, peer, ratio, unit, target, met).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOLERANCE = 1e-6


def _fixed() -> Any:
    from chalicelib.abtesting.models import AnalysisMethod, AnalysisSettings
    from chalicelib.abtesting.statistics import StatisticalAnalyzer

    settings = AnalysisSettings(method=AnalysisMethod.FIXED)
    return StatisticalAnalyzer(confidence_level=0.95, minimum_sample_size=1, settings=settings)


def _metrics(variant: str, converted: int, trials: int, values: np.ndarray | None = None) -> Any:
    from chalicelib.abtesting.models import ExperimentMetrics, SufficientStats

    latency = SufficientStats()
    if values is not None:
        latency = SufficientStats.from_values(values)
    return ExperimentMetrics(
        variant_id=variant,
        request_count=trials if values is None else len(values),
        converted_count=converted,
        conversion_trials=trials,
        latency=latency,
    )


def proportions(cases: int, rng: np.random.Generator) -> dict[str, float]:
    """Max |difference| of z, Newcomb bounds and the p-value's boundary over random cases."""
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    analyzer = _fixed()
    worst = {"p": 0.0, "z": 0.0, "ci": 0.0}
    for _ in range(cases):
        n_c, n_t = (int(v) for v in rng.integers(30, 200_000, size=2))
        p_c = float(rng.uniform(0.005, 0.6))
        p_t = min(0.99, p_c * float(rng.uniform(0.7, 1.4)))
        x_c, x_t = int(rng.binomial(n_c, p_c)), int(rng.binomial(n_t, p_t))
        ours = analyzer.calculate_significance(
            _metrics("c", x_c, n_c), _metrics("t", x_t, n_t), "conversion_rate"
        )
        z, _ = proportions_ztest([x_t, x_c], [n_t, n_c])
        low, high = confint_proportions_2indep(
            x_t, n_t, x_c, n_c, compare="diff", method="newcomb", alpha=0.05
        )
        if 1e-12 < ours.p_value < 1:
            at_p = confint_proportions_2indep(
                x_t, n_t, x_c, n_c, compare="diff", method="newcomb", alpha=ours.p_value
            )
            worst["p"] = max(worst["p"], min(abs(float(at_p[0])), abs(float(at_p[1]))))
        worst["z"] = max(worst["z"], abs(ours.statistic - float(z)))
        ci = ours.confidence_interval
        worst["ci"] = max(worst["ci"], abs(ci[0] - float(low)), abs(ci[1] - float(high)))
    return worst


def welch(cases: int, rng: np.random.Generator) -> dict[str, float]:
    """Max |difference| of p-value and t between Welch from sums and statsmodels on samples."""
    from statsmodels.stats.weightstats import ttest_ind

    analyzer = _fixed()
    worst = {"p": 0.0, "t": 0.0}
    for _ in range(cases):
        n_c, n_t = (int(v) for v in rng.integers(5, 5_000, size=2))
        mean = float(rng.uniform(5, 500))
        control = rng.lognormal(math.log(mean), float(rng.uniform(0.1, 0.8)), n_c)
        shift = float(rng.uniform(0.9, 1.15))
        treatment = rng.lognormal(math.log(mean * shift), float(rng.uniform(0.1, 0.8)), n_t)
        ours = analyzer.calculate_significance(
            _metrics("c", 0, 0, control), _metrics("t", 0, 0, treatment), "latency_ms"
        )
        t, p, _ = ttest_ind(treatment, control, usevar="unequal")
        worst["p"] = max(worst["p"], abs(ours.p_value - float(p)))
        worst["t"] = max(worst["t"], abs(ours.statistic - float(t)))
    return worst


def sample_sizes() -> dict[str, float]:
    """Our sample size per arm vs statsmodels' power solver over a grid."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    from chalicelib.abtesting.statistics import StatisticalAnalyzer

    analyzer, solver = StatisticalAnalyzer(), NormalIndPower()
    total = exact = minimal = 0
    worst_abs = worst_rel = 0.0
    for baseline in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
        for effect in (0.02, 0.05, 0.1, 0.2, 0.5):
            for level in (0.9, 0.95, 0.99):
                for power in (0.8, 0.9):
                    ours = analyzer.calculate_sample_size_requirement(
                        baseline, effect, level, power
                    )
                    size = proportion_effectsize(baseline * (1 + effect), baseline)
                    peer = math.ceil(
                        solver.solve_power(
                            effect_size=size, alpha=1 - level, power=power, ratio=1.0,
                            alternative="two-sided",
                        )
                    )  # fmt: skip
                    total += 1
                    exact += ours == peer
                    reached = solver.power(size, nobs1=ours, alpha=1 - level, ratio=1.0)
                    minimal += bool(reached >= power)
                    worst_abs = max(worst_abs, abs(ours - peer))
                    worst_rel = max(worst_rel, abs(ours - peer) / peer)
    return {
        "cases": total, "exact": exact, "minimal": minimal, "max_abs": worst_abs,
        "max_rel": worst_rel,
    }  # fmt: skip


def holm(cases: int, rng: np.random.Generator) -> float:
    """Max |difference| of Holm-adjusted p-values vs statsmodels."""
    from statsmodels.stats.multitest import multipletests

    from chalicelib.abtesting.statistics import holm_bonferroni

    worst = 0.0
    for _ in range(cases):
        values = list(rng.uniform(0, 0.2, size=int(rng.integers(2, 8))))
        ours = holm_bonferroni(values)
        peer = multipletests(values, method="holm")[1]
        worst = max(worst, max(abs(a - float(b)) for a, b in zip(ours, peer, strict=True)))
    return worst


def row(figure: str, ours: Any, peer: Any, unit: str, target: str, met: bool) -> dict[str, Any]:
    """One result row in the shared bench format."""
    ratio = None
    if isinstance(ours, int | float) and isinstance(peer, int | float) and peer:
        ratio = ours / peer
    return {
        "figure": figure, "ours": ours, "peer": peer, "ratio": ratio, "unit": unit,
        "target": target, "met": met,
    }  # fmt: skip


def run(cases: int, seed: int) -> list[dict[str, Any]]:
    """Every comparison as result rows."""
    rng = np.random.default_rng(seed)
    z = proportions(cases, rng)
    t = welch(cases, rng)
    sizes = sample_sizes()
    holm_diff = holm(cases, rng)
    tol = f"≤ {TOLERANCE:g}"
    return [
        row(f"z statistic, max |Δ| vs statsmodels proportions_ztest ({cases} cases)",
            z["z"], None, "abs", tol, z["z"] <= TOLERANCE),
        row("95% CI of the difference, max |Δ| vs confint_proportions_2indep(newcomb)",
            z["ci"], None, "abs", tol, z["ci"] <= TOLERANCE),
        row("p-value inverts Newcomb: statsmodels' interval at level 1 - p, max |bound at 0|",
            z["p"], None, "abs", tol, z["p"] <= TOLERANCE),
        row(f"Welch p-value from sums, max |Δ| vs ttest_ind(usevar='unequal') ({cases} cases)",
            t["p"], None, "abs", tol, t["p"] <= TOLERANCE),
        row("Welch t statistic, max |Δ|", t["t"], None, "abs", tol, t["t"] <= TOLERANCE),
        row(f"sample size per arm reaches the power by NormalIndPower.power "
            f"({sizes['cases']} cases)", sizes["minimal"], sizes["cases"], "cases",
            "all", sizes["minimal"] == sizes["cases"]),
        row("sample size per arm equal to ceil(NormalIndPower.solve_power)", sizes["exact"],
            sizes["cases"], "cases", "most (closed form omits the far tail)",
            sizes["exact"] >= 0.5 * sizes["cases"]),
        row("sample size per arm, max relative |Δ| vs ceil(solve_power)", sizes["max_rel"], None,
            "relative", "≤ 0.001", sizes["max_rel"] <= 1e-3),
        row(f"Holm-adjusted p, max |Δ| vs multipletests(holm) ({cases} cases)", holm_diff, None,
            "abs", tol, holm_diff <= TOLERANCE),
    ]  # fmt: skip


def main() -> None:
    """Runs the comparisons and writes ``bench/results/statistics.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 cases instead of 400")
    parser.add_argument("--cases", type=int, default=None)
    parser.add_argument("--seed", type=int, default=20261123)
    args = parser.parse_args()
    cases = args.cases or (100 if args.quick else 400)
    started = time.perf_counter()
    rows = run(cases, args.seed)
    meta = {
        **machine_meta(), "cases": cases, "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 2),
    }  # fmt: skip
    report("statistics", rows, meta)


if __name__ == "__main__":
    main()
