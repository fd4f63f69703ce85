"""The experiment monitor as deployed, on moto: the schedule fans running experiments out to the
monitor queue, the SQS worker judges them; consecutive failures count once per tick."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from chalicelib.abtesting.models import ModelVariant, Outcome
from chalicelib.core.events import RecordingEventBus
from tests.conftest import Http
from tests.helpers.abtesting import experiment_request as _body
from tests.helpers.abtesting import http_model_with_versions as _model_with_versions
from tests.helpers.abtesting import outcome_body as _outcome
from tests.helpers.abtesting import start_over_http as _create_running
from tests.monitor import run_monitor


def _fleet(model_id: str, count: int) -> list[str]:
    from chalicelib.abtesting.engine import get_ab_engine

    engine = get_ab_engine()
    variants = [ModelVariant("control", model_id, 1, Decimal("0.5"), True),
                ModelVariant("treatment", model_id, 2, Decimal("0.5"))]  # fmt: skip
    ids = []
    for index in range(count):
        # owned by the ``http`` fixture's writer (alice, group ml), who reads their checks
        created = engine.create_experiment(
            f"fleet-{index}", variants, owner="alice", access_groups=["ml"]
        )
        engine.start_experiment(created.experiment_id)
        ids.append(created.experiment_id)
    return ids


def test_a_tick_fans_the_fleet_out_25_per_message_and_checks_every_experiment(
    http: Http, client: Any
) -> None:
    from chalicelib.abtesting.engine import get_ab_engine

    model_id = _model_with_versions(http)
    ids = _fleet(model_id, 60)
    engine = get_ab_engine()
    engine.record_outcomes(ids[0], [Outcome("control", f"c{i}", True, 40.0) for i in range(200)]
                           + [Outcome("treatment", f"t{i}", i % 3 != 0, 40.0)
                              for i in range(200)])  # fmt: skip
    engine.pause_experiment(ids[1])
    result = run_monitor(client)
    assert result["fan_out"] == {"tick": "2026-01-01T00:00:00.000000Z", "running": 59,
                                 "messages": 3}  # fmt: skip
    assert result["checked"] == 59 and result["errors"] == []
    assert result["rolled_back"] == [ids[0]]
    states = [http.call("GET", f"/experiments/{eid}/checks").data["latest"] for eid in ids[2:5]]
    assert [s["outcome"] for s in states] == ["inconclusive"] * 3  # no data: no decision
    assert "each arm needs 100 requests (control 0, canary 0)" in states[0]["reason"]
    assert http.call("GET", f"/experiments/{ids[1]}/checks").data["latest"] is None


def test_failure_limit_counts_consecutive_failed_ticks_once_each(
    http: Http, client: Any, bus: RecordingEventBus
) -> None:
    model_id = _model_with_versions(http)
    experiment_id = _create_running(http, _body(model_id, "0.9", "0.1"))
    policy = {"failure_limit": 2, "min_requests_before_rollback": 50}
    assert (
        http.call("PUT", f"/experiments/{experiment_id}/rollback-policy", policy).status_code == 200
    )
    outcomes = [_outcome("control", f"c-{i}") for i in range(600)] + [
        {**_outcome("treatment", f"t-{i}"), "success": i % 3 != 0} for i in range(150)
    ]
    http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": outcomes})

    def deliver(tick: str, ids: list[str]) -> dict[str, Any]:
        body = json.dumps({"tick": tick, "experiment_ids": ids})
        event = client.events.generate_sqs_event([body, "not json", json.dumps({"tick": 1})])
        return client.lambda_.invoke("experiment_monitor_worker", event).payload

    first = deliver("2026-01-01T00:00:00.000000Z", [experiment_id, "exp-missing"])
    assert first["rolled_back"] == [] and first["outcomes"] == {"fail": 1}
    assert first["errors"] == ["exp-missing"]
    again = deliver("2026-01-01T00:00:00.000000Z", [experiment_id])  # the same tick redelivered
    assert again["rolled_back"] == []
    checks = http.call("GET", f"/experiments/{experiment_id}/checks").data
    assert checks["latest"]["consecutive_failures"] == 1 and checks["failure_limit"] == 2
    assert checks["latest"]["checks"] == 1
    second = deliver("2026-01-01T00:01:00.000000Z", [experiment_id])
    assert second["rolled_back"] == [experiment_id]
    experiment = http.call("GET", f"/experiments/{experiment_id}").data
    assert experiment["rollback_details"]["consecutive_failures"] == 2
    assert "(2 consecutive failed checks, failure_limit 2)" in experiment["rollback_reason"]
    assert len(bus.of_type("ExperimentRolledBack")) == 1
    assert deliver("2026-01-01T00:02:00.000000Z", [experiment_id])["checked"] == 0
