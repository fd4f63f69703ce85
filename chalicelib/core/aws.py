"""Lazily created boto3 clients, shared per process and reset between tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chalicelib.core.config import endpoint_url, region

# Attempts per call (first try included). Throttling backoff doubles from 1 s (botocore standard
# and adaptive modes), so 4 attempts wait at most 1 + 2 + 4 = 7 s before a 503: a request stays
# inside API Gateway's 29 s limit instead of timing out after its change may have committed.
# EventBridge gets 2: the event bus retries whole batches itself and then uses the outbox.
MAX_ATTEMPTS = {"events": 2}

_clients: dict[str, Any] = {}
_session: list[Any] = []  # the process's one boto3 session, once made
_lock = threading.Lock()
_TRANSACTIONS = "pynamodb:transactions"  # the key of the transactions' connection in _clients


def _cached(key: str, make: Callable[[], Any]) -> Any:
    """Returns ``_clients[key]``, made once by ``make`` under the lock when missing."""
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = make()
    return found


def client(service: str) -> Any:
    """Returns a cached boto3 client for ``service`` in the configured region and endpoint.

    boto3 is imported on first use so that importing the app stays cheap.
    """
    return _cached(service, lambda: _make_client(service))


def _make_client(service: str) -> Any:
    """Makes the boto3 client of ``service``; called under the lock."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": MAX_ATTEMPTS.get(service, 4), "mode": "adaptive"},
        s3={"addressing_style": "path"},
        # SigV4 everywhere: without it botocore presigns us-east-1 URLs with SigV2, which
        # S3 refuses for buckets created since 2020 and which carries no X-Amz-Expires.
        signature_version="s3v4" if service == "s3" else None,
        max_pool_connections=32,
    )
    if not _session:
        # One session for every service: its loader reads botocore's endpoint, partition and
        # default-config files once, not once per client (a cold ingest's four clients took
        # 1.4 s to make with a session each, 0.7 s shared).
        _session.append(boto3.session.Session())
    return _session[0].client(
        service, region_name=region(), endpoint_url=endpoint_url(), config=config
    )


def transaction_connection() -> Any:
    """Returns the cached PynamoDB connection for ``TransactWrite``, in the configured region
    and endpoint.

    A connection makes its botocore client on first use (5 ms of CPU each): made per
    transaction, a dataset version's six transactions paid that six times. Like the boto3
    clients above, the one connection (and its client) serves every thread, as each PynamoDB
    model's own connection does.
    """
    return _cached(_TRANSACTIONS, _make_transaction_connection)


def _make_transaction_connection() -> Any:
    """Makes the PynamoDB connection of ``transaction_connection``; called under the lock."""
    from pynamodb.connection import Connection

    return Connection(region=region(), host=endpoint_url())


def reset_clients() -> None:
    """Drops cached clients (the endpoint or credentials changed, or a test ended)."""
    with _lock:
        _clients.clear()
        _session.clear()  # its credentials and configuration are read again
