"""Declarative API operations: one decorated method per route.

A method is declared with the route it calls; its signature is the route's interface::

    @operation("GET", "/experiments/{experiment_id}/metrics")
    def metrics(self, experiment_id: str) -> dict[str, Any]:
        \"\"\"Aggregated outcomes per variant.\"\"\"

Parameters named in the path are URL-quoted into it; the others go into the JSON body
(``send="body"``, the default for POST/PUT) or the query string (``send="query"``, the default
for GET/DELETE), leaving out those that are ``None``; a ``**options`` parameter passes further
optional fields through. ``tests/client/test_openapi_coverage.py`` compares every declaration
with ``GET /openapi.json``: a route without a method, a method without a route, a path parameter
or a required field missing from a signature, or a parameter the route does not know all fail.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """What a client method calls.

    Attributes:
        method: HTTP method.
        path: Path template as in the OpenAPI document.
        send: Where non-path parameters go: ``"body"``, ``"query"`` or ``None`` (nowhere).
        name: The client method's name.
        idempotent: Whether a connection failure may be retried (default: by method).
    """

    method: str
    path: str
    send: str | None
    name: str
    idempotent: bool | None = None

    @property
    def path_names(self) -> list[str]:
        """Names of the path parameters."""
        return re.findall(r"{([^}]+)}", self.path)


OPERATIONS: dict[tuple[str, str], Operation] = {}


def operation(
    method: str,
    path: str,
    send: str | None = "",
    idempotent: bool | None = None,
    register_only: bool = False,
) -> Callable[[F], F]:
    """Declares a client method as the call of one route.

    Args:
        method: HTTP method.
        path: Path template (``/experiments/{experiment_id}``).
        send: ``"body"``, ``"query"`` or ``None``; default: body for POST/PUT, else query.
        idempotent: Whether connection failures may be retried (default: by method).
        register_only: The method has its own body (it calls ``_call`` itself); only record
            which route it covers.
    """
    method = method.upper()
    where = send if send != "" else ("body" if method in ("POST", "PUT", "PATCH") else "query")

    def decorate(func: F) -> F:
        spec = Operation(method, path, where, func.__name__, idempotent)
        OPERATIONS[(method, path)] = spec
        if register_only:
            func.__synapse_operation__ = spec  # type: ignore[attr-defined]
            func.__synapse_register_only__ = True  # type: ignore[attr-defined]
            return func
        signature = inspect.signature(func)
        var_kw = next(
            (p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None
        )

        @functools.wraps(func)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(self, *args, **kwargs)
            values = dict(bound.arguments)
            values.pop("self", None)
            extra = values.pop(var_kw, {}) if var_kw else {}
            where_to = {n: quote(str(values.pop(n)), safe="") for n in spec.path_names}
            fields = {k: v for k, v in {**values, **extra}.items() if v is not None}
            return self._call(spec, spec.path.format(**where_to), fields)

        call.__synapse_operation__ = spec  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate


def declared(obj: Any) -> dict[tuple[str, str], tuple[Operation, Callable[..., Any]]]:
    """Every operation declared on ``obj``'s class: ``(METHOD, path) -> (spec, method)``."""
    found = {}
    for name in dir(type(obj)):
        member = getattr(type(obj), name)
        spec = getattr(member, "__synapse_operation__", None)
        if spec is not None:
            found[(spec.method, spec.path)] = (spec, inspect.unwrap(member))
    return found
