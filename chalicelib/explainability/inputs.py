"""Validation of explanation inputs: every problem is a 400 that names the feature."""

from __future__ import annotations

import math
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from chalicelib.core.errors import ValidationError

MAX_TEXT_CHARS = 20_000
MAX_IMAGE_PIXELS = 512 * 512


MAX_CATEGORY_CHARS = 1_000


def _check_value(name: str, value: Any, where: str, allow_text: bool = False) -> float | str:
    if allow_text and isinstance(value, str):
        if len(value) > MAX_CATEGORY_CHARS:
            raise ValidationError(
                f"{where}feature '{name}' is longer than {MAX_CATEGORY_CHARS} characters"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "null" if value is None else type(value).__name__
        raise ValidationError(f"{where}feature '{name}' must be a number; got {kind}")
    try:
        number = float(value)
    except OverflowError:
        raise ValidationError(
            f"{where}feature '{name}' is too large: an integer of {len(str(abs(value)))} digits "
            "is beyond a double's range"
        ) from None
    if not math.isfinite(number):
        raise ValidationError(f"{where}feature '{name}' must be a finite number; got {value}")
    return number


_FLOAT_ONLY = {float}


def tabular_row(
    data: Any, feature_names: tuple[str, ...] | list[str], where: str = "", allow_text: bool = False
) -> list[Any]:
    """One input dict as a row of floats in feature order.

    Args:
        data: Feature name → number.
        feature_names: The model's features in order.
        where: Prefix for messages (``"inputs[3]: "``).
        allow_text: Keep strings (categories a pipeline encodes; the engine checks which columns
            may hold them).

    Raises:
        ValidationError: Not an object, unknown or missing features, non-numbers, NaN/inf.
    """
    if not isinstance(data, dict):
        raise ValidationError(f"{where}input_data must be an object of feature name to number")
    if len(data) == len(feature_names):
        # The common case first: exactly the features (as many keys, every name present, so
        # no unknown one), each a plain finite float.
        try:
            values = [data[name] for name in feature_names]
        except KeyError:
            values = None
        if (
            values is not None
            and set(map(type, values)) == _FLOAT_ONLY
            and all(map(math.isfinite, values))
        ):
            return values
    unknown = [key for key in data if key not in feature_names]
    if unknown:
        raise ValidationError(
            f"{where}unknown feature '{unknown[0]}'", details={"unknown": unknown}
        )
    missing = [name for name in feature_names if name not in data]
    if missing:
        raise ValidationError(
            f"{where}missing feature '{missing[0]}'", details={"missing": missing}
        )
    return [_check_value(name, data[name], where, allow_text) for name in feature_names]


def tabular_matrix(
    inputs: list[Any], feature_names: tuple[str, ...] | list[str], allow_text: bool = False
) -> np.ndarray:
    """Several input dicts as a matrix (rows × features): floats, or objects when a row holds
    a string (``allow_text``).

    Raises:
        ValidationError: Any row is invalid (the message names the row and the feature).
    """
    if not inputs:
        raise ValidationError("inputs must not be empty")
    matrix = _float_matrix(inputs, tuple(feature_names))
    if matrix is not None:
        return matrix
    rows = [
        tabular_row(item, feature_names, f"inputs[{i}]: ", allow_text)
        for i, item in enumerate(inputs)
    ]
    return as_matrix(rows)


def _float_matrix(inputs: list[Any], names: tuple[str, ...]) -> np.ndarray | None:
    """The common case of :func:`tabular_matrix` checked for all rows at once: every input a
    dict of exactly the features (as many keys, every name present, so no unknown one), every
    value a float, all finite. ``None`` when any of that fails: the row-by-row check then
    finds the first problem and names it."""
    if not names or set(map(type, inputs)) != {dict} or set(map(len, inputs)) != {len(names)}:
        return None
    pick = itemgetter(*names)
    try:
        rows = list(map(pick, inputs)) if len(names) > 1 else [(pick(item),) for item in inputs]
    except KeyError:
        return None
    if set(map(type, chain.from_iterable(rows))) != {float}:
        return None
    matrix = np.array(rows, dtype=float)
    return matrix if bool(np.isfinite(matrix).all()) else None


def as_matrix(rows: list[list[Any]]) -> np.ndarray:
    """Rows as a float matrix, or an object matrix when any value is a string."""
    found = np.asarray(rows)  # numbers only: a numeric array; any string: a string array
    if found.dtype.kind in "iuf":
        return found.astype(float, copy=False)
    matrix = np.empty((len(rows), len(rows[0])), dtype=object)
    matrix[:] = rows  # the values themselves (numbers stay numbers)
    return matrix


def text_input(data: Any) -> str:
    """The ``text`` of a text input.

    Raises:
        ValidationError: Missing, not a string, empty or too long.
    """
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("input_data.text must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise ValidationError(f"input_data.text is longer than {MAX_TEXT_CHARS} characters")
    return text


def image_input(data: Any) -> np.ndarray:
    """The ``image`` of an image input: H×W (grayscale) or H×W×3 numbers.

    Raises:
        ValidationError: Missing, ragged, wrong shape, not numeric or not finite.
    """
    image = data.get("image") if isinstance(data, dict) else None
    if image is None:
        raise ValidationError("input_data.image must be rows of pixel values")
    try:
        array = np.asarray(image, dtype=float)
    except (TypeError, ValueError):
        raise ValidationError("input_data.image must be rectangular rows of numbers") from None
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    if not shape_ok or min(array.shape[:2]) < 2:
        raise ValidationError("input_data.image must be H×W (grayscale) or H×W×3 (RGB)")
    if array.shape[0] * array.shape[1] > MAX_IMAGE_PIXELS:
        raise ValidationError(f"input_data.image has more than {MAX_IMAGE_PIXELS} pixels")
    if not np.isfinite(array).all():
        raise ValidationError("input_data.image contains NaN or infinite values")
    return array


def canonical_input(kind: str, data: Any, feature_names: tuple[str, ...]) -> Any:
    """The canonical form of an input for cache keys (validated)."""
    if kind == "text":
        return {"text": text_input(data)}
    if kind == "image":
        return {"image": image_input(data).tolist()}
    return tabular_row(data, feature_names, allow_text=True)
