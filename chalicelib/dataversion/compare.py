"""Differences between two versions: schema, row counts and rows."""

from __future__ import annotations

from collections import Counter
from typing import Any

from chalicelib.dataversion.models import TABULAR_FORMATS, DatasetSchema, DatasetVersion
from chalicelib.dataversion.reader import read_verified
from chalicelib.dataversion.storage import DataStore
from chalicelib.dataversion.transforms import MAX_TRANSFORM_BYTES, Table, _text, load_version_table


def schema_diff(a: DatasetSchema | None, b: DatasetSchema | None) -> dict[str, Any]:
    """Columns added, removed and retyped from ``a`` to ``b``."""
    old = a.columns if a else {}
    new = b.columns if b else {}
    return {
        "same": (a.compute_hash() if a else None) == (b.compute_hash() if b else None),
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "type_changed": {
            name: {"from": old[name], "to": new[name]}
            for name in sorted(set(old) & set(new))
            if old[name] != new[name]
        },
        "primary_key_changed": (a.primary_key if a else []) != (b.primary_key if b else []),
    }


def _records(table: Table, columns: list[str]) -> list[tuple[str, ...]]:
    positions = [table.columns.index(name) if name in table.columns else None for name in columns]
    return [tuple("" if p is None else _text(row[p]) for p in positions) for row in table.rows]


def _as_dicts(columns: list[str], rows: list[tuple[str, ...]]) -> list[dict[str, str]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def row_diff(left: Table, right: Table, primary_key: list[str], sample: int) -> dict[str, Any]:
    """Rows added, removed and (with a primary key) changed, with a bounded sample of each."""
    columns = list(dict.fromkeys(left.columns + right.columns))
    old, new = _records(left, columns), _records(right, columns)
    if primary_key and all(k in left.columns and k in right.columns for k in primary_key):
        keys = [columns.index(k) for k in primary_key]
        before = {tuple(r[i] for i in keys): r for r in old}
        after = {tuple(r[i] for i in keys): r for r in new}
        added = [after[k] for k in after if k not in before]
        removed = [before[k] for k in before if k not in after]
        changed = [
            {
                "before": dict(zip(columns, before[k], strict=True)),
                "after": dict(zip(columns, after[k], strict=True)),
            }
            for k in after
            if k in before and before[k] != after[k]
        ]
        return {
            "mode": "primary_key",
            "added": len(added),
            "removed": len(removed),
            "changed": len(changed),
            "added_sample": _as_dicts(columns, added[:sample]),
            "removed_sample": _as_dicts(columns, removed[:sample]),
            "changed_sample": changed[:sample],
        }
    counts_old, counts_new = Counter(old), Counter(new)
    added_rows = list((counts_new - counts_old).elements())
    removed_rows = list((counts_old - counts_new).elements())
    return {
        "mode": "multiset",
        "added": len(added_rows),
        "removed": len(removed_rows),
        "changed": None,
        "added_sample": _as_dicts(columns, added_rows[:sample]),
        "removed_sample": _as_dicts(columns, removed_rows[:sample]),
        "changed_sample": [],
    }


def compare_versions(
    store: DataStore, a: DatasetVersion, b: DatasetVersion, sample: int = 20
) -> dict[str, Any]:
    """Schema diff, row-count diff and row-level changes from ``a`` to ``b``.

    Row-level changes need CSV / JSON-lines content within the in-memory limit; otherwise
    ``rows`` is ``None`` and ``rows_note`` says why.
    """
    result: dict[str, Any] = {
        "a": a.version_id,
        "b": b.version_id,
        "same_content": a.sha256 == b.sha256,
        "schema": schema_diff(a.schema, b.schema),
        "row_count": {
            "a": a.row_count,
            "b": b.row_count,
            "diff": None
            if a.row_count is None or b.row_count is None
            else b.row_count - a.row_count,
        },
        "rows": None,
        "rows_note": None,
    }
    tabular = a.format in TABULAR_FORMATS and b.format in TABULAR_FORMATS
    if not tabular:
        result["rows_note"] = "row-level comparison needs csv or json content"
        return result
    if max(a.size_bytes, b.size_bytes) > MAX_TRANSFORM_BYTES:
        result["rows_note"] = f"row-level comparison is limited to {MAX_TRANSFORM_BYTES} bytes"
        return result
    left = load_version_table(read_verified(store, a), a)
    right = load_version_table(read_verified(store, b), b)
    key = (b.schema.primary_key if b.schema else []) or (a.schema.primary_key if a.schema else [])
    result["rows"] = row_diff(left, right, list(key), sample)
    return result
