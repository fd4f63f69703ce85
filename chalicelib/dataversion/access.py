"""Who may read and write a dataset.

Reads need ownership, membership in one of the dataset's ``access_groups``, or the admin role.
Writes need the writer role as well. A caller without read access gets the same 404 as for a
dataset that does not exist, so ids and names of other teams' datasets do not leak; a caller who
may read but lacks the writer role gets 403 (from the route's role check).
"""

from __future__ import annotations

from collections.abc import Iterable

from chalicelib.core.errors import Forbidden
from chalicelib.core.principal import Principal
from chalicelib.dataversion.errors import DatasetNotFound
from chalicelib.dataversion.models import Dataset


def can_read(principal: Principal, dataset: Dataset) -> bool:
    """Owner, group member or admin."""
    return principal.can_access(dataset.owner, dataset.access_groups)


def can_write(principal: Principal, dataset: Dataset) -> bool:
    """Read access plus the writer role."""
    return can_read(principal, dataset) and principal.has_role("writer")


def require_read(principal: Principal, dataset: Dataset) -> Dataset:
    """Returns ``dataset`` if readable.

    Raises:
        DatasetNotFound: Not readable (indistinguishable from a missing dataset).
    """
    if not can_read(principal, dataset):
        raise DatasetNotFound(f"dataset {dataset.dataset_id} does not exist")
    return dataset


def require_write(principal: Principal, dataset: Dataset) -> Dataset:
    """Returns ``dataset`` if writable.

    Raises:
        DatasetNotFound: Not readable.
        Forbidden: Readable but the caller lacks the writer role.
    """
    require_read(principal, dataset)
    if not principal.has_role("writer"):
        raise Forbidden("writing a dataset needs the writer role")
    return dataset


def visible(principal: Principal, datasets: Iterable[Dataset]) -> list[Dataset]:
    """The datasets the caller may read."""
    return [dataset for dataset in datasets if can_read(principal, dataset)]
