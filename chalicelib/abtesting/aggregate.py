"""Exact aggregation of outcome counters into :class:`ExperimentMetrics`.

The repository stores sufficient statistics as DynamoDB numbers (38 significant digits, added
exactly by ``ADD``): counts, the latency histogram, and for each continuous metric a count, a sum
and a sum of squares. Two things keep the variance exact:

* **Shifted sums.** A custom metric value ``x`` is stored as ``d = x - K`` under attribute names
  that carry the shift ``K`` (``x`` rounded to two significant digits, see :func:`shift_of`), so
  ``1e9 + N(0, 1)`` is stored as numbers near 0 instead of squares near ``1e18``. Values with
  different shifts land in different groups, merged here with Chan's formula.
* **Decimal arithmetic with enough precision** (:data:`PRECISION` digits) for
  ``m2 = sum d^2 - (sum d)^2 / n``; floats would cancel every digit of the variance.

Latency values are at most ``1e7`` ms with 3 decimals, so their squares and sums stay exact
without a shift.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from chalicelib.abtesting import cuped, sketch
from chalicelib.abtesting.models import CupedSums, ExperimentMetrics, SufficientStats
from chalicelib.core.moments import merged_moments

PRECISION = 100
"""Decimal digits used for moments (stored sums have at most 38; squares of them 76)."""

_CONTEXT = decimal.Context(prec=PRECISION)
# Counters of declared ratio and quantile metrics (chalicelib.abtesting.metrics).
DECLARED_PREFIXES = ("r:", "q:")
COUNT_NAMES = (
    "request_count",
    "success_count",
    "error_count",
    "conversion_trials",
    "converted_count",
)


def shift_of(value: Decimal) -> Decimal:
    """The shift a custom metric value is stored against: the value to 2 significant digits."""
    if value == 0:
        return Decimal(0)
    return Decimal(f"{value:.1e}").normalize(_CONTEXT)


def custom_attribute(metric: str, kind: str, shift: Decimal) -> str:
    """Counter attribute of a custom metric: ``c:<metric>:<n|s|ss>@<shift>``."""
    return f"c:{metric}:{kind}@{shift}"


def parse_custom(name: str) -> tuple[str, str, Decimal] | None:
    """``(metric, kind, shift)`` of a custom-metric attribute (legacy names have shift 0)."""
    if not name.startswith("c:"):
        return None
    metric, _, rest = name[2:].rpartition(":")
    kind, _, shift = rest.partition("@")
    if not metric or kind not in {"n", "s", "ss"}:
        return None
    try:
        return metric, kind, Decimal(shift) if shift else Decimal(0)
    except decimal.InvalidOperation:
        return None


@dataclass(frozen=True)
class Moments:
    """Exact moments of one group of values: count, mean and centred sum of squares."""

    count: Decimal
    mean: Decimal
    m2: Decimal

    @classmethod
    def from_sums(
        cls, count: Decimal, total: Decimal, total_sq: Decimal, shift: Decimal
    ) -> Moments:
        """Moments of values ``shift + d`` from ``n``, ``sum d`` and ``sum d^2``."""
        if count <= 0:
            return cls(Decimal(0), Decimal(0), Decimal(0))
        c = _CONTEXT
        mean_d = c.divide(total, count)
        m2 = c.subtract(total_sq, c.multiply(total, mean_d))
        return cls(count, c.add(shift, mean_d), max(m2, Decimal(0)))

    def merge(self, other: Moments) -> Moments:
        """Chan et al.'s combination of two groups, in Decimal."""
        if other.count <= 0:
            return self
        if self.count <= 0:
            return other
        with decimal.localcontext(_CONTEXT):
            mean, m2 = merged_moments(
                self.count, self.mean, self.m2, other.count, other.mean, other.m2
            )
            return Moments(self.count + other.count, mean, m2)

    def stats(self) -> SufficientStats:
        """As float :class:`SufficientStats` (rounded once, at the end)."""
        return SufficientStats.from_moments(int(self.count), float(self.mean), float(self.m2))


def _custom_moments(sums: Mapping[str, Decimal]) -> dict[str, Moments]:
    groups: dict[tuple[str, Decimal], dict[str, Decimal]] = {}
    for name, value in sums.items():
        parsed = parse_custom(name)
        if parsed is None:
            continue
        metric, kind, shift = parsed
        groups.setdefault((metric, shift), {})[kind] = Decimal(value)
    merged: dict[str, Moments] = {}
    for (metric, shift), group in sorted(groups.items(), key=lambda item: item[0]):
        zero = Decimal(0)
        n, total, total_sq = (group.get(kind, zero) for kind in ("n", "s", "ss"))
        moments = Moments.from_sums(n, total, total_sq, shift)
        merged[metric] = merged[metric].merge(moments) if metric in merged else moments
    return merged


def metrics_from_counters(variant_id: str, raw: Mapping[str, Any]) -> ExperimentMetrics:
    """Builds :class:`ExperimentMetrics` from merged shard counters (see the repository).

    Args:
        variant_id: The variant.
        raw: ``{"sums": {attribute: Decimal}, "histogram": {bucket index: count}}``.
    """
    sums = {name: Decimal(value) for name, value in dict(raw.get("sums", {})).items()}
    histogram = {int(k): int(v) for k, v in dict(raw.get("histogram", {})).items()}

    def count(name: str) -> int:
        return int(sums.get(name, 0))

    requests = count("request_count")
    latency = Moments.from_sums(
        Decimal(requests), sums.get("latency_sum", Decimal(0)),
        sums.get("latency_sumsq", Decimal(0)), Decimal(0),
    ).stats()  # fmt: skip
    custom_stats = {
        metric: moments.stats()
        for metric, moments in _custom_moments(sums).items()
        if moments.count > 0
    }
    counts = (requests, count("success_count"), count("error_count"))
    conversions = (count("converted_count"), count("conversion_trials"))
    found = _metrics(variant_id, counts, conversions, latency, custom_stats, histogram)
    declared = {k: v for k, v in sums.items() if k.startswith(DECLARED_PREFIXES)}
    return replace(found, cuped=cuped.sums_from_counters(sums), declared_sums=declared)


def _metrics(
    variant_id: str,
    counts: tuple[int, int, int],
    conversions: tuple[int, int],
    latency: SufficientStats,
    custom_stats: dict[str, SufficientStats],
    histogram: dict[int, int],
) -> ExperimentMetrics:
    """Metrics from totals: (requests, successes, errors), (converted, trials), the latency
    and custom-metric statistics and the latency histogram (its percentiles read here)."""
    requests, successes, errors = counts
    converted, trials = conversions
    return ExperimentMetrics(
        variant_id=variant_id,
        request_count=requests,
        success_count=successes,
        error_count=errors,
        latency_p50_ms=sketch.quantile(histogram, 0.50),
        latency_p95_ms=sketch.quantile(histogram, 0.95),
        latency_p99_ms=sketch.quantile(histogram, 0.99),
        conversion_rate=converted / trials if trials else None,
        custom_metrics={k: v.mean for k, v in custom_stats.items() if v.mean is not None},
        converted_count=converted,
        conversion_trials=trials,
        latency=latency,
        custom_stats=custom_stats,
        latency_histogram=histogram,
    )


def merge_counters(raws: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Adds raw counters (shards, phases): sums attribute by attribute, histograms bucket by
    bucket (exact: Decimal and int)."""
    merged: dict[str, Any] = {"sums": {}, "histogram": {}}
    for raw in raws:
        for name, value in dict(raw.get("sums", {})).items():
            merged["sums"][name] = merged["sums"].get(name, Decimal(0)) + Decimal(value)
        for index, value in dict(raw.get("histogram", {})).items():
            merged["histogram"][index] = merged["histogram"].get(index, 0) + int(value)
    return merged


def merge_metrics(variant_id: str, items: Sequence[ExperimentMetrics]) -> ExperimentMetrics:
    """Combines metrics of one variant (e.g. over allocation phases): counts add, moments merge
    with Chan's formula, histograms add and percentiles are read again."""
    if len(items) == 1 and items[0].variant_id == variant_id:
        return items[0]
    histogram = sketch.merge(m.latency_histogram for m in items)
    latency = SufficientStats()
    custom: dict[str, SufficientStats] = {}
    for item in items:
        latency = latency.merge(item.latency)
        for name, stats in item.custom_stats.items():
            custom[name] = custom.get(name, SufficientStats()).merge(stats)
    counts = (
        sum(m.request_count for m in items),
        sum(m.success_count for m in items),
        sum(m.error_count for m in items),
    )
    conversions = (sum(m.converted_count for m in items), sum(m.conversion_trials for m in items))
    found = _metrics(variant_id, counts, conversions, latency, custom, histogram)
    declared: dict[str, Decimal] = {}
    for item in items:
        for name, value in item.declared_sums.items():
            declared[name] = declared.get(name, Decimal(0)) + value
    return replace(found, cuped=sum((m.cuped for m in items), CupedSums()), declared_sums=declared)
