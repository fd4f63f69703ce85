"""Reconstruction: the data as it was at a time or for an experiment, transformation replay and
reproducibility checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.core.clock import Clock
from chalicelib.core.errors import ValidationError
from chalicelib.dataversion.errors import NotReplayable, TransformError, UsageNotFound
from chalicelib.dataversion.lineage import LineageGraph
from chalicelib.dataversion.models import (
    DatasetFormat,
    DatasetUsage,
    DatasetVersion,
    TransformationRecord,
)
from chalicelib.dataversion.pipeline import TransformationService
from chalicelib.dataversion.transforms import (
    Table,
    load_table,
    load_version_table,
    parse_spec,
    run,
    to_csv_bytes,
)
from chalicelib.dataversion.versioning import DatasetVersioningEngine


@dataclass
class Reconstruction:
    """A version to rebuild from, with where to download it.

    Attributes:
        version: The version.
        download_url: Presigned GET of its content.
        usage: The usage record it came from (experiment reconstructions).
    """

    version: DatasetVersion
    download_url: str
    usage: DatasetUsage | None = None


@dataclass
class ReplayResult:
    """The outcome of re-applying a recorded chain.

    Attributes:
        sha256: Hash of the replayed content.
        size_bytes: Its length.
        row_count: Its rows.
        target_sha256: Hash of the recorded target version.
        matches_target: Whether the replay reproduced the target byte for byte.
        steps: Transformation ids applied, in order.
        content: The replayed bytes (canonical CSV).
    """

    sha256: str
    size_bytes: int
    row_count: int
    target_sha256: str
    matches_target: bool
    steps: list[str]
    content: bytes = field(repr=False, default=b"")


@dataclass
class ReproducibilityReport:
    """Whether a version can be rebuilt from its roots.

    Attributes:
        version_id: The version checked.
        reproducible: No missing objects and no non-replayable steps.
        chain: Version ids from the roots to the target.
        missing_objects: Versions whose stored content is gone.
        non_replayable_steps: Steps that cannot be re-executed, with why.
        steps: Every transformation in the chain.
    """

    version_id: str
    reproducible: bool
    chain: list[str]
    missing_objects: list[dict[str, str]]
    non_replayable_steps: list[dict[str, Any]]
    steps: list[dict[str, Any]]


class DatasetReconstructor:
    """Rebuilds what an experiment saw and re-runs recorded transformations.

    Args:
        engine: Versioning engine.
        transforms: Runs transformations (default: one over ``engine``).
        lineage: Lineage graph (default: the engine's).
        clock: Time source (default: the engine's).
    """

    def __init__(
        self,
        engine: DatasetVersioningEngine,
        transforms: TransformationService | None = None,
        lineage: LineageGraph | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self.transforms = transforms or TransformationService(engine)
        self.lineage = lineage or engine.lineage
        self.clock = clock or engine.clock

    def reconstruct_at_time(self, dataset_id: str, as_of: datetime) -> Reconstruction:
        """The version that was current at ``as_of``.

        Raises:
            DatasetVersionNotFound: The dataset had no version then.
        """
        version = self.engine.get_version(dataset_id, as_of=as_of)
        return Reconstruction(version, self.engine.store.presign_get(version.storage_key))

    def record_usage(
        self,
        dataset_id: str,
        version_id: str,
        experiment_id: str,
        purpose: str = "training",
        recorded_by: str = "",
    ) -> DatasetUsage:
        """Records that an experiment used a version (idempotent)."""
        version = self.engine.get_version(dataset_id, version_id=version_id)
        usage = DatasetUsage(
            experiment_id=experiment_id,
            dataset_id=dataset_id,
            version_id=version.version_id,
            purpose=purpose,
            recorded_by=recorded_by,
            recorded_at=self.clock.now(),
        )
        self.engine.repository.record_usage(usage)
        return usage

    def remove_usage(self, usage: DatasetUsage) -> None:
        """Removes a usage recorded for an experiment that was then not created."""
        self.engine.repository.remove_usage(usage)

    def reconstruct_for_experiment(
        self, experiment_id: str, dataset_id: str
    ) -> list[Reconstruction]:
        """Every version of the dataset the experiment recorded using, oldest record first.

        Raises:
            UsageNotFound: The experiment recorded no usage of this dataset.
        """
        usages = self.engine.repository.usages(experiment_id, dataset_id)
        if not usages:
            raise UsageNotFound(
                f"experiment {experiment_id} recorded no usage of dataset {dataset_id}"
            )
        found = []
        for usage in usages:
            version = self.engine.get_version(dataset_id, version_id=usage.version_id)
            url = self.engine.store.presign_get(version.storage_key)
            found.append(Reconstruction(version, url, usage))
        return found

    # ---- replay ---------------------------------------------------------------------------

    def replay_transformations(
        self, source_version_id: str, target_version_id: str, new_source_data: Any
    ) -> ReplayResult:
        """Re-applies the recorded chain from ``source`` to ``target`` on new source data.

        Sources of the chain other than ``source`` (the other side of a join) are read as
        stored. With the original source data the result is byte-identical to the target.

        Raises:
            ValidationError: ``target`` does not derive from ``source``.
            NotReplayable: The chain has an external step.
        """
        source = self.engine.get_version_by_id(source_version_id)
        target = self.engine.get_version_by_id(target_version_id)
        data = _as_bytes(new_source_data)
        fresh = load_version_table(data, source)
        run_state = _Replay(self, source.version_id, fresh)
        if target.version_id == source.version_id or not run_state.depends(target):
            raise ValidationError(
                f"version {target.version_id} does not derive from {source.version_id} "
                "through recorded transformations"
            )
        content = run_state.produce_bytes(target)
        table = load_table(content, DatasetFormat.CSV, target.schema)
        digest = hashlib.sha256(content).hexdigest()
        return ReplayResult(
            sha256=digest,
            size_bytes=len(content),
            row_count=len(table.rows),
            target_sha256=target.sha256,
            matches_target=digest == target.sha256,
            steps=run_state.steps,
            content=content,
        )

    # ---- reproducibility ------------------------------------------------------------------

    def validate_reproducibility(self, version_id: str) -> ReproducibilityReport:
        """Checks that every object in the version's chain is stored and every step replayable."""
        nodes, _ = self.lineage.get_reproducibility_chain(version_id)
        missing: list[dict[str, str]] = []
        blocked: list[dict[str, Any]] = []
        steps: dict[str, dict[str, Any]] = {}
        for node in nodes:
            version = self.engine.get_version_by_id(node.version_id)
            if not self.engine.store.exists(version.storage_key):
                missing.append(
                    {"version_id": version.version_id, "storage_key": version.storage_key}
                )
            if version.transformation_id:
                record = self.engine.repository.get_transformation(version.transformation_id)
                steps.setdefault(record.transformation_id, _step(record))
                if not record.replayable:
                    blocked.append(
                        {
                            "version_id": version.version_id,
                            "transformation_id": record.transformation_id,
                            "reason": f"{record.type.value} ran outside the service "
                            f"(code_hash {record.code_hash})",
                        }
                    )
            elif version.parent_version_ids:
                blocked.append(
                    {
                        "version_id": version.version_id,
                        "transformation_id": None,
                        "reason": "derived from its parents without a recorded transformation",
                    }
                )
        return ReproducibilityReport(
            version_id=version_id,
            reproducible=not missing and not blocked,
            chain=[node.version_id for node in nodes],
            missing_objects=missing,
            non_replayable_steps=blocked,
            steps=list(steps.values()),
        )


def _step(record: TransformationRecord) -> dict[str, Any]:
    return {
        "transformation_id": record.transformation_id,
        "type": record.type.value,
        "replayable": record.replayable,
        "source_version_ids": record.source_version_ids,
        "output_version_ids": record.output_version_ids,
    }


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if hasattr(data, "read"):
        return data.read()
    return b"".join(data)


class _Replay:
    """One replay run: memoized tables per version id."""

    def __init__(self, owner: DatasetReconstructor, source_id: str, fresh: Table) -> None:
        self.owner = owner
        self.source_id = source_id
        self.tables: dict[str, Table] = {source_id: fresh}
        self.outputs: dict[str, bytes] = {}
        self.depends_on: dict[str, bool] = {source_id: True}
        self.steps: list[str] = []

    def _record(self, version: DatasetVersion) -> TransformationRecord | None:
        if not version.transformation_id:
            return None
        return self.owner.engine.repository.get_transformation(version.transformation_id)

    def depends(self, version: DatasetVersion) -> bool:
        if version.version_id not in self.depends_on:
            record = self._record(version)
            sources = record.source_version_ids if record else []
            self.depends_on[version.version_id] = any(
                self.depends(self.owner.engine.get_version_by_id(s)) for s in sources
            )
        return self.depends_on[version.version_id]

    def table(self, version: DatasetVersion) -> Table:
        if version.version_id not in self.tables:
            if self.depends(version):
                content = self.produce_bytes(version)
                self.tables[version.version_id] = load_table(
                    content, DatasetFormat.CSV, version.schema
                )
            else:
                self.tables[version.version_id] = self.owner.transforms.load_version(version)
        return self.tables[version.version_id]

    def produce_bytes(self, version: DatasetVersion) -> bytes:
        if version.version_id in self.outputs:
            return self.outputs[version.version_id]
        record = self._record(version)
        assert record is not None
        if not record.replayable:
            raise NotReplayable(
                f"step {record.transformation_id} ({record.type.value}) ran outside the service "
                f"(code_hash {record.code_hash}) and cannot be replayed"
            )
        inputs = [
            self.table(self.owner.engine.get_version_by_id(s)) for s in record.source_version_ids
        ]
        result = run(parse_spec(record.params), inputs)
        roles = [r for r, vid in record.output_version_ids.items() if vid == version.version_id]
        if not roles:
            raise TransformError(
                f"transformation {record.transformation_id} did not record {version.version_id}"
            )
        self.steps.append(record.transformation_id)
        for role, produced_id in record.output_version_ids.items():
            self.outputs[produced_id] = to_csv_bytes(result.outputs[role])
        return self.outputs[version.version_id]
