"""A reference pins its target's access (``chalicelib/core/references.py``).

Alice (group ``ml``) shares a resource with ``ml`` and ``other``; Bob (group ``other``) makes a
resource readable by ``other`` that refers to it. Alice may then not take ``other`` away from her
resource (409 ``referenced``, naming only the kinds and the number of referrers), for every kind
of reference the access matrix knows: an experiment's models, a model version's background
dataset, a usage record's experiment, a version's parent and a transformation's sources. Dropping
a group no referrer is readable by, or narrowing the referrer first, is allowed. Making a
reference and narrowing its target cannot interleave unseen: each interleaving is forced in turn.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.core import references
from chalicelib.core.errors import Conflict, NotFound
from chalicelib.core.principal import Principal
from tests.conftest import Http, Tokens
from tests.security.helpers import experiment_body, model_version, skops_artifact, unique

CSV = "a,b,c\n1,2,3\n4,5,6\n"
SHARED = ["ml", "other"]
FILTER = {"type": "filter", "predicates": [{"column": "a", "op": "ge", "value": 0}]}


@pytest.fixture(scope="module")
def people(module_http: Http, module_tokens: Tokens) -> dict[str, Http]:
    tokens = {
        "alice": module_tokens.writer,
        "bob": module_tokens.other_writer,
        "admin": module_tokens.admin,
    }
    return {who: Http(module_http.client, token) for who, token in tokens.items()}


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.data
    return response.data


def _dataset(http: Http, groups: list[str]) -> dict[str, str]:
    name = unique("pins")
    made = _ok(http.call("POST", "/datasets", {"name": name, "access_groups": groups}), 201)
    version = _ok(http.call("POST", f"/datasets/{made['dataset_id']}/versions", {"data": CSV}), 201)
    return {"id": made["dataset_id"], "name": name, "version_id": version["version_id"]}


def _model(http: Http, groups: list[str], **version: Any) -> dict[str, str]:
    name = unique("pins-model")
    made = _ok(http.call("POST", "/models", {"name": name, "access_groups": groups}), 201)
    model_version(http, made["model_id"], **version)
    model_version(http, made["model_id"], **version)
    return {"id": made["model_id"], "name": name}


# ---- every kind of reference: (target path, referrer path, what the referrer shows) ---------


def _experiment_on_a_model(people: dict[str, Http]) -> tuple[str, str, list[str]]:
    model = _model(people["alice"], SHARED)
    body = experiment_body(model["id"], access_groups=["other"])
    made = _ok(people["bob"].call("POST", "/experiments", body), 201)
    return f"/models/{model['id']}", f"/experiments/{made['experiment_id']}", [
        made["experiment_id"], body["name"]
    ]  # fmt: skip


def _background_on_a_dataset(people: dict[str, Http]) -> tuple[str, str, list[str]]:
    data = _dataset(people["alice"], SHARED)
    model = _model(people["bob"], ["other"], background_dataset_version_id=data["version_id"])
    return f"/datasets/{data['id']}", f"/models/{model['id']}", [model["id"], model["name"]]


def _usage_of_an_experiment(people: dict[str, Http]) -> tuple[str, str, list[str]]:
    model = _model(people["alice"], SHARED)
    body = experiment_body(model["id"], access_groups=SHARED)
    experiment_id = _ok(people["alice"].call("POST", "/experiments", body), 201)["experiment_id"]
    mine = _dataset(people["bob"], ["other"])
    usage = {"experiment_id": experiment_id}
    _ok(people["bob"].call("POST", f"/datasets/{mine['id']}/versions/1/usages", usage), 201)
    return f"/experiments/{experiment_id}", f"/datasets/{mine['id']}", [mine["id"], mine["name"]]


def _parent_in_another_dataset(people: dict[str, Http]) -> tuple[str, str, list[str]]:
    theirs = _dataset(people["alice"], SHARED)
    mine = _dataset(people["bob"], ["other"])
    body = {"data": "a,b,c\n7,8,9\n", "parent_version_id": theirs["version_id"]}
    made = _ok(people["bob"].call("POST", f"/datasets/{mine['id']}/versions", body), 201)
    return f"/datasets/{theirs['id']}", f"/datasets/{mine['id']}", [
        mine["id"], mine["name"], made["version_id"]
    ]  # fmt: skip


def _transformation_source(people: dict[str, Http]) -> tuple[str, str, list[str]]:
    theirs = _dataset(people["alice"], SHARED)
    mine = _dataset(people["bob"], ["other"])
    body = {"source_version_ids": [theirs["version_id"]], "transformation": FILTER}
    _ok(people["bob"].call("POST", f"/datasets/{mine['id']}/transformations", body), 201)
    return f"/datasets/{theirs['id']}", f"/datasets/{mine['id']}", [mine["id"], mine["name"]]


REFERENCES = {
    "experiment-model": (_experiment_on_a_model, "1 experiment"),
    "background-dataset": (_background_on_a_dataset, "1 model"),
    "usage-experiment": (_usage_of_an_experiment, "1 dataset"),
    "parent-dataset": (_parent_in_another_dataset, "1 dataset"),
    "transformation-source": (_transformation_source, "1 dataset"),
}


@pytest.mark.parametrize("kind", sorted(REFERENCES))
def test_narrowing_a_referenced_resource_is_refused_naming_only_kinds_and_counts(
    people: dict[str, Http], kind: str
) -> None:
    make, counted = REFERENCES[kind]
    target, referrer, secrets = make(people)
    alice, admin = people["alice"], people["admin"]
    before = _ok(admin.call("GET", target))
    refused = alice.call("PUT", f"{target}/access", {"access_groups": ["ml"]})
    assert refused.status_code == 409 and refused.data["error"] == "referenced", refused.data
    message = refused.data["message"]
    assert f"{counted} readable by those groups refers to it" in message
    assert "group(s) other" in message
    leaked = [s for s in secrets if s in json.dumps(refused.data)]
    assert leaked == [], refused.data
    assert _ok(admin.call("GET", target)) == before  # nothing changed
    # A group no referrer is readable by can go; the referrer's readers keep theirs.
    _ok(alice.call("PUT", f"{target}/access", {"access_groups": [*SHARED, "spare"]}))
    assert _ok(alice.call("PUT", f"{target}/access", {"access_groups": SHARED}))
    # Narrowing the referrer first lifts the constraint.
    _ok(people["bob"].call("PUT", f"{referrer}/access", {"access_groups": []}))
    narrowed = _ok(alice.call("PUT", f"{target}/access", {"access_groups": ["ml"]}))
    assert narrowed["access_groups"] == ["ml"]


def test_a_routing_client_keeps_its_model_while_the_experiment_lives(
    people: dict[str, Http],
) -> None:
    target, referrer, _ = _experiment_on_a_model(people)
    bob = people["bob"]
    _ok(bob.call("POST", f"{referrer}/start"))
    routed = _ok(bob.call("POST", f"{referrer}/route", {"request_id": "r-1", "user_id": "u-1"}))
    refused = people["alice"].call("PUT", f"{target}/access", {"access_groups": ["ml"]})
    assert refused.status_code == 409
    again = _ok(bob.call("POST", f"{referrer}/route", {"request_id": "r-1", "user_id": "u-1"}))
    assert again == routed
    shown = _ok(bob.call("GET", referrer))["variants"]
    assert {v["model_id"] for v in shown} == {target.rsplit("/", 1)[1]}
    assert bob.call("GET", target).status_code == 200  # the model it routes to stays readable


def test_several_referrers_are_counted_per_kind(people: dict[str, Http]) -> None:
    data = _dataset(people["alice"], SHARED)
    for _ in range(2):
        _model(people["bob"], ["other"], background_dataset_version_id=data["version_id"])
    mine = _dataset(people["bob"], ["other"])
    body = {"data": "a,b,c\n7,8,9\n", "parent_version_id": data["version_id"]}
    _ok(people["bob"].call("POST", f"/datasets/{mine['id']}/versions", body), 201)
    refused = people["alice"].call("PUT", f"/datasets/{data['id']}/access", {"access_groups": []})
    assert refused.status_code == 409
    assert "1 dataset, 2 models readable by those groups refer to it" in refused.data["message"]
    assert "group(s) other:" in refused.data["message"]  # only the groups a referrer has


# ---- the Python API (facades) and forced interleavings -------------------------------------

ALICE = Principal("alice", "k-alice", frozenset({"writer"}), frozenset({"ml"}))
BOB = Principal("bob", "k-bob", frozenset({"writer"}), frozenset({"other"}))
ARTIFACT = base64.b64decode(skops_artifact())


def _shared_model(module_aws: Any) -> str:
    """Alice's model (two versions) shared with ``ml`` and ``other``, made through the facade."""
    from chalicelib.registry import facade as registry
    from chalicelib.registry.service import VersionSpec

    model = registry.create_model(ALICE, unique("pins-py"), access_groups=SHARED)
    spec = VersionSpec(task="classification", feature_names=("a", "b", "c"))
    for _ in range(2):
        registry.register_version(ALICE, model.model_id, spec, artifact=ARTIFACT)
    return model.model_id


def _create_experiment(model_id: str) -> Any:
    from decimal import Decimal

    from chalicelib.abtesting import facade as experiments
    from chalicelib.abtesting.models import ModelVariant

    variants = [
        ModelVariant("control", model_id, 1, Decimal("0.5"), is_control=True),
        ModelVariant("treatment", model_id, 2, Decimal("0.5")),
    ]
    return experiments.create_experiment(BOB, unique("pins-exp"), variants, ["other"])


def _narrow(model_id: str) -> Any:
    from chalicelib.registry import facade as registry

    return registry.set_access_groups(ALICE, model_id, ["ml"])


def _outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except references.AccessChanging:
        return "access_changing"
    except references.Referenced:
        return "referenced"
    except NotFound:
        return "not_found"
    except Conflict as exc:  # pragma: no cover - shown if the test fails
        return exc.code
    except Exception as exc:  # unknown_model_version is a 422
        return getattr(exc, "code", type(exc).__name__)
    return "ok"


def _experiments_over(model_id: str) -> list[Any]:
    from chalicelib.abtesting.facade import list_experiments

    admin = Principal("admin", "k-admin", frozenset({"admin"}), frozenset())
    return [e for e in list_experiments(admin) if e.variants[0].model_id == model_id]


def test_the_python_api_refuses_the_narrowing_too(module_aws: Any) -> None:
    from chalicelib.registry import facade as registry

    model_id = _shared_model(module_aws)
    _create_experiment(model_id)
    with pytest.raises(references.Referenced, match="1 experiment readable"):
        _narrow(model_id)
    assert list(registry.readable_model(ALICE, model_id).access_groups) == SHARED


def test_a_narrowing_done_before_the_pin_is_seen_by_the_check_after_it(
    module_aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The maker checked the caller, then the narrowing ran to its end, then the pin: the check
    made after the pin refuses (Bob no longer reads the model) and nothing is created."""
    model_id = _shared_model(module_aws)
    put = references._put
    ran: list[str] = []

    def narrow_first(target: references.Ref, referrer: str, groups: Any) -> None:
        if not ran:
            ran.append(_outcome(lambda: _narrow(model_id)))
        put(target, referrer, groups)

    monkeypatch.setattr(references, "_put", narrow_first)
    assert _outcome(lambda: _create_experiment(model_id)) == "unknown_model_version"
    assert ran == ["ok"]
    assert _experiments_over(model_id) == []
    pins = list(references.ReferenceTable.query(f"model#{model_id}", consistent_read=True))
    assert pins == []


def test_a_narrowing_after_the_pin_is_refused(
    module_aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pin is written, then a whole narrowing runs before the maker reads the marker: the
    narrowing sees the pin (of an experiment not stored yet) and refuses."""
    model_id = _shared_model(module_aws)
    active = references._marker_active
    ran: list[str] = []

    def narrow_between(target: references.Ref) -> bool:
        if not ran:
            ran.append(_outcome(lambda: _narrow(model_id)))
        return active(target)

    monkeypatch.setattr(references, "_marker_active", narrow_between)
    assert _outcome(lambda: _create_experiment(model_id)) == "ok"
    assert ran == ["referenced"]
    assert len(_experiments_over(model_id)) == 1


def test_a_reference_made_while_the_narrowing_holds_its_marker_is_refused(
    module_aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The narrowing has its marker and found no pin; a reference made now sees the marker and
    refuses (409 access_changing), and the narrowing completes."""
    model_id = _shared_model(module_aws)
    blocking = references._blocking
    made: list[str] = []

    def create_meanwhile(target: references.Ref, removed: Any, groups_of: Any) -> Any:
        found = blocking(target, removed, groups_of)
        if not made:
            made.append(_outcome(lambda: _create_experiment(model_id)))
        return found

    monkeypatch.setattr(references, "_blocking", create_meanwhile)
    assert _outcome(lambda: _narrow(model_id)) == "ok"
    assert made == ["access_changing"]
    assert _experiments_over(model_id) == []


def _race(model_id: str) -> dict[str, str]:
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def run(name: str, call: Callable[[], Any]) -> None:
        barrier.wait()
        results[name] = _outcome(call)

    threads = [
        threading.Thread(target=run, args=("narrow", lambda: _narrow(model_id))),
        threading.Thread(target=run, args=("create", lambda: _create_experiment(model_id))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_racing_narrowings_and_references_never_both_succeed(module_aws: Any) -> None:
    """Threads, not forced interleavings: in every round at most one of the two succeeds, and
    an experiment readable by ``other`` exists only over a model ``other`` still reads."""
    from chalicelib.registry import facade as registry

    for _ in range(6):
        model_id = _shared_model(module_aws)
        results = _race(model_id)
        assert (results["narrow"], results["create"]) != ("ok", "ok"), results
        groups = registry.readable_model(ALICE, model_id).access_groups
        if _experiments_over(model_id):
            assert "other" in groups, results


# ---- pins of referrers that never came to be, and markers of crashed narrowings -------------


def test_a_pin_whose_referrer_was_never_stored_stops_counting_after_the_grace(
    module_aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = _shared_model(module_aws)
    target = references.Ref("model", model_id)
    references._put(target, "experiment##crashed", ["other"])  # a maker that died mid-way
    with pytest.raises(references.Referenced):
        _narrow(model_id)
    later = references.utc_now() + timedelta(seconds=references.PENDING_SECONDS + 1)
    monkeypatch.setattr(references, "utc_now", lambda: later)
    assert list(_narrow(model_id).access_groups) == ["ml"]


def test_a_crashed_narrowings_marker_blocks_only_until_it_expires(
    module_aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = _shared_model(module_aws)
    references._claim(references.Ref("model", model_id))  # a narrowing that never finished
    assert _outcome(lambda: _narrow(model_id)) == "access_changing"
    assert _outcome(lambda: _create_experiment(model_id)) == "access_changing"
    later = references.utc_now() + timedelta(seconds=references.MARKER_SECONDS + 1)
    monkeypatch.setattr(references, "utc_now", lambda: later)
    assert _outcome(lambda: _create_experiment(model_id)) == "ok"
