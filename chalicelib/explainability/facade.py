"""The explainability domain's public face: what other domains may ask of it.

Other domains never reach the explanation service, its engines, jobs or repository; they ask
here. The ``*_as_system`` functions serve scheduled work (the experiment monitor's explanation
guardrails) whose references were checked with a caller's rights when they were declared: they
submit and read jobs owned by the system, never on behalf of a caller.

This module imports no shap, lime, scikit-learn or numpy: the service is loaded on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.explainability.drift import DEFAULT_THRESHOLD, DEFAULT_TOP_K, ndcg, ranking
from chalicelib.explainability.models import GlobalRequest

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_TOP_K",
    "SYSTEM_OWNER",
    "AttributionJob",
    "attribution_job_as_system",
    "ndcg",
    "ranking",
    "submit_attribution_as_system",
]

SYSTEM_OWNER = "system:explanation-guardrails"
"""The owner of the jobs the experiment monitor submits (admins can read them too)."""


@dataclass(frozen=True)
class AttributionJob:
    """A global attribution job as the monitor sees it.

    Attributes:
        job_id: The explanation job.
        status: ``queued``, ``running``, ``succeeded`` or ``failed``.
        attribution: Feature → mean |SHAP| over the inputs once ``succeeded``.
        error: The job's error (``{"error", "message"}``) once ``failed``.
    """

    job_id: str
    status: str
    attribution: dict[str, float] | None = None
    error: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """Whether the job will not change any more."""
        return self.status in ("succeeded", "failed")


def _service() -> Any:
    # The service imports the engines (and, when they run, shap): loaded on first use.
    from chalicelib.explainability.service import get_explanation_service

    return get_explanation_service()


def submit_attribution_as_system(
    model_id: str,
    model_version: int,
    inputs: list[dict[str, Any]],
    seed: int = 0,
    owner: str = SYSTEM_OWNER,
) -> str:
    """Submits a job computing a model version's global SHAP attribution (feature → mean
    |SHAP|, the measure ``POST /explanations/drift`` compares) over ``inputs``; never waits.

    For scheduled work whose references (the model versions, the rows' dataset version) were
    checked with a caller's rights when they were declared.

    Returns:
        The job id (read it with :func:`attribution_job_as_system`).

    Raises:
        ModelNotFound: Unknown model or version.
        TooExpensive: The measured estimate is over what a job may do (422).
        ValidationError: Invalid inputs.
    """
    request = GlobalRequest(model_id, model_version, inputs=inputs, seed=seed, asynchronous=True)
    submitted = _service().global_importance(request, owner=owner)
    return str(submitted.job.job_id)


def attribution_job_as_system(job_id: str) -> AttributionJob:
    """The state of a job submitted by :func:`submit_attribution_as_system`.

    Raises:
        ExplanationJobNotFound: Unknown job.
    """
    record = _service().get_job(job_id)
    attribution = None
    if record.status == "succeeded" and isinstance(record.result, dict):
        found = record.result.get("feature_importances") or {}
        attribution = {str(name): float(value) for name, value in found.items()}
    return AttributionJob(job_id, record.status, attribution, record.error)
