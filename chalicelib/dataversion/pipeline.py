"""Applying transformations to stored versions and recording them with their lineage."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import ValidationError
from chalicelib.dataversion.errors import TransformError
from chalicelib.dataversion.models import (
    TABULAR_FORMATS,
    DatasetFormat,
    DatasetVersion,
    TransformationRecord,
)
from chalicelib.dataversion.reader import read_verified
from chalicelib.dataversion.transforms import (
    ExternalSpec,
    Table,
    check_size,
    is_replayable,
    load_version_table,
    parse_spec,
    run,
    spec_type,
    to_csv_bytes,
)
from chalicelib.dataversion.versioning import (
    DatasetVersioningEngine,
    VersionOutcome,
    VersionRequest,
)


@dataclass
class AppliedTransformation:
    """A recorded transformation and the versions it produced (by role)."""

    record: TransformationRecord
    outputs: dict[str, VersionOutcome]


class TransformationService:
    """Runs declarative transformations on stored versions and stores their outputs.

    Args:
        engine: Versioning engine (its repository and store are used too).
        clock: Time source.
    """

    def __init__(self, engine: DatasetVersioningEngine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock = clock or engine.clock or SystemClock()

    def load_version(self, version: DatasetVersion) -> Table:
        """The typed rows of a stored CSV / JSON-lines version.

        Raises:
            TransformError: An opaque format.
            PayloadTooLarge: Over the in-memory limit.
        """
        if version.format not in TABULAR_FORMATS:
            raise TransformError(
                f"version {version.version_id} is {version.format.value}; "
                "transformations need csv or json"
            )
        check_size(version.size_bytes)
        data = read_verified(self.engine.store, version)
        return load_version_table(data, version)

    def apply(
        self,
        dataset_id: str,
        spec: Any,
        source_version_ids: list[str],
        created_by: str = "",
        tags: dict[str, str] | None = None,
        output_datasets: dict[str, str] | None = None,
        data: Any = None,
    ) -> AppliedTransformation:
        """Applies ``spec`` to the source versions and stores each output as a version.

        Args:
            dataset_id: Dataset receiving the outputs (unless ``output_datasets`` names one).
            spec: A spec dict or parsed spec (see :mod:`~chalicelib.dataversion.transforms`).
            source_version_ids: Inputs in order (a join takes two).
            created_by: Principal.
            tags: Labels for the outputs (a split adds ``split=train|test``).
            output_datasets: Role (``output``, ``train``, ``test``) → dataset id.
            data: For external steps only: the content the external code produced.

        Raises:
            ValidationError: An invalid spec, no sources, or data given to a replayable step.
            TransformError: The spec cannot run on these inputs (422).
        """
        parsed = parse_spec(spec) if isinstance(spec, dict) else spec
        if not source_version_ids:
            raise ValidationError("at least one source version is required")
        sources = [self.engine.get_version_by_id(v) for v in source_version_ids]
        record = TransformationRecord(
            transformation_id=f"tr-{uuid.uuid4().hex[:16]}",
            type=spec_type(parsed),
            params=parsed.model_dump(mode="json"),
            source_version_ids=list(source_version_ids),
            output_version_ids={},
            fitted_params={},
            replayable=is_replayable(parsed),
            code_hash=parsed.code_hash if isinstance(parsed, ExternalSpec) else None,
            created_by=created_by,
            created_at=self.clock.now(),
        )
        contents = self._outputs(parsed, sources, record, data)
        self.engine.repository.save_transformation(record)
        outputs: dict[str, VersionOutcome] = {}
        for role, (content, fmt) in contents.items():
            target = (output_datasets or {}).get(role, dataset_id)
            labels = dict(tags or {})
            if role in ("train", "test"):
                labels["split"] = role
            request = VersionRequest(
                parent_version_ids=list(source_version_ids),
                transformation=record,
                tags=labels,
                created_by=created_by,
                format=fmt,
            )
            outputs[role] = self.engine.store_version(target, content, request)
            record.output_version_ids[role] = outputs[role].version.version_id
        self.engine.repository.save_transformation(record)
        return AppliedTransformation(record, outputs)

    def _outputs(
        self,
        spec: Any,
        sources: list[DatasetVersion],
        record: TransformationRecord,
        data: Any,
    ) -> dict[str, tuple[Any, DatasetFormat | None]]:
        if isinstance(spec, ExternalSpec):
            if data is None:
                raise ValidationError("an external step must come with the data it produced")
            return {"output": (data, None)}
        if data is not None:
            raise ValidationError("data is only accepted for external steps")
        result = run(spec, [self.load_version(version) for version in sources])
        record.fitted_params = result.fitted
        return {
            role: (to_csv_bytes(table), DatasetFormat.CSV) for role, table in result.outputs.items()
        }
