"""The local stack (``make run``) writes request lines for the API and for moto: a token sent in
a query string, and the signature of a presigned URL, never appear in them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from tests.reliability.stack import Api, running_stack

pytestmark = pytest.mark.e2e


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    with running_stack(run_schedules=False, run_pumps=False) as running:
        yield running


@pytest.fixture
def request_logs(stack: Any) -> Iterator[Capture]:
    """Every record of the request-line loggers, at INFO (as a developer may run them)."""
    from synapse_local.stack import REDACTED_LOGGERS

    handler = Capture()
    root = logging.getLogger()
    root.addHandler(handler)
    levels = {name: logging.getLogger(name).level for name in REDACTED_LOGGERS}
    for name in REDACTED_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_a_query_string_token_is_refused_and_not_in_the_request_log(
    stack: Any, request_logs: Capture
) -> None:
    token = stack.admin_token
    refused = requests.get(f"{stack.url}/auth/whoami?access_token={token}", timeout=30)
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    lines = [line for line in request_logs.lines if "/auth/whoami" in line]
    assert lines, request_logs.lines  # the request line was logged...
    assert "access_token=***" in lines[0]
    assert all(token not in line for line in request_logs.lines)  # ...without the token


def test_presigned_signatures_are_not_in_moto_or_app_logs(
    stack: Any, request_logs: Capture
) -> None:
    api = Api(stack.url, stack.admin_token, requests.Session())
    created = api.call("POST", "/datasets", {"name": "logs", "format": "csv"})
    assert created.status_code == 201, created.text
    dataset_id = created.json()["dataset_id"]
    upload = api.call("POST", f"/datasets/{dataset_id}/uploads", {"filename": "a.csv"}).json()
    sent = requests.put(upload["url"], data=b"a,b\n1,2\n", timeout=30)
    assert sent.status_code == 200, sent.text
    query = dict(parse_qsl(urlsplit(upload["url"]).query))
    secrets = [query["X-Amz-Signature"], query["X-Amz-Credential"], stack.admin_token]
    moto_lines = [line for line in request_logs.lines if line.startswith("werkzeug")]
    assert any("X-Amz-Signature=***" in line for line in moto_lines), request_logs.lines
    for secret in secrets:
        assert all(secret not in line for line in request_logs.lines)
