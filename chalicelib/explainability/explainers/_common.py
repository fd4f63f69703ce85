"""What the SHAP explainers share: options, result, output spaces and row chunking."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.core.errors import ValidationError
from chalicelib.explainability.base import class_index, predicted_indices, require
from chalicelib.explainability.budget import (
    checkpoint,
    first_part_rows,
    next_part_rows,
    part_cap,
    seconds_left,
)
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor
from chalicelib.explainability.models import OutputSpace

ALGORITHMS = ("auto", "tree", "linear", "exact", "kernel")
BACKGROUND_METHODS = ("kmeans", "random")
TREE_MODELS = {
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "ExtraTreeClassifier",
    "ExtraTreeRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "BoosterModel",  # XGBoost and LightGBM (chalicelib.registry.boosters)
}
LINEAR_MODELS = {
    "LinearRegression",
    "Ridge",
    "RidgeCV",
    "Lasso",
    "LassoCV",
    "ElasticNet",
    "ElasticNetCV",
    "BayesianRidge",
    "LogisticRegression",
    "LogisticRegressionCV",
    "SGDClassifier",
    "SGDRegressor",
    "LinearSVC",
    "LinearSVR",
    "RidgeClassifier",
}
BOOSTED_CLASSIFIERS = {
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
    "BoosterModel",
}
PROBABILITY_TREES = {"RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier"}


@dataclass(frozen=True)
class ShapOptions:
    """Parameters that change a SHAP result (all part of the cache key).

    Attributes:
        background_sample_size: Background rows used (a larger background is summarized).
        background_method: ``kmeans`` (kernel only; others fall back to ``random``) or ``random``.
        algorithm: ``auto`` or a forced algorithm.
        class_name: Class to explain (default: each row's predicted class).
        include_interactions: Interaction values (tree only).
        seed: Seed of random background subsampling and KernelSHAP's sampling.
        nsamples: KernelSHAP evaluations per row (``None``: shap's ``auto``).
    """

    background_sample_size: int = 100
    background_method: str = "kmeans"
    algorithm: str = "auto"
    class_name: str | None = None
    include_interactions: bool = False
    seed: int = 0
    nsamples: int | None = None

    def as_parameters(self) -> dict[str, Any]:
        """The options as a JSON dict (cache key, response ``parameters``)."""
        return dict(self.__dict__)


@dataclass
class ShapResult:
    """SHAP values of a batch for the explained class of each row."""

    values: np.ndarray
    base: np.ndarray
    actual: np.ndarray
    classes: list[int | None]
    algorithm: str
    output_space: str
    background_rows: int
    interactions: np.ndarray | None = None


_DEFAULT_OPTIONS = ShapOptions()
# The usual request's arguments, read from the defaults above (one place states them).
_DEFAULT_ARGUMENTS = (
    _DEFAULT_OPTIONS.background_sample_size,
    _DEFAULT_OPTIONS.background_method,
    _DEFAULT_OPTIONS.algorithm,
    _DEFAULT_OPTIONS.class_name,
    _DEFAULT_OPTIONS.seed,
)


def shap_options(
    background_sample_size: int = 100,
    background_method: str = "kmeans",
    algorithm: str = "auto",
    class_name: str | None = None,
    seed: int = 0,
    include_interactions: bool = False,
) -> ShapOptions:
    """Validated SHAP options.

    Raises:
        ValidationError: A value out of range or an unknown name.
    """
    given = (background_sample_size, background_method, algorithm, class_name, seed)
    if given == _DEFAULT_ARGUMENTS and include_interactions is False:
        return _DEFAULT_OPTIONS  # the usual request: frozen, so one shared instance serves
    if not 1 <= int(background_sample_size) <= 10_000:
        raise ValidationError("background_sample_size must be between 1 and 10000")
    if background_method not in BACKGROUND_METHODS:
        raise ValidationError("background_method must be kmeans or random")
    if algorithm not in ALGORITHMS:
        raise ValidationError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    return ShapOptions(
        background_sample_size=int(background_sample_size),
        background_method=background_method,
        algorithm=algorithm,
        class_name=class_name,
        include_interactions=bool(include_interactions),
        seed=int(seed),
    )


def output_space(estimator: Any, algorithm: str, is_classifier: bool) -> str:
    """The output space contributions are reported in (see ``shap_engine``'s docstring)."""
    if not is_classifier:
        return OutputSpace.RAW.value
    name = type(estimator).__name__
    if algorithm == "tree":
        return OutputSpace.PROBABILITY.value if name in PROBABILITY_TREES else _margin(estimator)
    if algorithm == "linear":
        return _margin(estimator)
    if hasattr(estimator, "predict_proba"):
        return OutputSpace.PROBABILITY.value
    return _margin(estimator)


def _margin(estimator: Any) -> str:
    binary = len(getattr(estimator, "classes_", [])) == 2
    name = type(estimator).__name__
    logistic = name.startswith("LogisticRegression") or name in BOOSTED_CLASSIFIERS
    return OutputSpace.LOG_ODDS.value if binary and logistic else OutputSpace.MARGIN.value


def model_outputs(estimator: Any, X: np.ndarray, space: str, is_classifier: bool) -> np.ndarray:
    """The model's outputs in ``space``, one column per class (one column for regressors)."""
    if not is_classifier:
        return np.asarray(estimator.predict(X), dtype=float).reshape(len(X), 1)
    if space == OutputSpace.PROBABILITY.value:
        return np.asarray(estimator.predict_proba(X), dtype=float)
    return as_class_columns(np.asarray(estimator.decision_function(X), dtype=float))


def as_class_columns(margin: np.ndarray) -> np.ndarray:
    """A binary model's single margin as two columns (class 0 gets the negated margin)."""
    if margin.shape == (1,):  # one row (a single request): built from the number itself
        value = margin.item()
        return np.array([[-value, value]], dtype=margin.dtype)
    if margin.ndim == 1:
        columns = np.empty((len(margin), 2), dtype=margin.dtype)
        np.negative(margin, out=columns[:, 0])
        columns[:, 1] = margin
        return columns
    return margin


def per_class(values: Any, expected: Any, n_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """SHAP output as (rows, features, outputs) and base values as (outputs,)."""
    array = np.asarray(values, dtype=float)
    base = np.atleast_1d(np.asarray(expected, dtype=float)).reshape(-1)
    if array.ndim == 2 and n_outputs == 2:
        # One output of a binary model: class 0 gets its negation (filled in place).
        both = np.empty((*array.shape, 2))
        np.negative(array, out=both[:, :, 0])
        both[:, :, 1] = array
        return both, np.concatenate((-base, base))
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1 and n_outputs == 2:
        array = np.concatenate([-array, array], axis=2)
        base = np.concatenate([-base, base])
    return array, base


def chosen_classes(
    loaded: LoadedModel,
    X: np.ndarray,
    options: ShapOptions,
    outputs: np.ndarray,
    from_outputs: bool = False,
) -> list[int | None]:
    """The class explained per row: the requested one or the predicted one.

    For tree and linear models ``predict`` is the argmax of the outputs already computed
    (probabilities or margins), so the model is not evaluated a second time.
    """
    if not loaded.descriptor.is_classifier:
        return [None] * len(X)
    requested = class_index(loaded.estimator, loaded.descriptor, options.class_name)
    if requested is not None:
        return [requested] * len(X)
    if from_outputs:
        return outputs.argmax(axis=1).tolist()
    return [int(i) for i in predicted_indices(loaded.estimator, X)]


def class_result(
    raw: Any,
    expected: Any,
    outputs: np.ndarray,
    chosen: list[int | None],
    algorithm: str,
    space: str,
    background_rows: int,
    interactions: np.ndarray | None = None,
) -> ShapResult:
    """An explainer's output (``raw``, base ``expected``; values already per class pass
    :func:`per_class` unchanged) narrowed to each row's explained class.

    One row of a binary model's single output (a single request to a booster or a logistic
    model) takes only its explained class's numbers: the output's own for class 1, their
    negation for class 0, as :func:`per_class` fills them (the same numbers)."""
    narrowed = _one_binary_row(raw, expected, outputs, chosen)
    if narrowed is None:
        narrowed = _narrowed(*per_class(raw, expected, outputs.shape[1]), outputs, chosen)
    return ShapResult(*narrowed, chosen, algorithm, space, background_rows, interactions)


Narrowed = tuple[np.ndarray, np.ndarray, np.ndarray]


def _narrowed(
    values: np.ndarray, base: np.ndarray, outputs: np.ndarray, chosen: list[int | None]
) -> Narrowed:
    """Values, base and output of each row's explained class."""
    picks = [0 if c is None else c for c in chosen]
    if len(picks) == 1:
        # One row (a single request): basic slices give the same numbers without fancy indexing.
        pick = picks[0]
        one = np.ascontiguousarray(values[:, :, pick])  # summed as the batch's copy is
        return one, base[pick : pick + 1], outputs[:, pick]
    rows = np.arange(len(outputs))
    return values[rows, :, picks], base[picks], outputs[rows, picks]


def _one_binary_row(
    raw: Any, expected: Any, outputs: np.ndarray, chosen: list[int | None]
) -> Narrowed | None:
    """:func:`_narrowed` of :func:`per_class` for one row of one output explained as two
    classes, or ``None`` for any other shape."""
    if len(chosen) != 1 or outputs.shape[1] != 2 or np.ndim(raw) != 2:
        return None
    base = np.asarray(expected, dtype=float).reshape(-1)
    if base.shape != (1,):
        return None
    values = np.asarray(raw, dtype=float)
    pick = chosen[0]
    if pick:  # class 1: the output's own numbers
        return np.ascontiguousarray(values), base, outputs[:, 1]
    return np.negative(values), np.negative(base), outputs[:, 0]


def in_row_chunks(compute: Any, X: np.ndarray, step: int) -> Any:
    """``compute(X)`` evaluated ``step`` rows at a time, checking the deadline between parts.

    Rows are explained independently, so the parts put together equal one call on ``X``
    (a per-class list of arrays is put together class by class).
    """
    if len(X) <= step:
        checkpoint()
        return compute(X)
    parts = []
    for start in range(0, len(X), step):
        checkpoint()
        parts.append(compute(X[start : start + step]))
    if isinstance(parts[0], list):
        return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]
    return np.concatenate([np.asarray(part) for part in parts])


def in_timed_chunks(compute: Any, X: np.ndarray, first: int, row_values: int) -> Any:
    """``compute(X)`` in as few calls as the deadline and memory allow (TreeSHAP).

    Each call holds at most :data:`~chalicelib.explainability.budget.CHUNK_VALUES` result
    values (``row_values`` per row). Without a deadline that is the only split. Under one, the
    first call explains at most ``first`` rows and each next one is sized from the speed the
    previous one showed (:func:`~chalicelib.explainability.budget.next_part_rows`), the deadline
    being checked before each call. Rows are explained independently, so the result equals one
    call on ``X`` (a per-class list of arrays is put together class by class). The estimate
    counts the same calls (:func:`~chalicelib.explainability.budget.planned_parts`).
    """
    if len(X) == 1:
        # One row is one call under any deadline and memory bound (every part holds >= 1 row).
        checkpoint()
        return compute(X)
    cap = part_cap(row_values)
    rows = first_part_rows(first, cap, seconds_left())
    parts: list[Any] = []
    start = 0
    while start < len(X):
        checkpoint()
        began = time.monotonic()
        parts.append(compute(X[start : start + rows]))
        start += rows
        rows = next_part_rows(rows, time.monotonic() - began, cap)
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], list):
        return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]
    return np.concatenate([np.asarray(part) for part in parts])


def model_key(descriptor: ModelDescriptor, algorithm: str) -> tuple[Any, ...]:
    """The key of a built explainer in the engine's per-model cache."""
    return (descriptor.model_id, descriptor.version, descriptor.artifact_sha256, algorithm)


def require_background(loaded: LoadedModel) -> np.ndarray:
    """The model version's background rows (422 without any, 400 with the wrong width)."""
    background = loaded.background
    require(
        background is not None,
        f"model '{loaded.descriptor.model_id}' version {loaded.descriptor.version} has no "
        "background data; register it with a background_sample or background_dataset_version_id",
    )
    assert background is not None
    require(
        background.shape[1] == len(loaded.descriptor.feature_names),
        "the background data does not have one column per feature",
    )
    return background
