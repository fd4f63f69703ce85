"""Presigned URLs live at most ``SYNAPSE_PRESIGN_SECONDS`` and are valid for one key and method.

S3 recomputes a presigned request's SigV4 signature from the method, the key (path), the query
and the host; the tests recompute it the same way and show that the URL verifies as issued and
not for another key or method.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest

from tests.conftest import Http, Tokens
from tests.security.helpers import dataset, dataset_version, model, sigv4_query_signature


def _secret() -> str:
    from chalicelib.core import aws

    return aws.client("s3")._request_signer._credentials.get_frozen_credentials().secret_key


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _issued(http: Http, kind: str) -> tuple[str, str, int]:
    """(url, method, declared expiry) from each route that hands out presigned URLs."""
    if kind == "model-upload":
        response = http.call("POST", f"/models/{model(http)}/uploads")
        return response.data["url"], "PUT", response.data["expires_in"]
    dataset_id = dataset(http)
    if kind == "dataset-upload":
        response = http.call("POST", f"/datasets/{dataset_id}/uploads", {"filename": "d.csv"})
        return response.data["url"], "PUT", response.data["expires_in"]
    version = dataset_version(http, dataset_id)
    response = http.call(
        "GET", f"/datasets/{dataset_id}/versions/{version['version_number']}/content"
    )
    assert response.status_code == 200, response.data
    return response.data["url"], "GET", response.data["expires_in"]


KINDS = ["model-upload", "dataset-upload", "dataset-content"]


@pytest.mark.parametrize("kind", KINDS)
def test_presigned_urls_expire_within_the_configured_lifetime(
    module_http: Http, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_PRESIGN_SECONDS", "120")
    url, _, declared = _issued(module_http, kind)
    assert int(_query(url)["X-Amz-Expires"]) == declared == 120


@pytest.mark.parametrize("kind", KINDS)
def test_the_default_lifetime_is_at_most_fifteen_minutes(module_http: Http, kind: str) -> None:
    url, _, declared = _issued(module_http, kind)
    assert 0 < int(_query(url)["X-Amz-Expires"]) <= 900 and declared <= 900


@pytest.mark.parametrize("kind", KINDS)
def test_a_presigned_url_is_valid_for_its_key_and_method_only(module_http: Http, kind: str) -> None:
    url, method, _ = _issued(module_http, kind)
    signature = _query(url)["X-Amz-Signature"]
    assert sigv4_query_signature(method, url, _secret()) == signature  # the verifier agrees
    path = urlsplit(url).path
    other_key = path.rsplit("/", 1)[0] + "/other-object"
    assert sigv4_query_signature(method, _with_path(url, other_key), _secret()) != signature
    assert sigv4_query_signature(method, _with_path(url, path + "x"), _secret()) != signature
    other_method = "GET" if method == "PUT" else "PUT"
    assert sigv4_query_signature(other_method, url, _secret()) != signature
    assert _query(url)["X-Amz-SignedHeaders"] == "host"


def test_another_teams_writer_gets_no_upload_url_for_a_dataset(
    module_http: Http, module_tokens: Tokens
) -> None:
    dataset_id = dataset(module_http)
    response = module_http.call(
        "POST", f"/datasets/{dataset_id}/uploads", {}, token=module_tokens.other_writer
    )
    assert response.status_code == 404, response.data  # an outsider cannot tell it exists
    assert response.data["error"] == "dataset_not_found"
