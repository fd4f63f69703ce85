"""Builds the OpenAPI 3.1 document from the routes declared with :class:`ApiBlueprint`."""

from __future__ import annotations

import json
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
    410: "Deleted (a dataset version's tombstone)",
    413: "Payload too large",
    422: "Semantically invalid",
    503: "A dependency failed; nothing changed",
}


def _ref(name: str) -> str:
    return REF_TEMPLATE.format(model=name)


def _register(generated: dict[str, Any], components: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Moves ``$defs`` into ``components``, renaming a definition whose name is taken by a
    different schema (two packages may both have a ``VersionOut``) and rewriting its refs."""
    defs = generated.pop("$defs", {})
    renames: dict[str, str] = {}
    for name, definition in defs.items():
        if components.get(name, definition) == definition:
            continue
        candidate, index = f"{prefix}{name}", 2
        while components.get(candidate, definition) != definition:
            candidate, index = f"{prefix}{name}{index}", index + 1
        renames[name] = candidate
    if renames:
        text = json.dumps({"schema": generated, "defs": defs})
        for old, new in renames.items():
            text = text.replace(json.dumps(_ref(old)), json.dumps(_ref(new)))
        rewritten = json.loads(text)
        generated, defs = rewritten["schema"], rewritten["defs"]
    for name, definition in defs.items():
        components.setdefault(renames.get(name, name), definition)
    return generated


def _prefix(spec: RouteSpec) -> str:
    return "".join(part.title() for part in re.split(r"[^A-Za-z0-9]+", spec.tag) if part)


def _schema(schema: Any, components: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    from pydantic import TypeAdapter

    generated = TypeAdapter(schema).json_schema(ref_template=REF_TEMPLATE, mode="serialization")
    title = generated.get("title")
    if generated.get("type") == "object" and title and "properties" in generated:
        # The response model itself becomes a component, under the same collision rule.
        body = {k: v for k, v in generated.items() if k != "$defs"}
        wrapped = {"$ref": _ref(title), "$defs": {**generated.get("$defs", {}), title: body}}
        return _register(wrapped, components, prefix)
    return _register(generated, components, prefix)


def _input_schema(schema: Any, components: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    from pydantic import TypeAdapter

    generated = TypeAdapter(schema).json_schema(ref_template=REF_TEMPLATE, mode="validation")
    return _register(generated, components, prefix)


def _query_parameters(spec: RouteSpec, components: dict[str, Any]) -> list[dict[str, Any]]:
    if spec.query is None:
        return []
    schema = _input_schema(spec.query, components, _prefix(spec))
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
    if "{" in spec.path or spec.body is not None or spec.query is not None:
        # an id in the path, the body or the query may be unknown, or name a deleted version
        statuses += [404, 410]
    if spec.method in {"POST", "PUT", "DELETE", "PATCH"}:
        statuses += [409, 422]
    return sorted(set(statuses))


def _responses(spec: RouteSpec, components: dict[str, Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "Success"}
    if spec.status != 204:
        body = _schema(spec.response, components, _prefix(spec)) if spec.response else {}
        ok["content"] = {"application/json": {"schema": body}}
    responses: dict[str, Any] = {str(spec.status): ok}
    for status, text in spec.extra_responses.items():
        responses[str(status)] = {"description": text}
        if status not in (204, 304):  # these two have no body
            responses[str(status)]["content"] = {"application/json": {"schema": {"type": "object"}}}
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
            "content": {
                "application/json": {"schema": _input_schema(spec.body, components, _prefix(spec))}
            },
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
