"""Request and response schemas of ``/experiments/{id}/explanation-guardrails``.

Types are checked here (a wrong type is a 400); ranges, the guardrails' fields and the features
they name are checked by the domain (:mod:`chalicelib.abtesting.explain_guardrails`, a 422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from chalicelib.abtesting.explain_guardrails import (
    DEFAULT_SAMPLE,
    ExplanationEvaluation,
    ExplanationGuardrails,
)
from chalicelib.core.schema import Schema


class _Strict(Schema):
    model_config = ConfigDict(extra="forbid")


class ExplanationGuardrailIn(_Strict):
    """One guardrail: ``ndcg`` (``min``, ``top_k``) or ``feature_not_in_top_k`` (``feature``,
    ``k``)."""

    type: Literal["ndcg", "feature_not_in_top_k"]
    min: float | None = Field(default=None, description="ndcg: the lowest NDCG that passes")
    top_k: int | None = Field(default=None, description="ndcg: features ranked (default 10)")
    feature: str | None = Field(
        default=None, max_length=200, description="feature_not_in_top_k: a model feature"
    )
    k: int | None = Field(default=None, description="feature_not_in_top_k: the top it must avoid")


class ExplanationGuardrailsBody(_Strict):
    """Body of ``PUT /experiments/{id}/explanation-guardrails``."""

    explanation_guardrails: list[ExplanationGuardrailIn] = Field(max_length=100)
    source: Literal["dataset_version", "posted_inputs"] = Field(
        default="dataset_version",
        description="the rows explained: a dataset version, or the sample of posted inputs",
    )
    dataset_version_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="with the dataset_version source: its rows (a seeded uniform sample)",
    )
    action: Literal["hold", "rollback"] = "hold"
    sample_size: int = Field(default=DEFAULT_SAMPLE, description="rows per arm, 10 to 500")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    reevaluate_minutes: int | None = Field(
        default=None, description="evaluate again this long after each decision (5 to 10,080)"
    )


class GuardrailResultOut(Schema):
    """One guardrail on one treatment."""

    variant_id: str
    guardrail: dict[str, Any]
    passed: bool
    observed: float | None
    reason: str


class EvaluationOut(Schema):
    """The latest evaluation of the declaration."""

    revision: str
    status: Literal["pending", "passed", "failed", "error"]
    tick: str
    started_at: datetime
    finished_at: datetime | None
    jobs: dict[str, str]
    sample_rows: int
    attributions: dict[str, dict[str, float]]
    top_features: dict[str, list[str]]
    results: list[GuardrailResultOut]
    reason: str
    round: int
    previous: str | None


class ExplanationGuardrailsOut(Schema):
    """The declared guardrails and their latest evaluation (``null`` before the monitor's
    first tick after the declaration)."""

    experiment_id: str
    explanation_guardrails: list[dict[str, Any]]
    action: str
    source: str
    dataset_version_id: str
    sample_size: int
    seed: int
    revision: str
    declared_at: datetime
    declared_by: str
    reevaluate_minutes: int | None
    evaluation: EvaluationOut | None


class PostedInputIn(_Strict):
    """One served input: the routed request's id and its ``input_data`` (flat features)."""

    request_id: str = Field(min_length=1, max_length=200)
    input_data: dict[str, Any]


class ExplanationInputsBody(_Strict):
    """Body of ``POST /experiments/{id}/explanation-inputs``."""

    inputs: list[PostedInputIn] = Field(min_length=1, max_length=500)


class PostedReceiptOut(Schema):
    """Rows received, written to the sample now, and held by the sample after the post."""

    received: int
    sampled: int
    held: int


def guardrails_out(
    declaration: ExplanationGuardrails, evaluation: ExplanationEvaluation | None
) -> dict[str, Any]:
    """The response shape of a declaration and its evaluation."""
    data = declaration.as_dict()
    data["explanation_guardrails"] = data.pop("guardrails")
    data["evaluation"] = evaluation.as_dict() if evaluation is not None else None
    return data
