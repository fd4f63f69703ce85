"""The group-isolation matrix: every declared route × {owner, same group, other group, reader of
the group, admin}, with exact statuses.

Routes come from ``chalicelib.core.http.ROUTES``: a new route without a rule in :data:`RULES`
fails :func:`test_every_declared_route_has_an_access_rule`. For a route on a resource (a model,
version, experiment, outcome, routing decision, cache, job, dataset or dataset version):

* the owner, a writer of the same group and an admin succeed (the route's own status);
* a reader of the group reads (2xx) and gets 403 on writes;
* a writer of another group gets 404, exactly the answer for a resource that does not exist
  (same status and body once the ids are swapped), with no other id or name of the resource in
  the body, and nothing changes.

Every resource belongs to group ``ml`` and is created by ``alice`` (the owner).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.core.http import ROUTES, RouteSpec
from tests.conftest import Http, Tokens
from tests.security.helpers import experiment_body, model_version, skops_artifact, unique

WHO = ("owner", "same_group", "other_group", "reader", "admin")
CSV = "a,b,c\n0.5,1.0,-0.3\n1.5,-0.2,0.7\n-0.4,0.3,1.1\n"
ROW = {"a": 0.2, "b": -0.1, "c": 0.4}


@dataclass
class World:
    """The resources of group ``ml``, owned by alice."""

    ids: dict[str, str]
    names: list[str]

    def __getitem__(self, key: str) -> str:
        return self.ids[key]


@dataclass
class Principals:
    """One HTTP helper per role in the matrix."""

    http: dict[str, Http]

    def __getitem__(self, who: str) -> Http:
        return self.http[who]


Ids = dict[str, str]
Factory = Callable[[Http, World], Ids]


@dataclass(frozen=True)
class Rule:
    """How the matrix calls one route.

    Attributes:
        kind: ``resource`` (the matrix applies), or why it does not: ``collection`` (lists
            and creates, tested below), ``instance`` (counters of the answering instance, no
            resource), ``compute`` (no stored resource), ``admin`` (admins only), ``self`` (the
            caller's own key), ``public``, ``platform`` (platform-wide settings every reader
            sees: holdouts, which every routing config they cover carries anyway).
        body: Builds the body from the world and the route's ids.
        query: Query string (``{name}`` filled from the ids).
        fresh: Builds a resource in the state the route needs, per call (state transitions).
        ok: The success status when it is not the route's declared status, with the reason.
    """

    kind: str = "resource"
    body: Callable[[World, Ids], Any] | None = None
    query: str = ""
    fresh: Factory | None = None
    ok: tuple[int, str] | None = None


def _experiment(http: Http, world: World, *steps: str) -> Ids:
    created = http.call("POST", "/experiments", experiment_body(world["model_id"]))
    assert created.status_code == 201, created.data
    experiment_id = created.data["experiment_id"]
    for step in steps:
        moved = http.call("POST", f"/experiments/{experiment_id}/{step}")
        assert moved.status_code == 200, moved.data
    return {"experiment_id": experiment_id}


def draft(http: Http, world: World) -> Ids:
    return _experiment(http, world)


def running(http: Http, world: World) -> Ids:
    return _experiment(http, world, "start")


def paused(http: Http, world: World) -> Ids:
    return _experiment(http, world, "start", "pause")


def sliced_draft(http: Http, world: World) -> Ids:
    """A draft experiment in a slice of a new layer (a draft may release its slice)."""
    layer = empty_layer(http, world)["layer_id"]
    body = experiment_body(world["model_id"], layer={"layer_id": layer, "start": 0, "end": 10})
    created = http.call("POST", "/experiments", body)
    assert created.status_code == 201, created.data
    return {"experiment_id": created.data["experiment_id"]}


def _guardrails_body(world: World, ids: Ids) -> dict[str, Any]:
    return {
        "explanation_guardrails": [{"type": "ndcg", "min": 0.5, "top_k": 2}],
        "dataset_version_id": world["source_id"],
    }


def guarded(http: Http, world: World) -> Ids:
    """A running experiment with explanation guardrails declared."""
    ids = running(http, world)
    path = f"/experiments/{ids['experiment_id']}/explanation-guardrails"
    declared = http.call("PUT", path, _guardrails_body(world, ids))
    assert declared.status_code == 200, declared.data
    return ids


def empty_layer(http: Http, world: World) -> Ids:
    """A new layer without slices (deletable)."""
    created = http.call("POST", "/layers", {"name": "matrix-empty", "access_groups": ["ml"]})
    assert created.status_code == 201, created.data
    return {"layer_id": created.data["layer_id"]}


def newer_version(http: Http, world: World) -> Ids:
    """A new latest version, so restoring version 1 writes one (201)."""
    added = http.call("POST", f"/datasets/{world['dataset_id']}/versions", _new_rows(world, {}))
    assert added.status_code == 201, added.data
    return {}


def tagged(http: Http, world: World) -> Ids:
    """A tag on version 1 (a fresh name per call)."""
    tag = f"matrix-{uuid.uuid4().hex[:8]}"
    moved = http.call("PUT", f"/datasets/{world['dataset_id']}/tags/{tag}", {"version": "1"})
    assert moved.status_code == 200, moved.data
    return {"tag": tag}


def deletable(http: Http, world: World) -> Ids:
    """A new version nothing tags or uses, to delete."""
    added = http.call("POST", f"/datasets/{world['dataset_id']}/versions", _new_rows(world, {}))
    assert added.status_code == 201, added.data
    return {"version": str(added.data["version_number"])}


def _new_rows(world: World, ids: Ids) -> dict[str, str]:
    # Fresh content each call: content identical to an existing version answers 200, not 201.
    return {"data": f"a,b,c\n{uuid.uuid4().int % 10**12},1,2\n"}


def _explain(world: World, ids: Ids) -> dict[str, Any]:
    return {"model_id": world["model_id"], "model_version": 1, "input_data": ROW}


def _rows(count: int) -> list[dict[str, float]]:
    return [{k: v + i / 10 for k, v in ROW.items()} for i in range(count)]


def _labelled(world: World) -> dict[str, Any]:
    return {
        "model_id": world["model_id"],
        "model_version": 1,
        "inputs": _rows(3),
        "labels": ["0", "1", "1"],
    }


RULES: dict[tuple[str, str], Rule] = {
    # --- experiments ---------------------------------------------------------------------------
    ("POST", "/experiments"): Rule("collection"),
    ("GET", "/experiments"): Rule("collection"),
    ("GET", "/experiments/{experiment_id}"): Rule(),
    ("PUT", "/experiments/{experiment_id}/access"): Rule(
        body=lambda w, i: {"access_groups": ["ml"]}
    ),
    ("POST", "/experiments/{experiment_id}/start"): Rule(fresh=draft),
    ("POST", "/experiments/{experiment_id}/pause"): Rule(fresh=running),
    ("POST", "/experiments/{experiment_id}/resume"): Rule(fresh=paused),
    ("POST", "/experiments/{experiment_id}/conclude"): Rule(
        body=lambda w, i: {"winning_variant_id": "control"}, fresh=running
    ),
    ("POST", "/experiments/{experiment_id}/rollback"): Rule(
        body=lambda w, i: {"reason": "matrix"}, fresh=running
    ),
    ("POST", "/experiments/{experiment_id}/release-slice"): Rule(fresh=sliced_draft),
    ("POST", "/experiments/{experiment_id}/resize-slice"): Rule(
        body=lambda w, i: {"start": 0, "end": 20}, fresh=sliced_draft
    ),
    ("POST", "/experiments/{experiment_id}/route"): Rule(
        body=lambda w, i: {"request_id": uuid.uuid4().hex, "user_id": "u-1"}
    ),
    ("POST", "/experiments/{experiment_id}/outcomes"): Rule(
        body=lambda w, i: {
            "variant_id": "control",
            "request_id": uuid.uuid4().hex,
            "success": True,
            "latency_ms": 12.5,
        }
    ),
    ("GET", "/experiments/{experiment_id}/routing-config"): Rule(),
    ("GET", "/experiments/{experiment_id}/metrics"): Rule(),
    ("GET", "/experiments/{experiment_id}/analysis"): Rule(),
    ("GET", "/experiments/{experiment_id}/segments"): Rule(),
    ("PUT", "/experiments/{experiment_id}/rollback-policy"): Rule(body=lambda w, i: {}),
    ("GET", "/experiments/{experiment_id}/rollback-policy"): Rule(),
    ("GET", "/experiments/{experiment_id}/checks"): Rule(),
    ("PUT", "/experiments/{experiment_id}/explanation-guardrails"): Rule(body=_guardrails_body),
    ("GET", "/experiments/{experiment_id}/explanation-guardrails"): Rule(fresh=guarded),
    ("POST", "/experiments/{experiment_id}/explanation-inputs"): Rule(
        body=lambda w, i: {
            "inputs": [{"request_id": uuid.uuid4().hex, "input_data": {"a": 0.1, "b": "x", "c": 2}}]
        }
    ),
    ("DELETE", "/experiments/{experiment_id}/explanation-guardrails"): Rule(fresh=guarded),
    ("GET", "/stats/sample-size"): Rule("compute"),
    # --- layers and holdouts -------------------------------------------------------------------
    ("POST", "/layers"): Rule("collection"),
    ("GET", "/layers"): Rule("collection"),
    ("GET", "/layers/{layer_id}"): Rule(),
    ("PUT", "/layers/{layer_id}/access"): Rule(body=lambda w, i: {"access_groups": ["ml"]}),
    ("DELETE", "/layers/{layer_id}"): Rule(fresh=empty_layer),
    ("POST", "/holdouts"): Rule("admin"),
    ("GET", "/holdouts"): Rule("platform"),
    ("GET", "/holdouts/{holdout_id}"): Rule("platform"),
    # pools only the covered experiments the caller may read (test_ab_layers.py:
    # test_the_holdout_analysis_compares_holdout_users_with_shipped_variants_over_http)
    ("GET", "/holdouts/{holdout_id}/analysis"): Rule("platform"),
    ("DELETE", "/holdouts/{holdout_id}"): Rule("admin"),
    # --- auth ----------------------------------------------------------------------------------
    ("POST", "/auth/keys"): Rule("admin"),
    ("GET", "/auth/keys"): Rule("admin"),
    ("DELETE", "/auth/keys/{key_id}"): Rule("admin"),
    ("GET", "/auth/whoami"): Rule("self"),
    # --- datasets ------------------------------------------------------------------------------
    ("POST", "/datasets"): Rule("collection"),
    ("GET", "/datasets"): Rule("collection"),
    ("GET", "/datasets/{dataset_id}"): Rule(),
    ("PUT", "/datasets/{dataset_id}/access"): Rule(body=lambda w, i: {"access_groups": ["ml"]}),
    ("POST", "/datasets/{dataset_id}/versions"): Rule(body=_new_rows),
    ("POST", "/datasets/{dataset_id}/uploads"): Rule(body=lambda w, i: {"filename": "x.csv"}),
    ("POST", "/datasets/{dataset_id}/uploads/complete"): Rule(
        body=lambda w, i: {
            "key": "incoming/elsewhere/x.csv",
            "upload_id": "u-1",
            "parts": [{"part_number": 1, "etag": "e"}],
        },
        ok=(400, "past the access check the key is refused: a real multipart needs 5 parts"),
    ),
    ("GET", "/datasets/{dataset_id}/versions"): Rule(query="limit=10"),
    ("GET", "/datasets/{dataset_id}/versions/{version}"): Rule(),
    ("GET", "/datasets/{dataset_id}/versions/{version}/content"): Rule(),
    ("POST", "/datasets/{dataset_id}/versions/{version}/restore"): Rule(fresh=newer_version),
    ("GET", "/datasets/{dataset_id}/compare"): Rule(query="a=1&b=1"),
    ("GET", "/datasets/{dataset_id}/drift"): Rule(query="a=1&b=1"),
    ("GET", "/datasets/{dataset_id}/versions/{version}/profile"): Rule(),
    ("PUT", "/datasets/{dataset_id}/drift-limits"): Rule(body=lambda w, i: {"psi": 0.25}),
    ("PUT", "/datasets/{dataset_id}/tags/{tag}"): Rule(
        body=lambda w, i: {"version": "1"}, fresh=lambda http, w: {"tag": "matrix-production"}
    ),
    ("GET", "/datasets/{dataset_id}/tags/{tag}"): Rule(fresh=tagged),
    ("GET", "/datasets/{dataset_id}/tags"): Rule(),
    ("DELETE", "/datasets/{dataset_id}/versions/{version}"): Rule(fresh=deletable),
    ("PUT", "/datasets/{dataset_id}/retention"): Rule(body=lambda w, i: {"keep_last": 100}),
    ("POST", "/content/{sha256}/erase"): Rule("admin"),
    ("GET", "/lineage/{version_id}"): Rule(query="direction=both"),
    ("POST", "/datasets/{dataset_id}/transformations"): Rule(
        body=lambda w, i: {
            "source_version_ids": [w["version_id"]],
            "transformation": {
                "type": "filter",
                "predicates": [{"column": "a", "op": "ge", "value": 0}],
            },
        }
    ),
    ("POST", "/versions/{version_id}/replay"): Rule(
        body=lambda w, i: {"source_version_id": w["source_id"], "data": CSV}
    ),
    ("GET", "/versions/{version_id}/reproducibility"): Rule(),
    ("POST", "/datasets/{dataset_id}/versions/{version}/usages"): Rule(
        body=lambda w, i: {"experiment_id": w["experiment_id"]}
    ),
    ("GET", "/datasets/{dataset_id}/usages"): Rule(query="experiment_id={experiment_id}"),
    ("GET", "/datasets/{dataset_id}/reconstruct"): Rule(),
    ("GET", "/dataset-rejections"): Rule("admin"),
    # --- explanations --------------------------------------------------------------------------
    ("POST", "/explanations"): Rule(body=_explain),
    ("POST", "/explanations/batch"): Rule(
        body=lambda w, i: {"model_id": w["model_id"], "model_version": 1, "inputs": _rows(2)}
    ),
    ("POST", "/explanations/global"): Rule(
        body=lambda w, i: {"model_id": w["model_id"], "model_version": 1, "inputs": _rows(3)}
    ),
    ("POST", "/explanations/dependence"): Rule(
        body=lambda w, i: {
            "model_id": w["model_id"],
            "model_version": 1,
            "feature": "a",
            "inputs": _rows(3),
        }
    ),
    ("POST", "/explanations/drift"): Rule(
        body=lambda w, i: {
            "baseline": {"model_id": w["model_id"], "model_version": 1},
            "current": {"model_id": w["model_id"], "model_version": 1, "inputs": _rows(3)},
        }
    ),
    ("POST", "/explanations/bias"): Rule(
        body=lambda w, i: {
            **_labelled(w),
            "facet": ["x", "y", "x"],
            "facet_values": ["x"],
            "positive_label": "1",
        }
    ),
    ("POST", "/explanations/permutation-importance"): Rule(body=lambda w, i: _labelled(w)),
    ("POST", "/explanations/partial-dependence"): Rule(
        body=lambda w, i: {**_labelled(w), "feature": "a", "grid_resolution": 3}
    ),
    ("GET", "/explanations/jobs/{job_id}"): Rule(),
    ("DELETE", "/models/{model_id}/explanations"): Rule(),
    ("GET", "/explanations/cache/stats"): Rule("instance"),
    # --- models --------------------------------------------------------------------------------
    ("POST", "/models"): Rule("collection"),
    ("GET", "/models"): Rule("collection"),
    ("GET", "/models/{model_id}"): Rule(),
    ("PUT", "/models/{model_id}/access"): Rule(body=lambda w, i: {"access_groups": ["ml"]}),
    ("POST", "/models/{model_id}/uploads"): Rule(),
    ("POST", "/models/{model_id}/versions"): Rule(
        body=lambda w, i: {
            "artifact_base64": w["artifact"],
            "task": "classification",
            "feature_names": ["a", "b", "c"],
        }
    ),
    ("GET", "/models/{model_id}/versions"): Rule(),
    ("GET", "/models/{model_id}/versions/{version}"): Rule(),
    ("POST", "/models/{model_id}/versions/{version}/stage"): Rule(
        body=lambda w, i: {"stage": "staging"}
    ),
    # --- system --------------------------------------------------------------------------------
    ("GET", "/health"): Rule("public"),
    ("GET", "/openapi.json"): Rule("public"),
}


def _routes() -> list[RouteSpec]:
    import app  # noqa: F401 - registers every blueprint

    return list(ROUTES)


def _key(spec: RouteSpec) -> tuple[str, str]:
    return (spec.method, spec.path)


RESOURCE_ROUTES = [s for s in _routes() if RULES.get(_key(s), Rule("missing")).kind == "resource"]


def test_every_declared_route_has_an_access_rule() -> None:
    declared = {_key(spec) for spec in _routes()}
    assert declared - set(RULES) == set(), "a new route needs a rule in RULES"
    assert set(RULES) - declared == set(), "a rule for a route that no longer exists"


# --- the world --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def people(module_http: Http, module_tokens: Tokens) -> Principals:
    from chalicelib.auth.service import get_auth_service

    carol = get_auth_service().create_key("carol", ["writer"], ["ml"]).token
    tokens = {
        "owner": module_tokens.writer,
        "same_group": carol,
        "other_group": module_tokens.other_writer,
        "reader": module_tokens.reader,
        "admin": module_tokens.admin,
    }
    return Principals({who: Http(module_http.client, token) for who, token in tokens.items()})


def _ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.data
    return response.data


@pytest.fixture(scope="module")
def world(people: Principals) -> World:
    """A dataset with a version and a derived version, a model with two versions, a running
    experiment over it, a queued job and a cached explanation, all in group ``ml``."""
    alice = people["owner"]
    names = [unique("matrix-ds"), unique("matrix-model"), unique("matrix-exp"),
             unique("matrix-layer")]  # fmt: skip
    dataset_id = _ok(
        alice.call("POST", "/datasets", {"name": names[0], "access_groups": ["ml"]}), 201
    )["dataset_id"]
    source = _ok(alice.call("POST", f"/datasets/{dataset_id}/versions", {"data": CSV}), 201)
    derived = _ok(
        alice.call(
            "POST",
            f"/datasets/{dataset_id}/transformations",
            {
                "source_version_ids": [source["version_id"]],
                "transformation": {
                    "type": "filter",
                    "predicates": [{"column": "a", "op": "ge", "value": 0}],
                },
            },
        ),
        201,
    )["outputs"]["output"]
    model_id = _ok(alice.call("POST", "/models", {"name": names[1]}), 201)["model_id"]
    sample = {"background_sample": [[0.1, 0.2, 0.3], [-0.5, 0.4, 1.0], [0.9, -0.8, 0.1]]}
    model_version(alice, model_id, **sample)
    model_version(alice, model_id, **sample)
    layer_id = _ok(alice.call("POST", "/layers", {"name": names[3], "access_groups": ["ml"]}),
                   201)["layer_id"]  # fmt: skip
    experiment = {**experiment_body(model_id), "name": names[2],
                  "layer": {"layer_id": layer_id, "start": 0, "end": 5000}}  # fmt: skip
    experiment_id = _ok(alice.call("POST", "/experiments", experiment), 201)["experiment_id"]
    _ok(alice.call("POST", f"/experiments/{experiment_id}/start"))
    job = alice.call(
        "POST",
        "/explanations/batch",
        {"model_id": model_id, "model_version": 1, "inputs": _rows(2), "asynchronous": True},
    )
    _ok(alice.call("POST", "/explanations", {**_explain_body(model_id)}))  # one cached entry
    ids = {
        "dataset_id": dataset_id,
        "version_id": derived["version_id"],
        "source_id": source["version_id"],
        "version": "1",
        "model_id": model_id,
        "experiment_id": experiment_id,
        "layer_id": layer_id,
        "job_id": _ok(job, 202)["job_id"],
        "artifact": skops_artifact(3),
    }
    return World(ids, names)


def _explain_body(model_id: str) -> dict[str, Any]:
    return {"model_id": model_id, "model_version": 1, "input_data": ROW}


# --- one call ---------------------------------------------------------------------------------

ID_NAMES = ("dataset_id", "version_id", "source_id", "model_id", "experiment_id", "job_id",
            "layer_id")  # fmt: skip


@dataclass
class Call:
    """A request of the matrix."""

    method: str
    path: str
    body: Any = None
    ids: Ids = field(default_factory=dict)

    def text(self) -> str:
        return self.path + json.dumps(self.body)

    def send(self, http: Http) -> Any:
        return http.call(self.method, self.path, self.body)


def _call(spec: RouteSpec, rule: Rule, world: World, ids: Ids) -> Call:
    path = re.sub(r"{([^}]+)}", lambda m: ids[m.group(1)], spec.path)
    if rule.query:
        path += "?" + rule.query.format(**ids)
    body = rule.body(world, ids) if rule.body else ({} if spec.body is not None else None)
    return Call(spec.method, path, body, ids)


def _fake(real: str) -> str:
    prefix, _, rest = real.partition("-")
    return f"{prefix}-{uuid.uuid4().hex[: len(rest)]}"


def _as_if_missing(call: Call, world: World) -> tuple[Call, dict[str, str]]:
    """The same call with every id of the world swapped for an id that does not exist."""
    text = json.dumps({"path": call.path, "body": call.body})
    swapped = {}
    for name in ID_NAMES:
        real = call.ids.get(name) or world.ids[name]
        if real in text:
            swapped[real] = _fake(real)
            text = text.replace(real, swapped[real])
    loaded = json.loads(text)
    return Call(call.method, loaded["path"], loaded["body"]), swapped


def _snapshot(admin: Http, world: World, ids: Ids) -> list[Any]:
    """What an outsider's refused write must not change (read as an admin)."""
    from chalicelib.explainability.repository import ExplanationCacheTable

    experiment_id = ids.get("experiment_id", world["experiment_id"])
    paths = [
        f"/experiments/{experiment_id}",
        f"/experiments/{experiment_id}/metrics",
        f"/experiments/{experiment_id}/rollback-policy",
        f"/models/{world['model_id']}",
        f"/models/{world['model_id']}/versions",
        f"/datasets/{world['dataset_id']}",
        f"/datasets/{world['dataset_id']}/versions?limit=100",
        f"/datasets/{world['dataset_id']}/usages?experiment_id={experiment_id}",
        f"/explanations/jobs/{world['job_id']}",
    ]
    cached = sum(1 for _ in ExplanationCacheTable.query(world["model_id"]))
    return [admin.call("GET", path).data for path in paths] + [cached]


def _expected(spec: RouteSpec, rule: Rule, who: str) -> int:
    if who == "other_group":
        return 404
    if who == "reader" and spec.role != "reader":
        return 403
    return rule.ok[0] if rule.ok else spec.status


def _secrets(world: World, call: Call) -> list[str]:
    """Ids and names of the world that the request did not itself carry."""
    sent = call.text()
    values = [world.ids[name] for name in ID_NAMES] + world.names
    return [value for value in values if value not in sent]


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("spec", RESOURCE_ROUTES, ids=lambda s: f"{s.method} {s.path}")
def test_group_isolation_matrix(
    spec: RouteSpec, who: str, people: Principals, world: World
) -> None:
    rule = RULES[_key(spec)]
    ids = {**world.ids, **(rule.fresh(people["owner"], world) if rule.fresh else {})}
    call = _call(spec, rule, world, ids)
    refused_write = who in ("other_group", "reader") and spec.role != "reader"
    before = _snapshot(people["admin"], world, ids) if refused_write else None
    response = call.send(people[who])
    assert response.status_code == _expected(spec, rule, who), response.data
    if rule.ok and who not in ("other_group", "reader"):
        assert response.data["error"] == "invalid_request", response.data
    if before is not None:
        assert _snapshot(people["admin"], world, ids) == before, "a refused write changed state"
    if who == "other_group":
        body = json.dumps(response.data)
        leaked = [value for value in _secrets(world, call) if value in body]
        assert leaked == [], body
        missing, swapped = _as_if_missing(call, world)
        twin = missing.send(people[who])
        twin_body = json.dumps(twin.data)
        for real, fake in swapped.items():
            twin_body = twin_body.replace(fake, real)
        assert (twin.status_code, twin_body) == (response.status_code, body)


# --- collections ------------------------------------------------------------------------------

LISTS = {"/datasets": 0, "/models": 1, "/experiments": 2, "/layers": 3}  # index in World.names


@pytest.mark.parametrize("path", list(LISTS))
def test_lists_show_only_what_the_caller_may_read(
    path: str, people: Principals, world: World
) -> None:
    everything = [world.ids[name] for name in ID_NAMES] + world.names
    outsider = json.dumps(_ok(people["other_group"].call("GET", path)))
    assert [value for value in everything if value in outsider] == []
    for who in ("owner", "same_group", "reader", "admin"):
        listed = json.dumps(_ok(people[who].call("GET", path)))
        assert world.names[LISTS[path]] in listed, who


def test_a_model_or_experiment_created_without_groups_is_visible_to_the_creators_groups(
    people: Principals, world: World
) -> None:
    bob = people["other_group"]
    model = _ok(bob.call("POST", "/models", {"name": unique("bobs")}), 201)
    assert model["owner"] == "bob" and model["access_groups"] == ["other"]
    private = _ok(bob.call("POST", "/models", {"name": unique("p"), "access_groups": []}), 201)
    assert private["access_groups"] == []
    model_version(bob, model["model_id"])
    model_version(bob, model["model_id"])
    created = _ok(bob.call("POST", "/experiments", experiment_body(model["model_id"])), 201)
    assert created["owner"] == "bob" and created["access_groups"] == ["other"]
    for who, status in (("owner", 404), ("admin", 200)):
        seen = people[who].call("GET", f"/models/{private['model_id']}")
        assert seen.status_code == status
        seen = people[who].call("GET", f"/experiments/{created['experiment_id']}")
        assert seen.status_code == status


def test_cache_statistics_are_instance_counters_without_ids(
    people: Principals, world: World
) -> None:
    stats = _ok(people["other_group"].call("GET", "/explanations/cache/stats"))
    assert all(isinstance(value, int | float) for value in stats.values()), stats
