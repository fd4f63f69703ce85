"""The explainability API end to end over HTTP: register, explain, cache, promote, jobs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.conftest import Http, Tokens
from tests.helpers.explain import invoke_worker
from tests.helpers.explain import register_over_http as _register
from tests.helpers.explain import run_queued_jobs as _run_queued_jobs


@pytest.fixture
def forest(http: Http) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4))
    y = (X[:, 0] - X[:, 3] > 0).astype(int)
    names = ["age", "income", "tenure", "debt"]
    model = RandomForestClassifier(n_estimators=15, max_depth=4, random_state=0).fit(X, y)
    model_id, version = _register(http, model, "classification", names, X[:60], ["stay", "churn"])
    rows = [dict(zip(names, row.tolist(), strict=True)) for row in X]
    return type("Forest", (), {"id": model_id, "version": version, "rows": rows, "X": X})


def test_explain_over_http_then_the_second_call_is_a_cache_hit(http: Http, forest: Any) -> None:
    body = {"model_id": forest.id, "model_version": forest.version, "input_data": forest.rows[0]}
    first = http.call("POST", "/explanations", body)
    assert first.status_code == 200, first.data
    assert first.data["algorithm"] == "tree" and first.data["output_space"] == "probability"
    assert first.data["cached"] is False
    assert first.data["additivity_error"] < 1e-3
    second = http.call("POST", "/explanations", body)
    assert second.data["cached"] is True
    assert second.data["explanation_id"] == first.data["explanation_id"]
    stats = http.call("GET", "/explanations/cache/stats").data
    assert stats["hits"] >= 1 and stats["misses"] >= 1


def test_lime_over_http_reports_fidelity(http: Http, forest: Any) -> None:
    body = {
        "model_id": forest.id,
        "model_version": forest.version,
        "explanation_type": "lime",
        "input_data": forest.rows[1],
        "num_samples": 300,
    }
    response = http.call("POST", "/explanations", body)
    assert response.status_code == 200, response.data
    assert response.data["algorithm"] == "lime_tabular"
    assert response.data["local_fidelity"] is not None


def test_promoting_a_version_never_serves_the_old_explanation(http: Http, forest: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    stage = {"stage": "production"}
    assert http.call("POST", f"/models/{forest.id}/versions/1/stage", stage).status_code == 200
    body = {"model_id": forest.id, "input_data": forest.rows[2]}
    v1 = http.call("POST", "/explanations", body)
    assert v1.data["model_version"] == 1
    assert http.call("POST", "/explanations", body).data["cached"] is True
    y = (forest.X[:, 1] > 0).astype(int)
    _register(
        http,
        LogisticRegression().fit(forest.X, y),
        "classification",
        ["age", "income", "tenure", "debt"],
        forest.X[:60],
        ["stay", "churn"],
        forest.id,
    )
    assert http.call("POST", f"/models/{forest.id}/versions/2/stage", stage).status_code == 200
    v2 = http.call("POST", "/explanations", body)
    assert v2.data["model_version"] == 2
    assert v2.data["cached"] is False
    assert v2.data["algorithm"] == "linear"


def test_delete_invalidates_cached_explanations_of_a_model(
    http: Http, forest: Any, tokens: Tokens
) -> None:
    body = {"model_id": forest.id, "model_version": forest.version, "input_data": forest.rows[0]}
    http.call("POST", "/explanations", body)
    http.call("POST", "/explanations", {**body, "input_data": forest.rows[1]})
    denied = http.call("DELETE", f"/models/{forest.id}/explanations", token=tokens.reader)
    assert denied.status_code == 403
    removed = http.call("DELETE", f"/models/{forest.id}/explanations?version=1")
    assert removed.status_code == 200
    assert removed.data == {"model_id": forest.id, "model_version": 1, "removed": 2}
    assert http.call("POST", "/explanations", body).data["cached"] is False


def test_batch_global_and_dependence_answer_synchronously_under_the_limit(
    http: Http, forest: Any
) -> None:
    common = {"model_id": forest.id, "model_version": forest.version}
    batch = http.call("POST", "/explanations/batch", {**common, "inputs": forest.rows[:5]})
    assert batch.status_code == 200, batch.data
    assert batch.data["count"] == 5
    result = http.call(
        "POST",
        "/explanations/global",
        {
            **common,
            "inputs": forest.rows[:30],
            "aggregation_method": "percentile_95",
            "prediction_bins": [0.0, 0.5, 1.0],
            "top_k": 2,
        },
    )
    assert result.status_code == 200, result.data
    assert set(list(result.data["feature_importances"])[:2]) == {"age", "debt"}
    assert result.data["stability"]["top_k"] == 2
    assert sum(s["count"] for s in result.data["segments"]) == 30
    dependence = http.call(
        "POST", "/explanations/dependence", {**common, "inputs": forest.rows[:20], "feature": "age"}
    )
    assert dependence.status_code == 200, dependence.data
    assert len(dependence.data["shap_values"]) == 20
    assert dependence.data["explained_class"] == "churn"


def test_a_large_batch_becomes_a_job_that_the_sqs_worker_completes(
    http: Http, forest: Any, client: Any, tokens: Tokens
) -> None:
    body = {"model_id": forest.id, "model_version": forest.version, "inputs": forest.rows[:60]}
    accepted = http.call("POST", "/explanations/batch", body)
    assert accepted.status_code == 202, accepted.data
    job_id = accepted.data["job_id"]
    assert http.call("GET", f"/explanations/jobs/{job_id}").data["status"] == "queued"
    assert _run_queued_jobs(client) == 1
    job = http.call("GET", f"/explanations/jobs/{job_id}")
    assert job.status_code == 200
    assert job.data["status"] == "succeeded"
    assert job.data["result"]["count"] == 60
    assert max(e["additivity_error"] for e in job.data["result"]["explanations"]) < 1e-3
    assert (
        http.call("GET", f"/explanations/jobs/{job_id}", token=tokens.other_writer).status_code
        == 404
    )
    assert http.call("GET", f"/explanations/jobs/{job_id}", token=tokens.admin).status_code == 200
    # A redelivered message for a finished job changes nothing.
    event = client.events.generate_sqs_event(
        queue_name="synapse-explanation-jobs", message_bodies=[json.dumps({"job_id": job_id})]
    )
    invoke_worker(event)
    assert http.call("GET", f"/explanations/jobs/{job_id}").data["attempts"] == 1


def test_an_asynchronous_global_job_that_fails_reports_the_error(
    http: Http, forest: Any, client: Any
) -> None:
    body = {
        "model_id": forest.id,
        "model_version": forest.version,
        "inputs": forest.rows[:3],
        "class_name": "nope",
        "asynchronous": True,
    }
    accepted = http.call("POST", "/explanations/global", body)
    assert accepted.status_code == 202
    _run_queued_jobs(client)
    job = http.call("GET", f"/explanations/jobs/{accepted.data['job_id']}").data
    assert job["status"] == "failed"
    assert job["error"]["status"] == 400 and "nope" in job["error"]["message"]


BAD_REQUESTS = [
    ({"explanation_type": "integrated_gradients"}, 422, "not implemented"),
    ({"explanation_type": "attention"}, 422, "not implemented"),
    ({"input_data": {"age": "old", "income": 1, "tenure": 1, "debt": 1}}, 400, "'age'"),
    ({"input_data": {"age": 1, "income": 1, "tenure": 1}}, 400, "missing feature 'debt'"),
    ({"model_id": "m-missing"}, 404, "m-missing"),
    ({"model_version": 9}, 404, ""),
    ({"num_samples": 1}, 400, "num_samples"),
    ({"class_name": "maybe"}, 400, "unknown class_name 'maybe'"),
]


def test_bad_requests_get_clear_errors(http: Http, forest: Any) -> None:
    body = {"model_id": forest.id, "model_version": forest.version, "input_data": forest.rows[0]}
    for change, status, text in BAD_REQUESTS:
        response = http.call("POST", "/explanations", {**body, **change})
        assert response.status_code == status, (change, response.data)
        assert text in response.data["message"], (change, response.data)


def test_the_issue_16_reproductions_answer_over_http_without_a_500(http: Http) -> None:
    """Each was a 500 over HTTP: a multiclass ``GradientBoostingClassifier`` (shap raised
    ``InvalidModelError``), a feature of 1.7e308 whose prediction overflows (SHAP failed
    response validation, LIME failed in its fit) and a 400-digit integer feature
    (``OverflowError``)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 3))
    names = ["a", "b", "c"]
    boosted = GradientBoostingClassifier(n_estimators=10, random_state=0)
    boosted.fit(X, np.digitize(X[:, 0], [-0.5, 0.5]))
    model_id, version = _register(
        http, boosted, "classification", names, X[:20], ["low", "mid", "high"]
    )
    row = dict(zip(names, X[3].tolist(), strict=True))
    body = {"model_id": model_id, "model_version": version, "input_data": row}
    found = http.call("POST", "/explanations", body)
    assert found.status_code == 200, found.data
    assert (found.data["algorithm"], found.data["output_space"]) == ("tree", "margin")
    margin = boosted.decision_function(X[3:4])[0][boosted.predict(X[3:4])[0]]
    assert found.data["actual_prediction"] == pytest.approx(float(margin), abs=1e-6)
    linear_id, linear_version = _register(
        http, LinearRegression().fit(X, X[:, 0] * 2), "regression", names, X[:20]
    )
    for kind in ("shap", "lime"):
        common = {"model_id": linear_id, "model_version": linear_version}
        common |= {"explanation_type": kind, "num_samples": 100}
        huge = {"a": 1.7e308, "b": 1.7e308, "c": -1.7e308}
        overflow = http.call("POST", "/explanations", {**common, "input_data": huge})
        assert overflow.status_code == 422, overflow.data
        assert overflow.data["error"] == "not_finite"
        digits = http.call("POST", "/explanations", {**common, "input_data": {**row, "b": 10**400}})
        assert digits.status_code == 400, digits.data
        assert "more than 38 digits" in digits.data["message"]  # refused as it is parsed


def test_unknown_job_is_404(http: Http) -> None:
    response = http.call("GET", "/explanations/jobs/job-nope")
    assert response.status_code == 404


GREAT_AWFUL = ["great fun", "lovely great story", "awful bore", "bad awful plot"]
EXCELLENT_AWFUL = ["excellent fun", "an excellent story", "awful bore", "an awful plot"]


def _image_model(http: Http) -> tuple[str, np.ndarray]:
    """Registers a classifier of 8x8 images by which half is brighter; returns its id and the
    training images."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    images = rng.random((60, 8, 8))
    labels = (images[:, :4].mean(axis=(1, 2)) > images[:, 4:].mean(axis=(1, 2))).astype(int)
    classifier = LogisticRegression(max_iter=300).fit(images.reshape(60, -1), labels)
    model_id, _ = _register(http, classifier, "image_classification", [])
    return model_id, images


def _text_model(http: Http, texts: list[str]) -> str:
    """Registers a TF-IDF + logistic regression pipeline trained on ``texts`` (pos, pos, neg,
    neg, repeated) and returns its model id."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression(C=10))
    pipeline.fit(texts * 5, [1, 1, 0, 0] * 5)
    model_id, _ = _register(http, pipeline, "text_classification", [], classes=["neg", "pos"])
    return model_id


def test_text_and_image_models_are_explained_with_lime_over_http(http: Http) -> None:
    text_model = _text_model(
        http, ["great fun", "lovely great story", "awful bore", "bad awful plot"]
    )
    body = {
        "model_id": text_model,
        "model_version": 1,
        "explanation_type": "lime",
        "input_data": {"text": "great plot but awful ending"},
        "num_samples": 200,
        "class_name": "pos",
    }
    text = http.call("POST", "/explanations", body)
    assert text.status_code == 200, text.data
    weights = {c["feature_name"]: c["contribution"] for c in text.data["feature_contributions"]}
    assert text.data["input_kind"] == "text" and weights["great"] > 0 > weights["awful"]

    image_model, images = _image_model(http)
    image = http.call(
        "POST",
        "/explanations",
        {
            "model_id": image_model,
            "model_version": 1,
            "explanation_type": "lime",
            "input_data": {"image": images[0].tolist()},
            "num_samples": 100,
            "n_segments": 4,
        },
    )
    assert image.status_code == 200, image.data
    assert np.asarray(image.data["segments"]).shape == (8, 8)
    assert image.data["algorithm"] == "lime_image"


def test_text_and_image_models_are_explained_with_shap_over_http(http: Http) -> None:
    text_model = _text_model(
        http, ["excellent fun", "an excellent story", "awful bore", "an awful plot"]
    )
    body = {
        "model_id": text_model,
        "model_version": 1,
        "explanation_type": "shap",
        "input_data": {"text": "an excellent plot"},
        "max_evals": 100,
    }
    text = http.call("POST", "/explanations", body)
    assert text.status_code == 200, text.data
    data = text.data
    assert (data["input_kind"], data["algorithm"], data["explained_class"]) == (
        "text",
        "partition",
        "pos",
    )
    assert data["top_positive_features"][0] == "excellent"
    weights = {c["feature_name"]: c["contribution"] for c in data["feature_contributions"]}
    assert abs(data["base_prediction"] + sum(weights.values()) - data["actual_prediction"]) < 1e-6
    assert data["additivity_error"] < 1e-6 and data["cached"] is False
    assert data["parameters"] == {"max_evals": 100, "class_name": None, "seed": 0, "n_tokens": 3}
    again = http.call("POST", "/explanations", body)
    assert again.status_code == 200 and again.data["cached"] is True
    assert again.data["feature_contributions"] == data["feature_contributions"]
    too_many = http.call("POST", "/explanations", {**body, "max_evals": 10_001})
    assert too_many.status_code == 400, too_many.data

    image_model, images = _image_model(http)
    body = {
        "model_id": image_model,
        "model_version": 1,
        "explanation_type": "shap",
        "input_data": {"image": images[0].tolist()},
        "n_segments": 4,
        "hide_color": 0.5,
    }
    image = http.call("POST", "/explanations", body)
    assert image.status_code == 200, image.data
    segments = np.asarray(image.data["segments"])
    assert segments.shape == (8, 8) and image.data["algorithm"] == "partition"
    names = {c["feature_name"] for c in image.data["feature_contributions"]}
    assert names == {f"segment_{s}" for s in np.unique(segments).tolist()}
    assert image.data["additivity_error"] < 1e-6
    assert image.data["parameters"]["hide_color"] == 0.5
    assert http.call("POST", "/explanations", body).data["cached"] is True
    batch_body = {
        "model_id": image_model,
        "model_version": 1,
        "inputs": [body["input_data"], {"image": images[1].tolist()}],
        "n_segments": 4,
        "hide_color": 0.5,
        "prediction_ids": ["a", "b"],
    }
    batch = http.call("POST", "/explanations/batch", batch_body)
    assert batch.status_code == 200, batch.data
    first, second = batch.data["explanations"]
    assert first["cached"] is True and first["prediction_id"] == "a"  # the single one above
    assert second["input_kind"] == "image" and second["prediction_id"] == "b"
    global_body = {**batch_body, "inputs": batch_body["inputs"]}
    del global_body["prediction_ids"]
    per_image = http.call("POST", "/explanations/global", global_body)
    assert per_image.status_code == 422 and "superpixels differ" in per_image.data["message"]


def test_text_models_get_batch_and_global_word_importance(http: Http) -> None:
    model = _text_model(
        http, ["excellent fun", "an excellent story", "awful bore", "an awful plot"]
    )
    # "the" and "show" are outside the vocabulary: only the two sentiment words can matter.
    inputs = [{"text": t} for t in ("the excellent show", "the awful show", "excellent show")]
    for kind in ("shap", "lime"):
        body = {
            "model_id": model,
            "model_version": 1,
            "explanation_type": kind,
            "inputs": inputs,
            "max_evals": 60,
            "num_samples": 200,
        }
        batch = http.call("POST", "/explanations/batch", body)
        assert batch.status_code == 200, batch.data
        assert batch.data["count"] == 3
        assert [e["input_kind"] for e in batch.data["explanations"]] == ["text"] * 3
        ranked = http.call("POST", "/explanations/global", {**body, "top_k": 2})
        assert ranked.status_code == 200, ranked.data
        importance = ranked.data["feature_importances"]
        assert set(list(importance)[:2]) == {"excellent", "awful"}, (kind, importance)
    mismatched = http.call("POST", "/explanations/batch", {**body, "prediction_ids": ["only-one"]})
    assert mismatched.status_code == 400, mismatched.data
    dataset = http.call(
        "POST",
        "/explanations/global",
        {"model_id": model, "model_version": 1, "dataset_version_id": "dv-nope"},
    )
    assert dataset.status_code == 404, dataset.data
    assert dataset.data["error"] == "dataset_version_not_found"


def test_a_cache_hit_carries_the_callers_prediction_id(http: Http, forest: Any) -> None:
    body = {"model_id": forest.id, "model_version": forest.version, "input_data": forest.rows[4]}
    first = http.call("POST", "/explanations", {**body, "prediction_id": "p-1"})
    second = http.call("POST", "/explanations", {**body, "prediction_id": "p-2"})
    assert (first.data["prediction_id"], second.data["prediction_id"]) == ("p-1", "p-2")
    assert second.data["cached"] is True
