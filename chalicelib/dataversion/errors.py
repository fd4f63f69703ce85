"""The dataversion domain's errors (each maps to its HTTP status in core.errors)."""

from __future__ import annotations

from chalicelib.core.errors import Conflict, NotFound, SynapseError, UnprocessableEntity


class DatasetNotFound(NotFound):
    """No dataset with that id or name (or the caller may not see it)."""

    code = "dataset_not_found"


class DatasetVersionNotFound(NotFound):
    """No such version."""

    code = "dataset_version_not_found"


class DatasetProfileNotFound(NotFound):
    """The version has no column profile (a format that is not profiled, or created before
    profiles were)."""

    code = "dataset_profile_not_found"


class DuplicateContent(Conflict):
    """The dataset already has a version with this content hash."""


class DuplicateSource(Conflict):
    """This source object (key and ETag) was already ingested."""


class LineageCycleError(UnprocessableEntity):
    """The edge would make the lineage cyclic (422)."""

    code = "lineage_cycle"


class NotReplayable(UnprocessableEntity):
    """The chain contains a step the service cannot re-execute (422)."""

    code = "not_replayable"


class SchemaEvolutionError(UnprocessableEntity):
    """The new schema is not compatible with the previous one under the dataset's mode (422)."""

    code = "schema_incompatible"


class SchemaMismatch(UnprocessableEntity):
    """The data does not match the declared schema (422)."""

    code = "schema_mismatch"


class TransformError(UnprocessableEntity):
    """A transformation cannot run on these inputs (422)."""

    code = "transformation_failed"


class TransformationNotFound(NotFound):
    """No such transformation record."""

    code = "transformation_not_found"


class UnreadableContent(UnprocessableEntity):
    """CSV, JSON-lines or Parquet content that cannot be parsed (422)."""

    code = "unreadable_content"


class UsageNotFound(NotFound):
    """The experiment recorded no usage of the dataset."""

    code = "usage_not_found"


class VersionNumberTaken(Conflict):
    """Another writer took the version number first (the engine retries with the next one)."""


class ContentIntegrityError(Conflict):
    """Stored bytes no longer hash to the version's sha256: they are never used."""

    code = "content_integrity"


class ObjectCollected(Conflict):
    """Garbage collection claimed the stored object a new version would point to (retried)."""

    code = "object_collected"


class DatasetVersionGone(SynapseError):
    """The version was deleted: a tombstone remains in lineage and in the version list."""

    status = 410
    code = "dataset_version_gone"
