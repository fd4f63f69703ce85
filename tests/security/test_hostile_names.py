"""Names and descriptions cannot hold NUL, other C0/C1 controls or bidirectional-formatting
characters: every schema uses the one validator in :mod:`chalicelib.core.text`, every refusal
is a 400 that names the field and the character (never echoing it), and nothing is created.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.core.http import ROUTES
from tests.conftest import Http, Tokens
from tests.security.helpers import dataset, unique

# One of each family: NUL, ESC, DEL, a C1 control (NEL), RLO, LRI, ALM, the line separator.
NAME_HOSTILE = ["\x00", "\x1b", "\x7f", "\x85", "\u202e", "\u2066", "\u061c", "\u2028"]
# Free text may hold tabs and line breaks, not the rest.
TEXT_HOSTILE = ["\x00", "\x1b", "\x85", "\u202e", "\u2069"]

VARIANTS_AT = [
    {"variant_id": "c@", "model_id": "m-x", "model_version": 1, "traffic_weight": "0.5",
     "is_control": True},
    {"variant_id": "t", "model_id": "m-x", "model_version": 1, "traffic_weight": "0.5"},
]  # fmt: skip
VARIANTS = [{**VARIANTS_AT[0], "variant_id": "c"}, VARIANTS_AT[1]]
VERSION = {"artifact_base64": "AA==", "task": "classification"}
DATA = {"data": "a\n1\n"}
KEY = {"principal": "p", "roles": ["reader"]}
OUTCOME = {"variant_id": "c", "request_id": "r", "success": True, "latency_ms": 1.0}

# (what, kind, method, path, body): "@" in a key or a string of the body is the hostile value;
# "{ds}" is a real dataset with a version.
FIELDS: list[tuple[str, str, str, str, Any]] = [
    ("dataset name", "name", "POST", "/datasets", {"name": "d@"}),
    ("dataset description", "text", "POST", "/datasets", {"name": "d", "description": "@"}),
    ("access group", "name", "POST", "/datasets", {"name": "d", "access_groups": ["@"]}),
    ("column", "name", "POST", "/datasets", {"name": "d", "schema": {"columns": {"@": "int"}}}),
    ("tag key", "name", "POST", "/datasets/{ds}/versions", {**DATA, "tags": {"@": "x"}}),
    ("tag value", "name", "POST", "/datasets/{ds}/versions", {**DATA, "tags": {"k": "@"}}),
    ("upload file name", "name", "POST", "/datasets/{ds}/uploads", {"filename": "a@.csv"}),
    ("usage purpose", "name", "POST", "/datasets/{ds}/versions/1/usages",
     {"experiment_id": "e", "purpose": "@"}),
    ("model name", "name", "POST", "/models", {"name": "m@"}),
    ("model description", "text", "POST", "/models", {"name": "m", "description": "@"}),
    ("feature name", "name", "POST", "/models/m-x/versions", {**VERSION, "feature_names": ["@"]}),
    ("class name", "name", "POST", "/models/m-x/versions", {**VERSION, "class_names": ["@"]}),
    ("metadata key", "name", "POST", "/models/m-x/versions", {**VERSION, "metadata": {"@": "x"}}),
    ("metadata value", "text", "POST", "/models/m-x/versions", {**VERSION, "metadata": {"k": "@"}}),
    ("version description", "text", "POST", "/models/m-x/versions",
     {**VERSION, "description": "@"}),
    ("experiment name", "name", "POST", "/experiments", {"name": "e@", "variants": VARIANTS}),
    ("experiment description", "text", "POST", "/experiments",
     {"name": "e", "description": "@", "variants": VARIANTS}),
    ("variant id", "name", "POST", "/experiments", {"name": "e", "variants": VARIANTS_AT}),
    ("guardrail metric", "name", "POST", "/experiments",
     {"name": "e", "variants": VARIANTS, "guardrail_metrics": ["@"]}),
    ("custom metric", "name", "POST", "/experiments/e-x/outcomes",
     {**OUTCOME, "custom_metrics": {"m@": 1.0}}),
    ("rollback reason", "text", "POST", "/experiments/e-x/rollback", {"reason": "r@"}),
    ("principal", "name", "POST", "/auth/keys", {**KEY, "principal": "p@"}),
    ("group", "name", "POST", "/auth/keys", {**KEY, "groups": ["@"]}),
    ("key description", "text", "POST", "/auth/keys", {**KEY, "description": "@"}),
]  # fmt: skip


def fill(template: Any, value: str) -> Any:
    """``template`` with the value in place of every "@" (in keys and strings)."""
    if isinstance(template, dict):
        return {fill(k, value): fill(v, value) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(item, value) for item in template]
    if isinstance(template, str):
        return template.replace("@", value)
    return template


def _cases() -> list[Any]:
    cases = []
    for what, kind, method, path, body in FIELDS:
        for char in NAME_HOSTILE if kind == "name" else TEXT_HOSTILE:
            cases.append(pytest.param(method, path, body, char, id=f"{what}-U+{ord(char):04X}"))
    return cases


def _send(http: Http, token: str, case: tuple[str, str, Any], value: str, dataset_id: str) -> Any:
    method, path, body = case
    return http.call(method, path.replace("{ds}", dataset_id), fill(body, value), token=token)


@pytest.fixture(scope="module")
def dataset_id(module_http: Http) -> str:
    found = dataset(module_http)
    module_http.call("POST", f"/datasets/{found}/versions", {"data": "a\n1\n"})
    return found


def _counts(http: Http, token: str) -> list[int]:
    lists = [("/models", "models"), ("/experiments", "experiments"), ("/datasets", "datasets")]
    counts = [len(http.call("GET", path, token=token).data[key]) for path, key in lists]
    return [*counts, len(http.call("GET", "/auth/keys", token=token).data["keys"])]


@pytest.mark.parametrize(("method", "path", "body", "char"), _cases())
def test_a_control_or_bidi_character_is_400_naming_the_field_and_creates_nothing(
    module_http: Http,
    module_tokens: Tokens,
    dataset_id: str,
    method: str,
    path: str,
    body: Any,
    char: str,
) -> None:
    before = _counts(module_http, module_tokens.admin)
    response = _send(module_http, module_tokens.admin, (method, path, body), char, dataset_id)
    assert response.status_code == 400, response.data
    error = response.data
    assert error["error"] == "invalid_request"
    assert f"U+{ord(char):04X}" in error["message"]
    assert "control or bidirectional-formatting" in error["message"]
    assert char not in json.dumps(error, ensure_ascii=False)  # named, never echoed
    assert _counts(module_http, module_tokens.admin) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [pytest.param(*case[2:], id=case[0]) for case in FIELDS if case[1] == "text"],
)
def test_free_text_keeps_tabs_and_line_breaks(
    module_http: Http, module_tokens: Tokens, dataset_id: str, method: str, path: str, body: Any
) -> None:
    text = "line one\n\tline two\r\n"
    response = _send(module_http, module_tokens.admin, (method, path, body), text, dataset_id)
    assert "control" not in (response.data or {}).get("message", ""), response.data


def test_names_with_other_unicode_are_kept(module_http: Http) -> None:
    name = unique("Ünïcødé-名前-🙂-עברית")  # right-to-left script is fine, overrides are not
    response = module_http.call("POST", "/models", {"name": name, "description": "a\nb"})
    assert response.status_code == 201, response.data
    assert response.data["name"] == name


def test_a_dataset_name_keeps_its_own_rule_and_documents_both(module_http: Http) -> None:
    from chalicelib.core.text import name_pattern

    response = module_http.call("POST", "/datasets", {"name": "a/b"})
    assert response.status_code == 400
    document = module_http.call("GET", "/openapi.json").data
    body = document["paths"]["/datasets"]["post"]["requestBody"]["content"]["application/json"]
    schema = body["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].split("/")[-1]]
    assert schema["properties"]["name"]["pattern"] == name_pattern("/")


def test_an_incoming_key_with_a_bidi_override_is_rejected_not_versioned(
    module_http: Http, module_tokens: Tokens, dataset_id: str
) -> None:
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    key = f"incoming/{dataset_id}/invoice\u202evsc.csv"
    bucket = get_settings().data_bucket
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=b"a\n2\n")
    event = module_http.client.events.generate_s3_event(bucket=bucket, key=key)
    module_http.client.lambda_.invoke("dataset_ingest", event)
    listed = module_http.call("GET", "/dataset-rejections", token=module_tokens.admin).data
    reasons = [r["reason"] for r in listed["rejections"] if r["source_key"] == key]
    assert reasons and "U+202E" in reasons[0] and "\u202e" not in reasons[0], listed
    versions = module_http.call("GET", f"/datasets/{dataset_id}/versions").data["versions"]
    assert all("\u202e" not in (v["source_key"] or "") for v in versions)


def test_a_message_that_quotes_the_request_shows_controls_escaped(module_http: Http) -> None:
    response = module_http.call("GET", "/datasets/ds-\u202eevil")
    assert response.status_code == 404
    assert "\u202e" not in response.data["message"] and "\\u202e" in response.data["message"]


# ---- every schema uses the shared validator ---------------------------------------------

# String fields that are not names or free text: references to ids (checked by lookup), data,
# opaque client tokens and fields with their own pattern or enumeration.
RAW_FIELDS = {
    "data", "data_base64", "artifact_base64", "artifact_upload_key", "key", "upload_id",
    "etag", "request_id", "user_id", "format", "text", "class_name", "feature",
    "interaction_feature", "a", "b", "as_of", "version", "background_sample",
    # a route request's targeting attributes: data compared with conditions (like user_id),
    # and an opaque, signed page token (a bad one is a 400)
    "attributes", "next_token",
}  # fmt: skip


def _string_fields(schema: dict[str, Any], defs: dict[str, Any], path: str) -> list[tuple]:
    if "$ref" in schema:
        return _string_fields(defs[schema["$ref"].split("/")[-1]], defs, path)
    found: list[tuple] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found += _string_fields(sub, defs, path)
    if schema.get("type") == "string":
        found.append((path, schema))
    for name, sub in schema.get("properties", {}).items():
        found += _string_fields(sub, defs, f"{path}.{name}")
    for pattern, sub in schema.get("patternProperties", {}).items():
        found.append((f"{path}{{key}}", {"type": "string", "pattern": pattern}))
        found += _string_fields(sub, defs, f"{path}{{}}")
    if isinstance(schema.get("items"), dict):
        found += _string_fields(schema["items"], defs, f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        keys = schema.get("propertyNames", {"type": "string"})
        found += _string_fields({"type": "string", **keys}, defs, f"{path}{{key}}")
        found += _string_fields(schema["additionalProperties"], defs, f"{path}{{}}")
    return found


def _is_raw(path: str) -> bool:
    last = path.rstrip("[]{}").split(".")[-1]
    return last in RAW_FIELDS or last.endswith(("_id", "_ids"))


def test_every_name_and_text_field_of_every_request_schema_uses_the_shared_validator() -> None:
    from pydantic import TypeAdapter

    import app  # noqa: F401 - registers every blueprint
    from chalicelib.core.text import NAME_PATTERN, TEXT_PATTERN

    unchecked = []
    for spec in ROUTES:
        for kind in ("body", "query"):
            model = getattr(spec, kind)
            if model is None:
                continue
            schema = TypeAdapter(model).json_schema()
            for path, field in _string_fields(schema, schema.get("$defs", {}), kind):
                if "enum" in field or "format" in field or _is_raw(path):
                    continue
                pattern = field.get("pattern", "")
                ours = pattern in (NAME_PATTERN, TEXT_PATTERN) or "\\u202a-\\u202e" in pattern
                if (
                    not ours
                    and not pattern.startswith("^[0")  # numbers: "^[0-9]…", "^[0]…"
                    and not pattern.startswith("^[A-Za-z")
                ):
                    unchecked.append(f"{spec.method} {spec.path} {path}")
    assert unchecked == [], "\n".join(unchecked)


# Column names read from the data itself: a CSV header cell (also quoted, with a line break in
# it), a JSON-lines key (escaped in the JSON text), each refused like a name a client types.
DATA_COLUMNS = {
    "csv-rlo": ("csv", "ad\u202enimda,b\n1,2\n", "U+202E"),
    "csv-nul-esc": ("csv", "a\u0000b,\u001b[31mred\n1,2\n", "U+0000"),
    "csv-quoted-newline": ("csv", '"multi\nline",b\n1,2\n', "U+000A"),
    "jsonl-escaped-rlo": ("json", '{"ad\\u202enimda": 1, "x": 2}\n', "U+202E"),
    "jsonl-escaped-nul": ("json", '{"a": 1, "x\\u0000": 2}\n', "U+0000"),
}


@pytest.mark.parametrize("case", sorted(DATA_COLUMNS))
def test_a_column_name_read_from_the_data_is_held_to_the_name_rule(
    module_http: Http, case: str
) -> None:
    fmt, data, code = DATA_COLUMNS[case]
    made = module_http.call("POST", "/datasets", {"name": unique("cols"), "format": fmt})
    dataset_id = made.data["dataset_id"]
    response = module_http.call("POST", f"/datasets/{dataset_id}/versions", {"data": data})
    assert response.status_code == 422, response.data
    assert response.data["error"] == "unreadable_content"
    message = response.data["message"]
    assert code in message and not any(c in message for c in "\u202e\x00\x1b")
    versions = module_http.call("GET", f"/datasets/{dataset_id}/versions").data["versions"]
    assert versions == []


def test_an_uploaded_file_with_a_bidi_column_name_is_rejected_not_versioned(
    module_http: Http, module_tokens: Tokens, dataset_id: str
) -> None:
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    key = f"incoming/{dataset_id}/columns.csv"
    bucket = get_settings().data_bucket
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body="ad\u202enimda\n2\n".encode())
    event = module_http.client.events.generate_s3_event(bucket=bucket, key=key)
    module_http.client.lambda_.invoke("dataset_ingest", event)
    listed = module_http.call("GET", "/dataset-rejections", token=module_tokens.admin).data
    reasons = [r["reason"] for r in listed["rejections"] if r["source_key"] == key]
    assert reasons and "U+202E" in reasons[0] and "\u202e" not in reasons[0], listed
    versions = module_http.call("GET", f"/datasets/{dataset_id}/versions").data["versions"]
    assert all(v["source_key"] != key for v in versions)


def test_a_parquet_leaf_name_with_a_bidi_override_is_refused(module_http: Http) -> None:
    import base64
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"ad\u202enimda": [1, 2]}), sink)
    made = module_http.call("POST", "/datasets", {"name": unique("pq"), "format": "parquet"})
    dataset_id = made.data["dataset_id"]
    body = {"data_base64": base64.b64encode(sink.getvalue()).decode()}
    response = module_http.call("POST", f"/datasets/{dataset_id}/versions", body)
    assert response.status_code == 422 and "U+202E" in response.data["message"], response.data
