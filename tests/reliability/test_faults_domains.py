"""Faults during A/B testing (outcome recording, state transitions, rollback) and dataset
versioning (version creation, S3 ingest).

Besides throttling and outages (the write never happened), ``apply=True`` rules model the
ambiguous failure: DynamoDB applied the write but the response was lost (a 500 or timeout on the
way back), and botocore retries a request that already succeeded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.abtesting.repository import ExperimentTable
from tests.conftest import Http
from tests.helpers.models import skops_artifact
from tests.monitor import run_monitor
from tests.reliability.faults import FaultInjector, inject_faults, table_of
from tests.reliability.seeding import fifty_fifty


@pytest.fixture
def faults(module_http: Http) -> Iterator[FaultInjector]:
    with inject_faults() as injector:
        yield injector


@pytest.fixture(scope="module")
def registered(module_http: Http) -> dict[str, Any]:
    artifact = skops_artifact()
    name = f"dom-{uuid.uuid4().hex[:6]}"
    model_id = module_http.call("POST", "/models", {"name": name}).data["model_id"]
    body = {"artifact_base64": artifact, "task": "classification", "feature_names": ["a", "b"]}
    for _ in range(2):
        created = module_http.call("POST", f"/models/{model_id}/versions", body)
        assert created.status_code == 201, created.data
    return {"model_id": model_id, "body": body}


def _experiment(http: Http, registered: dict[str, Any], start: bool = True) -> str:
    model_id = registered["model_id"]
    variants = fifty_fifty(model_id, 2)
    created = http.call("POST", "/experiments", {"name": "faults", "variants": variants})
    assert created.status_code == 201, created.data
    experiment_id = created.data["experiment_id"]
    if start:
        assert http.call("POST", f"/experiments/{experiment_id}/start").status_code == 200
    return experiment_id


def _outcomes(ids: list[str], variant: str = "control") -> dict[str, Any]:
    return {
        "outcomes": [
            {"variant_id": variant, "request_id": rid, "success": True, "latency_ms": 5.0}
            for rid in ids
        ]
    }


def _counts(http: Http, experiment_id: str) -> dict[str, int]:
    metrics = http.call("GET", f"/experiments/{experiment_id}/metrics")
    assert metrics.status_code == 200, metrics.data
    return {v: m["request_count"] for v, m in metrics.data["variants"].items()}


def _status(experiment_id: str) -> str:
    return ExperimentTable.get(experiment_id, consistent_read=True).status


# ---- outcome recording ---------------------------------------------------------------------


def test_throttled_outcome_writes_are_retried_and_counted_once(
    module_http: Http, registered: dict[str, Any], faults: FaultInjector
) -> None:
    experiment_id = _experiment(module_http, registered)
    faults.fail("dynamodb", "TransactWriteItems", kind="throttle", times=2)
    response = module_http.call(
        "POST", f"/experiments/{experiment_id}/outcomes", _outcomes(["a", "b", "c"])
    )
    assert response.status_code == 200, response.data
    assert response.data == {"accepted": 3, "duplicates": 0}
    assert _counts(module_http, experiment_id) == {"control": 3, "treatment": 0}


def test_an_outcome_outage_is_503_counts_nothing_and_the_retry_counts_once(
    module_http: Http, registered: dict[str, Any], faults: FaultInjector
) -> None:
    experiment_id = _experiment(module_http, registered)
    path = f"/experiments/{experiment_id}/outcomes"
    faults.fail("dynamodb", "TransactWriteItems", kind="5xx")
    response = module_http.call("POST", path, _outcomes(["a", "b"]))
    assert response.status_code == 503, response.data
    faults.clear()
    assert _counts(module_http, experiment_id) == {"control": 0, "treatment": 0}
    assert module_http.call("POST", path, _outcomes(["a", "b"])).data["accepted"] == 2
    assert module_http.call("POST", path, _outcomes(["a", "b"])).data["duplicates"] == 2
    assert _counts(module_http, experiment_id) == {"control": 2, "treatment": 0}


def test_an_outcome_write_whose_response_was_lost_is_counted_exactly_once(
    module_http: Http, registered: dict[str, Any], faults: FaultInjector
) -> None:
    experiment_id = _experiment(module_http, registered)
    path = f"/experiments/{experiment_id}/outcomes"
    faults.fail("dynamodb", "TransactWriteItems", kind="5xx", times=1, apply=True)
    response = module_http.call("POST", path, _outcomes(["x", "y"]))
    assert response.status_code == 200, response.data
    faults.clear()
    assert _counts(module_http, experiment_id) == {"control": 2, "treatment": 0}
    again = module_http.call("POST", path, _outcomes(["x", "y"]))  # the client's retry
    assert again.data == {"accepted": 0, "duplicates": 2}
    assert _counts(module_http, experiment_id) == {"control": 2, "treatment": 0}


# ---- state transitions and rollback ----------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "body", "before"),
    [
        ("start", None, "draft"),
        ("pause", None, "running"),
        ("rollback", {"reason": "guardrail"}, "running"),
        ("conclude", {"winning_variant_id": "treatment"}, "running"),
    ],
)
def test_a_transition_during_an_outage_is_503_and_changes_nothing(
    module_http: Http,
    registered: dict[str, Any],
    faults: FaultInjector,
    action: str,
    body: Any,
    before: str,
) -> None:
    experiment_id = _experiment(module_http, registered, start=before != "draft")
    faults.fail("dynamodb", "UpdateItem", kind="5xx", when=table_of(ExperimentTable))
    faults.fail("dynamodb", "TransactWriteItems", kind="5xx")
    response = module_http.call("POST", f"/experiments/{experiment_id}/{action}", body)
    assert response.status_code == 503, response.data
    faults.clear()
    assert _status(experiment_id) == before
    # The same request succeeds once DynamoDB is back.
    retried = module_http.call("POST", f"/experiments/{experiment_id}/{action}", body)
    assert retried.status_code == 200, retried.data


def test_rollback_while_eventbridge_is_down_still_rolls_back_and_keeps_the_event(
    module_http: Http, registered: dict[str, Any], faults: FaultInjector
) -> None:
    from chalicelib.core.events import EventOutboxTable

    experiment_id = _experiment(module_http, registered)
    faults.fail("eventbridge", "PutEvents", kind="throttle")
    response = module_http.call(
        "POST", f"/experiments/{experiment_id}/rollback", {"reason": "latency"}
    )
    assert response.status_code == 200, response.data
    faults.clear()
    assert _status(experiment_id) == "rolled_back"
    kept = [e for e in EventOutboxTable.scan() if experiment_id in e.detail]
    assert [e.detail_type for e in kept] == ["ExperimentRolledBack"]
    routed = module_http.call(
        "POST", f"/experiments/{experiment_id}/route", {"request_id": "r1", "user_id": "u1"}
    )
    assert routed.status_code == 200 and routed.data["variant_id"] == "control"


def test_a_rollback_whose_response_was_lost_still_reports_success(
    module_http: Http, registered: dict[str, Any], faults: FaultInjector
) -> None:
    experiment_id = _experiment(module_http, registered)
    faults.fail(
        "dynamodb", "UpdateItem", kind="5xx", times=1, apply=True, when=table_of(ExperimentTable)
    )
    response = module_http.call(
        "POST", f"/experiments/{experiment_id}/rollback", {"reason": "latency"}
    )
    faults.clear()
    assert _status(experiment_id) == "rolled_back"
    assert response.status_code == 200, response.data


def test_a_registration_whose_response_was_lost_registers_one_version(
    module_http: Http, registered: dict[str, Any], faults: FaultInjector
) -> None:
    name = f"dom-{uuid.uuid4().hex[:6]}"
    model_id = module_http.call("POST", "/models", {"name": name}).data["model_id"]
    faults.fail("dynamodb", "TransactWriteItems", kind="5xx", times=1, apply=True)
    response = module_http.call("POST", f"/models/{model_id}/versions", registered["body"])
    faults.clear()
    assert response.status_code == 201, response.data
    versions = module_http.call("GET", f"/models/{model_id}/versions").data["versions"]
    assert len(versions) == 1, [v["version"] for v in versions]


# ---- dataset versions ------------------------------------------------------------------------


def _dataset(http: Http) -> str:
    body = {"name": f"dom-{uuid.uuid4().hex[:6]}", "format": "csv"}
    created = http.call("POST", "/datasets", body)
    assert created.status_code == 201, created.data
    return created.data["dataset_id"]


def _data_objects(prefix: str) -> list[str]:
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    listed = aws.client("s3").list_objects_v2(Bucket=get_settings().data_bucket, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def _dataset_versions(http: Http, dataset_id: str) -> list[dict[str, Any]]:
    listed = http.call("GET", f"/datasets/{dataset_id}/versions")
    assert listed.status_code == 200, listed.data
    return listed.data["versions"]


def test_a_storage_outage_during_version_creation_is_503_with_no_version(
    module_http: Http, faults: FaultInjector
) -> None:
    dataset_id = _dataset(module_http)
    faults.fail("s3", "PutObject", kind="5xx")
    faults.fail("s3", "CreateMultipartUpload", kind="5xx")
    response = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": "a,b\n1,2\n"})
    injected = sum(faults.injected.values())
    faults.clear()
    assert injected > 0
    assert response.status_code == 503, response.data
    assert _dataset_versions(module_http, dataset_id) == []
    retried = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": "a,b\n1,2\n"})
    assert retried.status_code == 201 and retried.data["version_number"] == 1


def test_a_dynamodb_outage_during_version_creation_is_503_and_the_retry_is_version_one(
    module_http: Http, faults: FaultInjector
) -> None:
    dataset_id = _dataset(module_http)
    faults.fail("dynamodb", "TransactWriteItems", kind="throttle")
    response = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": "a,b\n1,2\n"})
    faults.clear()
    assert response.status_code == 503, response.data
    assert _dataset_versions(module_http, dataset_id) == []
    retried = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": "a,b\n1,2\n"})
    assert retried.status_code == 201 and retried.data["version_number"] == 1
    assert _dataset_versions(module_http, dataset_id)[0]["version_number"] == 1


def test_a_version_write_whose_response_was_lost_creates_one_version(
    module_http: Http, faults: FaultInjector
) -> None:
    dataset_id = _dataset(module_http)
    faults.fail("dynamodb", "TransactWriteItems", kind="5xx", times=1, apply=True)
    response = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": "a,b\n1,2\n"})
    faults.clear()
    # botocore's retry finds the version its lost first attempt wrote: the existing one, 200
    assert response.status_code == 200, response.data
    assert [v["version_number"] for v in _dataset_versions(module_http, dataset_id)] == [1]


def test_ingest_during_an_outage_fails_for_a_redelivery_and_then_creates_one_version(
    module_http: Http, faults: FaultInjector
) -> None:
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    dataset_id = _dataset(module_http)
    bucket, key = get_settings().data_bucket, f"incoming/{dataset_id}/part.csv"
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=b"a,b\n1,2\n")
    event = module_http.client.events.generate_s3_event(bucket=bucket, key=key)
    faults.fail("dynamodb", "TransactWriteItems", kind="5xx")
    with pytest.raises(Exception):  # noqa: B017 - the trigger must see a failure to redeliver
        module_http.client.lambda_.invoke("dataset_ingest", event)
    faults.clear()
    assert _dataset_versions(module_http, dataset_id) == []
    assert key in _data_objects(f"incoming/{dataset_id}/")  # kept for the redelivery
    for _ in range(2):  # at-least-once: the event arrives again, twice
        module_http.client.lambda_.invoke("dataset_ingest", event)
    assert [v["version_number"] for v in _dataset_versions(module_http, dataset_id)] == [1]


def _run_monitor(http: Http, when: str) -> dict[str, Any]:
    return run_monitor(http.client, when)


def test_automatic_rollback_during_an_outage_is_retried_by_the_next_monitor_run(
    module_http: Http, registered: dict[str, Any], faults: FaultInjector
) -> None:
    experiment_id = _experiment(module_http, registered)
    policy = {"error_rate_threshold": 0.1, "min_requests_before_rollback": 10}
    put = module_http.call("PUT", f"/experiments/{experiment_id}/rollback-policy", policy)
    assert put.status_code == 200, put.data
    failing = _outcomes([f"f{i}" for i in range(20)], variant="treatment")
    for outcome in failing["outcomes"]:
        outcome["success"] = False
    failing["outcomes"] += _outcomes([f"ok{i}" for i in range(20)], variant="control")["outcomes"]
    assert module_http.call("POST", f"/experiments/{experiment_id}/outcomes", failing).data == {
        "accepted": 40,
        "duplicates": 0,
    }
    faults.fail("dynamodb", "UpdateItem", kind="5xx", when=table_of(ExperimentTable))
    report = _run_monitor(module_http, "2026-01-01T00:00:00Z")
    assert experiment_id in report["errors"]
    faults.clear()
    assert _status(experiment_id) == "running"  # nothing half rolled back
    report = _run_monitor(module_http, "2026-01-01T00:01:00Z")
    assert experiment_id in report["rolled_back"]
    assert _status(experiment_id) == "rolled_back"
    assert _run_monitor(module_http, "2026-01-01T00:02:00Z")["rolled_back"] == []  # only once
