"""Builds the OpenAPI 3.1 document from the routes declared with :class:`ApiBlueprint`."""

from __future__ import annotations

import re
from typing import Any

from chalicelib.core.http import ROUTES, RouteSpec

REF_TEMPLATE = "#/components/schemas/{model}"

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "details": {},
    },
}

_STATUS_TEXT = {
    400: "Invalid input",
    401: "Missing or invalid credentials",
    403: "Not allowed",
    404: "Unknown id",
    409: "Conflict or wrong state",
    413: "Payload too large",
    422: "Semantically invalid",
    503: "A dependency failed; nothing changed",
}


def _schema(schema: Any, components: dict[str, Any]) -> dict[str, Any]:
    from pydantic import TypeAdapter

    generated = TypeAdapter(schema).json_schema(ref_template=REF_TEMPLATE, mode="serialization")
    for name, definition in generated.pop("$defs", {}).items():
        components[name] = definition
    title = generated.get("title")
    if generated.get("type") == "object" and title and "properties" in generated:
        components[title] = generated
        return {"$ref": REF_TEMPLATE.format(model=title)}
    return generated


def _input_schema(schema: Any, components: dict[str, Any]) -> dict[str, Any]:
    from pydantic import TypeAdapter

    generated = TypeAdapter(schema).json_schema(ref_template=REF_TEMPLATE, mode="validation")
    for name, definition in generated.pop("$defs", {}).items():
        components.setdefault(name, definition)
    return generated


def _query_parameters(spec: RouteSpec, components: dict[str, Any]) -> list[dict[str, Any]]:
    if spec.query is None:
        return []
    schema = _input_schema(spec.query, components)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _path_parameters(spec: RouteSpec) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{([^}]+)}", spec.path)
    ]


def _error_statuses(spec: RouteSpec) -> list[int]:
    statuses = [400, 413, 503]
    if spec.role is not None:
        statuses += [401, 403]
    if "{" in spec.path:
        statuses.append(404)
    if spec.method in {"POST", "PUT", "DELETE", "PATCH"}:
        statuses += [409, 422]
    return sorted(set(statuses))


def _responses(spec: RouteSpec, components: dict[str, Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "Success"}
    if spec.status != 204:
        body = _schema(spec.response, components) if spec.response is not None else {}
        ok["content"] = {"application/json": {"schema": body}}
    responses: dict[str, Any] = {str(spec.status): ok}
    for status, text in spec.extra_responses.items():
        responses[str(status)] = {
            "description": text,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    for status in _error_statuses(spec):
        responses.setdefault(
            str(status),
            {
                "description": _STATUS_TEXT[status],
                "content": {
                    "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="Error")}}
                },
            },
        )
    return responses


def _operation(spec: RouteSpec, components: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": spec.name,
        "summary": spec.summary,
        "tags": [spec.tag],
        "parameters": _path_parameters(spec) + _query_parameters(spec, components),
        "responses": _responses(spec, components),
    }
    if spec.description and spec.description != spec.summary:
        operation["description"] = spec.description
    if spec.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _input_schema(spec.body, components)}},
        }
    operation["security"] = [] if spec.role is None else [{"bearerAuth": []}]
    if spec.role is not None:
        operation["x-required-role"] = spec.role
    return operation


def build_openapi(title: str = "SynapseNet Serverless", version: str = "1.0.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document for every declared route."""
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for spec in ROUTES:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }
