"""One Logger and one Metrics object shared by every handler (aws-lambda-powertools).

Logs are structured JSON with a correlation id per request; metrics are CloudWatch EMF lines
flushed after each request or event.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import re
import sys
import time

from aws_lambda_powertools import Logger, Metrics

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "synapsenet")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "SynapseNet"))


def metrics_enabled() -> bool:
    """Metrics are emitted unless ``SYNAPSE_METRICS=off`` (tests and benchmarks)."""
    return os.environ.get("SYNAPSE_METRICS", "on") != "off"


@functools.lru_cache(maxsize=512)
def _latency_line_parts(
    namespace: str, service: str | None, name: str, metadata: tuple[tuple[str, str], ...]
) -> str:
    """Everything of an EMF latency line after its timestamp and before its value (with the
    ``service`` dimension powertools adds when a service name is configured)."""
    pairs = ((("service", service),) if service else ()) + metadata
    fields = "".join(f",{json.dumps(key)}:{json.dumps(value)}" for key, value in pairs)
    dimensions = '[["service"]]' if service else "[[]]"
    return (
        f',"CloudWatchMetrics":[{{"Namespace":{json.dumps(namespace)},"Dimensions":{dimensions},'
        f'"Metrics":[{{"Name":{json.dumps(name)},"Unit":"Milliseconds"}}]}}]}}'
        f"{fields},{json.dumps(name)}:["
    )


def record_latency(name: str, started: float, **metadata: str) -> None:
    """Emits ``name`` in milliseconds since ``started`` (a ``time.perf_counter()`` value).

    The line is the EMF document powertools' ``Metrics`` writes for one metric with metadata
    (``tests/unit/test_core_observability.py`` compares the two), assembled from a cached
    template: it runs on every request, where powertools' ``add_metric`` + ``add_metadata`` +
    ``flush_metrics`` cost about a fifth of a warm ``/route`` (``bench/bench_invocations.py``).
    """
    if not metrics_enabled():
        return
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    middle = _latency_line_parts(metrics.namespace, metrics.service, name, tuple(metadata.items()))
    sys.stdout.write(f'{{"_aws":{{"Timestamp":{int(time.time() * 1000)}{middle}{elapsed_ms!r}]}}\n')


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


# ---- the request's correlation id on every line logged while it runs ------------------------

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)


def set_correlation_id(value: str | None) -> None:
    """Tags every line this request (this thread or task) logs from now on with ``value``.

    A context variable read when a line is written, instead of powertools'
    ``Logger.set_correlation_id``: that rewrites the formatter's keys on every request (a
    twentieth of a warm ``/route``) and is shared by the threads of the local server.
    """
    _correlation_id.set(value)


class CorrelationFilter(logging.Filter):
    """Adds the current request's ``correlation_id`` to each record (see
    :func:`set_correlation_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        value = _correlation_id.get()
        if value is not None and not hasattr(record, "correlation_id"):
            record.correlation_id = value
        return True


_correlation_filter = CorrelationFilter()
if _correlation_filter not in logger._logger.filters:
    logger._logger.addFilter(_correlation_filter)
