"""Cross-group references, for every kind of reference, when made and when used.

A resource may point at another: a model version at its background dataset version, an
experiment at model versions, an explanation at a dataset version, a usage record at an
experiment, a dataset version at its parents and sources. Each reference is checked with the
caller's rights when it is made and again when it is followed on the caller's behalf. Each test
asserts the status, that the answer is the one for a resource that does not exist, that nothing
of the other group's data leaks into the body (ids, names, column names, statistics), and that
nothing changed.

Alice and Rita (reader) are in group ``ml``, Bob in ``other``, Carol is another writer of ``ml``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import pytest

from tests.conftest import Http, Tokens
from tests.security.helpers import (
    experiment_body,
    model_version,
    narrow_behind_the_pins,
    skops_artifact,
    unique,
)

# Alice's private data: the model's features plus a column nobody else should learn about.
SECRET_COLUMN = "salary_band"
PRIVATE_ROWS = [(11.25, 3.5, -7.75, 90210), (13.75, 1.25, -2.5, 60606), (12.5, 2.0, -5.0, 10001)]
PRIVATE_CSV = f"a,b,c,{SECRET_COLUMN}\n" + "".join(
    ",".join(str(v) for v in row) + "\n" for row in PRIVATE_ROWS
)
ROW = {"a": 0.2, "b": -0.1, "c": 0.4}


@pytest.fixture(scope="module")
def people(module_http: Http, module_tokens: Tokens) -> dict[str, Http]:
    from chalicelib.auth.service import get_auth_service

    carol = get_auth_service().create_key("carol", ["writer"], ["ml"]).token
    tokens = {
        "alice": module_tokens.writer,
        "bob": module_tokens.other_writer,
        "carol": carol,
        "rita": module_tokens.reader,
        "admin": module_tokens.admin,
    }
    return {who: Http(module_http.client, token) for who, token in tokens.items()}


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.data
    return response.data


def _dataset(http: Http, groups: list[str], csv: str = PRIVATE_CSV) -> dict[str, str]:
    name = unique("refs")
    created = _ok(http.call("POST", "/datasets", {"name": name, "access_groups": groups}), 201)
    version = _ok(
        http.call("POST", f"/datasets/{created['dataset_id']}/versions", {"data": csv}), 201
    )
    return {"dataset_id": created["dataset_id"], "name": name, "version_id": version["version_id"]}


def _model(http: Http, groups: list[str], **version: Any) -> dict[str, str]:
    name = unique("refs-model")
    created = _ok(http.call("POST", "/models", {"name": name, "access_groups": groups}), 201)
    model_version(http, created["model_id"], **version)
    model_version(http, created["model_id"], **version)
    return {"model_id": created["model_id"], "name": name}


def _fake(real: str) -> str:
    prefix, _, rest = real.partition("-")
    return f"{prefix}-{uuid.uuid4().hex[: len(rest)]}"


def assert_same_as_missing(
    http: Http, method: str, path: str, body: Any, real: str, refused: Any
) -> None:
    """The refused answer equals the answer for a ``real`` id that does not exist."""
    fake = _fake(real)
    twin_body = json.loads(json.dumps(body).replace(real, fake)) if body is not None else None
    twin = http.call(method, path.replace(real, fake), twin_body)
    text = json.dumps(twin.data).replace(fake, real)
    assert (twin.status_code, text) == (refused.status_code, json.dumps(refused.data))


def assert_nothing_of(body: Any, *secrets: Any) -> None:
    text = json.dumps(body)
    leaked = [str(s) for s in secrets if str(s) in text]
    assert leaked == [], text


def _private_secrets(ds: dict[str, str]) -> list[Any]:
    """What Bob must never learn about Alice's dataset: its ids, name, column, statistics."""
    columns = np.array(PRIVATE_ROWS)
    means = [f"{m:.4f}"[:6] for m in columns.mean(axis=0)]
    quartiles = [f"{q:g}" for q in np.percentile(columns[:, :3], [25, 50, 75], axis=0).ravel()]
    numbers = [n for n in (*means, *quartiles) if len(n) >= 5]  # distinctive enough to grep
    return [ds["dataset_id"], ds["name"], ds["version_id"], SECRET_COLUMN, *numbers]


# --- a model's background dataset version ------------------------------------------------------


def test_a_background_from_another_groups_dataset_is_refused_when_registered(
    people: dict[str, Http],
) -> None:
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    ds = _dataset(people["alice"], ["ml"])
    bob = people["bob"]
    model_id = _ok(bob.call("POST", "/models", {"name": unique("bob")}), 201)["model_id"]
    body = {
        "artifact_base64": skops_artifact(),
        "task": "classification",
        "feature_names": ["a", "b", "c"],
        "background_dataset_version_id": ds["version_id"],
    }
    path = f"/models/{model_id}/versions"
    refused = bob.call("POST", path, body)
    assert refused.status_code == 404 and refused.data["error"] == "dataset_version_not_found"
    assert_nothing_of(refused.data, ds["dataset_id"], ds["name"], SECRET_COLUMN)
    assert_same_as_missing(bob, "POST", path, body, ds["version_id"], refused)
    assert _ok(bob.call("GET", f"/models/{model_id}"))["latest_version"] == 0
    stored = aws.client("s3").list_objects_v2(
        Bucket=get_settings().models_bucket, Prefix=f"artifacts/{model_id}/"
    )
    assert stored.get("KeyCount", 0) == 0  # refused before the artifact was stored


@pytest.fixture(scope="module")
def shared_model(people: dict[str, Http]) -> dict[str, Any]:
    """Alice's model, shared with group ``other``, explained against her ``ml``-only dataset."""
    ds = _dataset(people["alice"], ["ml"])
    model = _model(
        people["alice"],
        ["ml", "other"],
        background_dataset_version_id=ds["version_id"],
    )
    return {**model, "dataset": ds}


EXPLANATION_ROUTES = [
    ("/explanations", {"input_data": ROW}),
    ("/explanations", {"input_data": ROW, "explanation_type": "lime", "num_samples": 200}),
    ("/explanations/batch", {"inputs": [ROW, ROW]}),
    ("/explanations/global", {"inputs": [ROW, ROW]}),
    ("/explanations/dependence", {"feature": "a", "inputs": [ROW, ROW]}),
]


@pytest.mark.parametrize(("path", "extra"), EXPLANATION_ROUTES, ids=lambda v: str(v)[:40])
def test_a_background_the_caller_cannot_read_is_refused_when_used(
    people: dict[str, Http], shared_model: dict[str, Any], path: str, extra: dict[str, Any]
) -> None:
    body = {"model_id": shared_model["model_id"], "model_version": 1, **extra}
    allowed = people["alice"].call("POST", path, body)  # fills the cache for the same request
    assert allowed.status_code == 200, allowed.data
    refused = people["bob"].call("POST", path, body)
    assert refused.status_code == 404 and refused.data["error"] == "background_not_found"
    assert_nothing_of(refused.data, "base_prediction", *_private_secrets(shared_model["dataset"]))


def test_a_background_the_caller_cannot_read_is_not_shown_with_the_version(
    people: dict[str, Http], shared_model: dict[str, Any]
) -> None:
    ds = shared_model["dataset"]
    path = f"/models/{shared_model['model_id']}/versions"
    for shown in (_ok(people["bob"].call("GET", path))["versions"][0],
                  _ok(people["bob"].call("GET", f"{path}/1"))):  # fmt: skip
        assert shown["background_dataset_version_id"] is None
    assert_nothing_of(_ok(people["bob"].call("GET", path)), *_private_secrets(ds))
    mine = _ok(people["alice"].call("GET", f"{path}/1"))
    assert mine["background_dataset_version_id"] == ds["version_id"]


def test_an_async_explanation_over_an_unreadable_background_creates_no_job(
    people: dict[str, Http], shared_model: dict[str, Any]
) -> None:
    from chalicelib.explainability.repository import ExplanationJobTable

    before = ExplanationJobTable.count()
    body = {"model_id": shared_model["model_id"], "model_version": 1, "inputs": [ROW] * 60}
    refused = people["bob"].call("POST", "/explanations/batch", body)
    assert refused.status_code == 404 and refused.data["error"] == "background_not_found"
    assert ExplanationJobTable.count() == before


# --- an explanation's dataset_version_id ------------------------------------------------------


@pytest.mark.parametrize("path", ["/explanations/global", "/explanations/dependence"])
def test_an_explanation_over_another_groups_dataset_version_is_refused_when_made(
    people: dict[str, Http], path: str
) -> None:
    from chalicelib.explainability.repository import ExplanationJobTable

    ds = _dataset(people["alice"], ["ml"])
    bobs = _model(people["bob"], ["other"])
    body = {
        "model_id": bobs["model_id"],
        "model_version": 1,
        "dataset_version_id": ds["version_id"],
        "feature": "a",
    }
    if path.endswith("global"):
        body.pop("feature")
    before = ExplanationJobTable.count()
    refused = people["bob"].call("POST", path, body)
    assert refused.status_code == 404 and refused.data["error"] == "dataset_version_not_found"
    assert_nothing_of(refused.data, ds["dataset_id"], ds["name"], SECRET_COLUMN)
    assert_same_as_missing(people["bob"], "POST", path, body, ds["version_id"], refused)
    assert ExplanationJobTable.count() == before


def _run_job(job_id: str) -> str:
    from chalicelib.explainability.service import get_explanation_service

    return get_explanation_service().jobs.run(job_id)


def test_a_queued_job_is_checked_again_with_its_submitters_rights_when_it_runs(
    people: dict[str, Http],
) -> None:
    alice, carol = people["alice"], people["carol"]
    ds = _dataset(alice, ["ml"])
    model = _model(alice, ["ml"])
    body = {
        "model_id": model["model_id"],
        "model_version": 1,
        "dataset_version_id": ds["version_id"],
    }
    job_id = _ok(carol.call("POST", "/explanations/global", body), 202)["job_id"]
    _ok(alice.call("PUT", f"/datasets/{ds['dataset_id']}/access", {"access_groups": []}))
    assert _run_job(job_id) == "failed"
    job = _ok(people["admin"].call("GET", f"/explanations/jobs/{job_id}"))
    assert job["error"]["error"] == "dataset_version_not_found" and job["result"] is None
    assert_nothing_of(job["error"], ds["dataset_id"], ds["name"], SECRET_COLUMN)
    gone = carol.call("GET", f"/explanations/jobs/{job_id}")  # its dataset is no longer hers
    assert gone.status_code == 404 and gone.data["error"] == "job_not_found"


def test_a_single_explanation_job_is_checked_again_when_it_runs(
    people: dict[str, Http],
) -> None:
    """``POST /explanations`` with ``asynchronous`` (a job of kind ``explain``): its model's
    background is checked with the submitter's rights when it runs, not only when submitted."""
    alice, carol = people["alice"], people["carol"]
    ds = _dataset(alice, ["ml"])
    model = _model(alice, ["ml"], background_dataset_version_id=ds["version_id"])
    body = {
        "model_id": model["model_id"],
        "model_version": 1,
        "input_data": ROW,
        "asynchronous": True,
    }
    submitted = _ok(carol.call("POST", "/explanations", body), 202)
    assert submitted["kind"] == "explain"
    # The model's background pins the dataset (test_access_pins.py): the API refuses this change,
    # so it is made as a reference stored before pins existed would see it.
    refused = alice.call("PUT", f"/datasets/{ds['dataset_id']}/access", {"access_groups": []})
    assert refused.status_code == 409 and refused.data["error"] == "referenced"
    narrow_behind_the_pins("dataset", ds["dataset_id"], [])
    assert _run_job(submitted["job_id"]) == "failed"
    job = _ok(people["admin"].call("GET", f"/explanations/jobs/{submitted['job_id']}"))
    assert job["error"]["error"] == "background_not_found" and job["result"] is None
    assert_nothing_of(job["error"], "base_prediction", *_private_secrets(ds))


def test_an_async_single_explanation_over_an_unreadable_background_creates_no_job(
    people: dict[str, Http], shared_model: dict[str, Any]
) -> None:
    from chalicelib.explainability.repository import ExplanationJobTable

    before = ExplanationJobTable.count()
    body = {
        "model_id": shared_model["model_id"],
        "model_version": 1,
        "input_data": ROW,
        "asynchronous": True,
    }
    refused = people["bob"].call("POST", "/explanations", body)
    assert refused.status_code == 404 and refused.data["error"] == "background_not_found"
    assert_nothing_of(refused.data, *_private_secrets(shared_model["dataset"]))
    assert ExplanationJobTable.count() == before


def test_a_finished_job_is_not_shown_once_its_model_is_hidden_from_the_caller(
    people: dict[str, Http],
) -> None:
    alice, carol = people["alice"], people["carol"]
    model = _model(alice, ["ml"], background_sample=[[0.0, 0.5, 1.0], [1.0, 0.0, -1.0]])
    body = {
        "model_id": model["model_id"],
        "model_version": 1,
        "inputs": [ROW],
        "asynchronous": True,
    }
    job_id = _ok(carol.call("POST", "/explanations/batch", body), 202)["job_id"]
    assert _run_job(job_id) == "succeeded"
    assert _ok(carol.call("GET", f"/explanations/jobs/{job_id}"))["status"] == "succeeded"
    _ok(alice.call("PUT", f"/models/{model['model_id']}/access", {"access_groups": []}))
    gone = carol.call("GET", f"/explanations/jobs/{job_id}")
    assert gone.status_code == 404 and gone.data["error"] == "job_not_found"
    assert_same_as_missing(carol, "GET", f"/explanations/jobs/{job_id}", None, job_id, gone)


# --- an experiment's model versions ----------------------------------------------------------


def test_an_experiment_over_another_groups_model_is_refused_when_made(
    people: dict[str, Http],
) -> None:
    model = _model(people["alice"], ["ml"])
    bob, admin = people["bob"], people["admin"]
    count = len(_ok(admin.call("GET", "/experiments"))["experiments"])
    body = experiment_body(model["model_id"])
    refused = bob.call("POST", "/experiments", body)
    assert refused.status_code == 422 and refused.data["error"] == "unknown_model_version"
    assert_nothing_of(refused.data, model["name"])
    assert_same_as_missing(bob, "POST", "/experiments", body, model["model_id"], refused)
    assert len(_ok(admin.call("GET", "/experiments"))["experiments"]) == count


def test_concluding_needs_write_access_to_the_model_it_promotes(
    people: dict[str, Http],
) -> None:
    alice, bob, admin = people["alice"], people["bob"], people["admin"]
    model = _model(alice, ["ml"])
    shared = {**experiment_body(model["model_id"]), "access_groups": ["ml", "other"]}
    experiment_id = _ok(alice.call("POST", "/experiments", shared), 201)["experiment_id"]
    _ok(alice.call("POST", f"/experiments/{experiment_id}/start"))
    before = _ok(admin.call("GET", f"/models/{model['model_id']}"))
    for winner in ({"winning_variant_id": "treatment"}, {}):
        refused = bob.call("POST", f"/experiments/{experiment_id}/conclude", winner)
        assert refused.status_code == 404 and refused.data["error"] == "model_not_found"
        assert_nothing_of(refused.data, model["model_id"], model["name"])
    assert _ok(admin.call("GET", f"/experiments/{experiment_id}"))["status"] == "running"
    assert _ok(admin.call("GET", f"/models/{model['model_id']}")) == before
    concluded = alice.call("POST", f"/experiments/{experiment_id}/conclude", {})
    assert concluded.status_code == 200, concluded.data


# --- a usage record's experiment ---------------------------------------------------------------


def test_a_usage_of_another_groups_experiment_is_refused_when_made(
    people: dict[str, Http],
) -> None:
    alice, bob, admin = people["alice"], people["bob"], people["admin"]
    model = _model(alice, ["ml"])
    experiment_id = _ok(
        alice.call("POST", "/experiments", experiment_body(model["model_id"])), 201
    )["experiment_id"]
    mine = _dataset(bob, ["other"], "x,y\n1,2\n")
    path = f"/datasets/{mine['dataset_id']}/versions/1/usages"
    body = {"experiment_id": experiment_id}
    refused = bob.call("POST", path, body)
    assert refused.status_code == 404 and refused.data["error"] == "experiment_not_found"
    assert_same_as_missing(bob, "POST", path, body, experiment_id, refused)
    stored = admin.call(
        "GET", f"/datasets/{mine['dataset_id']}/usages?experiment_id={experiment_id}"
    )
    assert _ok(stored)["usages"] == []


def test_a_usage_is_checked_again_when_read(people: dict[str, Http]) -> None:
    alice, bob = people["alice"], people["bob"]
    model = _model(alice, ["ml"])
    shared = {**experiment_body(model["model_id"]), "access_groups": ["ml", "other"]}
    experiment_id = _ok(alice.call("POST", "/experiments", shared), 201)["experiment_id"]
    mine = _dataset(bob, ["other"], "x,y\n1,2\n")
    path = f"/datasets/{mine['dataset_id']}"
    _ok(bob.call("POST", f"{path}/versions/1/usages", {"experiment_id": experiment_id}), 201)
    assert len(_ok(bob.call("GET", f"{path}/usages?experiment_id={experiment_id}"))["usages"]) == 1
    # The usage pins the experiment (test_access_pins.py): the API refuses this change, so it is
    # made as a usage recorded before pins existed would see it.
    narrowed = {"access_groups": ["ml"]}
    refused = alice.call("PUT", f"/experiments/{experiment_id}/access", narrowed)
    assert refused.status_code == 409 and refused.data["error"] == "referenced"
    narrow_behind_the_pins("experiment", experiment_id, ["ml"])
    for route in (f"{path}/usages", f"{path}/reconstruct"):
        refused = bob.call("GET", f"{route}?experiment_id={experiment_id}")
        assert refused.status_code == 404 and refused.data["error"] == "experiment_not_found"
        assert_same_as_missing(bob, "GET", f"{route}?experiment_id={experiment_id}", None,
                               experiment_id, refused)  # fmt: skip


# --- a dataset version's parents and sources --------------------------------------------------


def test_parents_sources_and_replay_data_of_another_group_are_refused_when_made(
    people: dict[str, Http],
) -> None:
    alice, bob, admin = people["alice"], people["bob"], people["admin"]
    theirs = _dataset(alice, ["ml"])
    mine = _dataset(bob, ["other"], "a,b,c\n1,2,3\n")
    base = f"/datasets/{mine['dataset_id']}"
    attempts = [
        (f"{base}/versions", {"data": "a,b,c\n4,5,6\n", "parent_version_id": theirs["version_id"]}),
        (f"{base}/transformations", {
            "source_version_ids": [theirs["version_id"]],
            "transformation": {"type": "filter",
                               "predicates": [{"column": "a", "op": "ge", "value": 0}]}}),
        (f"{base}/transformations", {
            "source_version_ids": [mine["version_id"]],
            "output_dataset_ids": {"output": theirs["dataset_id"]},
            "transformation": {"type": "filter",
                               "predicates": [{"column": "a", "op": "ge", "value": 0}]}}),
        (f"/versions/{mine['version_id']}/replay",
         {"source_version_id": mine["version_id"], "data_version_id": theirs["version_id"]}),
    ]  # fmt: skip
    before = (
        _ok(admin.call("GET", f"{base}/versions")),
        _ok(admin.call("GET", f"/datasets/{theirs['dataset_id']}/versions")),
    )
    for path, body in attempts:
        refused = bob.call("POST", path, body)
        assert refused.status_code == 404, (path, refused.data)
        assert_nothing_of(refused.data, theirs["name"], SECRET_COLUMN)
        real = next(
            v for v in (theirs["version_id"], theirs["dataset_id"]) if v in json.dumps(body)
        )
        assert_same_as_missing(bob, "POST", path, body, real, refused)
    after = (
        _ok(admin.call("GET", f"{base}/versions")),
        _ok(admin.call("GET", f"/datasets/{theirs['dataset_id']}/versions")),
    )
    assert after == before


# --- migration: resources stored before owners and groups --------------------------------------


def test_resources_stored_before_owners_and_groups_are_the_admins_until_given_groups(
    people: dict[str, Http],
) -> None:
    from datetime import datetime, timezone

    from chalicelib.abtesting.repository import ExperimentTable
    from chalicelib.registry.repository import ModelTable

    alice, admin = people["alice"], people["admin"]
    model = _model(alice, ["ml"])
    experiment_id = _ok(
        alice.call("POST", "/experiments", experiment_body(model["model_id"])), 201
    )["experiment_id"]
    now = datetime.now(timezone.utc)
    # What an item written by the previous release looks like: no owner, no access_groups.
    ModelTable(model["model_id"]).update(
        actions=[ModelTable.owner.remove(), ModelTable.access_groups.remove(),
                 ModelTable.updated_at.set(now)]
    )  # fmt: skip
    ExperimentTable(experiment_id).update(
        actions=[ExperimentTable.owner.remove(), ExperimentTable.access_groups.remove()]
    )
    paths = (f"/models/{model['model_id']}", f"/experiments/{experiment_id}")
    for path in paths:
        assert alice.call("GET", path).status_code == 404
        legacy = _ok(admin.call("GET", path))
        assert legacy["owner"] == "" and legacy["access_groups"] == []
        _ok(admin.call("PUT", f"{path}/access", {"access_groups": ["ml"]}))
        assert _ok(alice.call("GET", path))["access_groups"] == ["ml"]
