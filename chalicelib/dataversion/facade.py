"""The dataversion domain's public face: what other domains may ask of it.

Other domains never reach the versioning engine, the store or the repository; they ask here,
with the caller's :class:`~chalicelib.core.principal.Principal`, and get the same 404 for a
version they may not read as for one that does not exist (see :mod:`chalicelib.core.access`).
The ``*_as_system`` functions serve scheduled and queued work that follows a reference that was
checked with the caller's rights when it was made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import NotFound
from chalicelib.core.principal import Principal
from chalicelib.dataversion.models import DatasetUsage, DatasetVersion

if TYPE_CHECKING:
    from chalicelib.dataversion.reader import RecordSample


def _service() -> Any:
    # The service module imports the engine: loaded on first use, not when this one is.
    from chalicelib.dataversion.service import get_dataset_service

    return get_dataset_service()


def readable_version(principal: Principal, version_id: str) -> DatasetVersion:
    """A version by id if the caller may read its dataset.

    Raises:
        DatasetVersionNotFound: Unknown or not readable (the same answer, naming only
            ``version_id``).
    """
    return _service().readable_version(principal, version_id)


def readable_version_ref(principal: Principal, dataset_id: str, ref: str) -> DatasetVersion:
    """A version of a dataset the caller may read, by number (``3``), id (``dv-…``) or tag.

    Raises:
        DatasetNotFound: Unknown or not readable dataset (the same answer).
        DatasetVersionNotFound: No such version or tag.
        DatasetVersionGone: The version was deleted (410).
    """
    return _service().version(principal, dataset_id, ref)


def version_as_system(version_id: str) -> DatasetVersion:
    """A version by id, for work whose reference to it was checked with its caller's rights
    when it was made.

    Raises:
        DatasetVersionNotFound: Unknown version.
    """
    return _service().engine.get_version_by_id(version_id)


def record_usage_as_system(
    version_id: str, experiment_id: str, purpose: str, recorded_by: str
) -> DatasetUsage:
    """Records that an experiment uses a version, for work whose reference to it was checked
    with its caller's rights just before: the version is then kept (deleting it is 409, retention
    skips it; an erasure still deletes it) and listed among the experiment's usages.

    Raises:
        DatasetVersionNotFound: Unknown version.
    """
    service = _service()
    version = service.engine.get_version_by_id(version_id)
    return service.reconstructor.record_usage(
        version.dataset_id, version.version_id, experiment_id, purpose, recorded_by
    )


def remove_usage_as_system(usage: DatasetUsage) -> None:
    """Removes a usage :func:`record_usage_as_system` recorded for an experiment whose creation
    then failed (nothing half-written)."""
    _service().reconstructor.remove_usage(usage)


def access_groups_as_system(dataset_id: str) -> list[str] | None:
    """A dataset's access groups (``None`` if it does not exist): for deciding whether a change
    of another resource's access would hide it from the dataset's readers."""
    try:
        return list(_service().engine.get_dataset(dataset_id).access_groups)
    except NotFound:
        return None


def sample_records_as_system(version_id: str, max_rows: int, seed: int = 0) -> RecordSample:
    """A seeded uniform sample of at most ``max_rows`` records of a CSV or JSON-lines version
    (in file order; CSV values as strings), read in one pass and checked against the version's
    sha256: for work whose reference to ``version_id`` was checked with its caller's rights
    (:func:`readable_version`) when it was made or just before.

    Raises:
        DatasetVersionNotFound: Unknown version.
        DatasetVersionGone: The version was deleted (410).
        ContentIntegrityError: The stored bytes differ from the version's content (409).
        UnprocessableEntity: Another format, or content that is not valid records.
    """
    from chalicelib.dataversion.reader import sample_records

    engine = _service().engine
    return sample_records(engine.store, engine.get_version_by_id(version_id), max_rows, seed)


def row_count_as_system(version_id: str) -> int | None:
    """The row count recorded for a version (``None`` when unknown, not recorded or the version
    does not exist): for estimating work on a version the caller was already checked against.
    """
    try:
        found = _service().engine.get_version_by_id(version_id).row_count
    except NotFound:
        return None
    return None if found is None else int(found)
