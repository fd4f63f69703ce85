"""The explanation function entry point, the Lambda backend (stubbed boto3) and job edge cases."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from chalicelib.core.errors import ServiceUnavailable, SynapseError
from chalicelib.core.events import RecordingEventBus
from chalicelib.explainability.models import ExplanationRequest
from tests.helpers.explain import register, registry, service, tabular_data


@pytest.fixture
def model(aws: Any) -> Any:
    from sklearn.linear_model import LinearRegression

    X, names = tabular_data(80, 3)
    reg = registry()
    found = register(
        reg, LinearRegression().fit(X, X @ [1.0, -1.0, 2.0]), "regression", names, X, background=X
    )
    found.reg = reg
    return found


def _lambda_client() -> Any:
    import boto3

    return boto3.client("lambda", region_name="us-east-1")


def _payload(data: Any) -> dict[str, Any]:
    from botocore.response import StreamingBody

    raw = json.dumps(data).encode()
    return {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(raw), len(raw))}


def test_the_function_handler_runs_operations_and_returns_errors_as_data(model: Any) -> None:
    from chalicelib.explainability.handlers import explainer_function_handler

    request = ExplanationRequest(model.model_id, model.version, input_data=model.row(4))
    answer = explainer_function_handler(
        {"operation": "explain", "payload": request.to_dict()}, None
    )
    assert answer["ok"] is True
    assert answer["result"]["algorithm"] == "linear"
    assert answer["result"]["additivity_error"] < 1e-6
    bad = ExplanationRequest(model.model_id, model.version, input_data={"f0": 1.0})
    failed = explainer_function_handler({"operation": "explain", "payload": bad.to_dict()}, None)
    assert failed == {
        "ok": False,
        "error": {
            "error": "invalid_request",
            "message": "missing feature 'f1'",
            "details": {"missing": ["f1", "f2"]},
            "status": 400,
        },
    }
    unknown = explainer_function_handler({"operation": "nope", "payload": {}}, None)
    assert unknown["error"]["status"] == 400
    assert explainer_function_handler({}, None)["ok"] is False


def test_the_lambda_backend_invokes_the_function_then_serves_from_the_cache(model: Any) -> None:
    from botocore.stub import ANY, Stubber

    from chalicelib.explainability.handlers import explainer_function_handler
    from chalicelib.explainability.service import LambdaBackend

    request = ExplanationRequest(model.model_id, model.version, input_data=model.row(2))
    remote = explainer_function_handler({"operation": "explain", "payload": request.to_dict()})
    client = _lambda_client()
    svc = service(RecordingEventBus(), model.reg, LambdaBackend("explainer-fn", client))
    svc.cache.invalidate_model(model.model_id)  # the remote run above filled the shared table
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            _payload(remote),
            {"FunctionName": "explainer-fn", "InvocationType": "RequestResponse", "Payload": ANY},
        )
        first = svc.explain(request)
        second = svc.explain(request)
        stub.assert_no_pending_responses()
    assert first.cached is False and first.algorithm == "linear"
    assert second.cached is True
    assert second.contribution_map() == first.contribution_map()


def test_the_lambda_backend_maps_remote_and_function_errors(model: Any) -> None:
    from botocore.stub import ANY, Stubber

    from chalicelib.explainability.service import LambdaBackend

    client = _lambda_client()
    backend = LambdaBackend("explainer-fn", client)
    error = {"error": "unprocessable", "message": "no background", "status": 422}
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            _payload({"ok": False, "error": error}),
            {"FunctionName": "explainer-fn", "InvocationType": "RequestResponse", "Payload": ANY},
        )
        with pytest.raises(SynapseError) as raised:
            backend.run(ExplanationRequest("m", 1))
        assert raised.value.status == 422 and raised.value.code == "unprocessable"
        crashed = {**_payload({"errorMessage": "boom"}), "FunctionError": "Unhandled"}
        stub.add_response(
            "invoke",
            crashed,
            {"FunctionName": "explainer-fn", "InvocationType": "RequestResponse", "Payload": ANY},
        )
        with pytest.raises(ServiceUnavailable):
            backend.run(ExplanationRequest("m", 1))
        stub.add_response(
            "invoke",
            {"StatusCode": 202},
            {"FunctionName": "explainer-fn", "InvocationType": "Event", "Payload": ANY},
        )
        backend.dispatch_job("job-1")
        stub.assert_no_pending_responses()


def test_a_job_is_handed_to_the_function_and_run_there(model: Any) -> None:
    from botocore.stub import ANY, Stubber

    from chalicelib.explainability.handlers import explainer_function_handler
    from chalicelib.explainability.service import LambdaBackend

    client = _lambda_client()
    api_side = service(RecordingEventBus(), model.reg, LambdaBackend("explainer-fn", client))
    payload = {
        "model_id": model.model_id,
        "model_version": model.version,
        "inputs": [model.row(i) for i in range(3)],
        "asynchronous": True,
    }
    plan = explainer_function_handler(
        {"operation": "plan", "payload": {"operation": "batch", "request": payload}}
    )
    assert plan["ok"] is True and plan["result"]["measured"] is True
    with Stubber(client) as stub:
        synchronous = {"FunctionName": "explainer-fn", "InvocationType": "RequestResponse"}
        stub.add_response("invoke", _payload(plan), {**synchronous, "Payload": ANY})
        submitted = api_side.explain_batch(payload, owner="alice")
        stub.assert_no_pending_responses()
    assert submitted.estimated_seconds == pytest.approx(plan["result"]["seconds"], abs=1e-3)
    job = submitted.job
    with Stubber(client) as stub:
        expected = {"FunctionName": "explainer-fn", "InvocationType": "Event", "Payload": ANY}
        stub.add_response("invoke", {"StatusCode": 202}, expected)
        api_side.handle_job(job.job_id)
        stub.assert_no_pending_responses()
    assert api_side.get_job(job.job_id, "alice").status == "queued"
    answer = explainer_function_handler({"operation": "run_job", "payload": {"job_id": job.job_id}})
    assert answer == {"ok": True, "result": "succeeded"}
    done = api_side.get_job(job.job_id, "alice")
    assert done.status == "succeeded" and done.result["count"] == 3


def test_large_job_results_are_stored_in_s3(model: Any, monkeypatch: Any) -> None:
    from chalicelib.explainability import repository

    monkeypatch.setattr(repository, "INLINE_RESULT_LIMIT", 100)
    svc = service(RecordingEventBus(), model.reg)
    payload = {
        "model_id": model.model_id,
        "inputs": [model.row(i) for i in range(5)],
        "model_version": model.version,
        "asynchronous": True,
    }
    job = svc.explain_batch(payload).job
    svc.handle_job(job.job_id)
    done = svc.get_job(job.job_id)
    assert done.status == "succeeded" and done.result["count"] == 5
    item = repository.ExplanationJobTable.get(job.job_id)
    assert item.result is None and item.result_key == f"explanations/jobs/{job.job_id}.json"


def test_unexpected_job_errors_are_retried_then_fail(model: Any, monkeypatch: Any) -> None:
    svc = service(RecordingEventBus(), model.reg)
    job = svc.explain_batch(
        {
            "model_id": model.model_id,
            "inputs": [model.row()],
            "model_version": model.version,
            "asynchronous": True,
        }
    ).job

    def broken(kind: str, payload: dict[str, Any]) -> Any:
        raise RuntimeError("disk on fire")

    svc.jobs.executor = broken
    for _ in range(2):
        with pytest.raises(RuntimeError):
            svc.handle_job(job.job_id)
        assert svc.get_job(job.job_id).status == "queued"  # waiting for the redelivery
    svc.handle_job(job.job_id)
    failed = svc.get_job(job.job_id)
    assert failed.status == "failed" and failed.attempts == 3
    assert failed.error == {"error": "internal_error", "message": "RuntimeError"}


def test_malformed_job_messages_are_dropped(aws: Any) -> None:
    from chalicelib.explainability.handlers import handle_job_messages

    assert handle_job_messages({"Records": [{"body": "not json"}, {"body": "{}"}]}) == {"jobs": 0}


def test_a_job_is_not_left_behind_when_its_message_cannot_be_sent(
    model: Any, monkeypatch: Any
) -> None:
    svc = service(RecordingEventBus(), model.reg)

    def refuse(job_id: str) -> None:
        raise RuntimeError("queue down")

    monkeypatch.setattr(svc.jobs.repository, "enqueue_job", refuse)
    with pytest.raises(RuntimeError):
        svc.explain_batch(
            {
                "model_id": model.model_id,
                "inputs": [model.row()],
                "model_version": model.version,
                "asynchronous": True,
            }
        )
    from chalicelib.explainability.repository import ExplanationJobTable

    assert list(ExplanationJobTable.scan()) == []


def test_the_backend_setting_is_validated(aws: Any, monkeypatch: Any) -> None:
    from chalicelib.explainability.service import InProcessBackend, LambdaBackend, build_service

    monkeypatch.setenv("SYNAPSE_EXPLANATION_BACKEND", "lambda")
    monkeypatch.setenv("EXPLANATION_FUNCTION", "fn-x")
    backend = build_service().backend
    assert isinstance(backend, LambdaBackend) and backend.function_name == "fn-x"
    assert isinstance(build_service("inprocess").backend, InProcessBackend)
    monkeypatch.setenv("SYNAPSE_EXPLANATION_BACKEND", "gpu")
    with pytest.raises(ValueError, match="inprocess or lambda"):
        build_service()
