"""Counts the AWS API calls a piece of code makes, by service and operation.

A botocore ``before-call`` event hook is registered on every client created while the counter
is installed (boto3's, PynamoDB's, any other), so a count covers DynamoDB, S3, SQS and
EventBridge alike, whether the calls go to AWS, to the local stack's moto server or to
``moto.mock_aws``. Used by the benches (what each invocation costs) and by the tests that
hold the number of calls of hot routes::

    with AwsCallCounter() as calls:
        ...
    calls.total, calls.count("dynamodb", "Query"), calls.by_operation()

Clients created before :meth:`AwsCallCounter.install` are not seen: install first, then reset
the app's cached clients (``chalicelib.core.aws.reset_clients``) or create them afterwards.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

_lock = threading.Lock()
_active: list[AwsCallCounter] = []
_installed = False


def _on_before_call(model: Any, **kwargs: Any) -> None:
    key = (model.service_model.service_name, model.name)
    with _lock:
        for counter in _active:
            counter.calls[key] += 1


def _install_hook() -> None:
    """Makes every botocore client created from now on report its calls (idempotent)."""
    global _installed
    if _installed:
        return
    from botocore.client import ClientCreator

    original = ClientCreator.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        client.meta.events.register("before-call", _on_before_call)
        return client

    create_client.__wrapped__ = original  # type: ignore[attr-defined]
    ClientCreator.create_client = create_client  # type: ignore[method-assign]
    _installed = True


class AwsCallCounter:
    """AWS calls made while active (a context manager, or :meth:`start` / :meth:`stop`).

    Attributes:
        calls: ``(service, operation)`` → number of calls.
    """

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()

    @staticmethod
    def install() -> None:
        """Hooks clients created from now on (called by :meth:`start` too)."""
        _install_hook()

    def start(self) -> AwsCallCounter:
        """Starts counting (from zero)."""
        _install_hook()
        with _lock:
            self.calls.clear()
            if self not in _active:
                _active.append(self)
        return self

    def stop(self) -> None:
        """Stops counting; the counts stay readable."""
        with _lock:
            if self in _active:
                _active.remove(self)

    def reset(self) -> None:
        """Forgets the counts so far."""
        with _lock:
            self.calls.clear()

    def __enter__(self) -> AwsCallCounter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def total(self) -> int:
        """Every call counted."""
        return sum(self.calls.values())

    def count(self, service: str, operation: str | None = None) -> int:
        """Calls to one service, or to one of its operations."""
        return sum(
            n
            for (found, name), n in self.calls.items()
            if found == service and operation in (None, name)
        )

    def by_operation(self) -> dict[str, int]:
        """``"service.Operation"`` → calls, for reports."""
        return {f"{service}.{name}": n for (service, name), n in sorted(self.calls.items())}
