"""Schemathesis against ``GET /openapi.json`` of the running local stack, over loopback HTTP.

Every declared route is a test item (the list comes from ``ROUTES``, so routes that land later
are fuzzed without edits here), with four passes:

* ``admin``: schema-valid requests as an admin; no 5xx, every status documented, every body
  matching the documented schema (success and error shapes).
* ``admin-negative``: schema-violating requests (wrong types, missing fields, bad path values);
  no 5xx, errors in the documented error shape.
* ``reader``: schema-valid requests with a reader token; only 2xx/4xx.
* ``seeded``: schema-valid requests whose path parameters are real ids the API returned
  (see :mod:`tests.reliability.seeding`), so handlers get past their 404 branch.
* ``hostile``: a schema-valid request (with real ids when seeding found them) with one thing
  replaced by what an attacker sends (see :mod:`tests.reliability.hostile`): JSON nested up to
  100,000 deep, 1,000-digit numbers, ``NaN``, control and bidirectional characters, huge
  strings, in the body, a query value or a path parameter. No 5xx, every answer documented.

``SYNAPSE_FUZZ_EXAMPLES`` bounds the examples per pass (default 6, and 4 for the hostile pass,
whose bodies are larger; ``make fuzz`` raises both and lets Hypothesis shrink failures).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chalicelib.core.http import ROUTES, RouteSpec
from tests.helpers.tracing import coverage_paused_in_this_thread
from tests.reliability.hostile import attack
from tests.reliability.seeding import Pool, path_params, seed
from tests.reliability.stack import Api, running_stack

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("SYNAPSE_FUZZ_EXAMPLES", "6"))
HOSTILE_EXAMPLES = max(4, EXAMPLES * 2 // 3)
SHRINK = os.environ.get("SYNAPSE_FUZZ_SHRINK", "") == "1"
PASSES = ("admin", "admin-negative", "reader", "seeded", "hostile")

# Known failures in other packages' routes, by (method, path, pass): a precise reason each.
# Strict xfail: the test fails again as soon as the route is fixed, so the entry gets removed.
KNOWN: dict[tuple[str, str, str], str] = {}
# Known failures that depend on which examples are drawn or on machine speed: not strict.
KNOWN_FLAKY: dict[tuple[str, str, str], str] = {}


def _routes() -> list[RouteSpec]:
    import app  # noqa: F401 - registers every blueprint

    return sorted(ROUTES, key=lambda spec: (spec.path, spec.method))


def _params() -> list[Any]:
    params = []
    for spec in _routes():
        for kind in PASSES:
            if kind == "seeded" and not path_params(spec.path):
                continue
            attackable = spec.body or spec.query or path_params(spec.path)
            if kind in ("admin-negative", "hostile") and not attackable:
                continue  # nothing a request could get wrong
            key = (spec.method, spec.path, kind)
            marks = []
            if key in KNOWN:
                marks = [pytest.mark.xfail(strict=True, reason=KNOWN[key])]
            elif key in KNOWN_FLAKY:
                marks = [pytest.mark.xfail(strict=False, reason=KNOWN_FLAKY[key])]
            params.append(
                pytest.param(spec, kind, marks=marks, id=f"{kind}:{spec.method} {spec.path}")
            )
    # Routes that delete what the seeded ids name (a version, erased content) run last, so the
    # other routes still find the seeded resources alive.
    return sorted(params, key=lambda param: _destroys(param.values[0]))


def _destroys(spec: RouteSpec) -> bool:
    return spec.method == "DELETE" or spec.path.endswith("/erase")


class Fuzz:
    """The running stack, its schema, tokens and the seeded id pool."""

    def __init__(self, stack: Any) -> None:
        import schemathesis

        from chalicelib.auth.service import get_auth_service

        self.api = Api(stack.url, stack.admin_token, __import__("requests").Session())
        self.reader_token = get_auth_service().create_key("fuzz-reader", ["reader"], ["ml"]).token
        self.schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
        self.pool: Pool | None = None

    def seeded_pool(self) -> Pool:
        if self.pool is None:
            self.pool = seed(self.api, self.schema)
        return self.pool


@pytest.fixture(scope="module")
def fuzz() -> Iterator[Fuzz]:
    with running_stack(run_schedules=False, run_pumps=False) as stack:
        yield Fuzz(stack)


def _checks(kind: str) -> list[Any]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]


def _query_required(spec: RouteSpec) -> bool:
    """Whether the route needs query values (random ones, e.g. version refs, may not exist)."""
    fields = getattr(spec.query, "model_fields", {})
    return any(info.is_required() for info in fields.values())


def _settings(examples: int = EXAMPLES) -> Any:
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if SHRINK else [])
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not SHRINK,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )


def _query_names(spec: RouteSpec) -> list[str]:
    fields = getattr(spec.query, "model_fields", {})
    return [info.alias or name for name, info in fields.items()]


def _json_body(case: Any) -> Any:
    body = getattr(case, "body", None)
    return body if isinstance(body, dict | list | str | int | float | bool) else None


def _run_hostile(fuzz: Fuzz, spec: RouteSpec) -> list[int]:
    """Schema-valid cases with one hostile change each; returns the statuses."""
    from schemathesis import GenerationMode

    operation = fuzz.schema[spec.path][spec.method]
    pool = fuzz.seeded_pool()
    fixed = pool.fill(spec.path) if pool.covers(spec.path) else {}
    checks = _checks("hostile")
    sent: list[int] = []
    headers = {"Authorization": f"Bearer {fuzz.api.token}", "Content-Type": "application/json"}

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE), data=st.data())
    @_settings(HOSTILE_EXAMPLES)
    def check(case: Any, data: Any) -> None:
        if fixed:
            case.path_parameters = dict(fixed)
        body = _json_body(case)
        chosen, node = data.draw(
            attack(body, spec.body is not None, _query_names(spec), path_params(spec.path)),
            label="attack",
        )
        extra: dict[str, Any] = {}
        if chosen.where == "body":
            extra["data"] = chosen.body_bytes(body, node)
        elif chosen.where == "query":
            case.query = {**(case.query or {}), chosen.name: chosen.value}
        else:
            case.path_parameters = {**(case.path_parameters or {}), chosen.name: chosen.value}
        response = case.call_and_validate(
            base_url=fuzz.api.url, headers=headers, checks=checks, **extra
        )
        sent.append(response.status_code)

    check()
    return sent


def _run(fuzz: Fuzz, spec: RouteSpec, kind: str) -> None:
    from schemathesis import GenerationMode

    if kind == "hostile":
        assert _run_hostile(fuzz, spec), "no request was generated for this operation"
        return

    operation = fuzz.schema[spec.path][spec.method]
    mode = GenerationMode.NEGATIVE if kind == "admin-negative" else GenerationMode.POSITIVE
    token = fuzz.reader_token if kind == "reader" else fuzz.api.token
    fixed = fuzz.seeded_pool().fill(spec.path) if kind == "seeded" else {}
    checks = _checks(kind)
    sent: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @_settings()
    def check(case: Any) -> None:
        if fixed:
            case.path_parameters = dict(fixed)
        response = case.call_and_validate(
            base_url=fuzz.api.url,
            headers={"Authorization": f"Bearer {token}"},
            checks=checks,
        )
        sent.append(response.status_code)

    check()
    assert sent, "no request was generated for this operation"
    if kind == "seeded" and spec.method == "GET" and not _query_required(spec):
        # Real ids and schema-valid queries: a reader route must answer with success at least once.
        codes = sorted(set(sent))
        assert any(code < 300 for code in sent), f"never succeeded with real ids: {codes}"


@pytest.mark.parametrize(("spec", "kind"), _params())
def test_operation_survives_fuzzing(fuzz: Fuzz, spec: RouteSpec, kind: str) -> None:
    if kind == "seeded" and not fuzz.seeded_pool().covers(spec.path):
        missing = [p for p in path_params(spec.path) if p not in fuzz.seeded_pool().values]
        pytest.skip(f"no route returned a value for {missing} while seeding")
    # This thread runs only schemathesis, Hypothesis and requests (a fifth of the module's CPU
    # under coverage's tracer); the handlers run in the stack's threads, still measured.
    with coverage_paused_in_this_thread():
        _run(fuzz, spec, kind)


def test_seeding_reaches_the_registry_routes(fuzz: Fuzz) -> None:
    pool = fuzz.seeded_pool()
    expected = {"model_id", "version", "key_id", "experiment_id", "dataset_id", "job_id"}
    assert expected <= set(pool.values), pool.values
