"""Model registry end to end: HTTP routes, S3 artifacts, DynamoDB versions, stages, loading."""

from __future__ import annotations

import base64
import pickle
import threading
from typing import Any

import numpy as np
import requests
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from chalicelib.core.events import RecordingEventBus
from chalicelib.registry.service import ModelRegistry, VersionSpec
from tests.conftest import Http, Tokens

FEATURES = ["f0", "f1", "f2"]


def _data() -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(1).normal(size=(80, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _artifact(model: Any = None) -> bytes:
    X, y = _data()
    return sio.dumps((model or LogisticRegression()).fit(X, y))


def _register_body(artifact: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "artifact_base64": base64.b64encode(artifact).decode(),
        "format": "skops",
        "task": "classification",
        "feature_names": FEATURES,
        "class_names": ["no", "yes"],
        **extra,
    }


def _create_model(http: Http, name: str = "churn") -> str:
    response = http.call("POST", "/models", {"name": name, "description": "d"})
    assert response.status_code == 201, response.data
    return response.data["model_id"]


def test_registry_round_trip_over_http_loads_the_same_model(http: Http) -> None:
    model_id = _create_model(http)
    X, y = _data()
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    created = http.call("POST", f"/models/{model_id}/versions", _register_body(sio.dumps(forest)))
    assert created.status_code == 201, created.data
    assert created.data["version"] == 1
    assert created.data["stage"] == "none"
    fetched = http.call("GET", f"/models/{model_id}/versions/1")
    assert fetched.data["artifact_sha256"] == created.data["artifact_sha256"]
    from chalicelib.registry.service import get_model_registry

    loaded = get_model_registry().load_model(model_id, 1)
    np.testing.assert_array_equal(loaded.predict_proba(X), forest.predict_proba(X))


def test_pickle_format_is_refused_with_422(http: Http) -> None:
    model_id = _create_model(http)
    X, y = _data()
    body = _register_body(pickle.dumps(LogisticRegression().fit(X, y)), format="pickle")
    response = http.call("POST", f"/models/{model_id}/versions", body)
    assert response.status_code == 422
    assert response.data["error"] == "unsafe_format"
    assert http.call("GET", f"/models/{model_id}/versions").data["versions"] == []


def test_pickle_bytes_disguised_as_skops_are_refused(http: Http) -> None:
    model_id = _create_model(http)
    X, y = _data()
    body = _register_body(pickle.dumps(LogisticRegression().fit(X, y)))
    response = http.call("POST", f"/models/{model_id}/versions", body)
    assert response.status_code == 422
    assert response.data["error"] == "unsafe_artifact"


def test_an_empty_artifact_is_refused_with_422_and_stores_nothing(http: Http) -> None:
    model_id = _create_model(http)
    response = http.call("POST", f"/models/{model_id}/versions", _register_body(b""))
    assert response.status_code == 422
    assert response.data == {"error": "unprocessable", "message": "the artifact is empty"}
    assert http.call("GET", f"/models/{model_id}/versions").data["versions"] == []


def test_duplicate_model_name_is_409(http: Http) -> None:
    _create_model(http, "same")
    response = http.call("POST", "/models", {"name": "same"})
    assert response.status_code == 409


def test_reader_cannot_register(http: Http, tokens: Tokens) -> None:
    response = http.call("POST", "/models", {"name": "x"}, token=tokens.reader)
    assert response.status_code == 403


def test_unknown_model_and_version_are_404(http: Http) -> None:
    assert http.call("GET", "/models/m-nothing").status_code == 404
    model_id = _create_model(http)
    assert http.call("GET", f"/models/{model_id}/versions/7").status_code == 404
    assert http.call("GET", f"/models/{model_id}/versions/abc").status_code == 400


def test_promotion_archives_the_previous_production_version(http: Http) -> None:
    model_id = _create_model(http)
    for _ in range(2):
        assert (
            http.call(
                "POST", f"/models/{model_id}/versions", _register_body(_artifact())
            ).status_code
            == 201
        )
    first = http.call("POST", f"/models/{model_id}/versions/1/stage", {"stage": "production"})
    assert first.data["stage"] == "production"
    second = http.call("POST", f"/models/{model_id}/versions/2/stage", {"stage": "production"})
    assert second.data["stage"] == "production"
    assert http.call("GET", f"/models/{model_id}/versions/1").data["stage"] == "archived"
    assert http.call("GET", f"/models/{model_id}").data["production_version"] == 2


def test_large_artifact_goes_through_presigned_upload(http: Http) -> None:
    model_id = _create_model(http)
    upload = http.call("POST", f"/models/{model_id}/uploads")
    assert upload.status_code == 201
    put = requests.put(upload.data["url"], data=_artifact(), timeout=10)
    assert put.status_code == 200
    body = _register_body(b"")
    del body["artifact_base64"]
    body["artifact_upload_key"] = upload.data["upload_key"]
    created = http.call("POST", f"/models/{model_id}/versions", body)
    assert created.status_code == 201, created.data


def test_upload_key_outside_the_model_prefix_is_refused(http: Http) -> None:
    model_id = _create_model(http)
    body = _register_body(b"")
    del body["artifact_base64"]
    body["artifact_upload_key"] = "uploads/other-model/../x.skops"
    assert http.call("POST", f"/models/{model_id}/versions", body).status_code == 400


def test_concurrent_registrations_get_consecutive_versions(aws: Any) -> None:
    registry = ModelRegistry(event_bus=RecordingEventBus())
    model = registry.create_model("parallel")
    spec = VersionSpec(task="classification", feature_names=tuple(FEATURES))
    # Distinct artifacts: moto's S3 is not thread-safe when threads overwrite one key.
    artifacts = [_artifact(LogisticRegression(C=0.1 * (n + 1))) for n in range(8)]
    errors: list[Exception] = []

    def register(artifact: bytes) -> None:
        try:
            registry.register_version(model.model_id, spec, artifact)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(a,)) for a in artifacts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = [v.version for v in registry.list_versions(model.model_id)]
    assert versions == list(range(1, 9))
