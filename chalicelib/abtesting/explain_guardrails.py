"""Explanation guardrails of an experiment: what a treatment's explanations must keep true.

An experiment may declare guardrails on the *global attributions* (feature → mean |SHAP|) of
its treatment models, compared with its control model's on the same rows:

* ``{"type": "ndcg", "min": 0.9, "top_k": 5}``: the NDCG of the treatment's top-``top_k``
  ranking scored with the control's attributions (SageMaker Clarify's feature-attribution drift
  measure, as ``POST /explanations/drift`` computes it) must be at least ``min``.
* ``{"type": "feature_not_in_top_k", "feature": "zip_code", "k": 3}``: the feature must not be
  among the treatment's ``k`` largest attributions (its rank is 1 + the features strictly
  above it, so a tie at the k-th place is inside; a feature whose attribution is exactly 0
  is never counted as "in" the top).

The rows explained are a seeded uniform sample of ``sample_size`` rows of a named dataset
version (read through the dataversion facade): the same rows for every arm. What a failed
guardrail does is the declaration's ``action``: ``hold`` (the ramp does not step) or
``rollback`` (the experiment is rolled back with the reason). The monitor that evaluates them
is :mod:`chalicelib.abtesting.explain_monitor`.

This module is pure: dataclasses, validation and the evaluation of finished attributions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from chalicelib.core.errors import NotFound, UnprocessableEntity
from chalicelib.explainability.facade import ndcg, ranking

GUARDRAIL_TYPES = ("ndcg", "feature_not_in_top_k")
ACTIONS = ("hold", "rollback")
SOURCES = ("dataset_version", "posted_inputs")
MAX_GUARDRAILS = 20
MAX_TOP_K = 100
MIN_SAMPLE, MAX_SAMPLE, DEFAULT_SAMPLE = 10, 500, 100
MIN_REEVALUATE, MAX_REEVALUATE = 5, 10_080
EVALUATION_STATES = ("pending", "passed", "failed", "error")


class ExplanationGuardrailsNotFound(NotFound):
    """An experiment without explanation guardrails (or whose models the caller may not
    read)."""

    code = "explanation_guardrails_not_found"


@dataclass(frozen=True)
class ExplanationGuardrail:
    """One declared guardrail.

    Attributes:
        type: ``ndcg`` or ``feature_not_in_top_k``.
        min: The lowest NDCG that passes (``ndcg``).
        top_k: Features ranked by the NDCG (``ndcg``).
        feature: The feature that must stay out of the top (``feature_not_in_top_k``).
        k: How many top features it must stay out of (``feature_not_in_top_k``).
    """

    type: str
    min: float | None = None
    top_k: int | None = None
    feature: str | None = None
    k: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The declared fields (``None`` ones left out)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


class GuardrailOptions(TypedDict, total=False):
    """The options of a declaration, beside its guardrails and dataset version, as the Python
    API (``AutoRollbackManager.register_explanation_guardrails``) and the facade take them:
    written once here, their defaults once in ``ExplanationGuardrailMonitor.declare``."""

    action: str
    sample_size: int
    seed: int
    source: str
    reevaluate_minutes: int | None


@dataclass(frozen=True)
class ExplanationGuardrails:
    """An experiment's declared explanation guardrails.

    Attributes:
        experiment_id: The experiment.
        guardrails: What must hold for every treatment.
        action: ``hold`` or ``rollback`` when one fails.
        dataset_version_id: The rows explained (a seeded uniform sample of them), with the
            ``dataset_version`` source ("" with ``posted_inputs``).
        sample_size: Rows explained per arm (the same rows for every arm).
        seed: The sample's seed (also SHAP's, for sampling explainers).
        revision: Changes with every declaration; an evaluation belongs to one revision.
        declared_at: When it was declared (UTC).
        declared_by: Who declared it.
        source: ``dataset_version`` or ``posted_inputs`` (the experiment's bottom-k sample of
            posted inputs, :mod:`chalicelib.abtesting.explain_inputs`).
        reevaluate_minutes: Evaluate again this long after each decision (``None``: once).
    """

    experiment_id: str
    guardrails: tuple[ExplanationGuardrail, ...]
    action: str
    dataset_version_id: str
    sample_size: int
    seed: int
    revision: str
    declared_at: datetime
    declared_by: str = ""
    source: str = "dataset_version"
    reevaluate_minutes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "experiment_id": self.experiment_id,
            "guardrails": [g.as_dict() for g in self.guardrails],
            "action": self.action,
            "dataset_version_id": self.dataset_version_id,
            "sample_size": self.sample_size,
            "seed": self.seed,
            "revision": self.revision,
            "declared_at": self.declared_at.isoformat(),
            "declared_by": self.declared_by,
            "source": self.source,
            "reevaluate_minutes": self.reevaluate_minutes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplanationGuardrails:
        """The inverse of :meth:`as_dict`."""
        return cls(
            experiment_id=data["experiment_id"],
            guardrails=tuple(ExplanationGuardrail(**g) for g in data["guardrails"]),
            action=data["action"],
            dataset_version_id=data["dataset_version_id"],
            sample_size=int(data["sample_size"]),
            seed=int(data["seed"]),
            revision=data["revision"],
            declared_at=datetime.fromisoformat(data["declared_at"]),
            declared_by=data.get("declared_by", ""),
            source=data.get("source", "dataset_version"),
            reevaluate_minutes=data.get("reevaluate_minutes"),
        )


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail checked on one treatment.

    Attributes:
        variant_id: The treatment.
        guardrail: The guardrail as declared.
        passed: Whether it holds.
        observed: The NDCG, or the feature's rank (1 = largest; ``None`` if absent).
        reason: One sentence with the numbers.
    """

    variant_id: str
    guardrail: dict[str, Any]
    passed: bool
    observed: float | None
    reason: str


@dataclass(frozen=True)
class ExplanationEvaluation:
    """The latest evaluation of a declaration (one per revision).

    Attributes:
        revision: The declaration it evaluates.
        status: ``pending`` (jobs submitted), ``passed``, ``failed`` or ``error``.
        tick: The monitor tick that submitted it.
        started_at: When its jobs were submitted.
        finished_at: When it was decided (``None`` while pending).
        jobs: Variant → explanation job id.
        sample_rows: Rows explained per arm.
        attributions: Variant → feature → mean |SHAP| (once finished).
        top_features: Variant → its 10 largest attributions, largest first.
        results: Every guardrail on every treatment.
        reason: Why it failed or errored ("" when passed or pending).
        round: 0 for the first evaluation of a declaration, then one more per re-evaluation.
        previous: The decision of the round before (``None`` in round 0): what the monitor
            keeps acting on while this round is pending.
    """

    revision: str
    status: str
    tick: str
    started_at: datetime
    finished_at: datetime | None = None
    jobs: dict[str, str] = field(default_factory=dict)
    sample_rows: int = 0
    attributions: dict[str, dict[str, float]] = field(default_factory=dict)
    top_features: dict[str, list[str]] = field(default_factory=dict)
    results: tuple[GuardrailResult, ...] = ()
    reason: str = ""
    round: int = 0
    previous: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        data["results"] = [asdict(r) for r in self.results]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplanationEvaluation:
        """The inverse of :meth:`as_dict`."""
        finished = data.get("finished_at")
        return cls(
            revision=data["revision"],
            status=data["status"],
            tick=data.get("tick", ""),
            started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=datetime.fromisoformat(finished) if finished else None,
            jobs=dict(data.get("jobs") or {}),
            sample_rows=int(data.get("sample_rows") or 0),
            attributions={k: dict(v) for k, v in (data.get("attributions") or {}).items()},
            top_features={k: list(v) for k, v in (data.get("top_features") or {}).items()},
            results=tuple(GuardrailResult(**r) for r in data.get("results") or ()),
            reason=data.get("reason", ""),
            round=int(data.get("round") or 0),
            previous=data.get("previous"),
        )

    @property
    def failed_results(self) -> list[GuardrailResult]:
        """The guardrails that did not hold."""
        return [r for r in self.results if not r.passed]


# ---- validation ---------------------------------------------------------------------------


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UnprocessableEntity(f"{what} must be a finite number")
    return float(value)


def _count(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UnprocessableEntity(f"{what} must be a whole number from {low} to {high}")
    return int(value)


def parse_guardrail(raw: dict[str, Any], index: int, features: dict[str, list[str]]) -> Any:
    """One declared guardrail, checked against the treatments' feature names.

    Args:
        raw: ``{"type", ...}`` as sent.
        index: Its place in the list (named in errors).
        features: Treatment variant id → its model's feature names.

    Raises:
        UnprocessableEntity: Unknown type or fields, numbers out of range, or a feature that
            some treatment's model does not have.
    """
    where = f"explanation_guardrails[{index}]"
    kind = raw.get("type")
    if kind not in GUARDRAIL_TYPES:
        raise UnprocessableEntity(f"{where}.type must be one of {', '.join(GUARDRAIL_TYPES)}")
    allowed = {"type", "min", "top_k"} if kind == "ndcg" else {"type", "feature", "k"}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise UnprocessableEntity(f"{where}: '{extra[0]}' is not a field of a {kind} guardrail")
    if kind == "ndcg":
        low = _number(raw.get("min"), f"{where}.min")
        if not 0.0 <= low <= 1.0:
            raise UnprocessableEntity(f"{where}.min must be between 0 and 1")
        top_k = _count(raw.get("top_k", 10), f"{where}.top_k", 1, MAX_TOP_K)
        return ExplanationGuardrail("ndcg", min=low, top_k=top_k)
    feature = raw.get("feature")
    if not isinstance(feature, str) or not feature:
        raise UnprocessableEntity(f"{where}.feature must name a feature")
    for variant_id, names in sorted(features.items()):
        if feature not in names:
            raise UnprocessableEntity(
                f"{where}.feature '{feature}' is not a feature of variant {variant_id}'s model"
            )
    k = _count(raw.get("k"), f"{where}.k", 1, MAX_TOP_K)
    return ExplanationGuardrail("feature_not_in_top_k", feature=feature, k=k)


def check_reevaluation(minutes: int | None) -> None:
    """``None`` (evaluate once) or a whole number of minutes in range.

    Raises:
        UnprocessableEntity: Out of range.
    """
    if minutes is not None:
        _count(minutes, "reevaluate_minutes", MIN_REEVALUATE, MAX_REEVALUATE)


def check_source(source: str, dataset_version_id: str | None) -> None:
    """Exactly one source of rows: a dataset version, or the posted inputs.

    Raises:
        UnprocessableEntity: An unknown source, or a dataset version missing or superfluous.
    """
    if source not in SOURCES:
        raise UnprocessableEntity(f"source must be one of {', '.join(SOURCES)}")
    if (source == "dataset_version") != bool(dataset_version_id):
        raise UnprocessableEntity(
            "give dataset_version_id with the dataset_version source, and none with posted_inputs"
        )


def parse_guardrails(
    raws: list[dict[str, Any]], action: str, sample_size: int, features: dict[str, list[str]]
) -> tuple[ExplanationGuardrail, ...]:
    """The declared guardrails, checked (see :func:`parse_guardrail`).

    Raises:
        UnprocessableEntity: No or too many guardrails, an unknown action, a sample size out of
            range or a bad guardrail.
    """
    if not 1 <= len(raws) <= MAX_GUARDRAILS:
        raise UnprocessableEntity(f"declare 1 to {MAX_GUARDRAILS} explanation guardrails")
    if action not in ACTIONS:
        raise UnprocessableEntity(f"action must be one of {', '.join(ACTIONS)}")
    _count(sample_size, "sample_size", MIN_SAMPLE, MAX_SAMPLE)
    if not features:
        raise UnprocessableEntity("the experiment has no treatment to guard")
    return tuple(parse_guardrail(raw, i, features) for i, raw in enumerate(raws))


# ---- evaluation ---------------------------------------------------------------------------


def _check_ndcg(
    guardrail: ExplanationGuardrail,
    variant_id: str,
    control: dict[str, float],
    treatment: dict[str, float],
) -> GuardrailResult:
    k = guardrail.top_k or 10
    low = guardrail.min if guardrail.min is not None else 0.0
    score = ndcg(control, treatment, k)
    passed = score >= low
    verdict = "at least" if passed else "below"
    reason = (
        f"variant {variant_id}: NDCG@{k} of its attribution against the control's is "
        f"{score:.4f}, {verdict} the minimum {low:g}"
    )
    return GuardrailResult(variant_id, guardrail.as_dict(), passed, score, reason)


def _check_feature(
    guardrail: ExplanationGuardrail, variant_id: str, treatment: dict[str, float]
) -> GuardrailResult:
    feature, k = str(guardrail.feature), int(guardrail.k or 0)
    value = treatment.get(feature)
    # Competition ranking: 1 + the features strictly above it, so a tie at the k-th place is
    # inside the top k whatever the names.
    rank = None if value is None else 1 + sum(v > value for v in treatment.values())
    inside = value is not None and rank is not None and rank <= k and value > 0
    where = "not ranked" if rank is None else f"rank {rank}"
    verdict = f"inside its top {k}" if inside else f"outside its top {k}"
    reason = f"variant {variant_id}: '{feature}' is {where} in its attribution, {verdict}"
    return GuardrailResult(variant_id, guardrail.as_dict(), not inside, rank, reason)


def evaluate(
    guardrails: tuple[ExplanationGuardrail, ...],
    control: dict[str, float],
    treatments: dict[str, dict[str, float]],
) -> tuple[GuardrailResult, ...]:
    """Every guardrail on every treatment's attribution (against the control's)."""
    results = []
    for variant_id, attribution in treatments.items():
        for guardrail in guardrails:
            if guardrail.type == "ndcg":
                results.append(_check_ndcg(guardrail, variant_id, control, attribution))
            else:
                results.append(_check_feature(guardrail, variant_id, attribution))
    return tuple(results)


def top_features(attribution: dict[str, float], k: int = 10) -> list[str]:
    """The ``k`` largest attributions, largest first."""
    return ranking(attribution)[:k]
