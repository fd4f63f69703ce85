"""Domain exceptions and their single mapping to HTTP status codes.

Raise a subclass of :class:`SynapseError` anywhere; the HTTP toolkit turns it into
``{"error": code, "message": text}`` with the class's status. Nothing else maps errors.
"""

from __future__ import annotations

from typing import Any


class SynapseError(Exception):
    """Base of every error a client can cause.

    Attributes:
        status: HTTP status code.
        code: Stable machine-readable error code.
        message: Human-readable explanation.
        details: Optional structured details (e.g. a list of problems).
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class ValidationError(SynapseError):
    """The request is malformed or a value is of the wrong type (400)."""

    status = 400
    code = "invalid_request"


class Unauthorized(SynapseError):
    """No or invalid credentials (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(SynapseError):
    """The caller is known but not allowed to do this (403)."""

    status = 403
    code = "forbidden"


class NotFound(SynapseError):
    """An id that does not exist (404)."""

    status = 404
    code = "not_found"


class Conflict(SynapseError):
    """A duplicate or a wrong-state transition (409)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(SynapseError):
    """The request body or an artifact is over a documented limit (413)."""

    status = 413
    code = "payload_too_large"


class UnprocessableEntity(SynapseError):
    """Well-formed but semantically invalid input (422)."""

    status = 422
    code = "unprocessable"


class ServiceUnavailable(SynapseError):
    """A dependency failed after retries; nothing was changed (503)."""

    status = 503
    code = "service_unavailable"
