"""Real resources for the fuzzers' path parameters, harvested generically from the API.

Random path ids only ever reach the 404 branch of a handler. The pool holds ids the API itself
returned: every top-level response field whose name is also a path parameter somewhere
(``model_id``, ``experiment_id``, ``dataset_id``, ``version``...) is kept, so routes that land
later are covered without changes here. Creating a resource needs a valid body, which
schemathesis generates from the route's declared schema; a few bodies that random data cannot
satisfy (a real skops artifact) come from :data:`KNOWN_SEEDS`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings

from chalicelib.core.http import ROUTES, RouteSpec
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


def _skops_artifact() -> bytes:
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(40, 3))
    return sio.dumps(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)))


def _register_version_body() -> dict[str, Any]:
    return {
        "artifact_base64": base64.b64encode(_skops_artifact()).decode(),
        "format": "skops",
        "task": "classification",
        "feature_names": ["f0", "f1", "f2"],
        "class_names": ["no", "yes"],
    }


# Bodies that generated data cannot produce, by (method, path). Called lazily.
KNOWN_SEEDS: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
    ("POST", "/models/{model_id}/versions"): _register_version_body,
}


def _creators() -> list[RouteSpec]:
    return [spec for spec in ROUTES if spec.method == "POST" and spec.status in (200, 201, 202)]


def _try_generated(api: Api, schema: Any, spec: RouteSpec, pool: Pool, tries: int) -> None:
    operation = schema[spec.path][spec.method]
    names = all_param_names()
    params = pool.fill(spec.path)

    @given(case=operation.as_strategy())
    @settings(
        max_examples=tries,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def attempt(case: Any) -> None:
        if params:
            case.path_parameters = dict(params)
        response = case.call(base_url=api.url, headers={"Authorization": f"Bearer {api.token}"})
        if response.status_code < 300:
            pool.harvest(response.json(), names)

    attempt()


def seed(api: Api, schema: Any, rounds: int = 3, tries: int = 15) -> Pool:
    """Creates resources through every POST route whose parameters are known, for ``rounds``
    rounds (each round can use the ids the previous one returned)."""
    pool = Pool()
    names = all_param_names()
    done: set[tuple[str, str]] = set()
    for _ in range(rounds):
        for spec in _creators():
            key = (spec.method, spec.path)
            if key in done or not pool.covers(spec.path):
                continue
            done.add(key)
            known = KNOWN_SEEDS.get(key)
            if known is not None:
                path = spec.path.format(**pool.fill(spec.path))
                response = api.call(spec.method, path, known())
                if response.status_code < 300:
                    pool.harvest(response.json(), names)
                continue
            _try_generated(api, schema, spec, pool, tries)
    return pool
