"""Extends the role matrix (tests/integration/test_auth_matrix.py) with ownership: a writer of
another group never reads or changes a dataset, its versions or their lineage, on any route that
takes a dataset or version id; a reader of the dataset's group reads but does not write.

Routes come from ``ROUTES``, so new dataset routes are covered automatically.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from chalicelib.core.http import ROUTES, RouteSpec
from tests.conftest import Http, Tokens
from tests.security.helpers import dataset, dataset_version

IDS = ("dataset_id", "version_id")
# Bodies that pass the handler's own checks (which, harmlessly, run before the access check).
EXPLICIT_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/datasets/{dataset_id}/versions"): {"data": "a,b\n5,6\n"},
}


def _routes() -> list[RouteSpec]:
    import app  # noqa: F401 - registers every blueprint

    return [s for s in ROUTES if any(f"{{{name}}}" in s.path for name in IDS) and s.role]


@pytest.fixture(scope="module")
def owned(module_http: Http, module_tokens: Tokens) -> dict[str, str]:
    """A dataset of group ``ml`` owned by the writer, with one version."""
    dataset_id = dataset(module_http, token=module_tokens.writer, groups=["ml"])
    version = dataset_version(module_http, dataset_id, token=module_tokens.writer)
    return {
        "dataset_id": dataset_id,
        "version_id": version["version_id"],
        "version": str(version["version_number"]),
    }


def _path(spec: RouteSpec, ids: dict[str, str]) -> str:
    return re.sub(r"{([^}]+)}", lambda m: ids.get(m.group(1), "1"), spec.path)


def _body(spec: RouteSpec) -> Any:
    return {} if spec.body is not None else None


@pytest.fixture(scope="module")
def schema() -> Any:
    import schemathesis

    from chalicelib.core.openapi import build_openapi

    return schemathesis.openapi.from_dict(build_openapi())


def _generated_calls(
    http: Http, schema: Any, spec: RouteSpec, ids: dict[str, str], token: str
) -> list[tuple[int, Any]]:
    """Schema-valid bodies and queries (schemathesis), with the real ids in the path."""
    from hypothesis import HealthCheck, Phase, given, settings

    operation = schema[spec.path][spec.method]
    seen: list[tuple[int, Any]] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=8,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        path = _path(spec, ids)
        query = case.query or {}
        if query:
            path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        response = http.call(spec.method, path, case.body if spec.body else None, token=token)
        seen.append((response.status_code, response.data))

    call()
    return seen


@pytest.mark.parametrize("spec", _routes(), ids=lambda s: f"{s.method} {s.path}")
def test_a_writer_of_another_group_is_refused(
    module_http: Http, module_tokens: Tokens, owned: dict[str, str], spec: RouteSpec, schema: Any
) -> None:
    seen = _generated_calls(module_http, schema, spec, owned, module_tokens.other_writer)
    explicit = EXPLICIT_BODIES.get((spec.method, spec.path))
    if explicit is not None:
        response = module_http.call(
            spec.method, _path(spec, owned), explicit, token=module_tokens.other_writer
        )
        seen.append((response.status_code, response.data))
    statuses = sorted({status for status, _ in seen})
    # Never a success; the access check answers 404 (the dataset is invisible) or 403; malformed
    # generated input may be refused first with 400/422, which reveals nothing.
    assert set(statuses) <= {400, 403, 404, 422}, seen
    assert {403, 404} & set(statuses), f"access was never checked: {statuses}"


@pytest.mark.parametrize(
    "spec", [s for s in _routes() if s.role != "reader"], ids=lambda s: f"{s.method} {s.path}"
)
def test_a_reader_of_the_group_cannot_write(
    module_http: Http, module_tokens: Tokens, owned: dict[str, str], spec: RouteSpec
) -> None:
    response = module_http.call(
        spec.method, _path(spec, owned), _body(spec), token=module_tokens.reader
    )
    assert response.status_code == 403, response.data


def test_a_reader_of_the_group_reads_and_others_do_not_see_it(
    module_http: Http, module_tokens: Tokens, owned: dict[str, str]
) -> None:
    path = f"/datasets/{owned['dataset_id']}"
    assert module_http.call("GET", path, token=module_tokens.reader).status_code == 200
    listed = module_http.call("GET", "/datasets", token=module_tokens.other_writer).data
    assert owned["dataset_id"] not in {d["dataset_id"] for d in listed["datasets"]}
