"""TreeSHAP of scikit-learn's forests and decision trees on shap's C kernel without importing
shap (issue 17, the explainer's cold start): the same numbers as ``shap.TreeExplainer``.

Oracle: ``shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")`` on the same
fitted model, compared bit for bit (values, base values, interaction values, the trees' output),
inputs with missing values included. That no shap, numba or pandas is imported on the way is
shown in a fresh interpreter by ``tests/integration/test_explainer_cold_path.py``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from chalicelib.explainability.explainers import _native_tree as native_tree
from chalicelib.explainability.explainers._tree import path_dependent
from tests.helpers.explain import memory_context, register, tabular_data


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    X[rng.random(X.shape) < 0.05] = np.nan  # scikit-learn learns a side for missing values
    clean = np.nan_to_num(X)
    classes = (clean[:, 0] > 0).astype(int) + (clean[:, 1] > 0.5)
    target = clean[:, 0] * 2 + clean[:, 2] - clean[:, 3] * clean[:, 4]
    inputs = rng.normal(size=(30, 5))
    inputs[rng.random(inputs.shape) < 0.1] = np.nan
    return X, classes, target, inputs


def _models() -> list[Any]:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import (
        DecisionTreeClassifier,
        DecisionTreeRegressor,
        ExtraTreeClassifier,
        ExtraTreeRegressor,
    )

    X, classes, target, _ = _data()
    return [
        RandomForestClassifier(15, max_depth=6, random_state=0).fit(X, classes > 0),  # binary
        RandomForestClassifier(15, random_state=0).fit(X, classes),  # three classes
        ExtraTreesClassifier(10, random_state=0).fit(X, classes),
        DecisionTreeClassifier(random_state=0).fit(X, classes),
        ExtraTreeClassifier(random_state=0).fit(X, classes),
        RandomForestRegressor(10, random_state=0).fit(X, target),
        ExtraTreesRegressor(10, random_state=0).fit(X, target),
        DecisionTreeRegressor(max_depth=5, random_state=0).fit(X, target),
        ExtraTreeRegressor(random_state=1).fit(X, target),
    ]


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
def test_native_treeshap_equals_shaps_tree_explainer_bit_for_bit(model: Any) -> None:
    import shap

    inputs = _data()[3]
    ours = native_tree.NativeTreeExplainer(model)
    oracle = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")

    values = ours.shap_values(inputs, check_additivity=False)
    assert np.array_equal(values, oracle.shap_values(inputs, check_additivity=False))
    assert np.array_equal(np.asarray(ours.expected_value), np.asarray(oracle.expected_value))
    assert np.array_equal(ours.model.predict(inputs), oracle.model.predict(inputs))
    interactions = ours.shap_interaction_values(inputs[:4])
    assert np.array_equal(interactions, oracle.shap_interaction_values(inputs[:4]))
    assert np.array_equal(np.asarray(ours.expected_value), np.asarray(oracle.expected_value))
    # The values explain the trees' output (an independent check of what both compute).
    total = values.sum(axis=1) + np.asarray(ours.expected_value).reshape(-1)[None, :].squeeze()
    np.testing.assert_allclose(total, ours.model.predict(inputs), atol=1e-9)


def test_a_forest_goes_native_and_every_other_tree_model_to_shap() -> None:
    import shap
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    X, _, target, _ = _data()
    X = np.nan_to_num(X)
    forest = RandomForestRegressor(5, random_state=0).fit(X, target)
    boosted = GradientBoostingRegressor(n_estimators=5).fit(X, target)
    assert isinstance(path_dependent(forest), native_tree.NativeTreeExplainer)
    assert isinstance(path_dependent(boosted), shap.TreeExplainer)
    assert not native_tree.supports(RandomForestRegressor())  # not fitted: shap says why


def test_the_engine_explains_a_registered_forest_as_shap_does() -> None:
    import shap
    from sklearn.ensemble import RandomForestClassifier

    X, names = tabular_data(200, 4, seed=5)
    labels = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    forest = RandomForestClassifier(12, max_depth=5, random_state=0).fit(X, labels)
    ctx = memory_context()
    model = register(ctx.reg, forest, "classification", names, X, ["a", "b", "c"])
    svc = ctx.svc
    inputs = [model.row(i) for i in range(5)]
    batch = svc.shap.explain_batch(model.model_id, model.version, inputs, class_name="c")
    oracle = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
    expected = oracle.shap_values(X[:5], check_additivity=False)[:, :, 2]
    for i, explanation in enumerate(batch):
        found = explanation.contribution_map()
        assert [found[name] for name in names] == expected[i].tolist()
        assert explanation.base_prediction == float(oracle.expected_value[2])
        assert explanation.additivity_error < 1e-9


def test_loading_the_kernel_without_shap_installed_says_so(monkeypatch: Any) -> None:
    monkeypatch.delitem(sys.modules, "shap._cext", raising=False)
    monkeypatch.setattr(native_tree.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="shap._cext"):
        native_tree.load_cext()


def _shap_ensembles() -> list[Any]:
    """Tree models shap reads into its own ``TreeEnsemble`` (not the native arrays)."""
    import lightgbm
    import xgboost
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
    )

    from chalicelib.explainability.explainers._tree import tree_model

    X, classes, target, _ = _data()
    clean = np.nan_to_num(X)
    params = {"max_depth": 3, "seed": 0, "nthread": 1}
    return [
        xgboost.train(
            {**params, "objective": "binary:logistic"},
            xgboost.DMatrix(X, label=classes > 0),
            num_boost_round=8,
        ),
        xgboost.train(
            {**params, "objective": "multi:softprob", "num_class": 3},
            xgboost.DMatrix(X, label=classes),
            num_boost_round=4,
        ),
        lightgbm.train(
            {"objective": "binary", "num_leaves": 8, "verbose": -1, "seed": 0},
            lightgbm.Dataset(X, label=classes > 0),
            8,
        ),
        lightgbm.train(
            {"objective": "multiclass", "num_class": 3, "num_leaves": 8, "verbose": -1},
            lightgbm.Dataset(X, label=classes),
            4,
        ),
        HistGradientBoostingClassifier(max_iter=8, random_state=0).fit(X, classes),
        GradientBoostingRegressor(n_estimators=8, random_state=0).fit(clean, target),
        tree_model(GradientBoostingClassifier(n_estimators=4, random_state=0).fit(clean, classes)),
    ]


@pytest.mark.parametrize("model", _shap_ensembles(), ids=lambda m: type(m).__name__)
def test_the_bound_tree_predictor_equals_shaps_predict_bit_for_bit(model: Any) -> None:
    """The engine's outputs come from shap's C function with the trees' arrays bound once:
    the same numbers as shap's ``TreeEnsemble.predict`` for one row and many, missing values
    included."""
    import shap

    inputs = _data()[3]
    ensemble = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent").model
    predict = native_tree.dense_predictor(ensemble)
    assert predict is not None
    for rows in (inputs, inputs[:1], inputs[4:5], inputs[2]):
        expected = ensemble.predict(rows if rows.ndim == 2 else rows[None, :])
        found = predict(rows)
        assert found.shape == np.shape(expected) and found.dtype == np.float64
        assert np.array_equal(found, expected, equal_nan=True)
    ensemble.model_output = "probability"  # shap's own predict answers other outputs
    assert native_tree.dense_predictor(ensemble) is None
