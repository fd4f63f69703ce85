"""Shared helpers for the suites that run against a real local stack over loopback HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

QUIET_LOGGERS = ("werkzeug", "synapse.local", "synapse.local.http", "botocore", "urllib3")


@dataclass
class Api:
    """A JSON client for the local stack.

    Attributes:
        url: Base URL of the API.
        token: Bearer token used unless a call passes ``token=``.
        session: A pooled ``requests`` session (thread-safe enough for the load tests when each
            thread uses its own :class:`Api` via :meth:`fork`).
    """

    url: str
    token: str
    session: requests.Session

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """Sends one request; ``body`` is JSON-encoded unless it is ``str``/``bytes``."""
        chosen = self.token if token is None else token
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        if chosen:
            headers["Authorization"] = f"Bearer {chosen}"
        data = body if isinstance(body, str | bytes) or body is None else None
        json_body = None if data is not None or body is None else body
        return self.session.request(
            method,
            self.url + path,
            headers=headers,
            data=data,
            json=json_body,
            timeout=60,
            **kwargs,
        )

    def fork(self, token: str | None = None) -> Api:
        """A client with its own connection pool (one per thread)."""
        return Api(self.url, self.token if token is None else token, requests.Session())


@contextmanager
def running_stack(**options: Any) -> Iterator[Any]:
    """Starts :class:`synapse_local.stack.LocalStack` on free loopback ports and stops it."""
    from synapse_local.stack import LocalStack

    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    stack = LocalStack(port=0, moto_port=0, **options)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
