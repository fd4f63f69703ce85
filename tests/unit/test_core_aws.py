"""The process's boto3 clients: one session for every service, dropped with the clients."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from chalicelib.core import aws


def test_every_service_client_comes_from_one_session_until_the_clients_are_reset(
    module_aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions are what make a client slow to create (a cold ingest's four clients took
    1.4 s with a session each, 0.7 s from one): every service shares one, and a reset makes a
    new one (credentials and endpoint read again)."""
    made: list[Any] = []
    real = boto3.session.Session

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(boto3.session, "Session", counted)
    aws.reset_clients()
    s3 = aws.client("s3")
    assert aws.client("sqs") is not s3 and aws.client("events") is not s3
    assert len(made) == 1
    aws.reset_clients()
    assert aws.client("s3") is not s3 and aws.client("dynamodb") is not None
    assert len(made) == 2


def test_transactions_share_one_connection_and_client_until_the_clients_are_reset(
    module_aws: Any,
) -> None:
    """A connection makes a botocore client on first use (5 ms of CPU): transactions share
    one, in every thread, and a reset makes a new one (endpoint and credentials read again)."""
    import threading

    from chalicelib.core.tables import transaction_connection

    aws.reset_clients()
    first = transaction_connection()
    seen: list[Any] = []
    worker = threading.Thread(target=lambda: seen.append(transaction_connection()))
    worker.start()
    worker.join()
    assert seen == [first] and transaction_connection() is first
    assert first.client is first.client
    aws.reset_clients()
    again = transaction_connection()
    assert again is not first and again.client is not first.client
    assert again.client.list_tables()["TableNames"]  # it reaches the tables of module_aws
