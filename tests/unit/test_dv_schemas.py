"""Responses are built one way: shaped(<Out model>, <domain object>) reads the fields the model
declares from the domain object, so a domain field the model does not declare never leaks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from chalicelib.core import jsonutil
from chalicelib.dataversion.models import (
    CompatibilityMode,
    Dataset,
    DatasetFormat,
    DatasetSchema,
    DatasetUsage,
    DatasetVersion,
    RetentionPolicy,
    TagMove,
)
from chalicelib.dataversion.reconstruction import Reconstruction
from chalicelib.dataversion.schemas import (
    DatasetOut,
    ReconstructList,
    TagHistoryOut,
    VersionOut,
    shaped,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SCHEMA = DatasetSchema(columns={"id": "int", "x": "double"}, nullable=["x"])


def version(number: int = 1) -> DatasetVersion:
    return DatasetVersion(
        version_id=f"dv-{number}",
        dataset_id="ds-1",
        version_number=number,
        sha256="ab" * 32,
        size_bytes=10,
        storage_key="cas/sha256/secret",
        format=DatasetFormat.CSV,
        schema=SCHEMA,
        row_count=3,
        parent_version_ids=[],
        transformation_id=None,
        tags={"team": "ml"},
        created_by="alice",
        created_at=NOW,
    )


def test_a_version_is_shown_with_every_declared_field_and_never_its_storage_key() -> None:
    shown = shaped(VersionOut, version(), created=True)
    assert "storage_key" not in shown
    assert shown["schema"] == SCHEMA.to_dict()
    assert shown["created"] is True
    assert set(shown) == {info.alias or name for name, info in VersionOut.model_fields.items()}
    VersionOut.model_validate_json(jsonutil.dumps(shown))


def test_an_optional_field_the_domain_object_lacks_is_left_out() -> None:
    assert "created" not in shaped(VersionOut, version())


def test_nested_entities_are_shaped_with_their_own_models() -> None:
    dataset = Dataset(
        "ds-1",
        "clicks",
        "alice",
        ["ml"],
        DatasetFormat.CSV,
        CompatibilityMode.BACKWARD,
        "",
        SCHEMA,
        NOW,
        retention=RetentionPolicy(keep_last=3),
    )
    shown = json.loads(jsonutil.dumps(shaped(DatasetOut, dataset)))
    assert shown["declared_schema"]["hash"] == SCHEMA.compute_hash()
    assert shown["retention"] == {"keep_last": 3, "keep_days": None}
    assert shown["format"] == "csv" and shown["created_at"] == NOW.isoformat()
    usage = DatasetUsage("exp-1", "ds-1", "dv-1", "training", "alice", NOW)
    listed = shaped(
        ReconstructList, reconstructions=[Reconstruction(version(), "https://u", usage)]
    )
    item = listed["reconstructions"][0]
    assert "storage_key" not in item["version"] and item["usage"]["experiment_id"] == "exp-1"
    move = TagMove("ds-1", "production", "dv-1", 1, None, "alice", NOW)
    history = shaped(TagHistoryOut, move, history=[move])
    assert history["history"] == [{k: v for k, v in history.items() if k != "history"}]
