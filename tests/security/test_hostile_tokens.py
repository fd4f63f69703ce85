"""Tokens: every malformed bearer value is a 401 (never a 400 or a DynamoDB lookup), and no
token, query-string credential or presigned signature is ever written to a log line, in the
app's structured log (deployed) or in the local stack's request logs (``make run``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from chalicelib.core.observability import logger, redact
from tests.conftest import Http, Tokens
from tests.security.helpers import dataset

MALFORMED = [
    "snk___",
    "snk__",
    "snk__secret-part-long-enough",
    "snk_",
    "snk_x",
    "snk_" + "a" * 100 + "_secret",  # a key id longer than any key id
    "snk_a/b_secret-part-long-enough",
    "snk_" + "0" * 16 + "_" + "s" * 600,  # longer than any token
    "x" * 10_000,
    "snk_0123456789abcdef_sécret",  # not ASCII
    "snk_0123456789abcdef_se\x01cret",  # a control character
    "snk_0123456789abcdef_se cret",  # a space inside
]


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Key ids the auth service asked DynamoDB for."""
    from chalicelib.auth.repository import ApiKeyRepository

    asked: list[str] = []
    original = ApiKeyRepository.get

    def get(self: Any, key_id: str) -> Any:
        asked.append(key_id)
        return original(self, key_id)

    monkeypatch.setattr(ApiKeyRepository, "get", get)
    return asked


@pytest.mark.parametrize("token", MALFORMED, ids=range(len(MALFORMED)))
def test_every_malformed_bearer_value_is_401_without_a_lookup(
    module_http: Http, lookups: list[str], token: str
) -> None:
    response = module_http.call("GET", "/auth/whoami", token=token)
    assert response.status_code == 401, response.data
    assert response.data == {"error": "unauthorized", "message": "invalid API token"}
    assert lookups == []


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer     ", "Basic dXNlcjpwYXNz", "bearer", "Token abc", ""],
)
def test_a_missing_or_foreign_scheme_is_401(module_http: Http, header: str) -> None:
    client = module_http.client
    headers = {"Authorization": header} if header else {}
    response = client.http.get("/auth/whoami", headers=headers)
    assert response.status_code == 401, response.body


def test_well_formed_tokens_still_work(module_http: Http, module_tokens: Tokens) -> None:
    from chalicelib.auth.service import get_auth_service

    seeded = "snk_local.admin-1_" + "s" * 32  # the shape a SYNAPSE_ADMIN_TOKEN may have
    get_auth_service().ensure_key(seeded, "seeded", ["reader"])
    for token in (module_tokens.reader, seeded, "plain-token-of-another-shape-123"):
        if token.startswith("plain"):
            get_auth_service().ensure_key(token, "plain", ["reader"])
        response = module_http.call("GET", "/auth/whoami", token=token)
        assert response.status_code == 200, response.data
    wrong_secret = module_tokens.reader[:-2] + "zz"
    assert module_http.call("GET", "/auth/whoami", token=wrong_secret).status_code == 401


def test_a_malformed_token_cannot_be_seeded(module_aws: Any) -> None:
    from chalicelib.auth.service import get_auth_service
    from chalicelib.core.errors import ValidationError

    for token in ("snk___" + "x" * 20, "snk_a b_" + "x" * 20, "t" * 600):
        with pytest.raises(ValidationError, match="malformed token"):
            get_auth_service().create_key("p", ["reader"], token=token)


# ---- nothing secret in the app's log ---------------------------------------------------------


class Capture(logging.Handler):
    """Every record of the app's structured logger, formatted as it is written."""

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


def signature_values(url: str) -> list[str]:
    """The credential parts of a presigned URL."""
    query = dict(parse_qsl(urlsplit(url).query))
    return [query[name] for name in ("X-Amz-Signature", "X-Amz-Credential") if name in query]


def test_query_string_tokens_and_presigned_urls_never_reach_the_app_log(
    module_http: Http, module_tokens: Tokens, captured: Capture
) -> None:
    token = module_tokens.writer
    secret = token.split("_", 2)[-1]
    refused = module_http.call("GET", f"/auth/whoami?access_token={token}", token="")
    assert refused.status_code == 401
    module_http.call("GET", f"/auth/whoami?token={token}&x={secret}")
    dataset_id = dataset(module_http)
    upload = module_http.call("POST", f"/datasets/{dataset_id}/uploads", {"filename": "a.csv"})
    assert upload.status_code == 201, upload.data
    signatures = signature_values(upload.data["url"])
    assert signatures
    logger.info("a line naming %s", upload.data["url"])  # even a line that names one
    logger.warning("header was Bearer %s", token)
    assert captured.lines, "nothing was logged: the capture is not wired"
    text = "\n".join(captured.lines)
    for value in [token, secret, *signatures]:
        assert value not in text
    assert "X-Amz-Signature=***" in text and "Bearer ***" in text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /a?access_token=snk_k_s HTTP/1.1", "GET /a?access_token=*** HTTP/1.1"),
        (
            "/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ab12",
            "/k?X-Amz-Credential=***&X-Amz-Signature=***",
        ),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("token snk_0123abcd_S3cr-et_x in text", "token snk_*** in text"),
        ("no secrets here: a=b", "no secrets here: a=b"),
    ],
)
def test_redaction_keeps_names_and_drops_values(line: str, expected: str) -> None:
    assert redact(line) == expected
