"""Dataset routes over HTTP: creation, versions, access control, comparison, lineage."""

from __future__ import annotations

import base64
import csv
import io
import json
from typing import Any

import pytest

from tests.conftest import Http, Tokens

CSV = "id,score,label\n1,0.5,a\n2,0.75,b\n3,1.0,a\n"


@pytest.fixture
def dataset(http: Http) -> dict[str, Any]:
    response = http.call(
        "POST", "/datasets", {"name": "clicks", "access_groups": ["ml"], "description": "d"}
    )
    assert response.status_code == 201, response.data
    return response.data


def add(http: Http, dataset_id: str, data: str, token: str | None = None, **extra: Any) -> Any:
    return http.call("POST", f"/datasets/{dataset_id}/versions", {"data": data, **extra}, token)


def test_create_dataset_and_version_then_read_it_back(http: Http, dataset: dict) -> None:
    assert dataset["owner"] == "alice"
    created = add(http, dataset["dataset_id"], CSV, tags={"source": "web"})
    assert created.status_code == 201
    assert created.data["created"] is True
    assert created.data["row_count"] == 3
    assert created.data["schema"]["columns"] == {"id": "int", "score": "float", "label": "string"}
    by_number = http.call("GET", f"/datasets/{dataset['dataset_id']}/versions/1")
    by_id = http.call(
        "GET", f"/datasets/{dataset['dataset_id']}/versions/{created.data['version_id']}"
    )
    assert by_number.data == by_id.data
    assert by_number.data["tags"] == {"source": "web"}


def test_identical_content_is_200_with_the_existing_version(http: Http, dataset: dict) -> None:
    first = add(http, dataset["dataset_id"], CSV)
    again = add(http, dataset["dataset_id"], CSV)
    assert again.status_code == 200
    assert again.data["version_id"] == first.data["version_id"]
    assert again.data["created"] is False


def test_binary_content_with_base64(http: Http, dataset: dict) -> None:
    raw = b"\x93NUMPY\x01\x00fake"
    response = http.call(
        "POST",
        f"/datasets/{dataset['dataset_id']}/versions",
        {"data_base64": base64.b64encode(raw).decode(), "format": "numpy"},
    )
    assert response.status_code == 201
    assert response.data["format"] == "numpy" and response.data["row_count"] is None


def test_content_must_be_given_exactly_once_as_text_or_base64(http: Http, dataset: dict) -> None:
    path = f"/datasets/{dataset['dataset_id']}/versions"
    both = {"data": CSV, "data_base64": base64.b64encode(CSV.encode()).decode()}
    for body in (both, {"format": "csv"}):
        response = http.call("POST", path, body)
        assert response.status_code == 400, body
        assert response.data == {
            "error": "invalid_request",
            "message": "give exactly one of 'data' or 'data_base64'",
        }
    assert http.call("GET", path).data["versions"] == []


def test_duplicate_name_is_409(http: Http, dataset: dict) -> None:
    response = http.call("POST", "/datasets", {"name": "clicks"})
    assert response.status_code == 409


def test_schema_break_is_422_listing_problems(http: Http, dataset: dict) -> None:
    add(http, dataset["dataset_id"], CSV)
    response = add(http, dataset["dataset_id"], "id,score,label\nx1,0.5,a\n")
    assert response.status_code == 422
    assert response.data["error"] == "schema_incompatible"
    assert any("'id'" in problem for problem in response.data["details"])
    dropped = add(http, dataset["dataset_id"], "id,label\n1,a\n")
    assert dropped.status_code == 201  # dropping a column is backward compatible
    response = http.call("POST", "/datasets", {"name": "full", "compatibility": "full"})
    full_id = response.data["dataset_id"]
    add(http, full_id, CSV)
    broken = add(http, full_id, "id,label\n1,a\n")
    assert broken.status_code == 422
    assert any("'score'" in problem and "forward" in problem for problem in broken.data["details"])


def test_declared_schema_mismatch_is_422_naming_the_column(http: Http) -> None:
    body = {
        "name": "typed",
        "schema": {"columns": {"id": "int", "score": "int", "label": "string"}},
    }
    dataset_id = http.call("POST", "/datasets", body).data["dataset_id"]
    response = add(http, dataset_id, CSV)
    assert response.status_code == 422
    assert "'score'" in response.data["message"]


def test_malformed_csv_is_422_not_500(http: Http, dataset: dict) -> None:
    response = add(http, dataset["dataset_id"], "a,b\n1,2,3\n")
    assert response.status_code == 422


def test_group_member_reads_outsider_gets_404_and_listing_is_filtered(
    http: Http, tokens: Tokens, dataset: dict
) -> None:
    private = http.call("POST", "/datasets", {"name": "private"}).data
    add(http, dataset["dataset_id"], CSV)
    path = f"/datasets/{dataset['dataset_id']}"
    assert http.call("GET", path, token=tokens.reader).status_code == 200
    assert http.call("GET", f"{path}/versions/1", token=tokens.reader).status_code == 200
    assert http.call("GET", path, token=tokens.other_writer).status_code == 404
    assert http.call("GET", f"{path}/versions", token=tokens.other_writer).status_code == 404
    assert add(http, dataset["dataset_id"], "id\n1\n", token=tokens.other_writer).status_code == 404
    assert (
        http.call("GET", f"/datasets/{private['dataset_id']}", token=tokens.reader).status_code
        == 404
    )
    names = [d["name"] for d in http.call("GET", "/datasets", token=tokens.reader).data["datasets"]]
    assert names == ["clicks"]
    admin = [d["name"] for d in http.call("GET", "/datasets", token=tokens.admin).data["datasets"]]
    assert admin == ["clicks", "private"]
    assert http.call("GET", "/datasets", token=tokens.other_writer).data["datasets"] == []


def test_reader_in_group_cannot_write(http: Http, tokens: Tokens, dataset: dict) -> None:
    response = add(http, dataset["dataset_id"], CSV, token=tokens.reader)
    assert response.status_code == 403


def test_group_writer_who_is_not_owner_can_write(http: Http, tokens: Tokens) -> None:
    from chalicelib.auth.service import get_auth_service

    carol = get_auth_service().create_key("carol", ["writer"], ["ml"]).token
    dataset_id = http.call("POST", "/datasets", {"name": "shared", "access_groups": ["ml"]}).data[
        "dataset_id"
    ]
    assert add(http, dataset_id, CSV, token=carol).status_code == 201


def test_outsider_cannot_see_lineage_or_content(http: Http, tokens: Tokens, dataset: dict) -> None:
    version = add(http, dataset["dataset_id"], CSV).data
    assert (
        http.call("GET", f"/lineage/{version['version_id']}", token=tokens.other_writer).status_code
        == 404
    )
    content = f"/datasets/{dataset['dataset_id']}/versions/1/content"
    assert http.call("GET", content, token=tokens.other_writer).status_code == 404
    assert http.call("GET", content, token=tokens.reader).status_code == 200


def test_versions_list_paginates(http: Http, dataset: dict) -> None:
    for i in range(3):
        add(http, dataset["dataset_id"], CSV + f"{i + 10},0.1,c\n")
    page = http.call("GET", f"/datasets/{dataset['dataset_id']}/versions?limit=2&offset=0").data
    assert [v["version_number"] for v in page["versions"]] == [1, 2]
    assert page["total"] == 3 and page["next_offset"] == 2
    rest = http.call("GET", f"/datasets/{dataset['dataset_id']}/versions?limit=2&offset=2").data
    assert [v["version_number"] for v in rest["versions"]] == [3]
    assert rest["next_offset"] is None


def test_compare_two_versions(http: Http, dataset: dict) -> None:
    add(http, dataset["dataset_id"], CSV)
    add(http, dataset["dataset_id"], CSV + "4,0.2,b\n")
    diff = http.call("GET", f"/datasets/{dataset['dataset_id']}/compare?a=1&b=2").data
    assert diff["row_count"] == {"a": 3, "b": 4, "diff": 1}
    assert diff["rows"]["mode"] == "multiset"
    assert diff["rows"]["added"] == 1 and diff["rows"]["removed"] == 0
    assert diff["rows"]["added_sample"] == [{"id": "4", "score": "0.2", "label": "b"}]


def test_parent_link_shows_in_lineage(http: Http, dataset: dict) -> None:
    first = add(http, dataset["dataset_id"], CSV).data
    second = add(
        http, dataset["dataset_id"], CSV + "4,0.2,b\n", parent_version_id=first["version_id"]
    ).data
    up = http.call("GET", f"/lineage/{second['version_id']}?direction=both").data
    assert [n["version_id"] for n in up["upstream"]["nodes"]] == [
        second["version_id"],
        first["version_id"],
    ]
    assert up["downstream"]["nodes"][0]["version_id"] == second["version_id"]
    assert up["upstream"]["edges"][0]["parent_id"] == first["version_id"]


def test_unknown_ids_are_404(http: Http) -> None:
    assert http.call("GET", "/datasets/ds-nope").status_code == 404
    assert http.call("GET", "/lineage/dv-nope").status_code == 404
    assert http.call("GET", "/versions/dv-nope/reproducibility").status_code == 404


HOSTILE_CSV = [
    'a,b\r\n1,"x\r\ny"\r\n\r\n2,"""q"""\r',  # CRLF inside quotes, a blank line, a lone CR
    "a\r1\r\r\ufeff2\r-0\r1e5\rNaN\rinf",  # one column, CR only, a BOM inside, no final end
    'a,b\n01,5"\n 1,TRUE\n,\n' + "9" * 40 + ",x",  # stray quote, whitespace, huge integer
    "a,b\n,\n,\n",  # all-null columns
]


@pytest.mark.parametrize("body", HOSTILE_CSV)
def test_inline_csv_versions_count_and_type_as_csv_reads_each_cell(
    http: Http, dataset: dict, body: str
) -> None:
    """Over HTTP, the row count is what ``csv`` reads (blank lines left out) and each column's
    type merges the types of the cells ``csv`` reads, one by one."""
    from chalicelib.dataversion.schema import merge_types, value_type

    header, *rows = [row for row in csv.reader(io.StringIO(body, newline="")) if row]
    kinds: dict[str, str | None] = dict.fromkeys(header)
    for row in rows:
        for name, cell in zip(header, row, strict=True):
            kinds[name] = merge_types(kinds[name], value_type(cell))
    created = add(http, dataset["dataset_id"], body)
    assert created.status_code == 201, created.data
    assert created.data["row_count"] == len(rows)
    assert created.data["schema"]["columns"] == {n: k or "string" for n, k in kinds.items()}


def test_inline_csv_columns_are_typed_as_pyarrow_reads_them(http: Http, dataset: dict) -> None:
    """Over HTTP, spellings Python's ``float()``/``int()`` read and pyarrow does not
    (``1_000``, Arabic-Indic and full-width digits, a no-break space) are strings; padded
    ints, ``+5`` and hexadecimal are typed as pyarrow types them."""
    import pyarrow.csv as pacsv

    body = "a,b,c,d,e,f\n1_000,\u0661\u0662\u0663, 12 ,+5,0x10,\uff11\n2,3,4,5,6,12\u00a0\n"
    table = pacsv.read_csv(io.BytesIO(body.encode()))
    names = {"int64": "int", "double": "float"}
    expected = {f.name: names.get(str(f.type), "string") for f in table.schema}
    assert expected == {"a": "string", "b": "string", "c": "int", "d": "float", "e": "int"} | {
        "f": "string"
    }
    created = add(http, dataset["dataset_id"], body)
    assert created.status_code == 201, created.data
    assert created.data["schema"]["columns"] == expected


def test_a_ragged_row_past_the_schema_head_is_422_naming_it(http: Http, dataset: dict) -> None:
    """Over HTTP, a row with a field too few 10,000 rows past the schema's head is refused as
    pyarrow and ``csv`` read it, naming its record, and no version is written."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    body = "a,b\n" + "1,2\n" * 20_000 + '"x,y"\n' + "3,4\n"
    with pytest.raises(pa.ArrowInvalid, match="Expected 2 columns, got 1"):
        pacsv.read_csv(io.BytesIO(body.encode()))
    refused = add(http, dataset["dataset_id"], body)
    assert refused.status_code == 422 and refused.data["error"] == "unreadable_content"
    assert refused.data["message"] == "CSV record 20001 has 1 fields; the header has 2"
    listed = http.call("GET", f"/datasets/{dataset['dataset_id']}/versions").data
    assert listed["versions"] == []


def test_a_json_line_json_refuses_for_its_inner_bom_is_422_and_writes_nothing(
    http: Http, dataset: dict
) -> None:
    body = '{"a": 1}\n\ufeff{"a": 2}\n'
    with pytest.raises(json.JSONDecodeError):
        [json.loads(line) for line in body.splitlines()]
    refused = add(http, dataset["dataset_id"], body, format="json")
    assert refused.status_code == 422 and refused.data["error"] == "unreadable_content"
    assert "JSON record 2" in refused.data["message"]
    listed = http.call("GET", f"/datasets/{dataset['dataset_id']}/versions")
    assert listed.status_code == 200 and listed.data["versions"] == []
