"""Feature-attribution drift: NDCG as SageMaker Clarify's model monitor computes it.

Two global attributions (feature → mean |SHAP|), a *baseline* and a *current* one, are compared
by the normalized discounted cumulative gain of the current ranking scored with the baseline's
attributions::

    DCG  = Σ_{i=1..k} a(f_i) / log2(i + 1)     f_1..f_k: the current top-k features
    iDCG = Σ_{i=1..k} a(f'_i) / log2(i + 1)    f'_1..f'_k: the baseline's top-k features
    NDCG = DCG / iDCG                           a(f): the baseline attribution of f

``k`` is 10 (or fewer features), and Clarify raises a violation below 0.90. A feature the
baseline does not have counts 0; features tied in the current attribution are scored in their
least favourable order (a flat or all-zero attribution gets the lowest NDCG its ties allow).
Per-feature changes (value, delta, rank) come with it.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_TOP_K = 10
DEFAULT_THRESHOLD = 0.9


def ranking(attributions: dict[str, float]) -> list[str]:
    """Features by attribution, largest first (ties by name, so the order is stable)."""
    return sorted(attributions, key=lambda name: (-attributions[name], name))


def ndcg(baseline: dict[str, float], current: dict[str, float], k: int = DEFAULT_TOP_K) -> float:
    """NDCG of ``current``'s top-``k`` ranking against ``baseline`` (1.0: same order).

    With no baseline attribution at all (every value 0) the rankings cannot disagree: 1.0.
    Features tied in ``current`` are scored in the order least favourable to it (smallest
    baseline attribution first): a ranking that does not tell them apart earns no credit from
    their names' order.
    """
    top = min(k, len(baseline))
    ideal = sum(baseline[f] / math.log2(i + 2) for i, f in enumerate(ranking(baseline)[:top]))
    if ideal <= 0:
        return 1.0
    order = sorted(current, key=lambda f: (-current[f], baseline.get(f, 0.0), f))
    gained = sum(baseline.get(f, 0.0) / math.log2(i + 2) for i, f in enumerate(order[:top]))
    return gained / ideal


def feature_changes(baseline: dict[str, float], current: dict[str, float]) -> list[dict[str, Any]]:
    """Per feature: both attributions, the change, both ranks (1 = largest), largest change
    first. A feature present on one side only has ``None`` on the other."""
    base_rank = {f: i + 1 for i, f in enumerate(ranking(baseline))}
    current_rank = {f: i + 1 for i, f in enumerate(ranking(current))}
    rows: list[dict[str, Any]] = []
    for name in sorted(set(baseline) | set(current)):
        before, after = baseline.get(name), current.get(name)
        rows.append(
            {
                "feature": name,
                "baseline": before,
                "current": after,
                "change": None if before is None or after is None else after - before,
                "baseline_rank": base_rank.get(name),
                "current_rank": current_rank.get(name),
            }
        )
    rows.sort(key=lambda row: -abs(float(row["change"] or 0.0)))
    return rows


def compare(
    baseline: dict[str, float],
    current: dict[str, float],
    k: int = DEFAULT_TOP_K,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """The drift report: ``ndcg``, whether it is under ``threshold`` and the changes."""
    score = ndcg(baseline, current, k)
    return {
        "ndcg": score,
        "top_k": k,
        "threshold": threshold,
        "drifted": score < threshold,
        "baseline_top": ranking(baseline)[:k],
        "current_top": ranking(current)[:k],
        "features": feature_changes(baseline, current),
    }
