"""The S3 trigger: files under incoming/<dataset>/ become versions, at least once, idempotently."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote_plus

import pytest

from chalicelib.core.config import get_settings
from chalicelib.core.events import RecordingEventBus
from tests.conftest import Http, Tokens

CSV = b"id,score\n1,0.5\n2,0.75\n3,1.0\n"


def s3() -> Any:
    from chalicelib.core import aws as clients

    return clients.client("s3")


def put(key: str, body: bytes) -> None:
    s3().put_object(Bucket=get_settings().data_bucket, Key=key, Body=body)


def keys(prefix: str) -> list[str]:
    found = s3().list_objects_v2(Bucket=get_settings().data_bucket, Prefix=prefix)
    return [item["Key"] for item in found.get("Contents", [])]


def deliver(client: Any, key: str) -> None:
    """Invokes the ingest function as S3 would: the key form-encoded ("+" for spaces)."""
    event = client.events.generate_s3_event(
        bucket=get_settings().data_bucket, key=quote_plus(key, safe="/")
    )
    client.lambda_.invoke("dataset_ingest", event)


def create_dataset(http: Http, name: str, **extra: Any) -> dict[str, Any]:
    response = http.call("POST", "/datasets", {"name": name, **extra})
    assert response.status_code == 201, response.data
    return response.data


def versions(http: Http, dataset_id: str) -> list[dict[str, Any]]:
    return http.call("GET", f"/datasets/{dataset_id}/versions").data["versions"]


def test_an_incoming_file_becomes_a_version_by_dataset_name(
    client: Any, http: Http, bus: RecordingEventBus
) -> None:
    dataset = create_dataset(http, "clicks")
    put("incoming/clicks/day1.csv", CSV)
    deliver(client, "incoming/clicks/day1.csv")
    found = versions(http, dataset["dataset_id"])
    assert len(found) == 1
    digest = hashlib.sha256(CSV).hexdigest()
    assert found[0]["sha256"] == digest
    assert found[0]["row_count"] == 3
    assert found[0]["source_key"] == "incoming/clicks/day1.csv"
    assert keys(f"cas/sha256/{digest[:2]}/") == [f"cas/sha256/{digest[:2]}/{digest[2:]}"]
    assert keys("incoming/") == []
    assert len(bus.of_type("DatasetVersionCreated")) == 1


def test_the_same_event_delivered_three_times_makes_one_version(
    client: Any, http: Http, bus: RecordingEventBus
) -> None:
    dataset = create_dataset(http, "clicks")
    put(f"incoming/{dataset['dataset_id']}/a.csv", CSV)
    for _ in range(3):
        deliver(client, f"incoming/{dataset['dataset_id']}/a.csv")
    assert [v["version_number"] for v in versions(http, dataset["dataset_id"])] == [1]
    assert len(bus.of_type("DatasetVersionCreated")) == 1


def test_redelivery_after_a_crash_before_cleanup_makes_no_new_version(
    client: Any, http: Http
) -> None:
    from chalicelib.dataversion.service import get_versioning_engine

    dataset = create_dataset(http, "clicks")
    put("incoming/clicks/a.csv", CSV)
    ingestion = get_versioning_engine().ingestion
    original = ingestion._release
    ingestion._release = lambda arrival: None  # type: ignore[method-assign]  # dies before cleanup
    deliver(client, "incoming/clicks/a.csv")
    ingestion._release = original  # type: ignore[method-assign]
    assert keys("incoming/") == ["incoming/clicks/a.csv"]
    deliver(client, "incoming/clicks/a.csv")
    assert len(versions(http, dataset["dataset_id"])) == 1
    assert keys("incoming/") == []


def test_out_of_order_events_for_new_content_add_one_version_each(client: Any, http: Http) -> None:
    dataset = create_dataset(http, "clicks")
    put("incoming/clicks/b.csv", CSV + b"5,0.1\n")
    put("incoming/clicks/a.csv", CSV)
    deliver(client, "incoming/clicks/b.csv")
    deliver(client, "incoming/clicks/a.csv")
    deliver(client, "incoming/clicks/b.csv")
    found = versions(http, dataset["dataset_id"])
    assert [v["row_count"] for v in found] == [4, 3]


def test_url_encoded_keys_are_decoded(client: Any, http: Http) -> None:
    dataset = create_dataset(http, "sales eu")
    key = "incoming/sales eu/q1 report+final (v2).csv"
    put(key, CSV)
    deliver(client, key)
    found = versions(http, dataset["dataset_id"])
    assert len(found) == 1
    assert found[0]["source_key"] == key


def test_a_file_for_an_unknown_dataset_is_moved_to_rejected_with_a_reason(
    client: Any, http: Http, bus: RecordingEventBus, tokens: Tokens
) -> None:
    from chalicelib.dataversion.repository import DatasetRepository

    put("incoming/nobody/x.csv", CSV)
    etag = (
        s3()
        .head_object(Bucket=get_settings().data_bucket, Key="incoming/nobody/x.csv")["ETag"]
        .strip('"')
    )
    for _ in range(2):
        deliver(client, "incoming/nobody/x.csv")
    assert keys("incoming/") == []
    assert keys("rejected/") == ["rejected/nobody/x.csv"]
    stored = s3().get_object(Bucket=get_settings().data_bucket, Key="rejected/nobody/x.csv")
    assert stored["Body"].read() == CSV
    rejection = DatasetRepository().get_rejection("incoming/nobody/x.csv", etag)
    assert rejection is not None and "nobody" in rejection.reason
    assert len(bus.of_type("DatasetVersionRejected")) == 1
    listed = http.call("GET", "/dataset-rejections", token=tokens.admin).data["rejections"]
    assert [(r["source_key"], r["rejected_key"]) for r in listed] == [
        ("incoming/nobody/x.csv", "rejected/nobody/x.csv")
    ]
    assert "nobody" in listed[0]["reason"]


def test_a_rejected_file_is_read_with_one_head_and_a_newer_upload_to_its_key_survives(
    client: Any, http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One HEAD per ingest, even of a rejected file; the removal from incoming/ is a
    conditional DELETE on the ETag read, so a file uploaded again to the same key while the
    first was being handled is neither deleted nor lost."""
    from chalicelib.dataversion.service import get_versioning_engine

    store = get_versioning_engine().store
    heads: list[str] = []
    head = store.head
    monkeypatch.setattr(store, "head", lambda key, *rest: heads.append(key) or head(key, *rest))
    replaced = CSV + b"9,0.9\n"
    copy = store.copy

    def copy_then_replace(source: str, target: str, *rest: Any) -> None:
        copy(source, target, *rest)
        put(source, replaced)  # a new upload lands while the first one is being rejected

    monkeypatch.setattr(store, "copy", copy_then_replace)
    put("incoming/nobody/x.csv", CSV)
    deliver(client, "incoming/nobody/x.csv")
    assert heads == ["incoming/nobody/x.csv"]
    assert keys("rejected/") == ["rejected/nobody/x.csv"]
    kept = s3().get_object(Bucket=get_settings().data_bucket, Key="incoming/nobody/x.csv")
    assert kept["Body"].read() == replaced


def test_delete_if_unchanged_deletes_only_the_object_with_that_etag(aws: Any) -> None:
    from chalicelib.dataversion.storage import DataStore

    store = DataStore()
    put("incoming/a/x.csv", CSV)
    first = store.head("incoming/a/x.csv")
    assert first is not None
    put("incoming/a/x.csv", CSV + b"4,0.1\n")
    assert store.delete_if_unchanged("incoming/a/x.csv", first.etag) is False
    assert keys("incoming/") == ["incoming/a/x.csv"]
    second = store.head("incoming/a/x.csv")
    assert second is not None
    assert store.delete_if_unchanged("incoming/a/x.csv", second.etag) is True
    assert keys("incoming/") == []
    assert store.delete_if_unchanged("incoming/a/x.csv", second.etag) is False


def test_content_breaking_the_schema_is_rejected_not_lost(client: Any, http: Http) -> None:
    dataset = create_dataset(http, "clicks")
    put("incoming/clicks/1.csv", CSV)
    deliver(client, "incoming/clicks/1.csv")
    put("incoming/clicks/2.csv", b"id,score\nx1,0.5\n")
    deliver(client, "incoming/clicks/2.csv")
    assert len(versions(http, dataset["dataset_id"])) == 1
    assert keys("rejected/") == ["rejected/clicks/2.csv"]


def test_a_ragged_row_anywhere_in_an_incoming_file_rejects_it_and_writes_nothing(
    client: Any, http: Http
) -> None:
    """The S3 trigger refuses a file with a row of the wrong width 15,000 rows in, as it
    refuses one in the schema's head: the file moves to rejected/, no version, nothing under
    cas/."""
    dataset = create_dataset(http, "clicks")
    rows = [b"%d,0.5\n" % i for i in range(20_000)]
    rows[15_000] = b"1,2,3\n"
    put("incoming/clicks/deep.csv", b"id,score\n" + b"".join(rows))
    deliver(client, "incoming/clicks/deep.csv")
    put("incoming/clicks/head.csv", b"id,score\n1,0.5\n1,2,3\n")
    deliver(client, "incoming/clicks/head.csv")
    assert versions(http, dataset["dataset_id"]) == []
    assert keys("rejected/") == ["rejected/clicks/deep.csv", "rejected/clicks/head.csv"]
    assert keys("cas/") == [] and keys("incoming/") == []


def test_presigned_upload_then_trigger_makes_a_version(
    client: Any, http: Http, tokens: Tokens
) -> None:
    import requests

    dataset = create_dataset(http, "clicks")
    upload = http.call(
        "POST", f"/datasets/{dataset['dataset_id']}/uploads", {"filename": "big file.csv"}
    )
    assert upload.status_code == 201
    key = upload.data["key"]
    assert key.startswith(f"incoming/{dataset['dataset_id']}/") and key.endswith("big_file.csv")
    assert requests.put(upload.data["url"], data=CSV, timeout=30).status_code == 200
    deliver(client, key)
    found = versions(http, dataset["dataset_id"])
    assert found[0]["sha256"] == hashlib.sha256(CSV).hexdigest()
    content = http.call("GET", f"/datasets/{dataset['dataset_id']}/versions/1/content")
    assert requests.get(content.data["url"], timeout=30).content == CSV


def test_a_real_put_delivered_twice_by_the_local_pump_makes_one_version(
    client: Any, http: Http, aws: Any
) -> None:
    import app as app_module
    from chalicelib.core import aws as clients
    from synapse_local.pumps import S3EventPump

    dataset = create_dataset(http, "pumped")
    put("incoming/pumped/data.csv", CSV)
    sqs = clients.client("sqs")
    received = sqs.receive_message(
        QueueUrl=aws.s3_events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )["Messages"]
    created = [m for m in received if "data.csv" in m["Body"]]
    assert len(created) == 1
    for message in received:
        sqs.change_message_visibility(
            QueueUrl=aws.s3_events_queue_url,
            ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=0,
        )
    sqs.send_message(QueueUrl=aws.s3_events_queue_url, MessageBody=created[0]["Body"])
    pump = S3EventPump.for_app(app_module.app, aws.s3_events_queue_url, sqs, wait_seconds=0)
    delivered = 0
    for _ in range(5):
        delivered += pump.poll_once(wait_seconds=0)
    assert delivered == 2
    found = versions(http, dataset["dataset_id"])
    assert len(found) == 1
    assert found[0]["source_key"] == "incoming/pumped/data.csv"


def test_large_files_use_a_presigned_multipart_upload(
    client: Any, http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    from chalicelib.dataversion import service

    monkeypatch.setattr(service, "MULTIPART_THRESHOLD", 1024 * 1024)
    monkeypatch.setattr(service, "MIN_PART_BYTES", 5 * 1024 * 1024)
    dataset = create_dataset(http, "large")
    body = b"id,score\n" + b"1,0.5\n" * (11 * 1024 * 1024 // 6)
    upload = http.call(
        "POST",
        f"/datasets/{dataset['dataset_id']}/uploads",
        {"filename": "large.csv", "size_bytes": len(body)},
    ).data
    assert upload["url"] is None and len(upload["part_urls"]) == 3
    size = upload["part_size"]
    parts = []
    for number, url in enumerate(upload["part_urls"], start=1):
        chunk = body[(number - 1) * size : number * size]
        response = requests.put(url, data=chunk, timeout=30)
        assert response.status_code == 200
        parts.append({"part_number": number, "etag": response.headers["ETag"]})
    path = f"/datasets/{dataset['dataset_id']}/uploads/complete"
    wrong = http.call("POST", path, {"key": "incoming/other/x", "upload_id": "u", "parts": parts})
    assert wrong.status_code == 400
    done = http.call(
        "POST", path, {"key": upload["key"], "upload_id": upload["upload_id"], "parts": parts}
    )
    assert done.status_code == 202, done.data
    deliver(client, upload["key"])
    found = versions(http, dataset["dataset_id"])
    assert found[0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert found[0]["row_count"] == body.count(b"\n") - 1


@pytest.mark.parametrize(
    "suffix", ["../../cas/evil.csv", "sub/../x.csv", "/abs.csv", "..", "a\\..\\b.csv", "./x.csv"]
)
def test_keys_with_path_tricks_are_rejected_not_versioned(
    client: Any, http: Http, suffix: str
) -> None:
    from chalicelib.dataversion.ingest import key_problem

    dataset = create_dataset(http, "tricky")
    key = f"incoming/{dataset['dataset_id']}/{suffix}"
    assert key_problem(key) is not None
    put(key, CSV)
    deliver(client, key)
    assert versions(http, dataset["dataset_id"]) == []
    assert keys("incoming/") == []
    assert len(keys("rejected/")) == 1


def test_multipart_uploads_presign_at_most_a_thousand_parts(http: Http) -> None:
    from chalicelib.dataversion import service

    dataset = create_dataset(http, "huge")
    path = f"/datasets/{dataset['dataset_id']}/uploads"
    fifty_gb = http.call("POST", path, {"filename": "x.csv", "size_bytes": 50 * 10**9}).data
    assert len(fifty_gb["part_urls"]) <= service.MAX_PARTS
    assert fifty_gb["part_size"] * len(fifty_gb["part_urls"]) >= 50 * 10**9
    limit = service.MAX_UPLOAD_BYTES
    largest = http.call("POST", path, {"filename": "x.csv", "size_bytes": limit}).data
    assert len(largest["part_urls"]) == service.MAX_PARTS
    assert largest["part_size"] <= service.MAX_PART_BYTES
    too_big = http.call("POST", path, {"filename": "x.csv", "size_bytes": limit + 1})
    assert too_big.status_code == 413


def test_an_s3_event_whose_handler_keeps_failing_ends_in_the_local_dead_letter_queue(
    aws: Any,
) -> None:
    """As deployed (one try plus Lambda's two retries, then the DLQ), not redelivered forever."""
    from chalicelib.core import aws as clients
    from synapse_local.bootstrap import S3_EVENT_ATTEMPTS
    from synapse_local.pumps import S3EventPump

    attempts: list[str] = []

    def failing(event: dict[str, Any], context: Any) -> None:
        attempts.append(event["Records"][0]["s3"]["object"]["key"])
        raise RuntimeError("ingest keeps failing")

    pump = S3EventPump(aws.s3_events_queue_url, failing, retry_delay_seconds=0)
    put("incoming/poison.csv", CSV)
    for _ in range(S3_EVENT_ATTEMPTS + 3):
        pump.poll_once(wait_seconds=0)
    assert attempts == ["incoming/poison.csv"] * S3_EVENT_ATTEMPTS
    dead = clients.client("sqs").receive_message(
        QueueUrl=aws.s3_events_dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    )["Messages"]
    assert ["poison.csv" in message["Body"] for message in dead] == [True]


def test_the_local_redrive_limits_match_the_deployed_ones() -> None:
    from infra.template import QUEUE_MAX_RECEIVES
    from synapse_local.bootstrap import JOBS_MAX_RECEIVES

    assert JOBS_MAX_RECEIVES == QUEUE_MAX_RECEIVES


def test_delete_if_unchanged_compares_etags_itself_where_s3_has_no_conditional_delete(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    from chalicelib.dataversion.storage import DataStore

    real = s3()

    class NoConditionalDelete:
        exceptions = real.exceptions

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def delete_object(self, **kwargs: Any) -> Any:
            if "IfMatch" in kwargs:
                error = {"Error": {"Code": "NotImplemented", "Message": "If-Match"}}
                raise ClientError(error, "DeleteObject")
            return real.delete_object(**kwargs)

    monkeypatch.setattr(DataStore, "s3", property(lambda self: NoConditionalDelete()))
    store = DataStore()
    put("incoming/a/x.csv", CSV)
    first = store.head("incoming/a/x.csv")
    assert first is not None
    put("incoming/a/x.csv", CSV + b"4,0.1\n")
    assert store.delete_if_unchanged("incoming/a/x.csv", first.etag) is False
    second = store.head("incoming/a/x.csv")
    assert second is not None
    assert store.delete_if_unchanged("incoming/a/x.csv", second.etag) is True
    assert keys("incoming/") == []
