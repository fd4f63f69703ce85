"""Chan, Golub and LeVeque's pairwise merge of two groups' moments: one implementation.

Column profiles (``dataversion.profile.Moments``, floats whose squared deviations are summed in
units of a power of two) and experiment metrics (``abtesting.models.SufficientStats`` in floats,
``abtesting.aggregate.Moments`` in Decimal) all merge (count, mean, centred sum of squares)
groups with this update; only their number types and units differ, so they pass those in.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

__all__ = ["merged_moments"]

N = TypeVar("N", float, Decimal)


def merged_moments(
    count_a: N,
    mean_a: N,
    m2_a: N,
    count_b: N,
    mean_b: N,
    m2_b: N,
    unit: N | None = None,
) -> tuple[N, N]:
    """The mean and centred sum of squares of two groups together.

    Arithmetic is the operands' own (floats, or Decimal in the current context); both groups
    must be non-empty.

    Args:
        count_a: Values in the first group.
        mean_a: Their mean.
        m2_a: Their sum of squared deviations from ``mean_a``, in units of ``unit²``.
        count_b: Values in the second group.
        mean_b: Their mean.
        m2_b: Their sum of squared deviations from ``mean_b``, in units of ``unit²``.
        unit: The unit of the deviations summed in ``m2_a``/``m2_b`` and in the result
            (``None``: the values' own unit).

    Returns:
        ``(mean, m2)`` of both groups, ``m2`` in units of ``unit²``.
    """
    count = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * count_b / count
    spread = delta if unit is None else delta / unit
    cross = spread * spread * (count_a * count_b / count)
    return mean, m2_a + m2_b + cross
