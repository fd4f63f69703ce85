"""TreeSHAP: ``shap.TreeExplainer`` with ``tree_path_dependent`` perturbation.

Exact and without a background for scikit-learn tree ensembles, ``HistGradientBoosting*``
without categorical splits, XGBoost and LightGBM boosters (``chalicelib.registry.boosters``)
and multiclass ``GradientBoostingClassifier`` (its trees handed to shap as a model dict).
Output space: the trees' raw output (probability for random forests, extra trees and decision
trees; log-odds or margin for gradient boosting; the prediction for regressors). Interaction
values on request. A pipeline with categorical columns is explained by TreeSHAP on its last
step, each input column getting the sum of its encoded columns (:func:`grouped_values`).
scikit-learn's forests and decision trees are explained by shap's C kernel without importing
shap (:mod:`._native_tree`: the same values, a second less of a cold start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from chalicelib.explainability.base import require
from chalicelib.explainability.budget import SHAP_CHUNK
from chalicelib.explainability.categorical import encode, encoded_groups
from chalicelib.explainability.explainers import _native_tree as native_tree
from chalicelib.explainability.explainers._common import (
    TREE_MODELS,
    ShapOptions,
    ShapResult,
    as_class_columns,
    chosen_classes,
    class_result,
    in_timed_chunks,
    model_key,
    output_space,
    per_class,
)
from chalicelib.explainability.jit_cache import import_shap
from chalicelib.explainability.loading import LoadedModel

if TYPE_CHECKING:
    from chalicelib.explainability.base import ExplainerBase


def has_category_splits(estimator: Any) -> bool:
    """Whether a histogram gradient boosting model splits on category sets."""
    categorical = getattr(estimator, "is_categorical_", None)
    return categorical is not None and bool(np.any(categorical))


def tree_explainer(engine: ExplainerBase, loaded: LoadedModel) -> Any:
    """The (cached) TreeSHAP explainer of a loaded tree model (see :func:`path_dependent`)."""
    return engine._explainer(
        loaded, model_key(loaded.descriptor, "tree"), lambda: path_dependent(loaded.estimator)
    )


def path_dependent(estimator: Any) -> Any:
    """A ``tree_path_dependent`` TreeSHAP explainer of a tree model: for scikit-learn's
    forests and decision trees one on shap's C kernel without importing shap (the same values,
    see :mod:`._native_tree`), for every other model ``shap.TreeExplainer``."""
    model = tree_model(estimator)
    if native_tree.supports(model):
        return native_tree.NativeTreeExplainer(model)
    shap = import_shap()
    explainer = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    if explainer.model.model_type == "xgboost":
        # shap builds each call's DMatrix with these (its route for XGBClassifier's n_jobs). A
        # DMatrix left at its default starts an OpenMP team whose idle worker spins for a core
        # after every call; on a busy machine that took the CPU from the request's own work.
        explainer.model._xgb_dmatrix_props = {"nthread": 1}
    return explainer


def tree_values(
    engine: ExplainerBase, loaded: LoadedModel, X: np.ndarray, options: ShapOptions, space: str
) -> ShapResult:
    """TreeSHAP values (and interaction values when asked) of every row's explained class."""
    descriptor = loaded.descriptor
    explainer = tree_explainer(engine, loaded)
    outputs = tree_outputs(explainer, loaded.estimator, X, descriptor.is_classifier)
    # shap's own tree additivity check would evaluate the trees again; ours is reported.
    m, k = X.shape[1], outputs.shape[1]
    raw = in_timed_chunks(
        lambda part: explainer.shap_values(part, check_additivity=False), X, SHAP_CHUNK, m * k
    )
    base = explainer.expected_value  # read before interaction values (they may set it again)
    chosen = chosen_classes(loaded, X, options, outputs, from_outputs=True)
    interactions = None
    if options.include_interactions:
        picks = [0 if c is None else c for c in chosen]
        first = max(1, SHAP_CHUNK // m)
        source = interaction_explainer(engine, loaded, explainer)
        pairs = in_timed_chunks(
            lambda part: source.shap_interaction_values(one_thread(source, part)),
            X,
            first,
            m * m * k,
        )
        interactions = per_class_interactions(pairs, k)[np.arange(len(X)), :, :, picks]
    return class_result(raw, base, outputs, chosen, "tree", space, 0, interactions)


def one_thread(explainer: Any, X: np.ndarray) -> Any:
    """``X`` as shap's explainer should read it: for XGBoost a one-thread DMatrix (shap builds a
    default one for interaction values, ignoring the properties ``path_dependent`` sets)."""
    if getattr(explainer.model, "model_type", None) != "xgboost":
        return X
    import xgboost

    return xgboost.DMatrix(X, **explainer.model._xgb_dmatrix_props)


def grouped_values(
    engine: ExplainerBase, loaded: LoadedModel, X: np.ndarray, options: ShapOptions
) -> ShapResult:
    """A pipeline with categorical columns: TreeSHAP on what its last step sees, each input
    column getting the sum of its encoded columns (see :mod:`..categorical`)."""
    pipeline, descriptor = loaded.estimator, loaded.descriptor
    final = pipeline[-1]
    grouped_algorithm(pipeline, options.algorithm)
    require(
        not options.include_interactions,
        "interaction values of a pipeline with categorical columns are not available",
    )
    encoded = encode(pipeline, X, descriptor.feature_names)
    explainer = grouped_explainer(engine, loaded)
    outputs = tree_outputs(explainer, final, encoded, descriptor.is_classifier)
    raw = in_timed_chunks(
        lambda part: explainer.shap_values(part, check_additivity=False),
        encoded,
        SHAP_CHUNK,
        encoded.shape[1] * outputs.shape[1],
    )
    values, base = per_class(raw, explainer.expected_value, outputs.shape[1])
    groups = encoded_groups(pipeline, X.shape[1])
    grouped = np.stack([values[:, group, :].sum(axis=1) for group in groups], axis=1)
    chosen = chosen_classes(loaded, encoded, options, outputs, from_outputs=True)
    space = output_space(final, "tree", descriptor.is_classifier)
    return class_result(grouped, base, outputs, chosen, "tree", space, 0)


def grouped_algorithm(pipeline: Any, requested: str) -> str:
    """The algorithm of a pipeline with categorical columns: always TreeSHAP on its last step.

    Raises:
        UnprocessableEntity: The last step is not a tree model, or another algorithm is forced.
    """
    final = pipeline[-1]
    require(
        type(final).__name__ in TREE_MODELS and not has_category_splits(final),
        "a pipeline with categorical columns is explained by TreeSHAP on its last step, "
        f"which must be a tree model (it is {type(final).__name__})",
    )
    require(
        requested in ("auto", "tree"),
        "a pipeline with categorical columns is explained with the tree algorithm only",
    )
    return "tree"


def grouped_explainer(engine: ExplainerBase, loaded: LoadedModel) -> Any:
    """The (cached) TreeSHAP explainer of a categorical pipeline's last step (it explains the
    encoded columns :func:`~chalicelib.explainability.categorical.encode` gives)."""
    final = loaded.estimator[-1]
    return engine._explainer(
        loaded, model_key(loaded.descriptor, "tree-grouped"), lambda: path_dependent(final)
    )


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


def tree_outputs(explainer: Any, estimator: Any, X: np.ndarray, is_classifier: bool) -> np.ndarray:
    """The trees' raw output (the space TreeSHAP explains), computed from the same trees; for
    XGBoost and LightGBM, the library's own margin (shap's copy of a multiclass XGBoost model
    does not hold its base scores)."""
    raw = np.asarray(trees_predict(explainer)(X), dtype=float)
    if type(estimator).__name__ == "BoosterModel":
        raw = _booster_margin(explainer, estimator, X, raw, is_classifier)  # floats too
    if not is_classifier:
        return raw.reshape(len(X), 1)
    return as_class_columns(raw)


def trees_predict(explainer: Any) -> Any:
    """``explainer.model.predict``, through :func:`._native_tree.dense_predictor` where it
    applies (built once per explainer: the same numbers, without shap's per-call checks)."""
    found = getattr(explainer, "synapse_predict", None)
    if found is None:
        found = native_tree.dense_predictor(explainer.model) or explainer.model.predict
        explainer.synapse_predict = found
    return found


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
        expected, copied = np.asarray(library(probe)), np.asarray(trees_predict(explainer)(probe))
        offset = expected - copied if expected.shape == copied.shape else False
        explainer.synapse_offset = offset
    if offset is False or raw.shape[1:] != np.shape(offset)[1:]:
        return np.asarray(library(X), dtype=float)
    return raw + offset


def interaction_explainer(engine: ExplainerBase, loaded: LoadedModel, explainer: Any) -> Any:
    """The explainer whose interaction values are per class.

    shap reads a multiclass LightGBM model as one output (its SHAP values come from LightGBM's
    own ``pred_contrib``, but its interaction values sum every class's trees). Tree ``i`` of
    such a model adds to class ``i % n_classes``, so its trees are handed to shap again as a
    model dict whose tree ``i`` has values in column ``i % n_classes`` only: TreeSHAP then gives
    each class's interactions, equal to shap's on a model of that class's trees alone (tested).
    Every other model's interactions come from ``explainer`` itself.
    """
    report = getattr(loaded.estimator, "report", None)
    if report is None or report.library != "lightgbm" or report.kind != "multiclass":
        return explainer
    n_classes = len(loaded.estimator.classes_)

    def build() -> Any:
        shap = import_shap()

        trees = list(explainer.model.trees)
        require(
            not any(np.any(np.asarray(tree.threshold_types) == 1) for tree in trees),
            "interaction values of multiclass LightGBM models with categorical splits are "
            "not available; ask without include_interactions",
        )
        model = {
            "trees": [_class_tree(tree, i % n_classes, n_classes) for i, tree in enumerate(trees)],
            "base_offset": np.zeros(n_classes),
            "tree_output": "raw_value",
            "input_dtype": np.float64,
            "internal_dtype": np.float64,
        }
        return shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")

    return engine._explainer(loaded, model_key(loaded.descriptor, "tree-interactions"), build)


def _class_tree(tree: Any, column: int, n_classes: int) -> dict[str, np.ndarray]:
    """One of shap's parsed trees as a model-dict tree adding to ``column`` only."""
    values = np.zeros((len(tree.values), n_classes))
    values[:, column] = np.asarray(tree.values, dtype=float).reshape(len(tree.values), -1)[:, 0]
    return {
        "children_left": np.array(tree.children_left),
        "children_right": np.array(tree.children_right),
        "children_default": np.array(tree.children_default),
        "features": np.array(tree.features),
        "thresholds": np.array(tree.thresholds, dtype=float),
        "values": values,
        "node_sample_weight": np.array(tree.node_sample_weight, dtype=float),
    }


def per_class_interactions(raw: Any, n_outputs: int) -> np.ndarray:
    """Interaction values as (rows, features, features, outputs)."""
    array = np.asarray(raw, dtype=float)
    if array.ndim == 3:
        array = array[..., None]
    if array.shape[3] == 1 and n_outputs == 2:
        array = np.concatenate([-array, array], axis=3)
    return array
