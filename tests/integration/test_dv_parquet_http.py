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


def test_a_parquet_version_is_profiled_from_its_footer_statistics_over_every_row(
    http: Http,
) -> None:
    """Counts, nulls, min and max over every row group agree with pyarrow's own computation
    over the whole table; what a footer cannot tell (distinct counts, moments) is null."""
    import numpy as np
    import pyarrow.compute as pc

    rng = np.random.default_rng(3)
    size = 5_000
    ints = rng.integers(-(10**12), 10**12, size)
    floats = rng.normal(50.0, 12.0, size)
    table = pa.table(
        {
            "id": pa.array(ints, pa.int64(), mask=rng.random(size) < 0.1),
            "score": pa.array(floats, mask=rng.random(size) < 0.3),
            "small": pa.array(rng.integers(-50, 50, size), pa.int32()),
            "label": pa.array(
                [f"item {i % 97}" for i in range(size)], mask=rng.random(size) < 0.05
            ),
            "empty": pa.array([None] * size, pa.float64()),
            "tags": pa.array([[i] for i in range(size)]),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=700)  # 8 row groups to merge
    dataset_id = create(http, "profiled-parquet")
    assert post_version(http, dataset_id, sink.getvalue()).status_code == 201
    profile = http.call("GET", f"/datasets/{dataset_id}/versions/1/profile")
    assert profile.status_code == 200, profile.data
    found = profile.data
    assert (found["rows"], found["profiled_rows"], found["sampled"]) == (size, size, False)
    assert found["unprofiled_columns"] == 1  # the list column: counts are not rows
    assert "footer" in found["note"]
    columns = {c["name"]: c for c in found["columns"]}
    assert list(columns) == ["id", "score", "small", "label", "empty"]
    for name in ("id", "score", "small"):
        column = table.column(name)
        extremes = pc.min_max(column).as_py()
        assert columns[name]["kind"] == "numeric"
        assert columns[name]["nulls"] == column.null_count
        assert columns[name]["count"] == size - column.null_count
        assert columns[name]["min"] == float(extremes["min"])
        assert columns[name]["max"] == float(extremes["max"])
        assert columns[name]["distinct"] is None and columns[name]["mean"] is None
    label = table.column("label")
    assert columns["label"]["kind"] == "categorical"
    assert (columns["label"]["count"], columns["label"]["nulls"]) == (
        size - label.null_count,
        label.null_count,
    )
    assert columns["empty"] == {**columns["empty"], "kind": "empty", "count": 0, "nulls": size}


def test_columns_written_without_statistics_are_counted_unprofiled(aws: Any) -> None:
    from chalicelib.dataversion.parquet import read_metadata
    from chalicelib.dataversion.profile import footer_profile

    table = pa.table({"id": [1, 2, None], "x": [0.5, None, 1.5], "s": ["a", None, "c"]})
    sink = io.BytesIO()
    pq.write_table(table, sink, write_statistics=["x"])
    found = footer_profile(read_metadata(sink.getvalue()))
    assert [c["name"] for c in found["columns"]] == ["x"]
    assert found["unprofiled_columns"] == 2
    assert (found["columns"][0]["min"], found["columns"][0]["max"]) == (0.5, 1.5)
    assert found["columns"][0]["nulls"] == 1
