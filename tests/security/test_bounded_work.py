"""No explanation runs unbounded (issue 12, "bounded work").

Every explanation request is estimated before it runs: at or under ``SYNAPSE_EXPLAIN_SYNC_SECONDS``
it is answered (200), over it it becomes a job (202), over ``SYNAPSE_EXPLAIN_JOB_SECONDS`` it is
refused with 422 ``too_expensive`` naming the estimate and the limit, and nothing is queued. A job
runs under a deadline taken from its function's remaining time and records ``failed`` with the
reason instead of being killed; a job whose function died is reported, never left ``running``.

The boundary tests take the estimate the API decides with from the API itself (its 422 details)
and replace the timing of the model, the one non-deterministic input, by zero, so that the
measured estimate is the counted work alone (never more than the API's).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from chalicelib.explainability import planner as planner_module
from chalicelib.explainability.budget import Allowance, Estimate, ModelSpeed
from tests.conftest import Http
from tests.helpers.explain import register_over_http

LIMITS = ("SYNAPSE_EXPLAIN_SYNC_SECONDS", "SYNAPSE_EXPLAIN_JOB_SECONDS")


def _register(
    http: Http,
    estimator: Any,
    task: str,
    names: list[str],
    background: np.ndarray | None = None,
    classes: list[str] | None = None,
) -> str:
    return register_over_http(http, estimator, task, names, background, classes)[0]


class Models:
    """The models of this module and inputs for them."""

    linear: str
    mlp: str
    image: str
    text: str
    rows: list[dict[str, float]]
    wide_rows: list[dict[str, float]]
    image_input: list[list[float]]


@pytest.fixture(scope="module")
def models(module_http: Http) -> Models:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline

    found = Models()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    names = ["a", "b", "c", "d"]
    linear = LogisticRegression().fit(X, (X[:, 0] - X[:, 2] > 0).astype(int))
    found.linear = _register(module_http, linear, "classification", names, X[:80], ["no", "yes"])
    found.rows = [dict(zip(names, row.tolist(), strict=True)) for row in X]
    wide = rng.normal(size=(400, 12))
    wide_names = [f"f{i}" for i in range(12)]
    mlp = MLPClassifier((8,), max_iter=300, random_state=0)
    mlp.fit(wide, (wide[:, 0] * wide[:, 1] > 0).astype(int))
    found.mlp = _register(module_http, mlp, "classification", wide_names, wide[:300], ["x", "y"])
    found.wide_rows = [dict(zip(wide_names, row.tolist(), strict=True)) for row in wide]
    images = rng.random((40, 16, 16))
    labels = (images[:, :8].mean(axis=(1, 2)) > images[:, 8:].mean(axis=(1, 2))).astype(int)
    image_model = LogisticRegression(max_iter=300).fit(images.reshape(40, -1), labels)
    found.image = _register(
        module_http, image_model, "image_classification", [], None, ["lo", "hi"]
    )
    found.image_input = images[0].tolist()
    texts = ["great fun", "a great story", "awful bore", "an awful plot"] * 5
    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, [1, 1, 0, 0] * 5)
    found.text = _register(module_http, pipeline, "text_classification", [], None, ["neg", "pos"])
    return found


@pytest.fixture
def http(module_http: Http, monkeypatch: pytest.MonkeyPatch) -> Iterator[Http]:
    """The module's client with the default limits and an empty jobs queue after the test."""
    for name in LIMITS:
        monkeypatch.delenv(name, raising=False)
    yield module_http
    _drain_queue()


def _limits(monkeypatch: pytest.MonkeyPatch, sync: float, job: float) -> None:
    monkeypatch.setenv("SYNAPSE_EXPLAIN_SYNC_SECONDS", repr(sync))
    monkeypatch.setenv("SYNAPSE_EXPLAIN_JOB_SECONDS", repr(job))


def _free_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model calls cost nothing in the measured estimate (the counted work stays)."""
    monkeypatch.setattr(planner_module, "measure_speed", lambda *a, **k: ModelSpeed(0.0, 0.0))


def _queue() -> tuple[Any, str]:
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    sqs = aws.client("sqs")
    return sqs, sqs.get_queue_url(QueueName=get_settings().explanation_jobs_queue)["QueueUrl"]


def _drain_queue() -> list[str]:
    sqs, url = _queue()
    bodies = []
    while True:
        found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not found:
            return bodies
        for message in found:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _worker(body: str, seconds: float = 300.0) -> Any:
    """The SQS worker as Lambda invokes it, with ``seconds`` left in its context (as the local
    stack's pump and the deployed explanation function: 300 s)."""
    from chalice.local import LambdaContext

    from app import app

    event = {
        "Records": [
            {
                "body": body,
                "messageId": "m-1",
                "receiptHandle": "r-1",
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:synapse-explanation-jobs",
                "awsRegion": "us-east-1",
            }
        ]
    }
    context = LambdaContext("explanation_worker", 1024, max_runtime_ms=int(seconds * 1000))
    return app.handler_map["explanation_worker"](event, context)


def _run_jobs(seconds: float = 300.0) -> list[Any]:
    return [_worker(body, seconds) for body in _drain_queue()]


def _job(http: Http, job_id: str) -> dict[str, Any]:
    found = http.call("GET", f"/explanations/jobs/{job_id}")
    assert found.status_code == 200, found.data
    return found.data


def _estimate(http: Http, monkeypatch: pytest.MonkeyPatch, path: str, body: dict) -> float:
    """The estimate the API decides ``body`` with, read from its 422 at a tiny limit."""
    _limits(monkeypatch, 1e-12, 1e-12)
    refused = http.call("POST", path, body)
    assert refused.status_code == 422, refused.data
    assert refused.data["error"] == "too_expensive"
    return float(refused.data["details"]["estimate"]["seconds"])


def _cases(models: Models) -> dict[str, tuple[str, dict[str, Any]]]:
    base = {"model_id": models.linear, "model_version": 1}
    return {
        "explain": (
            "/explanations",
            {**base, "explanation_type": "lime", "input_data": models.rows[0], "seed": 3},
        ),
        "batch": (
            "/explanations/batch",
            {**base, "explanation_type": "lime", "inputs": models.rows[:3], "num_samples": 800},
        ),
        "global": (
            "/explanations/global",
            {**base, "explanation_type": "lime", "inputs": models.rows[:4], "num_samples": 600},
        ),
        "dependence": (
            "/explanations/dependence",
            {**base, "feature": "a", "inputs": models.rows[:40]},
        ),
    }


ROUTES = ("explain", "batch", "global", "dependence")


@pytest.mark.parametrize("route", ROUTES)
def test_at_the_synchronous_limit_a_request_is_answered_and_just_over_it_becomes_a_job(
    http: Http, models: Models, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    _free_model(monkeypatch)
    path, body = _cases(models)[route]
    cost = _estimate(http, monkeypatch, path, body)
    _limits(monkeypatch, cost, 1000.0)
    answered = http.call("POST", path, body)
    assert answered.status_code == 200, answered.data
    http.call("DELETE", f"/models/{models.linear}/explanations")
    _limits(monkeypatch, cost * (1 - 1e-9), 1000.0)
    accepted = http.call("POST", path, body)
    assert accepted.status_code == 202, accepted.data
    assert accepted.data["kind"] == route and accepted.data["estimated_seconds"] is not None
    assert _run_jobs() == [{"jobs": 1}]
    done = _job(http, accepted.data["job_id"])
    assert done["status"] == "succeeded", done
    # The job computed what the synchronous answer was (LIME is seeded, LinearSHAP exact).
    assert _stable(done["result"]) == _stable(answered.data)


_VOLATILE = {"explanation_id", "created_at", "computation_time_ms", "cached"}


def _stable(value: Any) -> Any:
    """A result without what differs between two computations of it (ids, times)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(item) for item in value]
    return value


@pytest.mark.parametrize("route", ROUTES)
def test_at_the_job_limit_a_request_is_queued_and_over_it_is_refused_with_the_numbers(
    http: Http, models: Models, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    _free_model(monkeypatch)
    path, body = _cases(models)[route]
    cost = _estimate(http, monkeypatch, path, body)
    _limits(monkeypatch, cost / 2, cost)
    accepted = http.call("POST", path, body)
    assert accepted.status_code == 202, accepted.data
    assert len(_drain_queue()) == 1
    limit = cost * (1 - 1e-9)
    _limits(monkeypatch, limit / 2, limit)
    refused = http.call("POST", path, body)
    assert refused.status_code == 422, refused.data
    assert refused.data["error"] == "too_expensive"
    message = refused.data["message"]
    assert f"about {cost:,.1f} s" in message and f"limit of {limit:,.1f} s" in message
    assert "SYNAPSE_EXPLAIN_JOB_SECONDS" in message
    details = refused.data["details"]
    assert details["estimate"]["seconds"] == cost and details["limit_seconds"] == limit
    assert details["estimate"]["model_rows"] > 0 and details["estimate"]["summary"]
    assert _drain_queue() == []  # nothing was queued


@pytest.mark.parametrize("kind", ["lime", "shap"])
def test_text_and_image_requests_over_the_limits_become_jobs_or_are_refused(
    http: Http, models: Models, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    requests = [
        {"model_id": models.image, "input_data": {"image": models.image_input}, "n_segments": 9},
        {"model_id": models.text, "input_data": {"text": "a great plot and an awful ending"}},
    ]
    for request in requests:
        body = {**request, "model_version": 1, "explanation_type": kind}
        body |= {"num_samples": 300, "max_evals": 200}
        cost = _estimate(http, monkeypatch, "/explanations", body)
        _limits(monkeypatch, cost * (1 - 1e-9), 1000.0)
        accepted = http.call("POST", "/explanations", body)
        assert accepted.status_code == 202, accepted.data
        assert _run_jobs() == [{"jobs": 1}]
        done = _job(http, accepted.data["job_id"])
        assert done["status"] == "succeeded" and done["result"]["input_kind"] in ("text", "image")
        _limits(monkeypatch, cost / 4, cost / 2)
        refused = http.call("POST", "/explanations", {**body, "seed": 9})
        assert refused.status_code == 422 and refused.data["error"] == "too_expensive"


def test_the_issues_half_hour_image_explanations_are_refused_or_queued_at_once(
    http: Http, models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: LIME on a 512×512 image with n_segments=500 took 43 s, SHAP with max_evals=2000
    27 s, the allowed maxima about half an hour. With the default limits (10 s synchronous, 240 s
    a job) LIME's default 5,000 samples and SHAP's 10,000 evaluations are jobs, and the maxima
    over two images are refused at once."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    images = rng.random((6, 512, 512)).round(2)
    model = LogisticRegression(max_iter=20).fit(images.reshape(6, -1), [0, 1] * 3)
    model_id = _register(http, model, "image_classification", [], None, ["a", "b"])
    image = {"image": images[0].tolist()}
    base = {"model_id": model_id, "model_version": 1, "n_segments": 500}
    for body in (
        {**base, "input_data": image, "explanation_type": "lime"},
        {**base, "input_data": image, "max_evals": 10_000},
    ):
        queued = http.call("POST", "/explanations", body)
        assert queued.status_code == 202, queued.data
        assert queued.data["estimated_seconds"] > 10
    assert len(_drain_queue()) == 2
    most = {**base, "explanation_type": "lime", "num_samples": 20_000, "inputs": [image, image]}
    refused = http.call("POST", "/explanations/batch", most)
    assert refused.status_code == 422, refused.data
    assert refused.data["error"] == "too_expensive"
    assert "limit of 240.0 s (SYNAPSE_EXPLAIN_JOB_SECONDS)" in refused.data["message"]
    assert refused.data["details"]["estimate"]["model_rows"] == 40_000
    assert _drain_queue() == []


def test_a_model_measured_slower_than_counted_turns_an_answer_into_a_job_or_a_refusal(
    http: Http, models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the model the API assumes the cheapest SHAP algorithm; loaded, the MLP needs
    KernelSHAP over 300 background rows, and the measured estimate decides."""
    body = {"model_id": models.mlp, "model_version": 1, "input_data": models.wide_rows[0]}
    body["background_sample_size"] = 300
    _limits(monkeypatch, 0.001, 1000.0)
    accepted = http.call("POST", "/explanations", body)
    assert accepted.status_code == 202, accepted.data
    assert accepted.data["estimated_seconds"] > 0.001
    assert _run_jobs() == [{"jobs": 1}]
    done = _job(http, accepted.data["job_id"])
    assert done["status"] == "succeeded" and done["result"]["algorithm"] == "kernel"
    _limits(monkeypatch, 0.001, 0.002)
    for request in ({**body, "seed": 1}, {**body, "seed": 2, "asynchronous": True}):
        refused = http.call("POST", "/explanations", request)
        assert refused.status_code == 422, refused.data
        assert "measured on the model" in refused.data["message"]
        assert refused.data["details"]["estimate"]["measured"] is True
    assert _drain_queue() == []


def test_asynchronous_requests_are_jobs_and_say_what_they_will_cost(
    http: Http, models: Models
) -> None:
    body = {
        "model_id": models.linear,
        "model_version": 1,
        "input_data": models.rows[5],
        "asynchronous": True,
    }
    accepted = http.call("POST", "/explanations", body)
    assert accepted.status_code == 202, accepted.data
    assert accepted.headers["Location"] == accepted.data["status_url"]
    # A measured estimate: positive and finite (how large depends on the machine, so no bound).
    estimate = accepted.data["estimated_seconds"]
    assert isinstance(estimate, int | float) and math.isfinite(estimate) and estimate > 0
    assert _run_jobs() == [{"jobs": 1}]
    assert _job(http, accepted.data["job_id"])["result"]["algorithm"] == "linear"
    # Now cached: a cached answer is immediate even when asked for asynchronously.
    again = http.call("POST", "/explanations", body)
    assert again.status_code == 200 and again.data["cached"] is True


# --- deadlines ----------------------------------------------------------------------------------
def _submit(http: Http, models: Models, rows: int = 2, samples: int = 2000) -> str:
    body = {
        "model_id": models.linear,
        "model_version": 1,
        "explanation_type": "lime",
        "inputs": models.rows[:rows],
        "num_samples": samples,
        "seed": int(time.time_ns() % 1_000_000),
        "asynchronous": True,
    }
    accepted = http.call("POST", "/explanations/batch", body)
    assert accepted.status_code == 202, accepted.data
    return accepted.data["job_id"]


def test_a_job_over_the_time_its_function_has_left_fails_at_once_with_the_reason(
    http: Http, models: Models
) -> None:
    job_id = _submit(http, models, rows=10, samples=20_000)
    assert _run_jobs(seconds=1.0) == [{"jobs": 1}]  # returned: the message is not redelivered
    failed = _job(http, job_id)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["error"] == "too_expensive" and failed["error"]["status"] == 422
    assert "the time this job has left" in failed["error"]["message"]
    limit = failed["error"]["details"]["limit_seconds"]
    assert 0 < limit <= 0.9  # what the function had left (at most 1 s) less the safety margin


def test_a_job_that_reaches_its_deadline_stops_and_records_why(
    http: Http, models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _submit(http, models)
    free = Estimate(0.0, 0, 0, 1, 0.0, 0.0, True, 0, "free")
    monkeypatch.setattr(planner_module.CostPlanner, "measured", lambda *a, **k: free)
    assert _run_jobs(seconds=0.0) == [{"jobs": 1}]
    failed = _job(http, job_id)
    assert failed["status"] == "failed" and failed["error"]["error"] == "deadline_exceeded"
    assert "deadline" in failed["error"]["message"]


def test_synchronous_work_that_reaches_its_deadline_is_finished_by_a_job(
    http: Http, models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.explainability import service as service_module

    free = Estimate(0.0, 0, 0, 1, 0.0, 0.0, True, 0, "free")
    monkeypatch.setattr(planner_module.CostPlanner, "measured", lambda *a, **k: free)
    monkeypatch.setattr(
        service_module,
        "sync_allowance",
        lambda limits: Allowance.lasting("sync", -1.0, 10.0, 240.0),
    )
    body = {"model_id": models.linear, "model_version": 1, "explanation_type": "lime"}
    body |= {"input_data": models.rows[7], "num_samples": 300}
    accepted = http.call("POST", "/explanations", body)
    assert accepted.status_code == 202, accepted.data
    assert accepted.data["estimated_seconds"] is None  # the estimate was not what stopped it
    monkeypatch.undo()
    assert _run_jobs() == [{"jobs": 1}]
    assert _job(http, accepted.data["job_id"])["status"] == "succeeded"


def test_a_job_whose_function_died_is_reported_failed_and_never_restarted_forever(
    http: Http, models: Models
) -> None:
    from datetime import datetime, timedelta, timezone

    from chalicelib.explainability.jobs import MAX_ATTEMPTS
    from chalicelib.explainability.repository import ExplanationRepository

    repository = ExplanationRepository()

    def now() -> datetime:
        return datetime.now(timezone.utc)

    # A live attempt holds the job: a redelivered message is skipped while its lease lasts.
    live = _submit(http, models)
    [message] = _drain_queue()
    assert repository.start_job(live, now(), now() + timedelta(hours=1))
    assert _worker(message) == {"jobs": 1}
    held = _job(http, live)
    assert (held["status"], held["attempts"]) == ("running", 1)
    # An attempt that died without a word: once its lease has passed the job reads as failed.
    died = _submit(http, models)
    _drain_queue()
    assert repository.start_job(died, now(), now() - timedelta(seconds=1))
    lost = _job(http, died)
    assert lost["status"] == "failed" and lost["error"]["error"] == "job_lost"
    # A job started MAX_ATTEMPTS times without finishing is not run again.
    other = _submit(http, models)
    [message] = _drain_queue()
    for _ in range(MAX_ATTEMPTS):
        assert repository.start_job(other, now(), now() - timedelta(seconds=1))
    assert _worker(message) == {"jobs": 1}
    gave_up = repository.get_job(other)
    assert gave_up.status == "failed" and gave_up.error["error"] == "job_lost"
    assert gave_up.result is None and gave_up.attempts == MAX_ATTEMPTS + 1


# --- the Lambda boundary ------------------------------------------------------------------------
class LoopbackLambda:
    """A Lambda client whose synchronous invoke runs the explanation function's handler here."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        from chalice.local import LambdaContext

        from chalicelib.explainability.handlers import explainer_function_handler

        event = json.loads(Payload)
        self.events.append(event)
        if InvocationType == "Event":
            return {"StatusCode": 202}
        context = LambdaContext(FunctionName, 3008, max_runtime_ms=300_000)
        answer = json.dumps(explainer_function_handler(event, context)).encode()
        return {"StatusCode": 200, "Payload": io.BytesIO(answer)}


@pytest.fixture
def remote(module_aws: Any) -> Iterator[LoopbackLambda]:
    """The API's service invoking the explanation function (the deployed backend)."""
    from chalicelib.explainability.service import (
        ExplanationService,
        LambdaBackend,
        build_service,
        get_explanation_service,
    )

    loopback = LoopbackLambda()
    local: ExplanationService = build_service("inprocess")
    remote_service = ExplanationService(
        local.model_loader,
        local.cache,
        local.jobs.repository,
        local.shap.event_bus,
        backend=LambdaBackend("explainer", loopback),
    )
    get_explanation_service.override(remote_service)
    yield loopback
    get_explanation_service.reset()


def test_the_explanation_function_hands_over_work_over_the_limit_and_keeps_the_apis_deadline(
    http: Http, models: Models, monkeypatch: pytest.MonkeyPatch, remote: LoopbackLambda
) -> None:
    body = {"model_id": models.mlp, "model_version": 1, "input_data": models.wide_rows[3]}
    body["background_sample_size"] = 300
    _limits(monkeypatch, 0.001, 1000.0)
    accepted = http.call("POST", "/explanations", body)
    assert accepted.status_code == 202, accepted.data
    [invoked] = remote.events
    assert invoked["operation"] == "explain" and invoked["allowance"]["mode"] == "sync"
    left = invoked["allowance"]["seconds_left"]  # the API's own deadline, carried over
    assert 0 < left <= 300
    _drain_queue()
    _limits(monkeypatch, 0.001, 0.002)
    refused = http.call("POST", "/explanations", {**body, "seed": 4})
    assert refused.status_code == 422 and refused.data["error"] == "too_expensive"
    assert refused.data["details"]["estimate"]["measured"] is True
    batch = {"model_id": models.linear, "model_version": 1, "inputs": models.rows[:60]}
    _limits(monkeypatch, 10.0, 240.0)
    queued = http.call("POST", "/explanations/batch", batch)
    assert queued.status_code == 202, queued.data
    assert remote.events[-1]["operation"] == "plan"  # measured where the model is
