"""Tokens and artifact bytes never reach the logs, whatever the request does.

The Powertools logger is switched to DEBUG and every record emitted while requests run (success,
validation error, auth failure, dependency failure, unhandled error) is captured and searched
for the bearer token, the token's secret part and the base64 artifact (and a slice of it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.core.observability import logger
from tests.conftest import Http, Tokens
from tests.helpers.models import skops_artifact
from tests.reliability.faults import inject_faults
from tests.security.helpers import model


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        formatter = logger.registered_formatter
        self.lines.append(formatter.format(record) if formatter else record.getMessage())


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    target = logger._logger
    old_level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    yield handler
    target.removeHandler(handler)
    target.setLevel(old_level)


def _secrets(token: str, artifact_b64: str) -> list[str]:
    secret = token.split("_", 2)[-1]
    middle = artifact_b64[len(artifact_b64) // 2 : len(artifact_b64) // 2 + 40]
    return [token, secret, artifact_b64[:60], middle]


def _assert_clean(captured: Capture, secrets: list[str]) -> None:
    assert captured.lines, "nothing was logged: the capture is not wired"
    text = "\n".join(captured.lines)
    for secret in secrets:
        assert secret not in text


def _register_body(artifact_b64: str, **extra: Any) -> dict[str, Any]:
    return {
        "artifact_base64": artifact_b64,
        "task": "classification",
        "feature_names": ["f0", "f1", "f2"],
        **extra,
    }


def test_successful_and_refused_requests_log_no_secrets(
    module_http: Http, module_tokens: Tokens, captured: Capture
) -> None:
    artifact = skops_artifact()
    token = module_tokens.writer
    model_id = model(module_http, token=token)
    calls = [
        ("POST", f"/models/{model_id}/versions", _register_body(artifact)),
        ("POST", f"/models/{model_id}/versions", _register_body(artifact, format="pickle")),
        ("POST", f"/models/{model_id}/versions", _register_body(artifact, task="nope")),
        ("POST", f"/models/{model_id}/versions", _register_body(artifact[:-3] + "!!!")),
        ("POST", "/models/unknown/versions", _register_body(artifact)),
        ("POST", f"/models/{model_id}/versions/1/stage", {"stage": "production"}),
        ("GET", "/auth/keys", None),  # 403 for a writer
    ]
    for method, path, body in calls:
        module_http.call(method, path, body, token=token)
    module_http.call("GET", "/auth/whoami", token=token + "x")  # invalid token: 401
    module_http.call("GET", "/auth/whoami", token=token.upper())
    _assert_clean(captured, _secrets(token, artifact))


def test_dependency_failures_log_no_secrets(
    module_http: Http, module_tokens: Tokens, captured: Capture
) -> None:
    artifact = skops_artifact()
    token = module_tokens.writer
    model_id = model(module_http, token=token)
    with inject_faults() as faults:
        faults.fail("s3", "PutObject", kind="5xx")
        faults.fail("eventbridge", "PutEvents", kind="5xx")
        response = module_http.call(
            "POST", f"/models/{model_id}/versions", _register_body(artifact), token=token
        )
        assert response.status_code == 503
    assert any("dependency failed" in line for line in captured.lines)
    _assert_clean(captured, _secrets(token, artifact))


def test_an_unhandled_error_logs_no_secrets(
    module_http: Http,
    module_tokens: Tokens,
    captured: Capture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chalicelib.registry import service

    artifact = skops_artifact()
    token = module_tokens.writer
    model_id = model(module_http, token=token)

    def broken(data: bytes) -> list[str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "check_artifact", broken)
    response = module_http.call(
        "POST", f"/models/{model_id}/versions", _register_body(artifact), token=token
    )
    assert response.status_code == 500
    assert any("unhandled error" in line for line in captured.lines)
    _assert_clean(captured, _secrets(token, artifact))
