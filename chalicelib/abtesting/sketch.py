"""A mergeable log-bucket latency histogram (DDSketch-style) with 1 % relative accuracy.

A value ``x`` falls in bucket ``i = ceil(log_gamma(x))`` with ``gamma = (1 + a) / (1 - a)``;
the bucket's representative value ``2 gamma^i / (gamma + 1)`` is within ``a`` (1 %) of every
value in the bucket. Quantiles are interpolated between ranks as numpy does, so they are within
1 % of ``numpy.percentile`` of the raw values (tested). Buckets are plain counters, so shards
merge by addition and DynamoDB can aggregate them with ``ADD`` on top-level attributes named
``h<index + OFFSET>``. Values are clamped to [``MIN_VALUE``, ``MAX_VALUE``] milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
MIN_VALUE = 1e-3
MAX_VALUE = 1e7
OFFSET = 400  # makes every bucket index of a value in [MIN_VALUE, MAX_VALUE] non-negative
PREFIX = "h"


def bucket_index(value: float) -> int:
    """The (offset, non-negative) bucket of a latency in milliseconds."""
    clamped = min(max(float(value), MIN_VALUE), MAX_VALUE)
    return math.ceil(math.log(clamped) / _LOG_GAMMA) + OFFSET


def bucket_value(index: int) -> float:
    """The representative value of a bucket (within 1 % of every value in it)."""
    return 2.0 * GAMMA ** (index - OFFSET) / (GAMMA + 1.0)


def attribute_name(index: int) -> str:
    """The DynamoDB attribute holding a bucket's count."""
    return f"{PREFIX}{index}"


def parse_attribute(name: str) -> int | None:
    """The bucket index of an attribute name, or ``None`` for other attributes."""
    if len(name) > 1 and name[0] == PREFIX and name[1:].isdigit():
        return int(name[1:])
    return None


def histogram(values: Iterable[float]) -> dict[int, int]:
    """Bucket counts of ``values``."""
    counts: dict[int, int] = {}
    for value in values:
        index = bucket_index(value)
        counts[index] = counts.get(index, 0) + 1
    return counts


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """Adds bucket counts (shards, variants or time windows)."""
    merged: dict[int, int] = {}
    for counts in histograms:
        for index, count in counts.items():
            merged[index] = merged.get(index, 0) + int(count)
    return merged


def _value_at(ordered: list[tuple[int, int]], rank: int) -> float:
    """The representative value of the ``rank``-th smallest value (0-based)."""
    seen = 0
    for index, count in ordered:
        seen += count
        if seen > rank:
            return bucket_value(index)
    return bucket_value(ordered[-1][0])


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, or ``None`` when it is empty.

    Interpolated like numpy's default (``method="linear"``): the rank is ``h = q (n - 1)`` and the
    result is ``x[floor(h)] + (h - floor(h)) (x[floor(h) + 1] - x[floor(h)])`` with each ``x`` the
    representative value of its bucket. Each representative is within ``RELATIVE_ACCURACY``
    (1 %) of the true value and a convex combination keeps that bound, so the result is within
    1 % of ``numpy.percentile`` of the raw (positive, in-range) values; values below
    ``MIN_VALUE`` count as ``MIN_VALUE``.
    """
    ordered = sorted((index, int(count)) for index, count in counts.items() if count > 0)
    total = sum(count for _, count in ordered)
    if total <= 0:
        return None
    rank = q * (total - 1)
    below = math.floor(rank)
    low = _value_at(ordered, below)
    fraction = rank - below
    if fraction == 0:
        return low
    return low + fraction * (_value_at(ordered, below + 1) - low)


def count_above(counts: Mapping[int, int], threshold: float) -> int:
    """Values in buckets entirely above ``threshold``'s bucket (all of them exceed it; values in
    the threshold's own bucket, within 1 % of it, are not counted)."""
    limit = bucket_index(threshold)
    return sum(int(count) for index, count in counts.items() if index > limit)
