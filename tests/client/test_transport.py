"""Retries with backoff on 429/503 and on connection failures of safe requests, and errors that
carry the API's code."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from synapse_client import (
    ApiError,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
)
from synapse_client.errors import error_for


class Scripted(BaseAdapter):
    """Answers from a script: ``(status, body, headers)`` tuples or exceptions, in order."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__()
        self.script = list(script)
        self.seen: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append(request)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        status, body, headers = step
        response = requests.Response()
        response.status_code = status
        response.headers = requests.structures.CaseInsensitiveDict(headers)
        if isinstance(body, bytes):  # a raw body (not the API's JSON)
            response._content = body
        else:
            response._content = b"" if body is None else json.dumps(body).encode()
        response.request = request
        return response

    def close(self) -> None:
        return None


def scripted(script: list[Any], **options: Any) -> tuple[Client, Scripted, list[float]]:
    client = Client("http://api.test", "snk_token", **options)
    slept: list[float] = []
    client.transport._sleep = slept.append
    adapter = Scripted(script)
    client.transport.session.mount("http://api.test", adapter)
    return client, adapter, slept


def test_503_and_429_are_retried_with_growing_jittered_delays_then_succeed() -> None:
    busy = (503, {"error": "service_unavailable", "message": "try again"}, {})
    client, adapter, slept = scripted([busy, (429, {}, {}), busy, (200, {"status": "ok"}, {})])

    assert client.health() == {"status": "ok"}
    assert len(adapter.seen) == 4 and len(slept) == 3
    assert slept[0] <= 0.25 and slept[1] <= 0.5 and slept[2] <= 1.0


def test_retry_after_is_honoured_and_capped() -> None:
    client, _, slept = scripted([(429, {}, {"Retry-After": "3"}), (429, {}, {"Retry-After": "999"}),
                                 (200, {}, {})])  # fmt: skip
    client.health()
    assert slept == [3.0, 8.0]


def test_a_retry_after_that_is_not_a_number_of_seconds_falls_back_to_the_backoff() -> None:
    script = [(429, {}, {"Retry-After": "nan"}), (503, {}, {"Retry-After": "-inf"}), (200, {}, {})]
    client, _, slept = scripted(script)
    client.health()
    assert len(slept) == 2 and 0 <= slept[0] <= 0.25 and slept[1] == 0.0


def test_a_server_that_answers_something_other_than_json_is_a_transport_error() -> None:
    page = b"<!doctype html><title>Welcome to nginx</title>"
    client, _, _ = scripted([(200, page, {"Content-Type": "text/html"})])
    with pytest.raises(TransportError, match="not JSON"):
        client.list_datasets()


def test_a_503_that_persists_raises_with_the_apis_code_after_the_retries() -> None:
    busy = (503, {"error": "service_unavailable", "message": "dynamodb down"}, {})
    client, adapter, _ = scripted([busy] * 3, retries=2)

    with pytest.raises(ServiceUnavailable) as raised:
        client.list_models()
    assert len(adapter.seen) == 3
    assert (raised.value.status, raised.value.code) == (503, "service_unavailable")
    assert "dynamodb down" in str(raised.value) and raised.value.path == "/models"


def test_connection_failures_are_retried_for_safe_requests_only() -> None:
    down = requests.ConnectionError("refused")
    client, adapter, _ = scripted([down, (200, {"models": []}, {})])
    assert client.list_models() == {"models": []}

    client, adapter, _ = scripted([down])
    with pytest.raises(TransportError):
        client.create_model("m")  # a POST that is not idempotent is never repeated blindly
    assert len(adapter.seen) == 1

    client, adapter, _ = scripted([down, (200, {"accepted": 1, "duplicates": 0}, {})])
    receipt = client.record_outcomes("exp-1", [{"variant_id": "a", "request_id": "r"}])
    assert receipt["accepted"] == 1 and len(adapter.seen) == 2  # keyed by request ids


def test_a_response_cut_off_mid_body_is_a_transport_error_and_an_outcome_batch_is_kept() -> None:
    from synapse_client.local import OutcomeBuffer

    cut = requests.exceptions.ChunkedEncodingError("connection broken: IncompleteRead")
    client, adapter, _ = scripted([cut, (200, {"models": []}, {})])
    assert client.list_models() == {"models": []}  # a safe request is repeated

    client, adapter, _ = scripted([cut])
    with pytest.raises(TransportError):
        client.create_model("m")
    assert len(adapter.seen) == 1

    client, adapter, _ = scripted([cut] * 5 + [(200, {"accepted": 2, "duplicates": 0}, {})])
    buffer = OutcomeBuffer(client, "exp-1", batch_size=10, flush_seconds=None)
    buffer.record("r-1", "control", success=True, latency_ms=1.0)
    buffer.record("r-2", "control", success=True, latency_ms=1.0)
    assert buffer.flush(raise_errors=False) == 0 and buffer.pending == 2  # kept, not lost
    assert buffer.flush() == 2 and buffer.accepted == 2


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequest), (401, Unauthorized), (404, NotFound), (409, Conflict),
     (429, RateLimited), (500, ServerError), (418, ApiError)],
)  # fmt: skip
def test_each_error_status_has_its_exception_with_the_apis_code(status: int, cls: type) -> None:
    error = error_for(status, {"error": "some_code", "message": "why", "details": [1]}, "GET", "/x")
    assert type(error) is cls
    assert (error.code, error.message, error.details) == ("some_code", "why", {"details": [1]})
    plain = error_for(status, "<html>gateway</html>")
    assert plain.code == f"http_{status}" and "gateway" in plain.message


def test_requests_carry_the_token_json_and_query_without_none_values() -> None:
    client, adapter, _ = scripted([(200, {"versions": []}, {}), (200, {}, {})])
    client.list_versions("ds 1/x", limit=5, as_of=None)
    client.route("exp-1", request_id="r-1", sticky=False)
    listing, routed = adapter.seen
    assert listing.url == "http://api.test/datasets/ds%201%2Fx/versions?limit=5"
    assert listing.headers["Authorization"] == "Bearer snk_token"
    assert json.loads(routed.body) == {"request_id": "r-1", "sticky": False}
    assert routed.headers["Content-Type"] == "application/json"
