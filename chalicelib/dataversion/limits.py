"""Drift limits: a new version checked against the version it follows.

The drift of each column is computed exactly as ``GET /datasets/{id}/drift`` computes it
(:func:`~chalicelib.dataversion.drift.column_drift` on the seeded uniform samples of both
versions): the new version's sample is the one drawn while it was hashed, the earlier one's is
read again (sha256-verified). So a version flagged at ingest shows the same figures in the
drift route.
"""

from __future__ import annotations

import math
from typing import Any

from chalicelib.core.errors import SynapseError
from chalicelib.dataversion.drift import DRIFT_SAMPLE_ROWS, column_drift
from chalicelib.dataversion.models import DatasetVersion, DriftLimits
from chalicelib.dataversion.reader import RecordSample, sample_records
from chalicelib.dataversion.storage import DataStore


def breaches(
    limits: DriftLimits, before: RecordSample, after: RecordSample
) -> list[dict[str, Any]]:
    """The columns whose drift from ``before`` to ``after`` exceeds the limits."""
    shared = [column for column in after.columns if column in before.columns]
    found = []
    for column in shared:
        if limits.columns and column not in limits.columns:
            continue
        drift = column_drift(column, before, after)
        reasons = []
        if _beyond(drift.psi, limits.psi, above=True):
            reasons.append(f"psi {drift.psi:.4g} > {limits.psi:g}")
        if _beyond(drift.p_value, limits.p_value, above=False):
            reasons.append(f"{drift.test} p-value {drift.p_value:.3g} < {limits.p_value:g}")
        if reasons:
            found.append(
                {
                    "column": column,
                    "kind": drift.kind,
                    "test": drift.test,
                    "psi": drift.psi,
                    "p_value": drift.p_value,
                    "reasons": reasons,
                }
            )
    return found


def _beyond(value: float | None, limit: float | None, above: bool) -> bool:
    """Whether a finite ``value`` is above (or below) a declared ``limit``."""
    if value is None or limit is None or not math.isfinite(value):
        return False
    return value > limit if above else value < limit


def check_limits(
    store: DataStore,
    limits: DriftLimits,
    before: DatasetVersion,
    after: DatasetVersion,
    sample: RecordSample | None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """(warnings for the new version, the columns in breach) of ``after`` against ``before``.

    ``sample`` is the new version's sample when its ingest drew one (else it is read). A check
    that cannot run (the earlier version's bytes fail verification, its records cannot be read)
    gives a warning saying so rather than failing the version.
    """
    try:
        earlier = sample_records(store, before, DRIFT_SAMPLE_ROWS)
        later = sample if sample is not None else sample_records(store, after, DRIFT_SAMPLE_ROWS)
        found = breaches(limits, earlier, later)
    except SynapseError as exc:
        return [
            f"drift limits not checked against version {before.version_number}: {exc.message}"
        ], []
    warnings = [
        f"drift against version {before.version_number}: column {item['column']}: "
        + "; ".join(item["reasons"])
        for item in found
    ]
    return warnings, found
