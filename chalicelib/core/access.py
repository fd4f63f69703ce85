"""The one access rule every resource follows (datasets, models, experiments, jobs).

A resource has an ``owner`` (the principal that created it) and ``access_groups``. A caller may
**read** it when the caller is an admin, owns it, or shares one of its groups; **write** it when
it may read it and holds the writer role. Everything else about the resource is invisible: a
caller who may not read a resource gets the same :class:`~chalicelib.core.errors.NotFound` as for
a resource that does not exist, with a message that names only what the caller asked for.

Every domain calls these functions (through its facade); nothing else decides who sees what.
Resources stored before owners and groups existed have neither: only admins see them until an
admin gives them groups (``PUT /models/{id}/access``, ``PUT /experiments/{id}/access``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from chalicelib.core.errors import Forbidden, NotFound
from chalicelib.core.principal import Principal


class Protected(Protocol):
    """Anything with an owner and access groups."""

    @property
    def owner(self) -> str:
        """The principal that created the resource (empty for resources stored before owners)."""
        ...

    @property
    def access_groups(self) -> Sequence[str]:
        """Groups whose members may read the resource."""
        ...


T = TypeVar("T", bound=Protected)


def can_read(principal: Principal, resource: Protected) -> bool:
    """An admin, the owner, or a member of one of the resource's groups."""
    if principal.is_admin:
        return True
    owner = resource.owner
    if owner and owner == principal.principal:
        return True
    return bool(principal.groups & set(resource.access_groups))


def require_read(principal: Principal, resource: T, missing: Callable[[], NotFound]) -> T:
    """Returns ``resource`` if the caller may read it.

    Args:
        principal: The caller.
        resource: The resource as stored.
        missing: Builds the error for a resource that does not exist (the caller gets exactly
            that error, so an invisible resource cannot be told from a missing one).

    Raises:
        NotFound: ``missing()``.
    """
    if not can_read(principal, resource):
        raise missing()
    return resource


def require_write(principal: Principal, resource: T, missing: Callable[[], NotFound]) -> T:
    """Returns ``resource`` if the caller may change it.

    Raises:
        NotFound: ``missing()`` when the caller may not even read it.
        Forbidden: The caller reads it but lacks the writer role.
    """
    require_read(principal, resource, missing)
    if not principal.has_role("writer"):
        raise Forbidden("changing this needs the writer role")
    return resource


def visible(principal: Principal, resources: Iterable[T]) -> list[T]:
    """The resources the caller may read, in their order."""
    return [resource for resource in resources if can_read(principal, resource)]


def initial_groups(principal: Principal, requested: Sequence[str] | None) -> list[str]:
    """The access groups of a new resource: the ones requested, else the creator's groups.

    ``[]`` (asked for explicitly) keeps the resource to its owner and admins.
    """
    chosen = principal.groups if requested is None else requested
    return sorted({group for group in chosen if group})
