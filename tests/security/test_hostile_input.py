"""Hostile input gets a clear 4xx (or, for a file that lands in S3, a rejection record), never a
5xx, a dead-letter message or a version nobody checked.

Each test asserts the status and error body, that nothing was written (no version, no object left
under a live prefix) and that nothing leaked into the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.core.config import get_settings
from chalicelib.core.http import ROUTES
from tests.conftest import Http, Tokens
from tests.helpers.models import version_body
from tests.reliability.seeding import fifty_fifty
from tests.security.helpers import dataset, unique

DEEP = 3_000


RAW = "@raw@"


def with_raw(template: Any, raw: str) -> str:
    """``template`` as JSON with the string ``"@raw@"`` replaced by the literal text ``raw``."""
    return json.dumps(template).replace(json.dumps(RAW), raw)


def deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def s3() -> Any:
    from chalicelib.core import aws as clients

    return clients.client("s3")


def put(key: str, body: bytes, **extra: Any) -> None:
    s3().put_object(Bucket=get_settings().data_bucket, Key=key, Body=body, **extra)


def keys(prefix: str) -> list[str]:
    found = s3().list_objects_v2(Bucket=get_settings().data_bucket, Prefix=prefix)
    return [item["Key"] for item in found.get("Contents", [])]


def versions(http: Http, dataset_id: str) -> list[dict[str, Any]]:
    response = http.call("GET", f"/datasets/{dataset_id}/versions")
    assert response.status_code == 200, response.data
    return response.data["versions"]


def refused(response: Any, status: int, *needles: str) -> dict[str, Any]:
    """Asserts a JSON error of ``status`` whose message holds every needle."""
    assert response.status_code == status, (response.status_code, response.data)
    body = response.data
    assert set(body) >= {"error", "message"}, body
    for needle in needles:
        assert needle in body["message"], body["message"]
    return body


def json_dataset(http: Http) -> str:
    body = {"name": unique("hostile"), "format": "json", "access_groups": ["ml"]}
    response = http.call("POST", "/datasets", body)
    assert response.status_code == 201, response.data
    return response.data["dataset_id"]


@pytest.fixture(scope="module")
def model_id(module_http: Http) -> str:
    response = module_http.call("POST", "/models", {"name": unique("hostile")})
    assert response.status_code == 201, response.data
    model = response.data["model_id"]
    registered = module_http.call("POST", f"/models/{model}/versions", version_body())
    assert registered.status_code == 201, registered.data
    return model


def _count(http: Http, path: str, field: str, token: str) -> int:
    response = http.call("GET", path, token=token)
    assert response.status_code == 200, response.data
    return len(response.data[field])


@pytest.fixture
def nothing_created(module_http: Http, module_tokens: Tokens) -> Iterator[None]:
    """Asserts that the test created no model, experiment or dataset."""
    lists = [("/models", "models"), ("/experiments", "experiments"), ("/datasets", "datasets")]
    before = [_count(module_http, p, f, module_tokens.admin) for p, f in lists]
    yield
    after = [_count(module_http, p, f, module_tokens.admin) for p, f in lists]
    assert after == before


# ---- JSON nesting in request bodies -----------------------------------------------------


def _body_routes() -> list[Any]:
    import app  # noqa: F401 - registers every blueprint

    return sorted(
        {(spec.method, spec.path) for spec in ROUTES if spec.body is not None},
    )


@pytest.mark.parametrize(("method", "path"), _body_routes())
def test_a_body_nested_3000_deep_is_400_on_every_route(
    module_http: Http, module_tokens: Tokens, method: str, path: str
) -> None:
    concrete = path.replace("{", "x-").replace("}", "")
    for body in (deep_array(DEEP), '{"name": ' + deep_array(DEEP) + "}", "[" * DEEP):
        response = module_http.call(method, concrete, body, token=module_tokens.admin)
        refused(response, 400)
        assert response.data["error"] == "invalid_request"
    response = module_http.call(method, concrete, deep_array(DEEP), token=module_tokens.admin)
    refused(response, 400, "nest deeper than 64 levels")


def test_deep_bodies_create_nothing(module_http: Http, nothing_created: None) -> None:
    description = deep_array(DEEP)
    for path, body in (
        ("/models", with_raw({"name": "m", "description": RAW}, description)),
        ("/datasets", with_raw({"name": "d", "access_groups": RAW}, description)),
        ("/experiments", with_raw({"name": "e", "variants": RAW}, description)),
    ):
        refused(module_http.call("POST", path, body), 400, "nest deeper than 64 levels")


def test_the_depth_limit_is_configurable_and_exact(
    module_http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_MAX_JSON_DEPTH", "3")
    body = '{"name": "%s", "access_groups": ["ml"], "schema": {"columns": {"a": "int"}%s}}'
    created = module_http.call("POST", "/datasets", body % (unique("depth3"), ""))
    assert created.status_code == 201, created.data  # three levels: body, schema, columns
    deeper = body % (unique("depth4"), ', "nullable": [[]]')
    refused(module_http.call("POST", "/datasets", deeper), 400, "deeper than 3 levels")
    monkeypatch.delenv("SYNAPSE_MAX_JSON_DEPTH")
    assert module_http.call("POST", "/datasets", deeper).status_code == 400  # [[]] is no name
    refused(module_http.call("POST", "/datasets", deeper), 400, "body.schema.nullable")


# ---- numbers too large or not finite --------------------------------------------------------


def _experiment_text(model_id: str, minimum_sample_size: str) -> str:
    body = {"name": unique("e"), "variants": fifty_fifty(model_id, 1), "minimum_sample_size": RAW}
    return with_raw(body, minimum_sample_size)


@pytest.mark.parametrize("digits", [39, 4_001])
def test_an_integer_of_more_than_38_digits_is_400_and_creates_nothing(
    module_http: Http, model_id: str, digits: int, nothing_created: None
) -> None:
    response = module_http.call("POST", "/experiments", _experiment_text(model_id, "9" * digits))
    body = refused(response, 400, "more than 38 digits")
    assert "9" * 39 not in json.dumps(body)  # the number is not echoed back


def test_an_integer_of_38_digits_is_stored_exactly(module_http: Http, model_id: str) -> None:
    response = module_http.call("POST", "/experiments", _experiment_text(model_id, "9" * 38))
    assert response.status_code == 201, response.data
    assert response.data["minimum_sample_size"] == 10**38 - 1
    again = module_http.call("GET", f"/experiments/{response.data['experiment_id']}")
    assert again.data["minimum_sample_size"] == 10**38 - 1


@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ("1e999", "outside the range of a double"),
        ("-1e400", "outside the range of a double"),
        ("NaN", "NaN is not a JSON number"),
        ("Infinity", "Infinity is not a JSON number"),
        ('"nan"', "is not a finite number"),  # pydantic turns the string into a float
        ('"-inf"', "is not a finite number"),
        ('"1e999"', "is not a finite number"),
        ('"%s"' % ("9" * 4001), "is not a finite number"),
    ],
)
def test_non_finite_and_out_of_range_numbers_in_a_body_are_400(
    module_http: Http, literal: str, message: str
) -> None:
    outcome = {"variant_id": "a", "request_id": "r", "success": True, "latency_ms": 1}
    body = with_raw({**outcome, "custom_metrics": {"m": RAW}}, literal)
    response = module_http.call("POST", "/experiments/exp-none/outcomes", body)
    refused(response, 400, message)


@pytest.mark.parametrize(
    "query",
    [
        "daily_traffic=" + "9" * 4001,
        "daily_traffic=" + "1" * 39,
        "minimum_detectable_effect=inf",
        "minimum_detectable_effect=nan",
        "minimum_detectable_effect=1e999",
        "baseline_rate=NaN",
    ],
)
def test_huge_or_non_finite_numbers_in_a_query_are_400(module_http: Http, query: str) -> None:
    base = "baseline_rate=0.1&minimum_detectable_effect=0.1"
    response = module_http.call("GET", f"/stats/sample-size?{base}&{query}")
    refused(response, 400, "query.")


def test_a_large_but_storable_query_number_gives_a_correct_answer(module_http: Http) -> None:
    base = "/stats/sample-size?baseline_rate=0.1&minimum_detectable_effect=0.1"
    response = module_http.call("GET", f"{base}&daily_traffic={'9' * 38}")
    assert response.status_code == 200, response.data
    assert response.data["days"] == 1  # one day of that much traffic is more than enough


def test_a_lone_surrogate_in_a_free_form_field_is_400(module_http: Http) -> None:
    body = '{"model_id": "m-none", "explanation_type": "lime", "input_data": {"text": "\\ud800"}}'
    refused(module_http.call("POST", "/explanations", body), 400, "lone UTF-16 surrogate")


# ---- JSON lines: depth inside dataset content ---------------------------------------------


def _deep_record(depth: int = DEEP) -> str:
    return '{"a": 1, "b": ' + deep_array(depth) + "}"


def test_a_json_lines_version_with_a_deep_record_is_422_and_writes_nothing(
    module_http: Http,
) -> None:
    dataset_id = json_dataset(module_http)
    staged_before, cas_before = keys("tmp/"), keys("cas/")
    data = '{"a": 1, "b": []}\n' + _deep_record() + "\n"
    response = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": data})
    refused(response, 422, "JSON record 2", "deeper than 64 levels")
    assert response.data["error"] == "unreadable_content"
    assert versions(module_http, dataset_id) == []
    assert keys("tmp/") == staged_before and keys("cas/") == cas_before


def test_a_record_at_the_depth_limit_is_versioned(module_http: Http) -> None:
    dataset_id = json_dataset(module_http)
    data = '{"a": 1, "b": ' + deep_array(63) + "}\n"
    response = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": data})
    assert response.status_code == 201, response.data


def _deliver_through_the_queue(module_aws: Any) -> None:
    """What the trigger does: every queued S3 event, with the deployed retries."""
    import app as app_module
    from synapse_local.bootstrap import S3_EVENT_ATTEMPTS
    from synapse_local.pumps import S3EventPump

    pump = S3EventPump.for_app(app_module.app, module_aws.s3_events_queue_url)
    pump.retry_delay_seconds = 0
    for _ in range(S3_EVENT_ATTEMPTS + 1):
        pump.poll_once(wait_seconds=0)


def _dead_letters(module_aws: Any) -> list[str]:
    from chalicelib.core import aws as clients

    found = clients.client("sqs").receive_message(
        QueueUrl=module_aws.s3_events_dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    )
    return [message["Body"] for message in found.get("Messages", [])]


def _rejection(http: Http, token: str, key: str) -> dict[str, Any]:
    listed = http.call("GET", "/dataset-rejections", token=token).data["rejections"]
    found = [item for item in listed if item["source_key"] == key]
    assert len(found) == 1, listed
    return found[0]


def test_an_uploaded_json_lines_file_with_a_deep_record_is_rejected_not_dead_lettered(
    module_http: Http, module_tokens: Tokens, module_aws: Any
) -> None:
    dataset_id = json_dataset(module_http)
    key = f"incoming/{dataset_id}/deep.jsonl"
    put(key, (_deep_record() + "\n").encode())
    _deliver_through_the_queue(module_aws)
    rejection = _rejection(module_http, module_tokens.admin, key)
    assert "deeper than 64 levels" in rejection["reason"]
    assert rejection["rejected_key"] == f"rejected/{dataset_id}/deep.jsonl"
    assert keys(f"incoming/{dataset_id}/") == []
    assert keys(f"rejected/{dataset_id}/") == [f"rejected/{dataset_id}/deep.jsonl"]
    assert not any("deep.jsonl" in body for body in _dead_letters(module_aws))
    assert versions(module_http, dataset_id) == []


def test_a_deep_record_past_the_schema_sample_is_422_where_it_is_read(
    module_http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.dataversion.service import get_versioning_engine

    monkeypatch.setattr(get_versioning_engine(), "sample_rows", 2)
    dataset_id = json_dataset(module_http)
    data = '{"a": 1}\n{"a": 2}\n{"a": 3}\n' + '{"a": ' + deep_array(DEEP) + "}\n"
    created = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": data})
    assert created.status_code == 201, created.data
    assert created.data["schema_sampled_rows"] == 2
    spec = {"type": "filter", "predicates": [{"column": "a", "op": "gt", "value": 1}]}
    response = module_http.call(
        "POST",
        f"/datasets/{dataset_id}/transformations",
        {"transformation": spec, "source_version_ids": [created.data["version_id"]]},
    )
    refused(response, 422, "JSON line 4", "deeper than 64 levels")
    assert len(versions(module_http, dataset_id)) == 1


# ---- numbers inside dataset content -----------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "filter", "predicates": [{"column": "a", "op": "gt", "value": 1}]},
        {"type": "normalization", "method": "zscore", "columns": ["a"]},
        {"type": "aggregate", "aggregations": [{"func": "mean", "column": "a"}]},
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_number_beyond_a_double_in_the_data_is_422_when_computed_with(
    module_http: Http, spec: dict[str, Any], fmt: str
) -> None:
    big = "7" * 400
    if fmt == "csv":
        dataset_id = dataset(module_http)
        data = f"a,b\n1,x\n{big},y\n"
    else:
        dataset_id = json_dataset(module_http)
        data = '{"a": 1, "b": "x"}\n' + with_raw({"a": RAW, "b": "y"}, big) + "\n"
    created = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": data})
    assert created.status_code == 201, created.data
    response = module_http.call(
        "POST",
        f"/datasets/{dataset_id}/transformations",
        {"transformation": spec, "source_version_ids": [created.data["version_id"]]},
    )
    refused(response, 422, "too large to compute with")
    assert len(versions(module_http, dataset_id)) == 1


# ---- over-long first lines: the schema check runs on every ingest path -------------------


def _csv_dataset_with_a_schema(http: Http) -> str:
    dataset_id = dataset(http)
    created = http.call("POST", f"/datasets/{dataset_id}/versions", {"data": "a,b\n1,2\n"})
    assert created.status_code == 201, created.data
    assert created.data["schema"]["columns"] == {"a": "int", "b": "int"}
    return dataset_id


def _long_header(row: bytes) -> bytes:
    from chalicelib.dataversion.schema import MAX_FIRST_LINE_BYTES

    # A required column added (422 inline) behind a header longer than the schema sample.
    return b"a,b,c" + b"x" * MAX_FIRST_LINE_BYTES + b"\n" + row + b"\n"


def test_an_uploaded_csv_whose_header_is_over_8_mib_is_rejected_not_versioned_unchecked(
    module_http: Http, module_tokens: Tokens, module_aws: Any
) -> None:
    dataset_id = _csv_dataset_with_a_schema(module_http)
    key = f"incoming/{dataset_id}/wide.csv"
    put(key, _long_header(b"1,2,3"))
    _deliver_through_the_queue(module_aws)
    rejection = _rejection(module_http, module_tokens.admin, key)
    assert "CSV header is longer than 8388608 bytes" in rejection["reason"]
    assert [v["version_number"] for v in versions(module_http, dataset_id)] == [1]
    assert keys(f"incoming/{dataset_id}/") == []


def test_a_direct_upload_whose_header_is_over_8_mib_is_rejected_not_versioned_unchecked(
    module_http: Http, module_tokens: Tokens, module_aws: Any
) -> None:
    import hashlib

    import requests

    dataset_id = _csv_dataset_with_a_schema(module_http)
    body = _long_header(b"4,5,6")
    upload = module_http.call(
        "POST",
        f"/datasets/{dataset_id}/uploads",
        {"filename": "wide.csv", "sha256": hashlib.sha256(body).hexdigest()},
    )
    assert upload.status_code == 201 and upload.data["mode"] == "direct", upload.data
    sent = requests.put(upload.data["url"], data=body, headers=upload.data["headers"], timeout=60)
    assert sent.status_code == 200, sent.text
    _deliver_through_the_queue(module_aws)
    rejection = _rejection(module_http, module_tokens.admin, upload.data["key"])
    assert "CSV header is longer than 8388608 bytes" in rejection["reason"]
    assert [v["version_number"] for v in versions(module_http, dataset_id)] == [1]


def test_an_uploaded_json_lines_file_whose_first_record_is_over_8_mib_is_rejected(
    module_http: Http, module_tokens: Tokens, module_aws: Any
) -> None:
    from chalicelib.dataversion.schema import MAX_FIRST_LINE_BYTES

    dataset_id = json_dataset(module_http)
    key = f"incoming/{dataset_id}/wide.jsonl"
    record = json.dumps({"a": 1, "pad": "x" * MAX_FIRST_LINE_BYTES})
    put(key, (record + "\n" + '{"a": 2, "pad": ""}\n').encode())
    _deliver_through_the_queue(module_aws)
    rejection = _rejection(module_http, module_tokens.admin, key)
    assert "first JSON line is longer than 8388608 bytes" in rejection["reason"]
    assert versions(module_http, dataset_id) == []


# ---- Parquet footers that claim more than the file holds ----------------------------------


def _absurd_parquet() -> bytes:
    """49 bytes: a schema with one column and num_rows 2^63 - 1, no row groups."""
    from tests.helpers.parquet import INT_COLUMN, file_of, footer, root

    return file_of(footer([root(1), INT_COLUMN], num_rows=2**63 - 1, groups=[]))


def _parquet_dataset(http: Http) -> str:
    body = {"name": unique("pq"), "format": "parquet", "access_groups": ["ml"]}
    response = http.call("POST", "/datasets", body)
    assert response.status_code == 201, response.data
    return response.data["dataset_id"]


def test_a_49_byte_parquet_file_claiming_2_63_rows_is_422_inline(module_http: Http) -> None:
    import base64

    data = _absurd_parquet()
    assert len(data) == 49  # the file had 57 bytes; what matters is the claim
    dataset_id = _parquet_dataset(module_http)
    body = {"data_base64": base64.b64encode(data).decode()}
    response = module_http.call("POST", f"/datasets/{dataset_id}/versions", body)
    refused(response, 422, f"claims {2**63 - 1} rows but its 0 row groups hold 0")
    assert response.data["error"] == "unreadable_content"
    assert versions(module_http, dataset_id) == []


def test_an_uploaded_parquet_file_claiming_2_63_rows_is_rejected(
    module_http: Http, module_tokens: Tokens, module_aws: Any
) -> None:
    dataset_id = _parquet_dataset(module_http)
    key = f"incoming/{dataset_id}/absurd.parquet"
    put(key, _absurd_parquet())
    _deliver_through_the_queue(module_aws)
    rejection = _rejection(module_http, module_tokens.admin, key)
    assert "row groups hold 0" in rejection["reason"]
    assert versions(module_http, dataset_id) == []
    assert keys(f"rejected/{dataset_id}/") == [f"rejected/{dataset_id}/absurd.parquet"]


# ---- finite inputs whose explanation overflows ------------------------------------------


@pytest.fixture(scope="module")
def explained_model(module_http: Http) -> str:
    response = module_http.call("POST", "/models", {"name": unique("finite")})
    model = response.data["model_id"]
    body = version_body()
    body["background_sample"] = [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [0.3, 0.1, -0.2]]
    assert module_http.call("POST", f"/models/{model}/versions", body).status_code == 201
    extreme = {**body, "background_sample": [[1.7e308, 1e308, -1.7e308], [1.0, 1.0, 1.0]]}
    assert module_http.call("POST", f"/models/{model}/versions", extreme).status_code == 201
    return model


def test_an_explanation_that_overflows_is_422_not_nulls_or_a_500(
    module_http: Http, explained_model: str
) -> None:
    row = {"f0": 1.7e308, "f1": 1.7e308, "f2": -1.7e308}
    base = {"model_id": explained_model, "model_version": 1}
    single = module_http.call("POST", "/explanations", {**base, "input_data": row})
    refused(single, 422, "not finite", "overflow")
    assert single.data["error"] == "not_finite"
    inputs = [row, {"f0": 1.0, "f1": 1.0, "f2": 1.0}]
    overall = module_http.call("POST", "/explanations/global", {**base, "inputs": inputs})
    refused(overall, 422, "not finite")
    background = {"model_id": explained_model, "model_version": 2, "input_data": inputs[1]}
    refused(module_http.call("POST", "/explanations", background), 422, "not finite")
    ordinary = module_http.call("POST", "/explanations", {**base, "input_data": inputs[1]})
    assert ordinary.status_code == 200, ordinary.data


def test_a_job_whose_explanation_overflows_fails_with_the_reason(
    module_http: Http, explained_model: str
) -> None:
    from chalicelib.explainability.service import get_explanation_service

    body = {
        "model_id": explained_model,
        "model_version": 1,
        "inputs": [{"f0": 1.7e308, "f1": 1.0, "f2": 1.0}],
        "asynchronous": True,
    }
    submitted = module_http.call("POST", "/explanations/batch", body)
    assert submitted.status_code == 202, submitted.data
    job_id = submitted.data["job_id"]
    get_explanation_service().handle_job(job_id)
    job = module_http.call("GET", f"/explanations/jobs/{job_id}").data
    assert job["status"] == "failed" and job["error"]["error"] == "not_finite", job
