"""scikit-learn Pipelines whose ColumnTransformer encodes categorical columns.

``input_data`` may hold strings for the columns an ``OneHotEncoder`` or ``OrdinalEncoder`` of
the pipeline's first step encodes. Such a model is explained in the space its last step sees
(TreeSHAP on the encoded columns) and each input column gets the sum of its encoded columns'
values, as shap's grouping (``shap.Explanation`` cohorts / ``PermutationExplainer`` partitions)
sums a one-hot group: additivity is kept, since the base value and the prediction are the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chalicelib.core.errors import UnprocessableEntity, ValidationError

ENCODERS = ("OneHotEncoder", "OrdinalEncoder")


def column_transformer(estimator: Any) -> Any | None:
    """The fitted ``ColumnTransformer`` a pipeline starts with, or ``None``."""
    steps = getattr(estimator, "steps", None)
    if not steps or len(steps) < 2:
        return None
    first = steps[0][1]
    return first if type(first).__name__ == "ColumnTransformer" else None


def _input_indices(transformer: Any, name: str) -> list[int]:
    found = getattr(transformer, "_transformer_to_input_indices", {}).get(name)
    return [int(i) for i in (found if found is not None else [])]


def text_columns(estimator: Any) -> set[int]:
    """Input columns that hold strings: those an encoder with string categories reads."""
    transformer = column_transformer(estimator)
    if transformer is None:
        return set()
    found: set[int] = set()
    for name, step, _ in transformer.transformers_:
        if type(step).__name__ not in ENCODERS:
            continue
        indices = _input_indices(transformer, name)
        for index, categories in zip(indices, getattr(step, "categories_", []), strict=False):
            if np.asarray(categories).dtype == object:
                found.add(index)
    return found


def check_row_types(
    row: list[Any], names: list[str] | tuple[str, ...], allowed: set[int], where: str = ""
) -> None:
    """Strings only where the model encodes them.

    Raises:
        ValidationError: A string in a numeric column (the message names the feature).
    """
    for index, value in enumerate(row):
        if isinstance(value, str) and index not in allowed:
            raise ValidationError(f"{where}feature '{names[index]}' must be a number; got str")


def encoded_groups(estimator: Any, n_inputs: int) -> list[list[int]]:
    """For each input column, the columns of the encoded matrix it becomes.

    Raises:
        UnprocessableEntity: A step whose outputs cannot be told apart per input column.
    """
    transformer = column_transformer(estimator)
    assert transformer is not None
    groups: list[list[int]] = [[] for _ in range(n_inputs)]
    for name, step, _ in transformer.transformers_:
        where = transformer.output_indices_.get(name)
        if step == "drop" or where is None or where.stop == where.start:
            continue
        indices = _input_indices(transformer, name)
        widths = _widths(step, indices, where.stop - where.start, name)
        position = where.start
        for index, width in zip(indices, widths, strict=True):
            groups[index].extend(range(position, position + width))
            position += width
    return groups


def _widths(step: Any, indices: list[int], width: int, name: str) -> list[int]:
    if step == "passthrough" or width == len(indices):
        return [1] * len(indices)
    per_column = getattr(step, "_n_features_outs", None)  # OneHotEncoder: outputs per column
    if per_column is not None and sum(per_column) == width:
        return [int(w) for w in per_column]
    if len(indices) == 1:
        return [width]
    raise UnprocessableEntity(
        f"the pipeline's step '{name}' turns {len(indices)} columns into {width}; its outputs "
        "cannot be reported per input column"
    )


def model_input(estimator: Any, X: np.ndarray, names: list[str] | tuple[str, ...]) -> Any:
    """Rows as the pipeline was fitted on them: a DataFrame (numeric columns as floats) when it
    was fitted on one, else the object array."""
    if not hasattr(estimator, "feature_names_in_"):
        return X
    import pandas as pd

    strings = text_columns(estimator)
    columns = {
        name: X[:, i] if i in strings else np.asarray(X[:, i], dtype=float)
        for i, name in enumerate(names)
    }
    return pd.DataFrame(columns)


def encode(estimator: Any, X: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
    """The matrix the pipeline's last step sees (dense floats).

    Raises:
        UnprocessableEntity: The steps after the ColumnTransformer change its width.
    """
    transformed = estimator[:-1].transform(model_input(estimator, X, names))
    if hasattr(transformed, "toarray"):
        transformed = transformed.toarray()
    encoded = np.asarray(transformed, dtype=float)
    if encoded.shape[1] != encoded_width(estimator):
        raise UnprocessableEntity(
            "the pipeline's steps after its ColumnTransformer change the number of columns; "
            "its explanations cannot be reported per input column"
        )
    return encoded


def encoded_width(estimator: Any) -> int:
    """Columns the pipeline's ColumnTransformer gives (what its last step sees)."""
    transformer: Any = column_transformer(estimator)  # the caller checked there is one
    return sum(s.stop - s.start for s in transformer.output_indices_.values())
