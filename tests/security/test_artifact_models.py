"""Real models of every family the product supports pass the artifact check, register and are
explained, and the explained prediction is the one scikit-learn computes on the original model."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.conftest import Http
from tests.security.helpers import model

FEATURES = ["age", "income", "tenure", "plan"]


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 4))
    X[:, 3] = rng.integers(0, 3, 160)  # a categorical code
    y = ((X[:, 0] - X[:, 1] + (X[:, 3] == 2)) > 0).astype(int)
    return X, y


def _column_pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer(
        [
            ("num", StandardScaler(), [0, 1, 2]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), [3]),
        ]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression())])


def _families() -> dict[str, Callable[[], Any]]:
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    return {
        "logistic-regression": lambda: LogisticRegression(),
        "random-forest": lambda: RandomForestClassifier(n_estimators=10, random_state=0),
        "gradient-boosting": lambda: GradientBoostingClassifier(n_estimators=10, random_state=0),
        "hist-gradient-boosting": lambda: HistGradientBoostingClassifier(max_iter=10),
        "hist-gradient-boosting-categorical": lambda: HistGradientBoostingClassifier(
            max_iter=10, categorical_features=[3]
        ),
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
        "svc": lambda: SVC(probability=True, random_state=0),
        "column-transformer-pipeline": _column_pipeline,
    }


FAMILIES = sorted(_families())


def _register(http: Http, estimator: Any, task: str, names: list[str], **extra: Any) -> str:
    import skops.io as sio

    model_id = model(http)
    body = {
        "artifact_base64": base64.b64encode(sio.dumps(estimator)).decode(),
        "format": "skops",
        "task": task,
        "feature_names": names,
        **extra,
    }
    response = http.call("POST", f"/models/{model_id}/versions", body)
    assert response.status_code == 201, response.data
    return model_id


def _expected(estimator: Any, x: np.ndarray, space: str, explained: str | None) -> float:
    """What scikit-learn itself predicts for ``x`` in the explanation's output space."""
    if space == "probability":
        index = 1 if explained is None else int(explained)
        return float(estimator.predict_proba(x)[0, index])
    if space in ("log_odds", "margin"):
        return float(np.ravel(estimator.decision_function(x))[0])
    return float(estimator.predict(x)[0])


@pytest.fixture(autouse=True)
def synchronous_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room enough that no machine load sends these requests to a job: whether an answer is
    synchronous depends on the model's speed measured on this machine, which the budget tests
    cover (tests/unit/test_ex_budget.py, tests/security/test_bounded_*.py); these tests check
    that each family registers and is explained correctly."""
    for name in ("SYNC_SECONDS", "SYNC_DEADLINE", "JOB_SECONDS"):
        monkeypatch.setenv(f"SYNAPSE_EXPLAIN_{name}", "600")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_real_model_of_every_supported_family_registers_and_is_explained(
    module_http: Http, family: str
) -> None:
    X, y = _data()
    estimator = _families()[family]().fit(X, y)
    model_id = _register(
        module_http,
        estimator,
        "classification",
        FEATURES,
        class_names=["0", "1"],
        background_sample=X[:20].tolist(),
    )
    row = X[100:101]
    body = {
        "model_id": model_id,
        "model_version": 1,
        "input_data": dict(zip(FEATURES, row[0].tolist(), strict=True)),
    }
    response = module_http.call("POST", "/explanations", body)
    assert response.status_code == 200, response.data
    answer = response.data
    expected = _expected(estimator, row, answer["output_space"], answer["explained_class"])
    assert answer["actual_prediction"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert {c["feature_name"] for c in answer["feature_contributions"]} == set(FEATURES)


def test_a_tfidf_text_pipeline_registers_and_is_explained(module_http: Http) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = ["great fun", "lovely great story", "awful bore", "bad awful plot"] * 5
    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression(C=10))
    pipeline.fit(texts, [1, 1, 0, 0] * 5)
    model_id = _register(module_http, pipeline, "text_classification", [], class_names=["0", "1"])
    text = "great plot but awful ending"
    body = {
        "model_id": model_id,
        "model_version": 1,
        "explanation_type": "lime",
        "input_data": {"text": text},
        "num_samples": 200,
        "class_name": "1",
    }
    response = module_http.call("POST", "/explanations", body)
    assert response.status_code == 200, response.data
    assert response.data["actual_prediction"] == pytest.approx(
        float(pipeline.predict_proba([text])[0, 1]), rel=1e-6
    )
    weights = {c["feature_name"]: c["contribution"] for c in response.data["feature_contributions"]}
    assert weights["great"] > 0 > weights["awful"]
