"""Direct uploads: a client that declares the SHA-256 PUTs straight into content-addressed storage.

The PUT is verified (checksum and ``If-None-Match: *`` signed into the URL), the ``cas/`` trigger
versions the object where it lies (no copy, no staging key), content the dataset already has is
not uploaded again, bytes that do not match their address never become a version, and the
answer never depends on what other datasets hold (each dataset has its own direct address).
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote_plus

import pytest
import requests

from chalicelib.core.config import get_settings
from chalicelib.core.events import RecordingEventBus
from chalicelib.dataversion.storage import DataStore, cas_key, direct_key
from tests.conftest import Http, Tokens

CSV = b"id,score\n1,0.5\n2,0.75\n3,1.0\n"
DIGEST = hashlib.sha256(CSV).hexdigest()


@pytest.fixture
def no_copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fails any server-side copy made by the direct path; records the others."""
    made: list[str] = []
    original = DataStore.copy

    def recording(self: DataStore, source: str, target: str, *args: Any) -> None:
        made.append(f"{source}->{target}")
        original(self, source, target, *args)

    monkeypatch.setattr(DataStore, "copy", recording)
    return made


def s3() -> Any:
    from chalicelib.core import aws as clients

    return clients.client("s3")


def keys(prefix: str) -> list[str]:
    found = s3().list_objects_v2(Bucket=get_settings().data_bucket, Prefix=prefix)
    return [item["Key"] for item in found.get("Contents", [])]


def deliver(client: Any, function: str, key: str) -> None:
    event = client.events.generate_s3_event(
        bucket=get_settings().data_bucket, key=quote_plus(key, safe="/")
    )
    client.lambda_.invoke(function, event)


def create_dataset(http: Http, name: str, **extra: Any) -> str:
    response = http.call("POST", "/datasets", {"name": name, **extra})
    assert response.status_code == 201, response.data
    return response.data["dataset_id"]


def ask(http: Http, dataset_id: str, body: bytes = CSV, **extra: Any) -> Any:
    payload = {"filename": "day1.csv", "sha256": hashlib.sha256(body).hexdigest(), **extra}
    return http.call("POST", f"/datasets/{dataset_id}/uploads", payload)


def versions(http: Http, dataset_id: str) -> list[dict[str, Any]]:
    return http.call("GET", f"/datasets/{dataset_id}/versions").data["versions"]


def upload_directly(client: Any, http: Http, dataset_id: str, body: bytes = CSV) -> dict:
    upload = ask(http, dataset_id, body)
    assert upload.status_code == 201, upload.data
    put = requests.put(upload.data["url"], data=body, headers=upload.data["headers"], timeout=30)
    assert put.status_code == 200, put.text
    deliver(client, "dataset_upload", upload.data["key"])
    return upload.data


def test_a_declared_upload_goes_straight_to_its_content_address_and_is_versioned_in_place(
    client: Any, http: Http, bus: RecordingEventBus, no_copies: list[str]
) -> None:
    dataset_id = create_dataset(http, "direct")
    upload = upload_directly(client, http, dataset_id)
    assert upload["mode"] == "direct" and upload["status"] == "upload"
    assert upload["key"] == direct_key(DIGEST, dataset_id)
    headers = upload["headers"]
    assert headers["If-None-Match"] == "*"
    assert headers["x-amz-meta-synapse-dataset"] == dataset_id
    assert "x-amz-checksum-sha256" in headers
    signed = upload["url"].split("X-Amz-SignedHeaders=")[1].split("&")[0]
    assert "x-amz-checksum-sha256" in signed and "if-none-match" in signed
    (version,) = versions(http, dataset_id)
    assert version["sha256"] == DIGEST and version["row_count"] == 3
    assert version["schema"]["columns"] == {"id": "int", "score": "float"}
    assert no_copies == []
    assert keys("incoming/") == [] and keys("tmp/") == []
    assert keys("cas/") == [direct_key(DIGEST, dataset_id)]
    assert len(bus.of_type("DatasetVersionCreated")) == 1
    content = http.call("GET", f"/datasets/{dataset_id}/versions/1/content")
    assert requests.get(content.data["url"], timeout=30).content == CSV


def test_content_the_dataset_already_has_is_not_uploaded_again(
    client: Any, http: Http, bus: RecordingEventBus
) -> None:
    dataset_id = create_dataset(http, "direct")
    upload_directly(client, http, dataset_id)
    again = ask(http, dataset_id, filename="renamed.csv")
    assert again.status_code == 200, again.data
    assert again.data["status"] == "exists" and again.data["mode"] == "none"
    assert again.data["url"] is None and again.data["part_urls"] is None
    assert again.data["version_id"] == versions(http, dataset_id)[0]["version_id"]
    upper = ask(http, dataset_id, sha256=DIGEST.upper())
    assert upper.status_code == 200 and upper.data["status"] == "exists"


def test_redelivered_events_make_one_version(client: Any, http: Http) -> None:
    dataset_id = create_dataset(http, "direct")
    upload = upload_directly(client, http, dataset_id)
    for _ in range(2):
        deliver(client, "dataset_upload", upload["key"])
    assert len(versions(http, dataset_id)) == 1


def test_a_second_put_cannot_replace_content_addressed_bytes(client: Any, http: Http) -> None:
    dataset_id = create_dataset(http, "direct")
    upload = ask(http, dataset_id).data
    first = requests.put(upload["url"], data=CSV, headers=upload["headers"], timeout=30)
    assert first.status_code == 200
    second = requests.put(upload["url"], data=CSV, headers=upload["headers"], timeout=30)
    assert second.status_code == 412


def test_content_another_dataset_holds_gets_the_same_answer_as_new_content(
    client: Any, http: Http, no_copies: list[str], tokens: Tokens
) -> None:
    """Whether another dataset (another group's, say) holds a digest is not the caller's to
    learn: the answer has the same mode, fields and headers either way, and the upload goes to
    the caller's own address, so S3 cannot answer 412 because of someone else's object."""
    theirs = create_dataset(http, "theirs")
    upload_directly(client, http, theirs)
    bob = Http(http.client, tokens.other_writer)
    ours = create_dataset(bob, "ours")
    fresh_body = b"id,score\n7,0.7\n"
    held, fresh = ask(bob, ours), ask(bob, ours, fresh_body)
    assert held.status_code == fresh.status_code == 201
    assert held.data["key"] == direct_key(DIGEST, ours)
    assert fresh.data["key"] == direct_key(hashlib.sha256(fresh_body).hexdigest(), ours)
    digest_free = ("key", "url", "headers")
    assert {k: v for k, v in held.data.items() if k not in digest_free} == {
        k: v for k, v in fresh.data.items() if k not in digest_free
    }
    assert held.data["mode"] == "direct"
    assert set(held.data["headers"]) == set(fresh.data["headers"])
    assert theirs not in str(held.data)
    put = requests.put(held.data["url"], data=CSV, headers=held.data["headers"], timeout=30)
    assert put.status_code == 200  # not 412: the address is ours alone
    deliver(client, "dataset_upload", held.data["key"])
    assert [v["sha256"] for v in versions(bob, ours)] == [DIGEST]
    assert sorted(keys("cas/")) == sorted([direct_key(DIGEST, theirs), direct_key(DIGEST, ours)])
    assert no_copies == []
    assert [v["sha256"] for v in versions(http, theirs)] == [DIGEST]  # theirs untouched


def test_bytes_that_do_not_match_their_address_are_rejected_and_removed(
    client: Any, http: Http, bus: RecordingEventBus
) -> None:
    """S3 itself refuses such a PUT (BadDigest); an emulator may not, so the ingest checks."""
    dataset_id = create_dataset(http, "direct")
    upload = ask(http, dataset_id).data
    forged = b"id,score\n9,9.9\n"
    assert requests.put(upload["url"], data=forged, headers=upload["headers"], timeout=30).ok
    deliver(client, "dataset_upload", upload["key"])
    assert versions(http, dataset_id) == []
    assert keys("cas/") == []
    assert keys("rejected/") == [f"rejected/{direct_key(DIGEST, dataset_id)}"]
    (rejected,) = bus.of_type("DatasetVersionRejected")
    assert "not the declared" in rejected.detail["reason"]


def test_a_direct_upload_refused_by_the_schema_keeps_its_bytes_and_records_why(
    client: Any, http: Http, bus: RecordingEventBus
) -> None:
    dataset_id = create_dataset(http, "strict", compatibility="full")
    upload_directly(client, http, dataset_id)
    narrowed = b"id\n1\n2\n"
    upload = upload_directly(client, http, dataset_id, narrowed)
    deliver(client, "dataset_upload", upload["key"])  # redelivered: the same rejection
    assert len(versions(http, dataset_id)) == 1
    assert upload["key"] in keys("cas/")  # valid bytes at their address, reusable later
    (rejected,) = bus.of_type("DatasetVersionRejected")
    assert rejected.detail["rejected_key"] == upload["key"]


def test_cas_objects_that_are_not_direct_uploads_are_ignored(client: Any, http: Http) -> None:
    dataset_id = create_dataset(http, "inline")
    created = http.call("POST", f"/datasets/{dataset_id}/versions", {"data": CSV.decode()})
    assert created.status_code == 201
    deliver(client, "dataset_upload", cas_key(DIGEST))
    deliver(client, "dataset_upload", "cas/sha256/not-a-digest")
    assert len(versions(http, dataset_id)) == 1


def test_declared_uploads_validate_the_digest_and_fall_back_above_one_put(http: Http) -> None:
    dataset_id = create_dataset(http, "direct")
    path = f"/datasets/{dataset_id}/uploads"
    for bad in ["abc", "g" * 64, DIGEST + "0"]:
        response = http.call("POST", path, {"filename": "x.csv", "sha256": bad})
        assert response.status_code == 400, bad
    huge = http.call(
        "POST", path, {"filename": "x.csv", "sha256": DIGEST, "size_bytes": 6 * 1024**3}
    )
    assert huge.status_code == 201
    assert huge.data["mode"] == "staged" and huge.data["part_urls"]


def test_the_local_stack_routes_a_real_direct_put_to_the_upload_handler(
    client: Any, http: Http, aws: Any
) -> None:
    import app as app_module
    from synapse_local.pumps import S3EventPump

    dataset_id = create_dataset(http, "pumped")
    upload = ask(http, dataset_id).data
    assert requests.put(upload["url"], data=CSV, headers=upload["headers"], timeout=30).ok
    pump = S3EventPump.for_app(app_module.app, aws.s3_events_queue_url, wait_seconds=1)
    assert pump.poll_once() == 1
    assert [v["sha256"] for v in versions(http, dataset_id)] == [DIGEST]
    inline = create_dataset(http, "inline")
    other = b"id,score\n5,0.1\n"
    made = http.call("POST", f"/datasets/{inline}/versions", {"data": other.decode()})
    assert made.status_code == 201
    assert pump.poll_once() == 0  # the inline path's copy into cas/ is not a PUT


def test_a_direct_upload_naming_an_unknown_dataset_is_rejected_once(
    client: Any, http: Http, bus: RecordingEventBus
) -> None:
    key = cas_key(DIGEST)
    s3().put_object(
        Bucket=get_settings().data_bucket,
        Key=key,
        Body=CSV,
        Metadata={"synapse-dataset": "ds-gone"},
    )
    for _ in range(2):
        deliver(client, "dataset_upload", key)
    (rejected,) = bus.of_type("DatasetVersionRejected")
    assert "ds-gone" in rejected.detail["reason"]
    assert keys("cas/") == [key]
