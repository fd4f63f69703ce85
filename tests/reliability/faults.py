"""Fault injection into every botocore client: throttling and 5xx for chosen operations.

:class:`FaultInjector` hooks ``ClientCreator.create_client`` so that every client created while it
is active (the shared boto3 clients of :mod:`chalicelib.core.aws` and PynamoDB's per-table clients)
gets a ``before-send`` handler registered first. For a matching call the handler returns a
synthetic ``AWSResponse`` instead of sending the request, so botocore's own retry logic (and
PynamoDB's ``max_retry_attempts``) runs against it exactly as against a real throttled service.
The backoff sleeps (and the adaptive mode's client-side rate limiter waits) are recorded rather
than slept, so the tests stay fast.

Under ``moto.mock_aws`` every ``before-send`` handler runs (botocore takes the first non-None
answer afterwards), so moto's in-process stubber is told to ignore a request that was faulted;
otherwise moto would apply the write that the client was told had failed.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

# Error bodies in each service's wire protocol.
_JSON_ERRORS = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "5xx": (500, "InternalServerError", "Internal server error"),
}
_EVENTS_ERRORS = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "5xx": (500, "InternalException", "Internal service error"),
}
_S3_ERRORS = {
    "throttle": (503, "SlowDown", "Please reduce your request rate."),
    "5xx": (500, "InternalError", "We encountered an internal error. Please try again."),
}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield self._body


def _response(service: str, kind: str, url: str) -> AWSResponse:
    if service == "s3":
        status, code, message = _S3_ERRORS[kind]
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        return AWSResponse(url, status, {"Content-Type": "application/xml"}, _Raw(body))
    table = _EVENTS_ERRORS if service in {"eventbridge", "events"} else _JSON_ERRORS
    status, code, message = table[kind]
    content_type = (
        "application/x-amz-json-1.0" if service == "dynamodb" else "application/x-amz-json-1.1"
    )
    body = json.dumps({"__type": code, "message": message}).encode()
    return AWSResponse(url, status, {"Content-Type": content_type}, _Raw(body))


@dataclass
class Rule:
    """Fail ``times`` calls (``None``: all) of ``service``/``operation`` with ``kind``.

    Attributes:
        service: ``dynamodb``, ``s3`` or ``eventbridge``.
        operation: Operation name (``PutItem``, ``TransactWriteItems``, ``PutObject``,
            ``PutEvents``...) or ``None`` for any.
        kind: ``throttle`` or ``5xx``.
        times: How many matching calls fail (``None``: every one).
        when: Extra predicate on the request parameters (e.g. a table name).
        apply: Let the service apply the request and lose only the response (moto only): the
            ambiguous failure after commit, a timeout or a 500 on the way back.
        failed: How many calls this rule failed so far.
    """

    service: str
    operation: str | None = None
    kind: str = "throttle"
    times: int | None = None
    when: Callable[[dict[str, Any]], bool] | None = None
    apply: bool = False
    failed: int = 0

    def matches(self, service: str, operation: str, params: dict[str, Any]) -> bool:
        if self.service != service or (self.operation and self.operation != operation):
            return False
        if self.times is not None and self.failed >= self.times:
            return False
        return self.when is None or self.when(params)


@dataclass
class FaultInjector:
    """Rules plus a record of what was called and injected.

    Attributes:
        rules: Active rules (first match wins).
        calls: Attempts per ``service.Operation`` (each retry counts).
        injected: Injected failures per ``service.Operation``.
        sleeps: Backoff delays botocore asked for (not slept).
        faulted: Ids of requests answered with a fault (moto must not apply them).
        rate_limited: Token requests of the adaptive client-side rate limiter (not waited for).
    """

    rules: list[Rule] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    sleeps: list[float] = field(default_factory=list)
    faulted: set[int] = field(default_factory=set)
    rate_limited: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, service: str, operation: str | None = None, **kwargs: Any) -> Rule:
        """Adds a rule and returns it."""
        rule = Rule(service, operation, **kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Removes every rule (the service is healthy again)."""
        with self._lock:
            self.rules.clear()

    def before_send(self, request: Any, event_name: str = "", **kwargs: Any) -> AWSResponse | None:
        """The ``before-send`` handler."""
        _, service, operation = event_name.split(".", 2)
        params = _params_of(request)
        with self._lock:
            self.calls[f"{service}.{operation}"] += 1
            for rule in self.rules:
                if rule.matches(service, operation, params):
                    rule.failed += 1
                    self.injected[f"{service}.{operation}"] += 1
                    if not rule.apply:
                        self.faulted.add(id(request))
                    return _response(service, rule.kind, request.url)
        return None


def _params_of(request: Any) -> dict[str, Any]:
    body = getattr(request, "body", b"") or b""
    if isinstance(body, bytes) and body.startswith(b"{"):
        try:
            return json.loads(body)
        except ValueError:
            return {}
    return {"url": getattr(request, "url", "")}


@contextmanager
def inject_faults() -> Iterator[FaultInjector]:
    """Activates a :class:`FaultInjector` for every client created from now on.

    Clients that exist already are hooked in place and unhooked afterwards; clients created
    meanwhile are dropped at the end; backoff sleeps in ``botocore.endpoint`` are recorded
    instead of slept.
    """
    import types

    import botocore.client
    import botocore.endpoint

    from chalicelib.core import aws
    from chalicelib.domains import all_table_models

    injector = FaultInjector()
    original = botocore.client.ClientCreator.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        created = original(self, *args, **kwargs)
        created.meta.events.register_first("before-send.*.*", injector.before_send)
        return created

    from botocore.retries.bucket import TokenBucket
    from moto.core.botocore_stubber import BotocoreStubber

    stub = BotocoreStubber.__call__

    def moto_unless_faulted(self: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
        if id(request) in injector.faulted:
            injector.faulted.discard(id(request))
            return None
        return stub(self, event_name, request, **kwargs)

    fake_time = types.SimpleNamespace(sleep=injector.sleeps.append)

    def acquire_without_waiting(self: Any, amount: int = 1, block: bool = True) -> bool:
        injector.rate_limited += 1
        return True

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TokenBucket, "acquire", acquire_without_waiting)
        patch.setattr(botocore.client.ClientCreator, "create_client", create_client)
        patch.setattr(BotocoreStubber, "__call__", moto_unless_faulted)
        patch.setattr(botocore.endpoint, "time", fake_time)
        existing = _existing_clients(aws, all_table_models())
        for found in existing:
            found.meta.events.register_first("before-send.*.*", injector.before_send)
        try:
            yield injector
        finally:
            patch.undo()
            for found in existing:
                found.meta.events.unregister("before-send.*.*", injector.before_send)
            _drop_new_clients(aws, all_table_models(), existing)


def _botocore_client(cached: Any) -> Any:
    """A cached boto3 client itself; for the transactions' PynamoDB connection
    (``aws.transaction_connection``), its botocore client if it made one yet, else None."""
    return cached if hasattr(cached, "meta") else getattr(cached, "_client", None)


def _existing_clients(aws: Any, models: list[Any]) -> list[Any]:
    """Clients already created (hooked in place: re-creating them costs seconds)."""
    found = [_botocore_client(value) for value in aws._clients.values()]
    found = [client for client in found if client is not None]
    for model in models:
        connection = getattr(model._connection, "connection", None)
        client = getattr(connection, "_client", None)
        if client is not None:
            found.append(client)
    return found


def _drop_new_clients(aws: Any, models: list[Any], existing: list[Any]) -> None:
    """Forgets clients created while faults were active (they carry the hook)."""
    keep = {id(client) for client in existing}
    with aws._lock:
        for name, value in list(aws._clients.items()):
            if id(_botocore_client(value)) not in keep:
                del aws._clients[name]
    for model in models:
        connection = getattr(model._connection, "connection", None)
        if id(getattr(connection, "_client", None)) not in keep:
            model._connection = None


def table_of(model: Any) -> Callable[[dict[str, Any]], bool]:
    """A ``when`` predicate: the DynamoDB request touches ``model``'s table."""
    name = model.Meta.table_name

    def touches(params: dict[str, Any]) -> bool:
        if params.get("TableName") == name:
            return True
        items = params.get("TransactItems") or []
        return any(op.get("TableName") == name for item in items for op in item.values())

    return touches
