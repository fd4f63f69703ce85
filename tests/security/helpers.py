"""Small builders shared by the security tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from tests.conftest import Http


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def model(http: Http, token: str | None = None) -> str:
    response = http.call("POST", "/models", {"name": unique("sec")}, token=token)
    assert response.status_code == 201, response.data
    return response.data["model_id"]


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
