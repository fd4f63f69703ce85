"""The access-controlled facade the HTTP routes call: one method per route.

Every method takes the calling :class:`~chalicelib.core.principal.Principal` and checks it
against each dataset it touches (the one rule of :mod:`chalicelib.core.access`) before
delegating to the engine, the transformation service or the reconstructor. Other domains use
:mod:`chalicelib.dataversion.facade` instead.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.core import access, references
from chalicelib.core.errors import ValidationError
from chalicelib.core.principal import Principal
from chalicelib.core.singleton import lazy
from chalicelib.dataversion.errors import (
    DatasetNotFound,
    DatasetVersionGone,
    DatasetVersionNotFound,
)
from chalicelib.dataversion.lineage import LineageView
from chalicelib.dataversion.models import (
    Dataset,
    DatasetSchema,
    DatasetUsage,
    DatasetVersion,
    DriftLimits,
    LineageNode,
    RetentionPolicy,
    TagMove,
)
from chalicelib.dataversion.pipeline import AppliedTransformation, TransformationService
from chalicelib.dataversion.reader import read_verified
from chalicelib.dataversion.reconstruction import (
    DatasetReconstructor,
    Reconstruction,
    ReplayResult,
    ReproducibilityReport,
)
from chalicelib.dataversion.repository import ALL_DATASETS, listing_partitions
from chalicelib.dataversion.storage import (
    INCOMING_PREFIX,
    META_CREATED_BY,
    META_DATASET,
    META_FILENAME,
    direct_key,
)
from chalicelib.dataversion.versioning import (
    DatasetVersioningEngine,
    VersionOutcome,
    VersionRequest,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NOT_HEADER_SAFE = re.compile(r"[^\x20-\x7e]")


MULTIPART_THRESHOLD = 64 * 1024 * 1024
MIN_PART_BYTES = 16 * 1024 * 1024
MAX_PART_BYTES = 5 * 1024 * 1024 * 1024  # S3's part limit
MAX_SINGLE_PUT_BYTES = 5 * 1024 * 1024 * 1024  # S3's limit for one PUT (a direct upload)
# At most 1,000 presigned part URLs per response (about 600 KB of JSON, well under Lambda's
# 6 MB response limit); parts grow with the file instead, up to S3's 5 GiB part limit.
MAX_PARTS = 1_000
MAX_UPLOAD_BYTES = MAX_PARTS * MAX_PART_BYTES


@dataclass
class Upload:
    """A presigned upload; the S3 trigger makes the uploaded file a version.

    Three shapes:

    * **Direct** (the caller declared the file's SHA-256 and the content is new): one PUT of
      ``url`` with ``headers``, straight into content-addressed storage. S3 checks the digest
      and the ingest versions the object where it is, with no copy.
    * **Exists** (``status`` ``exists``): this dataset already has a version with that
      SHA-256 (``version_id``); nothing to upload.
    * **Staged**: a single PUT (``url``) under ``incoming/<dataset_id>/`` for files up to
      ``MULTIPART_THRESHOLD`` or of unknown size; above that, a multipart upload: PUT each part
      to its ``part_urls`` entry (in parallel if you like), then complete it with the ETags.

    Attributes:
        key: The object key.
        url: The single-PUT URL (``None`` for multipart and ``exists``).
        expires_in: Seconds the URLs stay valid.
        upload_id: The multipart upload id.
        part_size: Bytes per part (the last part may be smaller).
        part_urls: One URL per part, part numbers starting at 1.
        headers: Headers the PUT must carry exactly (they are signed into ``url``).
        status: ``upload`` or ``exists``.
        version_id: The existing version, for ``exists``.
        mode: ``direct``, ``staged`` or ``none`` (``exists``).
    """

    key: str
    url: str | None
    expires_in: int
    upload_id: str | None = None
    part_size: int | None = None
    part_urls: list[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    status: str = "upload"
    version_id: str | None = None
    mode: str = "staged"


class DatasetService:
    """Dataset operations on behalf of a caller.

    Args:
        engine: Versioning engine.
        transforms: Transformation runner.
        reconstructor: Reconstruction and replay.
    """

    def __init__(
        self,
        engine: DatasetVersioningEngine | None = None,
        transforms: TransformationService | None = None,
        reconstructor: DatasetReconstructor | None = None,
    ) -> None:
        self.engine = engine or get_versioning_engine()
        self.transforms = transforms or TransformationService(self.engine)
        self.reconstructor = reconstructor or DatasetReconstructor(self.engine, self.transforms)

    # ---- helpers --------------------------------------------------------------------------

    def readable(self, principal: Principal, dataset_id: str) -> Dataset:
        """The dataset if the caller may read it (404 otherwise)."""
        return access.require_read(
            principal, self.engine.get_dataset(dataset_id), _missing_dataset(dataset_id)
        )

    def writable(self, principal: Principal, dataset_id: str) -> Dataset:
        """The dataset if the caller may write it (404 / 403 otherwise)."""
        return access.require_write(
            principal, self.engine.get_dataset(dataset_id), _missing_dataset(dataset_id)
        )

    def readable_version(
        self, principal: Principal, version_id: str, live: bool = True
    ) -> DatasetVersion:
        """A version by id if the caller may read its dataset (404 otherwise; 410 if it was
        deleted, unless ``live`` is false: lineage shows tombstones)."""
        version = self.engine.get_version_by_id(version_id)
        try:
            self.readable(principal, version.dataset_id)
        except DatasetNotFound:
            raise DatasetVersionNotFound(f"version {version_id} does not exist") from None
        return _live(version) if live else version

    def version(
        self, principal: Principal, dataset_id: str, ref: str, as_of: datetime | None = None
    ) -> DatasetVersion:
        """A version of a readable dataset by number (``3``), id (``dv-…``) or tag
        (``production``; with ``as_of``, where the tag pointed then)."""
        return _live(self._version_or_tombstone(principal, dataset_id, ref, as_of))

    def _version_or_tombstone(
        self, principal: Principal, dataset_id: str, ref: str, as_of: datetime | None = None
    ) -> DatasetVersion:
        self.readable(principal, dataset_id)
        if ref.isdigit():
            return self.engine.get_version(dataset_id, version_number=int(ref))
        if ref.startswith("dv-"):
            return self.engine.get_version(dataset_id, version_id=ref)
        moved = self.engine.tags.resolve(dataset_id, ref, as_of)
        return self.engine.get_version(dataset_id, version_id=moved.version_id)

    def drift(self, principal: Principal, dataset_id: str, a: str, b: str) -> dict[str, Any]:
        """Per-column drift from version ``a`` to ``b`` (numbers, ids or tags) and their
        schema diff."""
        from chalicelib.dataversion.drift import drift_report

        dataset = self.readable(principal, dataset_id)
        first = self.version(principal, dataset_id, a)
        second = self.version(principal, dataset_id, b)
        return drift_report(self.engine.store, first, second, dataset.compatibility)

    def profile(self, principal: Principal, dataset_id: str, ref: str) -> dict[str, Any]:
        """The column profile of a version (number, id or tag) of a readable dataset.

        Raises:
            DatasetProfileNotFound: The version has no profile (404).
        """
        found = self.version(principal, dataset_id, ref)
        return self.engine.get_profile(found)

    # ---- deletion and retention -----------------------------------------------------------

    def delete_version(self, principal: Principal, dataset_id: str, ref: str) -> DatasetVersion:
        """Tombstones a version of a writable dataset (409 if tagged or used; 410 if gone)."""
        self.writable(principal, dataset_id)
        found = self._version_or_tombstone(principal, dataset_id, ref)
        return self.engine.lifecycle.delete_version(found, principal.principal)

    def set_retention(
        self, principal: Principal, dataset_id: str, policy: RetentionPolicy | None
    ) -> Dataset:
        """Sets a writable dataset's retention policy."""
        self.writable(principal, dataset_id)
        return self.engine.lifecycle.set_retention(dataset_id, policy)

    def erase_content(self, principal: Principal, sha256: str) -> tuple[list[DatasetVersion], Any]:
        """Erases content everywhere (admins: the route's role)."""
        digest = sha256.lower()
        if not _SHA256.fullmatch(digest):
            raise ValidationError("sha256 must be 64 hex digits")
        return self.engine.lifecycle.erase_content(digest, principal.principal)

    # ---- tags -----------------------------------------------------------------------------

    def move_tag(self, principal: Principal, dataset_id: str, tag: str, ref: str) -> TagMove:
        """Points a tag at a version (a number, id or another tag) of a writable dataset."""
        self.writable(principal, dataset_id)
        target = self.version(principal, dataset_id, ref)
        return self.engine.tags.move(target, tag, principal.principal)

    def tags(self, principal: Principal, dataset_id: str) -> list[TagMove]:
        """Where each tag of a readable dataset points."""
        self.readable(principal, dataset_id)
        return self.engine.tags.tags(dataset_id)

    def tag(
        self, principal: Principal, dataset_id: str, tag: str, as_of: datetime | None = None
    ) -> tuple[TagMove, list[TagMove]]:
        """Where a tag points (or pointed at ``as_of``) and its whole history."""
        self.readable(principal, dataset_id)
        return self.engine.tags.resolve(dataset_id, tag, as_of), self.engine.tags.history(
            dataset_id, tag
        )

    # ---- datasets -------------------------------------------------------------------------

    def create_dataset(
        self,
        principal: Principal,
        name: str,
        access_groups: list[str],
        format: str,
        compatibility: str,
        description: str,
        schema: DatasetSchema | None,
        drift_limits: DriftLimits | None = None,
    ) -> Dataset:
        """Creates a dataset owned by the caller."""
        return self.engine.create_dataset(
            name,
            principal.principal,
            access_groups,
            format,
            compatibility,
            description,
            schema,
            drift_limits,
        )

    def set_drift_limits(
        self, principal: Principal, dataset_id: str, limits: DriftLimits | None
    ) -> Dataset:
        """Sets (``None``: removes) a writable dataset's drift limits."""
        self.writable(principal, dataset_id)
        return self.engine.set_drift_limits(dataset_id, limits)

    def set_access_groups(
        self, principal: Principal, dataset_id: str, access_groups: list[str]
    ) -> Dataset:
        """Replaces who may see a dataset (needs write access to it; its owner stays).

        Raises:
            Referenced: A model (a version's background) or another dataset (parents, sources)
                readable by a group the change drops refers to the dataset (see
                :mod:`chalicelib.core.references`).
        """
        dataset = self.writable(principal, dataset_id)
        groups = sorted({group for group in access_groups if group})
        dropped = set(dataset.access_groups) - set(groups)
        with references.narrowing(references.Ref("dataset", dataset_id), dropped, _REFERRERS):
            return self.engine.repository.set_access_groups(dataset_id, groups)

    def list_rejections(self, principal: Principal, limit: int) -> list[Any]:
        """Files the S3 trigger refused, newest first (admins: the route's role)."""
        found = self.engine.repository.list_rejections(limit)
        return sorted(found, key=lambda item: item.rejected_at, reverse=True)

    def list_datasets(
        self, principal: Principal, limit: int = 100, next_token: str | None = None
    ) -> tuple[list[Dataset], str | None]:
        """A page of the datasets the caller may see, by name, read through the listing index
        (admins: every dataset; others: their own and their groups'), and the token of the
        next page (``None``: the last page).

        Raises:
            ValidationError: A ``next_token`` this listing did not issue (400).
        """
        after = _decode_token(next_token) if next_token else None
        if principal.is_admin:
            partitions = [ALL_DATASETS]
        else:
            partitions = listing_partitions(principal.principal, sorted(principal.groups))[1:]
        found, last = self.engine.repository.list_datasets_in(partitions, limit, after)
        return access.visible(principal, found), _encode_token(last) if last else None

    # ---- versions -------------------------------------------------------------------------

    def create_version(
        self, principal: Principal, dataset_id: str, data: Any, request: VersionRequest
    ) -> VersionOutcome:
        """Stores inline content as a version (parents must be readable too)."""
        dataset = self.writable(principal, dataset_id)
        parents = [self.readable_version(principal, p) for p in request.parent_version_ids]
        request.created_by = principal.principal
        with self._referring(dataset, {parent.dataset_id for parent in parents}):
            for parent in request.parent_version_ids:
                self.readable_version(principal, parent)  # again, now that the pins hold
            return self.engine.store_version(dataset_id, data, request)

    def _referring(self, dataset: Dataset, sources: set[str]) -> Any:
        """Pins the other datasets a version of ``dataset`` derives from (see
        :mod:`chalicelib.core.references`)."""
        targets = [references.Ref("dataset", s) for s in sources if s != dataset.dataset_id]
        return references.referring(targets, "dataset", dataset.access_groups, dataset.dataset_id)

    def restore_version(self, principal: Principal, dataset_id: str, ref: str) -> VersionOutcome:
        """Makes an earlier version current again (write access to the dataset)."""
        self.writable(principal, dataset_id)
        found = self.version(principal, dataset_id, ref)
        return self.engine.restore_version(dataset_id, found, principal.principal)

    def create_upload(
        self,
        principal: Principal,
        dataset_id: str,
        filename: str,
        size_bytes: int | None = None,
        sha256: str | None = None,
    ) -> Upload:
        """Presigned upload URL(s) for one file (see :class:`Upload` for the three shapes).

        Args:
            principal: The caller (writer on the dataset).
            dataset_id: The dataset.
            filename: The file's name; its extension picks the format.
            size_bytes: The file's size: above ``MULTIPART_THRESHOLD`` a staged upload is
                multipart; a direct upload is one PUT, so at most 5 GiB.
            sha256: The file's SHA-256 (hex). New content then goes straight to
                content-addressed storage; content the dataset already has is not uploaded.

        Raises:
            PayloadTooLarge: Over ``MAX_UPLOAD_BYTES`` (1,000 parts of 5 GiB).
        """
        from chalicelib.core.config import get_settings
        from chalicelib.core.errors import PayloadTooLarge

        dataset = self.writable(principal, dataset_id)
        safe = _UNSAFE.sub("_", filename).strip("._") or "data"
        seconds = get_settings().presign_seconds
        if size_bytes is not None and size_bytes > MAX_UPLOAD_BYTES:
            raise PayloadTooLarge(f"files are limited to {MAX_UPLOAD_BYTES} bytes")
        if sha256 is not None:
            direct = self._direct_upload(principal, dataset, safe, size_bytes, sha256, seconds)
            if direct is not None:
                return direct
        key = f"{INCOMING_PREFIX}{dataset.dataset_id}/{uuid.uuid4().hex}-{safe[:120]}"
        if size_bytes is None or size_bytes <= MULTIPART_THRESHOLD:
            return Upload(key, self.engine.store.presign_put(key, seconds), seconds)
        part_size = max(MIN_PART_BYTES, -(-size_bytes // MAX_PARTS))
        parts = -(-size_bytes // part_size)
        upload_id, urls = self.engine.store.start_presigned_multipart(key, parts, seconds)
        return Upload(key, None, seconds, upload_id, part_size, urls)

    def _direct_upload(
        self,
        principal: Principal,
        dataset: Dataset,
        filename: str,
        size_bytes: int | None,
        sha256: str,
        seconds: int,
    ) -> Upload | None:
        """The ``exists`` or direct upload for a declared digest, or ``None`` for a staged one.

        The answer depends on this dataset only, never on what other datasets hold: a direct
        upload goes to the dataset's own address (:func:`direct_key`), and only a file over one
        PUT, or bytes already at that address (a direct upload of this dataset that its schema
        check refused), is staged instead.
        """
        digest = sha256.lower()
        if not _SHA256.fullmatch(digest):
            raise ValidationError("sha256 must be 64 hexadecimal characters")
        existing = self.engine.repository.version_by_hash(dataset.dataset_id, digest)
        if existing is not None:
            return Upload(
                existing.storage_key,
                None,
                0,
                status="exists",
                version_id=existing.version_id,
                mode="none",
            )
        key = direct_key(digest, dataset.dataset_id)
        if (
            size_bytes is not None and size_bytes > MAX_SINGLE_PUT_BYTES
        ) or self.engine.store.exists(key):
            return None
        metadata = {
            META_DATASET: dataset.dataset_id,
            META_FILENAME: filename[:120],
            META_CREATED_BY: _NOT_HEADER_SAFE.sub("_", principal.principal)[:200],
        }
        url, headers = self.engine.store.presign_verified_put(key, digest, metadata, seconds)
        return Upload(key, url, seconds, headers=headers, mode="direct")

    def complete_upload(
        self,
        principal: Principal,
        dataset_id: str,
        key: str,
        upload_id: str,
        etags: list[tuple[int, str]],
    ) -> None:
        """Completes a multipart upload; the S3 trigger then makes the file a version.

        Raises:
            ValidationError: The key is not one of this dataset's upload keys.
        """
        dataset = self.writable(principal, dataset_id)
        if not key.startswith(f"{INCOMING_PREFIX}{dataset.dataset_id}/"):
            raise ValidationError("key is not an upload key of this dataset")
        self.engine.store.complete_multipart(key, upload_id, etags)

    def list_versions(
        self,
        principal: Principal,
        dataset_id: str,
        limit: int,
        offset: int,
        as_of: datetime | None,
    ) -> tuple[list[DatasetVersion], int]:
        """A page of versions and the total."""
        self.readable(principal, dataset_id)
        return self.engine.list_versions(dataset_id, limit, offset, as_of)

    def content_url(self, principal: Principal, dataset_id: str, ref: str) -> tuple[Any, str]:
        """A version and a presigned GET URL of its content."""
        found = self.version(principal, dataset_id, ref)
        return found, self.engine.store.presign_get(found.storage_key)

    def compare(self, principal: Principal, dataset_id: str, a: str, b: str) -> dict[str, Any]:
        """Differences between two versions of a dataset."""
        first = self.version(principal, dataset_id, a)
        second = self.version(principal, dataset_id, b)
        return self.engine.compare_versions(first, second)

    # ---- lineage --------------------------------------------------------------------------

    def lineage(
        self, principal: Principal, version_id: str, direction: str, max_depth: int | None
    ) -> dict[str, Any]:
        """Upstream and/or downstream lineage; versions of unreadable datasets are redacted."""
        self.readable_version(principal, version_id, live=False)
        graph = self.engine.lineage
        views: dict[str, LineageView] = {}
        if direction in ("upstream", "both"):
            views["upstream"] = graph.get_upstream_lineage(version_id, max_depth)
        if direction in ("downstream", "both"):
            views["downstream"] = graph.get_downstream_lineage(version_id, max_depth)
        cache: dict[str, bool] = {}
        return {
            name: {
                "nodes": [self._node(principal, node, cache) for node in view.nodes],
                "edges": view.edges,
                "truncated": view.truncated,
            }
            for name, view in views.items()
        }

    def _node(self, principal: Principal, node: LineageNode, cache: dict[str, bool]) -> dict:
        if node.dataset_id not in cache:
            try:
                self.readable(principal, node.dataset_id)
                cache[node.dataset_id] = True
            except DatasetNotFound:
                cache[node.dataset_id] = False
        shown = dict(node.__dict__)
        shown["visible"] = cache[node.dataset_id]
        if not shown["visible"]:
            shown.update(
                dataset_id=None, version_number=None, sha256=None, created_at=None, deleted_at=None
            )
        return shown

    # ---- transformations, replay, reproducibility -----------------------------------------

    def apply_transformation(
        self,
        principal: Principal,
        dataset_id: str,
        spec: dict[str, Any],
        source_version_ids: list[str],
        tags: dict[str, str],
        output_datasets: dict[str, str],
        data: Any,
    ) -> AppliedTransformation:
        """Runs (or, for external steps, records) a transformation into writable datasets."""
        writers = [self.writable(principal, dataset_id)]
        writers += [self.writable(principal, target) for target in output_datasets.values()]
        sources = {self.readable_version(principal, s).dataset_id for s in source_version_ids}
        with ExitStack() as pins:
            for writer in writers:
                pins.enter_context(self._referring(writer, sources))
            for source in source_version_ids:
                self.readable_version(principal, source)  # again, now that the pins hold
            return self.transforms.apply(
                dataset_id,
                spec,
                source_version_ids,
                principal.principal,
                tags,
                output_datasets,
                data,
            )

    def replay(
        self,
        principal: Principal,
        target_version_id: str,
        source_version_id: str,
        data: Any,
        data_version_id: str | None,
    ) -> ReplayResult:
        """Replays the chain from a source to a target on new data (inline or a stored version)."""
        self.readable_version(principal, target_version_id)
        source = self.readable_version(principal, source_version_id)
        if (data is None) == (data_version_id is None):
            raise ValidationError("give exactly one of 'data' or 'data_version_id'")
        if data_version_id is not None:
            stored = self.readable_version(principal, data_version_id)
            self.transforms.load_version(stored)
            data = read_verified(self.engine.store, stored)
        return self.reconstructor.replay_transformations(source.version_id, target_version_id, data)

    def reproducibility(self, principal: Principal, version_id: str) -> ReproducibilityReport:
        """Whether a version can be rebuilt."""
        self.readable_version(principal, version_id)
        return self.reconstructor.validate_reproducibility(version_id)

    # ---- usages and reconstruction --------------------------------------------------------

    def record_usage(
        self,
        principal: Principal,
        dataset_id: str,
        ref: str,
        experiment_id: str,
        purpose: str,
    ) -> DatasetUsage:
        """Records that an experiment used a version: the caller must be able to write the
        dataset and read the experiment (404 otherwise, as for one that does not exist)."""
        dataset = self.writable(principal, dataset_id)
        found = self.version(principal, dataset_id, ref)
        _readable_experiment(principal, experiment_id)
        experiment = [references.Ref("experiment", experiment_id)]
        with references.referring(experiment, "dataset", dataset.access_groups, dataset_id):
            _readable_experiment(principal, experiment_id)  # again, now that the pin holds
            return self.reconstructor.record_usage(
                dataset_id, found.version_id, experiment_id, purpose, principal.principal
            )

    def usages(self, principal: Principal, dataset_id: str, experiment_id: str) -> list[Any]:
        """An experiment's usages of a dataset (both must be readable by the caller)."""
        self.readable(principal, dataset_id)
        _readable_experiment(principal, experiment_id)
        return self.engine.repository.usages(experiment_id, dataset_id)

    def reconstruct(
        self,
        principal: Principal,
        dataset_id: str,
        as_of: datetime | None,
        experiment_id: str | None,
    ) -> list[Reconstruction]:
        """The version(s) to rebuild from: as of a time (default now) or used by an experiment."""
        self.readable(principal, dataset_id)
        if as_of is not None and experiment_id is not None:
            raise ValidationError("give at most one of 'as_of' or 'experiment_id'")
        if experiment_id is not None:
            _readable_experiment(principal, experiment_id)
            return self.reconstructor.reconstruct_for_experiment(experiment_id, dataset_id)
        moment = as_of if as_of is not None else self.engine.clock.now()
        return [self.reconstructor.reconstruct_at_time(dataset_id, moment)]


def _readable_experiment(principal: Principal, experiment_id: str) -> None:
    """A usage record refers to an experiment: checked with the caller's rights when the record
    is made and whenever it is read (the experiments domain answers 404 for both unknown and
    unreadable experiments)."""
    from chalicelib.abtesting import facade as experiments

    experiments.readable_experiment(principal, experiment_id)


def _model_groups(model_id: str) -> list[str] | None:
    """Who may read a model whose version takes its background from a dataset."""
    from chalicelib.registry import facade as registry

    return registry.access_groups_as_system(model_id)


def _dataset_groups(dataset_id: str) -> list[str] | None:
    """Who may read a dataset whose versions derive from another dataset."""
    try:
        return list(get_versioning_engine().get_dataset(dataset_id).access_groups)
    except DatasetNotFound:
        return None


#: Who may refer to a dataset: models (a version's background) and datasets (parents, sources).
_REFERRERS = {"model": _model_groups, "dataset": _dataset_groups}


def _encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def _decode_token(token: str) -> str:
    try:
        found = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        after = found["after"]
    except (ValueError, TypeError, KeyError, UnicodeError):
        raise ValidationError("next_token is not a token this listing issued") from None
    if not isinstance(after, str):
        raise ValidationError("next_token is not a token this listing issued")
    return after


def _missing_dataset(dataset_id: str) -> Any:
    return lambda: DatasetNotFound(f"dataset {dataset_id} does not exist")


def _live(version: DatasetVersion) -> DatasetVersion:
    """The version unless it was deleted.

    Raises:
        DatasetVersionGone: It is a tombstone (410).
    """
    if version.deleted:
        raise DatasetVersionGone(
            f"version {version.version_number} of dataset {version.dataset_id} was deleted "
            f"by {version.deleted_by} at {version.deleted_at}"
        )
    return version


@lazy
def get_versioning_engine() -> DatasetVersioningEngine:
    """The process-wide versioning engine."""
    return DatasetVersioningEngine()


@lazy
def get_dataset_service() -> DatasetService:
    """The process-wide dataset service."""
    return DatasetService()
