"""Permutation importance, partial dependence/ICE, attribution drift and bias on registered
models (issue 16). Oracles: scikit-learn's inspection module, fairlearn, NDCG by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from chalicelib.core.errors import ValidationError
from chalicelib.explainability.insights import ModelInsights
from tests.helpers.explain import memory_context, register, tabular_data


@pytest.fixture
def ctx() -> Any:
    """The registry and service over in-memory stores, and the insights over the service."""
    found = memory_context()
    return type("Ctx", (), {**vars(found), "insights": ModelInsights(found.svc.shap)})


def _rows(model: Any, count: int) -> list[dict[str, float]]:
    return [model.row(i) for i in range(count)]


def test_permutation_importance_equals_scikit_learns(ctx: Any) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.inspection import permutation_importance

    X, names = tabular_data(200, 4)
    y = (X[:, 1] - X[:, 3] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0).fit(X, y)
    model = register(ctx.reg, forest, "classification", names, X, ["no", "yes"])
    labels = [["no", "yes"][v] for v in y[:120]]
    result = ctx.insights.permutation_importance(
        model.model_id, model.version, _rows(model, 120), labels, n_repeats=4, seed=3
    )
    direct = permutation_importance(forest, X[:120], y[:120], n_repeats=4, random_state=3)
    for i, name in enumerate(names):
        assert result["importances"][name] == pytest.approx(direct.importances_mean[i], abs=1e-12)
        assert result["std"][name] == pytest.approx(direct.importances_std[i], abs=1e-12)
    assert next(iter(result["importances"])) in {"f1", "f3"}
    assert result["baseline_score"] == pytest.approx(forest.score(X[:120], y[:120]))
    with pytest.raises(ValidationError, match="one value per input"):
        ctx.insights.permutation_importance(model.model_id, model.version, _rows(model, 3), ["no"])


def test_regression_permutation_importance_uses_r2(ctx: Any) -> None:
    from sklearn.inspection import permutation_importance
    from sklearn.linear_model import LinearRegression

    X, names = tabular_data(150, 3)
    y = 3 * X[:, 0] + X[:, 2]
    linear = LinearRegression().fit(X, y)
    model = register(ctx.reg, linear, "regression", names, X)
    result = ctx.insights.permutation_importance(
        model.model_id, model.version, _rows(model, 100), y[:100].tolist(), n_repeats=3
    )
    direct = permutation_importance(linear, X[:100], y[:100], n_repeats=3, random_state=0)
    assert result["scoring"] == "r2"
    assert [result["importances"][n] for n in names] == pytest.approx(
        direct.importances_mean.tolist(), abs=1e-12
    )


def test_partial_dependence_and_ice_equal_scikit_learns_brute_force(ctx: Any) -> None:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.inspection import partial_dependence

    X, names = tabular_data(150, 3)
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    boosted = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(X, y)
    model = register(ctx.reg, boosted, "classification", names, X)
    data = ctx.insights.partial_dependence(
        model.model_id, model.version, "f1", _rows(model, 60), grid_resolution=7
    )
    grid = np.asarray(data["grid_values"])
    assert len(grid) == 7 and data["explained_class"] == "1"
    direct = partial_dependence(
        boosted, X[:60], [1], kind="both", method="brute", custom_values={1: grid}
    )
    np.testing.assert_allclose(data["average"], direct["average"][0], atol=1e-12)
    np.testing.assert_allclose(data["individual"], direct["individual"][0], atol=1e-12)
    with pytest.raises(ValidationError, match="unknown feature"):
        ctx.insights.partial_dependence(model.model_id, model.version, "zz", _rows(model, 5))


def test_attribution_drift_between_two_versions_and_a_baseline(ctx: Any) -> None:
    from sklearn.linear_model import LinearRegression

    X, names = tabular_data(120, 4)
    first = register(
        ctx.reg,
        LinearRegression().fit(X, 4 * X[:, 0] + 2 * X[:, 1] + X[:, 2]),
        "regression",
        names,
        X,
        background=X[:40],
    )
    second = register(
        ctx.reg,
        LinearRegression().fit(X, X[:, 0] + 2 * X[:, 1] + 4 * X[:, 2]),
        "regression",
        names,
        X,
        background=X[:40],
        model_id=first.model_id,
    )
    rows = _rows(first, 30)
    same = ctx.insights.attribution_drift(
        {"model_id": first.model_id, "model_version": 1},
        {"model_id": first.model_id, "model_version": 1, "inputs": rows},
    )
    assert same["ndcg"] > 0.99 and not same["drifted"]
    report = ctx.insights.attribution_drift(
        {"model_id": first.model_id, "model_version": 1, "inputs": rows},
        {"model_id": first.model_id, "model_version": second.version, "inputs": rows},
    )
    base, now = report["baseline_attribution"], report["current_attribution"]
    by_hand_dcg = sum(
        base[f] / math.log2(i + 2) for i, f in enumerate(sorted(now, key=lambda f: -now[f]))
    )
    ideal = sum(v / math.log2(i + 2) for i, v in enumerate(sorted(base.values(), reverse=True)))
    assert report["ndcg"] == pytest.approx(by_hand_dcg / ideal)
    assert report["drifted"] and report["current_top"][0] == "f2"
    assert {row["feature"] for row in report["features"]} == set(names)


def test_bias_of_a_models_predictions_agrees_with_fairlearn(ctx: Any) -> None:
    fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
    from sklearn.linear_model import LogisticRegression

    X, names = tabular_data(300, 3, seed=5)
    y = (X[:, 0] + 0.5 * X[:, 2] > 0).astype(int)
    logistic = LogisticRegression().fit(X, y)
    model = register(ctx.reg, logistic, "classification", names, X, ["deny", "grant"])
    facet = np.where(X[:, 2] > 0.3, "group_d", "group_a")
    report = ctx.insights.bias(
        model.model_id,
        model.version,
        _rows(model, 300),
        [["deny", "grant"][v] for v in y],
        facet.tolist(),
        ["group_d"],
        "grant",
        facet_name="region",
    )
    predictions = logistic.predict(X)
    tag = np.where(facet == "group_d", "d", "a")
    assert abs(report.post_training["DPPL"]) == pytest.approx(
        fairlearn_metrics.demographic_parity_difference(y, predictions, sensitive_features=tag)
    )
    assert abs(report.post_training["EOD"]) == pytest.approx(
        fairlearn_metrics.equal_opportunity_difference(y, predictions, sensitive_features=tag)
    )
    assert report.facet == "region" and report.counts["d"] == int((facet == "group_d").sum())
