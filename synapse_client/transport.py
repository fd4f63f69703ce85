"""HTTP transport: one ``requests`` session per thread, bearer token, retries with backoff.

Retried: 429 and 503 answers (the API promises that a 503 changed nothing; a 429 from API
Gateway's throttling was never processed), honouring ``Retry-After``, and connection failures of
requests that are safe to repeat (GET, PUT, DELETE, and POSTs the caller marks idempotent, such
as outcome batches keyed by request ids). The delay doubles from ``backoff`` seconds with full
jitter, capped at ``max_backoff``.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from synapse_client.errors import TransportError, error_for

RETRY_STATUSES = frozenset({429, 503})
# Failures on the way (no answer, or an answer cut off) that a safe request may repeat.
RETRY_FAILURES = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
USER_AGENT = "synapse-client/1.0"


@dataclass
class Reply:
    """A decoded answer.

    Attributes:
        status: HTTP status.
        data: The decoded JSON body (``None`` when empty).
        headers: Response headers (case-insensitive mapping).
    """

    status: int
    data: Any
    headers: Any


class Transport:
    """Sends JSON requests to the API.

    Args:
        url: Base URL, e.g. ``http://127.0.0.1:8000``.
        token: Bearer token (``None`` for the public routes only).
        timeout: Seconds per request.
        retries: Extra attempts after the first for retryable failures.
        backoff: First retry delay in seconds (doubles each time, with jitter).
        max_backoff: Largest delay between two attempts.
        sleep: Sleep function (tests pass a fake).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._local = threading.local()
        self.attempts = 0  # every HTTP attempt made (retries included), for callers and tests

    @property
    def session(self) -> requests.Session:
        """This thread's session (keep-alive connections are not shared between threads)."""
        found = getattr(self._local, "session", None)
        if found is None:
            found = requests.Session()
            found.headers["User-Agent"] = USER_AGENT
            self._local.session = found
        return found

    def _headers(self, extra: dict[str, str] | None, body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return {**headers, **(extra or {})}

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if retry_after:
            try:
                seconds = float(retry_after)
            except ValueError:  # an HTTP date: the backoff below
                seconds = math.nan
            if not math.isnan(seconds):  # "nan" would make time.sleep raise ValueError
                return min(max(seconds, 0.0), self.max_backoff)
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        ok: tuple[int, ...] = (),
    ) -> Reply:
        """Sends one request (with retries) and decodes the answer.

        Args:
            method: HTTP method.
            path: Path below the base URL (``/experiments``).
            body: JSON-serializable body, or ``None``.
            params: Query parameters (``None`` values are left out).
            headers: Extra headers.
            idempotent: Whether a connection failure may be retried (default: by method).
            ok: Extra statuses that are not errors (e.g. ``(304,)``).

        Raises:
            ApiError: An error status (after retries for 429/503).
            TransportError: The API could not be reached after every retry.
        """
        method = method.upper()
        safe = method in SAFE_METHODS if idempotent is None else idempotent
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        data = None if body is None else json.dumps(body, default=str)
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            try:
                response = self.session.request(
                    method,
                    self.url + path,
                    params=query or None,
                    data=data,
                    headers=self._headers(headers, data is not None),
                    timeout=self.timeout,
                )
            except RETRY_FAILURES as exc:
                if not safe or attempt > self.retries:
                    raise TransportError(f"{method} {self.url}{path}: {exc}") from exc
                self._sleep(self.delay(attempt))
                continue
            except requests.RequestException as exc:  # a bad URL, redirects: no retry helps
                raise TransportError(f"{method} {self.url}{path}: {exc}") from exc
            if response.status_code in RETRY_STATUSES and attempt <= self.retries:
                self._sleep(self.delay(attempt, response.headers.get("Retry-After")))
                continue
            return self._decode(response, method, path, ok)

    @staticmethod
    def _decode(response: requests.Response, method: str, path: str, ok: tuple[int, ...]) -> Reply:
        data: Any = None
        if response.content:
            try:
                data = response.json()
            except ValueError:
                data = response.text
        if response.status_code >= 400 and response.status_code not in ok:
            raise error_for(response.status_code, data, method, path)
        if isinstance(data, str):  # a 2xx page from something that is not the API
            kind = response.headers.get("Content-Type", "unknown content")
            raise TransportError(
                f"{method} {path}: the answer is not JSON ({kind}, {response.status_code}); "
                "is the URL a SynapseNet API?"
            )
        return Reply(response.status_code, data, response.headers)


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
