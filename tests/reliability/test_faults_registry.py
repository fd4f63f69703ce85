"""Throttling and 5xx from DynamoDB, S3 and EventBridge while models are registered and staged.

Transient faults are retried (with backoff) and the request succeeds; a fault that outlasts the
retries gives a 503 JSON error and leaves nothing half-written: no version row without its
artifact, no model whose ``latest_version`` points at a missing version, no stage change on one
version but not the other.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from chalicelib.registry.repository import ModelTable, ModelVersionTable
from tests.conftest import Http
from tests.helpers.models import skops_bytes
from tests.reliability.faults import FaultInjector, inject_faults, table_of

FEATURES = ["f0", "f1", "f2"]


@pytest.fixture(scope="module")
def artifact() -> bytes:
    return skops_bytes()


@pytest.fixture
def http(module_http: Http) -> Http:
    return module_http


@pytest.fixture
def faults(http: Http) -> Any:
    with inject_faults() as injector:
        yield injector


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _body(artifact: bytes) -> dict[str, Any]:
    return {
        "artifact_base64": base64.b64encode(artifact).decode(),
        "task": "classification",
        "feature_names": FEATURES,
        "class_names": ["no", "yes"],
    }


def _model(http: Http) -> str:
    response = http.call("POST", "/models", {"name": _name("churn")})
    assert response.status_code == 201, response.data
    return response.data["model_id"]


def _objects(prefix: str) -> list[str]:
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    listed = aws.client("s3").list_objects_v2(Bucket=get_settings().models_bucket, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def _assert_consistent(model_id: str) -> None:
    """Every version row has its artifact; ``latest_version`` is the highest row."""
    rows = list(ModelVersionTable.query(model_id))
    model = ModelTable.get(model_id, consistent_read=True)
    assert [row.version for row in rows] == list(range(1, len(rows) + 1))
    assert model.latest_version == len(rows)
    stored = set(_objects(f"artifacts/{model_id}/"))
    assert {row.artifact_key for row in rows} <= stored
    production = [row.version for row in rows if row.stage == "production"]
    assert len(production) <= 1
    assert model.production_version == (production[0] if production else None)


def test_transient_dynamodb_throttling_is_retried_with_backoff(
    http: Http, faults: FaultInjector, artifact: bytes
) -> None:
    model_id = _model(http)
    before = faults.calls["dynamodb.TransactWriteItems"]
    faults.fail("dynamodb", "TransactWriteItems", kind="throttle", times=2)
    response = http.call("POST", f"/models/{model_id}/versions", _body(artifact))
    assert response.status_code == 201, response.data
    assert response.data["version"] == 1
    assert faults.injected["dynamodb.TransactWriteItems"] == 2
    assert faults.calls["dynamodb.TransactWriteItems"] - before == 3
    assert len(faults.sleeps) >= 2 and all(delay > 0 for delay in faults.sleeps)
    _assert_consistent(model_id)


def test_transient_s3_errors_are_retried(
    http: Http, faults: FaultInjector, artifact: bytes
) -> None:
    model_id = _model(http)
    faults.fail("s3", "PutObject", kind="5xx", times=2)
    response = http.call("POST", f"/models/{model_id}/versions", _body(artifact))
    assert response.status_code == 201, response.data
    assert faults.injected["s3.PutObject"] == 2
    _assert_consistent(model_id)


@pytest.mark.parametrize("kind", ["throttle", "5xx"])
def test_s3_outage_gives_503_and_no_version(
    http: Http, faults: FaultInjector, artifact: bytes, kind: str
) -> None:
    model_id = _model(http)
    faults.fail("s3", "PutObject", kind=kind)
    response = http.call("POST", f"/models/{model_id}/versions", _body(artifact))
    assert response.status_code == 503, response.data
    assert response.data["error"] == "service_unavailable"
    assert faults.injected["s3.PutObject"] == 4  # the client's attempts, then a 503
    assert 0 < sum(faults.sleeps) <= 7.0  # the backoff botocore asked for
    faults.clear()
    assert list(ModelVersionTable.query(model_id)) == []
    assert _objects(f"artifacts/{model_id}/") == []
    _assert_consistent(model_id)
    retried = http.call("POST", f"/models/{model_id}/versions", _body(artifact))
    assert retried.status_code == 201 and retried.data["version"] == 1


@pytest.mark.parametrize("kind", ["throttle", "5xx"])
def test_dynamodb_outage_after_the_artifact_gives_503_and_no_version(
    http: Http, faults: FaultInjector, artifact: bytes, kind: str
) -> None:
    model_id = _model(http)
    faults.fail("dynamodb", "TransactWriteItems", kind=kind)
    response = http.call("POST", f"/models/{model_id}/versions", _body(artifact))
    assert response.status_code == 503, response.data
    assert response.data["error"] == "service_unavailable"
    faults.clear()
    assert list(ModelVersionTable.query(model_id)) == []
    _assert_consistent(model_id)
    # The content-addressed artifact may stay; the retry reuses it and numbers the version 1.
    retried = http.call("POST", f"/models/{model_id}/versions", _body(artifact))
    assert retried.status_code == 201 and retried.data["version"] == 1
    assert len(_objects(f"artifacts/{model_id}/")) == 1
    _assert_consistent(model_id)


def test_promotion_during_a_dynamodb_outage_changes_no_stage(
    http: Http, faults: FaultInjector, artifact: bytes
) -> None:
    model_id = _model(http)
    for _ in range(2):
        assert http.call("POST", f"/models/{model_id}/versions", _body(artifact)).status_code == 201
    promote = {"stage": "production"}
    assert http.call("POST", f"/models/{model_id}/versions/1/stage", promote).status_code == 200
    faults.fail("dynamodb", "TransactWriteItems", kind="5xx")
    response = http.call("POST", f"/models/{model_id}/versions/2/stage", promote)
    assert response.status_code == 503, response.data
    faults.clear()
    stages = {row.version: row.stage for row in ModelVersionTable.query(model_id)}
    assert stages == {1: "production", 2: "none"}
    _assert_consistent(model_id)


def test_model_creation_during_an_outage_leaves_the_name_free(
    http: Http, faults: FaultInjector
) -> None:
    name = _name("fraud")
    faults.fail("dynamodb", "TransactWriteItems", kind="throttle")
    response = http.call("POST", "/models", {"name": name})
    assert response.status_code == 503, response.data
    faults.clear()
    assert [m for m in ModelTable.scan() if m.name == name] == []
    assert http.call("POST", "/models", {"name": name}).status_code == 201


def test_reads_during_a_dynamodb_outage_are_503_not_500(http: Http, faults: FaultInjector) -> None:
    model_id = _model(http)
    http.call("GET", "/auth/whoami")  # the token is cached; only the model read fails
    faults.fail("dynamodb", "GetItem", kind="5xx", when=table_of(ModelTable))
    response = http.call("GET", f"/models/{model_id}")
    assert response.status_code == 503, response.data
    assert set(response.data) >= {"error", "message"}
