"""Issue 16, correctness: exact linear SHAP, batch == single, per-row cache, no 500s.

Oracles: the linear formula computed here with numpy, shap's own TreeExplainer on single
scikit-learn trees, the model's own ``decision_function``/``predict``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from tests.helpers.explain import MemoryContext, memory_context, register, tabular_data


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread() -> Iterator[None]:
    """scikit-learn's histogram boosting fits and predicts with an OpenMP thread per core; on
    the shared, loaded 2-core machine those threads wait on each other (three 300-row fits took
    10 s of a test instead of about 0.3). Every oracle here explains the model that was fitted,
    whatever its thread count."""
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime the limit applies to)

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture
def ctx() -> MemoryContext:
    """The registry and service over in-memory stores."""
    return memory_context()


def _values(explanation: Any, names: list[str]) -> list[float]:
    found = explanation.contribution_map()
    return [found[name] for name in names]


def test_linear_shap_uses_the_whole_1000_row_background(ctx: Any) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    rng = np.random.default_rng(3)
    X, names = tabular_data(1200, 4, seed=3)
    background = rng.gamma(1.0, 2.0, size=(1000, 4))  # skewed: a subsample's mean is off
    y = X @ np.array([1.5, -2.0, 0.5, 3.0]) + 0.7
    linear = register(
        ctx.reg, LinearRegression().fit(X, y), "regression", names, X, background=background
    )
    explanation = ctx.svc.shap.explain_prediction(linear.model_id, linear.version, linear.row(5))
    coef, mean = linear.estimator.coef_, background.mean(axis=0)
    np.testing.assert_allclose(_values(explanation, names), coef * (X[5] - mean), atol=1e-9)
    assert explanation.base_prediction == pytest.approx(linear.estimator.intercept_ + coef @ mean)
    assert explanation.parameters["background_rows_used"] == 1000

    labels = (X[:, 0] - X[:, 2] > 0).astype(int)
    logistic = register(
        ctx.reg,
        LogisticRegression().fit(X, labels),
        "classification",
        names,
        X,
        ["n", "y"],
        background,
    )
    explanation = ctx.svc.shap.explain_prediction(
        logistic.model_id, logistic.version, logistic.row(5), class_name="y"
    )
    coef = logistic.estimator.coef_[0]
    np.testing.assert_allclose(_values(explanation, names), coef * (X[5] - mean), atol=1e-9)
    assert explanation.base_prediction == pytest.approx(
        logistic.estimator.intercept_[0] + coef @ mean
    )


def _batch_equals_single(ctx: Any, model: Any, rows: list[int], **options: Any) -> str:
    """Explains ``rows`` as one batch and each row alone on fresh services (no shared cache)."""
    batch_service = ctx.service()
    inputs = [model.row(i) for i in rows]
    batch = batch_service.shap.explain_batch(model.model_id, model.version, inputs, **options)
    for position, i in enumerate(rows):
        alone = ctx.service().shap
        alone.cache = None
        single = alone.explain_prediction(model.model_id, model.version, model.row(i), **options)
        names = model.feature_names
        assert _values(batch[position], names) == _values(single, names), (i, options)
        assert batch[position].base_prediction == single.base_prediction
        assert batch[position].explained_class == single.explained_class
    return batch[0].algorithm


def test_a_rows_kernel_shap_does_not_depend_on_its_neighbours_in_a_batch(ctx: Any) -> None:
    from sklearn.neural_network import MLPRegressor

    X, names = tabular_data(150, 12)
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    mlp = MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0).fit(X, y)
    model = register(ctx.reg, mlp, "regression", names, X, background=X[:40])
    algorithm = _batch_equals_single(ctx, model, [4, 9, 2], background_sample_size=20)
    assert algorithm == "kernel"


def test_batch_equals_single_for_every_algorithm(ctx: Any) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    X, names = tabular_data(160, 4)
    y = np.digitize(X[:, 0] + X[:, 1], [-0.5, 0.5])
    seen = set()
    for estimator in (
        RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0),
        LogisticRegression(),
        KNeighborsClassifier(5, algorithm="brute"),  # neighbour trees are refused
    ):
        model = register(ctx.reg, estimator.fit(X, y), "classification", names, X, None, X[:30])
        seen.add(_batch_equals_single(ctx, model, [3, 50, 7]))
        seen.add(_batch_equals_single(ctx, model, [3, 50, 7], algorithm="kernel", seed=4))
    assert seen == {"tree", "linear", "exact", "kernel"}


def test_lime_batch_equals_single(ctx: Any) -> None:
    from sklearn.ensemble import RandomForestClassifier

    X, names = tabular_data(120, 4)
    y = (X[:, 0] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=8, random_state=0).fit(X, y)
    model = register(ctx.reg, forest, "classification", names, X, None, X[:40])
    inputs = [model.row(i) for i in (1, 2, 3)]
    batch = ctx.service().lime.explain_batch(model.model_id, model.version, inputs, num_samples=300)
    alone = ctx.service().lime
    alone.cache = None
    single = alone.explain_prediction(model.model_id, model.version, inputs[1], num_samples=300)
    assert _values(batch[1], names) == _values(single, names)


def test_a_batch_reuses_the_per_row_cache_and_fills_it(ctx: Any) -> None:
    from sklearn.neural_network import MLPRegressor

    X, names = tabular_data(100, 11)
    mlp = MLPRegressor(hidden_layer_sizes=(4,), max_iter=50, random_state=0).fit(X, X[:, 0])
    model = register(ctx.reg, mlp, "regression", names, X, background=X[:20])
    shap_engine = ctx.svc.shap
    first = shap_engine.explain_prediction(model.model_id, model.version, model.row(1))
    assert not first.cached
    batch = shap_engine.explain_batch(
        model.model_id, model.version, [model.row(i) for i in (0, 1, 2)], ["a", "b", "c"]
    )
    assert [e.cached for e in batch] == [False, True, False]
    assert [e.prediction_id for e in batch] == ["a", "b", "c"]
    assert _values(batch[1], names) == _values(first, names)
    events = ctx.bus.of_type("ExplanationCompleted")
    assert events[-1].detail["count"] == 2  # only the rows computed
    again = shap_engine.explain_prediction(model.model_id, model.version, model.row(2))
    assert again.cached and _values(again, names) == _values(batch[2], names)


def test_a_multiclass_gradient_boosting_classifier_is_explained_by_tree_shap(ctx: Any) -> None:
    import shap
    from sklearn.ensemble import GradientBoostingClassifier

    X, names = tabular_data(300, 4)
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.5, 0.5])
    boosted = GradientBoostingClassifier(n_estimators=12, max_depth=3, random_state=0).fit(X, y)
    model = register(ctx.reg, boosted, "classification", names, X, ["lo", "mid", "hi"])
    for k, label in enumerate(["lo", "mid", "hi"]):
        explanation = ctx.svc.shap.explain_prediction(
            model.model_id, model.version, model.row(9), class_name=label
        )
        assert explanation.algorithm == "tree" and explanation.output_space == "margin"
        margin = boosted.decision_function(X[9:10])[0, k]
        assert explanation.actual_prediction == pytest.approx(margin, abs=1e-9)
        assert explanation.additivity_error < 1e-9
        # Oracle: TreeSHAP is linear in the trees; shap explains each scikit-learn tree itself.
        oracle = sum(
            boosted.learning_rate
            * shap.TreeExplainer(stage[k]).shap_values(X[9:10].astype(np.float32))[0]
            for stage in boosted.estimators_
        )
        np.testing.assert_allclose(_values(explanation, names), oracle, atol=1e-9)
    interactions = ctx.svc.shap.explain_prediction(
        model.model_id, model.version, model.row(9), include_interactions=True
    )
    matrix = np.asarray(interactions.interactions["matrix"])
    np.testing.assert_allclose(matrix.sum(axis=1), _values(interactions, names), atol=1e-9)


def _hist_models(X: np.ndarray) -> list[tuple[Any, str, list[str] | None]]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    three = np.digitize(X[:, 0] + X[:, 1], [-0.5, 0.5])
    return [
        (HistGradientBoostingRegressor(max_iter=15).fit(X, X[:, 0] * X[:, 1]), "regression", None),
        (
            HistGradientBoostingClassifier(max_iter=15).fit(X, (X[:, 0] > 0).astype(int)),
            "classification",
            ["no", "yes"],
        ),
        (HistGradientBoostingClassifier(max_iter=15).fit(X, three), "classification", None),
    ]


def test_hist_gradient_boosting_goes_through_tree_shap_equal_to_shap(ctx: Any) -> None:
    import shap

    X, names = tabular_data(300, 4)
    trained = X.copy()
    trained[::7, 2] = np.nan  # missing values while training: splits learn a default side
    for estimator, task, classes in _hist_models(trained):
        model = register(ctx.reg, estimator, task, names, X, classes)
        oracle = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent")
        expected = np.asarray(oracle.shap_values(X[:6]))
        inputs = [model.row(i) for i in range(6)]
        options = {"class_name": "yes"} if classes else {}  # shap explains a binary's class 1
        batch = ctx.svc.shap.explain_batch(model.model_id, model.version, inputs, **options)
        for i, explanation in enumerate(batch):
            assert explanation.algorithm == "tree"
            column = expected[i] if expected.ndim == 2 else expected[i, :, _index(explanation)]
            assert _values(explanation, names) == column.tolist()
            assert explanation.additivity_error < 1e-9


def test_hist_gradient_boosting_interaction_values_equal_shaps_for_every_class(ctx: Any) -> None:
    import shap

    X, names = tabular_data(300, 4)
    estimator, task, classes = _hist_models(X)[2]  # three classes
    model = register(ctx.reg, estimator, task, names, X, classes)
    oracle = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent")
    expected = np.asarray(oracle.shap_interaction_values(X[:4]))
    assert expected.shape == (4, 4, 4, 3)
    inputs = [model.row(i) for i in range(4)]
    for k in range(3):
        batch = ctx.svc.shap.explain_batch(
            model.model_id, model.version, inputs, class_name=str(k), include_interactions=True
        )
        for i, explanation in enumerate(batch):
            matrix = np.asarray(explanation.interactions["matrix"])
            np.testing.assert_array_equal(matrix, expected[i, :, :, k])  # difference 0


def _index(explanation: Any) -> int:
    return int(explanation.explained_class)


def test_hist_gradient_boosting_with_categorical_features_falls_back_to_kernel(ctx: Any) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    X, names = tabular_data(200, 3)
    X[:, 2] = np.floor(np.abs(X[:, 2]) * 3) % 4
    hist = HistGradientBoostingRegressor(max_iter=10, categorical_features=[2]).fit(X, X[:, 2])
    model = register(ctx.reg, hist, "regression", names, X, background=X[:20])
    explanation = ctx.svc.shap.explain_prediction(model.model_id, model.version, model.row(1))
    assert explanation.algorithm == "exact"  # shap's trees cannot hold category sets
    with pytest.raises(UnprocessableEntity, match="categorical"):
        ctx.svc.shap.explain_prediction(
            model.model_id, model.version, model.row(1), algorithm="tree"
        )


def test_a_400_digit_integer_feature_is_400(ctx: Any) -> None:
    from sklearn.linear_model import LinearRegression

    X, names = tabular_data(40, 3)
    model = register(
        ctx.reg, LinearRegression().fit(X, X[:, 0]), "regression", names, X, background=X
    )
    for engine in (ctx.svc.shap, ctx.svc.lime):
        with pytest.raises(ValidationError, match="feature 'f1' is too large"):
            engine.explain_prediction(model.model_id, model.version, {**model.row(), "f1": 10**400})


def test_a_prediction_that_overflows_is_422_not_finite_for_shap_and_lime(ctx: Any) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier

    X, names = tabular_data(80, 3)
    y = (X[:, 0] > 0).astype(int)
    models = [
        register(ctx.reg, LinearRegression().fit(X, X[:, 0] * 2), "regression", names, X, None, X),
        register(ctx.reg, LogisticRegression().fit(X, y), "classification", names, X, None, X),
        register(
            ctx.reg,
            MLPClassifier((4,), max_iter=30, random_state=0).fit(X, y),
            "classification",
            names,
            X,
            None,
            X[:10],
        ),
    ]
    row = {"f0": 1.7e308, "f1": 1.7e308, "f2": -1.7e308}
    for model in models:
        for engine, options in ((ctx.svc.shap, {}), (ctx.svc.lime, {"num_samples": 100})):
            try:
                result = engine.explain_prediction(model.model_id, model.version, row, **options)
            except UnprocessableEntity as error:
                assert error.code == "not_finite", error
                continue
            numbers = [result.base_prediction, result.actual_prediction]
            numbers += [c.contribution for c in result.feature_contributions]
            assert np.isfinite(numbers).all(), (type(model.estimator).__name__, engine)


def test_an_invalidation_on_one_instance_reaches_another_warm_instance(ctx: Any) -> None:
    from datetime import timedelta

    from sklearn.linear_model import Ridge

    X, names = tabular_data(60, 3)
    model = register(ctx.reg, Ridge().fit(X, X[:, 0]), "regression", names, X, background=X)
    first, second = ctx.service(), ctx.service()
    for instance in (first, second):
        instance.cache.generation_ttl = timedelta(0)  # the bound itself: test_ex_cache.py
    assert not second.shap.explain_prediction(model.model_id, model.version, model.row(1)).cached
    assert second.shap.explain_prediction(model.model_id, model.version, model.row(1)).cached
    assert first.shap.explain_prediction(model.model_id, model.version, model.row(1)).cached
    first.invalidate(model.model_id)
    again = second.shap.explain_prediction(model.model_id, model.version, model.row(1))
    assert not again.cached  # its memory level held the answer; the generation moved on
    assert first.shap.explain_prediction(model.model_id, model.version, model.row(1)).cached
