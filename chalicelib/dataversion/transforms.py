"""Declarative, deterministic transformations that the service itself executes.

No user code runs: a transformation is a validated spec (filter, map, join, aggregate, sample,
split, normalization). Outputs are serialized as canonical CSV (fixed column order, ``\\n`` line
ends, minimal quoting, shortest round-trip floats, ``true``/``false``, empty for null), so
running the same spec on the same input always yields byte-identical content and therefore the
same content hash: that is what makes replay verifiable. Feature engineering and augmentation
done outside the service are recorded as *external* steps with a ``code_hash``; they are not
replayable.

Transformations work on rows in memory, so their inputs are limited to
:data:`MAX_TRANSFORM_BYTES` (413 beyond); ingest itself streams and has no such limit.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from chalicelib.core.schema import Schema
from chalicelib.dataversion.errors import TransformError, UnreadableContent
from chalicelib.dataversion.legacy_typing import legacy_cell_value
from chalicelib.dataversion.models import (
    DatasetFormat,
    DatasetSchema,
    DatasetVersion,
    TransformationType,
)
from chalicelib.dataversion.schema import (
    cell_value,
    column_type,
    json_value_type,
    merge_types,
    parse_csv_sample,
    parse_jsonl_sample,
)

MAX_TRANSFORM_BYTES = 200 * 1024 * 1024
NUMERIC = frozenset({"int", "long", "float", "double"})


# ---- specs ----------------------------------------------------------------------------------


class _Spec(Schema):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Predicate(_Spec):
    """One column condition; a filter keeps rows meeting all of them (nulls fail comparisons)."""

    column: str
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "is_null", "not_null"]
    value: Any = None


class FilterSpec(_Spec):
    """Keep rows matching every predicate."""

    type: Literal["filter"]
    predicates: list[Predicate] = Field(min_length=1, max_length=50)


class MapSpec(_Spec):
    """Select (and order) columns, then rename them."""

    type: Literal["map"]
    select: list[str] | None = Field(default=None, min_length=1)
    rename: dict[str, str] = Field(default_factory=dict)


class JoinSpec(_Spec):
    """Join the first source (left) with the second (right) on key columns."""

    type: Literal["join"]
    on: list[str] = Field(min_length=1)
    how: Literal["inner", "left"] = "inner"


class Aggregation(_Spec):
    """One aggregate column."""

    func: Literal["sum", "mean", "count", "min", "max"]
    column: str | None = None
    name: str | None = None


class AggregateSpec(_Spec):
    """Group by columns and aggregate (groups sorted by key)."""

    type: Literal["aggregate"]
    group_by: list[str] = Field(default_factory=list)
    aggregations: list[Aggregation] = Field(min_length=1)


class SampleSpec(_Spec):
    """A seeded random sample of rows (original order kept)."""

    type: Literal["sample"]
    seed: int
    fraction: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=0)


class SplitSpec(_Spec):
    """A seeded train/test split (two outputs, ``train`` and ``test``)."""

    type: Literal["split"]
    seed: int
    test_fraction: float = Field(gt=0, lt=1)


class NormalizationSpec(_Spec):
    """Z-score or min-max scaling of numeric columns; the fitted values are recorded."""

    type: Literal["normalization"]
    columns: list[str] = Field(min_length=1)
    method: Literal["zscore", "minmax"] = "zscore"


class ExternalSpec(_Spec):
    """A step run outside the service (recorded, not replayable)."""

    type: Literal["feature_engineering", "augmentation"]
    code_hash: str = Field(min_length=8, max_length=128)
    description: str = Field(default="", max_length=2000)


TransformSpec = Annotated[
    FilterSpec
    | MapSpec
    | JoinSpec
    | AggregateSpec
    | SampleSpec
    | SplitSpec
    | NormalizationSpec
    | ExternalSpec,
    Field(discriminator="type"),
]

SOURCES_NEEDED = {"join": 2}


def parse_spec(data: dict[str, Any]) -> Any:
    """Validates a spec dict.

    Raises:
        ValidationError: Naming the offending field (400).
    """
    from chalicelib.core.http import parse_model

    return parse_model(TransformSpec, data, "transformation")


def spec_type(spec: Any) -> TransformationType:
    """The recorded type of a spec."""
    return TransformationType(spec.type)


def is_replayable(spec: Any) -> bool:
    """Whether the service can re-execute the spec."""
    return not isinstance(spec, ExternalSpec)


# ---- tables ---------------------------------------------------------------------------------


@dataclass
class Table:
    """Rows with typed values (``int``, ``float``, ``bool``, ``str`` or ``None``).

    Attributes:
        columns: Column names in order.
        rows: One list of values per row.
        types: Column → type name.
    """

    columns: list[str]
    rows: list[list[Any]]
    types: dict[str, str] = field(default_factory=dict)

    def index(self, column: str) -> int:
        """Position of ``column``.

        Raises:
            TransformError: Unknown column.
        """
        try:
            return self.columns.index(column)
        except ValueError:
            raise TransformError(
                f"column '{column}' does not exist; columns are {self.columns}"
            ) from None


def _cast(text: str, kind: str, column: str, read: Callable[[str, str], Any]) -> Any:
    if text == "":
        return None
    try:
        return read(text, kind)
    except ValueError:
        raise TransformError(f"column '{column}': '{text}' is not a {kind}") from None
    except OverflowError:
        raise TransformError(
            f"column '{column}' holds a number too large to compute with (beyond a double's range)"
        ) from None


def load_version_table(data: bytes, version: DatasetVersion) -> Table:
    """``data`` as a table typed by ``version``'s schema, its CSV cells read by the rule that
    typed that schema (a version stored before pyarrow's rule: as that earlier rule read them).
    """
    earlier = version.format is DatasetFormat.CSV and version.cell_typing is None
    read = legacy_cell_value if earlier else cell_value
    return load_table(data, version.format, version.schema, read)


def load_table(
    data: bytes,
    fmt: DatasetFormat,
    schema: DatasetSchema | None = None,
    read: Callable[[str, str], Any] = cell_value,
) -> Table:
    """Parses CSV or JSON-lines content into a typed table.

    Args:
        data: The content.
        fmt: ``csv`` or ``json``.
        schema: Types to cast to (default: inferred from every row).
        read: How a non-empty CSV cell is read as a type (``schema.cell_value``).

    Raises:
        PayloadTooLarge: Over :data:`MAX_TRANSFORM_BYTES`.
        TransformError: Another format, or values that do not fit the schema.
    """
    check_size(len(data))
    if fmt is DatasetFormat.CSV:
        header, raw = parse_csv_sample(data, len(data) + 1, complete=True)
        types = dict(schema.columns) if schema else {}
        for position, name in enumerate(header):
            if name not in types:
                types[name] = column_type(row[position] for row in raw)
        kinds = [types[name] for name in header]
        rows = [
            [_cast(cell, kinds[i], header[i], read) for i, cell in enumerate(row)] for row in raw
        ]
        return Table(list(header), rows, {name: types[name] for name in header})
    if fmt is DatasetFormat.JSON:
        return _json_table(parse_jsonl_sample(data, len(data) + 1, complete=True))
    raise TransformError(f"transformations need csv or json content, not {fmt.value}")


def _json_table(records: list[dict[str, Any]]) -> Table:
    columns: dict[str, None] = {}
    for record in records:
        for key in record:
            columns.setdefault(key, None)
    names = list(columns)
    types: dict[str, str] = {}
    for name in names:
        kind: str | None = None
        for record in records:
            kind = merge_types(kind, json_value_type(record.get(name)))
        types[name] = kind or "string"
    rows = [[_json_value(record.get(name)) for name in names] for record in records]
    return Table(names, rows, types)


def _json_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def check_size(size: int) -> None:
    """Refuses inputs over the in-memory limit.

    Raises:
        PayloadTooLarge: Over :data:`MAX_TRANSFORM_BYTES`.
    """
    from chalicelib.core.errors import PayloadTooLarge

    if size > MAX_TRANSFORM_BYTES:
        raise PayloadTooLarge(
            f"transformation input is {size} bytes; the limit is {MAX_TRANSFORM_BYTES}"
        )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return repr(value)
    try:
        return str(value)
    except ValueError:  # an integer over Python's 4,300-digit conversion limit (a huge sum)
        raise TransformError("a result is too large to write as text") from None


def to_csv_bytes(table: Table) -> bytes:
    """Canonical CSV of a table (see the module docstring)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_text(value) for value in row])
    return out.getvalue().encode("utf-8")


# ---- operations -----------------------------------------------------------------------------


@dataclass
class TransformResult:
    """Outputs by role (``output``, or ``train``/``test``) and the values fitted on the data."""

    outputs: dict[str, Table]
    fitted: dict[str, Any] = field(default_factory=dict)


def _comparable(value: Any, kind: str) -> Any:
    if value is None or kind not in NUMERIC:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TransformError(f"cannot compare a {kind} column with {value!r}")
    try:
        return float(value)
    except ValueError:
        raise TransformError(f"'{value}' is not a number") from None


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
}


def _predicate(table: Table, predicate: Predicate) -> Callable[[list[Any]], bool]:
    position = table.index(predicate.column)
    kind = table.types.get(predicate.column, "string")
    if predicate.op == "is_null":
        return lambda row: row[position] is None
    if predicate.op == "not_null":
        return lambda row: row[position] is not None
    if predicate.op in ("in", "not_in"):
        if not isinstance(predicate.value, list):
            raise TransformError(f"'{predicate.op}' needs a list value")
        target: Any = {_comparable(v, kind) for v in predicate.value}
    else:
        target = _comparable(predicate.value, kind)
    compare = _COMPARE[predicate.op]

    def check(row: list[Any]) -> bool:
        value = row[position]
        if value is None:
            return False
        try:
            return compare(_comparable(value, kind), target)
        except TypeError:
            raise TransformError(
                f"cannot compare column '{predicate.column}' with {predicate.value!r}"
            ) from None

    return check


def run_filter(spec: FilterSpec, table: Table) -> TransformResult:
    checks = [_predicate(table, predicate) for predicate in spec.predicates]
    rows = [row for row in table.rows if all(check(row) for check in checks)]
    return TransformResult({"output": Table(table.columns, rows, table.types)})


def run_map(spec: MapSpec, table: Table) -> TransformResult:
    selected = spec.select or table.columns
    positions = [table.index(name) for name in selected]
    for old in spec.rename:
        if old not in selected:
            raise TransformError(f"cannot rename '{old}': it is not a selected column")
    names = [spec.rename.get(name, name) for name in selected]
    if len(set(names)) != len(names):
        raise TransformError(f"the mapped columns are not unique: {names}")
    rows = [[row[p] for p in positions] for row in table.rows]
    types = {spec.rename.get(n, n): table.types.get(n, "string") for n in selected}
    return TransformResult({"output": Table(names, rows, types)})


def run_join(spec: JoinSpec, left: Table, right: Table) -> TransformResult:
    left_keys = [left.index(name) for name in spec.on]
    right_keys = [right.index(name) for name in spec.on]
    extra = [i for i, name in enumerate(right.columns) if name not in spec.on]
    names = list(left.columns) + [
        f"{right.columns[i]}_right" if right.columns[i] in left.columns else right.columns[i]
        for i in extra
    ]
    matches: dict[tuple[Any, ...], list[list[Any]]] = {}
    for row in right.rows:
        key = tuple(row[i] for i in right_keys)
        if None not in key:
            matches.setdefault(key, []).append([row[i] for i in extra])
    missing = [None] * len(extra)
    rows: list[list[Any]] = []
    for row in left.rows:
        found = matches.get(tuple(row[i] for i in left_keys), [])
        rows.extend(row + tail for tail in found)
        if not found and spec.how == "left":
            rows.append(row + missing)
    types = dict(left.types)
    types.update(
        {
            names[len(left.columns) + j]: right.types.get(right.columns[i], "string")
            for j, i in enumerate(extra)
        }
    )
    return TransformResult({"output": Table(names, rows, types)})


def _aggregate(func: str, values: list[Any]) -> Any:
    present = [value for value in values if value is not None]
    if func == "count":
        return len(present)
    if not present:
        return None
    if func == "min":
        return min(present)
    if func == "max":
        return max(present)
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in present):
        raise TransformError(f"'{func}' needs a numeric column")
    if func == "sum":
        exact = all(isinstance(v, int) for v in present)
        return sum(present) if exact else math.fsum(present)
    return math.fsum(present) / len(present)


def run_aggregate(spec: AggregateSpec, table: Table) -> TransformResult:
    keys = [table.index(name) for name in spec.group_by]
    columns = [None if agg.column is None else table.index(agg.column) for agg in spec.aggregations]
    for agg, position in zip(spec.aggregations, columns, strict=True):
        if position is None and agg.func != "count":
            raise TransformError(f"'{agg.func}' needs a column")
    groups: dict[tuple[Any, ...], list[list[Any]]] = {}
    for row in table.rows:
        groups.setdefault(tuple(row[i] for i in keys), []).append(row)
    ordered = sorted(groups, key=lambda key: [(v is None, str(type(v)), v) for v in key])
    names = list(spec.group_by) + [
        agg.name or (agg.func if agg.column is None else f"{agg.func}_{agg.column}")
        for agg in spec.aggregations
    ]
    rows = []
    for key in ordered:
        members = groups[key]
        values = [
            len(members)
            if position is None
            else _aggregate(agg.func, [row[position] for row in members])
            for agg, position in zip(spec.aggregations, columns, strict=True)
        ]
        rows.append(list(key) + values)
    return TransformResult({"output": Table(names, rows)})


def run_sample(spec: SampleSpec, table: Table) -> TransformResult:
    if (spec.fraction is None) == (spec.n is None):
        raise TransformError("a sample needs exactly one of 'fraction' or 'n'")
    total = len(table.rows)
    wanted = spec.n if spec.n is not None else round(total * (spec.fraction or 0))
    chosen = sorted(random.Random(spec.seed).sample(range(total), min(wanted, total)))
    rows = [table.rows[i] for i in chosen]
    return TransformResult({"output": Table(table.columns, rows, table.types)})


def run_split(spec: SplitSpec, table: Table) -> TransformResult:
    order = list(range(len(table.rows)))
    random.Random(spec.seed).shuffle(order)
    cut = round(len(order) * spec.test_fraction)
    test, train = sorted(order[:cut]), sorted(order[cut:])
    return TransformResult(
        {
            "train": Table(table.columns, [table.rows[i] for i in train], table.types),
            "test": Table(table.columns, [table.rows[i] for i in test], table.types),
        },
        {"train_rows": len(train), "test_rows": len(test)},
    )


def _fit(method: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "std": 0.0} if method == "zscore" else {"min": 0.0, "max": 0.0}
    if method == "zscore":
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        return {"mean": mean, "std": std}
    return {"min": float(min(values)), "max": float(max(values))}


def _scale(method: str, fitted: dict[str, float], value: float) -> float:
    if method == "zscore":
        return 0.0 if fitted["std"] == 0 else (value - fitted["mean"]) / fitted["std"]
    spread = fitted["max"] - fitted["min"]
    return 0.0 if spread == 0 else (value - fitted["min"]) / spread


def run_normalization(spec: NormalizationSpec, table: Table) -> TransformResult:
    rows = [list(row) for row in table.rows]
    types = dict(table.types)
    fitted: dict[str, Any] = {"method": spec.method, "columns": {}}
    for name in spec.columns:
        position = table.index(name)
        if table.types.get(name) not in NUMERIC:
            raise TransformError(f"column '{name}' is not numeric")
        values = [float(row[position]) for row in rows if row[position] is not None]
        params = _fit(spec.method, values)
        fitted["columns"][name] = params
        for row in rows:
            if row[position] is not None:
                row[position] = _scale(spec.method, params, float(row[position]))
        types[name] = "float"
    return TransformResult({"output": Table(table.columns, rows, types)}, fitted)


def run(spec: Any, sources: list[Table]) -> TransformResult:
    """Executes a replayable spec on source tables (deterministically).

    Raises:
        TransformError: Wrong number of sources, unknown columns, bad values, or an external spec.
    """
    needed = SOURCES_NEEDED.get(spec.type, 1)
    if len(sources) != needed:
        raise TransformError(f"'{spec.type}' takes {needed} source version(s); got {len(sources)}")
    try:
        return _run(spec, sources)
    except OverflowError:
        # Data values are kept as written; an integer beyond a double's range cannot be
        # compared with a float, averaged or scaled.
        raise TransformError(
            f"'{spec.type}' met a number too large to compute with (beyond a double's range)"
        ) from None


def _run(spec: Any, sources: list[Table]) -> TransformResult:
    if isinstance(spec, JoinSpec):
        return run_join(spec, sources[0], sources[1])
    runners: dict[type, Callable[[Any, Table], TransformResult]] = {
        FilterSpec: run_filter,
        MapSpec: run_map,
        AggregateSpec: run_aggregate,
        SampleSpec: run_sample,
        SplitSpec: run_split,
        NormalizationSpec: run_normalization,
    }
    runner = runners.get(type(spec))
    if runner is None:
        raise TransformError(f"'{spec.type}' steps run outside the service and cannot be executed")
    return runner(spec, sources[0])


__all__ = [
    "MAX_TRANSFORM_BYTES",
    "Table",
    "TransformError",
    "TransformResult",
    "UnreadableContent",
    "load_table",
    "parse_spec",
    "run",
    "to_csv_bytes",
]
