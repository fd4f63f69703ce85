"""Drift, bias, permutation importance and partial dependence over HTTP (issue 16)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.conftest import Http, Tokens
from tests.helpers.explain import register_over_http as _register


@pytest.fixture
def linear(http: Http) -> Any:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + 0.3 * X[:, 2] > 0).astype(int)
    names = ["income", "age", "zip_code"]
    first, v1 = _register(
        http, LogisticRegression().fit(X, y), "classification", names, X[:40], ["deny", "grant"]
    )
    y2 = (X[:, 2] - 0.2 * X[:, 0] > 0).astype(int)
    _, v2 = _register(
        http,
        LogisticRegression().fit(X, y2),
        "classification",
        names,
        X[:40],
        ["deny", "grant"],
        model_id=first,
    )
    rows = [dict(zip(names, row.tolist(), strict=True)) for row in X]
    return type("Linear", (), {"id": first, "v1": v1, "v2": v2, "rows": rows, "X": X, "y": y})


def test_drift_between_two_versions_over_http(http: Http, linear: Any) -> None:
    body = {
        "baseline": {"model_id": linear.id, "model_version": linear.v1},
        "current": {"model_id": linear.id, "model_version": linear.v2, "inputs": linear.rows[:30]},
    }
    response = http.call("POST", "/explanations/drift", body)
    assert response.status_code == 200, response.data
    assert response.data["drifted"] is True and response.data["current_top"][0] == "zip_code"
    same = http.call(
        "POST",
        "/explanations/drift",
        {"baseline": body["baseline"], "current": body["baseline"]},
    )
    assert same.data["ndcg"] == pytest.approx(1.0) and same.data["drifted"] is False


def test_bias_permutation_and_partial_dependence_over_http(http: Http, linear: Any) -> None:
    labels = [["deny", "grant"][v] for v in linear.y[:100]]
    facet = ["north" if x > 0 else "south" for x in linear.X[:100, 2]]
    base = {"model_id": linear.id, "model_version": linear.v1, "inputs": linear.rows[:100]}
    bias = http.call(
        "POST",
        "/explanations/bias",
        {
            **base,
            "labels": labels,
            "facet": facet,
            "facet_values": ["south"],
            "positive_label": "grant",
            "facet_name": "region",
        },
    )
    assert bias.status_code == 200, bias.data
    assert set(bias.data["post_training"]) == {"DPPL", "DI", "EOD"}
    assert bias.data["counts"]["d"] == facet.count("south")
    importance = http.call(
        "POST", "/explanations/permutation-importance", {**base, "labels": labels, "n_repeats": 2}
    )
    assert importance.status_code == 200, importance.data
    assert next(iter(importance.data["importances"])) == "income"
    pdp = http.call(
        "POST",
        "/explanations/partial-dependence",
        {**base, "feature": "income", "grid_resolution": 5},
    )
    assert pdp.status_code == 200, pdp.data
    assert len(pdp.data["average"]) == 5 and len(pdp.data["individual"]) == 100
    assert pdp.data["average"] == sorted(pdp.data["average"])  # more income, more grants
    custom = http.call(
        "POST",
        "/explanations/partial-dependence",
        {**base, "feature": "income", "grid": [0.0] * 100},
    )
    assert custom.status_code == 200 and custom.data["grid_values"] == [0.0] * 100
    too_many = http.call(
        "POST",
        "/explanations/permutation-importance",
        {**base, "inputs": linear.rows[:200] * 5, "labels": labels * 10, "n_repeats": 50},
    )
    assert too_many.status_code == 422 and too_many.data["error"] == "too_expensive"


def test_outsiders_get_404_from_every_insight_route(
    http: Http, linear: Any, tokens: Tokens
) -> None:
    labels = ["grant"] * 3
    base = {"model_id": linear.id, "model_version": linear.v1, "inputs": linear.rows[:3]}
    bodies = {
        "/explanations/drift": {
            "baseline": {"model_id": linear.id},
            "current": {"model_id": linear.id},
        },
        "/explanations/bias": {
            **base,
            "labels": labels,
            "facet": ["a", "b", "a"],
            "facet_values": ["a"],
            "positive_label": "grant",
        },
        "/explanations/permutation-importance": {**base, "labels": labels},
        "/explanations/partial-dependence": {**base, "feature": "age"},
    }
    for path, body in bodies.items():
        response = http.call("POST", path, body, token=tokens.other_writer)
        assert response.status_code == 404, (path, response.data)


def test_bias_on_a_dataset_version_with_a_declared_facet_column(http: Http, linear: Any) -> None:
    from chalicelib.dataversion.service import get_versioning_engine

    X, y = linear.X[:120], linear.y[:120]
    region = ["south" if x < 0 else "north" for x in X[:, 1]]
    lines = ["income,age,zip_code,approved,region"]
    lines += [
        f"{a!r},{b!r},{c!r},{['deny', 'grant'][v]},{r}"
        for (a, b, c), v, r in zip(X.tolist(), y.tolist(), region, strict=True)
    ]
    engine = get_versioning_engine()
    dataset = engine.create_dataset("bias-data", owner="alice", access_groups=["ml"])
    version = engine.create_version(dataset.dataset_id, ("\n".join(lines) + "\n").encode())
    model = {"model_id": linear.id, "model_version": linear.v1}
    stored = http.call(
        "POST",
        "/explanations/bias",
        {
            **model,
            "dataset_version_id": version.version_id,
            "label_column": "approved",
            "facet_column": "region",
            "facet_values": ["south"],
            "positive_label": "grant",
        },
    )
    assert stored.status_code == 200, stored.data
    given = http.call(
        "POST",
        "/explanations/bias",
        {
            **model,
            "inputs": linear.rows[:120],
            "labels": [["deny", "grant"][v] for v in y],
            "facet": region,
            "facet_values": ["south"],
            "positive_label": "grant",
            "facet_name": "region",
        },
    )
    assert stored.data == given.data
    neither = http.call(
        "POST",
        "/explanations/bias",
        {**model, "facet_values": ["south"], "positive_label": "grant"},
    )
    assert neither.status_code == 400
