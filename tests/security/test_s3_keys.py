"""S3 keys built from client input cannot leave their prefix: ``..``, absolute paths, backslashes
and encoded forms are refused or neutralised, and no request turns them into a 500."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.core import aws
from chalicelib.core.config import get_settings
from tests.conftest import Http
from tests.security.helpers import b64, dataset, model

HOSTILE = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "a/../../b",
    "..\\..\\windows\\system32",
    "%2e%2e%2f%2e%2e%2fescape",
    "%252e%252e/escape",
    "\u2025/escape",  # two-dot leader
    "\uff0e\uff0e/escape",  # fullwidth dots
    "name\x00.csv",
    "~/.aws/credentials",
    "//double",
    "a" * 190 + "/../../x",
]


# (key, status, error): a key leaving ``uploads/<model_id>/`` is a 400; a key inside it that
# names no uploaded object (an encoded dot-dot is a literal name; a NUL is no S3 key) is a 404.
UPLOAD_KEYS = [
    ("uploads/{m}/../../artifacts/{m}/x.skops", 400, "invalid_request"),
    ("uploads/{m}/..", 400, "invalid_request"),
    ("uploads/{m}/%2e%2e/x", 404, "not_found"),
    ("/uploads/{m}/x.skops", 400, "invalid_request"),
    ("uploads/{m}\\..\\x", 400, "invalid_request"),
    ("artifacts/{m}/x.skops", 400, "invalid_request"),
    ("uploads/m-someoneelse/x.skops", 400, "invalid_request"),
    ("uploads/{m}/\x00", 404, "not_found"),
]


@pytest.mark.parametrize(("template", "status", "error"), UPLOAD_KEYS)
def test_register_refuses_upload_keys_outside_the_models_upload_prefix(
    module_http: Http, template: str, status: int, error: str
) -> None:
    model_id = model(module_http)
    key = template.format(m=model_id)
    body = {"artifact_upload_key": key, "task": "classification", "feature_names": ["a"]}
    response = module_http.call("POST", f"/models/{model_id}/versions", body)
    assert response.status_code == status, (key, response.data)
    assert response.data["error"] == error
    listed = module_http.call("GET", f"/models/{model_id}/versions")
    assert listed.data["versions"] == []


@pytest.mark.parametrize("filename", HOSTILE)
def test_dataset_upload_keys_stay_under_the_datasets_incoming_prefix(
    module_http: Http, filename: str
) -> None:
    dataset_id = dataset(module_http)
    response = module_http.call("POST", f"/datasets/{dataset_id}/uploads", {"filename": filename})
    if "\x00" in filename:  # a control character in a name is refused, not neutralised
        assert response.status_code == 400, response.data
        assert response.data["error"] == "invalid_request"
    else:  # every other name is reduced to a safe last part
        assert response.status_code == 201, response.data
        key = response.data["key"]
        prefix = f"incoming/{dataset_id}/"
        assert key.startswith(prefix)
        rest = key[len(prefix) :]
        assert "/" not in rest and "\\" not in rest and "\x00" not in rest
        assert rest not in {".", ".."} and "%" not in rest


def _ingest(http: Http, key: str, data: bytes = b"a,b\n1,2\n") -> Any:
    bucket = get_settings().data_bucket
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    event = http.client.events.generate_s3_event(bucket=bucket, key=key)
    return http.client.lambda_.invoke("dataset_ingest", event)


def _versions(http: Http, dataset_id: str) -> list[dict[str, Any]]:
    response = http.call("GET", f"/datasets/{dataset_id}/versions")
    assert response.status_code == 200, response.data
    return response.data["versions"]


@pytest.mark.parametrize(
    "suffix",
    [
        "../../cas/evil.csv",
        "../other/evil.csv",
        "sub/../../x.csv",
        "/abs.csv",
        "..",
        "a\\..\\b.csv",
    ],
)
def test_ingest_of_a_key_with_traversal_creates_no_version(module_http: Http, suffix: str) -> None:
    dataset_id = dataset(module_http)
    _ingest(module_http, f"incoming/{dataset_id}/{suffix}")
    assert _versions(module_http, dataset_id) == []


def test_ingest_of_a_plain_key_creates_a_version(module_http: Http) -> None:
    dataset_id = dataset(module_http)
    _ingest(module_http, f"incoming/{dataset_id}/plain.csv")
    assert len(_versions(module_http, dataset_id)) == 1


def test_register_with_inline_artifact_never_echoes_a_key_from_input(module_http: Http) -> None:
    model_id = model(module_http)
    body = {
        "artifact_base64": b64(b"PK\x03\x04 not really a zip"),
        "task": "classification",
        "feature_names": ["a"],
        "metadata": {"key": "../../etc/passwd"},
    }
    response = module_http.call("POST", f"/models/{model_id}/versions", body)
    assert response.status_code == 422, response.data
    assert response.data["error"] == "unsafe_artifact"
    assert "passwd" not in response.data["message"]
