"""Experiments end to end over HTTP with the real model registry, on moto."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.core.events import RecordingEventBus
from tests.conftest import Http, Tokens
from tests.helpers.abtesting import experiment_request as _body
from tests.helpers.abtesting import http_model_with_versions as _model_with_versions
from tests.helpers.abtesting import outcome_body as _outcome
from tests.helpers.abtesting import start_over_http as _create_running
from tests.monitor import run_monitor


@pytest.fixture
def thread_safe_app(client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Gives the app a thread-local ``current_request``, as ``chalice local`` and Lambda do."""
    from chalice.local import LocalChalice

    import app as app_module

    original = type(app_module.app)
    if not issubclass(original, LocalChalice):  # a LocalStack in this process may have done it
        threaded = type("ThreadLocalApp", (LocalChalice, original), {})
        monkeypatch.setattr(app_module.app, "__class__", threaded)
    yield


def test_full_lifecycle_over_http(http: Http, bus: RecordingEventBus, tokens: Tokens) -> None:
    model_id = _model_with_versions(http)
    # tuning 200: the confidence sequence is tightest around 200 requests per arm
    created = http.call(
        "POST", "/experiments", _body(model_id, analysis={"tuning_sample_size": 200})
    )
    assert created.status_code == 201, created.data
    experiment_id = created.data["experiment_id"]
    assert created.data["status"] == "draft"
    assert [v["traffic_weight"] for v in created.data["variants"]] == ["0.5", "0.5"]
    assert http.call("POST", f"/experiments/{experiment_id}/pause").status_code == 409
    refused = http.call("POST", f"/experiments/{experiment_id}/route", {"request_id": "r"})
    assert refused.status_code == 409

    started = http.call("POST", f"/experiments/{experiment_id}/start")
    assert started.data["status"] == "running" and started.data["start_time"]
    assert started.data["analysis"]["method"] == "sequential"
    assert [p["reason"] for p in started.data["allocation_history"]] == ["start"]

    routed = {}
    for index in range(40):
        body = {"request_id": f"req-{index}", "user_id": f"user-{index % 10}"}
        answer = http.call("POST", f"/experiments/{experiment_id}/route", body, token=tokens.reader)
        assert answer.status_code == 200, answer.data
        variant = answer.data["variant_id"]
        assert routed.setdefault(body["user_id"], variant) == variant  # sticky
        assert answer.data["model_version"] == (1 if variant == "control" else 2)
        assert answer.data["phase"] == 0

    single = http.call("POST", f"/experiments/{experiment_id}/outcomes", _outcome("control", "o-0"))
    assert single.data == {"accepted": 1, "duplicates": 0}
    batch = [
        _outcome("control", f"c-{i}", converted=i < 15, custom_metrics={"revenue": 1.0})
        for i in range(150)
    ] + [
        _outcome("treatment", f"t-{i}", converted=i < 45, custom_metrics={"revenue": 2.0})
        for i in range(150)
    ]
    posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": batch})
    assert posted.data == {"accepted": 300, "duplicates": 0}
    retried = http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": batch[:10]})
    assert retried.data == {"accepted": 0, "duplicates": 10}

    metrics = http.call("GET", f"/experiments/{experiment_id}/metrics", token=tokens.reader).data
    assert metrics["variants"]["control"]["request_count"] == 151
    assert metrics["variants"]["treatment"]["conversion_rate"] == pytest.approx(0.3)
    assert metrics["variants"]["treatment"]["custom_metrics"] == {"revenue": 2.0}
    assert metrics["variants"]["control"]["latency_p50_ms"] == pytest.approx(40.0, rel=0.01)

    analysis = http.call("GET", f"/experiments/{experiment_id}/analysis").data
    treatment = analysis["treatments"][0]
    assert treatment["variant_id"] == "treatment" and treatment["decision"] == "better"
    assert treatment["is_significant"] is True and analysis["method"] == "sequential"
    assert treatment["test"] == "sequential_proportions"
    assert analysis["sample_ratio"]["checked"] is True
    assert [p["phase"] for p in analysis["sample_ratio"]["phases"]] == [0]
    assert analysis["recommendation"] == "conclude_winner"
    assert analysis["recommended_winner"] == "treatment"
    assert analysis["reason"].startswith("treatment is better on conversion_rate")
    fixed = http.call("GET", f"/experiments/{experiment_id}/analysis?method=fixed").data
    assert fixed["method"] == "fixed" and fixed["recommendation"] == "continue"
    assert fixed["treatments"][0]["decision"] == "underpowered"
    assert fixed["treatments"][0]["planned_sample_size"] == 14_745
    assert "underpowered: keep running until 14745" in fixed["reason"]
    assert http.call("GET", f"/experiments/{experiment_id}/analysis?method=x").status_code == 400

    paused = http.call("POST", f"/experiments/{experiment_id}/pause")
    assert [v["effective_weight"] for v in paused.data["variants"]] == ["1", "0"]
    to_control = http.call("POST", f"/experiments/{experiment_id}/route",
                           {"request_id": "x", "user_id": "user-1"})  # fmt: skip
    assert to_control.data["variant_id"] == "control" and to_control.data["phase"] == 1
    # exposure while paused is its own phase: it does not count in the analysis or the SRM
    while_paused = [_outcome("control", f"p-{i}", converted=False) for i in range(500)]
    http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": while_paused})
    still = http.call("GET", f"/experiments/{experiment_id}/analysis").data
    assert still["sample_ratio"]["observed"] == analysis["sample_ratio"]["observed"]
    assert still["sample_ratio"]["phases"][1]["checked"] is False
    resumed = http.call("POST", f"/experiments/{experiment_id}/resume").data
    assert resumed["status"] == "running" and resumed["current_phase"] == 2
    assert [p["reason"] for p in resumed["allocation_history"]] == ["start", "pause", "resume"]
    late = http.call("POST", f"/experiments/{experiment_id}/outcomes",
                     {"outcomes": [_outcome("control", "late-1", phase=0),
                                   _outcome("control", "late-2", phase=7)]})  # fmt: skip
    assert late.status_code == 422 and "phase 7" in late.data["message"]
    listed = http.call("GET", "/experiments?status=running").data["experiments"]
    assert [e["experiment_id"] for e in listed] == [experiment_id]

    concluded = http.call("POST", f"/experiments/{experiment_id}/conclude", {})
    assert concluded.status_code == 200, concluded.data
    assert concluded.data["status"] == "concluded"
    assert concluded.data["winning_variant_id"] == "treatment"
    assert concluded.data["conclusion_reason"].startswith("treatment promoted")
    assert concluded.data["allocation_history"][-1]["reason"] == "end"
    version = http.call("GET", f"/models/{model_id}/versions/2").data
    assert version["stage"] == "production"
    again = http.call("POST", f"/experiments/{experiment_id}/conclude", {})
    assert again.status_code == 409

    types = [e.detail_type for e in bus.events if e.detail.get("experiment_id") == experiment_id]
    assert types == [
        "ExperimentCreated",
        "ExperimentStarted",
        "ExperimentPaused",
        "ExperimentResumed",
        "ExperimentConcluded",
    ]


def test_invalid_experiments_get_400_or_422(http: Http) -> None:
    model_id = _model_with_versions(http)
    thirds = _body(model_id)
    thirds["variants"].append({**thirds["variants"][1], "variant_id": "third"})
    for variant in thirds["variants"]:
        variant["traffic_weight"] = "0.3333"
    response = http.call("POST", "/experiments", thirds)
    assert response.status_code == 422 and "sum to exactly 1" in response.data["message"]
    two_controls = _body(model_id)
    two_controls["variants"][1]["is_control"] = True
    assert http.call("POST", "/experiments", two_controls).status_code == 422
    unknown = _body(model_id)
    unknown["variants"][1]["model_version"] = 9
    response = http.call("POST", "/experiments", unknown)
    assert response.status_code == 422 and response.data["error"] == "unknown_model_version"
    number_weight = _body(model_id)
    number_weight["variants"][0]["traffic_weight"] = 0.5
    assert http.call("POST", "/experiments", number_weight).status_code == 400
    assert http.call("POST", "/experiments", _body(model_id, "abc")).status_code == 400
    assert http.call("POST", "/experiments", "{nope").status_code == 400
    assert http.call("GET", "/experiments").data["experiments"] == []
    assert http.call("GET", "/experiments/exp-missing").status_code == 404
    assert http.call("GET", "/experiments?status=bogus").status_code == 400


def test_canary_with_an_error_spike_is_rolled_back_by_the_scheduled_handler(
    http: Http, client: Any, bus: RecordingEventBus
) -> None:
    model_id = _model_with_versions(http)
    experiment_id = _create_running(http, _body(model_id, "0.9", "0.1"))
    policy = {"error_rate_threshold": 0.05, "min_requests_before_rollback": 50}
    stored = http.call("PUT", f"/experiments/{experiment_id}/rollback-policy", policy)
    assert stored.status_code == 200 and stored.data["error_rate_threshold"] == 0.05
    assert http.call("GET", f"/experiments/{experiment_id}/rollback-policy").data == stored.data

    healthy = [_outcome("control", f"c-{i}") for i in range(400)]
    spiking = [{**_outcome("treatment", f"t-{i}"), "success": i % 4 != 0} for i in range(160)]
    posted = http.call("POST", f"/experiments/{experiment_id}/outcomes",
                       {"outcomes": healthy + spiking})  # fmt: skip
    assert posted.data["accepted"] == 560

    result = run_monitor(client)
    assert result["fan_out"]["running"] == 1 and result["fan_out"]["messages"] == 1
    assert result["rolled_back"] == [experiment_id]

    experiment = http.call("GET", f"/experiments/{experiment_id}").data
    assert experiment["status"] == "rolled_back"
    reason = experiment["rollback_reason"]
    assert "error_rate 0.2500 (40 errors in 160 requests) exceeds threshold 0.0500" in reason
    assert "lower bound" in reason and "mSPRT" in reason
    details = experiment["rollback_details"]
    assert details["metric"] == "error_rate" and details["kind"] == "cap"
    assert details["threshold"] == 0.05 and details["lower_bound"] > 0
    checks = http.call("GET", f"/experiments/{experiment_id}/checks").data
    assert checks["latest"]["outcome"] == "fail" and checks["latest"]["consecutive_failures"] == 1
    for index in range(20):
        routed = http.call("POST", f"/experiments/{experiment_id}/route",
                           {"request_id": f"r{index}", "user_id": f"u{index}"})  # fmt: skip
        assert routed.data["variant_id"] == "control"
    rolled = bus.of_type("ExperimentRolledBack")
    assert len(rolled) == 1 and rolled[0].detail["experiment_id"] == experiment_id
    assert rolled[0].detail["reason"] == experiment["rollback_reason"]

    second = run_monitor(client, "2026-01-01T00:01:00Z")
    assert second["fan_out"]["running"] == 0 and len(bus.of_type("ExperimentRolledBack")) == 1
    manual = http.call("POST", f"/experiments/{experiment_id}/rollback", {"reason": "again"})
    assert manual.status_code == 409


def test_manual_rollback_over_http_stores_the_reason(http: Http, bus: RecordingEventBus) -> None:
    model_id = _model_with_versions(http)
    experiment_id = _create_running(http, _body(model_id))
    empty = http.call("GET", f"/experiments/{experiment_id}/analysis")
    assert empty.status_code == 200, empty.data
    assert empty.data["recommendation"] == "continue"
    assert empty.data["treatments"][0]["confidence_interval"] == [None, None]
    response = http.call("POST", f"/experiments/{experiment_id}/rollback",
                         {"reason": "bad offline eval"})  # fmt: skip
    assert response.status_code == 200
    assert response.data["rollback_reason"] == "bad offline eval"
    assert [v["effective_weight"] for v in response.data["variants"]] == ["1", "0"]
    assert bus.of_type("ExperimentRolledBack")[0].detail["automatic"] is False


def test_ramp_advances_through_the_scheduled_handler(
    http: Http, client: Any, bus: RecordingEventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.abtesting.engine import get_ab_engine
    from chalicelib.core.clock import FixedClock, utc_now

    clock = FixedClock(utc_now())
    get_ab_engine().clock = clock
    model_id = _model_with_versions(http)
    ramp = {"steps": ["0.1", "0.5", "1"], "interval_minutes": 10, "min_requests_per_variant": 20}
    body = _body(model_id, "0.9", "0.1", allocation_strategy="ramping", ramp=ramp)
    experiment_id = _create_running(http, body)
    outcomes = [_outcome(v, f"{v}-{i}") for v in ("control", "treatment") for i in range(30)]
    http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": outcomes})
    assert run_monitor(client)["ramped"] == []
    clock.advance(minutes=11)
    assert run_monitor(client, "2026-01-01T00:11:00Z")["ramped"] == [experiment_id]
    experiment = http.call("GET", f"/experiments/{experiment_id}").data
    assert experiment["ramp"]["current_step"] == 1
    assert [v["traffic_weight"] for v in experiment["variants"]] == ["0.5", "0.5"]
    assert len(bus.of_type("RampAdvanced")) == 1
    bad_ramp = _body(model_id, "0.9", "0.1", allocation_strategy="ramping",
                     ramp={**ramp, "steps": ["0.1", "x"]})  # fmt: skip
    assert http.call("POST", "/experiments", bad_ramp).status_code == 400


def test_bandit_over_http_keeps_users_sticky(http: Http) -> None:
    model_id = _model_with_versions(http)
    body = _body(model_id, allocation_strategy="mab", primary_metric="conversion_rate",
                 bandit={"floor": "0.05", "interval_minutes": 1})  # fmt: skip
    experiment_id = _create_running(http, body)
    experiment = http.call("GET", f"/experiments/{experiment_id}").data
    assert experiment["bandit"]["floor"] == "0.05"
    path = f"/experiments/{experiment_id}/route"
    first = http.call("POST", path, {"request_id": "a", "user_id": "u-1"}).data["variant_id"]
    assert (
        http.call("POST", path, {"request_id": "b", "user_id": "u-1"}).data["variant_id"] == first
    )
    bad_floor = _body(model_id, allocation_strategy="mab", bandit={"floor": "0.6"})
    assert http.call("POST", "/experiments", bad_floor).status_code == 422


def test_concurrent_outcome_posts_give_exact_counts(
    http: Http, atomic_dynamodb: None, thread_safe_app: None
) -> None:
    model_id = _model_with_versions(http)
    experiment_id = _create_running(http, _body(model_id))
    batches = [
        [_outcome("control" if i % 2 else "treatment", f"req-{b * 30 + i}") for i in range(60)]
        for b in range(8)
    ]  # overlapping request ids: batch b covers ids 30b .. 30b+59, so 270 distinct ids

    def post(batch: list[dict[str, Any]]) -> dict[str, int]:
        response = http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": batch})
        assert response.status_code == 200, response.data
        return response.data

    with ThreadPoolExecutor(max_workers=8) as pool:
        receipts = list(pool.map(post, batches + batches[:3]))
    assert sum(r["accepted"] for r in receipts) == 270
    assert sum(r["duplicates"] for r in receipts) == 11 * 60 - 270
    metrics = http.call("GET", f"/experiments/{experiment_id}/metrics").data["variants"]
    assert metrics["control"]["request_count"] + metrics["treatment"]["request_count"] == 270
    assert metrics["control"]["request_count"] == 135


def test_sample_size_route_plans_traffic_and_refuses_nonsense(http: Http) -> None:
    path = "/stats/sample-size?baseline_rate=0.1&minimum_detectable_effect=0.1"
    plan = http.call("GET", f"{path}&daily_traffic=5000&method=fixed")
    assert plan.status_code == 200, plan.data
    assert plan.data["per_variant"] == 14_745 and plan.data["total"] == 29_490
    assert plan.data["days"] == 6 and plan.data["comparisons"] == 1
    sequential = http.call("GET", path).data
    assert sequential["analysis_method"] == "sequential" and sequential["per_variant"] == 30_341
    three = http.call("GET", f"{path}&variants=3&method=fixed").data
    assert three["per_variant"] > 14_745 and three["confidence_per_comparison"] == 0.975
    for bad in [
        "/stats/sample-size?baseline_rate=1.5&minimum_detectable_effect=0.1",
        "/stats/sample-size?baseline_rate=nan&minimum_detectable_effect=0.1",
        "/stats/sample-size?baseline_rate=0.1",
        f"{path}&variants=1",
        f"{path}&power=abc",
    ]:
        assert http.call("GET", bad).status_code == 400, bad
    assert http.call("GET", f"{path[:-3]}0").status_code == 422  # a zero effect
    assert http.call("GET", f"{path[:-3]}9.5").status_code == 422  # the rate leaves (0, 1)
