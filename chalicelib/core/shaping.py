"""Responses built one way, from the domain objects (issue 13 item 5).

Each domain keeps its request/response schemas in ``<domain>/schemas.py`` apart from its routes;
a route returns ``shaped(<Out model>, <domain object>)``: the model declares each field once and
every declared field is read from the domain object, so an entity is written once as a dataclass
and once as its public schema, never as a hand-built dict beside the ``*Out`` model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import BaseModel, create_model

from chalicelib.core.schema import Schema

__all__ = ["mirrored", "shaped"]


def mirrored(
    source: type, base: type[BaseModel] = Schema, *, exclude: Collection[str] = (), **shown: Any
) -> Any:
    """The fields of a response model that shows a domain dataclass, derived from it.

    A ``*Out`` model that shows a dataclass field by field subclasses this instead of copying
    the field list: ``_CupedFields: Any = mirrored(CupedResult, DomainOut, exclude=...)``, then
    ``class CupedOut(_CupedFields):`` (named first: a type checker takes no call as a base).
    Every field of ``source`` becomes a required field of the same name and type, in the same
    order, except those in ``exclude``; ``shown`` gives the JSON type of a field shown
    differently (``type=str`` for an enum) or adds one the dataclass does not hold (appended).

    Args:
        source: The dataclass.
        base: The model to extend (``Schema``, or a domain's base such as ``DomainOut``).
        exclude: Fields of ``source`` the response leaves out.
        **shown: Field name → type, replacing or adding fields.

    Returns:
        A model class to subclass (typed ``Any``: the fields are made at import time).
    """
    hints = typing.get_type_hints(source)
    fields: dict[str, Any] = {
        field.name: hints[field.name]
        for field in dataclasses.fields(source)
        if field.name not in exclude
    }
    fields.update(shown)
    definitions: dict[str, Any] = {name: (annotation, ...) for name, annotation in fields.items()}
    return create_model(f"{source.__name__}Fields", __base__=base, **definitions)


def shaped(model: type[BaseModel], source: object = None, **fields: Any) -> dict[str, Any]:
    """The JSON body ``model`` declares, read from a domain object.

    Every field of ``model`` is looked up by its JSON name (the alias, else the name) first in
    ``fields``, then in ``source``: an attribute of a domain object, or a key of a mapping (a
    result that crossed a Lambda or job boundary as JSON); a field found in neither is left out
    (it has a default). Values are given as the domain's own JSON shape (``to_dict()``) when
    they have one, and domain objects under a field typed with another ``*Out`` model (alone, in
    a list or optional) are shaped with that model, so nested entities come out the same way.

    Args:
        model: The response model.
        source: The domain object (a dataclass or a mapping), or ``None`` when ``fields`` give
            everything.
        **fields: Values the domain object does not hold (a URL, a flag of the request).

    Returns:
        A dict that ``jsonutil`` serialises (datetimes as ISO-8601, enums as their values).
    """
    shown: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in fields:
            value = fields[key]
        elif isinstance(source, Mapping):
            if key not in source:
                continue
            value = source[key]
        elif source is not None and hasattr(source, key):
            value = getattr(source, key)
        else:
            continue
        shown[key] = _shaped_value(info.annotation, value)
    return shown


def _shaped_value(annotation: Any, value: Any) -> Any:
    if value is None or isinstance(value, dict | str | int | float | bool):
        return value
    if hasattr(value, "to_dict"):
        return value.to_dict()
    nested, many = _nested_model(annotation)
    if nested is None:
        return value
    if many:
        return [item if isinstance(item, dict) else shaped(nested, item) for item in value]
    return shaped(nested, value)


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The ``*Out`` model under ``annotation`` (``X``, ``X | None``, ``list[X]``) and whether it
    is a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is list and arguments:
        found, _ = _nested_model(arguments[0])
        return found, True
    if origin in (typing.Union, types.UnionType):
        for argument in arguments:
            found, many = _nested_model(argument)
            if found is not None:
                return found, many
    return None, False
