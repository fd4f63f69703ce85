"""Global views beyond SHAP importance, and explanations watched over time.

* Permutation importance (scikit-learn's ``inspection.permutation_importance``) and partial
  dependence with ICE curves (every row's curve and their average, computed by brute force as
  ``inspection.partial_dependence(method="brute")`` does) for any registered model.
* Attribution drift: two global SHAP attributions (two model versions, or one version on two
  dataset versions / input samples) compared with Clarify's NDCG (:mod:`.drift`). A version's
  *baseline* attribution is the one over its own background rows unless inputs or a dataset
  version are named.
* Bias metrics of a model's predictions with a declared facet (:mod:`.bias`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.explainability.base import class_index, class_labels, require
from chalicelib.explainability.bias import BiasReport, bias_metrics
from chalicelib.explainability.drift import DEFAULT_THRESHOLD, DEFAULT_TOP_K, compare
from chalicelib.explainability.inputs import tabular_matrix
from chalicelib.explainability.loading import LoadedModel

MAX_GRID = 100
MAX_REPEATS = 50


class ModelInsights:
    """Permutation importance, partial dependence/ICE, attribution drift and bias metrics.

    Args:
        shap_explainer: The SHAP engine (its model loader and global importance are used).
    """

    def __init__(self, shap_explainer: Any) -> None:
        self.shap = shap_explainer
        self.model_loader = shap_explainer.model_loader

    def _load(self, model_id: str, model_version: int | None) -> LoadedModel:
        descriptor = self.shap._tabular_descriptor(model_id, model_version)
        return self.model_loader.load(model_id, descriptor.version)

    def _rows(self, loaded: LoadedModel, inputs: list[dict[str, Any]]) -> np.ndarray:
        return tabular_matrix(inputs, loaded.descriptor.feature_names)

    # --- permutation importance ---------------------------------------------------------------
    def permutation_importance(
        self,
        model_id: str,
        model_version: int | None,
        inputs: list[dict[str, Any]],
        labels: list[Any],
        n_repeats: int = 5,
        seed: int = 0,
    ) -> dict[str, Any]:
        """How much the model's score drops when each feature's column is shuffled.

        The score is scikit-learn's default for the model: accuracy for classifiers, R² for
        regressors. ``labels`` are class names (as registered) or the raw classes.

        Returns:
            ``importances`` (feature → mean drop), ``std``, ``baseline_score``, ``scoring``.

        Raises:
            ValidationError: Labels do not match the inputs, or ``n_repeats`` out of range.
        """
        from sklearn.inspection import permutation_importance

        if not 1 <= int(n_repeats) <= MAX_REPEATS:
            raise ValidationError(f"n_repeats must be between 1 and {MAX_REPEATS}")
        loaded = self._load(model_id, model_version)
        X = self._rows(loaded, inputs)
        y = self._labels(loaded, labels, len(X))
        scoring = "accuracy" if loaded.descriptor.is_classifier else "r2"
        result = permutation_importance(
            loaded.estimator,
            X,
            y,
            scoring=lambda _, data, truth: _score(loaded, data, truth),
            n_repeats=int(n_repeats),
            random_state=int(seed),
        )
        names = loaded.descriptor.feature_names
        order = np.argsort(-result.importances_mean, kind="stable")
        return {
            "model_id": model_id,
            "model_version": loaded.descriptor.version,
            "scoring": scoring,
            "baseline_score": float(_score(loaded, X, y)),
            "importances": {names[i]: float(result.importances_mean[i]) for i in order},
            "std": {names[i]: float(result.importances_std[i]) for i in order},
            "n_repeats": int(n_repeats),
        }

    def _labels(self, loaded: LoadedModel, labels: list[Any], rows: int) -> np.ndarray:
        if len(labels) != rows:
            raise ValidationError("labels must have one value per input")
        if not loaded.descriptor.is_classifier:
            try:
                return np.asarray(labels, dtype=float)
            except (TypeError, ValueError):
                raise ValidationError("labels of a regression model must be numbers") from None
        raw = list(getattr(loaded.estimator, "classes_", []))
        indices = [class_index(loaded.estimator, loaded.descriptor, str(v)) for v in labels]
        return np.asarray([raw[i] for i in indices if i is not None])

    # --- partial dependence and ICE ------------------------------------------------------------
    def partial_dependence(
        self,
        model_id: str,
        model_version: int | None,
        feature: str,
        inputs: list[dict[str, Any]],
        grid_resolution: int = 20,
        class_name: str | None = None,
        grid: list[float] | None = None,
    ) -> dict[str, Any]:
        """Partial dependence of the model's output on ``feature``, with every row's ICE curve.

        The output is the probability of ``class_name`` (default: the last class) for
        classifiers, the prediction for regressors. The grid is ``grid`` or, as scikit-learn
        builds it, the feature's unique values when there are at most ``grid_resolution``,
        else ``grid_resolution`` points evenly between its 5th and 95th percentiles.

        Raises:
            ValidationError: Unknown feature or class, or a grid out of range.
        """
        if not 2 <= int(grid_resolution) <= MAX_GRID:
            raise ValidationError(f"grid_resolution must be between 2 and {MAX_GRID}")
        loaded = self._load(model_id, model_version)
        names = list(loaded.descriptor.feature_names)
        if feature not in names:
            raise ValidationError(f"unknown feature '{feature}'")
        X = self._rows(loaded, inputs)
        index = names.index(feature)
        values = _grid(X[:, index], int(grid_resolution)) if grid is None else _given(grid)
        column, label = self._response(loaded, class_name)
        ice = np.empty((len(X), len(values)))
        for j, value in enumerate(values):
            changed = X.copy()
            changed[:, index] = value
            ice[:, j] = column(changed)
        return {
            "model_id": model_id,
            "model_version": loaded.descriptor.version,
            "feature": feature,
            "explained_class": label,
            "grid_values": values.tolist(),
            "average": ice.mean(axis=0).tolist(),
            "individual": ice.tolist(),
        }

    def _response(self, loaded: LoadedModel, class_name: str | None) -> tuple[Any, str | None]:
        estimator, descriptor = loaded.estimator, loaded.descriptor
        if not descriptor.is_classifier:
            return (lambda X: np.asarray(estimator.predict(X), dtype=float)), None
        require(hasattr(estimator, "predict_proba"), "partial dependence needs predict_proba")
        labels = class_labels(estimator, descriptor)
        index = class_index(estimator, descriptor, class_name)
        index = len(labels) - 1 if index is None else index
        return (lambda X: np.asarray(estimator.predict_proba(X))[:, index]), labels[index]

    # --- attribution drift --------------------------------------------------------------------
    def side_rows(
        self, model_id: str, model_version: int | None, dataset_version_id: str | None
    ) -> list[dict[str, Any]]:
        """The rows an attribution is computed over when no inputs are given: a dataset
        version's rows, else the version's background rows (its baseline).

        Raises:
            UnprocessableEntity: Neither a dataset version nor background rows.
        """
        if dataset_version_id is not None:
            return self.shap.resolve_inputs(model_id, model_version, None, dataset_version_id)
        loaded = self._load(model_id, model_version)
        require(
            loaded.background is not None,
            f"model '{model_id}' version {loaded.descriptor.version} has no background "
            "rows for a baseline attribution; name inputs or a dataset_version_id",
        )
        assert loaded.background is not None
        names = loaded.descriptor.feature_names
        return [dict(zip(names, row, strict=True)) for row in loaded.background.tolist()]

    def attribution(
        self,
        model_id: str,
        model_version: int | None,
        inputs: list[dict[str, Any]] | None = None,
        dataset_version_id: str | None = None,
        **options: Any,
    ) -> dict[str, float]:
        """A global attribution (feature → mean |SHAP|) over inputs, a dataset version or, with
        neither, the version's own background rows (its baseline)."""
        if inputs is None and dataset_version_id is None:
            inputs = self.side_rows(model_id, model_version, None)
        result = self.shap.compute_global_importance(
            model_id,
            model_version,
            inputs=inputs,
            dataset_version_id=dataset_version_id,
            aggregation_method="mean",
            **options,
        )
        return {name: float(value) for name, value in result.feature_importances.items()}

    def attribution_drift(
        self,
        baseline: dict[str, Any],
        current: dict[str, Any],
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
        **options: Any,
    ) -> dict[str, Any]:
        """Clarify's NDCG between two attributions, with per-feature changes.

        Each side is ``{"model_id", "model_version", "inputs" | "dataset_version_id"}`` (with
        neither, that version's baseline over its background).

        Raises:
            ValidationError: ``top_k`` or ``threshold`` out of range.
        """
        if not 1 <= int(top_k) <= 1000 or not 0.0 <= float(threshold) <= 1.0:
            raise ValidationError("top_k must be 1–1000 and threshold between 0 and 1")
        sides = {}
        for name, side in (("baseline", baseline), ("current", current)):
            sides[name] = self.attribution(
                side["model_id"],
                side.get("model_version"),
                side.get("inputs"),
                side.get("dataset_version_id"),
                **options,
            )
        report = compare(sides["baseline"], sides["current"], int(top_k), float(threshold))
        return {
            **report,
            "baseline_attribution": sides["baseline"],
            "current_attribution": sides["current"],
        }

    # --- bias ---------------------------------------------------------------------------------
    def bias_on_dataset(
        self,
        model_id: str,
        model_version: int | None,
        dataset_version_id: str,
        label_column: str,
        facet_column: str,
        facet_values: list[Any],
        positive_label: Any,
    ) -> BiasReport:
        """:meth:`bias` over a dataset version's rows (its first 10,000): the model's features,
        the observed labels in ``label_column`` and the facet in ``facet_column``.

        Raises:
            UnprocessableEntity: A missing column or a feature that is not a number.
        """
        descriptor = self.shap._tabular_descriptor(model_id, model_version)
        names = list(descriptor.feature_names)
        reader: Any = getattr(self.model_loader.backgrounds, "dataset_reader", None)
        require(reader is not None, "this loader cannot read dataset versions")
        columns = list(dict.fromkeys([*names, label_column, facet_column]))
        records = reader.read_records(dataset_version_id, columns)
        inputs = [
            _numeric(record, names, dataset_version_id, i) for i, record in enumerate(records)
        ]
        return self.bias(
            model_id,
            model_version,
            inputs,
            [record[label_column] for record in records],
            [_text(record[facet_column]) for record in records],
            [_text(value) for value in facet_values],
            positive_label,
            facet_column,
        )

    def bias(
        self,
        model_id: str,
        model_version: int | None,
        inputs: list[dict[str, Any]],
        labels: list[Any],
        facet: list[Any],
        facet_values: list[Any],
        positive_label: Any,
        facet_name: str = "facet",
    ) -> BiasReport:
        """Clarify's pre- and post-training bias metrics of the model's predictions.

        Labels and predictions are compared as strings with ``positive_label`` (class names
        as registered, or the raw classes).
        """
        loaded = self._load(model_id, model_version)
        require(loaded.descriptor.is_classifier, "bias metrics need a classifier")
        X = self._rows(loaded, inputs)
        if len(labels) != len(X) or len(facet) != len(X):
            raise ValidationError("labels and facet must have one value per input")
        names = class_labels(loaded.estimator, loaded.descriptor)
        raw = [str(c) for c in getattr(loaded.estimator, "classes_", [])]
        lookup = dict(zip(raw, names, strict=False))
        predicted = [lookup.get(str(p), str(p)) for p in loaded.estimator.predict(X).tolist()]
        observed = [lookup.get(str(v), str(v)) for v in labels]
        positive = lookup.get(str(positive_label), str(positive_label))
        if positive not in names:
            raise ValidationError(f"positive_label '{positive_label}' is not a class ({names})")
        return bias_metrics(observed, facet, facet_values, positive, predicted, facet_name)


def _text(value: Any) -> str:
    """A facet value compared as text (a CSV cell and a JSON number alike)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _numeric(
    record: dict[str, Any], names: list[str], version_id: str, index: int
) -> dict[str, float]:
    row = {}
    for name in names:
        try:
            row[name] = float(record[name])
        except (TypeError, ValueError, OverflowError):
            raise UnprocessableEntity(
                f"dataset version '{version_id}' row {index}: column '{name}' is not numeric"
            ) from None
    return row


def _score(loaded: LoadedModel, X: np.ndarray, y: np.ndarray) -> float:
    """scikit-learn's default score: accuracy (classifiers) or R² (regressors)."""
    predicted = loaded.estimator.predict(X)
    if loaded.descriptor.is_classifier:
        return float(np.mean(np.asarray(predicted) == y))
    residual = float(np.sum((y - np.asarray(predicted, dtype=float)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - residual / total if total else 0.0


def _grid(column: np.ndarray, resolution: int) -> np.ndarray:
    unique = np.unique(column)
    if len(unique) <= resolution:
        return unique
    low, high = np.percentile(column, [5, 95])
    if low == high:
        raise UnprocessableEntity("the feature's 5th and 95th percentiles are equal; give a grid")
    return np.linspace(low, high, resolution)


def _given(grid: list[float]) -> np.ndarray:
    values = np.asarray(grid, dtype=float)
    if values.ndim != 1 or not 1 <= len(values) <= MAX_GRID or not np.isfinite(values).all():
        raise ValidationError(f"grid must be 1–{MAX_GRID} finite numbers")
    return values
