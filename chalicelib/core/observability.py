"""One Logger and one Metrics object shared by every handler (aws-lambda-powertools).

Logs are structured JSON with a correlation id per request; metrics are CloudWatch EMF lines
flushed after each request or event.
"""

from __future__ import annotations

import logging
import os
import re
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


# ---- secrets never reach a log line --------------------------------------------------------

# Every query-string value (``access_token=…``, a presigned URL's ``X-Amz-Signature=…`` and
# ``X-Amz-Credential=…``): the names stay, the values go. A query value cannot be known not to
# be a secret, so none is kept.
_QUERY_VALUE = re.compile(r"([?&][^=&\s\"'#<>]*=)[^&\s\"'#<>]*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
# The shape of this service's API tokens (``snk_<key id>_<secret>``), wherever they appear.
_TOKEN = re.compile(r"\bsnk_[A-Za-z0-9.-]*_[A-Za-z0-9_-]+")
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` without credentials: query-string values, bearer values and API tokens."""
    if "=" in text:
        text = _QUERY_VALUE.sub(rf"\1{REDACTED}", text)
    return _TOKEN.sub(f"snk_{REDACTED}", _BEARER.sub(rf"\1{REDACTED}", text))


class RedactingFilter(logging.Filter):
    """Rewrites every record's message through :func:`redact` (request lines, URLs, errors)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_filter = RedactingFilter()


def redact_logs(*names: str) -> None:
    """Installs the redacting filter on the named standard loggers (idempotent)."""
    for name in names:
        target = logging.getLogger(name)
        if _filter not in target.filters:
            target.addFilter(_filter)


# The service's own log lines are redacted too (defence in depth: no code logs a URL or a
# header, and a test holds every route to that).
if _filter not in logger._logger.filters:
    logger._logger.addFilter(_filter)
