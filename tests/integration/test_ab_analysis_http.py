"""Issue 19's analysis over HTTP: the Bayesian engine beside the frequentist one."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from tests.conftest import Http


def _model(http: Http) -> str:
    created = http.call("POST", "/models", {"name": f"ranker-{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 201, created.data
    model_id = created.data["model_id"]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    artifact = base64.b64encode(sio.dumps(LogisticRegression().fit(X, X[:, 0] > 0))).decode()
    for _ in range(2):
        body = {"artifact_base64": artifact, "format": "skops", "task": "classification",
                "feature_names": ["a", "b"]}  # fmt: skip
        assert http.call("POST", f"/models/{model_id}/versions", body).status_code == 201
    return model_id


def _body(model_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "ranker",
        "variants": [
            {"variant_id": "control", "model_id": model_id, "model_version": 1,
             "traffic_weight": "0.5", "is_control": True},
            {"variant_id": "treatment", "model_id": model_id, "model_version": 2,
             "traffic_weight": "0.5"},
        ],
        "minimum_sample_size": 100,
        **extra,
    }  # fmt: skip


def _conversions(http: Http, eid: str, per_arm: int, rates: tuple[float, float]) -> None:
    outcomes = [
        {"variant_id": arm, "request_id": f"{arm}-{i}", "success": True, "latency_ms": 30.0,
         "converted": i < rate * per_arm}
        for arm, rate in zip(("control", "treatment"), rates, strict=True)
        for i in range(per_arm)
    ]  # fmt: skip
    for start in range(0, len(outcomes), 1000):
        batch = {"outcomes": outcomes[start : start + 1000]}
        assert http.call("POST", f"/experiments/{eid}/outcomes", batch).status_code == 200


def test_bayesian_decision_over_http_shows_both_engines_and_conclude_follows_it(
    http: Http,
) -> None:
    decision = {"engine": "bayesian", "risk_threshold": 0.01, "prior": {"alpha": 1, "beta": 1}}
    created = http.call("POST", "/experiments", _body(_model(http), decision=decision))
    assert created.status_code == 201, created.data
    assert created.data["decision"] == {
        "engine": "bayesian",
        "risk_threshold": 0.01,
        "prior": {"alpha": 1.0, "beta": 1.0, "mean": None, "sd": None},
    }
    eid = created.data["experiment_id"]
    assert http.call("POST", f"/experiments/{eid}/start").status_code == 200
    _conversions(http, eid, 600, (0.10, 0.13))
    analysis = http.call("GET", f"/experiments/{eid}/analysis")
    assert analysis.status_code == 200, analysis.data
    data = analysis.data
    assert data["decision_engine"] == "bayesian" and data["risk_threshold"] == 0.01
    assert data["verdicts"]["frequentist"]["recommendation"] == "continue"
    assert data["verdicts"]["bayesian"]["recommendation"] == "conclude_winner"
    assert data["recommendation"] == "conclude_winner"
    reading = data["treatments"][0]["bayesian"]
    assert reading["model"] == "beta_binomial" and reading["decision"] == "better"
    assert reading["control_mean"] == pytest.approx(61 / 602)
    low, high = reading["credible_interval"]
    assert low < reading["relative_lift"] < high
    concluded = http.call("POST", f"/experiments/{eid}/conclude", {})
    assert concluded.data["winning_variant_id"] == "treatment"


# Decision settings refused with 400 (one account, checked one after another).
_BAD_DECISIONS: list[dict[str, Any]] = [
    {"engine": "oracle"},
    {"risk_threshold": 0},
    {"risk_threshold": "0.01x"},
    {"prior": {"alpha": -1}},
    {"prior": {"sd": 0}},
    {"prior": {"kappa": 1}},
]


def test_bad_decision_settings_are_400_and_create_nothing(
    http: Http, subtests: pytest.Subtests
) -> None:
    for decision in _BAD_DECISIONS:
        with subtests.test(decision=decision):
            response = http.call("POST", "/experiments", _body("m-unknown", decision=decision))
            assert response.status_code == 400, response.data
            assert {"error", "message"} <= set(response.data)
            assert http.call("GET", "/experiments").data["experiments"] == []


def test_a_prior_mean_without_its_sd_is_422_and_creates_nothing(http: Http) -> None:
    body = _body(_model(http), decision={"prior": {"mean": 1.0}})
    response = http.call("POST", "/experiments", body)
    assert response.status_code == 422, response.data
    assert http.call("GET", "/experiments").data["experiments"] == []


def test_cuped_over_http_reports_the_adjusted_test_and_its_variance_reduction(
    http: Http,
) -> None:
    created = http.call("POST", "/experiments", _body(_model(http), primary_metric="revenue"))
    eid = created.data["experiment_id"]
    assert http.call("POST", f"/experiments/{eid}/start").status_code == 200
    rng = np.random.default_rng(8)
    outcomes = []
    for arm, lift in (("control", 0.0), ("treatment", 0.5)):
        x = np.round(rng.normal(100, 10, 400), 6)
        y = np.round(0.8 * x + lift + rng.normal(0, 4, 400), 6)
        outcomes += [
            {"variant_id": arm, "request_id": f"{arm}-{i}", "success": True, "latency_ms": 5.0,
             "custom_metrics": {"revenue": float(v)}, "covariate": float(c)}
            for i, (c, v) in enumerate(zip(x, y, strict=True))
        ]  # fmt: skip
    posted = http.call("POST", f"/experiments/{eid}/outcomes", {"outcomes": outcomes})
    assert posted.data == {"accepted": 800, "duplicates": 0}
    found = http.call("GET", f"/experiments/{eid}/analysis").data["treatments"][0]["cuped"]
    assert found["units_control"] == found["units_treatment"] == 400
    assert found["variance_reduction"] == pytest.approx(found["correlation"] ** 2, abs=0.01)
    assert found["standard_error"] < found["unadjusted_standard_error"] / 2
    low, high = found["confidence_interval"]
    assert low < found["effect"] < high


def test_a_bad_covariate_over_http_is_400_and_counts_nothing(
    http: Http, subtests: pytest.Subtests
) -> None:
    created = http.call("POST", "/experiments", _body(_model(http)))
    eid = created.data["experiment_id"]
    assert http.call("POST", f"/experiments/{eid}/start").status_code == 200
    for case, covariate in enumerate(["NaN", "Infinity", 1e7, "1.5", True]):
        with subtests.test(covariate=covariate):
            outcome = {"variant_id": "control", "request_id": f"r{case}", "success": True,
                       "latency_ms": 5.0, "converted": True, "covariate": covariate}  # fmt: skip
            response = http.call("POST", f"/experiments/{eid}/outcomes", outcome)
            assert response.status_code == 400, response.data
            metrics = http.call("GET", f"/experiments/{eid}/metrics").data
            assert metrics["variants"]["control"]["request_count"] == 0
    # the same experiment counts the same outcome with a fair covariate
    fair = {"variant_id": "control", "request_id": "r", "success": True, "latency_ms": 5.0,
            "converted": True, "covariate": 1.5}  # fmt: skip
    assert http.call("POST", f"/experiments/{eid}/outcomes", fair).status_code in (200, 202)
    metrics = http.call("GET", f"/experiments/{eid}/metrics").data
    assert metrics["variants"]["control"]["request_count"] == 1


def test_declared_metrics_over_http_with_a_bh_correction(http: Http) -> None:
    metrics = [
        {"name": "revenue", "kind": "mean", "role": "primary", "cap_upper": 100},
        {"name": "ctr", "kind": "ratio", "numerator": "clicks", "denominator": "sessions"},
        {"name": "p90", "kind": "quantile", "source": "latency_ms", "quantile": 0.9},
        {"name": "crashed", "kind": "proportion", "role": "guardrail", "lower_is_better": True},
    ]
    body = _body(_model(http), metrics=metrics, correction="bh")
    created = http.call("POST", "/experiments", body)
    assert created.status_code == 201, created.data
    assert [m["name"] for m in created.data["metrics"]] == ["revenue", "ctr", "p90", "crashed"]
    assert created.data["correction"] == "bh"
    eid = created.data["experiment_id"]
    assert http.call("POST", f"/experiments/{eid}/start").status_code == 200
    outcomes = [
        {"variant_id": arm, "request_id": f"{arm}-{i}", "success": True,
         "latency_ms": 10.0 + i % 5, "custom_metrics": {"revenue": 5000.0 if i == 0 else 10.0,
         "clicks": float(i % 3), "sessions": 2.0, "crashed": float(i % 50 == 0)}}
        for arm in ("control", "treatment")
        for i in range(200)
    ]  # fmt: skip
    posted = http.call("POST", f"/experiments/{eid}/outcomes", {"outcomes": outcomes})
    assert posted.status_code == 200, posted.data
    data = http.call("GET", f"/experiments/{eid}/analysis").data
    assert data["correction"] == "bh"
    found = {(m["metric_name"], m["variant_id"]): m for m in data["metrics"]}
    revenue = found[("revenue", "treatment")]
    assert revenue["control"]["value"] == pytest.approx((100 + 199 * 10) / 200)  # capped
    assert found[("ctr", "treatment")]["treatment"]["value"] == pytest.approx(199 / 400)
    assert {g["metric_name"] for g in data["treatments"][0]["guardrails"]} == {"crashed"}


# Metric declarations refused with 400 (one account, checked one after another).
_BAD_DECLARATIONS: list[dict[str, Any]] = [
    {"metrics": [{"name": f"m{i}", "kind": "mean"} for i in range(11)]},
    {"metrics": [{"name": "a", "kind": "median"}]},
    {"metrics": [{"name": "a", "kind": "mean", "weight": 2}]},
    {"metrics": [{"name": "a", "kind": "quantile", "quantile": "NaN"}]},
    {"correction": "bonferroni"},
]


def test_bad_metric_declarations_are_400_and_create_nothing(
    http: Http, subtests: pytest.Subtests
) -> None:
    for extra in _BAD_DECLARATIONS:
        with subtests.test(extra=str(extra)[:60]):
            response = http.call("POST", "/experiments", _body("m-unknown", **extra))
            assert response.status_code == 400, response.data
            assert http.call("GET", "/experiments").data["experiments"] == []
