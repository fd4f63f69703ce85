"""Explanation guardrails of experiments end to end, on moto: real scikit-learn models, a
dataset version of rows, the scheduled monitor and the explanation job worker (issue 16)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chalicelib.core.events import RecordingEventBus
from tests.conftest import Http, Tokens
from tests.helpers.abtesting import experiment_request as _body
from tests.helpers.abtesting import http_model_with_versions
from tests.helpers.abtesting import outcome_body as _outcome
from tests.helpers.abtesting import start_over_http as _create_running
from tests.helpers.explain import register_over_http, run_queued_jobs
from tests.monitor import run_monitor

FEATURES = ["income", "age", "tenure", "balance", "visits", "zip_code"]
GUARDRAILS = [
    {"type": "ndcg", "min": 0.9, "top_k": 3},
    {"type": "feature_not_in_top_k", "feature": "zip_code", "k": 3},
]
TICKS = [f"2026-01-01T00:{minute:02d}:00Z" for minute in range(0, 60, 11)]


def _data(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(400, len(FEATURES)))


def _models(http: Http, treatment: str) -> str:
    """One model: version 1 (the control) decides on income, age and tenure; version 2 is a
    retrained copy (``same``) or one that leans on ``zip_code`` (``zip``)."""
    from sklearn.ensemble import GradientBoostingClassifier

    X = _data()
    fair = (2.0 * X[:, 0] + 1.2 * X[:, 1] + 0.7 * X[:, 2] > 0).astype(int)
    leaning = (1.5 * X[:, 5] + 0.8 * X[:, 0] > 0).astype(int)
    control = GradientBoostingClassifier(n_estimators=40, max_depth=2, random_state=0)
    other = GradientBoostingClassifier(n_estimators=40, max_depth=2, random_state=1,
                                       subsample=0.8)  # fmt: skip
    y2 = leaning if treatment == "zip" else fair
    args = ("classification", FEATURES, X[:40], ["deny", "grant"])
    model_id, _ = register_over_http(http, control.fit(X, fair), *args)
    register_over_http(http, other.fit(X, y2), *args, model_id=model_id)
    return model_id


def _dataset_version(
    rows: int = 150, groups: tuple[str, ...] = ("ml",), owner: str = "alice"
) -> str:
    """A CSV dataset version of fresh rows of the models' features (owned by alice)."""
    from chalicelib.dataversion.service import get_versioning_engine

    X = _data(seed=11)[:rows]
    lines = [",".join(FEATURES)] + [",".join(repr(v) for v in row) for row in X.tolist()]
    engine = get_versioning_engine()
    dataset = engine.create_dataset(f"inputs-{np.random.randint(1e9)}", owner=owner,
                                    access_groups=list(groups))  # fmt: skip
    return engine.create_version(dataset.dataset_id, ("\n".join(lines) + "\n").encode()).version_id


def _ramping(http: Http, model_id: str) -> str:
    ramp = {"steps": ["0.1", "0.5", "1"], "interval_minutes": 10, "min_requests_per_variant": 20}
    body = _body(model_id, "0.9", "0.1", allocation_strategy="ramping", ramp=ramp)
    experiment_id = _create_running(http, body)
    outcomes = [_outcome(v, f"{v}-{i}") for v in ("control", "treatment") for i in range(30)]
    response = http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": outcomes})
    assert response.status_code in (200, 202), response.data
    return experiment_id


def _declare(http: Http, experiment_id: str, version_id: str, action: str) -> Any:
    body = {"explanation_guardrails": GUARDRAILS, "dataset_version_id": version_id,
            "action": action, "sample_size": 60}  # fmt: skip
    return http.call("PUT", f"/experiments/{experiment_id}/explanation-guardrails", body)


@pytest.fixture
def clock() -> Any:
    from chalicelib.abtesting.engine import get_ab_engine
    from chalicelib.core.clock import FixedClock, utc_now

    fixed = FixedClock(utc_now())
    get_ab_engine().clock = fixed
    return fixed


def test_a_treatment_that_puts_zip_code_in_its_top_3_is_rolled_back_with_the_reason(
    http: Http, client: Any, bus: RecordingEventBus, clock: Any
) -> None:
    experiment_id = _ramping(http, _models(http, "zip"))
    declared = _declare(http, experiment_id, _dataset_version(), "rollback")
    assert declared.status_code == 200, declared.data
    assert declared.data["evaluation"] is None and declared.data["action"] == "rollback"
    path = f"/experiments/{experiment_id}/explanation-guardrails"

    clock.advance(minutes=11)  # the ramp is due, but the guardrails have not passed yet
    first = run_monitor(client, TICKS[1])
    assert first["rolled_back"] == [] and first["ramped"] == [] and first["errors"] == []
    pending = http.call("GET", path).data["evaluation"]
    assert pending["status"] == "pending" and set(pending["jobs"]) == {"control", "treatment"}
    assert pending["sample_rows"] == 60
    # A redelivered or repeated tick submits nothing more and decides nothing while jobs wait.
    assert run_monitor(client, TICKS[1])["rolled_back"] == []
    assert http.call("GET", path).data["evaluation"]["jobs"] == pending["jobs"]
    assert run_queued_jobs(client) == 2

    second = run_monitor(client, TICKS[2])
    assert second["rolled_back"] == [experiment_id]
    experiment = http.call("GET", f"/experiments/{experiment_id}").data
    assert experiment["status"] == "rolled_back"
    assert experiment["rollback_reason"].startswith("explanation guardrails failed")
    assert path in experiment["rollback_reason"]
    assert experiment["rollback_details"]["metric"] == "explanation_guardrails"
    evaluation = http.call("GET", path).data["evaluation"]
    assert evaluation["status"] == "failed"
    assert "'zip_code' is rank 1 in its attribution, inside its top 3" in evaluation["reason"]
    assert evaluation["top_features"]["treatment"][0] == "zip_code"
    assert "zip_code" not in evaluation["top_features"]["control"][:3]
    ndcg = next(r for r in evaluation["results"] if r["guardrail"]["type"] == "ndcg")
    assert ndcg["passed"] is False and ndcg["observed"] < 0.9
    assert run_monitor(client, TICKS[3])["rolled_back"] == []  # not running any more
    assert len(bus.of_type("ExplanationGuardrailsEvaluated")) == 1
    assert len(bus.of_type("ExperimentRolledBack")) == 1


def test_a_retrained_treatment_passes_and_the_ramp_steps_only_after_it_passed(
    http: Http, client: Any, bus: RecordingEventBus, clock: Any
) -> None:
    experiment_id = _ramping(http, _models(http, "same"))
    assert _declare(http, experiment_id, _dataset_version(), "rollback").status_code == 200
    clock.advance(minutes=11)
    assert run_monitor(client, TICKS[1])["ramped"] == []  # pending holds the ramp
    run_queued_jobs(client)
    second = run_monitor(client, TICKS[2])
    assert second["rolled_back"] == [] and second["ramped"] == [experiment_id]
    evaluation = http.call("GET", f"/experiments/{experiment_id}/explanation-guardrails").data[
        "evaluation"
    ]
    assert evaluation["status"] == "passed", evaluation
    assert all(r["passed"] for r in evaluation["results"])
    assert evaluation["top_features"]["treatment"][:3] == evaluation["top_features"]["control"][:3]
    assert [e.detail["status"] for e in bus.of_type("ExplanationGuardrailsEvaluated")] == ["passed"]


def test_a_failed_hold_guardrail_holds_the_ramp_until_the_guardrails_are_removed(
    http: Http, client: Any, bus: RecordingEventBus, clock: Any
) -> None:
    experiment_id = _ramping(http, _models(http, "zip"))
    path = f"/experiments/{experiment_id}/explanation-guardrails"
    assert _declare(http, experiment_id, _dataset_version(), "hold").status_code == 200
    clock.advance(minutes=11)
    run_monitor(client, TICKS[1])
    run_queued_jobs(client)
    for tick in TICKS[2:4]:
        report = run_monitor(client, tick)
        assert report["rolled_back"] == [] and report["ramped"] == []
    assert http.call("GET", path).data["evaluation"]["status"] == "failed"
    assert http.call("GET", f"/experiments/{experiment_id}").data["status"] == "running"
    (event,) = bus.of_type("ExplanationGuardrailsEvaluated")
    assert event.detail["status"] == "failed" and event.detail["action"] == "hold"
    assert "zip_code" in event.detail["reason"]
    assert http.call("DELETE", path).status_code == 204
    assert http.call("GET", path).status_code == 404
    assert run_monitor(client, TICKS[4])["ramped"] == [experiment_id]


def test_an_unreadable_sample_is_an_error_that_holds_the_ramp(
    http: Http, client: Any, clock: Any
) -> None:
    from chalicelib.dataversion.service import get_versioning_engine

    experiment_id = _ramping(http, _models(http, "same"))
    engine = get_versioning_engine()
    dataset = engine.create_dataset(f"wrong-{np.random.randint(1e9)}", owner="alice",
                                    access_groups=["ml"])  # fmt: skip
    version = engine.create_version(dataset.dataset_id, b"income,age\n1,2\n3,4\n")
    assert _declare(http, experiment_id, version.version_id, "rollback").status_code == 200
    clock.advance(minutes=11)
    report = run_monitor(client, TICKS[1])
    assert report["ramped"] == [] and report["rolled_back"] == [] and report["errors"] == []
    evaluation = http.call("GET", f"/experiments/{experiment_id}/explanation-guardrails").data[
        "evaluation"
    ]
    assert evaluation["status"] == "error"
    assert "has no column 'tenure'" in evaluation["reason"]
    assert run_monitor(client, TICKS[2])["ramped"] == []


def test_removing_guardrails_an_experiment_never_had_is_404_naming_it(http: Http) -> None:
    created = http.call("POST", "/experiments", _body(http_model_with_versions(http)))
    assert created.status_code == 201, created.data
    experiment_id = created.data["experiment_id"]
    response = http.call("DELETE", f"/experiments/{experiment_id}/explanation-guardrails")
    assert response.status_code == 404
    assert response.data == {
        "error": "explanation_guardrails_not_found",
        "message": f"experiment {experiment_id} has no explanation guardrails",
    }


BAD = {
    "unknown feature": ([{"type": "feature_not_in_top_k", "feature": "postcode", "k": 3}], 422),
    "min above 1": ([{"type": "ndcg", "min": 1.5}], 422),
    "min missing": ([{"type": "ndcg", "top_k": 3}], 422),
    "top_k zero": ([{"type": "ndcg", "min": 0.9, "top_k": 0}], 422),
    "k too large": ([{"type": "feature_not_in_top_k", "feature": "zip_code", "k": 101}], 422),
    "a field of the other type": ([{"type": "ndcg", "min": 0.9, "k": 3}], 422),
    "no guardrails": ([], 422),
    "unknown type": ([{"type": "shapley_gap", "min": 0.9}], 400),
    "min not a number": ([{"type": "ndcg", "min": "high"}], 400),
}


def test_bad_declarations_are_refused_and_store_nothing(http: Http) -> None:
    model_id = _models(http, "same")
    experiment_id = _create_running(http, _body(model_id))
    version_id = _dataset_version(rows=20)
    path = f"/experiments/{experiment_id}/explanation-guardrails"
    for label, (guardrails, status) in BAD.items():
        body = {"explanation_guardrails": guardrails, "dataset_version_id": version_id}
        response = http.call("PUT", path, body)
        assert response.status_code == status, (label, response.data)
        assert set(response.data) >= {"error", "message"}
    good = {"explanation_guardrails": GUARDRAILS, "dataset_version_id": version_id}
    for extra, status in (({"action": "pause"}, 400), ({"sample_size": 5}, 422),
                          ({"sample_size": 501}, 422)):  # fmt: skip
        assert http.call("PUT", path, {**good, **extra}).status_code == status, extra
    assert http.call("GET", path).status_code == 404
    missing = http.call("PUT", path, {**good, "dataset_version_id": "dv-missing"})
    assert missing.status_code == 404
    assert http.call("GET", path).status_code == 404
    assert http.call("POST", f"/experiments/{experiment_id}/rollback",
                     {"reason": "done"}).status_code == 200  # fmt: skip
    assert http.call("PUT", path, good).status_code == 409


def test_a_reader_of_the_experiment_who_cannot_read_the_model_gets_404(
    http: Http, tokens: Tokens
) -> None:
    model_id = _models(http, "same")
    experiment_id = _create_running(http, _body(model_id))
    path = f"/experiments/{experiment_id}/explanation-guardrails"
    body = {"explanation_guardrails": GUARDRAILS, "dataset_version_id": _dataset_version(20)}
    assert http.call("PUT", path, body, token=tokens.reader).status_code == 403
    assert http.call("PUT", path, body).status_code == 200
    assert http.call("GET", path, token=tokens.reader).status_code == 200
    assert http.call("GET", path, token=tokens.other_writer).status_code == 404
    shared = http.call("PUT", f"/experiments/{experiment_id}/access",
                       {"access_groups": ["ml", "other"]})  # fmt: skip
    assert shared.status_code == 200, shared.data
    readable = http.call("GET", f"/experiments/{experiment_id}", token=tokens.other_writer)
    assert readable.status_code == 200
    hidden = http.call("GET", path, token=tokens.other_writer)
    assert hidden.status_code == 404 and model_id not in hidden.data["message"]
    refused = http.call("PUT", path, body, token=tokens.other_writer)
    assert refused.status_code == 422 and refused.data["error"] == "unknown_model_version"
    other_data = {**body, "dataset_version_id": _dataset_version(20, ("private",), "mallory")}
    assert http.call("PUT", path, other_data).status_code == 404


def test_posted_inputs_of_routed_requests_are_sampled_and_explained(
    http: Http, client: Any, bus: RecordingEventBus, clock: Any
) -> None:
    experiment_id = _ramping(http, _models(http, "zip"))
    path = f"/experiments/{experiment_id}/explanation-guardrails"
    body = {"explanation_guardrails": GUARDRAILS, "source": "posted_inputs",
            "action": "rollback", "sample_size": 40}  # fmt: skip
    declared = http.call("PUT", path, body)
    assert declared.status_code == 200, declared.data
    assert declared.data["source"] == "posted_inputs" and declared.data["dataset_version_id"] == ""
    X = _data(seed=13)[:60]
    served = []
    for i, row in enumerate(X.tolist()):
        routed = http.call("POST", f"/experiments/{experiment_id}/route", {"request_id": f"r{i}"})
        assert routed.status_code == 200, routed.data
        served.append({"request_id": f"r{i}", "input_data": dict(zip(FEATURES, row, strict=True))})
    inputs = f"/experiments/{experiment_id}/explanation-inputs"
    first = http.call("POST", inputs, {"inputs": served[:30]})
    assert first.status_code == 200 and first.data == {"received": 30, "sampled": 30, "held": 30}
    clock.advance(minutes=11)
    assert run_monitor(client, TICKS[1])["ramped"] == []  # 30 < 40 rows: waiting, ramp held
    assert http.call("GET", path).data["evaluation"] is None
    assert http.call("POST", inputs, {"inputs": served[30:]}).data["held"] == 60
    assert http.call("POST", inputs, {"inputs": served[:5]}).data["sampled"] == 0  # a retry
    bad = http.call("POST", inputs, {"inputs": [{"request_id": "x", "input_data": {"a": []}}]})
    assert bad.status_code == 422, bad.data
    partial = {"request_id": "y", "input_data": dict(zip(FEATURES[:-1], X[0], strict=False))}
    missing = http.call("POST", inputs, {"inputs": [partial]})
    assert missing.status_code == 422 and "'zip_code', a feature" in missing.data["message"]
    run_monitor(client, TICKS[2])
    assert http.call("GET", path).data["evaluation"]["sample_rows"] == 40
    assert run_queued_jobs(client) == 2
    assert run_monitor(client, TICKS[3])["rolled_back"] == [experiment_id]
    assert "'zip_code' is rank 1" in http.call("GET", path).data["evaluation"]["reason"]
    assert http.call("PUT", path, body).status_code == 409  # rolled back: no more changes


def test_a_rollback_tells_a_reader_who_cannot_read_the_models_nothing_of_their_attributions(
    http: Http, client: Any, tokens: Tokens, clock: Any
) -> None:
    experiment_id = _ramping(http, _models(http, "zip"))
    assert _declare(http, experiment_id, _dataset_version(), "rollback").status_code == 200
    clock.advance(minutes=11)
    run_monitor(client, TICKS[1])
    run_queued_jobs(client)
    assert run_monitor(client, TICKS[2])["rolled_back"] == [experiment_id]
    shared = http.call("PUT", f"/experiments/{experiment_id}/access",
                       {"access_groups": ["ml", "other"]})  # fmt: skip
    assert shared.status_code == 200, shared.data
    path = f"/experiments/{experiment_id}/explanation-guardrails"
    assert http.call("GET", path, token=tokens.other_writer).status_code == 404
    seen = http.call("GET", f"/experiments/{experiment_id}", token=tokens.other_writer)
    assert seen.status_code == 200 and seen.data["status"] == "rolled_back"
    text = str(seen.data["rollback_reason"]) + str(seen.data["rollback_details"])
    for secret in FEATURES + ["NDCG@", "rank"]:
        assert secret not in text, (secret, text)
    assert path in seen.data["rollback_reason"]
    owner = http.call("GET", path).data["evaluation"]  # readers of the models see it all
    assert owner["top_features"]["treatment"][0] == "zip_code"


def test_a_reader_who_cannot_read_the_dataset_version_gets_404(http: Http, tokens: Tokens) -> None:
    # Attributions over a dataset version's rows describe those rows (POST /explanations/drift
    # answers 404 to whoever may not read them): so does the guardrails' evaluation.
    experiment_id = _create_running(http, _body(_models(http, "same")))
    path = f"/experiments/{experiment_id}/explanation-guardrails"
    private = _dataset_version(20, ("private",), "mallory")
    body = {"explanation_guardrails": GUARDRAILS, "dataset_version_id": private}
    assert http.call("PUT", path, body, token=tokens.admin).status_code == 200  # admin reads all
    assert http.call("GET", path, token=tokens.admin).status_code == 200
    for who in (tokens.reader, tokens.writer):
        hidden = http.call("GET", path, token=who)
        assert hidden.status_code == 404 and private not in hidden.data["message"]
    shared = {**body, "dataset_version_id": _dataset_version(20)}
    assert http.call("PUT", path, shared).status_code == 200
    assert http.call("GET", path, token=tokens.reader).status_code == 200
