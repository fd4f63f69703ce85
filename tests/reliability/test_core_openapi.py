"""The OpenAPI document stays truthful when packages reuse model names, and documents the 404
that an unknown id in a body or query produces."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import BaseModel, create_model

from chalicelib.core import openapi
from chalicelib.core.http import ROUTES, RouteSpec


def _refs(node: Any) -> set[str]:
    text = json.dumps(node)
    return set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text))


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in schema:
        return schema  # inlined
    name = schema["$ref"].rsplit("/", 1)[1]
    return doc["components"]["schemas"][name]


def _twins() -> tuple[type[BaseModel], type[BaseModel]]:
    """Two models with the same class name and different fields (as in two packages)."""
    inner_a = create_model("Item", a=(int, ...))
    inner_b = create_model("Item", b=(str, ...))
    first = create_model("VersionOut", version=(int, ...), item=(inner_a, ...))
    second = create_model("VersionOut", version_id=(str, ...), item=(inner_b, ...))
    return first, second


def test_models_with_the_same_name_get_distinct_components(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _twins()
    routes = [
        RouteSpec("/models/{m}", "GET", "get_a", "reader", response=first, tag="models"),
        RouteSpec("/datasets/{d}", "GET", "get_b", "reader", response=second, tag="datasets"),
        RouteSpec("/datasets", "POST", "post_b", "writer", body=second, tag="datasets"),
    ]
    monkeypatch.setattr(openapi, "ROUTES", routes)
    doc = openapi.build_openapi()
    ok_a = doc["paths"]["/models/{m}"]["get"]["responses"]["200"]["content"]["application/json"]
    ok_b = doc["paths"]["/datasets/{d}"]["get"]["responses"]["200"]["content"]["application/json"]
    schema_a, schema_b = _resolve(doc, ok_a["schema"]), _resolve(doc, ok_b["schema"])
    assert set(schema_a["properties"]) == {"version", "item"}
    assert set(schema_b["properties"]) == {"version_id", "item"}
    assert set(_resolve(doc, schema_a["properties"]["item"])["properties"]) == {"a"}
    assert set(_resolve(doc, schema_b["properties"]["item"])["properties"]) == {"b"}
    body = doc["paths"]["/datasets"]["post"]["requestBody"]["content"]["application/json"]
    assert set(_resolve(doc, body["schema"])["properties"]) == {"version_id", "item"}


def test_every_ref_of_the_app_document_resolves() -> None:
    import app  # noqa: F401 - registers every blueprint

    doc = openapi.build_openapi()
    assert _refs(doc) <= set(doc["components"]["schemas"])
    assert len(doc["paths"]) == len({spec.path for spec in ROUTES})


def test_routes_with_a_body_or_query_document_404() -> None:
    import app  # noqa: F401 - registers every blueprint

    doc = openapi.build_openapi()
    for spec in ROUTES:
        responses = doc["paths"][spec.path][spec.method.lower()]["responses"]
        if spec.body is not None or spec.query is not None or "{" in spec.path:
            assert "404" in responses, f"{spec.method} {spec.path}"
