"""Exceptions of the SynapseNet client.

Every error answer of the API (``{"error": "<code>", "message": "..."}``) becomes an
:class:`ApiError` subclass chosen by status, carrying the API's ``code``, ``message`` and
``details``; the CLI maps each class to a documented exit code (see ``synapse --help``).
"""

from __future__ import annotations

from typing import Any


class SynapseClientError(Exception):
    """Base class of everything the client raises on purpose."""

    exit_code = 1


class ApiError(SynapseClientError):
    """The API answered with an error status.

    Attributes:
        status: HTTP status.
        code: The API's error code (``"not_found"``, ``"invalid_state"``, ...).
        message: The API's message.
        details: Extra fields of the error body (e.g. per-field validation details).
        method: HTTP method of the request.
        path: Path of the request.
    """

    exit_code = 1

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        method: str = "",
        path: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({method} {path})" if path else ""))
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.path = path
        self.details = details or {}


class BadRequest(ApiError):
    """400: the request is malformed."""


class Unauthorized(ApiError):
    """401: no token, or a wrong or revoked one."""

    exit_code = 4


class Forbidden(ApiError):
    """403: the token's role is too small."""

    exit_code = 4


class NotFound(ApiError):
    """404: unknown id, or a resource the caller may not see."""

    exit_code = 3


class Conflict(ApiError):
    """409: a wrong state or a concurrent change."""


class PayloadTooLarge(ApiError):
    """413: the body or file is over a limit."""


class Unprocessable(ApiError):
    """422: well-formed but refused (weights, schemas, unsafe artifacts...)."""


class RateLimited(ApiError):
    """429 after every retry."""

    exit_code = 5


class ServiceUnavailable(ApiError):
    """503 after every retry: a dependency failed and nothing was changed."""

    exit_code = 5


class ServerError(ApiError):
    """Any other 5xx (a bug on the server)."""

    exit_code = 5


class TransportError(SynapseClientError):
    """The API could not be reached (connection refused, DNS, timeout) after every retry."""

    exit_code = 5


class MissingCapability(SynapseClientError):
    """The server does not offer a route this call needs (an older or newer server).

    Attributes:
        route: ``"METHOD /path"`` of the missing route.
        capability: What the route is for, in words.
    """

    exit_code = 6

    def __init__(self, route: str, capability: str) -> None:
        super().__init__(
            f"the server has no {route} route ({capability}); "
            "upgrade the server (or this client) to use it"
        )
        self.route = route
        self.capability = capability


class IntegrityError(SynapseClientError):
    """Downloaded or uploaded bytes do not match their SHA-256."""

    exit_code = 7


class NotRoutable(SynapseClientError):
    """The experiment does not route requests yet (a draft)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_for(status: int, body: Any, method: str = "", path: str = "") -> ApiError:
    """The exception for an error answer (the API's code and message when the body has them)."""
    if isinstance(body, dict) and "error" in body:
        code = str(body.get("error"))
        message = str(body.get("message", ""))
        details = {k: v for k, v in body.items() if k not in ("error", "message")}
    else:
        code, message, details = f"http_{status}", str(body)[:500], {}
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, code, message, method, path, details)
