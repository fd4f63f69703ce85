"""SHAP explanations of real scikit-learn models registered through the registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from tests.helpers.explain import MemoryContext, memory_context, register, tabular_data


@pytest.fixture
def ctx() -> MemoryContext:
    """The registry and service over in-memory stores."""
    return memory_context()


def _contributions(explanation: Any, names: list[str]) -> np.ndarray:
    found = explanation.contribution_map()
    return np.asarray([found[name] for name in names])


def test_linear_model_shap_equals_coef_times_input_minus_background_mean(ctx: Any) -> None:
    from sklearn.linear_model import LinearRegression

    X, names = tabular_data(120, 5)
    y = X @ np.array([1.5, -2.0, 0.5, 3.0, -0.25]) + 0.7
    model = register(
        ctx.reg, LinearRegression().fit(X, y), "regression", names, X, background=X[:60]
    )
    explanation = ctx.svc.shap.explain_prediction(model.model_id, model.version, model.row(70))
    expected = model.estimator.coef_ * (X[70] - X[:60].mean(axis=0))
    assert explanation.algorithm == "linear"
    assert explanation.output_space == "raw"
    np.testing.assert_allclose(_contributions(explanation, names), expected, atol=1e-6)
    assert explanation.additivity_error < 1e-6
    assert explanation.actual_prediction == pytest.approx(model.estimator.predict(X[70:71])[0])


def test_logistic_regression_is_explained_in_log_odds_and_adds_up(ctx: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    X, names = tabular_data(200, 4)
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    model = register(
        ctx.reg, LogisticRegression().fit(X, y), "classification", names, X, ["no", "yes"], X[:50]
    )
    explanation = ctx.svc.shap.explain_prediction(model.model_id, model.version, model.row(3))
    predicted = ["no", "yes"][int(model.estimator.predict(X[3:4])[0])]
    assert explanation.output_space == "log_odds"
    assert explanation.explained_class == predicted
    margin = model.estimator.decision_function(X[3:4])[0]
    assert explanation.actual_prediction == pytest.approx(margin if predicted == "yes" else -margin)
    assert explanation.additivity_error < 1e-6


def test_kernel_shap_adds_up_and_honours_background_sample_size(ctx: Any) -> None:
    from sklearn.neural_network import MLPRegressor

    X, names = tabular_data(150, 12)
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    mlp = MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0).fit(X, y)
    model = register(ctx.reg, mlp, "regression", names, X, background=X[:100])
    explanation = ctx.svc.shap.explain_prediction(
        model.model_id, model.version, model.row(120), background_sample_size=10
    )
    assert explanation.algorithm == "kernel"
    assert explanation.parameters["background_rows_used"] == 10
    assert explanation.additivity_error < 1e-6
    assert explanation.actual_prediction == pytest.approx(mlp.predict(X[120:121])[0])


def test_tree_shap_adds_up_and_an_unused_feature_gets_zero(ctx: Any) -> None:
    from sklearn.ensemble import RandomForestClassifier

    X, names = tabular_data(200, 4)
    X[:, 3] = 0.0  # constant while training: no tree can split on it
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0).fit(X, y)
    model = register(ctx.reg, forest, "classification", names, X, ["neg", "pos"])
    row = {**model.row(5), "f3": 4.2}
    explanation = ctx.svc.shap.explain_prediction(model.model_id, model.version, row)
    assert explanation.algorithm == "tree"
    assert explanation.output_space == "probability"
    assert explanation.contribution_map()["f3"] == 0.0
    assert explanation.additivity_error < 1e-3
    proba = forest.predict_proba(np.asarray([list(row.values())]))[0]
    assert explanation.actual_prediction == pytest.approx(proba.max())


def test_contributions_are_ordered_by_magnitude_with_ties_in_feature_order(ctx: Any) -> None:
    """A batch orders every row's contributions at once (numpy); the order is the one a stable
    sort by |contribution| gives, ties (here the exact zeros of unused features) in feature
    order, alone and in a batch, and the top features follow it."""
    from sklearn.ensemble import RandomForestRegressor

    X, names = tabular_data(200, 6)
    X[:, [1, 3, 4]] = 0.0  # constant while training: their contributions are exactly 0
    forest = RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0)
    forest.fit(X, 2 * X[:, 0] - X[:, 2] + 0.5 * X[:, 5])
    model = register(ctx.reg, forest, "regression", names, X)
    rows = [{**model.row(i), "f1": 1.0, "f3": -2.0, "f4": 3.0} for i in range(12)]
    batch = ctx.svc.shap.explain_batch(model.model_id, model.version, rows)
    assert len({explanation.explanation_id for explanation in batch}) == len(rows)
    uncached = ctx.service().shap
    uncached.cache = None  # the single explanations are computed, not the batch's cached rows
    for row, explanation in zip(rows, batch, strict=True):
        found = explanation.contribution_map()
        expected = sorted(names, key=lambda name: -abs(found[name]))  # stable: feature order
        assert [c.feature_name for c in explanation.feature_contributions] == expected
        assert [found[name] for name in ("f1", "f3", "f4")] == [0.0, 0.0, 0.0]
        positive = [name for name in expected if found[name] > 0][:5]
        assert explanation.top_positive_features == positive
        negative = sorted((name for name in expected if found[name] < 0), key=found.__getitem__)
        assert explanation.top_negative_features == negative[:5]
        single = uncached.explain_prediction(model.model_id, model.version, row)
        assert single.feature_contributions == explanation.feature_contributions


def test_exact_shap_is_chosen_for_few_features_and_gives_an_ignored_feature_zero(ctx: Any) -> None:
    from sklearn.neighbors import KNeighborsRegressor

    X, names = tabular_data(100, 3)
    y = X[:, 0] * 2 - X[:, 1]
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # The third feature is an input of the pipeline but is dropped before the model reads it.
    keep = ColumnTransformer([("keep", StandardScaler(), [0, 1])], remainder="drop")
    pipeline = make_pipeline(keep, KNeighborsRegressor(5, algorithm="brute")).fit(X, y)
    model = register(ctx.reg, pipeline, "regression", names, X, background=X[:30])
    explanation = ctx.svc.shap.explain_prediction(model.model_id, model.version, model.row(40))
    assert explanation.algorithm == "exact"
    assert abs(explanation.contribution_map()["f2"]) < 1e-12
    assert explanation.additivity_error < 1e-9


def test_gradient_boosting_is_explained_in_log_odds_with_interactions(ctx: Any) -> None:
    from sklearn.ensemble import GradientBoostingClassifier

    X, names = tabular_data(200, 3)
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)
    boosted = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0).fit(X, y)
    model = register(ctx.reg, boosted, "classification", names, X)
    explanation = ctx.svc.shap.explain_prediction(
        model.model_id, model.version, model.row(1), include_interactions=True, class_name="1"
    )
    assert explanation.output_space == "log_odds"
    assert explanation.explained_class == "1"
    assert explanation.actual_prediction == pytest.approx(boosted.decision_function(X[1:2])[0])
    matrix = np.asarray(explanation.interactions["matrix"])
    np.testing.assert_allclose(matrix.sum(axis=1), _contributions(explanation, names), atol=1e-6)
    top = explanation.interactions["top_pairs"][0]
    assert {top["feature_a"], top["feature_b"]} == {"f0", "f1"}


def test_interactions_for_a_linear_model_are_refused(ctx: Any) -> None:
    from sklearn.linear_model import Ridge

    X, names = tabular_data(50, 3)
    model = register(ctx.reg, Ridge().fit(X, X[:, 0]), "regression", names, X, background=X)
    with pytest.raises(UnprocessableEntity, match="tree models only"):
        ctx.svc.shap.explain_prediction(
            model.model_id, model.version, model.row(), include_interactions=True
        )


INVALID_INPUTS = [
    ({"zzz": 1.0}, "unknown feature 'zzz'"),
    ({"f1": "high"}, "feature 'f1' must be a number; got str"),
    ({"f1": float("nan")}, "feature 'f1' must be a finite number"),
    ({"f1": float("inf")}, "feature 'f1' must be a finite number"),
    ({"f1": True}, "feature 'f1' must be a number; got bool"),
    ({"f1": None}, "feature 'f1' must be a number; got null"),
]


def test_invalid_inputs_are_400_naming_the_feature(ctx: Any) -> None:
    from sklearn.linear_model import LinearRegression

    X, names = tabular_data(40, 3)
    model = register(
        ctx.reg, LinearRegression().fit(X, X[:, 0]), "regression", names, X, background=X
    )
    for change, message in INVALID_INPUTS:
        with pytest.raises(ValidationError, match=message):
            ctx.svc.shap.explain_prediction(
                model.model_id, model.version, {**model.row(), **change}
            )
    missing = model.row()
    del missing["f2"]
    with pytest.raises(ValidationError, match="missing feature 'f2'"):
        ctx.svc.shap.explain_prediction(model.model_id, model.version, missing)
    with pytest.raises(ValidationError, match=r"inputs\[1\]: feature 'f0'"):
        ctx.svc.shap.explain_batch(
            model.model_id, model.version, [model.row(), {**model.row(), "f0": "x"}]
        )


def test_unknown_class_name_is_400_and_no_background_is_422(ctx: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    X, names = tabular_data(60, 3)
    y = (X[:, 0] > 0).astype(int)
    model = register(
        ctx.reg, LogisticRegression().fit(X, y), "classification", names, X, ["a", "b"]
    )
    with pytest.raises(ValidationError, match="unknown class_name 'c'"):
        ctx.svc.shap.explain_prediction(model.model_id, model.version, model.row(), class_name="c")
    with pytest.raises(UnprocessableEntity, match="no background data"):
        ctx.svc.shap.explain_prediction(model.model_id, model.version, model.row())


def test_batch_shares_one_explainer_and_explains_each_predicted_class(ctx: Any) -> None:
    from sklearn.ensemble import ExtraTreesClassifier

    X, names = tabular_data(120, 4)
    y = np.digitize(X[:, 0], [-0.5, 0.5])
    trees = ExtraTreesClassifier(n_estimators=10, random_state=0).fit(X, y)
    model = register(ctx.reg, trees, "classification", names, X, ["low", "mid", "high"])
    inputs = [model.row(i) for i in range(8)]
    explanations = ctx.svc.shap.explain_batch(
        model.model_id, model.version, inputs, [f"p{i}" for i in range(8)]
    )
    labels = ["low", "mid", "high"]
    assert [e.explained_class for e in explanations] == [labels[c] for c in trees.predict(X[:8])]
    assert [e.prediction_id for e in explanations] == [f"p{i}" for i in range(8)]
    assert max(e.additivity_error for e in explanations) < 1e-3
    assert len(ctx.bus.of_type("ExplanationCompleted")) == 1
    assert ctx.bus.of_type("ExplanationCompleted")[0].detail["count"] == 8


def test_dependence_returns_feature_values_shap_values_and_an_interaction_feature(ctx: Any) -> None:
    from sklearn.ensemble import RandomForestRegressor

    X, names = tabular_data(150, 3)
    y = X[:, 0] * X[:, 1]
    forest = RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0).fit(X, y)
    model = register(ctx.reg, forest, "regression", names, X)
    inputs = [model.row(i) for i in range(30)]
    data = ctx.svc.shap.get_feature_dependence(model.model_id, model.version, "f0", inputs=inputs)
    assert data["feature_values"] == pytest.approx(X[:30, 0].tolist())
    assert len(data["shap_values"]) == 30
    assert data["interaction_feature"] == "f1"
    assert data["interaction_feature_values"] == pytest.approx(X[:30, 1].tolist())
    with pytest.raises(ValidationError, match="unknown feature 'nope'"):
        ctx.svc.shap.get_feature_dependence(model.model_id, model.version, "nope", inputs=inputs)


def test_global_importance_ranks_the_driving_feature_first(ctx: Any) -> None:
    from sklearn.linear_model import LinearRegression

    X, names = tabular_data(100, 4)
    y = 5 * X[:, 2] + 0.1 * X[:, 0]
    model = register(ctx.reg, LinearRegression().fit(X, y), "regression", names, X, background=X)
    result = ctx.svc.shap.compute_global_importance(
        model.model_id,
        model.version,
        inputs=[model.row(i) for i in range(20)],
        aggregation_method="median",
    )
    assert next(iter(result.feature_importances)) == "f2"
    assert result.aggregation_method == "median"
    assert result.stability["top_k_frequency"]["f2"] == 1.0
    assert result.n_explanations == 20
