"""Real resources for the fuzzers' path parameters, harvested generically from the API.

Random path ids only ever reach the 404 branch of a handler. The pool holds ids the API itself
returned: every top-level response field whose name is also a path parameter somewhere
(``model_id``, ``experiment_id``, ``dataset_id``, ``version``...) is kept, so routes that land
later are covered without changes here. Creating a resource needs a valid body, which
schemathesis generates from the route's declared schema; a few bodies that random data cannot
satisfy (a real skops artifact) come from :data:`KNOWN_SEEDS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import requests
from hypothesis import HealthCheck, Phase, given, settings

from chalicelib.core.http import ROUTES, RouteSpec
from tests.helpers.models import version_body
from tests.reliability.stack import Api

PARAM = re.compile(r"{([^}]+)}")


def path_params(path: str) -> list[str]:
    """The parameter names of a route path."""
    return PARAM.findall(path)


def all_param_names() -> set[str]:
    """Every path parameter name used by a declared route."""
    return {name for spec in ROUTES for name in path_params(spec.path)}


class Pool:
    """Ids returned by the API, by path parameter name (first one wins, later ones kept too)."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = {}

    def harvest(self, body: Any, names: set[str]) -> None:
        """Keeps every field of ``body`` (a JSON object) named like a path parameter."""
        if not isinstance(body, dict):
            return
        for key, value in body.items():
            if key in names and isinstance(value, str | int) and not isinstance(value, bool):
                self.values.setdefault(key, [])
                if str(value) not in self.values[key]:
                    self.values[key].append(str(value))

    def covers(self, path: str) -> bool:
        """Whether every parameter of ``path`` has a value."""
        return all(name in self.values for name in path_params(path))

    def fill(self, path: str) -> dict[str, str]:
        """Path parameters for ``path`` from the first harvested value of each."""
        return {name: self.values[name][0] for name in path_params(path)}


def _register_version_body(pool: Pool) -> dict[str, Any]:
    return version_body()


def fifty_fifty(model_id: str, treatment_version: int) -> list[dict[str, Any]]:
    """A control on version 1 and a treatment on ``treatment_version``, half the traffic each."""
    return [
        {"variant_id": "control", "model_id": model_id, "model_version": 1,
         "traffic_weight": "0.5", "is_control": True},
        {"variant_id": "treatment", "model_id": model_id, "model_version": treatment_version,
         "traffic_weight": "0.5"},
    ]  # fmt: skip


def _experiment_body(pool: Pool) -> dict[str, Any]:
    return {"name": "seeded", "variants": fifty_fifty(pool.values["model_id"][0], 1)}


def _dataset_version_body(pool: Pool) -> dict[str, Any]:
    return {"data": "a,b\n1,2\n3,4\n"}


def _explanation_job_body(pool: Pool) -> dict[str, Any]:
    return {
        "model_id": pool.values["model_id"][0],
        "model_version": 1,
        "inputs": [{"f0": 0.1, "f1": 0.2, "f2": 0.3}],
        "asynchronous": True,
    }


# Bodies that generated data cannot produce (or rarely does), by (method, path), built from the
# pool; a seed whose ids are not in the pool yet waits for the next round.
KNOWN_SEEDS: dict[tuple[str, str], tuple[tuple[str, ...], Callable[[Pool], dict[str, Any]]]] = {
    ("POST", "/models/{model_id}/versions"): (("model_id",), _register_version_body),
    ("POST", "/experiments"): (("model_id", "version"), _experiment_body),
    ("POST", "/datasets/{dataset_id}/versions"): (("dataset_id",), _dataset_version_body),
    ("POST", "/explanations/batch"): (("model_id", "version"), _explanation_job_body),
    # a share is a decimal string at most 0.5: random strings of its pattern rarely are
    ("POST", "/holdouts"): ((), lambda pool: {"name": "fuzz holdout", "share": "0.05"}),
    # explanation guardrails exist once declared (a PUT), so their GET has something to read
    ("PUT", "/experiments/{experiment_id}/explanation-guardrails"): (
        ("experiment_id", "version_id"),
        lambda pool: {
            "explanation_guardrails": [{"type": "ndcg", "min": 0.5, "top_k": 2}],
            "dataset_version_id": pool.values["version_id"][0],
        },
    ),
}


def _creators() -> list[RouteSpec]:
    return [
        spec
        for spec in ROUTES
        if (spec.method == "POST" and spec.status == 201) or (spec.method, spec.path) in KNOWN_SEEDS
    ]


def _try_generated(api: Api, schema: Any, spec: RouteSpec, pool: Pool, tries: int) -> None:
    operation = schema[spec.path][spec.method]
    names = all_param_names()
    params = pool.fill(spec.path)

    @given(case=operation.as_strategy())
    @settings(
        max_examples=tries,
        deadline=None,
        database=None,
        # New draws for every route and round (best effort: the suite's profile would give
        # each round the same few cases; the fuzz passes themselves are derandomized).
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def attempt(case: Any) -> None:
        if params:
            case.path_parameters = dict(params)
        try:
            response = case.call(
                base_url=api.url, headers={"Authorization": f"Bearer {api.token}"}, timeout=30
            )
        except requests.RequestException:
            return  # the fuzz pass of this route reports it; seeding only needs some ids
        if response.status_code < 300:
            pool.harvest(response.json(), names)

    attempt()


def seed(api: Api, schema: Any, rounds: int = 3, tries: int = 8) -> Pool:
    """Creates resources through every POST route whose parameters are known, for ``rounds``
    rounds (each round can use the ids the previous one returned), then keeps only the ids that
    a ``GET .../{id}`` route confirms (a field named ``experiment_id`` in another resource's
    response is not necessarily an experiment that exists)."""
    pool = Pool()
    names = all_param_names()
    done: set[tuple[str, str]] = set()
    for _ in range(rounds):
        for spec in _creators():
            key = (spec.method, spec.path)
            known = KNOWN_SEEDS.get(key)
            needs = set(path_params(spec.path)) | set(known[0] if known else ())
            if key in done or not all(name in pool.values for name in needs):
                continue
            done.add(key)
            if known is not None:
                path = spec.path.format(**pool.fill(spec.path))
                response = api.call(spec.method, path, known[1](pool))
                if response.status_code < 300:
                    pool.harvest(response.json(), names)
                continue
            _try_generated(api, schema, spec, pool, tries)
    _confirm(api, pool)
    return pool


def _confirm(api: Api, pool: Pool) -> None:
    """Drops ids that the route reading that resource does not know."""
    for name in list(pool.values):
        readers = [
            spec
            for spec in ROUTES
            if spec.method == "GET"
            and spec.path.endswith(f"/{{{name}}}")
            and all(p == name or p in pool.values for p in path_params(spec.path))
        ]
        if not readers:
            continue
        reader = readers[0]
        kept = []
        for value in pool.values[name]:
            params = {**pool.fill(reader.path.replace(f"{{{name}}}", "")), name: value}
            if api.call("GET", reader.path.format(**params)).status_code < 300:
                kept.append(value)
        if kept:
            pool.values[name] = kept
        else:
            del pool.values[name]
