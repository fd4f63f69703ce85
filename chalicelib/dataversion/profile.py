"""Column profiles of a version, computed at ingest from the records drawn in the hashing pass.

The pass that hashes and counts a CSV or JSON-lines version also draws the seeded uniform
sample of at most :data:`PROFILE_SAMPLE_ROWS` records that
:func:`~chalicelib.dataversion.reader.sample_records` (and so the drift route) reads: the same
records, without reading the content again. The profile is computed from those records at the
end of the pass; for a version with no more records than that it covers every record
(``sampled: false``), for a larger one it describes the sample (``profiled_rows`` of ``rows``).

Per column (the first :data:`MAX_PROFILED_COLUMNS`; ``unprofiled_columns`` counts the rest):
``count`` (values present), ``nulls`` (empty CSV cells; JSON ``null``, ``""`` or a missing key),
``distinct`` (exact, among the profiled values) and, for a numeric column (every present value
a number, NaN and infinities included), ``non_finite``, ``min``/``max``, ``mean``/``std`` over
the finite values (moments merged block by block with Chan's formula, so large offsets do not
cancel), ``quantiles`` at :data:`QUANTILES` (numpy's linear interpolation) and a
:data:`HISTOGRAM_BINS`-bin equal-width ``histogram``; for any other column the
:data:`TOP_VALUES` most frequent values with their counts (ties by value; a value longer than
:data:`MAX_VALUE_CHARS` characters is shown cut, with ``…``).

A Parquet version is profiled from its footer alone (:func:`footer_profile`): the row groups'
column statistics give ``count`` and ``nulls`` exactly over every row and, for the numeric
physical types, ``min``/``max``; distinct counts, moments, quantiles, histograms and top values
are not in a footer and are left empty (``note`` says so). Opaque formats are not profiled.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.core.errors import UnprocessableEntity
from chalicelib.core.moments import merged_moments
from chalicelib.dataversion.models import DatasetFormat
from chalicelib.dataversion.reader import DEFAULT_SAMPLE_ROWS, RecordSample, records_of
from chalicelib.dataversion.records import RecordSampler
from chalicelib.dataversion.schema import cell_types, cell_value, value_type

PROFILE_SAMPLE_ROWS = DEFAULT_SAMPLE_ROWS  # the reader's (and the drift route's) sample
MAX_PROFILED_COLUMNS = 64
TOP_VALUES = 10
MAX_VALUE_CHARS = 64
HISTOGRAM_BINS = 20
QUANTILES = (
    0.0,
    0.01,
    0.05,
    0.1,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.75,
    0.8,
    0.9,
    0.95,
    0.99,
    1.0,
)
MAX_PROFILE_BYTES = 200_000  # compressed; a DynamoDB item holds 400 KB
MOMENT_BLOCK = 4096


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of a stream of numbers, mergeable.

    The squared deviations are summed in units of ``scale`` (a power of two near the largest
    deviation), so that a spread whose square is outside float64 (values around 1e-190 or
    1e200) still has its standard deviation: squared directly, it would underflow to 0 or
    overflow to inf.

    Attributes:
        count: Values seen.
        mean: Their mean.
        m2: The sum of their squared deviations from the mean, divided by ``scale²``.
        scale: The unit of the deviations summed in ``m2`` (a power of two; 0 while every
            value seen is equal).
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    scale: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """The moments of ``values``: per block of :data:`MOMENT_BLOCK` by the corrected
        two-pass algorithm, blocks merged by Chan's update."""
        found = cls()
        if not len(values):
            return found
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float64: inf, shown as null
            # Shifted by a first estimate of the mean, so that block means stay small numbers
            # whose differences (Chan's delta) keep their digits.
            shift = float(np.mean(values[:MOMENT_BLOCK]))
            shifted = values - shift if math.isfinite(shift) else values
            for start in range(0, len(values), MOMENT_BLOCK):
                found = found.merge(cls._block(shifted[start : start + MOMENT_BLOCK]))
        if math.isfinite(shift):
            found.mean += shift
        exact = _uncancelled_mean(values, found.mean)
        if exact is not None:  # the float sums cancelled: deviations from the exact mean
            with np.errstate(over="ignore", invalid="ignore"):
                found = cls._block(values, exact)
        return found

    @classmethod
    def _block(cls, block: np.ndarray, exact: float | None = None) -> Moments:
        """One block's moments by the corrected two-pass sum (the rounding of the mean is
        taken back out) or around its ``exact`` mean, its deviations summed in units of their
        largest."""
        mean = float(np.mean(block)) if exact is None else exact
        deviations = block - mean
        scale = _unit(float(np.max(np.abs(deviations))))
        scaled = deviations / (scale or 1.0)
        drift = float(np.sum(scaled)) if exact is None else 0.0
        m2 = float(np.sum(scaled**2)) - drift * drift / len(block)
        return cls(len(block), mean + drift * scale / len(block), m2, scale)

    def merge(self, other: Moments) -> Moments:
        """The moments of both streams (Chan, Golub and LeVeque's pairwise update)."""
        if not other.count:
            return self
        if not self.count:
            return other
        count = self.count + other.count
        scale = max(self.scale, other.scale, _unit(abs(other.mean - self.mean)))
        if not scale:  # every value equal
            return Moments(count, self.mean, 0.0, 0.0)
        mean, m2 = merged_moments(
            self.count,
            self.mean,
            self.m2 * (self.scale / scale) ** 2,
            other.count,
            other.mean,
            other.m2 * (other.scale / scale) ** 2,
            unit=scale,
        )
        return Moments(count, mean, m2, scale)

    @property
    def std(self) -> float | None:
        """The sample standard deviation (``ddof=1``, as pandas); ``None`` under 2 values."""
        if self.count < 2:
            return None
        return self.scale * math.sqrt(max(self.m2, 0.0) / (self.count - 1))


def _uncancelled_mean(values: np.ndarray, mean: float) -> float | None:
    """The values' correctly rounded mean (:func:`math.fsum`) when they reach far above the
    ``mean`` float sums gave (``1e300`` and ``-1e300`` beside ordinary numbers: such a sum,
    numpy's pairwise one included, loses the small ones and answered 9e282 for 0.69) or when
    it overflowed over finite values; ``None`` when ``mean`` stands (below a ratio of 2**20
    the pairwise sums keep it to about 1e-9)."""
    with np.errstate(over="ignore", invalid="ignore"):
        largest = float(np.max(np.abs(values)))
    if not math.isfinite(largest) or (math.isfinite(mean) and largest <= abs(mean) * 2.0**20):
        return None
    try:
        return math.fsum(values.tolist()) / len(values)
    except OverflowError:  # a partial sum passed 1.8e308: sum the values scaled to fit
        scale = 2.0 ** -len(values).bit_length()  # exact but for subnormals' last bits
        return math.fsum((values * scale).tolist()) / scale / len(values)


def _unit(largest: float) -> float:
    """The power of two at or just above ``largest`` (0 for 0: no spread; 1 for inf or NaN,
    which the sums carry on)."""
    if largest == 0.0:
        return 0.0
    if not math.isfinite(largest):
        return 1.0
    return math.ldexp(1.0, min(math.frexp(largest)[1], 1023))  # 2**1024 is not a float


def _present(values: list[Any], kinds: set[type]) -> list[Any]:
    """The values that are neither ``None`` nor ``""`` (``kinds``: the values' types)."""
    if kinds.isdisjoint(_TEXT_OR_NONE):  # numbers, booleans, lists, objects: all present
        return values
    if kinds <= _TEXT_OR_NONE:  # CSV cells: the falsy ones are "" and None
        return list(filter(None, values))
    return [value for value in values if value not in (None, "")]


_TEXT_OR_NONE = frozenset({str, type(None)})


def _numbers(values: list[Any], kinds: set[type]) -> np.ndarray | None:
    """The values as float64 if every one is a number (or a string the schema types as a
    number: :func:`~chalicelib.dataversion.schema.cell_types`, ASCII digits only), else
    ``None`` (``kinds``: the values' types)."""
    if kinds - {str, int, float}:  # bool, dict, list: not numbers
        return None
    if str not in kinds:  # JSON numbers: no text to type
        texts: list[str] = []
    else:
        texts = values if kinds == {str} else [v for v in values if type(v) is str]
    if texts and not _typed_as_numbers(texts):
        return None
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:  # a hexadecimal int: read as the schema reads it
        return np.array([_number(value) for value in values], dtype=np.float64)
    except (TypeError, OverflowError):
        return None


def _typed_as_numbers(texts: list[str]) -> bool:
    """Whether the schema types a column of these cells as int or float
    (:func:`~chalicelib.dataversion.schema.cell_types`), decided without typing each distinct
    cell when every one is a plain decimal number (``-12``, ``3.25``, ``1e-5``: ints and
    floats in any mix) or when the first is no number (a cell that is neither an int nor a
    float keeps the column from both)."""
    joined = "\n".join(texts)
    if joined.count("\n") == len(texts) - 1 and _PLAIN_NUMBERS.fullmatch(joined):
        return True
    if value_type(texts[0]) not in _NUMERIC_KINDS:
        return False
    return cell_types(texts) <= _NUMERIC_KINDS


_PLAIN = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_PLAIN_NUMBERS = re.compile(rf"{_PLAIN}(?:\n{_PLAIN})*")  # one per line, ASCII digits
_NUMERIC_KINDS = frozenset({"int", "float"})


def _number(value: Any) -> float:
    return cell_value(value, "float") if type(value) is str else float(value)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def numeric_profile(numbers: np.ndarray) -> dict[str, Any]:
    """The numeric part of a column profile."""
    finite = numbers[np.isfinite(numbers)]
    found: dict[str, Any] = {
        "kind": "numeric",
        "distinct": int(len(np.unique(numbers))),
        "non_finite": int(len(numbers) - len(finite)),
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "quantiles": None,
        "histogram": None,
        "top": [],
    }
    if not len(finite):
        return found
    moments = Moments.of(finite)
    low, high = float(finite.min()), float(finite.max())
    found.update(
        min=low,
        max=high,
        mean=_finite_or_none(moments.mean),
        std=None if moments.std is None else _finite_or_none(moments.std),
        quantiles=[float(q) for q in np.quantile(finite, QUANTILES)],
    )
    found["histogram"] = _histogram(finite, low, high)
    return found


def _histogram(finite: np.ndarray, low: float, high: float) -> dict[str, list] | None:
    """Equal-width bins over ``[low, high]``; ``None`` when the range overflows float64 or is
    too narrow for distinct edges (subnormal spreads)."""
    if not math.isfinite(high - low):
        return None
    try:
        counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
    except ValueError:
        return None
    return {"edges": edges.tolist(), "counts": counts.tolist()}


_BOOLEANS = {True: "true", False: "false"}


def _category(value: Any) -> str:
    """A value as counted among a column's top values: a string as itself, anything else as
    its JSON text (a boolean without a call to ``json.dumps``: JSON lines flags are common)."""
    if isinstance(value, str):
        return value
    if type(value) is bool:
        return _BOOLEANS[value]
    return json.dumps(value, sort_keys=True)


def _most_frequent(counts: Counter[str]) -> list[tuple[str, int]]:
    """The :data:`TOP_VALUES` most frequent values, ties by value: sorted among the values
    counted at least as often as the :data:`TOP_VALUES`-th count (sorting the counts alone is
    a C sort; only those candidates are keyed in Python)."""
    if len(counts) > TOP_VALUES:
        least = sorted(counts.values(), reverse=True)[TOP_VALUES - 1]
        candidates = [item for item in counts.items() if item[1] >= least]
    else:
        candidates = list(counts.items())
    return sorted(candidates, key=lambda item: (-item[1], item[0]))[:TOP_VALUES]


def categorical_profile(values: list[Any]) -> dict[str, Any]:
    """The categorical part of a column profile."""
    kinds = set(map(type, values))
    if kinds == {str}:  # CSV cells, JSON strings
        counts = Counter(values)
    elif kinds == {bool}:  # JSON flags: counted as they are, named once per value
        counts = Counter({_BOOLEANS[flag]: count for flag, count in Counter(values).items()})
    else:
        counts = Counter(map(_category, values))
    top = _most_frequent(counts)
    return {
        "kind": "categorical",
        "distinct": len(counts),
        "top": [{"value": _shown(value), "count": count} for value, count in top],
    }


def column_profile(name: str, values: list[Any]) -> dict[str, Any]:
    """The profile of one column from its profiled values (``None``/``""``: empty)."""
    kinds = set(map(type, values))
    present = _present(values, kinds)
    numbers = _numbers(present, kinds - {type(None)}) if present else None
    found: dict[str, Any] = {
        "name": name,
        "count": len(present),
        "nulls": len(values) - len(present),
    }
    if numbers is not None:
        found.update(numeric_profile(numbers))
    elif present:
        found.update(categorical_profile(present))
    else:
        found.update(kind="empty", distinct=0, top=[])
    return found


def build_profile(
    sample: RecordSample, columns_limit: int = MAX_PROFILED_COLUMNS
) -> dict[str, Any]:
    """The profile of a version from its sampled records."""
    columns = sample.columns[:columns_limit]
    return {
        "rows": sample.total,
        "profiled_rows": sample.size,
        "sampled": sample.size < sample.total,
        "unprofiled_columns": len(sample.columns) - len(columns),
        "columns": [column_profile(name, sample.values(name)) for name in columns],
        "note": None,
    }


def profile_of_scan(
    sampler: RecordSampler, records: int, fmt: DatasetFormat
) -> tuple[dict[str, Any], RecordSample | None]:
    """The profile of a scanned version from the uniform sample its scan drew, and that
    sample's records.

    Records the sample cannot be read as (not UTF-8, not JSON) leave an empty profile with a
    ``note`` saying why (and no records): the version is still created, as before profiles
    existed.
    """
    try:
        sample = records_of(sampler, records, fmt)
    except UnprocessableEntity as exc:
        total = max(records - 1, 0) if fmt is DatasetFormat.CSV else records
        return {
            "rows": total,
            "profiled_rows": 0,
            "sampled": total > 0,
            "unprofiled_columns": 0,
            "columns": [],
            "note": f"not profiled: {exc.message}",
        }, None
    return build_profile(sample), sample


FOOTER_NOTE = (
    "from the Parquet footer's column statistics: count, nulls, min and max are exact over "
    "every row (min and max for numeric columns); distinct counts, moments, quantiles, "
    "histograms and top values are not in the footer"
)
_NUMERIC_TYPES = frozenset({"int", "long", "float", "double"})


def footer_profile(footer: Any, columns_limit: int = MAX_PROFILED_COLUMNS) -> dict[str, Any]:
    """The profile of a Parquet version from its footer (a ``parquet.ParquetMetadata``).

    Columns whose row groups do not all carry statistics, and repeated ones (lists, maps), are
    counted in ``unprofiled_columns``.
    """
    known = [name for name in footer.columns if name in footer.statistics]
    shown = known[:columns_limit]
    return {
        "rows": footer.num_rows,
        "profiled_rows": footer.num_rows,
        "sampled": False,
        "unprofiled_columns": len(footer.columns) - len(shown),
        "columns": [
            _footer_column(name, footer.columns[name], footer.statistics[name], footer.num_rows)
            for name in shown
        ],
        "note": FOOTER_NOTE,
    }


def _footer_column(name: str, kind: str, stats: Any, rows: int) -> dict[str, Any]:
    count = rows - stats.nulls
    found: dict[str, Any] = {"name": name, "count": count, "nulls": stats.nulls, "top": []}
    if count <= 0:
        found.update(kind="empty", distinct=0)
    elif kind in _NUMERIC_TYPES:
        found.update(kind="numeric", distinct=None, non_finite=None, min=stats.low)
        found.update(max=stats.high, mean=None, std=None, quantiles=None, histogram=None)
    else:
        found.update(kind="categorical", distinct=None)
    return found


def encode_profile(profile: dict[str, Any]) -> bytes:
    """A profile as compressed JSON, at most :data:`MAX_PROFILE_BYTES`: columns are dropped
    from the end (counted in ``unprofiled_columns``) until it fits."""
    found = dict(profile)
    while True:
        text = json.dumps(found, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        blob = zlib.compress(text.encode("utf-8"), 6)
        if len(blob) <= MAX_PROFILE_BYTES or not found["columns"]:
            return blob
        keep = len(found["columns"]) // 2
        found["unprofiled_columns"] += len(found["columns"]) - keep
        found["columns"] = found["columns"][:keep]


def decode_profile(blob: bytes) -> dict[str, Any]:
    """A profile stored by :func:`encode_profile`."""
    return json.loads(zlib.decompress(blob).decode("utf-8"))


__all__ = [
    "MAX_PROFILED_COLUMNS",
    "PROFILE_SAMPLE_ROWS",
    "Moments",
    "build_profile",
    "column_profile",
    "decode_profile",
    "encode_profile",
    "footer_profile",
    "profile_of_scan",
]
