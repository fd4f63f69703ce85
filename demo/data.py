"""The demo's training data: scikit-learn's breast cancer dataset as a "raw hospital export" CSV.

The raw export keeps scikit-learn's column names (with spaces), a patient id and a text label.
To give the cleaning step something real to do, the demo blanks one cell in a few seeded rows and
says so in its output; the service's declarative filter then drops exactly those rows.
"""

from __future__ import annotations

import csv
import io
import random
import re
from dataclasses import dataclass
from typing import Any

TARGET = "diagnosis"


@dataclass(frozen=True)
class RawExport:
    """The CSV the demo uploads.

    Attributes:
        content: CSV bytes.
        columns: Header in file order.
        feature_columns: The 30 numeric measurement columns (raw names).
        rows: Data rows.
        blanked_rows: Rows with an emptied cell (injected by the demo).
    """

    content: bytes
    columns: list[str]
    feature_columns: list[str]
    rows: int
    blanked_rows: int


def snake(name: str) -> str:
    """``"mean radius"`` → ``"mean_radius"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def raw_export(blank_rows: int = 12, seed: int = 11) -> RawExport:
    """The breast cancer dataset (569 rows) as CSV bytes, with ``blank_rows`` incomplete rows."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    features = [str(name) for name in bunch.feature_names]
    labels = [str(bunch.target_names[t]) for t in bunch.target]
    rng = random.Random(seed)
    blanked = dict(
        zip(
            rng.sample(range(len(labels)), blank_rows),
            (rng.randrange(len(features)) for _ in range(blank_rows)),
            strict=True,
        )
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["patient_id", *features, TARGET])
    for index, (values, label) in enumerate(zip(bunch.data, labels, strict=True)):
        cells = [repr(float(v)) for v in values]
        if index in blanked:
            cells[blanked[index]] = ""
        writer.writerow([f"P{index + 1:04d}", *cells, label])
    return RawExport(
        out.getvalue().encode(),
        ["patient_id", *features, TARGET],
        features,
        len(labels),
        len(blanked),
    )


def cleaning_specs(raw: RawExport) -> tuple[dict[str, Any], dict[str, Any]]:
    """The declarative cleaning: a map (select the measurements and the label, rename them to
    snake_case) and a filter (drop rows with an empty measurement), in that order."""
    mapping = {
        "type": "map",
        "select": [*raw.feature_columns, TARGET],
        "rename": {c: snake(c) for c in raw.feature_columns},
    }
    keep = {
        "type": "filter",
        "predicates": [{"column": snake(c), "op": "not_null"} for c in raw.feature_columns],
    }
    return mapping, keep


@dataclass(frozen=True)
class Frame:
    """Rows of a cleaned CSV: features as floats and the label.

    Attributes:
        feature_names: Feature columns in file order.
        X: Feature rows.
        y: Labels.
    """

    feature_names: list[str]
    X: list[list[float]]
    y: list[str]

    def records(self, rows: range | list[int]) -> list[dict[str, float]]:
        """Rows as feature → value dicts (the explanation API's ``input_data``)."""
        return [dict(zip(self.feature_names, self.X[i], strict=True)) for i in rows]


def parse_frame(content: bytes) -> Frame:
    """Parses a cleaned CSV (every column but ``diagnosis`` numeric).

    Raises:
        ValueError: A non-numeric feature cell, or no ``diagnosis`` column.
    """
    reader = csv.reader(io.StringIO(content.decode()))
    header = next(reader)
    if TARGET not in header:
        raise ValueError(f"no {TARGET!r} column in {header}")
    target = header.index(TARGET)
    features = [name for i, name in enumerate(header) if i != target]
    X, y = [], []
    for row in reader:
        if not row:
            continue
        y.append(row[target])
        X.append([float(cell) for i, cell in enumerate(row) if i != target])
    return Frame(features, X, y)
