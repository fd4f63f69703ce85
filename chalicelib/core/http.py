"""The HTTP toolkit every domain blueprint uses.

A route is declared once with its role, request schemas and response schema::

    api = ApiBlueprint(__name__, tag="experiments")

    @api.route("/experiments/{experiment_id}", "GET", response=ExperimentOut)
    def get_experiment(ctx: RequestContext, experiment_id: str) -> ExperimentOut: ...

The wrapper authenticates, enforces the body size limit, validates the JSON body and the query
string with pydantic, calls the handler, serializes the result and maps every
:class:`~chalicelib.core.errors.SynapseError` to ``{"error", "message"}``. The same declarations
produce ``GET /openapi.json`` (see :mod:`chalicelib.core.openapi`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chalice import Blueprint, Response
from pydantic import BaseModel

from chalicelib.core import config, jsonutil
from chalicelib.core.errors import (
    Conflict,
    PayloadTooLarge,
    ServiceUnavailable,
    SynapseError,
    UnprocessableEntity,
    ValidationError,
)
from chalicelib.core.observability import logger, record_latency, set_correlation_id
from chalicelib.core.principal import Principal
from chalicelib.core.text import visible

JSON_CONTENT_TYPES = ["application/json"]

# Checks a request's credentials for a role: ``(headers, role) -> Principal``; raises
# ``Unauthorized``/``Forbidden``. Core knows no domain: ``app.py`` installs the auth domain's.
Authenticator = Callable[[dict[str, str], str], Principal]
_authenticator: list[Authenticator] = []


def set_authenticator(authenticator: Authenticator) -> None:
    """Installs how every route with a role authenticates its caller (``app.py`` does this)."""
    _authenticator[:] = [authenticator]


def _authenticate(headers: dict[str, str], role: str) -> Principal:
    if not _authenticator:
        raise RuntimeError("no authenticator installed: call core.http.set_authenticator first")
    return _authenticator[0](headers, role)


@dataclass
class RouteSpec:
    """Everything known about one route, for dispatch and for the OpenAPI document."""

    path: str
    method: str
    name: str
    role: str | None
    body: Any = None
    query: Any = None
    response: Any = None
    status: int = 200
    summary: str = ""
    description: str = ""
    tag: str = ""
    extra_responses: dict[int, str] = field(default_factory=dict)


ROUTES: list[RouteSpec] = []


@dataclass
class RequestContext:
    """What a handler gets: the caller, the validated body and query, and the raw request.

    Attributes:
        principal: The authenticated caller (``None`` on public routes).
        body: The validated body model instance (or ``None``).
        query: The validated query model instance (or ``None``).
        headers: Request headers (lower-case keys).
        request: The underlying Chalice request.
        correlation_id: The id logged with every line of this request.
    """

    principal: Principal | None
    body: Any
    query: Any
    headers: dict[str, str]
    request: Any
    correlation_id: str


@dataclass
class ApiResponse:
    """A handler result with a status or headers other than the route's default."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def _validation_details(exc: Any) -> list[dict[str, Any]]:
    return [
        {
            "field": visible(".".join(str(part) for part in err.get("loc", ()))),
            "message": err["msg"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _adapter(schema: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(schema)


class _Validator:
    """Caches a pydantic TypeAdapter per schema (built lazily on first use)."""

    def __init__(self) -> None:
        self._cache: dict[int, Any] = {}

    def get(self, schema: Any) -> Any:
        key = id(schema)
        found = self._cache.get(key)
        if found is None:
            found = _adapter(schema)
            self._cache[key] = found
        return found


_validators = _Validator()


def parse_model(schema: Any, data: Any, where: str) -> Any:
    """Validates ``data`` against ``schema`` (a pydantic model or type).

    Raises:
        ValidationError: The data does not match; details name each field.
    """
    from pydantic import ValidationError as PydanticError

    try:
        parsed = _validators.get(schema).validate_python(data)
    except PydanticError as exc:
        details = _validation_details(exc)
        first = details[0] if details else {"field": "", "message": "invalid"}
        label = f"{where}.{first['field']}" if first["field"] else where
        raise ValidationError(f"{label}: {first['message']}", details=details) from None
    check_numbers(parsed, where)
    return parsed


# Integers with more digits than DynamoDB keeps (38) are refused wherever they come from.
_INT_LIMIT = 10**jsonutil.MAX_NUMBER_DIGITS


def _number_problem(value: Any) -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, int):
        if -_INT_LIMIT < value < _INT_LIMIT:
            return None
        return f"a number has more than {jsonutil.MAX_NUMBER_DIGITS} digits"
    if isinstance(value, Decimal) and not (
        value.is_finite()
        and len(value.as_tuple().digits) <= jsonutil.MAX_NUMBER_DIGITS
        and -130 <= value.adjusted() <= 125  # DynamoDB's range
    ):
        return f"{str(value)[:40]} is not a finite number of at most 38 digits in range"
    return None


def _items(value: Any) -> Iterator[tuple[Any, Any]]:
    """(field, key or index; item) of a pydantic model, dict, list, tuple or set."""
    if isinstance(value, BaseModel):
        return ((name, getattr(value, name)) for name in type(value).model_fields)
    if isinstance(value, dict):
        return iter(value.items())
    return enumerate(value)


def _small_finite_numbers(values: list[Any]) -> bool:
    """Whether ``values`` is plainly fine, decided in C: all floats with a finite sum (a NaN
    or an infinity makes the sum non-finite), or all integers within 38 digits. ``False``
    means "look at each item" (a row of 300,000 floats costs a sum, not a loop)."""
    kinds = set(map(type, values))
    if kinds <= {float}:
        return math.isfinite(sum(values))
    if kinds <= {int, bool}:
        return not values or (min(values) > -_INT_LIMIT and max(values) < _INT_LIMIT)
    return False


def _plain_rows(values: list[Any]) -> bool:
    """A list of plain numbers, or of rows of them (a matrix), per :func:`_small_finite_numbers`."""
    if set(map(type, values)) == {list}:
        return all(map(_small_finite_numbers, values))
    return _small_finite_numbers(values)


_SCALARS = (float, int, Decimal)
_CONTAINERS = (BaseModel, dict, list, tuple, set, frozenset)


def check_numbers(value: Any, where: str) -> None:
    """Refuses non-finite floats and integers of more than 38 digits anywhere in a validated
    request: pydantic's lax mode turns query strings and JSON strings such as ``"1e999"``,
    ``"nan"`` or a 4,000-digit numeral into numbers that DynamoDB, ``Decimal`` arithmetic and
    numpy cannot take.

    Raises:
        ValidationError: Naming the field.
    """
    problem = _number_problem(value) if isinstance(value, _SCALARS) else None
    if problem is not None:
        raise ValidationError(f"{where}: {problem}")
    pending = [(value, where)] if isinstance(value, _CONTAINERS) else []
    while pending:
        container, path = pending.pop()
        if isinstance(container, list) and _plain_rows(container):
            continue
        for key, item in _items(container):
            if isinstance(item, _SCALARS):
                problem = _number_problem(item)
                if problem is not None:
                    raise ValidationError(f"{path}.{key}: {problem}")
            elif isinstance(item, list) and _small_finite_numbers(item):
                continue  # a row of plain numbers: no path to build
            elif isinstance(item, _CONTAINERS):
                pending.append((item, f"{path}.{key}"))


def _parse_body(spec: RouteSpec, request: Any) -> Any:
    raw = request.raw_body or b""
    limit = config.max_body_bytes()  # one variable, not every setting, on each request
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {limit}")
    if spec.body is None:
        return None
    if not raw.strip():
        raise ValidationError("a JSON request body is required")
    try:
        data = jsonutil.loads(raw, max_depth=config.max_json_depth())
    except jsonutil.JsonLimitExceeded as exc:
        raise ValidationError(f"request body refused: {exc}") from None
    except ValueError as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from None
    return parse_model(spec.body, data, "body")


def _parse_query(spec: RouteSpec, request: Any) -> Any:
    params = dict(request.query_params or {})
    if spec.query is None:
        return None
    return parse_model(spec.query, params, "query")


def _serialize(spec: RouteSpec, result: Any) -> Response:
    if isinstance(result, Response):
        return result
    headers: dict[str, str | list[str]] = {}
    status, body = spec.status, result
    if isinstance(result, ApiResponse):
        status, body = result.status, result.body
        headers.update(result.headers)
    if status in (204, 304):  # no body: No Content, Not Modified
        return Response(body="", status_code=status, headers=headers)
    text = jsonutil.dumps(body)
    if spec.response is not None and status == spec.status and _validate_responses():
        _validators.get(spec.response).validate_json(text)
    return Response(
        body=text, status_code=status, headers={"Content-Type": "application/json", **headers}
    )


def _validate_responses() -> bool:
    return os.environ.get("SYNAPSE_VALIDATE_RESPONSES", "") == "1"


def error_response(error: SynapseError) -> Response:
    """The JSON response for a domain error (control and bidirectional-formatting characters a
    message quotes from the request are written as ``\\uXXXX``)."""
    body = error.to_dict()
    body["message"] = visible(body["message"])
    return Response(
        body=jsonutil.dumps(body),
        status_code=error.status,
        headers={"Content-Type": "application/json"},
    )


_CONDITION_FAILED = {"ConditionalCheckFailedException", "ConditionalCheckFailed"}


def _translate_aws_error(exc: Exception) -> SynapseError | None:
    """Maps AWS failures that survived retries to a 503 instead of a bare 500.

    Covers botocore's ``ClientError`` (and subclasses), its connection/timeout errors and every
    PynamoDB error that wraps one (including ``TransactWriteError``/``TransactGetError``). A
    DynamoDB condition that a handler did not turn into a domain error is a lost race: 409.
    """
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from pynamodb.exceptions import PynamoDBException

    if isinstance(exc, PynamoDBException) and type(exc).__name__ != "DoesNotExist":
        reasons = {getattr(r, "code", None) for r in getattr(exc, "cancellation_reasons", [])}
        if exc.cause_response_code in _CONDITION_FAILED or reasons & _CONDITION_FAILED:
            return Conflict("a concurrent change won; read the resource again and retry")
        if exc.cause_response_code == "ValidationException":
            return _unstorable(exc.cause_response_message or "")
        return ServiceUnavailable("the database did not accept the request; try again")
    if isinstance(exc, ClientError | HTTPClientError | BotoConnectionError):
        response = getattr(exc, "response", None) or {}
        code = response.get("Error", {}).get("Code", type(exc).__name__)
        if code == "ValidationException":
            return _unstorable(response.get("Error", {}).get("Message", ""))
        return ServiceUnavailable(f"a storage dependency failed ({code}); nothing was changed")
    return None


# DynamoDB refusals caused by the values a client sent, not by the service's health.
_UNSTORABLE = (
    "number overflow",
    "number underflow",
    "significant digits",
    "item size has exceeded",
    "size of",
)


def _unstorable(message: str) -> SynapseError | None:
    """A 422 for a value DynamoDB cannot store, a 400 for an empty id used as a key; other
    validation errors are bugs (500)."""
    lowered = message.lower()
    if "key attribute cannot contain an empty string" in lowered:
        return ValidationError("an id in the request is empty")
    if any(marker in lowered for marker in _UNSTORABLE):
        return UnprocessableEntity(f"a value cannot be stored: {message[:200]}", code="unstorable")
    return None


def _headers(request: Any) -> dict[str, str]:
    return {key.lower(): value for key, value in (request.headers or {}).items()}


def _correlation_id(request: Any, headers: dict[str, str]) -> str:
    found = headers.get("x-correlation-id")
    if found:
        return found[:128]
    context = getattr(request, "context", None) or {}
    return str(context.get("requestId") or os.urandom(8).hex())


def dispatch(
    spec: RouteSpec, handler: Callable[..., Any], request: Any, path: dict[str, Any]
) -> Response:
    """Runs one request through auth, validation, the handler and error mapping."""
    started = time.perf_counter()
    headers = _headers(request)
    correlation_id = _correlation_id(request, headers)
    set_correlation_id(correlation_id)
    try:
        principal = _authenticate(headers, spec.role) if spec.role is not None else None
        body = _parse_body(spec, request)
        query = _parse_query(spec, request)
        ctx = RequestContext(principal, body, query, headers, request, correlation_id)
        response = _serialize(spec, handler(ctx, **path))
    except SynapseError as error:
        response = error_response(error)
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors become responses
        mapped = _translate_aws_error(exc)
        if mapped is not None:
            logger.warning(
                "dependency failed",
                extra={"route": spec.name, "error": f"{type(exc).__name__}: {exc}"[:500]},
            )
        else:
            logger.exception("unhandled error", extra={"route": spec.name})
            mapped = SynapseError("internal error", code="internal_error")
            mapped.status = 500
        response = error_response(mapped)
    record_latency("RequestLatency", started, route=spec.name)
    _log_request(spec, response.status_code)
    return response


def _log_request(spec: RouteSpec, status: int) -> None:
    """One structured line per request: at INFO when it failed (4xx, 5xx), at DEBUG when it
    succeeded. A powertools log line costs about as much as a warm ``/route`` does without
    it; successes are counted and timed by the ``RequestLatency`` metric, and
    ``POWERTOOLS_LOG_LEVEL=DEBUG`` (or ``POWERTOOLS_LOGGER_SAMPLE_RATE``) logs them all."""
    level = logging.INFO if status >= 400 else logging.DEBUG
    delegating: Any = logger  # powertools' Logger hands these to its logging.Logger
    if delegating.isEnabledFor(level):
        extra = {"route": spec.name, "method": spec.method, "status": status}
        delegating.log(level, "request", extra=extra)


class ApiBlueprint:
    """A Chalice Blueprint whose routes are declared with schemas and a required role.

    Args:
        import_name: The module name (``__name__``).
        tag: OpenAPI tag for the routes.
    """

    def __init__(self, import_name: str, tag: str) -> None:
        self.blueprint = Blueprint(import_name)
        self.tag = tag

    def route(
        self,
        path: str,
        method: str,
        *,
        role: str | None = "reader",
        body: Any = None,
        query: Any = None,
        response: Any = None,
        status: int = 200,
        summary: str = "",
        responses: dict[int, str] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declares a route.

        Args:
            path: Chalice path pattern, e.g. ``/experiments/{experiment_id}``.
            method: HTTP method.
            role: Least role needed (``reader``, ``writer``, ``admin``), or ``None`` for public.
            body: Pydantic model (or type) of the JSON body.
            query: Pydantic model of the query string.
            response: Pydantic model (or type) of the success body.
            status: Success status code.
            summary: One line for the OpenAPI document.
            responses: Other documented statuses with a description (e.g. ``{202: "..."}``).
        """

        def decorator(handler: Callable[..., Any]) -> Callable[..., Any]:
            spec = RouteSpec(
                path=path,
                method=method.upper(),
                name=handler.__name__,
                role=role,
                body=body,
                query=query,
                response=response,
                status=status,
                summary=summary or (handler.__doc__ or "").strip().split("\n")[0],
                description=(handler.__doc__ or "").strip(),
                tag=self.tag,
                extra_responses=dict(responses or {}),
            )
            ROUTES.append(spec)
            blueprint = self.blueprint

            def view(**path_params: Any) -> Response:
                return dispatch(spec, handler, blueprint.current_request, path_params)

            view.__name__ = handler.__name__
            view.__doc__ = handler.__doc__
            blueprint.route(path, methods=[spec.method], content_types=JSON_CONTENT_TYPES)(view)
            return handler

        return decorator


def normalize_framework_errors(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """HTTP middleware: rewrites Chalice's own error bodies (405, 415, 500) to our error shape."""
    response = get_response(event)
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and "Code" in body:
        code = "".join(
            "_" + ch.lower() if ch.isupper() and i else ch.lower()
            for i, ch in enumerate(str(body["Code"]))
        )
        response.body = jsonutil.dumps({"error": code, "message": str(body.get("Message", ""))})
        response.headers = {**(response.headers or {}), "Content-Type": "application/json"}
    return response
