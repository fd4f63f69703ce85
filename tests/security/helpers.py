"""Small builders shared by the security tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from tests.conftest import Http
from tests.helpers.models import skops_artifact


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def model(http: Http, token: str | None = None, groups: list[str] | None = None) -> str:
    body: dict[str, Any] = {"name": unique("sec")}
    if groups is not None:
        body["access_groups"] = groups
    response = http.call("POST", "/models", body, token=token)
    assert response.status_code == 201, response.data
    return response.data["model_id"]


def model_version(
    http: Http, model_id: str, token: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Registers a version (features ``a``, ``b``, ``c``) and returns it."""
    body = {
        "artifact_base64": skops_artifact(),
        "task": "classification",
        "feature_names": ["a", "b", "c"],
        **extra,
    }
    response = http.call("POST", f"/models/{model_id}/versions", body, token=token)
    assert response.status_code == 201, response.data
    return response.data


def experiment_body(model_id: str, **extra: Any) -> dict[str, Any]:
    """A 50/50 experiment of versions 1 and 2 of ``model_id``."""
    return {
        "name": unique("exp"),
        "variants": [
            {"variant_id": "control", "model_id": model_id, "model_version": 1,
             "traffic_weight": "0.5", "is_control": True},
            {"variant_id": "treatment", "model_id": model_id, "model_version": 2,
             "traffic_weight": "0.5"},
        ],
        **extra,
    }  # fmt: skip


def experiment(http: Http, token: str | None = None, groups: list[str] | None = None) -> str:
    """A draft experiment over a new model with two versions, both in ``groups``."""
    model_id = model(http, token=token, groups=groups)
    model_version(http, model_id, token=token)
    model_version(http, model_id, token=token)
    extra = {} if groups is None else {"access_groups": groups}
    response = http.call("POST", "/experiments", experiment_body(model_id, **extra), token=token)
    assert response.status_code == 201, response.data
    return response.data["experiment_id"]


def dataset(http: Http, token: str | None = None, groups: list[str] | None = None) -> str:
    body = {"name": unique("sec"), "access_groups": groups or ["ml"], "format": "csv"}
    response = http.call("POST", "/datasets", body, token=token)
    assert response.status_code == 201, response.data
    return response.data["dataset_id"]


def dataset_version(http: Http, dataset_id: str, token: str | None = None) -> dict[str, Any]:
    body = {"data": "a,b\n1,2\n3,4\n"}
    response = http.call("POST", f"/datasets/{dataset_id}/versions", body, token=token)
    assert response.status_code == 201, response.data
    return response.data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sign(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_query_signature(method: str, url: str, secret: str) -> str:
    """Recomputes the SigV4 signature S3 checks for a presigned ``url`` sent as ``method``.

    S3 derives the signature from the method, the path (the key), the query and the signed
    headers; if any differ from what was signed, the request is refused.
    """
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    params = dict(query)
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(query)
        if k != "X-Amz-Signature"
    )
    signed = params["X-Amz-SignedHeaders"].split(";")
    headers = {"host": parts.netloc}
    canonical_headers = "".join(f"{name}:{headers[name]}\n" for name in signed)
    canonical = "\n".join(
        [
            method,
            quote(parts.path, safe="/-_.~%"),
            canonical_query,
            canonical_headers,
            ";".join(signed),
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    date, region, service, _ = scope.split("/")
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _sign(("AWS4" + secret).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _sign(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def narrow_behind_the_pins(kind: str, resource_id: str, groups: list[str]) -> None:
    """Sets a resource's ``access_groups`` in its table, past the API: what a reference stored
    before pins existed (``chalicelib.core.references``) meets when its target is narrowed."""
    from chalicelib.abtesting.repository import ExperimentTable
    from chalicelib.dataversion.repository import DatasetTable
    from chalicelib.registry.repository import ModelTable

    table = {"dataset": DatasetTable, "experiment": ExperimentTable, "model": ModelTable}[kind]
    table(resource_id).update(actions=[table.access_groups.set(groups)])
