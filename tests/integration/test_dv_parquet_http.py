"""Parquet versions through the API: row counts and schemas from the footer, evolution checks,
declared schemas and S3 ingest by file extension."""

from __future__ import annotations

import base64
import io
from typing import Any
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.parquet as pq

from chalicelib.core.config import get_settings
from tests.conftest import Http


def parquet(columns: dict[str, list[Any]], nullable: bool = True) -> bytes:
    table = pa.table(columns)
    if not nullable:
        table = table.cast(pa.schema([pa.field(f.name, f.type, False) for f in table.schema]))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def post_version(http: Http, dataset_id: str, data: bytes, **extra: Any) -> Any:
    body = {"data_base64": base64.b64encode(data).decode(), **extra}
    return http.call("POST", f"/datasets/{dataset_id}/versions", body)


def create(http: Http, name: str, **extra: Any) -> str:
    made = http.call("POST", "/datasets", {"name": name, "format": "parquet", **extra})
    assert made.status_code == 201, made.data
    return made.data["dataset_id"]


def test_a_parquet_version_gets_its_row_count_and_schema_from_the_footer(http: Http) -> None:
    dataset_id = create(http, "features")
    made = post_version(http, dataset_id, parquet({"id": [1, 2, 3], "x": [0.5, None, 1.5]}))
    assert made.status_code == 201, made.data
    assert made.data["row_count"] == 3
    assert made.data["schema"]["columns"] == {"id": "long", "x": "double"}
    assert made.data["schema"]["nullable"] == ["id", "x"]


def test_parquet_schema_evolution_is_checked_like_csv(http: Http) -> None:
    dataset_id = create(http, "strict", compatibility="full")
    first = parquet({"id": [1, 2], "x": [0.5, 1.5]}, nullable=False)
    assert post_version(http, dataset_id, first).status_code == 201
    # A required column may not be dropped in full mode (a nullable one may: Confluent's rule).
    dropped = post_version(http, dataset_id, parquet({"id": [1, 2]}, nullable=False))
    assert dropped.status_code == 422, dropped.data
    assert "required column 'x' was dropped" in dropped.data["message"]
    retyped = post_version(http, dataset_id, parquet({"id": [1, 2], "x": ["a", "b"]}))
    assert retyped.status_code == 422


def test_a_declared_schema_is_checked_against_the_parquet_schema(http: Http) -> None:
    declared = {"columns": {"id": "long", "x": "double"}, "nullable": []}
    dataset_id = create(http, "declared", schema=declared)
    loose = post_version(http, dataset_id, parquet({"id": [1], "x": [0.5]}))
    assert loose.status_code == 422 and "allows nulls" in loose.data["message"]
    strict = post_version(http, dataset_id, parquet({"id": [1], "x": [0.5]}, nullable=False))
    assert strict.status_code == 201, strict.data


def test_bytes_that_are_not_parquet_are_refused(http: Http) -> None:
    dataset_id = create(http, "broken")
    refused = post_version(http, dataset_id, b"id,x\n1,2\n")
    assert refused.status_code == 422 and "Parquet" in refused.data["message"]
    assert http.call("GET", f"/datasets/{dataset_id}/versions").data["versions"] == []


def test_a_parquet_file_dropped_on_s3_is_versioned_with_its_schema(client: Any, http: Http) -> None:
    from chalicelib.core import aws as clients

    made = http.call("POST", "/datasets", {"name": "drops"})  # a CSV dataset: the extension wins
    dataset_id = made.data["dataset_id"]
    key = f"incoming/{dataset_id}/day 1.parquet"
    body = parquet({"id": [1, 2, 3, 4]})
    clients.client("s3").put_object(Bucket=get_settings().data_bucket, Key=key, Body=body)
    event = client.events.generate_s3_event(
        bucket=get_settings().data_bucket, key=quote_plus(key, safe="/")
    )
    client.lambda_.invoke("dataset_ingest", event)
    (version,) = http.call("GET", f"/datasets/{dataset_id}/versions").data["versions"]
    assert version["format"] == "parquet" and version["row_count"] == 4
    assert version["schema"]["columns"] == {"id": "long"}


def test_parquet_versions_compare_by_schema_and_count_and_refuse_row_transforms(
    http: Http,
) -> None:
    dataset_id = create(http, "compared")
    v1 = post_version(http, dataset_id, parquet({"id": [1, 2]})).data
    post_version(http, dataset_id, parquet({"id": [1, 2, 3], "y": [1.0, 2.0, None]}))
    compared = http.call("GET", f"/datasets/{dataset_id}/compare?a=1&b=2")
    assert compared.status_code == 200, compared.data
    assert compared.data["row_count"] == {"a": 2, "b": 3, "diff": 1}
    assert compared.data["schema"]["added"] == ["y"]
    assert compared.data["rows"] is None and compared.data["rows_note"]
    transform = http.call(
        "POST",
        f"/datasets/{dataset_id}/transformations",
        {
            "source_version_ids": [v1["version_id"]],
            "transformation": {"type": "sample", "fraction": 0.5, "seed": 1},
        },
    )
    assert transform.status_code == 422, transform.data
