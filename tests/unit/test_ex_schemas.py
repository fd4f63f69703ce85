"""Explanation responses are shaped from the domain objects: an explanation shows exactly its
to_dict() JSON, a job shows its status and result but never its owner, request or lease."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from chalicelib.core import jsonutil
from chalicelib.core.shaping import shaped
from chalicelib.explainability.insights_schemas import BiasOut
from chalicelib.explainability.models import BiasReport, FeatureContribution, PredictionExplanation
from chalicelib.explainability.repository import JobRecord
from chalicelib.explainability.schemas import ExplanationOut, JobAcceptedOut, JobOut

NOW = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _json(value: object) -> object:
    return json.loads(jsonutil.dumps(value))


def test_an_explanation_is_shown_as_its_own_json() -> None:
    explanation = PredictionExplanation(
        "e1", None, "m1", 2, "lime", "tabular", "lime_tabular", "probability", "yes", 0.2, 0.7,
        [FeatureContribution("age", 41, 0.3, "age > 30.00"), FeatureContribution("x", 1.5, -0.1)],
        ["age"], ["x"], local_fidelity=0.93, local_prediction=0.69,
        parameters={"seed": 0}, created_at=NOW, computation_time_ms=12.5,
    )  # fmt: skip
    body = _json(shaped(ExplanationOut, explanation))
    assert body == _json(explanation.to_dict())
    assert body["feature_contributions"][1] == {
        "feature_name": "x",
        "feature_value": 1.5,
        "contribution": -0.1,
        "condition": None,
    }
    ExplanationOut.model_validate(body)


def test_a_job_never_shows_its_owner_request_or_lease() -> None:
    job = JobRecord(
        "j1", "global", "succeeded", "alice", {"caller": {"groups": ["ml"]}}, {"n": 1}, None, 1,
        NOW, NOW, lease_until=NOW,
    )  # fmt: skip
    body = _json(shaped(JobOut, job))
    assert set(body) == set(JobOut.model_fields)
    assert body["result"] == {"n": 1} and body["status"] == "succeeded"
    accepted = shaped(
        JobAcceptedOut, job, status_url="/explanations/jobs/j1", estimated_seconds=3.0
    )
    assert accepted == {
        "job_id": "j1",
        "kind": "global",
        "status": "succeeded",
        "status_url": "/explanations/jobs/j1",
        "estimated_seconds": 3.0,
    }


def test_a_bias_report_is_shown_field_by_field() -> None:
    report = BiasReport("sex", ["f"], {"a": 3, "d": 2}, {"CI": 0.2, "DPL": None}, {}, {"DPL": "x"})
    assert shaped(BiasOut, report) == report.to_dict()
