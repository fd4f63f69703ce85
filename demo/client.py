"""A small HTTP client for the SynapseNet API (``requests`` only; one session per thread)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import requests


class ApiError(RuntimeError):
    """A response with an unexpected status.

    Attributes:
        method: HTTP method.
        path: Request path.
        status: Response status code.
        body: The decoded JSON body (or text).
    """

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path} -> {status}: {body}")
        self.method, self.path, self.status, self.body = method, path, status, body


class Api:
    """JSON calls against ``base_url`` with a bearer token.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: An API token (admin or writer).
        timeout: Seconds per request.
    """

    def __init__(self, base_url: str, token: str, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._local = threading.local()
        self._routes: set[tuple[str, str]] | None = None

    @property
    def session(self) -> requests.Session:
        """This thread's session (keep-alive connections are not shared across threads)."""
        found = getattr(self._local, "session", None)
        if found is None:
            found = requests.Session()
            found.headers["Authorization"] = f"Bearer {self.token}"
            self._local.session = found
        return found

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        """Sends one request and returns the decoded JSON body.

        Raises:
            ApiError: The status is not in ``expect``.
        """
        response = self.session.request(
            method, self.base_url + path, json=body, params=params, timeout=self.timeout
        )
        try:
            data = response.json()
        except ValueError:
            data = response.text
        if response.status_code not in expect:
            raise ApiError(method, path, response.status_code, data)
        return data

    def get(self, path: str, **params: Any) -> Any:
        """``GET path?params``."""
        return self.call("GET", path, params=params or None)

    def post(self, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201, 202)) -> Any:
        """``POST path`` with a JSON body."""
        return self.call("POST", path, body if body is not None else {}, expect=expect)

    def put(self, path: str, body: Any) -> Any:
        """``PUT path`` with a JSON body."""
        return self.call("PUT", path, body)

    def routes(self) -> set[tuple[str, str]]:
        """(METHOD, path template) of every route in ``/openapi.json`` (cached)."""
        if self._routes is None:
            document = self.get("/openapi.json")
            self._routes = {
                (method.upper(), _template(path))
                for path, item in document.get("paths", {}).items()
                for method in item
                if method.lower() in {"get", "post", "put", "delete", "patch"}
            }
        return self._routes

    def has(self, method: str, path: str) -> bool:
        """Whether the server declares the route."""
        return (method.upper(), _template(path)) in self.routes()

    def missing(self, needed: list[tuple[str, str]]) -> list[str]:
        """The routes of ``needed`` the server does not declare, as ``"METHOD path"``."""
        return [f"{m} {p}" for m, p in needed if not self.has(m, p)]

    def wait_job(self, job_id: str, limit: float = 300.0, pause: float = 0.5) -> Any:
        """Polls ``GET /explanations/jobs/{job_id}`` until it succeeds.

        Raises:
            ApiError: The job failed.
            TimeoutError: It did not finish within ``limit`` seconds.
        """
        return poll(
            lambda: _job_result(self, job_id),
            limit=limit,
            pause=pause,
            what=f"explanation job {job_id}",
        )


def _template(path: str) -> str:
    """``/datasets/{dataset_id}/uploads`` → ``/datasets/{}/uploads`` (parameter names vary)."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _job_result(api: Api, job_id: str) -> Any:
    job = api.get(f"/explanations/jobs/{job_id}")
    if job["status"] == "failed":
        raise ApiError("GET", f"/explanations/jobs/{job_id}", 200, job.get("error"))
    return job["result"] if job["status"] == "succeeded" else None


def poll(check: Callable[[], Any], limit: float, pause: float = 0.5, what: str = "") -> Any:
    """Calls ``check`` until it returns something other than ``None`` (or ``limit`` seconds).

    Raises:
        TimeoutError: ``check`` kept returning ``None``.
    """
    deadline = time.monotonic() + limit
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what or 'a condition'} after {limit:.0f} s")
        time.sleep(pause)
