"""SHAP explanations of tabular models (text and image models: ``shap_media``).

Algorithm per model (recorded in every explanation as ``algorithm``):

* ``tree``: ``shap.TreeExplainer`` with ``tree_path_dependent`` perturbation for scikit-learn
  tree ensembles (exact, no background needed; interaction values available). Output space: the
  trees' raw output: probability for random forests / extra trees / decision trees, log-odds
  (binary) or margin (multiclass) for gradient boosting, the prediction for regressors.
* ``linear``: ``shap.LinearExplainer`` (interventional) for linear models:
  ``phi = coef * (x - mean(background))``. Output space: log-odds for logistic regression
  (binary), margin for other linear classifiers, the prediction for regressors.
* ``exact`` (at most ``EXACT_MAX_FEATURES`` features) or ``kernel``: model-agnostic, in
  probability space for classifiers with ``predict_proba`` (margin otherwise), raw for regressors.
  ``exact`` evaluates every coalition (2^M - 2) with the Shapley kernel, which gives exact
  Shapley values for the background; it runs through ``KernelExplainer`` because shap's
  ``ExactExplainer`` JIT-compiles with numba on first use (seconds on a cold Lambda).
  ``kernel`` samples coalitions (shap's ``auto`` count) with a seeded generator.

Contributions always add up to ``actual_prediction - base_prediction`` in ``output_space``; the
remaining difference is reported as ``additivity_error``. shap is imported on first use only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.explainability.base import (
    ExplainerBase,
    class_index,
    class_labels,
    predicted_indices,
    require,
)
from chalicelib.explainability.budget import SHAP_CHUNK, checkpoint, guarded
from chalicelib.explainability.categorical import (
    check_row_types,
    encode,
    encoded_groups,
    text_columns,
)
from chalicelib.explainability.inputs import as_matrix, tabular_matrix, tabular_row
from chalicelib.explainability.jit_cache import import_shap
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor
from chalicelib.explainability.models import (
    AggregationMethod,
    ExplanationType,
    FeatureContribution,
    GlobalExplanation,
    OutputSpace,
    PredictionExplanation,
)
from chalicelib.explainability.shap_media import MediaShap

EXACT_MAX_FEATURES = 10
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


def choose_algorithm(estimator: Any, n_features: int, requested: str = "auto") -> str:
    """The SHAP algorithm for an estimator.

    Raises:
        ValidationError: Unknown algorithm name.
        UnprocessableEntity: A forced tree/linear algorithm on a model that is neither.
    """
    if requested not in ALGORITHMS:
        raise ValidationError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    name = type(estimator).__name__
    if requested == "tree" and name not in TREE_MODELS:
        raise UnprocessableEntity(f"the tree algorithm does not support {name}")
    if name in TREE_MODELS and _has_category_splits(estimator):
        if requested == "tree":
            raise UnprocessableEntity(
                f"the tree algorithm does not support {name} with categorical features "
                "(shap's trees cannot hold category sets); use exact or kernel"
            )
        name = "categorical " + name
    if requested == "linear" and name not in LINEAR_MODELS:
        raise UnprocessableEntity(f"the linear algorithm does not support {name}")
    if requested != "auto":
        return requested
    if name in TREE_MODELS:
        return "tree"
    if name in LINEAR_MODELS:
        return "linear"
    return "exact" if n_features <= EXACT_MAX_FEATURES else "kernel"


def _has_category_splits(estimator: Any) -> bool:
    """Whether a histogram gradient boosting model splits on category sets."""
    categorical = getattr(estimator, "is_categorical_", None)
    return categorical is not None and bool(np.any(categorical))


def output_space(estimator: Any, algorithm: str, is_classifier: bool) -> str:
    """The output space contributions are reported in (see the module docstring)."""
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
    return _as_class_columns(np.asarray(estimator.decision_function(X), dtype=float))


def _as_class_columns(margin: np.ndarray) -> np.ndarray:
    """A binary model's single margin as two columns (class 0 gets the negated margin)."""
    if margin.ndim == 1:
        return np.stack([-margin, margin], axis=1)
    return margin


def _per_class(values: Any, expected: Any, n_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """SHAP output as (rows, features, outputs) and base values as (outputs,)."""
    array = np.asarray(values, dtype=float)
    base = np.atleast_1d(np.asarray(expected, dtype=float)).reshape(-1)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1 and n_outputs == 2:
        array = np.concatenate([-array, array], axis=2)
        base = np.concatenate([-base, base])
    return array, base


def summarize_background(
    background: np.ndarray, size: int, method: str, seed: int, weighted: bool
) -> tuple[Any, int]:
    """The background actually used: all rows, a seeded random subsample or k-means centres.

    Args:
        background: All background rows.
        size: Rows wanted.
        method: ``kmeans`` or ``random``.
        seed: Subsampling seed.
        weighted: Whether the consumer accepts shap's weighted ``DenseData`` (KernelSHAP).

    Returns:
        The background object and how many rows it has.
    """
    if len(background) <= size:
        return background, len(background)
    if method == "kmeans" and weighted:
        shap = import_shap()

        return shap.kmeans(background, size), size
    chosen = np.random.default_rng(seed).choice(len(background), size=size, replace=False)
    return background[np.sort(chosen)], size


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


class SHAPExplainer(ExplainerBase):
    """Explains tabular predictions with SHAP (see the module docstring for the algorithms),
    and text and image predictions with the Partition explainer (see ``shap_media``)."""

    explanation_type = ExplanationType.SHAP.value

    def explain_text_prediction(
        self,
        model_id: str,
        model_version: int | None,
        text: str,
        prediction_id: str | None = None,
        **options: Any,
    ) -> PredictionExplanation:
        """Explains a text classifier's prediction word by word (cached; ``options`` as
        :func:`~chalicelib.explainability.shap_media.media_shap_options`)."""
        return MediaShap(self).explain_text(model_id, model_version, text, prediction_id, **options)

    def explain_image_prediction(
        self,
        model_id: str,
        model_version: int | None,
        image: Any,
        prediction_id: str | None = None,
        **options: Any,
    ) -> PredictionExplanation:
        """Explains an image classifier's prediction by LIME's superpixels (cached; ``options``
        as :func:`~chalicelib.explainability.shap_media.media_shap_options`)."""
        return MediaShap(self).explain_image(
            model_id, model_version, image, prediction_id, **options
        )

    def explain_prediction(
        self,
        model_id: str,
        model_version: int | None,
        input_data: dict[str, Any],
        prediction_id: str | None = None,
        background_sample_size: int = 100,
        include_interactions: bool = False,
        class_name: str | None = None,
        algorithm: str = "auto",
        background_method: str = "kmeans",
        seed: int = 0,
    ) -> PredictionExplanation:
        """Explains one prediction (cached).

        Raises:
            ValidationError: Invalid input (the message names the feature) or parameters.
            UnprocessableEntity: The model cannot be explained this way.
        """
        options = shap_options(
            background_sample_size,
            background_method,
            algorithm,
            class_name,
            seed,
            include_interactions,
        )
        descriptor = self._tabular_descriptor(model_id, model_version)
        row = tabular_row(input_data, descriptor.feature_names, allow_text=True)
        X = self._typed_rows(descriptor, [row])
        return self._cached(
            descriptor,
            row,
            options.as_parameters(),
            lambda: self._explain_rows(descriptor, X, [prediction_id], options)[0],
            prediction_id,
        )

    def explain_batch(
        self,
        model_id: str,
        model_version: int | None,
        inputs: list[dict[str, Any]],
        prediction_ids: list[str | None] | None = None,
        background_sample_size: int = 100,
        class_name: str | None = None,
        algorithm: str = "auto",
        background_method: str = "kmeans",
        seed: int = 0,
        include_interactions: bool = False,
    ) -> list[PredictionExplanation]:
        """Explains many predictions with one explainer and one background.

        Each row is cached under the key a single request for it uses: rows already explained
        are answered from the cache, the others are computed together and stored one by one.
        A row's answer never depends on its neighbours (KernelSHAP seeds every row from its own
        content), so a batch equals the single explanations of its rows.

        Raises:
            ValidationError: Any row is invalid (the message names the row and feature).
        """
        options = shap_options(
            background_sample_size,
            background_method,
            algorithm,
            class_name,
            seed,
            include_interactions,
        )
        descriptor = self._tabular_descriptor(model_id, model_version)
        X = tabular_matrix(inputs, descriptor.feature_names, allow_text=True)
        X = self._typed_rows(descriptor, X.tolist(), batch=True) if X.dtype == object else X
        ids = list(prediction_ids or [None] * len(inputs))
        if len(ids) != len(inputs):
            raise ValidationError("prediction_ids must have one id per input")
        return self._cached_rows(
            descriptor,
            X.tolist(),
            options.as_parameters(),
            lambda rows: self._explain_rows(descriptor, X[rows], [ids[i] for i in rows], options),
            ids,
        )

    def compute_global_importance(
        self,
        model_id: str,
        model_version: int | None,
        inputs: list[dict[str, Any]] | None = None,
        dataset_version_id: str | None = None,
        aggregation_method: AggregationMethod | str = AggregationMethod.MEAN,
        top_k: int = 5,
        interaction_threshold: float = 0.5,
        max_rows: int | None = None,
        **options: Any,
    ) -> GlobalExplanation:
        """Global importance of each feature over sample inputs or a dataset version.

        Returns:
            Aggregated importances with stability and interaction metrics.
        """
        import time

        from chalicelib.explainability.aggregator import FeatureImportanceAggregator

        started = time.perf_counter()
        rows = self.resolve_inputs(model_id, model_version, inputs, dataset_version_id, max_rows)
        explanations = self.explain_batch(model_id, model_version, rows, **options)
        result = FeatureImportanceAggregator().summarize(
            explanations, aggregation_method, top_k, interaction_threshold
        )
        result.computation_time_ms = (time.perf_counter() - started) * 1000
        return result

    def get_feature_dependence(
        self,
        model_id: str,
        model_version: int | None,
        feature: str,
        inputs: list[dict[str, Any]] | None = None,
        dataset_version_id: str | None = None,
        interaction_feature: str | None = "auto",
        class_name: str | None = None,
        max_rows: int | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """The data of a SHAP dependence plot for ``feature``.

        The same class is explained for every row: ``class_name`` or the last class (the
        positive class of a binary classifier).

        Returns:
            ``feature_values``, ``shap_values``, ``interaction_feature`` and its values.

        Raises:
            ValidationError: Unknown feature or interaction feature.
        """
        descriptor = self._tabular_descriptor(model_id, model_version)
        names = list(descriptor.feature_names)
        for name in (feature, interaction_feature):
            if name not in (None, "auto") and name not in names:
                raise ValidationError(f"unknown feature '{name}'")
        rows = self.resolve_inputs(model_id, model_version, inputs, dataset_version_id, max_rows)
        X = tabular_matrix(rows, descriptor.feature_names)
        loaded = self.model_loader.load(model_id, descriptor.version)
        if descriptor.is_classifier and class_name is None:
            class_name = class_labels(loaded.estimator, descriptor)[-1]
        opts = shap_options(
            options.get("background_sample_size", 100),
            options.get("background_method", "kmeans"),
            options.get("algorithm", "auto"),
            class_name,
            options.get("seed", 0),
            False,
        )
        result = self.shap_values(loaded, X, opts)
        index = names.index(feature)
        other = self._interaction_feature(result.values, X, index, names, interaction_feature)
        return {
            "model_id": model_id,
            "model_version": descriptor.version,
            "feature": feature,
            "feature_values": X[:, index].tolist(),
            "shap_values": result.values[:, index].tolist(),
            "interaction_feature": other,
            "interaction_feature_values": None
            if other is None
            else X[:, names.index(other)].tolist(),
            "algorithm": result.algorithm,
            "output_space": result.output_space,
            "explained_class": class_name,
            "base_value": float(result.base[0]) if len(result.base) else 0.0,
        }

    def resolve_inputs(
        self,
        model_id: str,
        model_version: int | None,
        inputs: list[dict[str, Any]] | None,
        dataset_version_id: str | None,
        max_rows: int | None = None,
    ) -> list[dict[str, Any]]:
        """Sample inputs given directly or read from a dataset version (exactly one).

        Raises:
            ValidationError: Neither or both given, or more rows than ``max_rows``.
        """
        if (inputs is None) == (dataset_version_id is None):
            raise ValidationError("give exactly one of inputs or dataset_version_id")
        if inputs is None:
            descriptor = self._tabular_descriptor(model_id, model_version)
            backgrounds: Any = getattr(self.model_loader, "backgrounds", None)
            require(backgrounds is not None, "this loader cannot read dataset versions")
            matrix = backgrounds.read_dataset(dataset_version_id, descriptor)
            names = descriptor.feature_names
            inputs = [dict(zip(names, row.tolist(), strict=True)) for row in matrix]
        if max_rows is not None and len(inputs) > max_rows:
            raise ValidationError(f"at most {max_rows} inputs are explained in one request")
        return inputs

    # --- computation --------------------------------------------------------------------------
    def shap_values(self, loaded: LoadedModel, X: np.ndarray, options: ShapOptions) -> ShapResult:
        """SHAP values of every row for its explained class (the engine's core)."""
        estimator, descriptor = loaded.estimator, loaded.descriptor
        if descriptor.is_classifier:
            class_index(estimator, descriptor, options.class_name)  # 400 before any work
        if text_columns(estimator):
            return self._grouped(loaded, X, options)
        algorithm = choose_algorithm(estimator, X.shape[1], options.algorithm)
        require(
            not options.include_interactions or algorithm == "tree",
            "interaction values are available for tree models only",
        )
        space = output_space(estimator, algorithm, descriptor.is_classifier)
        if algorithm in ("tree", "linear"):
            return self._model_specific(loaded, X, options, algorithm, space)
        return self._model_agnostic(loaded, X, options, algorithm, space)

    def _explain_rows(
        self,
        descriptor: ModelDescriptor,
        X: np.ndarray,
        prediction_ids: list[str | None],
        options: ShapOptions,
    ) -> list[PredictionExplanation]:
        loaded = self.model_loader.load(descriptor.model_id, descriptor.version)
        result = self.shap_values(loaded, X, options)
        labels = class_labels(loaded.estimator, descriptor) if descriptor.is_classifier else []
        names = list(descriptor.feature_names)
        parameters = {**options.as_parameters(), "background_rows_used": result.background_rows}
        # Plain lists: indexing numpy arrays element by element costs more than the math.
        inputs, values = X.tolist(), result.values.tolist()
        totals = (result.base + result.values.sum(axis=1)).tolist()
        bases, actuals = result.base.tolist(), result.actual.tolist()
        explanations = []
        for i, prediction_id in enumerate(prediction_ids):
            chosen = result.classes[i]
            explanations.append(
                self._build_explanation(
                    prediction_id=prediction_id,
                    model_id=descriptor.model_id,
                    model_version=descriptor.version,
                    input_kind="tabular",
                    algorithm=result.algorithm,
                    output_space=result.output_space,
                    explained_class=None if chosen is None else labels[chosen],
                    base_prediction=bases[i],
                    actual_prediction=actuals[i],
                    feature_contributions=list(
                        map(FeatureContribution, names, inputs[i], values[i])
                    ),
                    additivity_error=abs(totals[i] - actuals[i]),
                    interactions=_interactions(result.interactions, i, names),
                    parameters=parameters,
                )
            )
        return explanations

    def _model_specific(
        self, loaded: LoadedModel, X: np.ndarray, options: ShapOptions, algorithm: str, space: str
    ) -> ShapResult:
        descriptor = loaded.descriptor
        if algorithm == "tree":
            explainer, rows = self._tree_explainer(loaded), 0
            outputs = _tree_outputs(explainer, loaded.estimator, X, descriptor.is_classifier)
            _require_tree_interactions(loaded.estimator, options)
        else:
            explainer, rows = self._linear_explainer(loaded, options)
            outputs = model_outputs(loaded.estimator, X, space, descriptor.is_classifier)
        # shap's own tree additivity check would evaluate the trees again; ours is reported.
        kwargs = {"check_additivity": False} if algorithm == "tree" else {}
        raw = in_row_chunks(lambda part: explainer.shap_values(part, **kwargs), X, SHAP_CHUNK)
        values, base = _per_class(raw, explainer.expected_value, outputs.shape[1])
        chosen = self._chosen_classes(loaded, X, options, outputs, from_outputs=True)
        picks = [0 if c is None else c for c in chosen]
        rows_index = np.arange(len(X))
        interactions = None
        if options.include_interactions:
            step = max(1, SHAP_CHUNK // X.shape[1])
            raw = in_row_chunks(explainer.shap_interaction_values, X, step)
            interactions = _per_class_interactions(raw, outputs.shape[1])[rows_index, :, :, picks]
        return ShapResult(
            values=values[rows_index, :, picks],
            base=base[picks],
            actual=outputs[rows_index, picks],
            classes=chosen,
            algorithm=algorithm,
            output_space=space,
            background_rows=rows,
            interactions=interactions,
        )

    def _grouped(self, loaded: LoadedModel, X: np.ndarray, options: ShapOptions) -> ShapResult:
        """A pipeline with categorical columns: TreeSHAP on what its last step sees, each input
        column getting the sum of its encoded columns (see :mod:`.categorical`)."""
        pipeline, descriptor = loaded.estimator, loaded.descriptor
        final = pipeline[-1]
        require(
            type(final).__name__ in TREE_MODELS and not _has_category_splits(final),
            "a pipeline with categorical columns is explained by TreeSHAP on its last step, "
            f"which must be a tree model (it is {type(final).__name__})",
        )
        require(
            options.algorithm in ("auto", "tree"),
            "a pipeline with categorical columns is explained with the tree algorithm only",
        )
        require(
            not options.include_interactions,
            "interaction values of a pipeline with categorical columns are not available",
        )
        encoded = encode(pipeline, X, descriptor.feature_names)

        def build() -> Any:
            shap = import_shap()

            return shap.TreeExplainer(tree_model(final), feature_perturbation="tree_path_dependent")

        explainer = self._explainer(loaded, _model_key(descriptor, "tree-grouped"), build)
        outputs = _tree_outputs(explainer, final, encoded, descriptor.is_classifier)
        step = max(1, SHAP_CHUNK)
        raw = in_row_chunks(
            lambda part: explainer.shap_values(part, check_additivity=False), encoded, step
        )
        values, base = _per_class(raw, explainer.expected_value, outputs.shape[1])
        groups = encoded_groups(pipeline, X.shape[1])
        grouped = np.stack([values[:, group, :].sum(axis=1) for group in groups], axis=1)
        chosen = self._chosen_classes(loaded, encoded, options, outputs, from_outputs=True)
        picks = [0 if c is None else c for c in chosen]
        rows = np.arange(len(X))
        return ShapResult(
            values=grouped[rows, :, picks],
            base=base[picks],
            actual=outputs[rows, picks],
            classes=chosen,
            algorithm="tree",
            output_space=output_space(final, "tree", descriptor.is_classifier),
            background_rows=0,
        )

    def _model_agnostic(
        self, loaded: LoadedModel, X: np.ndarray, options: ShapOptions, algorithm: str, space: str
    ) -> ShapResult:
        descriptor, estimator = loaded.descriptor, loaded.estimator
        outputs = model_outputs(estimator, X, space, descriptor.is_classifier)
        chosen = self._chosen_classes(loaded, X, options, outputs)
        values = np.zeros(X.shape, dtype=float)
        base = np.zeros(len(X), dtype=float)
        rows_used = 0
        for column in sorted({0 if c is None else c for c in chosen}):
            mask = np.asarray([(0 if c is None else c) == column for c in chosen])
            explainer, rows_used = self._agnostic_explainer(
                loaded, options, algorithm, space, column
            )
            values[mask], base[mask] = self._agnostic_values(explainer, algorithm, X[mask], options)
        picks = [0 if c is None else c for c in chosen]
        return ShapResult(
            values=values,
            base=base,
            actual=outputs[np.arange(len(X)), picks],
            classes=chosen,
            algorithm=algorithm,
            output_space=space,
            background_rows=rows_used,
        )

    def _agnostic_values(
        self, explainer: Any, algorithm: str, X: np.ndarray, options: ShapOptions
    ) -> tuple[np.ndarray, np.ndarray]:
        """KernelSHAP values row by row, each row's coalitions drawn with its own seed.

        shap samples coalitions with numpy's global generator, continuing from row to row; a
        row's answer would depend on the rows before it in a batch. Reseeding from
        :func:`row_seed` before every row makes a batch equal the single explanations.
        """
        nsamples: Any = options.nsamples or "auto"
        if algorithm == "exact":
            nsamples = 2 ** X.shape[1] - 2  # every coalition: exact Shapley values, no sampling
        values = np.empty(X.shape, dtype=float)
        for i in range(len(X)):
            np.random.seed(row_seed(X[i], options.seed))
            found = explainer.shap_values(
                X[i : i + 1], nsamples=nsamples, silent=True, l1_reg=False
            )
            values[i] = np.asarray(found, dtype=float).reshape(-1)
        expected = float(np.asarray(explainer.expected_value).reshape(-1)[0])
        return values, np.full(len(X), expected)

    def _chosen_classes(
        self,
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
            return [int(i) for i in np.argmax(outputs, axis=1)]
        return [int(i) for i in predicted_indices(loaded.estimator, X)]

    # --- explainers ---------------------------------------------------------------------------
    def tree_explainer(self, loaded: LoadedModel) -> Any:
        """The (cached) ``shap.TreeExplainer`` of a loaded tree model."""
        return self._tree_explainer(loaded)

    def _tree_explainer(self, loaded: LoadedModel) -> Any:
        def build() -> Any:
            shap = import_shap()

            return shap.TreeExplainer(
                tree_model(loaded.estimator), feature_perturbation="tree_path_dependent"
            )

        return self._explainer(loaded, _model_key(loaded.descriptor, "tree"), build)

    def _linear_explainer(self, loaded: LoadedModel, options: ShapOptions) -> tuple[Any, int]:
        """shap's LinearExplainer over the whole background.

        ``coef * (x - mean(background))`` needs only the background's mean, which costs one
        pass over it, so linear models never subsample (``background_sample_size`` is ignored).
        """
        background = _require_background(loaded)

        def build() -> tuple[Any, int]:
            shap = import_shap()

            masker = shap.maskers.Independent(background, max_samples=len(background))
            return shap.LinearExplainer(loaded.estimator, masker), len(background)

        return self._explainer(loaded, _model_key(loaded.descriptor, "linear"), build)

    def _agnostic_explainer(
        self, loaded: LoadedModel, options: ShapOptions, algorithm: str, space: str, column: int
    ) -> tuple[Any, int]:
        background = _require_background(loaded)
        descriptor, estimator = loaded.descriptor, loaded.estimator

        @guarded
        def predict(data: np.ndarray) -> np.ndarray:
            return model_outputs(estimator, np.asarray(data), space, descriptor.is_classifier)[
                :, column
            ]

        def build() -> tuple[Any, int]:
            shap = import_shap()

            weighted = algorithm == "kernel"
            data, rows = summarize_background(
                background,
                options.background_sample_size,
                options.background_method,
                options.seed,
                weighted,
            )
            return shap.KernelExplainer(predict, data), rows

        key = (
            *_model_key(descriptor, algorithm),
            column,
            options.background_sample_size,
            options.background_method,
            options.seed,
        )
        return self._explainer(loaded, key, build)

    # --- helpers ------------------------------------------------------------------------------
    def _typed_rows(
        self, descriptor: ModelDescriptor, rows: list[list[Any]], batch: bool = False
    ) -> np.ndarray:
        """Rows as a matrix; strings only where the model encodes categories (else 400)."""
        X = as_matrix(rows)
        if X.dtype == object:
            loaded = self.model_loader.load(descriptor.model_id, descriptor.version)
            allowed = text_columns(loaded.estimator)
            for i, row in enumerate(rows):
                where = f"inputs[{i}]: " if batch else ""
                check_row_types(row, descriptor.feature_names, allowed, where)
        return X

    def _tabular_descriptor(self, model_id: str, model_version: int | None) -> ModelDescriptor:
        descriptor = self.model_loader.describe(model_id, model_version)
        require(
            descriptor.is_tabular,
            f"model '{model_id}' is {descriptor.task}: dependence plots and global importance "
            "over a dataset version need a tabular model; explain text and image inputs with "
            "POST /explanations or /explanations/batch (text also with /explanations/global "
            "and inputs)",
        )
        return descriptor

    @staticmethod
    def _interaction_feature(
        values: np.ndarray, X: np.ndarray, index: int, names: list[str], requested: str | None
    ) -> str | None:
        if requested is None or len(names) < 2:
            return None
        if requested != "auto":
            return requested
        shap = import_shap()

        order = shap.utils.approximate_interactions(index, values, X)
        candidates = [int(i) for i in order if int(i) != index]
        return names[candidates[0]] if candidates else None


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


def row_seed(row: np.ndarray, seed: int) -> int:
    """The seed of one row's KernelSHAP sampling: from the request's ``seed`` and the row's own
    values (so it is the same alone and in any batch)."""
    digest = hashlib.sha256(np.asarray(row, dtype=np.float64).tobytes())
    digest.update(int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest()[:4], "little")


def tree_model(estimator: Any) -> Any:
    """What ``shap.TreeExplainer`` is given for a tree model: the estimator itself, or for a
    multiclass ``GradientBoostingClassifier`` (which shap refuses) its trees as shap's model dict.

    Each stage of a multiclass gradient boosting model holds one regression tree per class whose
    leaves, times the learning rate, add to that class's margin; a tree whose values are zero for
    every other class explains exactly the same sum, so TreeSHAP over all of them gives each
    class's margin, as ``decision_function`` computes it (the inputs compared as float32, as
    scikit-learn's trees compare them).
    """
    if type(estimator).__name__ == "BoosterModel":
        return estimator.booster
    stages: Any = getattr(estimator, "estimators_", None)
    multiclass = stages is not None and np.ndim(stages) == 2 and np.shape(stages)[1] > 1
    if type(estimator).__name__ != "GradientBoostingClassifier" or not multiclass:
        return estimator
    n_classes = stages.shape[1]
    trees = [
        _tree_dict(tree.tree_, column, n_classes, float(estimator.learning_rate))
        for stage in stages
        for column, tree in enumerate(stage)
    ]
    base = estimator._raw_predict_init(np.zeros((1, estimator.n_features_in_)))[0]
    return {
        "trees": trees,
        "base_offset": np.asarray(base, dtype=float),
        "tree_output": "raw_value",
        "input_dtype": np.float32,
        "internal_dtype": np.float64,
    }


def _tree_dict(tree: Any, column: int, n_classes: int, scale: float) -> dict[str, np.ndarray]:
    values = np.zeros((tree.node_count, n_classes))
    values[:, column] = tree.value[:, 0, 0] * scale
    left, right = tree.children_left, tree.children_right
    missing_left = getattr(tree, "missing_go_to_left", None)
    default = left if missing_left is None else np.where(missing_left, left, right)
    return {
        "children_left": np.array(left),
        "children_right": np.array(right),
        "children_default": np.array(default),
        "features": np.array(tree.feature),
        "thresholds": np.array(tree.threshold, dtype=float),
        "values": values,
        "node_sample_weight": np.array(tree.weighted_n_node_samples, dtype=float),
    }


def _model_key(descriptor: ModelDescriptor, algorithm: str) -> tuple[Any, ...]:
    return (descriptor.model_id, descriptor.version, descriptor.artifact_sha256, algorithm)


def _require_background(loaded: LoadedModel) -> np.ndarray:
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


def _tree_outputs(explainer: Any, estimator: Any, X: np.ndarray, is_classifier: bool) -> np.ndarray:
    """The trees' raw output (the space TreeSHAP explains), computed from the same trees; for
    XGBoost and LightGBM, the library's own margin (shap's copy of a multiclass XGBoost model
    does not hold its base scores)."""
    raw = np.asarray(explainer.model.predict(X), dtype=float)
    if type(estimator).__name__ == "BoosterModel":
        raw = _booster_margin(explainer, estimator, X, raw, is_classifier)
    if not is_classifier:
        return np.asarray(raw, dtype=float).reshape(len(X), 1)
    return _as_class_columns(np.asarray(raw, dtype=float))


def _booster_margin(
    explainer: Any, estimator: Any, X: np.ndarray, raw: np.ndarray, is_classifier: bool
) -> np.ndarray:
    """An XGBoost/LightGBM model's margin from shap's copy of its trees (one pass in C, cheaper
    than a library call per request) corrected by its constant offset from the library's own
    margin (shap's copy of a multiclass XGBoost model lacks the base scores), measured once per
    explainer. Where shap's copy has another shape (multiclass LightGBM) the library answers."""
    library = estimator.decision_function if is_classifier else estimator.predict
    offset = getattr(explainer, "synapse_offset", None)
    if offset is None:
        probe = np.zeros((1, X.shape[1]))
        expected, copied = np.asarray(library(probe)), np.asarray(explainer.model.predict(probe))
        offset = expected - copied if expected.shape == copied.shape else False
        explainer.synapse_offset = offset
    if offset is False or raw.shape[1:] != np.shape(offset)[1:]:
        return np.asarray(library(X), dtype=float)
    return raw + offset


def _require_tree_interactions(estimator: Any, options: ShapOptions) -> None:
    """shap computes a multiclass LightGBM model's interaction values as if it had one output."""
    report = getattr(estimator, "report", None)
    multiclass_lightgbm = (
        report is not None and report.library == "lightgbm" and report.kind == "multiclass"
    )
    require(
        not (options.include_interactions and multiclass_lightgbm),
        "interaction values of multiclass LightGBM models are not available (shap computes "
        "them as if the model had one output); ask without include_interactions",
    )


def _per_class_interactions(raw: Any, n_outputs: int) -> np.ndarray:
    array = np.asarray(raw, dtype=float)
    if array.ndim == 3:
        array = array[..., None]
    if array.shape[3] == 1 and n_outputs == 2:
        array = np.concatenate([-array, array], axis=3)
    return array


def _interactions(matrix: np.ndarray | None, row: int, names: list[str]) -> dict[str, Any] | None:
    """Pairwise interaction values of one row: the matrix and the strongest pairs."""
    if matrix is None:
        return None
    values = matrix[row]
    pairs: list[dict[str, Any]] = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            pairs.append(
                {"feature_a": names[a], "feature_b": names[b], "value": float(values[a, b] * 2)}
            )
    pairs.sort(key=lambda pair: -abs(float(pair["value"])))
    return {"feature_names": names, "matrix": values.tolist(), "top_pairs": pairs[:10]}
