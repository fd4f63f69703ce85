"""Builders shared by the A/B-testing tests: experiments and metrics in memory, a fake model
registry for the engine, a binomial bound, and experiments created over HTTP."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import numpy as np
from scipy import stats

from chalicelib.abtesting import sketch
from chalicelib.abtesting.engine import ABTestingEngine
from chalicelib.abtesting.models import (
    AnalysisSettings,
    Experiment,
    ExperimentMetrics,
    ExperimentStatus,
    ModelVariant,
    TrafficAllocationStrategy,
)
from chalicelib.core.errors import Conflict, NotFound
from tests.conftest import Http
from tests.helpers.models import skops_artifact

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)

# ---- in memory -------------------------------------------------------------------------------


class FakeRegistry:
    """The two registry methods the engine uses, over an in-memory set of versions."""

    def __init__(self, versions: set[tuple[str, int]] | None = None) -> None:
        self.versions = versions if versions is not None else {("m-1", 1), ("m-1", 2), ("m-1", 3)}
        self.promoted: list[tuple[str, int]] = []
        self.fail_promotion = False

    def get_version(self, model_id: str, version: int) -> tuple[str, int]:
        if (model_id, version) not in self.versions:
            raise NotFound(f"model {model_id} has no version {version}")
        return (model_id, version)

    def set_stage(self, model_id: str, version: int, stage: str) -> None:
        if self.fail_promotion:
            raise Conflict("the model's stages changed concurrently; retry")
        assert stage == "production"
        self.promoted.append((model_id, version))


def memory_engine(registry: Any, event_bus: Any, clock: Any) -> ABTestingEngine:
    """An engine over in-memory experiments, outcomes, assignments, layers and holdouts (no
    AWS: the DynamoDB repositories pass the same contracts, ``test_repository_contracts.py``),
    with the route cache off so every change is seen at once."""
    from chalicelib.abtesting.layers import LayerService
    from chalicelib.abtesting.memory import (
        InMemoryAssignmentStore,
        InMemoryExperimentRepository,
        InMemoryLayerRepository,
        InMemoryOutcomeStore,
    )

    layers = LayerService(InMemoryLayerRepository(), event_bus=event_bus, clock=clock)
    return ABTestingEngine(
        repository=InMemoryExperimentRepository(), registry=registry, event_bus=event_bus,
        clock=clock, outcomes=InMemoryOutcomeStore(), assignments=InMemoryAssignmentStore(),
        route_cache_ttl=0, layers=layers,
    )  # fmt: skip


def memory_manager(engine: ABTestingEngine) -> Any:
    """The rollback manager of a :func:`memory_engine`, its canary checks and explanation
    guardrails in memory too (its monitor queue serves only ``fan_out``)."""
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor
    from chalicelib.abtesting.memory import (
        InMemoryCanaryCheckStore,
        InMemoryExplanationGuardrailStore,
    )
    from chalicelib.abtesting.rollback import AutoRollbackManager

    guardrails = ExplanationGuardrailMonitor(
        InMemoryExplanationGuardrailStore(), event_bus=engine.event_bus, clock=engine.clock
    )
    return AutoRollbackManager(engine, checks=InMemoryCanaryCheckStore(), explanations=guardrails)


def engine_variants(*weights: str, control: int = 0) -> list[ModelVariant]:
    """Arms ``v0``, ``v1``... on versions 1, 2... of model ``m-1`` with these weights."""
    return [
        ModelVariant(f"v{index}", "m-1", index + 1, Decimal(weight), index == control)
        for index, weight in enumerate(weights)
    ]


def running_experiment(engine: ABTestingEngine, *weights: str, **kwargs: Any) -> Experiment:
    """An experiment of :func:`engine_variants` created and started through ``engine``."""
    created = engine.create_experiment("exp", engine_variants(*weights), **kwargs)
    return engine.start_experiment(created.experiment_id)


def rate_metrics(variant: str, converted: int, trials: int) -> ExperimentMetrics:
    """Metrics holding only a conversion count out of ``trials`` requests."""
    return ExperimentMetrics(
        variant, request_count=trials, converted_count=converted, conversion_trials=trials
    )


def analysis_experiment(*treatments: str, settings: AnalysisSettings | None = None) -> Experiment:
    """A running experiment (not stored) of control ``c`` and the named treatments, equal
    shares, for the analyzer."""
    share = Decimal(1) / (1 + len(treatments))
    arms = [ModelVariant("c", "m", 1, share, True)] + [
        ModelVariant(name, "m", 2, share) for name in treatments
    ]
    return Experiment(
        "exp", "e", "", tuple(arms), ExperimentStatus.RUNNING,
        TrafficAllocationStrategy.PERCENTAGE, NOW, None, 1000, 0.95, "conversion_rate",
        ("error_rate",), NOW, NOW, analysis=settings or AnalysisSettings(),
    )  # fmt: skip


def clopper_pearson_upper(events: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of a binomial proportion."""
    return (
        1.0 if events >= trials else float(stats.beta.ppf(confidence, events + 1, trials - events))
    )


def latency_histogram(values: np.ndarray) -> dict[int, int]:
    """``sketch.histogram`` vectorised: the same bucket formula, equal on every value
    (``test_ab_arithmetic`` checks it, bucket bounds and clamps included). Simulations that
    bucket millions of values use it: ``sketch.histogram`` takes them one by one in Python,
    which coverage's tracer made the slowest part of those tests."""
    clamped = np.clip(values, sketch.MIN_VALUE, sketch.MAX_VALUE)
    indices = np.ceil(np.log(clamped) / math.log(sketch.GAMMA)).astype(int) + sketch.OFFSET
    found, counts = np.unique(indices, return_counts=True)
    return dict(zip(found.tolist(), counts.tolist(), strict=True))


# ---- over HTTP -------------------------------------------------------------------------------


def http_model_with_versions(http: Http, count: int = 2) -> str:
    """A model with ``count`` skops versions (features ``a``, ``b``, ``c``) registered over HTTP."""
    created = http.call("POST", "/models", {"name": f"ranker-{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 201, created.data
    model_id = created.data["model_id"]
    for seed in range(count):
        body = {
            "artifact_base64": skops_artifact(seed),
            "format": "skops",
            "task": "classification",
            "feature_names": ["a", "b", "c"],
        }
        response = http.call("POST", f"/models/{model_id}/versions", body)
        assert response.status_code == 201, response.data
    return model_id


def experiment_request(
    model_id: str, control: str = "0.5", treatment: str = "0.5", **extra: Any
) -> dict:
    """A ``POST /experiments`` body: control on version 1, treatment on version 2."""
    return {
        "name": "ranker v2 vs v1",
        "variants": [
            {
                "variant_id": "control",
                "model_id": model_id,
                "model_version": 1,
                "traffic_weight": control,
                "is_control": True,
            },
            {
                "variant_id": "treatment",
                "model_id": model_id,
                "model_version": 2,
                "traffic_weight": treatment,
            },
        ],
        "guardrail_metrics": ["error_rate", "latency_p95_ms"],
        "minimum_sample_size": 100,
        **extra,
    }


def start_over_http(http: Http, body: dict[str, Any]) -> str:
    """Creates and starts the experiment of ``body``; returns its id."""
    created = http.call("POST", "/experiments", body)
    assert created.status_code == 201, created.data
    experiment_id = created.data["experiment_id"]
    assert http.call("POST", f"/experiments/{experiment_id}/start").status_code == 200
    return experiment_id


def outcome_body(variant: str, request_id: str, **extra: Any) -> dict[str, Any]:
    """One successful outcome of 40 ms for ``variant``."""
    return {"variant_id": variant, "request_id": request_id, "success": True, "latency_ms": 40.0,
            **extra}  # fmt: skip
