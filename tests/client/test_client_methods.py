"""Every ``synapse_client.Client`` method against a local stack over loopback HTTP; the last
test checks that this module called every route the client declares."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from synapse_client import Client, Conflict, Forbidden, NotFound, Unauthorized
from synapse_client.operations import OPERATIONS
from tests.helpers.client import model_with_versions, two_arms

CALLED: set[tuple[str, str]] = set()
RAN: set[str] = set()


@pytest.fixture(autouse=True)
def ran(request: pytest.FixtureRequest) -> None:
    RAN.add(request.node.name)


@pytest.fixture(scope="module", autouse=True)
def record_calls() -> Iterator[None]:
    """Records the route of every request the client sends in this module."""
    from synapse_client.transport import Transport

    patterns = [
        (key, re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(key[1])) + "$"))
        for key in OPERATIONS
    ]
    original = Transport.request

    def request(self: Transport, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        for key, pattern in patterns:
            if key[0] == method.upper() and pattern.match(path):
                CALLED.add(key)
        return original(self, method, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Transport, "request", request)
        yield


def test_system_routes_and_keys(admin: Client, stack: Any) -> None:
    assert admin.health()["status"] == "ok"
    assert "/health" in admin.openapi()["paths"]
    created = admin.create_key("carol", ["reader"], groups=["ml"], description="test key")
    carol = Client(stack.url, created["token"])
    assert carol.whoami()["principal"] == "carol"
    assert created["key_id"] in {k["key_id"] for k in admin.list_keys()["keys"]}
    with pytest.raises(Forbidden):
        carol.list_keys()
    admin.revoke_key(created["key_id"])
    with pytest.raises(Unauthorized):
        carol.whoami()


def test_model_registry_methods(admin: Client) -> None:
    model_id = model_with_versions(admin)
    assert admin.get_model(model_id)["latest_version"] == 2
    assert model_id in {m["model_id"] for m in admin.list_models()["models"]}
    assert [v["version"] for v in admin.list_model_versions(model_id)["versions"]] == [1, 2]
    assert admin.get_model_version(model_id, 2)["task"] == "classification"
    upload = admin.create_model_upload(model_id)
    assert upload["method"] == "PUT" and upload["upload_key"]
    assert admin.set_stage(model_id, 1, "production")["stage"] == "production"
    assert admin.set_model_access(model_id, ["ml"])["access_groups"] == ["ml"]
    admin.invalidate_explanations(model_id, version=1)
    with pytest.raises(NotFound) as missing:
        admin.get_model("m-missing")
    assert missing.value.code in ("not_found", "model_not_found")


def test_experiment_methods(admin: Client) -> None:
    model_id = model_with_versions(admin)
    created = admin.create_experiment("methods", two_arms(model_id), minimum_sample_size=10)
    experiment_id = created["experiment_id"]
    assert admin.get_experiment(experiment_id)["status"] == "draft"
    shared = admin.set_experiment_access(experiment_id, ["ml"])
    assert shared["access_groups"] == ["ml"]
    policy = admin.set_rollback_policy(experiment_id, error_rate_threshold=0.2)
    assert policy["error_rate_threshold"] == 0.2
    assert admin.get_rollback_policy(experiment_id)["enabled"] is True
    admin.start_experiment(experiment_id)
    assert experiment_id in {e["experiment_id"] for e in admin.list_experiments("running")[
        "experiments"]}  # fmt: skip
    routed = admin.route(experiment_id, request_id="req-1", user_id="user-1")
    local = admin.local_experiment(experiment_id)
    assert local.variant("user-1") == (routed["variant_id"], routed["model_version"])
    config, etag = admin.routing_config(experiment_id)
    assert config["experiment_id"] == experiment_id and etag
    receipt = admin.record_outcomes(
        experiment_id,
        [{"variant_id": "control", "request_id": "req-1", "success": True, "latency_ms": 3.0}],
    )
    assert receipt == {"accepted": 1, "duplicates": 0}
    assert admin.metrics(experiment_id)["variants"]["control"]["request_count"] == 1
    assert admin.analysis(experiment_id)["recommendation"] == "continue"
    assert admin.analysis(experiment_id, method="fixed")["method"] == "fixed"
    segments = admin.segments(experiment_id, method="fixed")  # no dimensions declared
    assert segments["experiment_id"] == experiment_id and segments["flagged"] == []
    admin.pause_experiment(experiment_id)
    admin.resume_experiment(experiment_id)
    assert admin.rollback_experiment(experiment_id, "manual")["status"] == "rolled_back"
    with pytest.raises(Conflict):
        admin.conclude_experiment(experiment_id)
    other = admin.create_experiment("conclude", two_arms(model_id))["experiment_id"]
    admin.start_experiment(other)
    concluded = admin.conclude_experiment(other)  # no decisive winner: nothing is promoted
    assert concluded["winning_variant_id"] is None
    assert concluded["conclusion_reason"].startswith("concluded without promoting anything")
    assert admin.latest_check(other)["latest"] is None  # the monitor never checked it
    plan = admin.sample_size(0.1, 0.1, daily_traffic=5000)
    assert plan["per_variant"] > 0 and plan["days"] >= 1


def test_explanation_guardrail_methods(admin: Client) -> None:
    model_id = model_with_versions(admin)
    experiment_id = admin.create_experiment("guarded", two_arms(model_id))["experiment_id"]
    admin.start_experiment(experiment_id)
    declared = admin.set_explanation_guardrails(
        experiment_id,
        [{"type": "feature_not_in_top_k", "feature": "c", "k": 1}],
        source="posted_inputs",
        sample_size=10,
    )
    assert declared["source"] == "posted_inputs" and declared["evaluation"] is None
    rows = [{"request_id": f"r{i}", "input_data": {"a": i, "b": -i, "c": 0.5}} for i in range(3)]
    assert admin.post_explanation_inputs(experiment_id, rows)["held"] == 3
    found = admin.get_explanation_guardrails(experiment_id)
    assert found["revision"] == declared["revision"]
    admin.delete_explanation_guardrails(experiment_id)
    with pytest.raises(NotFound):
        admin.get_explanation_guardrails(experiment_id)


def test_dataset_methods(admin: Client) -> None:
    dataset_id = admin.create_dataset("methods-ds", format="csv", access_groups=["ml"])[
        "dataset_id"]  # fmt: skip
    assert admin.get_dataset(dataset_id)["name"] == "methods-ds"
    assert dataset_id in {d["dataset_id"] for d in admin.list_datasets()["datasets"]}
    first = admin.create_version(dataset_id, data="id,radius,label\n1,14.1,0\n2,12.0,1\n")
    second = admin.create_version(dataset_id, data="id,radius,label\n1,14.1,0\n3,9.0,1\n")
    assert [v["version_number"] for v in admin.iter_versions(dataset_id, page=1)] == [1, 2]
    assert admin.get_version(dataset_id, 2)["version_id"] == second["version_id"]
    assert admin.compare(dataset_id, 1, 2)["same_content"] is False
    restored = admin.restore_version(dataset_id, 1)
    assert restored["version_number"] == 3 and restored["version_id"] != first["version_id"]
    latest = admin.get_version(dataset_id, restored["version_number"])
    assert latest["sha256"] == first["sha256"]
    content = admin.content_url(dataset_id, 1)
    assert requests.get(content["url"], timeout=30).content.startswith(b"id,radius")
    upload = admin.create_upload(dataset_id, filename="more.csv")
    assert upload["mode"] == "staged" and upload["url"]
    multipart = admin.create_upload(dataset_id, filename="huge.csv", size_bytes=200_000_000)
    part = requests.put(multipart["part_urls"][0], data=b"x", timeout=30)
    finished = admin.complete_upload(
        dataset_id,
        key=multipart["key"],
        upload_id=multipart["upload_id"],
        parts=[{"part_number": 1, "etag": part.headers["ETag"]}],
    )
    assert finished["status"] == "completed"
    made = admin.transform(dataset_id, {"type": "filter", "predicates": [
        {"column": "radius", "op": "lt", "value": 13}]}, [first["version_id"]])  # fmt: skip
    output_id = made["output_version_ids"]["output"]
    upstream = admin.lineage(output_id, direction="upstream", max_depth=3)
    assert first["version_id"] in {n["version_id"] for n in upstream["upstream"]["nodes"]}
    assert admin.reproducibility(output_id)["reproducible"] in (True, False)
    replayed = admin.replay(output_id, source_version_id=first["version_id"],
                            data_version_id=second["version_id"])  # fmt: skip
    assert replayed["target_version_id"]
    model_id = model_with_versions(admin)
    used_by = admin.create_experiment("usage", two_arms(model_id))["experiment_id"]
    admin.record_usage(dataset_id, 1, experiment_id=used_by)
    assert admin.list_usages(dataset_id, experiment_id=used_by)["usages"]
    assert admin.reconstruct(dataset_id, experiment_id=used_by)
    moved = admin.move_tag(dataset_id, "production", "2")
    assert moved["version_number"] == 2 and moved["moved_by"] == "admin"
    assert [t["tag"] for t in admin.list_tags(dataset_id)["tags"]] == ["production"]
    history = admin.get_tag(dataset_id, "production")["history"]
    assert [h["version_number"] for h in history] == [2]
    assert admin.get_version(dataset_id, "production")["version_number"] == 2
    assert admin.drift(dataset_id, 1, "production")
    limited = admin.set_drift_limits(dataset_id, psi=0.25, columns=["radius"])
    assert limited["drift_limits"] == {"psi": 0.25, "p_value": None, "columns": ["radius"]}
    assert admin.set_drift_limits(dataset_id)["drift_limits"] is None
    profiled = admin.profile(dataset_id, "production")
    assert profiled["version_number"] == 2 and profiled["columns"][0]["name"] == "id"
    kept = admin.set_retention(dataset_id, keep_last=50)
    assert kept["dataset_id"] == dataset_id
    extra = admin.create_version(dataset_id, data="id,radius,label\n9,1.0,0\n")
    gone = admin.delete_version(dataset_id, extra["version_number"])
    assert gone["version_id"] == extra["version_id"]
    erased = admin.erase_content(extra["sha256"])
    assert erased["sha256"] == extra["sha256"]
    shared = admin.set_dataset_access(dataset_id, ["ml", "risk"])
    assert shared["access_groups"] == ["ml", "risk"]
    assert "rejections" in admin.list_rejections(limit=5)


def test_explanation_methods(admin: Client) -> None:
    model_id = model_with_versions(admin, count=1)
    row = {"a": 0.1, "b": 0.2, "c": 0.3}
    single = admin.explain(model_id, row, model_version=1, explanation_type="shap")
    assert single["model_version"] == 1
    assert admin.explain_batch(model_id, [row, row], model_version=1)["count"] == 2
    ranked = admin.explain_global(model_id, inputs=[row, {"a": 1, "b": 0, "c": -1}],
                                  model_version=1)  # fmt: skip
    assert set(ranked["feature_importances"]) == {"a", "b", "c"}
    dependence = admin.explain_dependence(model_id, "a", inputs=[row, row], model_version=1)
    assert dependence["feature"] == "a"
    job = admin.explain_batch(model_id, [row] * 3, model_version=1, asynchronous=True)
    result = admin.wait_job(job["job_id"], timeout=120)
    assert result["count"] == 3
    assert admin.get_job(job["job_id"])["status"] == "succeeded"
    assert admin.cache_stats()["hits"] >= 0
    rows = [row, {"a": 1.0, "b": 0.0, "c": -1.0}, {"a": -0.5, "b": 0.4, "c": 0.9}, row]
    side = {"model_id": model_id, "model_version": 1, "inputs": rows}
    assert admin.attribution_drift(side, side)["ndcg"] == pytest.approx(1.0)
    labels = [0, 1, 0, 1]
    bias = admin.bias_metrics(model_id, ["x"], 1, model_version=1, inputs=rows, labels=labels,
                              facet=["x", "y", "x", "y"])  # fmt: skip
    assert bias["counts"] and "pre_training" in bias
    importance = admin.permutation_importance(model_id, rows, labels, model_version=1)
    assert set(importance["importances"]) == {"a", "b", "c"}
    curves = admin.partial_dependence(model_id, "a", rows, model_version=1, grid_resolution=3)
    assert curves["model_version"] == 1 and len(curves["individual"]) == len(rows)


def test_layer_and_holdout_methods(admin: Client) -> None:
    layer = admin.create_layer("methods-layer", description="d")
    layer_id = layer["layer_id"]
    assert layer["free"] == [[0, 10000]] and layer["slices"] == []
    assert layer_id in {found["layer_id"] for found in admin.list_layers()["layers"]}
    assert admin.set_layer_access(layer_id, ["ml"])["access_groups"] == ["ml"]
    holdout = admin.create_holdout("methods-holdout", "0.02", layer_ids=[layer_id])
    assert admin.get_holdout(holdout["holdout_id"])["layer_ids"] == [layer_id]
    assert holdout["holdout_id"] in {h["holdout_id"] for h in admin.list_holdouts()["holdouts"]}
    model_id = model_with_versions(admin)
    experiment = admin.create_experiment(
        "layered", two_arms(model_id), layer={"layer_id": layer_id, "start": 0, "end": 100},
        targeting={"attribute": "plan", "equals": "pro"},
    )  # fmt: skip
    assert admin.get_layer(layer_id)["slices"] == [
        {"start": 0, "end": 100, "experiment_id": experiment["experiment_id"], "free_at": None}
    ]
    with pytest.raises(Conflict):
        admin.delete_layer(layer_id)
    admin.start_experiment(experiment["experiment_id"])
    routed = admin.route(experiment["experiment_id"], "r-1", "u-1", attributes={"plan": "free"})
    assert (routed["variant_id"], routed["exposure"]) == (None, "ineligible")
    analysis = admin.holdout_analysis(holdout["holdout_id"], metric="error_rate", method="fixed")
    assert [e["experiment_id"] for e in analysis["experiments"]] == [experiment["experiment_id"]]
    assert (analysis["method"], analysis["test"]) == ("fixed", "no_data")
    with pytest.raises(Conflict):  # running: releasing would move exposed users
        admin.release_slice(experiment["experiment_id"])
    grown = admin.resize_slice(experiment["experiment_id"], 0, 200)
    assert (grown["layer"]["start"], grown["layer"]["end"]) == (0, 200)
    admin.rollback_experiment(experiment["experiment_id"], "done")
    released = admin.release_slice(experiment["experiment_id"])
    assert released["layer"]["start"] == released["layer"]["end"] == 0
    assert admin.get_layer(layer_id)["slices"][0]["free_at"] is not None
    assert admin.delete_holdout(holdout["holdout_id"]) == {
        "id": holdout["holdout_id"],
        "deleted": True,
    }
    empty = admin.create_layer("methods-empty")["layer_id"]
    assert admin.delete_layer(empty)["deleted"] is True


def test_every_declared_route_was_called_against_the_local_stack() -> None:
    others = {name for name in globals() if name.startswith("test_")} - {
        "test_every_declared_route_was_called_against_the_local_stack"
    }
    if not others <= RAN:  # pytest-xdist spread this module over workers (make test does not)
        pytest.skip("run this module in one process (--dist loadfile) to check route coverage")
    assert set(OPERATIONS) - CALLED == set()
