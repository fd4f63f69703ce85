"""The foundation over HTTP: health, OpenAPI, auth and the error contract."""

from __future__ import annotations

from typing import Any

from tests.conftest import Http, Tokens


def test_health_needs_no_token(http: Http) -> None:
    response = http.call("GET", "/health", token="")
    assert response.status_code == 200
    assert response.data["status"] == "ok"


def test_openapi_lists_every_route(http: Http) -> None:
    import app as app_module

    doc = http.call("GET", "/openapi.json", token="").data
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    declared = {(path, method) for path, entry in app_module.app.routes.items() for method in entry}
    static = {("/console", "GET"), ("/console/{asset}", "GET")}  # the web console's files
    assert declared - static == documented and static <= declared


def test_missing_token_is_401(http: Http) -> None:
    response = http.call("GET", "/auth/whoami", token="")
    assert response.status_code == 401
    assert response.data["error"] == "unauthorized"


def test_bad_token_is_401(http: Http) -> None:
    response = http.call("GET", "/auth/whoami", token="snk_nope_nothing-here-at-all")
    assert response.status_code == 401


def test_revoked_token_is_401(http: Http, tokens: Tokens) -> None:
    created = http.call(
        "POST", "/auth/keys", {"principal": "temp", "roles": ["reader"]}, token=tokens.admin
    )
    assert created.status_code == 201
    assert http.call("GET", "/auth/whoami", token=created.data["token"]).status_code == 200
    revoked = http.call("DELETE", f"/auth/keys/{created.data['key_id']}", token=tokens.admin)
    assert revoked.status_code == 204
    response = http.call("GET", "/auth/whoami", token=created.data["token"])
    assert response.status_code == 401
    assert "revoked" in response.data["message"]


def test_admin_lists_every_key_without_its_secret(http: Http, tokens: Tokens) -> None:
    response = http.call("GET", "/auth/keys", token=tokens.admin)
    assert response.status_code == 200
    keys = response.data["keys"]
    assert sorted(k["principal"] for k in keys) == ["admin", "alice", "bob", "rita"]
    by_principal = {k["principal"]: k for k in keys}
    assert by_principal["alice"]["roles"] == ["writer"] and by_principal["alice"]["groups"] == [
        "ml"
    ]
    issued = {getattr(tokens, role) for role in ("admin", "writer", "reader", "other_writer")}
    assert {k["key_id"] for k in keys} == {token.split("_", 2)[1] for token in issued}
    text = response.body if isinstance(response.body, str) else response.body.decode()
    assert not any(token.split("_", 2)[2] in text for token in issued)


def test_non_admin_cannot_create_keys(http: Http, tokens: Tokens) -> None:
    response = http.call(
        "POST", "/auth/keys", {"principal": "x", "roles": ["admin"]}, token=tokens.writer
    )
    assert response.status_code == 403
    assert response.data["error"] == "forbidden"


def test_invalid_body_is_400_naming_the_field(http: Http, tokens: Tokens) -> None:
    response = http.call(
        "POST", "/auth/keys", {"principal": "x", "roles": ["king"]}, token=tokens.admin
    )
    assert response.status_code == 400
    assert "roles" in response.data["message"]


def test_malformed_json_is_400(http: Http, tokens: Tokens) -> None:
    response = http.call("POST", "/auth/keys", "{not json", token=tokens.admin)
    assert response.status_code == 400
    assert response.data["error"] == "invalid_request"


def test_unknown_key_is_404(http: Http, tokens: Tokens) -> None:
    response = http.call("DELETE", "/auth/keys/doesnotexist", token=tokens.admin)
    assert response.status_code == 404
    assert response.data["error"] == "not_found"


def test_oversized_body_is_413(http: Http, tokens: Tokens, monkeypatch: Any) -> None:
    monkeypatch.setenv("SYNAPSE_MAX_BODY_BYTES", "100")
    response = http.call(
        "POST", "/auth/keys", {"principal": "x" * 200, "roles": ["reader"]}, token=tokens.admin
    )
    assert response.status_code == 413


def test_whoami_reports_roles_and_groups(http: Http, tokens: Tokens) -> None:
    response = http.call("GET", "/auth/whoami", token=tokens.reader)
    assert response.data == {
        "principal": "rita",
        "key_id": response.data["key_id"],
        "roles": ["reader"],
        "groups": ["ml"],
    }


def test_wrong_content_type_gets_our_error_shape(client: Any, tokens: Tokens) -> None:
    import json

    response = client.http.post(
        "/auth/keys",
        headers={"Authorization": f"Bearer {tokens.admin}", "Content-Type": "text/plain"},
        body="hello",
    )
    assert response.status_code == 415
    assert json.loads(response.body) == {
        "error": "unsupported_media_type",
        "message": "Unsupported media type: text/plain",
    }


def test_wrong_method_gets_our_error_shape(client: Any) -> None:
    import json

    response = client.http.delete("/health")
    assert response.status_code == 405
    assert json.loads(response.body)["error"] == "method_not_allowed_error"
