"""Drift between two versions of a dataset: per column, the population stability index and a
two-sample test (Kolmogorov-Smirnov for numbers, chi-square for categories) with its p-value,
and the schema diff.

Both versions are read once each as a seeded uniform sample of at most ``sample_rows`` records
(:func:`~chalicelib.dataversion.reader.sample_records`; sha256-verified), so the answer for a
large version describes a sample of it (``sampled_rows``), and the same versions always give the
same answer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chalicelib.dataversion.models import ColumnDrift, CompatibilityMode, DatasetVersion
from chalicelib.dataversion.reader import RecordSample, sample_records
from chalicelib.dataversion.schema import evolution_report
from chalicelib.dataversion.storage import DataStore

DRIFT_SAMPLE_ROWS = 10_000
PSI_BINS = 10
PSI_FLOOR = 1e-4  # share given to an empty bin, so that the index stays finite
MAX_CATEGORIES = 50
OTHER = "(other)"


def _values(sample: RecordSample, column: str) -> tuple[list[Any], int]:
    raw = sample.values(column)
    present = [value for value in raw if value not in (None, "")]
    return present, len(raw) - len(present)


def _numbers(values: list[Any]) -> np.ndarray | None:
    try:
        found = np.array([float(value) for value in values if not isinstance(value, bool)])
    except (TypeError, ValueError):
        return None
    if len(found) != len(values) or not np.isfinite(found).all():
        return None
    return found


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """The population stability index of two share vectors over the same bins."""
    p = np.maximum(expected, PSI_FLOOR)
    q = np.maximum(actual, PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_drift(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """(PSI over the deciles of ``a``, KS statistic, KS p-value)."""
    from scipy import stats

    if not len(a) or not len(b):
        return None, None, None
    edges = np.unique(np.quantile(a, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    shares_a = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1)
    shares_b = np.bincount(np.searchsorted(edges, b, side="right"), minlength=len(edges) + 1)
    index = psi(shares_a / len(a), shares_b / len(b))
    test = stats.ks_2samp(a, b)
    return index, float(test.statistic), float(test.pvalue)


def categorical_drift(
    a: list[Any], b: list[Any]
) -> tuple[float | None, float | None, float | None]:
    """(PSI over categories, chi-square statistic, p-value); categories beyond the
    ``MAX_CATEGORIES`` most frequent in ``a`` count together."""
    from scipy import stats

    if not a or not b:
        return None, None, None
    names_a, counts_a = np.unique([str(v) for v in a], return_counts=True)
    top = set(names_a[np.argsort(-counts_a, kind="stable")][:MAX_CATEGORIES].tolist())
    keys = sorted(top) + [OTHER]
    position = {name: i for i, name in enumerate(keys)}
    table = np.zeros((2, len(keys)))
    for row, values in enumerate((a, b)):
        for value in values:
            table[row, position.get(str(value), len(keys) - 1)] += 1
    table = table[:, table.sum(axis=0) > 0]
    index = psi(table[0] / table[0].sum(), table[1] / table[1].sum())
    if table.shape[1] < 2:
        return index, 0.0, 1.0
    test = stats.chi2_contingency(table, correction=False)
    return index, float(test.statistic), float(test.pvalue)


def column_drift(column: str, a: RecordSample, b: RecordSample) -> ColumnDrift:
    """The drift of one column."""
    values_a, nulls_a = _values(a, column)
    values_b, nulls_b = _values(b, column)
    numbers_a, numbers_b = _numbers(values_a), _numbers(values_b)
    if numbers_a is not None and numbers_b is not None and (len(numbers_a) or len(numbers_b)):
        kind, test = "numeric", "ks"
        index, statistic, p_value = numeric_drift(numbers_a, numbers_b)
    else:
        kind, test = "categorical", "chi2"
        index, statistic, p_value = categorical_drift(values_a, values_b)
    return ColumnDrift(
        column=column,
        kind=kind,
        psi=index,
        test=test,
        statistic=statistic,
        p_value=p_value,
        nulls={"a": _share(nulls_a, a.size), "b": _share(nulls_b, b.size)},
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def drift_report(
    store: DataStore,
    a: DatasetVersion,
    b: DatasetVersion,
    mode: CompatibilityMode,
    sample_rows: int = DRIFT_SAMPLE_ROWS,
) -> dict[str, Any]:
    """Per-column drift from ``a`` to ``b`` and their schema diff under ``mode``."""
    left = sample_records(store, a, sample_rows)
    right = sample_records(store, b, sample_rows)
    shared = [column for column in left.columns if column in right.columns]
    changes: list[str] = []
    problems: list[str] = []
    if a.schema is not None and b.schema is not None:
        changes, problems = evolution_report(a.schema, b.schema, mode)
    return {
        "a": {"version_id": a.version_id, "version_number": a.version_number},
        "b": {"version_id": b.version_id, "version_number": b.version_number},
        "rows": {"a": left.total, "b": right.total},
        "sampled_rows": {"a": left.size, "b": right.size},
        "schema": {
            "added": [c for c in right.columns if c not in left.columns],
            "removed": [c for c in left.columns if c not in right.columns],
            "changes": changes,
            "incompatible": problems,
        },
        "columns": [_finite(column_drift(column, left, right).__dict__) for column in shared],
    }


def _finite(found: dict[str, Any]) -> dict[str, Any]:
    """NaN statistics (constant samples) as ``None``: JSON has no NaN."""
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in found.items()
    }
