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
_lock = threading.Lock()


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
            found = boto3.session.Session().client(
                service, region_name=region(), endpoint_url=endpoint_url(), config=config
            )
            _clients[service] = found
    return found


def reset_clients() -> None:
    """Drops cached clients (the endpoint or credentials changed, or a test ended)."""
    with _lock:
        _clients.clear()
