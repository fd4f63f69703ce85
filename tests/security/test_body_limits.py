"""Every route that takes a body refuses one over ``SYNAPSE_MAX_BODY_BYTES`` with 413."""

from __future__ import annotations

import json
import re

import pytest

from chalicelib.core.http import ROUTES, RouteSpec
from tests.conftest import Http, Tokens


def _routes() -> list[RouteSpec]:
    import app  # noqa: F401 - registers every blueprint

    return [spec for spec in ROUTES if spec.method in {"POST", "PUT", "PATCH"}]


def _path(spec: RouteSpec) -> str:
    return re.sub(r"{[^}]+}", "x1", spec.path)


@pytest.mark.parametrize("spec", _routes(), ids=lambda s: f"{s.method} {s.path}")
def test_an_oversized_body_is_413_before_anything_else(
    module_http: Http, module_tokens: Tokens, spec: RouteSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_MAX_BODY_BYTES", "4096")
    body = json.dumps({"padding": "x" * 5000})
    response = module_http.call(spec.method, _path(spec), body, token=module_tokens.admin)
    assert response.status_code == 413, response.data
    assert response.data["error"] == "payload_too_large"


def test_a_body_at_the_limit_is_not_refused_for_its_size(
    module_http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps({"name": "n" * 100, "description": ""})
    monkeypatch.setenv("SYNAPSE_MAX_BODY_BYTES", str(len(body.encode())))
    assert module_http.call("POST", "/models", body).status_code == 201


def test_the_default_limit_refuses_a_body_over_six_megabytes(module_http: Http) -> None:
    body = json.dumps({"name": "big", "description": "d" * (6 * 1024 * 1024)})
    response = module_http.call("POST", "/models", body)
    assert response.status_code == 413, response.data
