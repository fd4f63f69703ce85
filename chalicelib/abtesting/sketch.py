"""A mergeable log-bucket latency histogram (DDSketch-style) with 1 % relative accuracy.

A value ``x`` falls in bucket ``i = ceil(log_gamma(x))`` with ``gamma = (1 + a) / (1 - a)``;
the bucket's representative value ``2 gamma^i / (gamma + 1)`` is within ``a`` (1 %) of every
value in the bucket, so quantiles read from merged bucket counts have a relative error of about
1 % (≤ 2 % including rank effects). Buckets are plain counters, so shards merge by addition and
DynamoDB can aggregate them with ``ADD`` on top-level attributes named ``h<index + OFFSET>``.
Values are clamped to [``MIN_VALUE``, ``MAX_VALUE``] milliseconds.
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


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, or ``None`` when it is empty.

    Uses the rank ``q * (n - 1)`` like numpy's default (linear) percentile.
    """
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = q * (total - 1)
    seen = 0
    index = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen > rank:
            break
    return bucket_value(index)
