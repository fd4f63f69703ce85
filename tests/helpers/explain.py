"""Shared helpers of the explainability tests: small real models registered through the registry.

(No tests here; the name keeps the file inside the explainability test namespace.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.core.events import RecordingEventBus


@dataclass
class Registered:
    """A model registered in the test registry, with the data it was trained on."""

    model_id: str
    version: int
    feature_names: list[str]
    X: np.ndarray
    estimator: Any

    def row(self, i: int = 0) -> dict[str, float]:
        """Input ``i`` of the training data as a feature dict."""
        return dict(zip(self.feature_names, self.X[i].tolist(), strict=True))


def registry(bus: RecordingEventBus | None = None) -> Any:
    """A registry over the moto tables and bucket."""
    from chalicelib.registry.service import ModelRegistry

    return ModelRegistry(event_bus=bus or RecordingEventBus())


def register(
    reg: Any,
    estimator: Any,
    task: str,
    feature_names: list[str],
    X: np.ndarray,
    class_names: list[str] | None = None,
    background: np.ndarray | None = None,
    model_id: str | None = None,
    name: str | None = None,
) -> Registered:
    """Saves ``estimator`` with skops and registers it (a new model unless ``model_id``)."""
    import uuid

    import skops.io as sio

    from chalicelib.registry.service import VersionSpec

    if model_id is None:
        model_id = reg.create_model(name or f"model-{uuid.uuid4().hex[:8]}").model_id
    spec = VersionSpec(
        format="skops",
        task=task,
        feature_names=tuple(feature_names),
        class_names=tuple(class_names or ()),
        background_sample=None
        if background is None
        else tuple(tuple(float(v) for v in row) for row in background),
    )
    version = reg.register_version(model_id, spec, artifact=sio.dumps(estimator))
    return Registered(model_id, version.version, feature_names, X, estimator)


def service(
    bus: RecordingEventBus | None = None, reg: Any = None, backend: Any = "inprocess"
) -> Any:
    """An in-process explanation service over the registry and the moto cache table."""
    from chalicelib.explainability.cache import ExplanationCache
    from chalicelib.explainability.loading import RegistryModelLoader
    from chalicelib.explainability.repository import ExplanationRepository
    from chalicelib.explainability.service import ExplanationService

    repository = ExplanationRepository()
    return ExplanationService(
        model_loader=RegistryModelLoader(reg or registry()),
        cache=ExplanationCache(repository),
        repository=repository,
        event_bus=bus or RecordingEventBus(),
        backend=backend,
    )


def tabular_data(n: int = 200, features: int = 4, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Standard-normal features ``f0..f{n-1}``."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)), [f"f{i}" for i in range(features)]
