"""Every declared route enforces its role: no token → 401, too small a role → 403.

The matrix is built from the route declarations, so a new route is covered automatically. The
requests are refused before any handler runs, so one AWS serves the whole module.
"""

from __future__ import annotations

import re

import pytest

from chalicelib.core.http import ROUTES, RouteSpec
from tests.conftest import Http, Tokens


def _routes() -> list[RouteSpec]:
    import app  # noqa: F401 - registers every blueprint

    return list(ROUTES)


def _path(spec: RouteSpec) -> str:
    return re.sub(r"{[^}]+}", "x1", spec.path)


def _id(spec: RouteSpec) -> str:
    return f"{spec.method} {spec.path}"


PROTECTED = [spec for spec in _routes() if spec.role is not None]
WRITE_ROUTES = [spec for spec in PROTECTED if spec.role in {"writer", "admin"}]
ADMIN_ROUTES = [spec for spec in PROTECTED if spec.role == "admin"]


@pytest.mark.parametrize("spec", PROTECTED, ids=_id)
def test_no_token_is_401(module_http: Http, spec: RouteSpec) -> None:
    response = module_http.call(spec.method, _path(spec), {} if spec.body else None, token="")
    assert response.status_code == 401, response.data
    assert response.data["error"] == "unauthorized"


@pytest.mark.parametrize("spec", PROTECTED, ids=_id)
def test_revoked_token_is_401(module_http: Http, spec: RouteSpec) -> None:
    from chalicelib.auth.service import get_auth_service

    issued = get_auth_service().create_key("gone", ["admin"])
    get_auth_service().revoke_key(issued.key.key_id)
    body = {} if spec.body else None
    response = module_http.call(spec.method, _path(spec), body, token=issued.token)
    assert response.status_code == 401, response.data
    assert response.data["error"] == "unauthorized"


@pytest.mark.parametrize("spec", WRITE_ROUTES, ids=_id)
def test_reader_cannot_write(module_http: Http, module_tokens: Tokens, spec: RouteSpec) -> None:
    body = {} if spec.body else None
    response = module_http.call(spec.method, _path(spec), body, token=module_tokens.reader)
    assert response.status_code == 403, response.data
    assert response.data["error"] == "forbidden"


@pytest.mark.parametrize("spec", ADMIN_ROUTES, ids=_id)
def test_writer_cannot_administer(
    module_http: Http, module_tokens: Tokens, spec: RouteSpec
) -> None:
    body = {} if spec.body else None
    response = module_http.call(spec.method, _path(spec), body, token=module_tokens.writer)
    assert response.status_code == 403, response.data
    assert response.data["error"] == "forbidden"


def test_public_routes_are_only_health_and_openapi() -> None:
    public = {spec.path for spec in _routes() if spec.role is None}
    assert public == {"/health", "/openapi.json"}
