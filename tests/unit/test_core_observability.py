"""The per-request latency metric: the EMF line ``record_latency`` writes is the document
powertools' own ``Metrics`` serializer produces for the same metric and metadata."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from chalicelib.core import observability

CASES = [
    ("RequestLatency", {"route": "route_request"}),
    ("ExplanationComputeLatency", {"algorithm": "tree"}),
    ("RequestLatency", {}),
    ('Odd "name" é', {"route": 'with "quotes" and \\ and ✓', "second": "x"}),
]


def _powertools_document(
    name: str, value: float, metadata: dict[str, str], service: str | None
) -> dict[str, Any]:
    """What powertools writes for one metric value with this metadata (the oracle)."""
    reference = Metrics(namespace=observability.metrics.namespace, service=service)
    reference.clear_metrics()
    reference.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)
    for key, text in metadata.items():
        reference.add_metadata(key=key, value=text)
    document = reference.serialize_metric_set()
    reference.clear_metrics()
    return dict(document)


# Deployed, POWERTOOLS_SERVICE_NAME (.chalice/config.json) gives every metric a service
# dimension; without it there is none. Both are set explicitly: the environment a test process
# inherits must not decide (chalice's test client swaps os.environ while a request runs).
@pytest.mark.parametrize("service", [None, "synapsenet"])
@pytest.mark.parametrize(("name", "metadata"), CASES)
def test_latency_lines_are_the_emf_documents_powertools_writes(
    name: str,
    metadata: dict[str, str],
    service: str | None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("SYNAPSE_METRICS", "on")
    monkeypatch.setattr(observability.metrics, "service", service)
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)  # the oracle reads it
    before = int(time.time() * 1000)
    observability.record_latency(name, time.perf_counter() - 0.0125, **metadata)
    after = int(time.time() * 1000)

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    ours = json.loads(lines[0])
    value = ours[name][0]
    expected = _powertools_document(name, value, metadata, service)
    assert before <= ours["_aws"].pop("Timestamp") <= after
    expected["_aws"].pop("Timestamp")
    assert ours == expected
    assert 12.5 <= value < 10_000


def test_no_metric_line_when_metrics_are_off(
    capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("SYNAPSE_METRICS", "off")
    observability.record_latency("RequestLatency", time.perf_counter(), route="x")

    assert capsys.readouterr().out == ""


def test_each_thread_logs_its_own_requests_correlation_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import threading

    logger, handlers = observability.logger, observability.logger._logger.handlers
    level = logger._logger.level
    logger._logger.setLevel("INFO")
    streams = [handler.setStream(sys.stdout) for handler in handlers]  # capsys's stdout
    both = threading.Barrier(2)

    def request(correlation_id: str) -> None:
        observability.set_correlation_id(correlation_id)
        both.wait()  # both ids are set before either thread logs
        logger.info("request", extra={"who": correlation_id})

    threads = [threading.Thread(target=request, args=(f"id-{n}",)) for n in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        logger._logger.setLevel(level)
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((line["who"], line["correlation_id"]) for line in lines) == [
        ("id-0", "id-0"),
        ("id-1", "id-1"),
    ]


class _Lines(logging.Handler):
    """The app logger's records as its JSON formatter writes them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        formatter = observability.logger.registered_formatter
        self.lines.append(json.loads(formatter.format(record)))


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_request_lines_failures_at_info_successes_at_debug_with_the_correlation_id(
    level: str, http: Any
) -> None:
    target = observability.logger._logger
    lines, old_level = _Lines(), target.level
    target.addHandler(lines)
    target.setLevel(level)
    try:
        ok = http.client.http.get("/health", headers={"X-Correlation-Id": "ok-0001"})
        missing = http.call("GET", "/experiments/nope-nope")
    finally:
        target.removeHandler(lines)
        target.setLevel(old_level)

    assert ok.status_code == 200 and missing.status_code == 404
    requests = [
        (line["status"], line["level"]) for line in lines.lines if line["message"] == "request"
    ]
    expected = [(200, "DEBUG"), (404, "INFO")] if level == "DEBUG" else [(404, "INFO")]
    assert requests == expected
    if level == "DEBUG":
        first = next(line for line in lines.lines if line["message"] == "request")
        assert first["correlation_id"] == "ok-0001"
    assert all(line.get("correlation_id") for line in lines.lines)


def test_redact_logs_installs_the_redacting_filter_once_on_each_named_logger() -> None:
    names = ("tests.redact_logs.one", "tests.redact_logs.two")
    targets = [logging.getLogger(name) for name in names]
    for target in targets:
        target.filters.clear()  # a logger no stack has touched yet
    records: list[logging.LogRecord] = []
    sink = logging.Handler()
    sink.emit = records.append  # type: ignore[method-assign]
    targets[0].addHandler(sink)
    try:
        observability.redact_logs(*names)
        observability.redact_logs(*names)  # idempotent: not installed twice
        assert [list(target.filters) for target in targets] == [[observability._filter]] * 2
        targets[0].warning("GET /x?access_token=%s with Bearer %s", "s3cr3t", "snk_k1_abc")
    finally:
        targets[0].removeHandler(sink)
        for target in targets:
            target.filters.clear()

    (record,) = records
    assert record.getMessage() == "GET /x?access_token=*** with Bearer ***"
