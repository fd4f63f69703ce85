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
  Shapley values for the background; it runs through the KernelSHAP code because shap's
  ``ExactExplainer`` JIT-compiles with numba on first use (seconds on a cold Lambda).
  ``kernel`` samples coalitions (shap's ``auto`` count) with a seeded generator. Both are
  shap's ``KernelExplainer`` algorithm written in numpy (shap's numbers, without importing it).

Each algorithm is its own module in :mod:`.explainers` (``_tree``, ``_linear``, ``_exact``,
``_kernel``); this module chooses one and builds the explanations. Contributions always add up
to ``actual_prediction - base_prediction`` in ``output_space``; the
remaining difference is reported as ``additivity_error``. shap is imported on first use only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.explainability.base import (
    ExplainerBase,
    RankedRows,
    batch_ids,
    class_index,
    class_labels,
    collection_paused,
    loaded_labels,
    require,
)
from chalicelib.explainability.categorical import check_row_types, text_columns
from chalicelib.explainability.explainers._common import (
    ALGORITHMS,
    BACKGROUND_METHODS,
    BOOSTED_CLASSIFIERS,
    LINEAR_MODELS,
    PROBABILITY_TREES,
    TREE_MODELS,
    ShapOptions,
    ShapResult,
    in_row_chunks,
    model_outputs,
    output_space,
    shap_options,
)
from chalicelib.explainability.explainers._exact import EXACT_MAX_FEATURES, exact_values
from chalicelib.explainability.explainers._kernel import (
    kernel_values,
    row_seed,
    summarize_background,
)
from chalicelib.explainability.explainers._linear import linear_values
from chalicelib.explainability.explainers._tree import (
    grouped_algorithm,
    grouped_explainer,
    grouped_values,
    has_category_splits,
    interaction_explainer,
    tree_explainer,
    tree_model,
    tree_values,
)
from chalicelib.explainability.inputs import as_matrix, tabular_matrix, tabular_row
from chalicelib.explainability.jit_cache import import_shap
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor
from chalicelib.explainability.models import (
    AggregationMethod,
    ExplanationType,
    FeatureContribution,
    GlobalExplanation,
    PredictionExplanation,
)
from chalicelib.explainability.shap_media import MediaShap, MediaShapOptions

# Names other modules import from here (the engine's public face; the math lives in explainers/).
__all__ = [
    "ALGORITHMS",
    "BACKGROUND_METHODS",
    "BOOSTED_CLASSIFIERS",
    "EXACT_MAX_FEATURES",
    "LINEAR_MODELS",
    "PROBABILITY_TREES",
    "TREE_MODELS",
    "SHAPExplainer",
    "ShapOptions",
    "ShapResult",
    "choose_algorithm",
    "in_row_chunks",
    "model_outputs",
    "output_space",
    "row_seed",
    "shap_options",
    "summarize_background",
    "tree_model",
]

# One explainer module per algorithm: (engine, loaded, X, options, output space) -> ShapResult.
EXPLAINERS = {
    "tree": tree_values,
    "linear": linear_values,
    "exact": exact_values,
    "kernel": kernel_values,
}


def choose_algorithm(estimator: Any, n_features: int, requested: str = "auto") -> str:
    """The SHAP algorithm for an estimator: the one choice the engine runs and the planner
    prices (a pipeline with categorical columns: TreeSHAP on its last step).

    Raises:
        ValidationError: Unknown algorithm name.
        UnprocessableEntity: A forced tree/linear algorithm on a model that is neither.
    """
    if requested not in ALGORITHMS:
        raise ValidationError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    if text_columns(estimator):
        return grouped_algorithm(estimator, requested)
    name = type(estimator).__name__
    if requested == "tree" and name not in TREE_MODELS:
        raise UnprocessableEntity(f"the tree algorithm does not support {name}")
    if name in TREE_MODELS and has_category_splits(estimator):
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
        *,
        options: MediaShapOptions | None = None,
        **values: Any,
    ) -> PredictionExplanation:
        """Explains a text classifier's prediction word by word (cached; ``options``, or
        ``values`` as :func:`~chalicelib.explainability.shap_media.media_shap_options`)."""
        return MediaShap(self).explain_text(
            model_id, model_version, text, prediction_id, options=options, **values
        )

    def explain_image_prediction(
        self,
        model_id: str,
        model_version: int | None,
        image: Any,
        prediction_id: str | None = None,
        *,
        options: MediaShapOptions | None = None,
        **values: Any,
    ) -> PredictionExplanation:
        """Explains an image classifier's prediction by LIME's superpixels (cached; ``options``,
        or ``values`` as :func:`~chalicelib.explainability.shap_media.media_shap_options`)."""
        return MediaShap(self).explain_image(
            model_id, model_version, image, prediction_id, options=options, **values
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
        *,
        options: ShapOptions | None = None,
    ) -> PredictionExplanation:
        """Explains one prediction (cached). ``options`` (validated :class:`ShapOptions`, as the
        service passes them) replaces the separate parameters.

        Raises:
            ValidationError: Invalid input (the message names the feature) or parameters.
            UnprocessableEntity: The model cannot be explained this way.
        """
        if options is None:
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
        *,
        options: ShapOptions | None = None,
    ) -> list[PredictionExplanation]:
        """Explains many predictions with one explainer and one background.

        Each row is cached under the key a single request for it uses: rows already explained
        are answered from the cache, the others are computed together and stored one by one.
        A row's answer never depends on its neighbours (KernelSHAP seeds every row from its own
        content), so a batch equals the single explanations of its rows.

        ``options`` (validated :class:`ShapOptions`) replaces the separate parameters.

        Raises:
            ValidationError: Any row is invalid (the message names the row and feature).
        """
        if options is None:
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
        """SHAP values of every row for its explained class (the engine's core): the explainer
        module of the chosen algorithm computes them (:mod:`.explainers`)."""
        estimator, descriptor = loaded.estimator, loaded.descriptor
        if descriptor.is_classifier:
            class_index(estimator, descriptor, options.class_name)  # 400 before any work
        algorithm, space = loaded.remembered(
            ("shap-algorithm", options.algorithm, X.shape[1]),
            lambda: _algorithm_and_space(loaded, X.shape[1], options.algorithm),
        )
        if space is None:
            return grouped_values(self, loaded, X, options)
        require(
            not options.include_interactions or algorithm == "tree",
            "interaction values are available for tree models only",
        )
        return EXPLAINERS[algorithm](self, loaded, X, options, space)

    def _explain_rows(
        self,
        descriptor: ModelDescriptor,
        X: np.ndarray,
        prediction_ids: list[str | None],
        options: ShapOptions,
    ) -> list[PredictionExplanation]:
        loaded = self.model_loader.load(descriptor.model_id, descriptor.version)
        result = self.shap_values(loaded, X, options)
        labels = loaded_labels(loaded) if descriptor.is_classifier else []
        names = list(descriptor.feature_names)
        fields: dict[str, Any] = {
            "model_id": descriptor.model_id,
            "model_version": descriptor.version,
            "input_kind": "tabular",
            "algorithm": result.algorithm,
            "output_space": result.output_space,
            "parameters": options.as_parameters(),  # a fresh dict
            "created_at": self.clock.now(),  # one time for the whole batch
        }
        fields["parameters"]["background_rows_used"] = result.background_rows
        explained = [None if chosen is None else labels[chosen] for chosen in result.classes]
        n = len(prediction_ids)
        if n == 1:
            return [self._one_row(X, result, prediction_ids[0], explained[0], names, fields)]
        sums = result.base + result.values.sum(axis=1)
        errors = np.abs(sums - result.actual).tolist()
        # The whole batch is checked and ranked at once; a batch with a number that is not
        # finite goes through the per-row check, which names it (a 422).
        if not _finite_result(result, errors):
            return self._checked_rows(X, result, prediction_ids, explained, names, sums, fields)
        with collection_paused():
            ranked = RankedRows.of(result.values, X, names)
            rows = zip(
                batch_ids(n),
                prediction_ids,
                explained,
                result.base.tolist(),
                result.actual.tolist(),
                errors,
                [_interactions(result.interactions, i, names) for i in range(n)],
                ranked.contributions(),
                ranked.top_positive(),
                ranked.top_negative(),
                strict=True,
            )
            return [self._ranked_explanation(fields, *row) for row in rows]

    def _one_row(
        self,
        X: np.ndarray,
        result: ShapResult,
        prediction_id: str | None,
        explained_class: str | None,
        names: list[str],
        fields: dict[str, Any],
    ) -> PredictionExplanation:
        """A single request's explanation: a batch's numbers for its one row, the base, output
        and additivity error in Python floats (the same IEEE additions as numpy's on one
        number, without its calls) and none of the batch's per-row lists. One row allocates a
        few dozen objects: pausing the collector would cost more than it saves."""
        base, actual = result.base.item(), result.actual.item()
        total = base + result.values.sum(axis=1).item()  # numpy's sum of the row, as a batch's
        error = abs(total - actual)
        if not _finite_result(result, [error]):
            ids, classes, sums = [prediction_id], [explained_class], np.array([total])
            return self._checked_rows(X, result, ids, classes, names, sums, fields)[0]
        ranked = RankedRows.of(result.values, X, names)
        return self._ranked_explanation(
            fields,
            batch_ids(1)[0],
            prediction_id,
            explained_class,
            base,
            actual,
            error,
            _interactions(result.interactions, 0, names),
            ranked.contributions()[0],
            ranked.top_positive()[0],
            ranked.top_negative()[0],
        )

    def _ranked_explanation(
        self,
        fields: dict[str, Any],
        explanation_id: str,
        prediction_id: str | None,
        explained_class: str | None,
        base: float,
        actual: float,
        additivity_error: float,
        interactions: dict[str, Any] | None,
        contributions: list[FeatureContribution],
        positive: list[str],
        negative: list[str],
    ) -> PredictionExplanation:
        """One row of a batch checked finite and ranked at once."""
        return PredictionExplanation(
            explanation_id=explanation_id,
            prediction_id=prediction_id,
            model_id=fields["model_id"],
            model_version=fields["model_version"],
            explanation_type=self.explanation_type,
            input_kind=fields["input_kind"],
            algorithm=fields["algorithm"],
            output_space=fields["output_space"],
            explained_class=explained_class,
            base_prediction=base,
            actual_prediction=actual,
            feature_contributions=contributions,
            top_positive_features=positive,
            top_negative_features=negative,
            additivity_error=additivity_error,
            interactions=interactions,
            parameters=fields["parameters"],
            created_at=fields["created_at"],
        )

    def _checked_rows(
        self,
        X: np.ndarray,
        result: ShapResult,
        prediction_ids: list[str | None],
        explained: list[str | None],
        names: list[str],
        sums: np.ndarray,
        fields: dict[str, Any],
    ) -> list[PredictionExplanation]:
        """Explanations built row by row, each checked finite (the first row with a number that
        is not finite is refused with a 422 naming it)."""
        inputs, values = X.tolist(), result.values.tolist()
        totals, bases, actuals = sums.tolist(), result.base.tolist(), result.actual.tolist()
        return [
            self._build_explanation(
                prediction_id=prediction_id,
                explained_class=explained[i],
                base_prediction=bases[i],
                actual_prediction=actuals[i],
                feature_contributions=list(map(FeatureContribution, names, inputs[i], values[i])),
                additivity_error=abs(totals[i] - actuals[i]),
                interactions=_interactions(result.interactions, i, names),
                **fields,
            )
            for i, prediction_id in enumerate(prediction_ids)
        ]

    # --- explainers ---------------------------------------------------------------------------
    def tree_explainer(self, loaded: LoadedModel, interactions: bool = False) -> Any:
        """The (cached) ``shap.TreeExplainer`` of a loaded tree model; with ``interactions``,
        the one whose interaction values are per class (see
        :func:`.explainers._tree.interaction_explainer`). For a pipeline with categorical
        columns, its last step's (explaining the encoded columns; no interaction values)."""
        if text_columns(loaded.estimator):
            require(
                not interactions,
                "interaction values of a pipeline with categorical columns are not available",
            )
            return grouped_explainer(self, loaded)
        explainer = tree_explainer(self, loaded)
        return interaction_explainer(self, loaded, explainer) if interactions else explainer

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
        if descriptor.is_tabular:  # the message is built only when it is needed
            return descriptor
        raise UnprocessableEntity(
            f"model '{model_id}' is {descriptor.task}: dependence plots and global importance "
            "over a dataset version need a tabular model; explain text and image inputs with "
            "POST /explanations or /explanations/batch (text also with /explanations/global "
            "and inputs)"
        )

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


def _algorithm_and_space(loaded: LoadedModel, width: int, requested: str) -> tuple[str, str | None]:
    """The algorithm :func:`choose_algorithm` picks for ``requested`` and the output space it
    explains in (``None``: a pipeline with categorical columns, explained by
    :func:`grouped_values`)."""
    estimator = loaded.estimator
    algorithm = choose_algorithm(estimator, width, requested)
    if text_columns(estimator):
        return algorithm, None
    return algorithm, output_space(estimator, algorithm, loaded.descriptor.is_classifier)


def _finite_result(result: ShapResult, errors: list[float]) -> bool:
    """Whether every number of a batch's explanations is finite: values, bases, outputs,
    additivity errors (|total - output|, which can overflow) and interaction values.

    ``errors`` are ``|base + values.sum(axis=1) - output|``: an infinite or NaN value or base
    makes its row's total infinite or NaN (IEEE sums never turn one finite), and so its
    error, as an output that is not finite does. So the errors alone being finite means every
    value, base, output and error is."""
    if not all(map(math.isfinite, errors)):
        return False
    return result.interactions is None or bool(np.isfinite(result.interactions).all())


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
