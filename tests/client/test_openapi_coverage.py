"""The client cannot drift from the API: every route in ``GET /openapi.json`` has exactly one
client method whose signature matches it, and every client method names a real route."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from synapse_client import Client
from synapse_client.operations import declared
from tests.conftest import Http


@pytest.fixture
def document(http: Http) -> dict[str, Any]:
    answer = http.call("GET", "/openapi.json")
    assert answer.status_code == 200
    return answer.data


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _body_fields(operation: dict[str, Any], document: dict[str, Any]) -> tuple[set, set]:
    """(every property, required properties) of the JSON body (the union over ``anyOf``)."""
    if "requestBody" not in operation:
        return set(), set()
    schema = _resolve(operation["requestBody"]["content"]["application/json"]["schema"], document)
    branches = [_resolve(s, document) for s in schema.get("anyOf", [schema])]
    fields = {name for branch in branches for name in branch.get("properties", {})}
    required = set.intersection(*(set(b.get("required", [])) for b in branches))
    return fields, required


def _problems(key: tuple[str, str], operation: dict[str, Any], spec: Any, func: Any,
              document: dict[str, Any]) -> list[str]:  # fmt: skip
    params = inspect.signature(func).parameters
    named = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD and n != "self"}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    where = {p["name"]: p for p in operation.get("parameters", [])}
    path_names = {n for n, p in where.items() if p["in"] == "path"}
    query = {n: p.get("required", False) for n, p in where.items() if p["in"] == "query"}
    body, body_required = _body_fields(operation, document)
    problems = [f"{key}: path parameter {n} missing" for n in path_names - named]
    problems += [f"{key}: required field {n} missing" for n in body_required - named]
    problems += [f"{key}: required query {n} missing" for n, req in query.items()
                 if req and n not in named]  # fmt: skip
    if getattr(func, "__synapse_register_only__", False):  # a hand-written body, e.g. outcomes
        return problems  # as batches only (a batch of one is the single form)
    optional = (body | set(query)) - named
    if optional and not var_kw:
        problems.append(f"{key}: fields {sorted(optional)} unreachable (no **options)")
    if spec.send is not None:
        unknown = named - path_names - body - set(query)
        problems += [f"{key}: parameter {n} is not a field of the route" for n in unknown]
        expected = "body" if body or "requestBody" in operation else "query"
        if (body or query) and spec.send != expected:
            problems.append(
                f"{key}: parameters go to the {spec.send}, the route reads the {expected}"
            )
    return problems


def test_every_route_has_a_client_method_and_every_method_a_route(
    document: dict[str, Any],
) -> None:
    routes = set(_operations(document))
    methods = set(declared(Client("http://unused")))
    assert routes - methods == set(), "routes without a client method (add one to client.py)"
    assert methods - routes == set(), "client methods whose route the server does not have"


def test_every_client_method_signature_matches_its_route(document: dict[str, Any]) -> None:
    methods = declared(Client("http://unused"))
    problems = []
    for key, operation in _operations(document).items():
        spec, func = methods[key]
        problems += _problems(key, operation, spec, func, document)
    assert problems == []


def test_the_coverage_check_notices_a_missing_route_parameter_and_an_unknown_field(
    document: dict[str, Any],
) -> None:
    operation = _operations(document)[("POST", "/experiments/{experiment_id}/rollback")]

    class Spec:
        send = "body"

    def without_reason(self: Any, experiment_id: str) -> None: ...
    def with_typo(self: Any, experiment_id: str, reason: str, reasn: str = "") -> None: ...
    def no_path(self: Any, reason: str) -> None: ...

    key = ("POST", "/experiments/{experiment_id}/rollback")
    assert _problems(key, operation, Spec, without_reason, document) != []
    assert _problems(key, operation, Spec, with_typo, document) != []
    assert _problems(key, operation, Spec, no_path, document) != []
