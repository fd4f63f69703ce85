"""Lazily created boto3 clients, shared per process and reset between tests."""

from __future__ import annotations

import threading
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


def client(service: str) -> Any:
    """Returns a cached boto3 client for ``service`` in the configured region and endpoint.

    boto3 is imported on first use so that importing the app stays cheap.
    """
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(service)
        if found is None:
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
                # One session for every service: its loader reads botocore's endpoint,
                # partition and default-config files once, not once per client (a cold
                # ingest's four clients took 1.4 s to make with a session each, 0.7 s shared).
                _session.append(boto3.session.Session())
            found = _session[0].client(
                service, region_name=region(), endpoint_url=endpoint_url(), config=config
            )
            _clients[service] = found
    return found


def transaction_connection() -> Any:
    """Returns the cached PynamoDB connection for ``TransactWrite``, in the configured region
    and endpoint.

    A connection makes its botocore client on first use (5 ms of CPU each): made per
    transaction, a dataset version's six transactions paid that six times. Like the boto3
    clients above, the one connection (and its client) serves every thread, as each PynamoDB
    model's own connection does.
    """
    found = _clients.get(_TRANSACTIONS)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(_TRANSACTIONS)
        if found is None:
            from pynamodb.connection import Connection

            found = _clients[_TRANSACTIONS] = Connection(region=region(), host=endpoint_url())
    return found


def reset_clients() -> None:
    """Drops cached clients (the endpoint or credentials changed, or a test ended)."""
    with _lock:
        _clients.clear()
        _session.clear()  # its credentials and configuration are read again
