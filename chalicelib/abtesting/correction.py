"""Multiple-testing corrections across metrics and variants (pure Python).

* ``holm``: Holm's step-down adjustment; controls the family-wise error rate (the chance of any
  false positive) at alpha, for any dependence between the tests.
* ``bh``: Benjamini-Hochberg step-up adjustment; controls the false discovery rate (the expected
  share of false positives among the positives) at alpha, for independent or positively
  dependent tests.
* ``none``: the raw p-values.

Adjusted p-values are in the input order, monotone in the raw ones and capped at 1, equal to
``statsmodels.stats.multitest.multipletests(p, method="holm" | "fdr_bh")[1]`` (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["METHODS", "adjust", "adjust_tested", "benjamini_hochberg", "holm"]

METHODS = ("holm", "bh", "none")


def _check(p_values: Sequence[float]) -> list[float]:
    values = [float(p) for p in p_values]
    if any(not (0.0 <= p <= 1.0) or math.isnan(p) for p in values):
        raise ValueError("p-values must be in [0, 1]")
    return values


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values: ``max_{j <= i} min(1, (m - j) p_(j))``."""
    values = _check(p_values)
    count = len(values)
    order = sorted(range(count), key=lambda i: values[i])
    adjusted = [1.0] * count
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (count - rank) * values[index]))
        adjusted[index] = running
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values: ``min_{j >= i} min(1, m p_(j) / j)``."""
    values = _check(p_values)
    count = len(values)
    order = sorted(range(count), key=lambda i: values[i], reverse=True)
    adjusted = [1.0] * count
    running = 1.0
    for position, index in enumerate(order):
        rank = count - position  # 1-based rank of this p-value in ascending order
        running = min(running, count * values[index] / rank)
        adjusted[index] = min(running, 1.0)
    return adjusted


def adjust(p_values: Sequence[float], method: str) -> list[float]:
    """Adjusted p-values by ``holm``, ``bh`` or ``none``.

    Raises:
        ValueError: An unknown method or a p-value outside [0, 1].
    """
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    if method == "none":
        return _check(p_values)
    raise ValueError(f"unknown correction {method!r}; use one of {', '.join(METHODS)}")


def adjust_tested(p_values: Sequence[float], tested: Sequence[bool], method: str) -> list[float]:
    """Adjusted p-values over the tests that ran; a test that could not run (no data) is left
    out of the family and keeps 1.0.

    A test without data can never reject, so counting it in the family size would only make
    the others more conservative; the family-wise (Holm) and false-discovery (BH) guarantees
    hold over the tests that ran.

    Raises:
        ValueError: An unknown method, a p-value outside [0, 1] or lengths that differ.
    """
    if len(p_values) != len(tested):
        raise ValueError("one tested flag per p-value")
    adjusted = iter(adjust([p for p, ran in zip(p_values, tested, strict=True) if ran], method))
    return [next(adjusted) if ran else 1.0 for ran in tested]
