"""One Logger and one Metrics object shared by every handler (aws-lambda-powertools).

Logs are structured JSON with a correlation id per request; metrics are CloudWatch EMF lines
flushed after each request or event.
"""

from __future__ import annotations

import os
import time

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "synapsenet")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "SynapseNet"))


def metrics_enabled() -> bool:
    """Metrics are emitted unless ``SYNAPSE_METRICS=off`` (tests and benchmarks)."""
    return os.environ.get("SYNAPSE_METRICS", "on") != "off"


def record_latency(name: str, started: float, **dimensions: str) -> None:
    """Emits ``name`` in milliseconds since ``started`` (a ``time.perf_counter()`` value)."""
    if not metrics_enabled():
        return
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=elapsed_ms)
    for key, value in dimensions.items():
        metrics.add_metadata(key=key, value=value)
    metrics.flush_metrics(raise_on_empty_metrics=False)


def record_count(name: str, value: float = 1.0) -> None:
    """Emits a count metric."""
    if not metrics_enabled():
        return
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.flush_metrics(raise_on_empty_metrics=False)
