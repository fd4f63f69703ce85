"""Builders shared by the explainability tests: small real models registered through the
registry (in process or over HTTP), the in-process explanation service, and the job worker."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.core.events import RecordingEventBus
from tests.conftest import Http


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


def registry(bus: RecordingEventBus | None = None, memory: bool = False) -> Any:
    """A registry over the moto tables and bucket, or with ``memory`` over in-memory records
    and artifacts (the DynamoDB and S3 ones pass the same contracts,
    ``tests/unit/test_repository_contracts.py``)."""
    from chalicelib.registry.memory import InMemoryArtifactStore, InMemoryRegistryRepository
    from chalicelib.registry.service import ModelRegistry

    if memory:
        stores = (InMemoryRegistryRepository(), InMemoryArtifactStore())
        return ModelRegistry(*stores, event_bus=bus or RecordingEventBus())
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
    bus: RecordingEventBus | None = None,
    reg: Any = None,
    backend: Any = "inprocess",
    table: Any = None,
) -> Any:
    """An in-process explanation service over the registry and ``table``, its cache items and
    jobs (default: the moto table)."""
    from chalicelib.explainability.cache import ExplanationCache
    from chalicelib.explainability.loading import RegistryModelLoader
    from chalicelib.explainability.repository import ExplanationRepository
    from chalicelib.explainability.service import ExplanationService

    repository = table if table is not None else ExplanationRepository()
    return ExplanationService(
        model_loader=RegistryModelLoader(reg or registry()),
        cache=ExplanationCache(repository),
        repository=repository,
        event_bus=bus or RecordingEventBus(),
        backend=backend,
    )


@dataclass
class MemoryContext:
    """A registry and an explanation service over in-memory stores (no AWS: the DynamoDB and S3
    ones pass the same contracts, ``tests/unit/test_repository_contracts.py``)."""

    bus: RecordingEventBus
    reg: Any
    table: Any
    svc: Any

    def service(self) -> Any:
        """Another service over the same registry and table (as another Lambda instance)."""
        return service(RecordingEventBus(), self.reg, table=self.table)


def memory_context() -> MemoryContext:
    """A fresh :class:`MemoryContext`."""
    from chalicelib.explainability.in_memory import InMemoryExplanationRepository

    bus = RecordingEventBus()
    reg = registry(bus, memory=True)
    table = InMemoryExplanationRepository()
    return MemoryContext(bus, reg, table, service(bus, reg, table=table))


def tabular_data(n: int = 200, features: int = 4, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Standard-normal features ``f0..f{n-1}``."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)), [f"f{i}" for i in range(features)]


def register_over_http(
    http: Http,
    estimator: Any,
    task: str,
    names: list[str],
    background: np.ndarray | None = None,
    classes: list[str] | None = None,
    model_id: str | None = None,
) -> tuple[str, int]:
    """Registers ``estimator`` (skops) over HTTP, in a new model unless ``model_id``; returns
    the model id and the version."""
    import skops.io as sio

    if model_id is None:
        created = http.call("POST", "/models", {"name": f"m-{np.random.randint(1e9)}"})
        assert created.status_code == 201, created.data
        model_id = created.data["model_id"]
    body = {
        "artifact_base64": base64.b64encode(sio.dumps(estimator)).decode(),
        "format": "skops",
        "task": task,
        "feature_names": names,
        "class_names": classes or [],
        "background_sample": None if background is None else background.tolist(),
    }
    version = http.call("POST", f"/models/{model_id}/versions", body)
    assert version.status_code == 201, version.data
    return model_id, version.data["version"]


def invoke_worker(event: dict[str, Any], timeout_seconds: int = 30) -> Any:
    """Invokes the ``explanation_worker`` handler as Lambda does, with a context holding the
    function's timeout (``lambda_timeout`` 30 s); chalice's test client gives every invocation a
    3 s context, and jobs take their deadline from it."""
    from chalice.local import LambdaContext

    from app import app

    context = LambdaContext("explanation_worker", 1024, max_runtime_ms=timeout_seconds * 1000)
    return app.handler_map["explanation_worker"](event, context)


def run_queued_jobs(client: Any) -> int:
    """Runs every message waiting on the explanation jobs queue through the worker (as the
    Lambda SQS poller would) and deletes it; returns how many ran."""
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings

    sqs = aws.client("sqs")
    queue = get_settings().explanation_jobs_queue
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    for message in messages:
        event = client.events.generate_sqs_event(queue_name=queue, message_bodies=[message["Body"]])
        invoke_worker(event)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages)


def count_shap_values(explainer: Any) -> dict[str, int]:
    """Counts the ``shap_values`` calls made on ``explainer`` from now on (``["calls"]``): the
    method is wrapped on the instance."""
    counted = {"calls": 0}
    method = explainer.shap_values

    def call(*args: Any, **kwargs: Any) -> Any:
        counted["calls"] += 1
        return method(*args, **kwargs)

    explainer.shap_values = call
    return counted
